-- nginx-lb's routing table for `--routes-mode dynamic`: the shared dict layout and the line format the controller
-- pushes it in. Shared by the push endpoint (nginx_lb_routes_push), the start-up file (nginx_lb_routes_initial) and
-- the router (nginx_lb_router).
--
-- Shared dict `nginx_lb` (beside the endpoint sets of nginx_lb_sets):
--   rgen                integer bumped after every stored table (the sets' `gen` too: what the router's cache is
--                       checked against)
--   rversion            the controller's version of the table held (what the push endpoint answers with)
--   r:<port> <domain>   the server's routes "<prefix> <upstream> <backend_path> <backend>;..." (may be empty)
--   routes_lock         held while a push writes
--   rremoved            integer bumped after a push removed servers (workers then drop what they cached of them)
--
-- One server a line; the value is stored as it came, after every field passed its grammar here (the start-up file
-- is read by a new master with no controller around):
--
--   nginx-lb-routes version=<v>[ base=<b>]       v, b: integers 0 .. 2^53-1; base only on a partial push
--   <port> <domain>=<route>;<route>;...          a server and its routes (none: every path answers 404)
--   <port> <domain>                              (partial push only) the server is gone
--   end servers=<n>                              n = the number of server lines, so a cut-off text is refused
--
-- <domain> is lower case: labels of letters, digits and '-', optionally after "*."; <route> is
-- "<prefix> <upstream> <backend_path> <backend>": two URL paths of the route-key grammar (prefix without a trailing
-- slash but "/"), an nlb_<hex> upstream name and the registry name the 503 names.

local ngx = ngx
local tonumber = tonumber
local pairs = pairs
local ipairs = ipairs
local type = type
local tostring = tostring
local byte, sub, find, match, gmatch = string.byte, string.sub, string.find, string.match, string.gmatch

-- The endpoint sets' generation (nginx_lb_sets' GEN): bumped after every stored table as well.
local SETS_GEN = require("nginx_lb_sets").GEN

local _M = {}

_M.GEN = "rgen"
_M.VERSION = "rversion"
_M.LOCK = "routes_lock"
_M.REMOVED = "rremoved"
_M.PREFIX = "r:"

local MAX_SERVERS = 100000
local MAX_ROUTES = 10000
local MAX_VERSION = 9007199254740991
local MAX_PATH = 1024
local MAX_DOMAIN = 253
local MAX_BACKEND = 257

function _M.dict()
  return ngx.shared.nginx_lb
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

-- The route-key grammar of model/grammar.ts: "/" or "/seg(/seg)*" with an optional trailing "/", no "." or ".."
-- segment; segments of letters, digits and . _ ~ ! * + , : @ = -.
local function is_path(p)
  if #p == 0 or #p > MAX_PATH or byte(p, 1) ~= 47 or not find(p, "^[%w._~!*+,:@=/-]+$") or find(p, "//", 1, true) then
    return false
  end
  -- Without a '.' there is no "." or ".." segment (nearly every path: no segment walk).
  if not find(p, ".", 1, true) then
    return true
  end
  for seg in gmatch(p, "[^/]+") do
    if seg == "." or seg == ".." then
      return false
    end
  end
  return true
end

-- A lower-case letter or a digit (a byte).
local function alnum(b)
  return (b >= 97 and b <= 122) or (b >= 48 and b <= 57)
end

local function is_domain(d)
  if #d == 0 or #d > MAX_DOMAIN then
    return false
  end
  local rest = d
  if sub(d, 1, 2) == "*." then
    rest = sub(d, 3)
  end
  if not find(rest, "^[a-z0-9.-]+$") then
    return false
  end
  -- Each label (between dots) 1 to 63 characters of [a-z0-9-], beginning and ending with a letter or digit; walked by
  -- position, so a routing table of 10,000 servers makes no label strings.
  local pos, len = 1, #rest
  while true do
    local dot = find(rest, ".", pos, true)
    local last = (dot or len + 1) - 1
    if last < pos or last - pos >= 63 or not alnum(byte(rest, pos)) or not alnum(byte(rest, last)) then
      return false
    end
    if dot == nil then
      return true
    end
    pos = dot + 1
  end
