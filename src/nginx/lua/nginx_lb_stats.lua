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
--   n <route> <addr>  attempts sent to an endpoint ($upstream_addr: with retries every endpoint tried)
--   x <route> <addr>  of those, errors: a connection error or timeout (the ones nginx retried past), or a 5xx answer
-- <route> is $nlb_route (an upstream name nginx.conf sets per route location), `-` for a request no route matched.
--
-- Draining rather than cumulative totals: the reader subtracts what it returns with an atomic incr, so a count made
-- meanwhile is kept for the next read, an nginx restart (empty dict) needs no special case on either side, and a key
-- that stays at zero can be dropped safely. A key found at zero gets IDLE_TTL seconds to live; a count clears that
-- again at the next read, so only keys idle for IDLE_TTL (an endpoint or route that went away) expire. Were the
-- controller absent that long, counts on such keys would expire with them: figures nobody collects.
--
-- The per-request path allocates nothing in the common case and takes no lock: every key string is built once per
-- worker per route and endpoint (a reload starts fresh workers), and a request adds to a plain Lua table of its worker.
-- A timer per worker adds that table to the dict every FLUSH_SECONDS (incr: atomic across workers); a worker that is
-- shutting down (reload, stop) flushes once more (nginx runs pending timers early then) and from then on counts
-- straight into the dict.

local secret = require("nginx_lb_secret")

local ngx = ngx
local var = ngx.var
local pairs, ipairs, type = pairs, ipairs, type
local now = ngx.now
local start_time = ngx.req.start_time
local tonumber = tonumber
local floor = math.floor
local find, match, gmatch, format = string.find, string.match, string.gmatch, string.format

local _M = {}

_M.DICT = "nginx_lb_stats"
-- The same bounds as the controller's histograms (src/admin/traffic.ts HISTOGRAM_BUCKETS), in milliseconds.
local BOUNDS_MS = { 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000 }
local NB = #BOUNDS_MS
local IDLE_TTL = 300
local FLUSH_SECONDS = 0.5
-- Per worker: a hostile or broken config cannot grow the key caches without end; past these they start over.
local MAX_ROUTES = 100000
local MAX_ENDPOINTS_PER_ROUTE = 256

local dict = ngx.shared[_M.DICT]

-- Per worker: key -> amount counted since the last flush.
local pending = {}
local flushing = false
-- Set by the final (premature) flush: from then on requests count straight into the dict.
local closing = false

local function flush()
  local batch = pending
  pending = {}
  for key, n in pairs(batch) do
    local ok, err = dict:incr(key, n, 0)
    if not ok then
      ngx.log(ngx.WARN, "nginx-lb: traffic counter ", key, " lost ", n, ": ", err)
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

local function add(key, n)
  pending[key] = (pending[key] or 0) + n
end

local function add_now(key, n)
  dict:incr(key, n, 0)
end

-- Per worker: route -> its key strings.
local routes = {}
local route_count = 0

local function keys_of(route)
  if route_count >= MAX_ROUTES then
    routes = {}
    route_count = 0
  end
  local k = { class = {}, u = {}, t = {}, b = "b " .. route, us = "us " .. route, ts = "ts " .. route, ep = {}, eps = 0 }
  for c = 0, 5 do
    k.class[c] = "c " .. route .. " " .. c .. "xx"
  end
  for i = 1, NB + 1 do
    k.u[i] = "u " .. route .. " " .. i
    k.t[i] = "t " .. route .. " " .. i
  end
  k.route = route
  routes[route] = k
  route_count = route_count + 1
  return k
end

local function bucket(ms)
  for i = 1, NB do
    if ms <= BOUNDS_MS[i] then
      return i
    end
  end
  return NB + 1
end

local function endpoint_keys(k, addr)
  local e = k.ep[addr]
  if e then
    return e
  end
  if k.eps >= MAX_ENDPOINTS_PER_ROUTE then
    k.ep = {}
    k.eps = 0
  end
  e = { n = "n " .. k.route .. " " .. addr, x = "x " .. k.route .. " " .. addr }
  k.ep[addr] = e
  k.eps = k.eps + 1
  return e
end

-- $upstream_addr: one address, or with retries "a, b" (and " : " between internal redirects); every address but the
-- last was left after a connection error or timeout (proxy_next_upstream error timeout).
local function count_endpoints(count, k, addrs, failed)
  if not find(addrs, " ", 1, true) then
    local e = endpoint_keys(k, addrs)
    count(e.n, 1)
    if failed then
      count(e.x, 1)
    end
    return
  end
  local last
  for addr in gmatch(addrs, "[^ ,]+") do
    if addr ~= ":" then
      if last then
        local e = endpoint_keys(k, last)
        count(e.n, 1)
        count(e.x, 1)
      end
      last = addr
    end
  end
  if last then
    count_endpoints(count, k, last, failed)
  end
end

--- log_by_lua: counts the request.
function _M.log()
  local count = add
  if not flushing then
    -- The first request of this worker starts its flush timer.
    flushing = true
    local ok, err = ngx.timer.every(FLUSH_SECONDS, on_timer)
    if not ok then
      flushing = false
      ngx.log(ngx.ERR, "nginx-lb: cannot start the traffic counters' flush timer: ", err)
      count = add_now
    end
  end
  if closing then
    -- The worker is shutting down and made its final flush: count where the controller reads.
    count = add_now
  end
  local route = var.nlb_route
  if route == nil or route == "" then
    route = "-"
  end
  local k = routes[route] or keys_of(route)
  local status = ngx.status
  local c = floor(status / 100)
  if c < 1 or c > 5 then
    c = 0
  end
  count(k.class[c], 1)
  local bytes = tonumber(var.bytes_sent)
  if bytes and bytes > 0 then
    count(k.b, bytes)
  end
  local ms = floor((now() - start_time()) * 1000 + 0.5)
  if ms < 0 then
    ms = 0
  end
  count(k.t[bucket(ms)], 1)
  if ms > 0 then
    count(k.ts, ms)
  end
  if route == "-" then
    return
  end
  local addrs = var.upstream_addr
  if addrs == nil then
    return
  end
  local times = var.upstream_response_time
  local up = tonumber(times)
  if up == nil and times then
    -- With retries: the time of the last upstream tried.
    up = tonumber(match(times, "([^ ,:]+)$"))
  end
  if up then
    local ums = floor(up * 1000 + 0.5)
    count(k.u[bucket(ums)], 1)
    if ums > 0 then
      count(k.us, ums)
    end
  end
  count_endpoints(count, k, addrs, status >= 500)
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
