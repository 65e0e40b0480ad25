-- nginx-lb's traffic counters: the log phase of every request adds to counters in the shared dict `nginx_lb_stats`,
-- and the controller drains them once a second through the loopback control server (token required). Nothing else
-- can write a count: there is no write endpoint, and the dict lives in nginx's memory only.
--
-- Keys (each value is an integer amount not yet collected):
--   c <route> <k>xx   requests by status class, k = 1..5, or 0 for a status outside 100..599
--   b <route>         bytes sent to clients
--   u <route> <i>     requests whose upstream time (the last upstream tried) falls in bucket i: i = 1..#BOUNDS_MS is
--                     the bucket up to BOUNDS_MS[i], #BOUNDS_MS + 1 above the last bound; none when nginx answered itself
--   us <route>        sum of those upstream times, in milliseconds (nginx measures them in milliseconds)
--   t <route> <i>     the same buckets for the request time (every request)
--   ts <route>        sum of request times, in milliseconds
--   n <route> <addr>  attempts sent to an endpoint (every peer the balancer chose for the request, retries included),
--                     <addr> as nginx writes $upstream_addr: ip:port, an IPv6 ip in brackets
--   x <route> <addr>  of those, errors: a connection error or timeout (the ones nginx retried past), or a 5xx answer
-- <route> is the upstream name of the request's route: the name of the endpoint set the balancer's access phase gave
-- the request, else $nlb_route (which nginx.conf sets to the same name per route location: a route that answered 503
-- for an empty set); `-` for a request no route matched.
--
-- Draining rather than cumulative totals: the reader subtracts what it returns with an atomic incr, so a count made
-- meanwhile is kept for the next read, an nginx restart (empty dict) needs no special case on either side, and a key
-- that stays at zero can be dropped safely. A key found at zero gets IDLE_TTL seconds to live; a count clears that
-- again at the next read, so only keys idle for IDLE_TTL (an endpoint or route that went away) expire. Were the
-- controller absent that long, counts on such keys would expire with them: figures nobody collects.
--
-- The per-request path allocates nothing in the common case, takes no lock and reads one nginx variable
-- ($bytes_sent, as a number: see `bytes_sent`): each route and each endpoint has a cell per worker, its key strings
-- and an array of amounts in the same order, built once and kept on the balancer's decoded set and peers (so a routed
-- request reads neither $nlb_route nor $upstream_addr), and a request adds to its cells' arrays. The last upstream's
-- time is measured from the balancer's choice of that peer (ctx.nlb_at, nginx's cached clock, as nginx times
-- $upstream_response_time) rather than read from that variable: a variable read costs more than all of the counting.
-- A timer per worker adds the cells counted since the last flush to the dict every FLUSH_SECONDS (incr: atomic across
-- workers); a worker that is shutting down (reload, stop) flushes once more (nginx runs pending timers early then)
-- and from then on flushes after every request.

local ffi = require("ffi")
local base = require("resty.core.base")
-- Declares ngx_http_lua_ffi_var_get (lua-resty-core ships with the Lua module, and ngx.var is its caller).
require("resty.core.var")
local secret = require("nginx_lb_secret")
-- For `sweep` only: a route is the upstream name of its endpoint set.
local sets_layout = require("nginx_lb_sets")
local sweeper = require("nginx_lb_sweep")

local ngx = ngx
local var = ngx.var
local ipairs, pcall, type = ipairs, pcall, type
local now = ngx.now
local start_time = ngx.req.start_time
local tonumber, tostring = tonumber, tostring
local floor = math.floor
local format = string.format

local _M = {}

_M.DICT = "nginx_lb_stats"
-- The same bounds as the controller's histograms (src/admin/traffic.ts HISTOGRAM_BUCKETS), in milliseconds.
local BOUNDS_MS = { 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000 }
local NB = #BOUNDS_MS
local IDLE_TTL = 300
local FLUSH_SECONDS = 0.5
-- Per worker: a hostile or broken config cannot grow the route key cache without end; past this it starts over.
local MAX_ROUTES = 100000

