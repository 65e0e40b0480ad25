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

local function version_text(dict, key)
  local v = dict:get(key)
  return v and format("%.0f", v) or "null"
end

local function post(store, dict)
  local body = _M.body()
  if body == nil then
    return
  end
  local parsed, perr = store.parse(body, dict)
  if parsed == nil then
    return _M.error_reply(400, perr)
  end
  if not dict:add(store.LOCK, true, 5) then
    return _M.error_reply(409, "another " .. store.noun .. " push is in progress")
  end
  -- A partial push is a diff against what the controller believes nginx holds; on any other base (nginx restarted,
  -- a push was lost) it would leave a mix, so it is refused and the controller sends the whole.
  local base = parsed.base
  if base ~= nil and dict:get(store.VERSION) ~= base then
    dict:delete(store.LOCK)
    return _M.error_reply(409, "partial push against version " .. format("%.0f", base) .. ", nginx holds "
      .. version_text(dict, store.VERSION))
  end
  local count, serr = store.store(parsed, base ~= nil)
  dict:delete(store.LOCK)
  if count == nil then
    return _M.error_reply(507, serr)
  end
  return _M.reply(200, '{"version":' .. version_text(dict, store.VERSION) .. ',"' .. store.counted .. '":' .. count
    .. "}")
end

--- content_by_lua for a versioned push location (endpoint sets, routes, certificates): GET answers the version held,
--- POST stores a whole push, or a partial one only on the version it was built against. `store` names the dict (a
--- function), its LOCK and VERSION keys, `parse(body, dict)`, `store(parsed, partial)` (the count stored, or nil and
--- why), what the count counts, and the noun used in messages.
function _M.serve_versioned(token, store)
  if not _M.authorized(token) then
    return
  end
  local dict = store.dict()
  local method = ngx.req.get_method()
  if method == "GET" then
    return _M.reply(200, '{"version":' .. version_text(dict, store.VERSION) .. "}")
  end
  if method ~= "POST" then
    ngx.header["Allow"] = "GET, POST"
    return _M.error_reply(405, "use GET or POST")
  end
  return post(store, dict)
end

return _M
