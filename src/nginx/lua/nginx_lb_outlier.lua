-- nginx-lb's passive outlier ejection for `--endpoints-mode dynamic`: an endpoint that fails `errors` requests in a row
-- (a 5xx it answered, a timeout, or a connection error) is ejected from its route's set for a back-off period, and
-- the balancer of every worker skips it meanwhile. The first ejection lasts `base`; each one that follows within
-- `max` of the previous one's end lasts twice as long, up to `max`. When an ejection ends the endpoint is back in
-- rotation and its first result decides: a failure ejects it again at once (for longer), a success returns it.
-- At most `percent` % of a set's endpoints are ejected at once (rounded down), so a route never loses all of them
-- to ejection, and a one-endpoint route never ejects at all.
--
-- The state is shared by the workers through the `nginx_lb` dict (see nginx_lb_sets):
--   of:<upstream> <ip> <port>  consecutive failures (atomic incr; deleted by a success or an ejection)
--   o_list                     every ejection record, one line each (see encode); rewritten under o_lock
--   o_gen                      bumped after each rewrite of o_list: workers re-read o_list when it moves
--   o_lock                     held (1 s at most) while o_list is rewritten
-- Ejections are rare, so one list rewritten whole is cheaper than a key per endpoint, and the controller reads the
-- whole state in one GET.
--
-- A request reads no key of its own in the common case. Every change here (a rewrite of o_list, a failure counted)
-- also bumps the endpoint sets' generation (`gen` of nginx_lb_sets), which the balancer reads once per request
-- anyway; a worker re-reads o_gen only when that generation moved, and a success deletes its endpoint's failure
-- count only when the generation moved since this worker last saw the count absent. A failure costs every worker a
-- re-check of the sets it uses next; failures are the rare case.

local layout = require("nginx_lb_sets")

local ngx = ngx
local now = ngx.now
local tonumber = tonumber
local pairs, pcall = pairs, pcall
local floor, min = math.floor, math.min
local concat = table.concat
local find, sub, format, gmatch = string.find, string.sub, string.format, string.gmatch

local _M = {}

local FAIL = "of:"
local LIST = "o_list"
local GEN = "o_gen"
local LOCK = "o_lock"
-- A failure count no success or ejection cleared (the endpoint left its set mid-streak) goes after an hour.
local FAIL_TTL = 3600

-- Settings, from nginx.conf's init_by_lua (configure); these are the documented defaults.
local errors, base, max, percent = 5, 30, 300, 50

-- Per worker: the o_gen last read, the sets' generation it was read after, and the records of o_list by
-- "<upstream> <ip> <port>".
local cache_gen = false
local checked_at = false
local records = {}

--- init_by_lua: consecutive failures that eject (0: never eject), the first and the longest ejection in
--- milliseconds, and the most of a set ejected at once in percent. The renderer passes validated integers.
function _M.configure(n, base_ms, max_ms, pct)
  errors, base, max, percent = n, base_ms / 1000, max_ms / 1000, pct
end

-- One record a line: key fields, then since, until (seconds), level (the how-many-th ejection), failures that led to
-- it, the last failure ("5xx status", "timeout" or "error"), and whether it returned (1) since it ended.
local function encode(list)
  local out = {}
  for key, r in pairs(list) do
    out[#out + 1] = format("%s %.3f %.3f %d %d %s %d\n", key, r.since, r.untl, r.level, r.failures, r.last,
      r.returned and 1 or 0)
  end
  return concat(out)
end

local function decode(text)
  local list = {}
  if text == nil then
    return list
  end
  for up, ip, port, since, untl, level, failures, last, returned in
    gmatch(text, "(nlb_[%w_]+) ([%x:.]+) (%d+) ([%d.]+) ([%d.]+) (%d+) (%d+) (%w+) ([01])\n") do
    list[up .. " " .. ip .. " " .. port] = {
      upstream = up, ip = ip, port = tonumber(port), since = tonumber(since), untl = tonumber(untl),
      level = tonumber(level), failures = tonumber(failures), last = last, returned = returned == "1",
    }
  end
  return list
end

--- The ejection records by peer key as this worker knows them (re-read when another worker changed them): the
--- balancer skips a peer whose record has `untl` in the future. `sets_gen`: the sets' generation this request read
--- (before this call); when the records were checked at that generation already, nothing changed since.
function _M.current(sets_gen)
  if sets_gen ~= nil and sets_gen == checked_at then
    return records
  end
  local dict = layout.dict()
  local gen = dict:get(GEN)
  if gen ~= cache_gen then
    records = decode(dict:get(LIST))
    cache_gen = gen
  end
  checked_at = sets_gen or false
  return records
