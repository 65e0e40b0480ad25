-- nginx-lb's endpoint sets: the shared dict layout and the line format the controller sends them in. Shared by the
-- push endpoint (nginx_lb_push), the start-up file (nginx_lb_initial) and the balancer (nginx_lb_balancer).
--
-- Shared dict `nginx_lb` (outlives reloads, not a master restart):
--   gen          integer bumped after every stored set list (what workers compare against their cache)
--   version      the controller's version of the sets held (what the push endpoint answers with)
--   u:<upstream> "ip port weight backup;..." (backup 0/1); absent = no endpoint
--   push_lock    held while a push writes, so two pushes never interleave their keys
--   removed      integer bumped after a push removed upstreams (workers then drop what they cached of them)
--
-- The format is the dict's own value format, one upstream a line, rather than JSON: the controller already validated
-- every value, the packaged lua-nginx-module ships without cjson, and a validated line is stored as it came, with no
-- decoder or re-encoding in between. Every line is still checked strictly here: the start-up file is read by a new
-- master with no controller around, and nothing malformed may reach set_current_peer whatever its source:
--
--   nginx-lb-sets version=<v>[ base=<b>]        v, b: integers 0 .. 2^53-1; base only on a partial push
--   <upstream>=<ip> <port> <weight> <0|1>;...   zero or more endpoints, each ending in ';' (none: the route is empty)
--   <upstream>                                  (partial push only) the upstream is gone: its set is forgotten
--   end upstreams=<n>                           n = the number of upstream lines, so a cut-off text is refused
-- Each line ends in "\n"; nothing may follow the end line.

local ngx = ngx
local tonumber = tonumber
local ipairs = ipairs
local pairs = pairs
local tostring = tostring
local type = type
local byte, sub, find, match, gmatch = string.byte, string.sub, string.find, string.match, string.gmatch

local _M = {}

_M.GEN = "gen"
_M.VERSION = "version"
_M.LOCK = "push_lock"
_M.REMOVED = "removed"
_M.PREFIX = "u:"

local WEIGHT_MAX = 1000
-- Beyond any real deployment (the renderer is sized for ~10,000 routes) yet small enough that a hostile text cannot
-- make one push hold a worker for long; the body itself is capped by client_max_body_size.
local MAX_UPSTREAMS = 100000
local MAX_ENDPOINTS = 10000
local MAX_NAME = 64
local MAX_VERSION = 9007199254740991

function _M.dict()
  return ngx.shared.nginx_lb
end

