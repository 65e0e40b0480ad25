-- nginx-lb's start-up routing table (`--routes-mode dynamic`): a new nginx master has an empty shared dict and would
-- answer 404 for every site until the controller pushes. The controller keeps the last pushed table in a 0600 file in
-- its state dir (the push format); init_by_lua loads it into a dict that holds no table yet. On a reload the dict
-- survives with what was pushed since, which is newer than any file, so the file is left alone.

local routes = require("nginx_lb_routes")
local startup_file = require("nginx_lb_startup_file")

local ngx = ngx
local pcall = pcall

local _M = {}

-- A push body is capped by client_max_body_size; the file holds the same text.
local MAX_BYTES = 16 * 1024 * 1024

local function load(path)
  if routes.dict():get(routes.VERSION) ~= nil then
    return
  end
  local text, rerr = startup_file.read(path, MAX_BYTES)
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
  -- Stored without forgetting unlisted servers (a walk of every key in the dict): a dict with no version holds none,
  -- or what a push that failed half-way left, which the controller's next whole push forgets.
  local count, serr = routes.store(parsed, true)
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
  -- The file's text and its parsed form (megabytes with 10,000 sites) are garbage now.
  startup_file.release()
end

return _M
