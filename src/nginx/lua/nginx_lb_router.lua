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
-- Each worker decodes a server's routes once per generation, and keeps the decoded form when a push left the
-- server unchanged. The generation is the endpoint sets' (a routes push bumps it too), so a request reads one
-- number from the shared dict for the router, the balancer and outlier ejection together, then plain table lookups:
-- no pattern per route, no key string built once the server is cached.

local layout = require("nginx_lb_routes")
local sets = require("nginx_lb_sets")
local balancer = require("nginx_lb_balancer")
local sweeper = require("nginx_lb_sweep")

local ngx = ngx
local pairs = pairs
local shared = layout.dict()
local GEN, PREFIX = sets.GEN, layout.PREFIX
local byte, sub, find, gmatch, gsub, format = string.byte, string.sub, string.find, string.gmatch, string.gsub,
  string.format

local _M = {}

local NO_SITE = "no site is configured for this host name\n"
local NO_ROUTE = "no route for this path\n"

-- Per worker: port -> domain -> { gen, raw, routes }; only servers that exist (an unknown Host caches nothing, so a
-- client cannot grow it).
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

local function server(port, domain, gen)
  local domains = cache[port]
  if domains == nil then
    domains = {}
    cache[port] = domains
  end
  local entry = domains[domain]
  if entry and entry.gen == gen then
    return entry.routes
  end
  local raw = shared:get(PREFIX .. port .. " " .. domain)
  if raw == nil then
    domains[domain] = nil
    return nil
  end
  if entry and entry.raw == raw then
    entry.gen = gen
    return entry.routes
  end
  local routes = decode(raw)
  domains[domain] = { gen = gen, raw = raw, routes = routes }
  return routes
end

-- The server a Host names on this port: the exact name, then `*.` wildcards from the longest suffix down.
local function lookup(port, host, gen)
  local routes = server(port, host, gen)
  if routes then
    return routes
  end
  local dot = find(host, ".", 1, true)
  while dot do
    routes = server(port, "*" .. sub(host, dot), gen)
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

-- nginx's $args, from the request URI already read (a variable read costs more than this scan): the bytes after the
-- first '?', up to a '#' (nginx's parser ends the query there), and none when a '#' comes first; nil when empty.
local function query(raw)
  local q = find(raw, "?", 1, true)
  if q == nil then
    return nil
  end
  local h = find(raw, "#", 1, true)
  if h ~= nil and h < q then
    return nil
  end
  local args = sub(raw, q + 1, (h or 0) - 1)
  return args ~= "" and args or nil
end

local function reply(status, text)
  ngx.status = status
  ngx.header["Content-Type"] = "text/plain"
  ngx.header["Content-Length"] = #text
  ngx.print(text)
  return ngx.exit(ngx.HTTP_OK)
end

--- access_by_lua of a port's catch-all location: picks the route, answers 404/503 as reload mode does, or gives
--- the balancer the route's set and proxy_pass $nlb_uri (left empty for a route that maps its prefix to itself).
--- `port`: the port the location's server listens on (the renderer writes it; the table keys servers by it). `tag`:
--- set $nlb_route for every routed request (the access log names the route); without it only a route's own 503 sets
--- it (the traffic counters take a routed request's route from its set).
function _M.access(port, tag)
  local var = ngx.var
  if port == nil then
    -- Not rendered with a port: the port the connection came in on.
    port = var.server_port
  end
  local gen = shared:get(GEN)
  local routes = lookup(port, var.host, gen)
  if routes == nil then
    return reply(404, NO_SITE)
  end
  local uri = var.uri
  local route, exact = find_route(routes, uri)
  if route == nil then
    return reply(404, NO_ROUTE)
  end
  local upstream = route.upstream
  local set = balancer.usable(upstream, gen)
  if set == nil then
    -- The same 503 as a rendered route's location.
    var.nlb_route = upstream
    return balancer.empty(route.message)
  end
  if tag then
    var.nlb_route = upstream
  end
  ngx.ctx.nlb_set = set
  if route.identity then
    -- $nlb_uri stays empty: proxy_pass then sends what it sends without a URI part (the client's request URI, or
    -- nginx's normalised one where it has no valid unparsed one), as reload mode's location does for this route.
    return
  end
  local request_uri = var.request_uri
  local target
  if exact then
    target = route.exact
  else
    local rest = sub(uri, route.cut)
    target = route.slash .. (quoted(request_uri) and gsub(rest, ESCAPE_SET, ESCAPED) or rest)
  end
  local args = query(request_uri)
  if args ~= nil then
    target = target .. "?" .. args
  end
  var.nlb_uri = target
end

-- Whether a push removed servers since the last sweep.
local removals = nil

--- For the worker's sweep timer (nginx_lb_sweep), once a push removed servers: forgets those the dict no longer
--- holds. Returns the number of servers forgotten.
function _M.sweep()
  removals = removals or sweeper.removals(shared, layout.REMOVED)
  if not removals() then
    return 0
  end
  local dropped = 0
  for port, domains in pairs(cache) do
    dropped = dropped + sweeper.drop_missing(domains, shared, function(domain)
      return PREFIX .. port .. " " .. domain
    end)
  end
  return dropped
end

--- balancer_by_lua of the shared upstream: the set of the route access() chose (in ngx.ctx).
function _M.balance()
  return balancer.balance(nil)
end

return _M
