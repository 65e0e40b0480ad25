-- nginx-lb's certificates by SNI: the controller pushes each TLS site's certificate and key to the loopback control
-- server (or a new master loads the last pushed ones from the state dir), and ssl_certificate_by_lua picks the one
-- the client's SNI names, so a certificate change or a new TLS site needs no reload.
--
-- Shared dict `nginx_lb_certs` (outlives reloads, not a master restart):
--   version           the controller's version of the certificates held (what the push endpoint answers with)
--   gen               bumped after every stored push (workers then drop cached certificates no longer current)
--   push_lock         held while a push writes, so two pushes never interleave their keys
--   i:<port> <name>   the site's certificate id (16 hex digits, the controller's hash of certificate and key)
--   p:<port> <name>   "<id> <length>\n<certificate><key>", both in base64 as pushed (<length>: the certificate's)
-- A push writes p: before i:, and a removal deletes i: first, so a handshake that finds an id finds its PEM.
--
-- Push format (also the start-up file's), one line each, every line ending in "\n":
--   nginx-lb-certs version=<v>[ base=<b>]      v, b: integers 0 .. 2^53-1; base only on a partial push
--   site <port> <name> <id> <cert> <key>       cert, key: the PEM texts in base64 (no line breaks)
--   drop <port> <name>                         only in a partial push: the site has no TLS any more
--   end sites=<n>                              n = the number of site and drop lines, so a cut-off text is refused
-- <name> is a lower-case host name, optionally with a leading "*." (services.json's domain grammar). A whole push
-- (no base) replaces every site; a partial one changes the listed sites, and only when nginx holds version <b>.
--
-- Key material is never logged or echoed: messages name the line, the port and the host name only.

local ssl = require("ngx.ssl")
local control = require("nginx_lb_control")
local startup_file = require("nginx_lb_startup_file")
local ffi = require("ffi")

local ngx = ngx
local pairs = pairs
local pcall = pcall
local tonumber = tonumber
local type = type
local byte, sub, find, match, lower, format = string.byte, string.sub, string.find, string.match, string.lower,
  string.format
local decode_base64 = ngx.decode_base64

local _M = {}

local VERSION = "version"
local GEN = "gen"
local LOCK = "push_lock"
local MAX_VERSION = 9007199254740991
-- A site per domain and TLS port; the renderer is sized for ~10,000. A hostile text cannot hold a worker for long.
local MAX_SITES = 100000
-- A long chain of large certificates still fits; anything bigger is not a certificate we serve.
local MAX_CERT = 65536
local MAX_KEY = 16384
local MAX_NAME = 253
-- The start-up file holds one whole push; pushes are capped by client_max_body_size (the renderer's figure).
local MAX_FILE = 128 * 1024 * 1024

-- OpenSSL's own check that a private key belongs to a certificate, on the objects ngx.ssl parsed (the first
-- certificate of the chain is the site's). nginx links libcrypto, so the symbols are there; if a build hides them,
-- the check is skipped here and the handshake (SSL_use_PrivateKey) still refuses a wrong key.
local key_matches
-- A failed parse or check leaves its reason in OpenSSL's error queue; nginx would report it later as a stale error of
-- some handshake, so the push check empties it.
local clear_errors = function() end
do
  local ok = pcall(ffi.cdef, [[
    int X509_check_private_key(const void *x509, const void *pkey);
    void *OPENSSL_sk_value(const void *st, int i);
    void ERR_clear_error(void);
  ]])
  if ok then
    local C = ffi.C
    local found = pcall(function()
      return C.X509_check_private_key ~= nil and C.OPENSSL_sk_value ~= nil and C.ERR_clear_error ~= nil
    end)
    if found then
      clear_errors = C.ERR_clear_error
      key_matches = function(chain, pkey)
        local leaf = C.OPENSSL_sk_value(chain, 0)
        return leaf ~= nil and C.X509_check_private_key(leaf, pkey) == 1
      end
    end
  end
end

function _M.dict()
  return ngx.shared.nginx_lb_certs
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

-- services.json's domain grammar, lower case (the model lower-cases every domain): labels of letters, digits and
-- inner hyphens, up to 63 characters each, optionally after a leading "*.".
local function is_site_name(name)
  if #name > MAX_NAME then
    return false
  end
  local rest = name
  if sub(rest, 1, 2) == "*." then
    rest = sub(rest, 3)
  end
  if rest == "" then
    return false
  end
  local pos = 1
  while true do
    local dot = find(rest, ".", pos, true)
    local label = sub(rest, pos, (dot or 0) - 1)
    if #label == 0 or #label > 63 or not find(label, "^[a-z0-9]$") and not find(label, "^[a-z0-9][a-z0-9-]*[a-z0-9]$")
    then
      return false
    end
    if dot == nil then
      return true
    end
    pos = dot + 1
  end
end

-- The next "\n"-terminated line at `pos`, and the position after it; nil when the text ends without a newline.
local function line_at(text, pos)
  local nl = find(text, "\n", pos, true)
  if nl == nil then
    return nil
  end
  return sub(text, pos, nl - 1), nl + 1
end

-- True when `b64` can be base64 of at most `max` bytes: padding only at the end, a multiple of 4 characters (the
-- capture pattern already allowed only base64 characters).
local function is_b64(b64, max)
  local n = #b64
  if n == 0 or n % 4 ~= 0 or n > (max + 2) / 3 * 4 then
    return false
  end
  local eq = find(b64, "=", 1, true)
  return eq == nil or eq >= n - 1 and (eq == n or byte(b64, n) == 61)
end

-- Checks one site's certificate and key as nginx will use them: both decode and parse, the key is the certificate's.
local function check_pem_pair(cert_b64, key_b64)
  local cert_pem, key_pem = decode_base64(cert_b64), decode_base64(key_b64)
  if cert_pem == nil or not find(cert_pem, "-----BEGIN CERTIFICATE-----", 1, true) then
    return nil, "the certificate is not a PEM certificate"
  end
  local chain = ssl.parse_pem_cert(cert_pem)
  if chain == nil then
    return nil, "the certificate does not parse (PEM X.509 expected)"
  end
  if key_pem == nil or not find(key_pem, "-----BEGIN ", 1, true) or find(key_pem, "ENCRYPTED", 1, true) then
    return nil, "the key is not an unencrypted PEM private key"
  end
  local pkey = ssl.parse_pem_priv_key(key_pem)
  if pkey == nil then
    return nil, "the key does not parse (unencrypted PEM private key expected)"
  end
  if key_matches and not key_matches(chain, pkey) then
    return nil, "the key does not belong to the certificate"
  end
  return true
end

local function check_pair(cert_b64, key_b64)
  local ok, err = check_pem_pair(cert_b64, key_b64)
  if not ok then
    clear_errors()
  end
  return ok, err
end

-- Each line is matched in place (anchored at its start), so a push of 10,000 sites copies each field once and no line.
local SITE_LINE = "^site (%d+) ([^ \n]+) (%x+) ([A-Za-z0-9+/=]+) ([A-Za-z0-9+/=]+)\n()"
local DROP_LINE = "^drop (%d+) ([^ \n]+)\n()"
local END_LINE = "^end sites=(%d+)\n()"

--- Parses and checks a whole text. Returns { version, base (nil unless partial), sites = key -> { id, cert, key }
--- (base64; false for a drop), count }, or nil and why (naming the line, never echoing any of it). Every line's
--- grammar is checked; the certificate and key are decoded, parsed and matched (OpenSSL, ~ms for an RSA key) only
--- where `verify(key, id)` is true: a site whose id nginx already holds was checked when it was stored, so the whole
--- push after a controller restart costs no parsing, and a new master trusts the file the controller wrote after
--- nginx took the push (a handshake still refuses a site whose stored certificate does not parse, and logs it).
function _M.parse(text, verify)
  if type(text) ~= "string" then
    return nil, "no text"
  end
  local header, pos = line_at(text, 1)
  if header == nil then
    return nil, "line 1: must be 'nginx-lb-certs version=<n>[ base=<n>]' ending in a newline"
  end
  local v, b = match(header, "^nginx%-lb%-certs version=(%d+)$"), nil
  if v == nil then
    v, b = match(header, "^nginx%-lb%-certs version=(%d+) base=(%d+)$")
  end
  local version = int(v, 0, MAX_VERSION)
  local base = b and int(b, 0, MAX_VERSION)
  if version == nil or (b ~= nil and base == nil) then
    return nil, "line 1: must be 'nginx-lb-certs version=<n>[ base=<n>]' with integers from 0 to 2^53-1"
  end
  local sites, count, lineno = {}, 0, 1
  while true do
    lineno = lineno + 1
    local _, _, port_text, name, id, cert_b64, key_b64, nextpos = find(text, SITE_LINE, pos)
    local drop = false
    if port_text == nil then
      _, _, port_text, name, nextpos = find(text, DROP_LINE, pos)
      drop = port_text ~= nil
    end
    if port_text == nil then
      local n, endpos
      _, _, n, endpos = find(text, END_LINE, pos)
      if n ~= nil then
        if int(n, 0, MAX_SITES) ~= count then
          return nil, "line " .. lineno .. ": 'end sites=" .. count .. "' expected (text cut off or spliced?)"
        end
        pos = endpos
        break
      end
      if find(text, "\n", pos, true) == nil then
        return nil, "line " .. lineno .. ": missing the final 'end sites=<n>' line (text cut off?)"
      end
      return nil, "line " .. lineno .. ": must be 'site <port> <name> <id> <cert> <key>' (base64 PEM), " ..
        "'drop <port> <name>' or 'end sites=<n>'"
    end
    local port = int(port_text, 1, 65535)
    if port == nil or not is_site_name(name) then
      return nil, "line " .. lineno .. ": must name a port from 1 to 65535 and a lower-case host name"
    end
    local key = port .. " " .. name
    if sites[key] ~= nil then
      return nil, "line " .. lineno .. " (" .. key .. "): listed twice"
    end
    count = count + 1
    if count > MAX_SITES then
      return nil, "more than " .. MAX_SITES .. " sites"
    end
    if drop then
      if base == nil then
        return nil, "line " .. lineno .. " (" .. key .. "): 'drop <port> <name>' is only allowed in a partial " ..
          "push (with base=)"
      end
      sites[key] = false
    else
      if #id ~= 16 or find(id, "%u") then
        return nil, "line " .. lineno .. " (" .. key .. "): the id must be 16 lower-case hex digits"
      end
      if not is_b64(cert_b64, MAX_CERT) or not is_b64(key_b64, MAX_KEY) then
        return nil, "line " .. lineno .. " (" .. key .. "): the certificate and key must be base64 of at most " ..
          MAX_CERT .. " and " .. MAX_KEY .. " bytes"
      end
      if verify(key, id) then
        local ok, perr = check_pair(cert_b64, key_b64)
        if not ok then
          return nil, "line " .. lineno .. " (" .. key .. "): " .. perr
        end
      end
      sites[key] = { id = id, cert = cert_b64, key = key_b64 }
    end
    pos = nextpos
  end
  if pos <= #text then
    return nil, "data after the 'end' line"
  end
  return { version = version, base = base, sites = sites, count = count }
end

--- Writes the sites (PEM, then id), the version and the generation, then (unless `partial`) forgets sites no longer
--- listed. Returns the number of sites held, or nil and why (the dict is full).
function _M.store(parsed, partial)
  local dict = _M.dict()
  for key, site in pairs(parsed.sites) do
    if site then
      -- safe_set: fail rather than silently evict another site's certificate when the dict is full.
      local ok, err = dict:safe_set("p:" .. key, site.id .. " " .. #site.cert .. "\n" .. site.cert .. site.key)
      if ok then
        ok, err = dict:safe_set("i:" .. key, site.id)
      end
      if not ok then
        return nil, "storing " .. key .. ": " .. (err or "?") .. " (raise the nginx_lb_certs shared dict size)"
      end
    else
      dict:delete("i:" .. key)
      dict:delete("p:" .. key)
    end
  end
  if not partial then
    for _, k in pairs(dict:get_keys(0)) do
      local prefix = sub(k, 1, 2)
      if (prefix == "i:" or prefix == "p:") and not parsed.sites[sub(k, 3)] then
        dict:delete(k)
      end
    end
  end
  dict:safe_set(VERSION, parsed.version)
  dict:incr(GEN, 1, 0)
  local held = 0
  for _, k in pairs(dict:get_keys(0)) do
    if sub(k, 1, 2) == "i:" then
      held = held + 1
    end
  end
  return held
end

-- Per worker: the parsed certificate and key of each site served since the last push, by dict key. A push bumps
-- `gen`; the next handshake then drops the entries whose id changed, so a rotated or removed certificate is parsed
-- again or forgotten, and an unchanged one stays parsed.
local cache = {}
local cache_gen = nil

local function sweep(dict)
  local gen = dict:get(GEN)
  if gen == cache_gen then
    return
  end
  for key, entry in pairs(cache) do
    if dict:get("i:" .. key) ~= entry.id then
      cache[key] = nil
    end
  end
  cache_gen = gen
end

--- For the worker's sweep timer (nginx_lb_sweep): the same sweep a handshake makes after a push, so the parsed
--- certificates of removed or rotated sites go even when no handshake follows. Returns the number forgotten.
function _M.sweep()
  local before = 0
  for _ in pairs(cache) do
    before = before + 1
  end
  sweep(_M.dict())
  for _ in pairs(cache) do
    before = before - 1
  end
  return before
end

-- The dict key of the site serving `name` on `port`: the exact name, else the longest `*.` wildcard covering it
-- (any number of labels deep), as nginx picks a server_name; nil when none.
local function find_site(dict, port, name)
  local key = port .. " " .. name
  local id = dict:get("i:" .. key)
  if id then
    return key, id
  end
  local dot = find(name, ".", 1, true)
  while dot do
    key = port .. " *" .. sub(name, dot)
    id = dict:get("i:" .. key)
    if id then
      return key, id
    end
    dot = find(name, ".", dot + 1, true)
  end
  return nil
end

-- The parsed certificate and key of `key` at `id`, from the cache or parsed now; nil and why.
local function parsed_site(dict, key, id)
  local entry = cache[key]
  if entry and entry.id == id then
    return entry
  end
  local value = dict:get("p:" .. key)
  if value == nil then
    return nil, "removed meanwhile"
  end
  local vid, len, head_end = match(value, "^(%x+) (%d+)\n()")
  len = tonumber(len)
  if vid == nil or len == nil then
    return nil, "stored value is malformed"
  end
  local cert_pem = decode_base64(sub(value, head_end, head_end + len - 1))
  local key_pem = decode_base64(sub(value, head_end + len))
  local chain = cert_pem and ssl.parse_pem_cert(cert_pem)
  local pkey = key_pem and ssl.parse_pem_priv_key(key_pem)
  if chain == nil or pkey == nil then
    clear_errors()
    return nil, "stored certificate or key does not parse"
  end
  entry = { id = vid, cert = chain, key = pkey }
  cache[key] = entry
  return entry
end

-- The SNI as nginx compares it with server names (ngx_http_validate_host): lower case, cut at a ':', without one
-- trailing dot; nil where nginx declines the name (empty, "..", '/', spaces or control characters), which no site
-- matches. Anything else nginx would look up is looked up here too, so both pick the same site.
local function normalize(name)
  if name == nil or #name == 0 or #name > 1024 then
    return nil
  end
  if find(name, "[%z\1-\32\127/]") or find(name, "..", 1, true) then
    return nil
  end
  local colon = find(name, ":", 1, true)
  if colon then
    name = sub(name, 1, colon - 1)
  end
  if byte(name, #name) == 46 then
    name = sub(name, 1, #name - 1)
  end
  if name == "" then
    return nil
  end
  return lower(name)
end

local function refuse()
  -- The handshake ends with a fatal alert and no certificate is shown; nginx logs it at info level only.
  return ngx.exit(ngx.ERROR)
end

--- ssl_certificate_by_lua for a TLS port: serves the certificate of the site the SNI names on `port`, or refuses
--- the handshake (unknown name, or no SNI at all).
function _M.serve(port)
  local dict = _M.dict()
  local name = normalize(ssl.server_name())
  if name == nil then
    return refuse()
  end
  sweep(dict)
  local key, id = find_site(dict, port, name)
  if key == nil then
    return refuse()
  end
  local site, err = parsed_site(dict, key, id)
  if site == nil then
    ngx.log(ngx.ERR, "nginx-lb: no certificate for ", key, " (", err, "); refusing the handshake until the ",
      "controller pushes it again")
    return refuse()
  end
  local ok, serr = ssl.clear_certs()
  if ok then
    ok, serr = ssl.set_cert(site.cert)
  end
  if ok then
    ok, serr = ssl.set_priv_key(site.key)
  end
  if not ok then
    ngx.log(ngx.ERR, "nginx-lb: cannot serve the certificate of ", key, ": ", serr)
    return refuse()
  end
end

local STORE = {
  dict = function()
    return _M.dict()
  end,
  LOCK = LOCK,
  VERSION = VERSION,
  -- A site whose id nginx already holds is not parsed again.
  parse = function(body, dict)
    return _M.parse(body, function(key, id)
      return dict:get("i:" .. key) ~= id
    end)
  end,
  store = function(parsed, partial)
    return _M.store(parsed, partial)
  end,
  counted = "sites",
  noun = "certificates",
}

--- content_by_lua for the control server's certificates location; `token` is the secret rendered into nginx.conf.
function _M.receive(token)
  return control.serve_versioned(token, STORE)
end

local function load(path)
  local dict = _M.dict()
  if dict:get(VERSION) ~= nil then
    return -- a reload: the dict holds what was pushed since, newer than any file
  end
  local text, rerr = startup_file.read(path, MAX_FILE)
  if text == nil then
    if rerr then
      ngx.log(ngx.ERR, "nginx-lb: ignoring the start-up certificates in ", path, " (", rerr, "); TLS handshakes ",
        "are refused until the controller pushes: check that nginx-lb runs and can write its state dir")
    end
    return
  end
  local parsed, perr = _M.parse(text, function()
    return false
  end)
  if parsed == nil or parsed.base ~= nil then
    ngx.log(ngx.ERR, "nginx-lb: ignoring the start-up certificates in ", path, " (", perr or "a partial list",
      "); TLS handshakes are refused until the controller pushes (it rewrites this file after each push)")
    return
  end
  local held, serr = _M.store(parsed, false)
  if held == nil then
    ngx.log(ngx.ERR, "nginx-lb: could not load the start-up certificates in ", path, " (", serr, ")")
    return
  end
  ngx.log(ngx.NOTICE, "nginx-lb: loaded the certificates of ", held, " TLS sites (version ",
    format("%.0f", parsed.version), ") from ", path, " until the controller pushes")
end

--- init_by_lua: loads the certificates file at `path` when the dict holds no version. Never raises (an error in
--- init_by_lua would stop nginx from starting): a bad file is logged and ignored until the controller's push.
function _M.load(path)
  local ok, err = pcall(load, path)
  if not ok then
    ngx.log(ngx.ERR, "nginx-lb: ignoring the start-up certificates in ", path, ": ", err)
  end
  -- The file's text and its parsed form (megabytes with 10,000 sites) are garbage now.
  startup_file.release()
end

return _M
