-- nginx-lb's endpoint balancer for `--endpoints-mode dynamic`.
--
-- The controller POSTs whole endpoint sets to the loopback control server (push); they land in the shared dict
-- `nginx_lb`, which outlives reloads. Each worker decodes a set lazily and keeps it until the dict's generation
-- counter moves, so a push is seen by the very next request (one shared-dict read per request, no timer).
--
-- Shared dict layout:
--   gen          integer bumped after every successful push (what workers compare against their cache)
--   version      the controller's version of the last push (what the push endpoint answers with)
--   u:<upstream> "ip port weight backup;..." (backup 0/1); absent = no endpoint
--   push_lock    held while a push writes, so two pushes never interleave their keys
--
-- Balancing mirrors what reload mode renders: smooth weighted round robin (nginx's algorithm) over primaries,
-- weight 0 never chosen, backups only when no primary is usable for this request, a peer that failed to connect
-- skipped for FAIL_TIMEOUT (max_fails=1 fail_timeout=10s), and a retry on the next peer after a connection error.

local balancer = require("ngx.balancer")

local ngx = ngx
local shared = ngx.shared.nginx_lb
local now = ngx.now
local tonumber = tonumber
local type = type
local pairs = pairs
local concat = table.concat
local byte, char, sub, find, format = string.byte, string.char, string.sub, string.find, string.format

local _M = {}

-- Same as reload mode's `max_fails=1 fail_timeout=10s`.
local FAIL_TIMEOUT = 10
-- As reload mode: each endpoint tried at most once per request (the rendered proxy_next_upstream_tries 0 leaves the
-- count to us; proxy_next_upstream_timeout bounds the time), so a backup is reached however many primaries are down.
local MAX_MORE_TRIES = 64
local WEIGHT_MAX = 1000

-- Per worker: upstream name -> { gen, raw, primaries, backups, empty }.
local sets = {}
-- Per worker: "<upstream> <ip> <port>" -> time of the last connection failure.
local failed = {}

local function parse_set(name, raw)
  local primaries, backups = {}, {}
  for ip, port, weight, backup in raw:gmatch("(%S+) (%d+) (%d+) ([01]);") do
    weight = tonumber(weight)
    -- weight 0 is a drain: the peer stays listed in the push but is never chosen.
    if weight > 0 then
      local peer = {
        ip = ip,
        -- set_current_peer parses its address like a `server` line, so IPv6 needs brackets.
        host = find(ip, ":", 1, true) and ("[" .. ip .. "]") or ip,
        port = tonumber(port),
        -- Built once per set, not per request: the passive-failure key of this peer in this upstream.
        key = name .. " " .. ip .. " " .. port,
        weight = weight,
        current = 0,
      }
      local list = backup == "1" and backups or primaries
      list[#list + 1] = peer
    end
  end
  return { primaries = primaries, backups = backups, empty = #primaries == 0 and #backups == 0 }
end

-- The current set of an upstream, or nil when none was pushed. Re-reads the dict only when the generation moved,
-- and keeps the decoded set (with its round-robin state) when the push did not change this upstream.
local function current_set(name)
  local gen = shared:get("gen")
  local entry = sets[name]
  if entry and entry.gen == gen then
    return entry.set
  end
  local raw = shared:get("u:" .. name)
  if raw == nil then
    sets[name] = { gen = gen }
    return nil
  end
  if entry and entry.raw == raw then
    entry.gen = gen
    return entry.set
  end
  local set = parse_set(name, raw)
  sets[name] = { gen = gen, raw = raw, set = set }
  return set
end

-- nginx's smooth weighted round robin over the peers of one list that are neither tried by this request nor (unless
-- `ignore_fails`) marked failed.
local function pick_from(list, tried, t, ignore_fails)
  local best, total = nil, 0
  for i = 1, #list do
    local p = list[i]
    if not tried[p] then
      local key = p.key
      local failed_at = failed[key]
      if failed_at and t - failed_at >= FAIL_TIMEOUT then
        -- Expired: forget it, so the table stays as small as the set of currently failing peers.
        failed[key] = nil
        failed_at = nil
      end
      if ignore_fails or not failed_at then
        p.current = p.current + p.weight
        total = total + p.weight
        if best == nil or p.current > best.current then
          best = p
        end
      end
    end
  end
  if best then
    best.current = best.current - total
  end
  return best
end

local function pick(set, tried)
  local t = now()
  return pick_from(set.primaries, tried, t, false)
    or pick_from(set.backups, tried, t, false)
    -- Everything is marked failed: try anyway rather than fail the request; a peer may be back already.
    or pick_from(set.primaries, tried, t, true)
    or pick_from(set.backups, tried, t, true)
end

--- access_by_lua: answers 503 with `message` (the same text as reload mode) when the route has no endpoint.
function _M.access(name, message)
  local set = current_set(name)
  if set == nil or set.empty then
    ngx.status = 503
    ngx.header["Content-Type"] = "text/plain"
    ngx.header["Content-Length"] = #message
    ngx.print(message)
    return ngx.exit(ngx.HTTP_OK)
  end
  ngx.ctx.nlb_set = set
end

-- The first attempt of a request has tried nothing; shared and never written, so the common path allocates nothing.
local NONE_TRIED = {}

--- balancer_by_lua: chooses the peer for this attempt; called again by nginx for each retry.
function _M.balance(name)
  local ctx = ngx.ctx
  local set = ctx.nlb_set or current_set(name)
  if set == nil or set.empty then
    return ngx.exit(503)
  end
  local last = ctx.nlb_last
  local tried = NONE_TRIED
  if last then
    -- A retry: nginx only retries after a connection error or timeout (proxy_next_upstream error timeout).
    if balancer.get_last_failure() then
      failed[last.key] = now()
    end
    tried = ctx.nlb_tried
    if not tried then
      tried = {}
      ctx.nlb_tried = tried
    end
    tried[last] = true
  else
    local more = #set.primaries + #set.backups - 1
    if more > 0 then
      balancer.set_more_tries(more < MAX_MORE_TRIES and more or MAX_MORE_TRIES)
    end
  end
  local peer = pick(set, tried)
  if peer == nil then
    return ngx.exit(502)
  end
  ctx.nlb_last = peer
  local ok, err = balancer.set_current_peer(peer.host, peer.port)
  if not ok then
    ngx.log(ngx.ERR, "nginx-lb: cannot use peer ", peer.host, ":", peer.port, ": ", err)
    return ngx.exit(500)
  end
end

--- init_worker_by_lua: nothing to load eagerly; sets are decoded on first use from the dict, which survives reloads.
function _M.init_worker()
  sets = {}
  failed = {}
end

-- A small strict JSON decoder: the packaged lua-nginx-module ships without cjson, and the push body is tiny grammar.
-- Arrays carry the ARRAY metatable so validation can tell [] from {}.
local ARRAY = {}
local NULL = setmetatable({}, { __tostring = function() return "null" end })
local MAX_DEPTH = 6

local decode_value

local function skip_ws(s, i)
  local c = byte(s, i)
  -- Fast path: compact JSON (what the controller sends) has no whitespace between tokens.
  if c ~= 32 and c ~= 9 and c ~= 10 and c ~= 13 then
    return i
  end
  local _, e = find(s, "^[ \t\r\n]*", i)
  return e + 1
end

local ESCAPES = { [34] = '"', [92] = "\\", [47] = "/", [98] = "\b", [102] = "\f", [110] = "\n", [114] = "\r", [116] = "\t" }

local function decode_string(s, i)
  -- i points at the opening quote. Fast path: no escape before the closing quote, one sub() and no table.
  local q = find(s, '["\\%c]', i + 1)
  if q and byte(s, q) == 34 then
    return sub(s, i + 1, q - 1), q + 1
  end
  local out, n = {}, 0
  local j = i + 1
  while true do
    local c = byte(s, j)
    if c == nil then
      return nil, "unterminated string"
    elseif c == 34 then
      return concat(out), j + 1
    elseif c == 92 then
      local e = byte(s, j + 1)
      if e == 117 then
        local hex = sub(s, j + 2, j + 5)
        if not find(hex, "^%x%x%x%x$") then
          return nil, "bad \\u escape"
        end
        local code = tonumber(hex, 16)
        -- Every value we accept is ASCII; anything else cannot be a valid name or address anyway.
        if code >= 128 then
          return nil, "non-ASCII \\u escape"
        end
        n = n + 1
        out[n] = char(code)
        j = j + 6
      elseif e and ESCAPES[e] then
        n = n + 1
        out[n] = ESCAPES[e]
        j = j + 2
      else
        return nil, "bad escape"
      end
    elseif c < 32 then
      return nil, "control character in string"
    else
      local _, e = find(s, '^[^"\\%c]+', j)
      n = n + 1
      out[n] = sub(s, j, e)
      j = e + 1
    end
  end
end

function decode_value(s, i, depth)
  if depth > MAX_DEPTH then
    return nil, "nested too deep"
  end
  i = skip_ws(s, i)
  local c = byte(s, i)
  if c == 123 then -- {
    local obj = {}
    i = skip_ws(s, i + 1)
    if byte(s, i) == 125 then
      return obj, i + 1
    end
    while true do
      if byte(s, i) ~= 34 then
        return nil, "expected a string key at byte " .. i
      end
      local key, ni = decode_string(s, i)
      if key == nil then
        return nil, ni
      end
      i = skip_ws(s, ni)
      if byte(s, i) ~= 58 then
        return nil, "expected ':' at byte " .. i
      end
      local v, vi = decode_value(s, i + 1, depth + 1)
      if v == nil then
        return nil, vi
      end
      obj[key] = v
      i = skip_ws(s, vi)
      local d = byte(s, i)
      if d == 125 then
        return obj, i + 1
      elseif d ~= 44 then
        return nil, "expected ',' or '}' at byte " .. i
      end
      i = skip_ws(s, i + 1)
    end
  elseif c == 91 then -- [
    local arr, n = setmetatable({}, ARRAY), 0
    i = skip_ws(s, i + 1)
    if byte(s, i) == 93 then
      return arr, i + 1
    end
    while true do
      local v, vi = decode_value(s, i, depth + 1)
      if v == nil then
        return nil, vi
      end
      n = n + 1
      arr[n] = v
      i = skip_ws(s, vi)
      local d = byte(s, i)
      if d == 93 then
        return arr, i + 1
      elseif d ~= 44 then
        return nil, "expected ',' or ']' at byte " .. i
      end
      i = i + 1
    end
  elseif c == 34 then
    return decode_string(s, i)
  elseif find(s, "^true", i) then
    return true, i + 4
  elseif find(s, "^false", i) then
    return false, i + 5
  elseif find(s, "^null", i) then
    return NULL, i + 4
  else
    local _, e = find(s, "^-?%d+%.?%d*[eE]?[-+]?%d*", i)
    local num = e and tonumber(sub(s, i, e))
    if num == nil then
      return nil, "unexpected input at byte " .. i
    end
    return num, e + 1
  end
end

local function decode_json(s)
  local v, i = decode_value(s, 1, 0)
  if v == nil then
    return nil, i
  end
  if skip_ws(s, i) <= #s then
    return nil, "trailing data at byte " .. i
  end
  return v
end

-- Literal addresses, the same grammar as the model's ip.ts: no names, ports, zones or leading zeros.
local function is_ipv4(text)
  local a, b, c, d = text:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
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
      for g in (half .. ":"):gmatch("([^:]*):") do
        groups[#groups + 1] = g
      end
    end
  end
  local count = 0
  for k, g in ipairs(groups) do
    if k == #groups and find(g, ".", 1, true) then
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

local function is_int(v, lo, hi)
  return type(v) == "number" and v == math.floor(v) and v >= lo and v <= hi
end

-- Validates a decoded push body; returns the version, upstream name -> serialised set and the base version of a
-- partial push (nil for a whole push), or nil and why.
local function validate(doc)
  if type(doc) ~= "table" or getmetatable(doc) == ARRAY then
    return nil, "body must be a JSON object {version, upstreams}"
  end
  if not is_int(doc.version, 0, 9007199254740991) then
    return nil, "version must be a non-negative integer"
  end
  if doc.base ~= nil and not is_int(doc.base, 0, 9007199254740991) then
    return nil, "base must be a non-negative integer (the version a partial push applies to)"
  end
  local ups = doc.upstreams
  if type(ups) ~= "table" or getmetatable(ups) == ARRAY or ups == NULL then
    return nil, "upstreams must be an object of name -> [endpoint]"
  end
  local out = {}
  for name, list in pairs(ups) do
    if #name > 64 or not (find(name, "^nlb_%x+$") or find(name, "^nlb_%x+_%d+$")) then
      return nil, "upstreams: bad upstream name " .. sub(name, 1, 80)
    end
    if getmetatable(list) ~= ARRAY then
      return nil, "upstreams." .. name .. ": must be an array"
    end
    local parts = {}
    for k, ep in ipairs(list) do
      local where = "upstreams." .. name .. "[" .. (k - 1) .. "]"
      if type(ep) ~= "table" or getmetatable(ep) == ARRAY or ep == NULL then
        return nil, where .. ": must be an object {ip, port, weight, backup}"
      end
      if type(ep.ip) ~= "string" or not (is_ipv4(ep.ip) or is_ipv6(ep.ip)) then
        return nil, where .. ".ip: must be a literal IPv4 or IPv6 address"
      end
      if not is_int(ep.port, 1, 65535) then
        return nil, where .. ".port: must be an integer from 1 to 65535"
      end
      if not is_int(ep.weight, 0, WEIGHT_MAX) then
        return nil, where .. ".weight: must be an integer from 0 to " .. WEIGHT_MAX
      end
      if ep.backup ~= nil and type(ep.backup) ~= "boolean" then
        return nil, where .. ".backup: must be true or false"
      end
      parts[k] = format("%s %d %d %d;", ep.ip, ep.port, ep.weight, ep.backup and 1 or 0)
    end
    out[name] = concat(parts)
  end
  return doc.version, out, doc.base
end

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
  local v = shared:get("version")
  return v and format("%.0f", v) or "null"
end

-- Writes the sets, then bumps the generation, then (whole pushes only) forgets upstreams no longer pushed: a reader
-- never sees a pushed upstream missing, only the old or the new set.
local function store(version, upsets, partial)
  local count = 0
  for name, raw in pairs(upsets) do
    -- safe_set: fail rather than silently evict other upstreams' sets when the dict is full.
    local ok, err = shared:safe_set("u:" .. name, raw)
    if not ok then
      return nil, "storing " .. name .. ": " .. tostring(err) .. " (raise the shared dict size)"
    end
    count = count + 1
  end
  shared:safe_set("version", version)
  shared:incr("gen", 1, 0)
  if partial then
    return count
  end
  for _, key in ipairs(shared:get_keys(0)) do
    if sub(key, 1, 2) == "u:" and upsets[sub(key, 3)] == nil then
      shared:delete(key)
    end
  end
  return count
end

--- content_by_lua for the control server: GET answers the stored version; POST replaces every endpoint set, or with
--- `base` (a partial push) only the sets it lists, and only when nginx holds exactly version `base`.
function _M.endpoints()
  local method = ngx.req.get_method()
  if method == "GET" then
    return reply(200, '{"version":' .. stored_version() .. "}")
  end
  if method ~= "POST" then
    ngx.header["Allow"] = "GET, POST"
    return error_reply(405, "use GET or POST")
  end
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if body == nil then
    -- Either empty, or nginx spilled it to a file because it exceeded client_body_buffer_size.
    if ngx.req.get_body_file() then
      return error_reply(413, "body too large")
    end
    return error_reply(400, "empty body")
  end
  local doc, derr = decode_json(body)
  if doc == nil then
    return error_reply(400, "invalid JSON: " .. derr)
  end
  local version, upsets, base = validate(doc)
  if version == nil then
    return error_reply(400, upsets)
  end
  if not shared:add("push_lock", true, 5) then
    return error_reply(409, "another push is in progress")
  end
  -- A partial push is a diff against what the controller believes nginx holds; on any other base (nginx restarted,
  -- a push was lost) it would leave a mix, so it is refused and the controller sends everything.
  if base ~= nil and shared:get("version") ~= base then
    shared:delete("push_lock")
    return error_reply(409, "partial push against version " .. format("%.0f", base) .. ", nginx holds " .. stored_version())
  end
  local count, serr = store(version, upsets, base ~= nil)
  shared:delete("push_lock")
  if count == nil then
    return error_reply(507, serr)
  end
  return reply(200, '{"version":' .. stored_version() .. ',"upstreams":' .. count .. "}")
end

return _M
