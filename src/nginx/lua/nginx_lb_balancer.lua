-- nginx-lb's endpoint balancer for `--endpoints-mode dynamic`: picks the peer of each request from the endpoint sets
-- held in the shared dict (see nginx_lb_sets for the layout; nginx_lb_push and nginx_lb_initial fill it). Each worker
-- decodes a set lazily and keeps it until the dict's generation counter moves, so a push is seen by the very next
-- request (one shared-dict read per request, no timer).
--
-- Balancing mirrors what reload mode renders: smooth weighted round robin (nginx's algorithm) over primaries,
-- weight 0 never chosen, backups only when no primary is usable for this request, a peer that failed to connect
-- skipped for FAIL_TIMEOUT (max_fails=1 fail_timeout=10s), and a retry on the next peer after a connection error.
-- Beyond reload mode: a peer ejected by nginx_lb_outlier (failing requests in a row, seen by every worker) is skipped
-- like a failed one, and the log phase learns the request's set, which peers it tried and when the last attempt began
-- (ctx.nlb_set, ctx.nlb_last, ctx.nlb_prev, ctx.nlb_at).

local balancer = require("ngx.balancer")
local layout = require("nginx_lb_sets")
local outlier = require("nginx_lb_outlier")
local sweeper = require("nginx_lb_sweep")

local ngx = ngx
local shared = layout.dict()
local GEN, PREFIX, REMOVED = layout.GEN, layout.PREFIX, layout.REMOVED
local now = ngx.now
local tonumber = tonumber
local pairs = pairs
local find = string.find

local _M = {}

-- Same as reload mode's `max_fails=1 fail_timeout=10s`.
local FAIL_TIMEOUT = 10
-- As reload mode: each endpoint tried at most once per request (the rendered proxy_next_upstream_tries 0 leaves the
-- count to us; proxy_next_upstream_timeout bounds the time), so a backup is reached however many primaries are down.
local MAX_MORE_TRIES = 64

-- Per worker: upstream name -> { gen, raw, primaries, backups, empty }.
local sets = {}
-- Per worker: "<upstream> <ip> <port>" -> time of the last connection failure.
local failed = {}

local function parse_set(name, raw)
  local primaries, backups = {}, {}
  for ip, port, weight, backup in raw:gmatch("(%S+) (%d+) (%d+) ([01]);") do
    weight = tonumber(weight)
    -- weight 0 is a drain: the peer stays listed in the push but is never chosen.
    if weight > 0 then
      local peer = {
        ip = ip,
        -- set_current_peer parses its address like a `server` line, so IPv6 needs brackets.
        host = find(ip, ":", 1, true) and ("[" .. ip .. "]") or ip,
        port = tonumber(port),
        -- Built once per set, not per request: the passive-failure key of this peer in this upstream.
        key = name .. " " .. ip .. " " .. port,
        weight = weight,
        current = 0,
      }
      local list = backup == "1" and backups or primaries
      list[#list + 1] = peer
    end
  end
  -- The name rides along for the log phase: the traffic counters read a request's route from its set.
  return { name = name, primaries = primaries, backups = backups, empty = #primaries == 0 and #backups == 0 }
end

-- The current set of an upstream, or nil when none was pushed. Re-reads the dict only when the generation moved,
-- and keeps the decoded set (with its round-robin state) when the push did not change this upstream. `gen` is the
-- generation when the caller read it already for this request (the router), else it is read here. The set carries
-- the generation it was last checked at (`set.gen`): whatever else keys a per-worker cache to the generation
-- (ejections, failure streaks) compares against it instead of reading the dict again in the same request.
local function current_set(name, gen)
  if gen == nil then
    gen = shared:get(GEN)
  end
  local entry = sets[name]
  if entry and entry.gen == gen then
    return entry.set
  end
  local raw = shared:get(PREFIX .. name)
  if raw == nil then
    sets[name] = { gen = gen }
    return nil
  end
  if entry and entry.raw == raw then
    entry.gen = gen
    entry.set.gen = gen
    return entry.set
  end
  local set = parse_set(name, raw)
  set.gen = gen
  sets[name] = { gen = gen, raw = raw, set = set }
  return set
end

-- nginx's smooth weighted round robin over the peers of one list that are neither tried by this request nor (unless
-- `ignore_fails`) marked failed or ejected.
local function pick_from(list, tried, t, ejected, ignore_fails)
  local best, total = nil, 0
  for i = 1, #list do
    local p = list[i]
    if not tried[p] then
      local key = p.key
      local failed_at = failed[key]
      if failed_at and t - failed_at >= FAIL_TIMEOUT then
        -- Expired: forget it, so the table stays as small as the set of currently failing peers.
        failed[key] = nil
        failed_at = nil
      end
      local ej = ejected[key]
      if ignore_fails or not (failed_at or (ej and ej.untl > t)) then
        p.current = p.current + p.weight
        total = total + p.weight
        if best == nil or p.current > best.current then
          best = p
        end
      end
    end
  end
  if best then
    best.current = best.current - total
  end
  return best
end

local function pick(set, tried)
  local t = now()
  local ejected = outlier.current(set.gen)
  return pick_from(set.primaries, tried, t, ejected, false)
    or pick_from(set.backups, tried, t, ejected, false)
    -- Everything is marked failed or ejected: try anyway rather than fail the request; a peer may be back already.
    or pick_from(set.primaries, tried, t, ejected, true)
    or pick_from(set.backups, tried, t, ejected, true)
end

--- The set of upstream `name` for this request, or nil when it has no endpoint (none pushed, or all drained).
--- `gen`: the generation if the caller read it already.
function _M.usable(name, gen)
  local set = current_set(name, gen)
  if set == nil or set.empty then
    return nil
  end
  return set
end

--- Answers 503 with `message` (the same text as reload mode): the route has no endpoint.
function _M.empty(message)
  ngx.status = 503
  ngx.header["Content-Type"] = "text/plain"
  ngx.header["Content-Length"] = #message
  ngx.print(message)
  return ngx.exit(ngx.HTTP_OK)
end

--- access_by_lua: answers 503 with `message` (the same text as reload mode) when the route has no endpoint.
function _M.access(name, message)
  local set = current_set(name)
  if set == nil or set.empty then
    return _M.empty(message)
  end
  ngx.ctx.nlb_set = set
end

-- The first attempt of a request has tried nothing; shared and never written, so the common path allocates nothing.
local NONE_TRIED = {}

--- balancer_by_lua: chooses the peer for this attempt; called again by nginx for each retry.
function _M.balance(name)
  local ctx = ngx.ctx
  local set = ctx.nlb_set
  if set == nil and name ~= nil then
    set = current_set(name)
  end
  if set == nil or set.empty then
    return ngx.exit(503)
  end
  local last = ctx.nlb_last
  local tried = NONE_TRIED
  if last then
    -- A retry: nginx only retries after a connection error or timeout (proxy_next_upstream error timeout).
    if balancer.get_last_failure() then
      failed[last.key] = now()
    end
    tried = ctx.nlb_tried
    if not tried then
      tried = {}
      ctx.nlb_tried = tried
    end
    tried[last] = true
    -- The attempts in order, for the log phase (nginx lists one upstream status per attempt).
    local prev = ctx.nlb_prev
    if not prev then
      prev = {}
      ctx.nlb_prev = prev
    end
    prev[#prev + 1] = last
  else
    local more = #set.primaries + #set.backups - 1
    if more > 0 then
      balancer.set_more_tries(more < MAX_MORE_TRIES and more or MAX_MORE_TRIES)
    end
  end
  local peer = pick(set, tried)
  if peer == nil then
    return ngx.exit(502)
  end
  ctx.nlb_last = peer
  -- When this attempt began, for the log phase's upstream time (nginx times $upstream_response_time from here too).
  ctx.nlb_at = now()
  local ok, err = balancer.set_current_peer(peer.host, peer.port)
  if not ok then
    ngx.log(ngx.ERR, "nginx-lb: cannot use peer ", peer.host, ":", peer.port, ": ", err)
    return ngx.exit(500)
  end
end

-- Whether a push removed upstreams since the last sweep (created on first use: the dict is known by then).
local removals = nil

--- For the worker's sweep timer (nginx_lb_sweep): forgets failures past their timeout and, once a push removed
--- upstreams, the decoded sets of those the dict no longer holds. Returns the number of sets forgotten.
function _M.sweep()
  local t = now()
  for key, at in pairs(failed) do
    if t - at >= FAIL_TIMEOUT then
      failed[key] = nil
    end
  end
  removals = removals or sweeper.removals(shared, REMOVED)
  if not removals() then
    return 0
  end
  return sweeper.drop_missing(sets, shared, function(name)
    return PREFIX .. name
  end)
end

--- init_worker_by_lua: nothing to load eagerly; sets are decoded on first use from the dict, which survives reloads.
function _M.init_worker()
  sets = {}
  failed = {}
  removals = nil
  outlier.init_worker()
  sweeper.init_worker()
end

return _M
