-- nginx-lb's start-up sets: a new nginx master (first start, or a restart after a crash) has an empty shared dict and
-- would answer 503 on every route until the controller pushes. The controller keeps the last pushed sets in a 0600
-- file in its state dir (same line format as a push); init_by_lua loads it into an empty dict. On a reload the dict
-- survives with what was pushed since, which is newer than any file, so the file is left alone.

local sets = require("nginx_lb_sets")
local startup_file = require("nginx_lb_startup_file")

local ngx = ngx
local pcall = pcall

local _M = {}

-- A push body is capped at 16 MB by client_max_body_size; the file holds the same text.
local MAX_BYTES = 16 * 1024 * 1024

local function load(path)
  local dict = sets.dict()
  if dict:get(sets.VERSION) ~= nil then
    return
  end
  local text, rerr = startup_file.read(path, MAX_BYTES)
  if text == nil then
    if rerr then
      ngx.log(ngx.ERR, "nginx-lb: ignoring the start-up endpoint sets in ", path, " (", rerr, "); routes answer ",
        "503 until the controller pushes: check that nginx-lb runs and can write its state dir")
    end
    return
  end
  local parsed, perr = sets.parse(text)
  if parsed == nil then
    ngx.log(ngx.ERR, "nginx-lb: ignoring the start-up endpoint sets in ", path, " (", perr, "); routes answer ",
      "503 until the controller pushes: check that nginx-lb runs (it rewrites this file after each push)")
    return
  end
  if parsed.base ~= nil then
    ngx.log(ngx.ERR, "nginx-lb: ignoring the start-up endpoint sets in ", path, " (a partial list, base=",
      parsed.base, "); routes answer 503 until the controller pushes")
    return
  end
  -- Stored without forgetting unlisted sets (a walk of every key in the dict): a dict with no version holds none,
  -- or what a push that failed half-way left, which the controller's next whole push forgets.
  local count, serr = sets.store(parsed, true)
  if count == nil then
    ngx.log(ngx.ERR, "nginx-lb: could not load the start-up endpoint sets in ", path, " (", serr, ")")
    return
  end
  ngx.log(ngx.NOTICE, "nginx-lb: loaded ", count, " endpoint sets (version ", string.format("%.0f", parsed.version),
    ") from ", path, " until the controller pushes")
end

--- init_by_lua: loads the sets file at `path` when the dict holds no version. Never raises (an error in init_by_lua
--- would stop nginx from starting): a bad file is logged and ignored, and routes answer 503 until the controller's push.
function _M.load(path)
  local ok, err = pcall(load, path)
  if not ok then
    ngx.log(ngx.ERR, "nginx-lb: ignoring the start-up endpoint sets in ", path, ": ", err)
  end
  -- The file's text and its parsed form (megabytes with 10,000 sites) are garbage now.
  startup_file.release()
end

return _M
