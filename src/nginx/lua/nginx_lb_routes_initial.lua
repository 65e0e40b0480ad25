-- nginx-lb's start-up routing table (`--routes-mode dynamic`): a new nginx master has an empty shared dict and would
-- answer 404 for every site until the controller pushes. The controller keeps the last pushed table in a 0600 file in
-- its state dir (the push format); init_by_lua loads it into a dict that holds no table yet. On a reload the dict
-- survives with what was pushed since, which is newer than any file, so the file is left alone.

local routes = require("nginx_lb_routes")

local ngx = ngx
local io = io
local pcall = pcall

local _M = {}

-- A push body is capped by client_max_body_size; the file holds the same text.
local MAX_BYTES = 16 * 1024 * 1024
local ENOENT = 2

local function read(path)
  local f, err, code = io.open(path, "rb")
  if f == nil then
    if code == ENOENT then
      return nil, nil
    end
    return nil, err
  end
  local text, rerr = f:read(MAX_BYTES + 1)
  f:close()
  if text == nil then
    return nil, rerr or "empty file"
  end
  if #text > MAX_BYTES then
    return nil, "larger than " .. MAX_BYTES .. " bytes"
  end
  return text
end

local function load(path)
  if routes.dict():get(routes.VERSION) ~= nil then
    return
  end
  local text, rerr = read(path)
  local parsed, perr
  if text ~= nil then
    parsed, perr = routes.parse(text)
    if parsed ~= nil and parsed.base ~= nil then
      parsed, perr = nil, "a partial table"
    end
  end
  if parsed == nil then
    if rerr or perr then
      ngx.log(ngx.ERR, "nginx-lb: ignoring the start-up routing table in ", path, " (", rerr or perr, "); sites ",
        "answer 404 until the controller pushes: check that nginx-lb runs and can write its state dir")
    end
    return
  end
  local count, serr = routes.store(parsed, false)
  if count == nil then
    ngx.log(ngx.ERR, "nginx-lb: could not load the start-up routing table in ", path, " (", serr, ")")
    return
  end
  ngx.log(ngx.NOTICE, "nginx-lb: loaded ", count, " servers' routes (version ", string.format("%.0f", parsed.version),
    ") from ", path, " until the controller pushes")
end

--- init_by_lua: loads the table file at `path` when the dict holds none. Never raises (an error in init_by_lua would
--- stop nginx from starting): a bad file is logged and ignored.
function _M.load(path)
  local ok, err = pcall(load, path)
  if not ok then
    ngx.log(ngx.ERR, "nginx-lb: ignoring the start-up routing table in ", path, ": ", err)
  end
  -- The file's text and its parsed form (megabytes with 10,000 sites) are garbage now: collected here, in the master,
  -- before the workers are forked, or every worker would inherit them and copy the pages when its own GC runs.
  collectgarbage("collect")
end

return _M