end

-- Byte classes of the plain route's fields: a path's bytes besides '/' (letters, digits, '_', '-'), a registry name's
-- (those and '.'), lower-case hex digits and decimal digits.
local PATH_BYTE, NAME_BYTE, HEX, DIGIT = {}, {}, {}, {}
for b = 0, 255 do
  local c = string.char(b)
  PATH_BYTE[b] = find(c, "^[%w_-]$") ~= nil
  NAME_BYTE[b] = find(c, "^[%w._-]$") ~= nil
  HEX[b] = find(c, "^[0-9a-f]$") ~= nil
  DIGIT[b] = find(c, "^%d$") ~= nil
end

-- The position after the run of bytes `class` holds from `i`, and the run's length.
local function run_of(value, i, class)
  local from = i
  local b = byte(value, i)
  while b ~= nil and class[b] do
    i = i + 1
    b = byte(value, i)
  end
  return i, i - from
end

-- The end of a plain path at `pos` (a '/', then letters, digits, '_', '-' and single '/'s; no '.', so no dot segment)
-- up to the byte `stop`: the position of `stop`, or nil. A subset of is_path.
local function plain_path(value, pos, stop)
  if byte(value, pos) ~= 47 then
    return nil
  end
  local i, prev = pos + 1, 47
  local b = byte(value, i)
  while b ~= stop do
    if b == nil or (b == 47 and prev == 47) or (b ~= 47 and not PATH_BYTE[b]) or i - pos >= MAX_PATH then
      return nil
    end
    prev = b
    i = i + 1
    b = byte(value, i)
  end
  return i
end

-- A server's routes when they are one route of the plainest shape: "<prefix> nlb_<hex>[_<digits>] <backend_path>
-- <backend>;" with plain paths. Read byte by byte (LuaJIT compiles it; check_routes' patterns are not compiled), as
-- nearly every server of a 10,000-site start-up table is. True only for text check_routes accepts; false sends the
-- text to check_routes, which decides and names what is wrong.
local function plain_route(value)
  local i = plain_path(value, 1, 32)
  if i == nil or (i > 2 and byte(value, i - 1) == 47) then
    return false
  end
  -- nlb_<hex>[_<digits>], at most 64 bytes
  local start = i + 1
  if sub(value, start, start + 3) ~= "nlb_" then
    return false
  end
  local n
  i, n = run_of(value, start + 4, HEX)
  if n == 0 then
    return false
  end
  if byte(value, i) == 95 then
    i, n = run_of(value, i + 1, DIGIT)
    if n == 0 then
      return false
    end
  end
  if byte(value, i) ~= 32 or i - start > 64 then
    return false
  end
  i = plain_path(value, i + 1, 32)
  if i == nil then
    return false
  end
  -- The backend, then the one ';' that ends the value.
  i, n = run_of(value, i + 1, NAME_BYTE)
  return n > 0 and n <= MAX_BACKEND and byte(value, i) == 59 and i == #value
end

