-- nginx-lb's push endpoint, served by the loopback control server: the controller sends whole endpoint sets (or, with
-- a base version, only the changed ones) in nginx_lb_sets' line format; GET answers the version held. Every request
-- must carry the push token (nginx_lb_control).

local control = require("nginx_lb_control")
local sets = require("nginx_lb_sets")

local _M = {}

local STORE = {
  dict = sets.dict,
  LOCK = sets.LOCK,
  VERSION = sets.VERSION,
  parse = sets.parse,
  store = sets.store,
  counted = "upstreams",
  noun = "endpoints",
}

--- content_by_lua for the control server's endpoint location; `token` is the secret rendered into nginx.conf.
function _M.serve(token)
  return control.serve_versioned(token, STORE)
end

return _M
