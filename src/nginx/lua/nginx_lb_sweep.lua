-- Per-worker housekeeping after a push. The request path caches what it decodes by name: the router each server's
-- routes, the balancer each upstream's set, the traffic counters each route's key strings, the TLS handshake each
-- site's parsed certificate. An entry is refreshed when a request asks for its name again, so the entry of a name a
-- push removed (a site, a route, an upstream) would stay for the worker's life: with routing changes, memory would
-- grow by every site that ever existed. A timer per worker asks each loaded module to drop what its dict no longer
-- holds; each module walks its cache only after a push removed names (the dicts count removals), so a tick costs a
-- few shared-dict reads and no request ever pays for it.
--
-- What is dropped is left to the collector's own pace (a cycle per doubling of the live heap, its work spread over
-- allocations): a forced full collection here would stall the worker for a pass over its whole live heap, which with
-- thousands of sites served is tens of MB.

local ngx = ngx
local ipairs, pcall, type = ipairs, pcall, type
local loaded = package.loaded

local _M = {}

-- How soon after a push a removed name's cached entries are dropped.
local INTERVAL = 1
-- The modules with caches by name, when loaded (the router and the certificates only in the modes that use them).
local MODULES = { "nginx_lb_balancer", "nginx_lb_router", "nginx_lb_stats", "nginx_lb_certs" }

--- One pass: every loaded module drops what its dict no longer names. Returns the number of entries dropped.
function _M.sweep()
  local dropped = 0
  for _, name in ipairs(MODULES) do
    local m = loaded[name]
    if type(m) == "table" and m.sweep then
      local ok, res = pcall(m.sweep)
      if not ok then
        ngx.log(ngx.ERR, "nginx-lb: sweeping ", name, "'s cache failed: ", res)
      elseif type(res) == "number" then
        dropped = dropped + res
      end
    end
  end
  return dropped
end

local function tick(premature)
  if premature then
    return
  end
  _M.sweep()
end

--- init_worker_by_lua: starts this worker's sweep timer.
function _M.init_worker()
  local ok, err = ngx.timer.every(INTERVAL, tick)
  if not ok then
    ngx.log(ngx.ERR, "nginx-lb: cannot start the cache sweep timer (", err, "): entries of removed sites stay cached ",
      "until nginx reloads")
  end
end

return _M
