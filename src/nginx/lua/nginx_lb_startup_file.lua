-- Reading a start-up file in init_by_lua (the last pushed endpoint sets, routing table or certificates), and letting
-- go of what reading and loading it took before the master forks its workers.
--
-- LuaJIT's f:read(n) reserves an n-byte temporary buffer before it reads, and that buffer counts as Lua heap until the
-- collector shrinks it, by half per cycle. One read "up to the limit" (16 or 128 MB) would leave the master, and
-- every worker forked from it, with a heap that looks that large though it is barely touched: the collector paces
-- itself on that size, so each worker would let garbage pile up by as much before its first cycle, its memory growing
-- with every request and push until then. So the file is read in small chunks (the buffer stays small), and `release` collects
-- until the heap stops shrinking, so the workers start from the master's real heap.

local io = io
local concat = table.concat
local collectgarbage = collectgarbage

local _M = {}

local CHUNK = 65536
local ENOENT = 2
-- Each cycle halves the temporary buffer at most; a few MB of file text needs ~10 (each cheap: the master's live heap
-- is the loaded modules only).
local MAX_CYCLES = 40

--- The text of the file at `path`, at most `max` bytes; nil and nil when there is no file (nothing pushed ever: not an
--- error); nil and why when it cannot be read, is empty, or is larger.
function _M.read(path, max)
  local f, err, code = io.open(path, "rb")
  if f == nil then
    if code == ENOENT then
      return nil, nil
    end
    return nil, err
  end
  local chunks, total = {}, 0
  while true do
    local chunk, rerr = f:read(CHUNK)
    if chunk == nil then
      if rerr then
        f:close()
        return nil, rerr
      end
      break
    end
    total = total + #chunk
    -- Stops at the limit, whatever size the file claims.
    if total > max then
      f:close()
      return nil, "larger than " .. max .. " bytes"
    end
    chunks[#chunks + 1] = chunk
  end
  f:close()
  if total == 0 then
    return nil, "empty file"
  end
  return concat(chunks)
end

--- Collects until the heap stops shrinking: the file's text, its parsed form and LuaJIT's temporary buffer are
--- garbage once loaded into the shared dict. Run in the master, before the workers are forked, or every worker would
--- inherit them (and copy the pages when its own collector runs).
function _M.release()
  local before = collectgarbage("count")
  for _ = 1, MAX_CYCLES do
    collectgarbage("collect")
    local after = collectgarbage("count")
    if after >= before then
      return
    end
    before = after
  end
end

return _M
