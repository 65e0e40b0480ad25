-- Per-worker housekeeping after a push. The request path caches what it decodes by name: the router each server's
-- routes, the balancer each upstream's set, the traffic counters each route's key strings, the TLS handshake each
-- site's parsed certificate. An entry is refreshed when a request asks for its name again, so the entry of a name a
-- push removed (a site, a route, an upstream) would stay for the worker's life: with routing changes, memory would
-- grow by every site that ever existed. A timer per worker asks each loaded module to drop what its dict no longer
-- holds; each module does so only when its dict's generation moved since its last sweep, so a tick without a push
-- costs a few shared-dict reads and no request ever pays for it.

local ngx = ngx
local ipairs, pcall, type = ipairs, pcall, type
local loaded = package.loaded

local _M = {}

-- How soon after a push a removed name's memory is freed.
local INTERVAL = 1
-- The modules with caches by name, when loaded (the router and the certificates only in the modes that use them).
local MODULES = { "nginx_lb_balancer", "nginx_lb_router", "nginx_lb_stats", "nginx_lb_certs" }

--- One pass: every loaded module drops what its dict no longer names. Returns the number of modules that swept.
function _M.sweep()
  local swept = 0
  for _, name in ipairs(MODULES) do
    local m = loaded[name]
    if type(m) == "table" and m.sweep then
      local ok, res = pcall(m.sweep)
      if not ok then
        ngx.log(ngx.ERR, "nginx-lb: sweeping ", name, "'s cache failed: ", res)
      elseif res then
        swept = swept + 1
      end
    end
  end
  return swept
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
