-- nginx-lb's start-up sets: a new nginx master (first start, or a restart after a crash) has an empty shared dict and
-- would answer 503 on every route until the controller pushes. The controller keeps the last pushed sets in a 0600
-- file in its state dir (same line format as a push); init_by_lua loads it into an empty dict. On a reload the dict
-- survives with what was pushed since, which is newer than any file, so the file is left alone.

local sets = require("nginx_lb_sets")

local ngx = ngx
local io = io
local pcall = pcall

local _M = {}

-- A push body is capped at 16 MB by client_max_body_size; the file holds the same text.
local MAX_BYTES = 16 * 1024 * 1024
local ENOENT = 2

local function read(path)
  local f, err, code = io.open(path, "rb")
  if f == nil then
    if code == ENOENT then
      return nil, nil -- no file yet (nothing pushed ever): not an error
    end
    return nil, err
  end
  -- One byte past the limit tells an oversized file without trusting its size (a directory reports a huge one).
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
  local dict = sets.dict()
  if dict:get(sets.VERSION) ~= nil then
    return
  end
  local text, rerr = read(path)
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
  local count, serr = sets.store(parsed, false)
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
  -- The file's text and its parsed form (megabytes with 10,000 sites) are garbage now: collected here, in the master,
  -- before the workers are forked, or every worker would inherit them and copy the pages when its own GC runs.
  collectgarbage("collect")
end

return _M
