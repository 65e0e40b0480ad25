-- nginx-lb's routing-table push endpoint (`--routes-mode dynamic`), served by the loopback control server: the
-- controller sends the whole table (or, with a base version, only the changed servers) in nginx_lb_routes' line
-- format; GET answers the version held. Every request must carry the push token (nginx_lb_control).

local control = require("nginx_lb_control")
local routes = require("nginx_lb_routes")

local ngx = ngx
local format = string.format

local _M = {}

local function stored_version()
  local v = routes.dict():get(routes.VERSION)
  return v and format("%.0f", v) or "null"
end

local function post()
  local body = control.body()
  if body == nil then
    return
  end
  local parsed, perr = routes.parse(body)
  if parsed == nil then
    return control.error_reply(400, perr)
  end
  local dict = routes.dict()
  if not dict:add(routes.LOCK, true, 5) then
    return control.error_reply(409, "another routes push is in progress")
  end
  -- A partial push is a diff against what the controller believes nginx holds; on any other base it would leave a
  -- mix, so it is refused and the controller sends the whole table.
  local base = parsed.base
  if base ~= nil and dict:get(routes.VERSION) ~= base then
    dict:delete(routes.LOCK)
    return control.error_reply(409, "partial push against version " .. format("%.0f", base) .. ", nginx holds "
      .. stored_version())
  end
  local count, serr = routes.store(parsed, base ~= nil)
  dict:delete(routes.LOCK)
  if count == nil then
    return control.error_reply(507, serr)
  end
  return control.reply(200, '{"version":' .. stored_version() .. ',"servers":' .. count .. "}")
end

--- content_by_lua for the control server's routes location; `token` is the secret rendered into nginx.conf.
function _M.serve(token)
  if not control.authorized(token) then
    return
  end
  local method = ngx.req.get_method()
  if method == "GET" then
    return control.reply(200, '{"version":' .. stored_version() .. "}")
  end
  if method ~= "POST" then
    ngx.header["Allow"] = "GET, POST"
    return control.error_reply(405, "use GET or POST")
  end
  return post()
end

return _M
