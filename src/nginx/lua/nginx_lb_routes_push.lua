-- nginx-lb's routing-table push endpoint (`--routes-mode dynamic`), served by the loopback control server: the
-- controller sends the whole table (or, with a base version, only the changed servers) in nginx_lb_routes' line
-- format; GET answers the version held. Every request must carry the push token (nginx_lb_control).

local control = require("nginx_lb_control")
local routes = require("nginx_lb_routes")

local _M = {}

local STORE = {
  dict = routes.dict,
  LOCK = routes.LOCK,
  VERSION = routes.VERSION,
  parse = routes.parse,
  store = routes.store,
  counted = "servers",
  noun = "routes",
}

--- content_by_lua for the control server's routes location; `token` is the secret rendered into nginx.conf.
function _M.serve(token)
  return control.serve_versioned(token, STORE)
end

return _M
