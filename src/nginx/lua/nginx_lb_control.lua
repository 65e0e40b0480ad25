-- What every token-protected endpoint of nginx-lb's loopback control server shares: the token check and JSON replies.
--
-- Loopback is shared with every local user, so every request, reads included, must carry the token the controller
-- rendered into nginx.conf (which lives in a 0700 dir). Without a configured token nothing is served at all.

local secret = require("nginx_lb_secret")

local ngx = ngx
local type = type
local byte, format = string.byte, string.format

local _M = {}

function _M.reply(status, body)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.print(body, "\n")
  return ngx.exit(ngx.HTTP_OK)
end

local JSON_ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\" }

local function json_string(text)
  return '"' .. text:gsub('[%c"\\]', function(c)
    return JSON_ESCAPES[c] or format("\\u%04x", byte(c))
  end) .. '"'
end

function _M.error_reply(status, message)
  return _M.reply(status, '{"error":' .. json_string(message) .. "}")
end

--- Answers 403/401 (and ends the request) unless the request carries `token`; returns true when it does.
function _M.authorized(token)
  if type(token) ~= "string" or token == "" then
    _M.error_reply(403, "no push token is configured: nginx-lb renders one; refusing every request")
    return false
  end
  if not secret.same(ngx.req.get_headers()[secret.HEADER], token) then
    _M.error_reply(401, "missing or wrong X-Nginx-Lb-Token")
    return false
  end
  return true
end

--- The request body held in memory, or nil after answering 413 (spilled to a file: over the buffer) or 400 (empty).
function _M.body()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if body == nil then
    if ngx.req.get_body_file() then
      _M.error_reply(413, "body too large")
    else
      _M.error_reply(400, "empty body")
    end
  end
  return body
end

return _M