-- Checks one server's routes; returns true or nil and why.
local function check_routes(value)
  if value == "" or plain_route(value) then
    return true
  end
  if byte(value, #value) ~= 59 then
    return nil, "routes must each end in ';'"
  end
  local n, seen = 0, {}
  for entry in gmatch(value, "([^;]*);") do
    n = n + 1
    if n > MAX_ROUTES then
      return nil, "more than " .. MAX_ROUTES .. " routes"
    end
    local prefix, upstream, backend_path, backend = match(entry, "^([^ ]+) ([^ ]+) ([^ ]+) ([^ ]+)$")
    if prefix == nil then
      return nil, "route " .. n .. ": must be '<prefix> <upstream> <backend_path> <backend>'"
    end
    if not is_path(prefix) or (#prefix > 1 and byte(prefix, #prefix) == 47) then
      return nil, "route " .. n .. ": the prefix must be a URL path without a trailing '/'"
    end
    if seen[prefix] then
      return nil, "route " .. n .. ": prefix listed twice"
    end
    seen[prefix] = true
    if #upstream > 64 or not (find(upstream, "^nlb_%x+$") or find(upstream, "^nlb_%x+_%d+$")) then
      return nil, "route " .. n .. ": the upstream must be an nlb_<hex> name"
    end
    if not is_path(backend_path) then
      return nil, "route " .. n .. ": the backend_path must be a URL path"
    end
    if #backend > MAX_BACKEND or not find(backend, "^[%w._-]+$") then
      return nil, "route " .. n .. ": the backend must be a registry name <app>-<service>"
    end
  end
  return true
end

local function line_at(text, pos)
  local nl = find(text, "\n", pos, true)
  if nl == nil then
    return nil
  end
  return sub(text, pos, nl - 1), nl + 1
end

--- Parses and checks a whole text. Returns { version, base, servers = key -> value (false: removed), count }, or nil
--- and why (naming the line, never echoing much of it).
function _M.parse(text)
  if type(text) ~= "string" then
    return nil, "no text"
  end
  local header, pos = line_at(text, 1)
  if header == nil then
    return nil, "line 1: must be 'nginx-lb-routes version=<n>[ base=<n>]' ending in a newline"
  end
  local v, b = match(header, "^nginx%-lb%-routes version=(%d+)$"), nil
  if v == nil then
    v, b = match(header, "^nginx%-lb%-routes version=(%d+) base=(%d+)$")
  end
  local version = int(v, 0, MAX_VERSION)
  local base = b and int(b, 0, MAX_VERSION)
  if version == nil or (b ~= nil and base == nil) then
    return nil, "line 1: must be 'nginx-lb-routes version=<n>[ base=<n>]' with integers from 0 to 2^53-1"
  end
  local servers, count, lineno = {}, 0, 1
  while true do
    local line, nextpos = line_at(text, pos)
    lineno = lineno + 1
    if line == nil then
      return nil, "line " .. lineno .. ": missing the final 'end servers=<n>' line (text cut off?)"
    end
    pos = nextpos
    local eq = find(line, "=", 1, true)
    local name = eq and sub(line, 1, eq - 1) or line
    if name == "end servers" then
      if eq == nil or int(sub(line, eq + 1), 0, MAX_SERVERS) ~= count then
        return nil, "line " .. lineno .. ": 'end servers=" .. count .. "' expected (text cut off or spliced?)"
      end
      break
    end
    local port, domain = match(name, "^(%d+) ([^ ]+)$")
    if int(port, 1, 65535) == nil or not is_domain(domain) then
      return nil, "line " .. lineno .. ": must start with '<port> <domain>' (a port from 1 to 65535, a lower-case domain)"
    end
    if servers[name] ~= nil then
      return nil, "line " .. lineno .. ": server " .. name .. " listed twice"
    end
    count = count + 1
    if count > MAX_SERVERS then
      return nil, "more than " .. MAX_SERVERS .. " servers"
    end
    if eq == nil then
      if base == nil then
        return nil, "line " .. lineno .. ": a server without '=' (removed) is only allowed in a partial push"
      end
      servers[name] = false
    else
      local value = sub(line, eq + 1)
      local ok, err = check_routes(value)
      if not ok then
        return nil, "line " .. lineno .. " (" .. name .. "): " .. err
      end
      servers[name] = value
    end
  end
  if pos <= #text then
    return nil, "data after the 'end' line"
  end
  return { version = version, base = base, servers = servers, count = count }
end

--- Writes the servers, then the version, then bumps the generation, then (unless `partial`) forgets servers no longer
--- listed; bumps `rremoved` when it deleted any. Returns the number of server lines stored, or nil and why (the dict
--- is full).
function _M.store(parsed, partial)
  local dict = _M.dict()
  local removed = 0
  for name, value in pairs(parsed.servers) do
    if value == false then
      dict:delete(_M.PREFIX .. name)
      removed = removed + 1
    else
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
  -- The router checks its cache against the endpoint sets' generation, which it reads for the balancer anyway.
  dict:incr(SETS_GEN, 1, 0)
  if not partial then
    for _, key in ipairs(dict:get_keys(0)) do
      if sub(key, 1, 2) == _M.PREFIX and parsed.servers[sub(key, 3)] == nil then
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