local dict = ngx.shared[_M.DICT]

-- Per worker: the cells counted since the last flush, in the order of their first count.
local dirty = {}
local ndirty = 0
local flushing = false
-- Set by the final (premature) flush: from then on every request is flushed at once.
local closing = false

-- A cell: `keys[i]` is the dict key of the amount `v[i]`.
local function cell(keys)
  local v = {}
  for i = 1, #keys do
    v[i] = 0
  end
  return { keys = keys, v = v, dirty = false }
end

-- Puts a cell on the flush list on its first count since the last flush.
local function touch(c)
  if not c.dirty then
    c.dirty = true
    ndirty = ndirty + 1
    dirty[ndirty] = c
  end
end

local function flush()
  local list, n = dirty, ndirty
  dirty, ndirty = {}, 0
  for i = 1, n do
    local c = list[i]
    c.dirty = false
    local keys, v = c.keys, c.v
    for j = 1, #keys do
      local amount = v[j]
      if amount ~= 0 then
        v[j] = 0
        local ok, err = dict:incr(keys[j], amount, 0)
        if not ok then
          ngx.log(ngx.WARN, "nginx-lb: traffic counter ", keys[j], " lost ", amount, ": ", err)
        end
      end
    end
  end
end

-- Runs every FLUSH_SECONDS, and once more (premature) when the worker shuts down.
local function on_timer(premature)
  if premature then
    closing = true
  end
  flush()
end

-- A route cell's amounts, by index: the status classes 0..5 at CLASS + c, then bytes, the two sums, and the two
-- histograms' buckets 1..NB + 1 at U + i and T + i.
local CLASS = 1
local B = 7
local US = 8
local TS = 9
local U = 9
local T = U + NB + 1

-- Per worker: route -> its cell.
local routes = {}
local route_count = 0

local function keys_of(route)
  if route_count >= MAX_ROUTES then
    routes = {}
    route_count = 0
  end
  local keys = {}
  for c = 0, 5 do
    keys[CLASS + c] = "c " .. route .. " " .. c .. "xx"
  end
  keys[B] = "b " .. route
  keys[US] = "us " .. route
  keys[TS] = "ts " .. route
  for i = 1, NB + 1 do
    keys[U + i] = "u " .. route .. " " .. i
    keys[T + i] = "t " .. route .. " " .. i
  end
  local k = cell(keys)
  k.route = route
  routes[route] = k
  route_count = route_count + 1
  return k
end

-- Bucket by whole millisecond up to the last bound, built once: the log phase looks a time up instead of looping over
-- the bounds (a loop on the way keeps LuaJIT from compiling the log phase as one trace).
local BUCKET_OF = {}
do
  local i = 1
  for ms = 0, BOUNDS_MS[NB] do
    if ms > BOUNDS_MS[i] then
      i = i + 1
    end
    BUCKET_OF[ms] = i
  end
end

-- The bucket of a time in whole milliseconds (>= 0).
local function bucket(ms)
  return BUCKET_OF[ms] or NB + 1
end