-- Literal addresses, the same grammar as the model's ip.ts: no names, ports, zones or leading zeros.
local function is_ipv4(text)
  local a, b, c, d = match(text, "^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then
    return false
  end
  for _, part in ipairs({ a, b, c, d }) do
    if #part > 3 or (#part > 1 and byte(part, 1) == 48) or tonumber(part) > 255 then
      return false
    end
  end
  return true
end

local function is_ipv6(text)
  if #text > 45 or not find(text, "^[%x:%.]+$") then
    return false
  end
  local dbl = find(text, "::", 1, true)
  if dbl and find(text, "::", dbl + 1, true) then
    return false
  end
  local head = dbl and sub(text, 1, dbl - 1) or text
  local tail = dbl and sub(text, dbl + 2) or ""
  local groups = {}
  for _, half in ipairs({ head, tail }) do
    if half ~= "" then
      for g in gmatch(half .. ":", "([^:]*):") do
        groups[#groups + 1] = g
      end
    end
  end
  -- A dotted quad may only end the text: in `1.2.3.4::` it is the last group but not the last thing written.
  local quad_at = (dbl and tail == "") and 0 or #groups
  local count = 0
  for k, g in ipairs(groups) do
    if k == quad_at and find(g, ".", 1, true) then
      if not is_ipv4(g) then
        return false
      end
      count = count + 2
    elseif find(g, "^%x%x?%x?%x?$") then
      count = count + 1
    else
      return false
    end
  end
  if dbl then
    return count <= 7
  end
  return count == 8
end

-- A canonical decimal (no sign, no leading zero) from lo to hi, or nil.
local function int(text, lo, hi)
  if text == nil or #text > 16 or not find(text, "^%d+$") or (#text > 1 and byte(text, 1) == 48) then
    return nil
  end
  local n = tonumber(text)
  if n < lo or n > hi then
    return nil
  end
  return n
end

-- The canonical decimal (no leading zero, at most `maxlen` digits) at `pos` that ends at the byte `stop`: its value
-- and the position of `stop`, or nil. Only string.byte and arithmetic, which LuaJIT compiles: a pattern with
-- captures would not be, and a start-up file holds 100,000 endpoints.
local function number_until(value, pos, stop, maxlen)
  local b = byte(value, pos)
  if b == nil or b < 48 or b > 57 then
    return nil
  end
  local n, i = b - 48, pos + 1
  b = byte(value, i)
  while b ~= stop do
    if b == nil or b < 48 or b > 57 or n == 0 or i - pos >= maxlen then
      return nil
    end
    n = n * 10 + b - 48
    i = i + 1
    b = byte(value, i)
  end
  return n, i
end

-- An IPv4 endpoint as the controller writes it, "<a.b.c.d> <port> <weight> <0|1>;" at `pos`, read byte by byte (no
-- strings made). Returns the position after its ';', or nil when the entry is anything else; the caller then checks
-- it the general way (and names what is wrong).
local function plain_ipv4_entry(value, pos)
  local n, i = number_until(value, pos, 46, 3) -- "."
  if n == nil or n > 255 then
    return nil
  end
  n, i = number_until(value, i + 1, 46, 3)
  if n == nil or n > 255 then
    return nil
  end
  n, i = number_until(value, i + 1, 46, 3)
  if n == nil or n > 255 then
    return nil
  end
  n, i = number_until(value, i + 1, 32, 3) -- " "
  if n == nil or n > 255 then
    return nil
  end
  n, i = number_until(value, i + 1, 32, 5)
  if n == nil or n < 1 or n > 65535 then
    return nil
  end
  n, i = number_until(value, i + 1, 32, 5)
  if n == nil or n > WEIGHT_MAX then
    return nil
  end
  local b = byte(value, i + 1)
  if (b ~= 48 and b ~= 49) or byte(value, i + 2) ~= 59 then
    return nil
  end
  return i + 3
end

-- Checks one endpoint ("ip port weight backup", without its ';'); returns true or nil and why.
local function check_entry(entry, n)
  local ip, port, weight, backup = match(entry, "^([^ ]+) ([^ ]+) ([^ ]+) ([^ ]+)$")
  if ip == nil then
    return nil, "endpoint " .. n .. ": must be '<ip> <port> <weight> <0|1>'"
  end
  if not (is_ipv4(ip) or is_ipv6(ip)) then
    return nil, "endpoint " .. n .. ": must be a literal IPv4 or IPv6 address"
  end
  if int(port, 1, 65535) == nil then
    return nil, "endpoint " .. n .. ": port must be an integer from 1 to 65535"
  end
  if int(weight, 0, WEIGHT_MAX) == nil then
    return nil, "endpoint " .. n .. ": weight must be an integer from 0 to " .. WEIGHT_MAX
  end
  if backup ~= "0" and backup ~= "1" then
    return nil, "endpoint " .. n .. ": backup must be 0 or 1"
  end
  return true
end

-- Checks one set's value ("ip port weight backup;..."); returns true or nil and why.
local function check_set(value)
  if value == "" then
    return true
  end
  local len = #value
  if byte(value, len) ~= 59 then -- every endpoint ends in ';', so "a;b" cannot drop a silent "b"
    return nil, "endpoints must each end in ';'"
  end
  local n, pos = 0, 1
  while pos <= len do
    n = n + 1
    if n > MAX_ENDPOINTS then
      return nil, "more than " .. MAX_ENDPOINTS .. " endpoints"
    end
    local after = plain_ipv4_entry(value, pos)
    if after == nil then
      -- The value ends in ';', so there is one.
      local semi = find(value, ";", pos, true)
      local ok, err = check_entry(sub(value, pos, semi - 1), n)
      if not ok then
        return nil, err
      end
      after = semi + 1
    end
    pos = after
  end
  return true
end

-- The next "\n"-terminated line at `pos`, and the position after it; nil when the text ends without a newline.
local function line_at(text, pos)
  local nl = find(text, "\n", pos, true)
  if nl == nil then
    return nil
  end
  return sub(text, pos, nl - 1), nl + 1
end

--- Parses and checks a whole text. Returns { version, base (nil unless partial), sets = name -> value, count }, or
--- nil and why (naming the line, never echoing much of it).
function _M.parse(text)
  if type(text) ~= "string" then
    return nil, "no text"
  end
  local header, pos = line_at(text, 1)
  if header == nil then
    return nil, "line 1: must be 'nginx-lb-sets version=<n>[ base=<n>]' ending in a newline"
  end
  local v, b = match(header, "^nginx%-lb%-sets version=(%d+)$"), nil
  if v == nil then
    v, b = match(header, "^nginx%-lb%-sets version=(%d+) base=(%d+)$")
  end
  local version = int(v, 0, MAX_VERSION)
  local base = b and int(b, 0, MAX_VERSION)
  if version == nil or (b ~= nil and base == nil) then
    return nil, "line 1: must be 'nginx-lb-sets version=<n>[ base=<n>]' with integers from 0 to 2^53-1"
  end
  local sets, count, lineno = {}, 0, 1
  while true do
    local line, nextpos = line_at(text, pos)
    lineno = lineno + 1
    if line == nil then
      return nil, "line " .. lineno .. ": missing the final 'end upstreams=<n>' line (text cut off?)"
    end
    pos = nextpos
    local eq = find(line, "=", 1, true)
    -- Without '=' (a partial push only): the upstream is gone, its set is forgotten.
    local name = eq and sub(line, 1, eq - 1) or line
    if name == "end upstreams" then
      if eq == nil or int(sub(line, eq + 1), 0, MAX_UPSTREAMS) ~= count then
        return nil, "line " .. lineno .. ": 'end upstreams=" .. count .. "' expected (text cut off or spliced?)"
      end
      break
    end
    if name == nil or #name > MAX_NAME or not (find(name, "^nlb_%x+$") or find(name, "^nlb_%x+_%d+$")) then
      return nil, "line " .. lineno .. ": must be '<upstream>=<endpoints>' with an nlb_<hex> upstream name"
    end
    if sets[name] ~= nil then
      return nil, "line " .. lineno .. ": upstream " .. name .. " listed twice"
    end
    count = count + 1
    if count > MAX_UPSTREAMS then
      return nil, "more than " .. MAX_UPSTREAMS .. " upstreams"
    end
    if eq == nil then
      if base == nil then
        return nil, "line " .. lineno .. ": an upstream without '=' (removed) is only allowed in a partial push"
      end
      sets[name] = false
    else
      local value = sub(line, eq + 1)
      local ok, err = check_set(value)
      if not ok then
        return nil, "line " .. lineno .. " (" .. name .. "): " .. err
      end
      sets[name] = value
    end
  end
  if pos <= #text then
    return nil, "data after the 'end' line"
  end
  return { version = version, base = base, sets = sets, count = count }
end

--- Writes the sets, then the version, then bumps the generation, then (unless `partial`) forgets upstreams no longer
--- listed: a reader never sees a listed upstream missing, only the old or the new set; bumps `removed` when it deleted
--- any. Returns the number stored, or nil and why (the dict is full).
function _M.store(parsed, partial)
  local dict = _M.dict()
  local removed = 0
  for name, value in pairs(parsed.sets) do
    if value == false then
      dict:delete(_M.PREFIX .. name)
      removed = removed + 1
    else
      -- safe_set: fail rather than silently evict other upstreams' sets when the dict is full.
      local ok, err = dict:safe_set(_M.PREFIX .. name, value)
      if not ok then
        if removed > 0 then
          dict:incr(_M.REMOVED, 1, 0)
        end
        return nil, "storing " .. name .. ": " .. tostring(err) .. " (raise the shared dict size)"
      end
    end
  end
  dict:safe_set(_M.VERSION, parsed.version)
  dict:incr(_M.GEN, 1, 0)
  if not partial then
    for _, key in ipairs(dict:get_keys(0)) do
      if sub(key, 1, 2) == _M.PREFIX and parsed.sets[sub(key, 3)] == nil then
        dict:delete(key)
        removed = removed + 1
      end
    end
  end
  if removed > 0 then
    dict:incr(_M.REMOVED, 1, 0)
  end
  return parsed.count
end

return _M
