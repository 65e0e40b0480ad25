-- Per-worker housekeeping after a push. The request path caches what it decodes by name: the router each server's
-- routes, the balancer each upstream's set, the traffic counters each route's key strings, the TLS handshake each
-- site's parsed certificate. An entry is refreshed when a request asks for its name again, so the entry of a name a
-- push removed (a site, a route, an upstream) would stay for the worker's life: with routing changes, memory would
-- grow by every site that ever existed. A timer per worker asks each loaded module to drop what its dict no longer
-- holds; each module walks its cache only after a push removed names (the dicts count removals), so a tick costs a
-- few shared-dict reads and no request ever pays for it.
--
-- What is dropped goes with the pushes' parsing garbage at once, in a full collection, while the worker's heap is
-- small (up to FULL_COLLECT_KB): then a pass over it is cheap, and the garbage the collector's own pace would let pile
-- up (a cycle per doubling of the live heap) is as large as the heap itself. A larger heap (thousands of sites served)
-- is left to that pace: a full pass over tens of MB would stall the worker's requests.

local ngx = ngx
local ipairs, pairs, pcall, type = ipairs, pairs, pcall, type
local loaded = package.loaded
local collectgarbage = collectgarbage

local _M = {}

-- How soon after a push a removed name's cached entries are dropped.
local INTERVAL = 1
-- A full collection after a sweep that dropped entries, while the heap is under this size.
local FULL_COLLECT_KB = 8192
-- The modules with caches by name, when loaded (the router and the certificates only in the modes that use them).
local MODULES = { "nginx_lb_balancer", "nginx_lb_router", "nginx_lb_stats", "nginx_lb_certs" }

--- One pass: every loaded module drops what its dict no longer names, then a full collection if anything went and the
--- heap is small. Returns the number of entries dropped.
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
  if dropped > 0 and collectgarbage("count") < FULL_COLLECT_KB then
    collectgarbage("collect")
  end
  return dropped
end

--- For a module's `sweep`: a function that answers true once `dict`'s removal count (`removed_key`) moved since it
--- last answered, so a module walks its cache only after a push removed names.
function _M.removals(dict, removed_key)
  local seen = nil
  return function()
    local removed = dict:get(removed_key)
    if removed == seen then
      return false
    end
    seen = removed
    return true
  end
end

--- Drops the entries of `cache` whose dict key (`key_of(name)`; nil keeps the entry) `dict` no longer holds (`ttl`
--- tells a key exists without copying its value). Returns the number dropped.
function _M.drop_missing(cache, dict, key_of)
  local dropped = 0
  for name in pairs(cache) do
    local key = key_of(name)
    if key ~= nil and dict:ttl(key) == nil then
      cache[name] = nil
      dropped = dropped + 1
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