-- An endpoint's cell (attempts, then errors), kept on its peer (built once per peer: a peer lives as long as its
-- decoded set, of one route). The address is written as nginx writes $upstream_addr and the controller's topology
-- names endpoints: ip:port, an IPv6 ip in brackets (the balancer's `host`).
local function peer_cell(k, p)
  local e = p.nlb_stats
  if e == nil then
    local addr = p.host .. ":" .. p.port
    e = cell({ "n " .. k.route .. " " .. addr, "x " .. k.route .. " " .. addr })
    p.nlb_stats = e
  end
  touch(e)
  return e.v
end

-- The attempts the balancer made (ctx.nlb_prev in order, then ctx.nlb_last): every one before the last was left after
-- a connection error or timeout (nginx retries past nothing else: proxy_next_upstream error timeout).
local function count_endpoints(k, ctx, last, failed)
  local prev = ctx.nlb_prev
  if prev ~= nil then
    local n = #prev
    if prev[n] == last then
      -- The balancer found no peer left to retry on: the last attempt is the last failed one.
      n = n - 1
      failed = true
    end
    for i = 1, n do
      local v = peer_cell(k, prev[i])
      v[1] = v[1] + 1
      v[2] = v[2] + 1
    end
  end
  local v = peer_cell(k, last)
  v[1] = v[1] + 1
  if failed then
    v[2] = v[2] + 1
  end
end

-- The request's route cell: from the set the balancer's access phase gave it (the set carries its upstream name, and
-- the cell is kept on it), else from $nlb_route (a route that answered 503 for an empty set, or no route).
local function route_cell(ctx)
  local set = ctx.nlb_set
  if set ~= nil then
    local k = set.nlb_stats
    if k == nil then
      k = routes[set.name] or keys_of(set.name)
      set.nlb_stats = k
    end
    return k
  end
  local route = var.nlb_route
  if route == nil or route == "" then
    route = "-"
  end
  return routes[route] or keys_of(route)
end

-- $bytes_sent as a number. `tonumber(ngx.var.bytes_sent)` makes a Lua string of the value on every request, and
-- interning it and scanning it cost more than the rest of the counting: `direct` asks lua-resty-core's own reader of
-- variables (the function ngx.var calls) for the value and has libc's strtoll read the digits from a copy ended by a
-- NUL (nginx's value is not). That reader is lua-resty-core's, not a documented API: each worker's first counted
-- request checks `direct` against ngx.var, and a build where it fails or differs reads through ngx.var from then on
-- (logged once). nginx_lb_stats's test (test/nginx/stats.test.ts) pins the count to the bytes a client received.
local function via_var()
  return tonumber(var.bytes_sent) or 0
end

local direct
do
  local NAME = "bytes_sent"
  local ok = pcall(ffi.cdef, "long long strtoll(const char *nptr, char **endptr, int base);")
  local C = ffi.C
  local found = ok
    and pcall(function()
      return C.strtoll ~= nil and C.ngx_http_lua_ffi_var_get ~= nil
    end)
  if found then
    local get_request = base.get_request
    local var_get = C.ngx_http_lua_ffi_var_get
    local strtoll = C.strtoll
    local copy = ffi.copy
    local lowcase = ffi.new("char[?]", #NAME)
    local value = ffi.new("char *[1]")
    local len = ffi.new("size_t[1]")
    local err = ffi.new("char *[1]")
    -- An off_t in decimal has at most 19 digits.
    local digits = ffi.new("char[24]")
    direct = function()
      local r = get_request()
      if r == nil or var_get(r, NAME, #NAME, lowcase, 0, value, len, err) ~= 0 then
        return 0
      end
      local n = tonumber(len[0])
      if n < 1 or n > 20 then
        return 0
      end
      copy(digits, value[0], n)
      digits[n] = 0
      return tonumber(strtoll(digits, nil, 10))
    end
  end
end

local bytes_sent
-- The first counted request of this worker: chooses the reader for the rest.
bytes_sent = function()
  local want = via_var()
  local ok, got = false, "no direct reader in this build"
  if direct ~= nil then
    ok, got = pcall(direct)
  end
  if ok and got == want then
    bytes_sent = direct
  else
    bytes_sent = via_var
    ngx.log(ngx.WARN, "nginx-lb: traffic counters read $bytes_sent through ngx.var (the direct reader gave ",
      tostring(got), " for ", want, ")")
  end
  return want
end

-- Whole milliseconds from `since` (seconds, nginx's cached clock) to now.
local function ms_since(since)
  local ms = floor((now() - since) * 1000 + 0.5)
  if ms < 0 then
    return 0
  end
  return ms
end

--- log_by_lua: counts the request. `ctx` is the request's ngx.ctx (looked up once for the log phase's callers).
function _M.log(ctx)
  if not flushing then
    -- The first request of this worker starts its flush timer.
    flushing = true
    local ok, err = ngx.timer.every(FLUSH_SECONDS, on_timer)
    if not ok then
      -- Without the timer every request is flushed at once: slower, but nothing is lost.
      closing = true
      ngx.log(ngx.ERR, "nginx-lb: cannot start the traffic counters' flush timer: ", err)
    end
  end
  if ctx == nil then
    ctx = ngx.ctx
  end
  local k = route_cell(ctx)
  touch(k)
  local v = k.v
  local c = floor(ngx.status / 100)
  if c < 1 or c > 5 then
    c = 0
  end
  v[CLASS + c] = v[CLASS + c] + 1
  local bytes = bytes_sent()
  if bytes > 0 then
    v[B] = v[B] + bytes
  end
  local ms = ms_since(start_time())
  local t = T + bucket(ms)
  v[t] = v[t] + 1
  v[TS] = v[TS] + ms
  -- No peer chosen: nginx answered itself (no route, an empty set) and there is no upstream to count.
  local last = ctx.nlb_last
  if last ~= nil then
    local ums = ms_since(ctx.nlb_at)
    local u = U + bucket(ums)
    v[u] = v[u] + 1
    v[US] = v[US] + ums
    count_endpoints(k, ctx, last, ngx.status >= 500)
  end
  if closing then
    -- The worker is shutting down and made its final flush (or has no timer): count where the controller reads.
    flush()
  end
end

-- Whether a push removed upstreams since the last sweep.
local removals = nil

--- For the worker's sweep timer (nginx_lb_sweep), once a push removed upstreams: forgets the key strings of routes
--- whose upstream the sets dict no longer holds (a request of it builds them again). Returns the number forgotten.
function _M.sweep()
  local sets = sets_layout.dict()
  if sets == nil then
    return 0
  end
  removals = removals or sweeper.removals(sets, sets_layout.REMOVED)
  if not removals() then
    return 0
  end
  local dropped = sweeper.drop_missing(routes, sets, function(route)
    return route ~= "-" and sets_layout.PREFIX .. route or nil
  end)
  route_count = route_count - dropped
  return dropped
end

local function reply(status, body)
  ngx.status = status
  ngx.header["Content-Type"] = "text/plain"
  ngx.print(body)
  return ngx.exit(ngx.HTTP_OK)
end

-- Every non-zero counter, drained: "<key> <amount>" lines between a header and an end line that counts them, so the
-- reader can tell a cut-off answer.
local function drain()
  local out = { "nginx-lb-stats 1\n" }
  local n = 0
  -- get_keys holds the dict's lock while it lists; done once a second, off the request path.
  for _, key in ipairs(dict:get_keys(0)) do
    local v = dict:get(key)
    if v == 0 then
      if dict:ttl(key) == 0 then
        dict:expire(key, IDLE_TTL)
      end
    elseif v then
      dict:incr(key, -v)
      if (dict:ttl(key) or 0) > 0 then
        dict:expire(key, 0)
      end
      n = n + 1
      out[#out + 1] = key .. " " .. format("%.0f", v) .. "\n"
    end
  end
  out[#out + 1] = "end counters=" .. n .. "\n"
  return out
end

--- content_by_lua for the control server's counters location; `token` is the secret rendered into nginx.conf.
function _M.serve(token)
  if type(token) ~= "string" or token == "" then
    return reply(403, "no token is configured: nginx-lb renders one; refusing every request\n")
  end
  if not secret.same(ngx.req.get_headers()[secret.HEADER], token) then
    return reply(401, "missing or wrong X-Nginx-Lb-Token\n")
  end
  if ngx.req.get_method() ~= "GET" then
    ngx.header["Allow"] = "GET"
    return reply(405, "use GET\n")
  end
  if dict == nil then
    return reply(500, "no lua_shared_dict " .. _M.DICT .. "\n")
  end
  return reply(200, drain())
end

return _M
