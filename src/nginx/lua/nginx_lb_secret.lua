-- The control server's token check, shared by every endpoint there (the push endpoint, the traffic counters).
--
-- Loopback is shared with every local user, so every request to the control server must carry the token the
-- controller rendered into nginx.conf (which lives in a 0700 dir).

local bit = require("bit")

local type = type
local byte = string.byte
local bor, bxor = bit.bor, bit.bxor

local _M = {}

_M.HEADER = "x-nginx-lb-token"

-- Constant time in the given value: every byte of the secret is compared whatever differs first, and a wrong length
-- only sets a flag, so neither the position of the first wrong byte nor the secret's length shows in the timing.
function _M.same(given, secret)
  if type(given) ~= "string" then
    given = ""
  end
  local diff = #given == #secret and 0 or 1
  for i = 1, #secret do
    diff = bor(diff, bxor(byte(given, i) or 0, byte(secret, i)))
  end
  return diff == 0
end

return _M
