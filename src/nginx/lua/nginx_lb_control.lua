-- What every token-protected endpoint of nginx-lb's loopback control server shares: the token check and JSON replies.
--
-- Loopback is shared with every local user, so every request, reads included, must carry the token the controller
-- rendered into nginx.conf (which lives in a 0700 dir). Without a configured token nothing is served at all.

local bit = require("bit")

local ngx = ngx
local type = type
local byte, format = string.byte, string.format
local bor, bxor = bit.bor, bit.bxor

local _M = {}

local TOKEN_HEADER = "x-nginx-lb-token"

-- Constant time in the given value: every byte of the secret is compared whatever differs first, and a wrong length
-- only sets a flag, so neither the position of the first wrong byte nor the secret's length shows in the timing.
local function same_secret(given, secret)
  if type(given) ~= "string" then
    given = ""
  end
  local diff = #given == #secret and 0 or 1
  for i = 1, #secret do
    diff = bor(diff, bxor(byte(given, i) or 0, byte(secret, i)))
  end
  return diff == 0
end

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
  if not same_secret(ngx.req.get_headers()[TOKEN_HEADER], token) then
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
