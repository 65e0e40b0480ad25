-- nginx-lb's router for `--routes-mode dynamic`: nginx.conf holds one catch-all server per listening port, and this
-- module does per request what reload mode's rendered server_name and location blocks do, from the routing table the
-- controller pushes (nginx_lb_routes has the layout):
--
--   * Host: the exact name, then the longest `*.` wildcard, as nginx's server_name does ($host is lower case, without
--     the port); none: 404 with the text of reload mode's default server;
--   * path: the longest route prefix `/p` that equals the URI or is followed in it by "/" (`/px` is not `/p`), as
--     reload mode's `location /p/` + `location = /p` pair does; none: 404 "no route for this path";
--   * an empty endpoint set: the balancer's 503 naming the route (the text reload mode renders);
--   * the backend URI, byte for byte what reload mode's proxy_pass sends: the client's request URI unchanged when the
--     route maps its prefix to itself; otherwise backend_path + the rest of nginx's decoded, normalised URI, escaped
--     as nginx escapes it (only when the client's path had a %-escape nginx parsed), then "?" + the raw query.
--
-- Each worker decodes a server's routes once per table generation, and keeps the decoded form when a push left the
-- server unchanged: a request costs a few shared-dict reads and plain table lookups, no pattern per route.

local layout = require("nginx_lb_routes")
local balancer = require("nginx_lb_balancer")

local ngx = ngx
local pairs = pairs
local shared = layout.dict()
local GEN, PREFIX = layout.GEN, layout.PREFIX
local byte, sub, find, gmatch, gsub, format = string.byte, string.sub, string.find, string.gmatch, string.gsub,
  string.format

local _M = {}

local NO_SITE = "no site is configured for this host name\n"
local NO_ROUTE = "no route for this path\n"

-- Per worker: "<port> <domain>" -> { gen, raw, routes }; only servers that exist (an unknown Host caches nothing, so
-- a client cannot grow it).
local cache = {}

-- What nginx's ngx_escape_uri(NGX_ESCAPE_URI) escapes: controls, space, " # % < > ? \ ^ ` { | } and bytes >= 0x7f.
local ESCAPE_SET = "[%z\1-\32\"#%%<>%?\\%^`{|}\127-\255]"
local ESCAPED = {}
for c = 0, 255 do
  ESCAPED[string.char(c)] = format("%%%02X", c)
end

local function with_slash(p)
  return byte(p, #p) == 47 and p or (p .. "/")
end

local function without_slash(p)
  return (#p > 1 and byte(p, #p) == 47) and sub(p, 1, -2) or p
end

-- One server's routes by prefix, each with what the request needs precomputed.
local function decode(raw)
  local routes = {}
  for prefix, upstream, backend_path, backend in gmatch(raw, "([^ ;]+) ([^ ;]+) ([^ ;]+) ([^ ;]+);") do
    routes[prefix] = {
      upstream = upstream,
      message = "no endpoint for route " .. prefix .. " (" .. backend .. ")\n",
      identity = with_slash(prefix) == with_slash(backend_path),
      -- `location /p/ { proxy_pass http://u<backend_path>/; }`: the part of the URI after "/p/" follows it.
      slash = with_slash(backend_path),
      cut = #with_slash(prefix) + 1,
      -- `location = /p { proxy_pass http://u<backend_path>; }` (reload mode renders backend_path without its "/").
      exact = without_slash(backend_path),
    }
  end
  return routes
end

local function server(key, gen)
  local entry = cache[key]
  if entry and entry.gen == gen then
    return entry.routes
  end
  local raw = shared:get(PREFIX .. key)
  if raw == nil then
    cache[key] = nil
    return nil
  end
  if entry and entry.raw == raw then
    entry.gen = gen
    return entry.routes
  end
  local routes = decode(raw)
  cache[key] = { gen = gen, raw = raw, routes = routes }
  return routes
end

-- The server a Host names on this port: the exact name, then `*.` wildcards from the longest suffix down.
local function lookup(port, host, gen)
  local routes = server(port .. " " .. host, gen)
  if routes then
    return routes
  end
  local dot = find(host, ".", 1, true)
  while dot do
    routes = server(port .. " *" .. sub(host, dot), gen)
    if routes then
      return routes
    end
    dot = find(host, ".", dot + 1, true)
  end
  return nil
end

-- The route of a path and whether it matched exactly (`= /p`); "/" is only ever a prefix location.
local function find_route(routes, uri)
  local route = routes[uri]
  if route and uri ~= "/" then
    return route, true
  end
  for i = #uri, 2, -1 do
    if byte(uri, i) == 47 then
      route = routes[sub(uri, 1, i - 1)]
      if route then
        return route, false
      end
    end
  end
  return routes["/"], false
end

-- nginx's r->quoted_uri: its request-line parser sets it on a '%' in the path (before the query).
local function quoted(raw)
  local q = find(raw, "[%%?]")
  return q ~= nil and byte(raw, q) == 37
end

local function reply(status, text)
  ngx.status = status
  ngx.header["Content-Type"] = "text/plain"
  ngx.header["Content-Length"] = #text
  ngx.print(text)
  return ngx.exit(ngx.HTTP_OK)
end

--- access_by_lua of a port's catch-all location: picks the route, answers 404/503 as reload mode does, or sets the
--- upstream for the balancer and $nlb_uri for proxy_pass.
function _M.access()
  local gen = shared:get(GEN)
  local routes = lookup(ngx.var.server_port, ngx.var.host, gen)
  if routes == nil then
    return reply(404, NO_SITE)
  end
  local uri = ngx.var.uri
  local route, exact = find_route(routes, uri)
  if route == nil then
    return reply(404, NO_ROUTE)
  end
  local var = ngx.var
  var.nlb_route = route.upstream
  -- The same 503 (and the same per-request set) as a rendered route's location.
  balancer.access(route.upstream, route.message)
  ngx.ctx.nlb_upstream = route.upstream
  local request_uri = var.request_uri
  if route.identity then
    var.nlb_uri = request_uri
    return
  end
  local target
  if exact then
    target = route.exact
  else
    local rest = sub(uri, route.cut)
    target = route.slash .. (quoted(request_uri) and gsub(rest, ESCAPE_SET, ESCAPED) or rest)
  end
  local args = var.args
  if args ~= nil and args ~= "" then
    target = target .. "?" .. args
  end
  var.nlb_uri = target
end

-- The table's removal count when `sweep` last looked.
local swept = nil

--- For the worker's sweep timer (nginx_lb_sweep), once a push removed servers: forgets those the dict no longer holds
--- (`ttl` tells a key exists without copying its value). Returns the number of servers forgotten.
function _M.sweep()
  local removed = shared:get(layout.REMOVED)
  if removed == swept then
    return 0
  end
  swept = removed
  local dropped = 0
  for key in pairs(cache) do
    if shared:ttl(PREFIX .. key) == nil then
      cache[key] = nil
      dropped = dropped + 1
    end
  end
  return dropped
end

--- balancer_by_lua of the shared upstream: the route access() chose.
function _M.balance()
  return balancer.balance(ngx.ctx.nlb_upstream)
end

return _M
