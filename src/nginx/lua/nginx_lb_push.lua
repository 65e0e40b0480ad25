-- nginx-lb's push endpoint, served by the loopback control server: the controller sends whole endpoint sets (or, with
-- a base version, only the changed ones) in nginx_lb_sets' line format; GET answers the version held.
--
-- Loopback is shared with every local user, so every request, reads included, must carry the token the controller
-- rendered into nginx.conf (which lives in a 0700 dir). Without a configured token nothing is served at all.

local sets = require("nginx_lb_sets")
local secret = require("nginx_lb_secret")

local ngx = ngx
local type = type
local byte, format = string.byte, string.format

local _M = {}

local function reply(status, body)
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

local function error_reply(status, message)
  return reply(status, '{"error":' .. json_string(message) .. "}")
end

local function stored_version()
  local v = sets.dict():get(sets.VERSION)
  return v and format("%.0f", v) or "null"
end

local function post()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if body == nil then
    -- Either empty, or nginx spilled it to a file because it exceeded client_body_buffer_size.
    if ngx.req.get_body_file() then
      return error_reply(413, "body too large")
    end
    return error_reply(400, "empty body")
  end
  local parsed, perr = sets.parse(body)
  if parsed == nil then
    return error_reply(400, perr)
  end
  local dict = sets.dict()
  if not dict:add(sets.LOCK, true, 5) then
    return error_reply(409, "another push is in progress")
  end
  -- A partial push is a diff against what the controller believes nginx holds; on any other base (nginx restarted,
  -- a push was lost) it would leave a mix, so it is refused and the controller sends everything.
  local base = parsed.base
  if base ~= nil and dict:get(sets.VERSION) ~= base then
    dict:delete(sets.LOCK)
    return error_reply(409, "partial push against version " .. format("%.0f", base) .. ", nginx holds " .. stored_version())
  end
  local count, serr = sets.store(parsed, base ~= nil)
  dict:delete(sets.LOCK)
  if count == nil then
    return error_reply(507, serr)
  end
  return reply(200, '{"version":' .. stored_version() .. ',"upstreams":' .. count .. "}")
end

--- True when this request carries `token` (the secret rendered into nginx.conf); otherwise answers 401 or 403 and
--- returns false. Every control-server location but the generation check goes through here.
function _M.authorized(token)
  if type(token) ~= "string" or token == "" then
    error_reply(403, "no push token is configured: nginx-lb renders one; refusing every request")
    return false
  end
  local given = ngx.req.get_headers()[secret.HEADER]
  if not secret.same(given, token) then
    error_reply(401, "missing or wrong X-Nginx-Lb-Token")
    return false
  end
  return true
end

_M.reply = reply
_M.error_reply = error_reply

--- content_by_lua for the control server's endpoint location; `token` is the secret rendered into nginx.conf.
function _M.serve(token)
  if not _M.authorized(token) then
    return
  end
  local method = ngx.req.get_method()
  if method == "GET" then
    return reply(200, '{"version":' .. stored_version() .. "}")
  end
  if method ~= "POST" then
    ngx.header["Allow"] = "GET, POST"
    return error_reply(405, "use GET or POST")
  end
  return post()
end

return _M