end

-- Bumps the sets' generation after any change of the shared state here: what every worker reads first.
local function moved(dict)
  dict:incr(layout.GEN, 1, 0)
end

-- Rewrites o_list with `change(list, t)` applied (when it returns true), under the lock. Another worker holding the lock
-- means the change is skipped: the failure count stays, so the next failure (or success) tries again.
local function rewrite(change)
  local dict = layout.dict()
  if not dict:add(LOCK, true, 1) then
    return
  end
  local t = now()
  local list = decode(dict:get(LIST))
  -- A record ended more than `max` ago, returned or not, is forgotten: its next ejection starts at the first level.
  -- Forgetting is a change too: a worker must not keep asking about a record that is gone.
  local pruned = false
  for key, r in pairs(list) do
    if r.untl + max < t then
      list[key] = nil
      pruned = true
    end
  end
  local ok, changed = pcall(change, list, t)
  if ok and (changed or pruned) then
    -- safe_set: never evict endpoint sets to make room; a full dict leaves ejections as they were.
    local stored, serr = dict:safe_set(LIST, encode(list))
    if stored then
      dict:incr(GEN, 1, 0)
      moved(dict)
    else
      ngx.log(ngx.ERR, "nginx-lb: cannot store outlier ejections: ", serr, " (raise the shared dict size)")
    end
  elseif not ok then
    ngx.log(ngx.ERR, "nginx-lb: outlier ejection failed: ", changed)
  end
  dict:delete(LOCK)
end

local function count_ejected(list, peers, t)
  local n = 0
  for i = 1, #peers do
    local r = list[peers[i].key]
    if r and r.untl > t then
      n = n + 1
    end
  end
  return n
end

-- True when `list` leaves room to eject one more endpoint of `set` at time `t`. Only the set's current endpoints
-- count (an ejected endpoint since removed from the registry frees its place).
local function room(list, set, t)
  local ejected = count_ejected(list, set.primaries, t) + count_ejected(list, set.backups, t)
  return ejected + 1 <= floor((#set.primaries + #set.backups) * percent / 100)
end

-- Ejects peer `p` of `set` unless it is ejected already or the set's budget is spent. The budget is checked first on
-- this worker's copy, so an endpoint held back by it costs no lock per failure.
local function eject(set, p, failures, last, t)
  if not room(records, set, t) then
    return
  end
  rewrite(function(list, now_t)
    local key = p.key
    local prev = list[key]
    if (prev and prev.untl > now_t) or not room(list, set, now_t) then
      return false
    end
    local level = prev and prev.level + 1 or 1
    list[key] = {
      since = now_t, untl = now_t + min(base * 2 ^ (level - 1), max), level = level, failures = failures, last = last,
      returned = false,
    }
    layout.dict():delete(p.nlb_fail or (FAIL .. key))
    return true
  end)
end

local function returned(key)
  rewrite(function(list, t)
    local r = list[key]
    if r and r.untl <= t and not r.returned then
      r.returned = true
      return true
    end
    return false
  end)
end

-- One attempt's outcome for peer `p` of `set`: `last` nil for a success, else what failed.
local function outcome(set, p, last, t)
  local key = p.key
  local r = records[key]
  -- The failure-count key, built once per peer (peers live as long as their decoded set), not per request.
  local fkey = p.nlb_fail
  if fkey == nil then
    fkey = FAIL .. key
    p.nlb_fail = fkey
  end
  if last == nil then
    if r and not r.returned and r.untl <= t then
      returned(key)
    end
    -- p.nlb_clean: the sets' generation at which this worker last found no failure count for the peer. A failure
    -- anywhere bumps the generation, so while it stands there is nothing to delete.
    local gen = set.gen
    if gen == nil or p.nlb_clean ~= gen then
      local dict = layout.dict()
      if dict:get(fkey) then
        dict:delete(fkey)
      end
      p.nlb_clean = gen
    end
    return
  end
  p.nlb_clean = nil
  if r and r.untl > t then
    return -- a request that started before the ejection: it is out already
  end
  if r and not r.returned then
    return eject(set, p, 1, last, t) -- back from an ejection, and its first result failed
  end
  local dict = layout.dict()
  local n = dict:incr(fkey, 1, 0, FAIL_TTL)
  -- Every worker's next success of this peer must look at the count again.
  moved(dict)
  if n and n >= errors then
    eject(set, p, n, last, t)
  end
end

-- What an attempt's upstream status and header time say: nil (a success, or nothing to judge) or the failure.
-- The header time tells an endpoint's own 502/504 (headers arrived) from nginx's (a connection error or timeout).
local function failure(status, header_time)
  local s = tonumber(status)
  if s == nil then
    return nil, false
  end
  if header_time ~= "-" then
    if s >= 500 then
      return status, true
    end
    return nil, true
  end
  if s == 504 then
    return "timeout", true
  end
  if s == 502 then
    return "error", true
  end
  return nil, false -- e.g. 499: the client left before an answer; says nothing about the endpoint
end

-- The part of an upstream variable after the last internal redirect (" : " separates them): this location's attempts.
-- The common case (no redirect) returns before the loop: a loop on the way keeps LuaJIT from compiling the log phase
-- as one trace.
local function last_group(v)
  if v == nil then
    return nil
  end
  local i = find(v, " : ", 1, true)
  if i == nil then
    return v
  end
  local from = i + 3
  while true do
    local i = find(v, " : ", from, true)
    if i == nil then
      return sub(v, from)
    end
    from = i + 3
  end
end

--- log_by_lua: judges each attempt the balancer made for this request (in order: retries first, the last one last).
--- `ctx` is the request's ngx.ctx (looked up once for the log phase's callers).
function _M.log(ctx)
  if errors == 0 then
    return
  end
  if ctx == nil then
    ctx = ngx.ctx
  end
  local last = ctx.nlb_last
  local set = ctx.nlb_set
  if last == nil or set == nil then
    return
  end
  local t = now()
  local prev = ctx.nlb_prev
  if prev == nil then
    -- The common case, one attempt that got an answer: the client's status is the endpoint's (nothing here rewrites
    -- it), and a status below 499 came with the endpoint's headers, so it is a success without reading the upstream
    -- variables (499: the client left; 5xx: maybe nginx's own, for a connection error or timeout).
    local s = ngx.status
    if s >= 100 and s < 499 then
      return outcome(set, last, nil, t)
    end
  end
  local var = ngx.var
  local statuses = last_group(var.upstream_status)
  local headers = last_group(var.upstream_header_time)
  if statuses == nil or headers == nil then
    return
  end
  if prev == nil then
    -- One attempt: no table built.
    if find(statuses, ",", 1, true) then
      return -- more attempts than peers chosen: not ours to judge
    end
    local why, judged = failure(statuses, headers)
    if judged then
      outcome(set, last, why, t)
    end
    return
  end
  local times = {}
  for h in gmatch(headers, "[^, ]+") do
    times[#times + 1] = h
  end
  local i, n = 0, #prev
  for status in gmatch(statuses, "[^, ]+") do
    i = i + 1
    local p = i <= n and prev[i] or (i == n + 1 and last) or nil
    if p == nil then
      return
    end
    local why, judged = failure(status, times[i] or "-")
    if judged then
      outcome(set, p, why, t)
    end
  end
end

local function json_records(t)
  local out = {}
  for key, r in pairs(decode(layout.dict():get(LIST))) do
    local up, ip, port = key:match("^(%S+) (%S+) (%d+)$")
    if up and r.untl + max >= t then
      out[#out + 1] = format(
        '{"upstream":"%s","ip":"%s","port":%s,"since":%.0f,"until":%.0f,"level":%d,"failures":%d,"last":"%s",'
          .. '"returned":%s}',
        up, ip, port, r.since * 1000, r.untl * 1000, r.level, r.failures, r.last, r.returned and "true" or "false")
    end
  end
  return concat(out, ",")
end

-- Every ejection record not yet forgotten, with nginx's clock and settings, as JSON. Every value was validated on the
-- way in (upstream names and addresses by the push, the rest are numbers and words this module wrote), and decode
-- only admits those shapes.
local function state()
  local t = now()
  return format('{"now":%.0f,"settings":{"errors":%d,"base":%.0f,"max":%.0f,"percent":%d},"ejections":[%s]}',
    t * 1000, errors, base * 1000, max * 1000, percent, json_records(t))
end

--- content_by_lua for the control server's ejections location (GET only); `token` is the push token, required as for
--- a push: the state names every endpoint, and loopback is shared with every local user.
function _M.serve(token)
  local control = require("nginx_lb_control")
  if not control.authorized(token) then
    return
  end
  if ngx.req.get_method() ~= "GET" then
    ngx.header["Allow"] = "GET"
    return control.error_reply(405, "use GET")
  end
  return control.reply(200, state())
end

function _M.init_worker()
  cache_gen = false
  records = {}
end

return _M
