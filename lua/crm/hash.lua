--[[ SHA-1, SHA-256 and HMAC in plain Lua, the same bytes on Lua 5.4 and LuaJIT, in nginx or not.

  hash.sha256(s)            -> 32 raw bytes       hash.sha256_hex(s)          -> 64 hex digits
  hash.sha1(s)              -> 20 raw bytes
  hash.hmac_sha256(key, s)  -> 32 raw bytes       hash.hmac_sha1(key, s)      -> 20 raw bytes
  hash.hex(raw)             -> lower-case hex     hash.equal(a, b)            -> constant time

What it is for: crm names its shared-store keys with an HMAC-SHA-256 keyed by the client's
secret (crm.store), so the keys say nothing about the secret and the same credentials give the
same keys in every process that shares a store: nginx workers, cron jobs on LuaJIT, scripts on
Lua 5.4. The C core has no hash and nginx's ngx.sha1_bin exists only inside nginx, so this is
written once in Lua; it runs once per client, and once per find_or_create lock key. SHA-1 is
here only for webhook signatures (HMAC-SHA1, what ngx.hmac_sha1 computes inside nginx), so a
sender outside nginx signs the same way. Both follow FIPS 180-4; the specs check the published
test vectors. Not for bulk data: a few hundred kilobytes per second. ]]

--- SHA-1, SHA-256, HMAC and a constant-time compare in plain Lua: `require "crm.hash"`.
-- The same bytes on Lua 5.4 and LuaJIT, inside nginx or not. crm names its shared-store keys
-- with `hmac_sha256`; the OpenResty example checks webhook signatures with `hmac_sha1` and
-- `equal`. Not for bulk data (a few hundred kilobytes per second).
-- @module crm.hash
-- @usage
-- local hash = require "crm.hash"
-- local sig = "sha1=" .. hash.hex(hash.hmac_sha1(secret, body))
-- if not hash.equal(sig, header_value) then return 401 end
local M = {}

local byte, char, rep, format, concat = string.byte, string.char, string.rep, string.format, table.concat
local floor = math.floor

local W = 4294967296 -- 2^32

-- 32-bit bit operations over numbers in [0, 2^32): LuaJIT's `bit` (signed results, folded back
-- by % W), Lua 5.4's operators (compiled from text, so LuaJIT never parses them).
local band, bor, bxor, bnot, shr, shl
local bitlib = rawget(_G, "bit") or (pcall(require, "bit") and require("bit")) or nil
if bitlib and bitlib.band then
  local b_and, b_or, b_xor, b_not, b_shr, b_shl = bitlib.band, bitlib.bor, bitlib.bxor, bitlib.bnot,
    bitlib.rshift, bitlib.lshift
  band = function(a, b) return b_and(a, b) % W end
  bor = function(a, b) return b_or(a, b) % W end
  bxor = function(a, b) return b_xor(a, b) % W end
  bnot = function(a) return b_not(a) % W end
  shr = function(a, n) return b_shr(a, n) % W end
  shl = function(a, n) return b_shl(a, n) % W end
elseif _VERSION == "Lua 5.1" then
  -- PUC Lua 5.1 without the bit library (luarocks' wrapper runs bin/crm of a 5.1 tree with it):
  -- bit by bit in arithmetic. Slow, and only ever used on a few short keys.
  local function bitwise(a, b, f)
    local r, p = 0, 1
    a, b = a % W, b % W
    for _ = 1, 32 do
      local x, y = a % 2, b % 2
      if f(x, y) then r = r + p end
      a, b, p = (a - x) / 2, (b - y) / 2, p * 2
    end
    return r
  end
  band = function(a, b) return bitwise(a, b, function(x, y) return x == 1 and y == 1 end) end
  bor = function(a, b) return bitwise(a, b, function(x, y) return x == 1 or y == 1 end) end
  bxor = function(a, b) return bitwise(a, b, function(x, y) return x ~= y end) end
  bnot = function(a) return W - 1 - a % W end
  shr = function(a, n) return math.floor((a % W) / 2 ^ n) end
  shl = function(a, n) return (a * 2 ^ n) % W end
else
  local ops = assert(load([[
    local M = 0xffffffff
    return function(a, b) return a & b end, function(a, b) return a | b end,
      function(a, b) return a ~ b end, function(a) return ~a & M end,
      function(a, n) return a >> n end, function(a, n) return (a << n) & M end
  ]], "=crm.hash.bits"))
  band, bor, bxor, bnot, shr, shl = ops()
end

local function rotr(x, n) return bor(shr(x, n), shl(x, 32 - n)) end
local function rotl(x, n) return bor(shl(x, n), shr(x, 32 - n)) end

-- Message padding (both hashes): 0x80, zeros, the bit length as 64-bit big-endian.
local function pad(s)
  local len = #s
  local bits = len * 8
  local zeros = (55 - len) % 64
  local hi, lo = floor(bits / W), bits % W
  return s .. "\128" .. rep("\0", zeros)
    .. char(floor(hi / 16777216) % 256, floor(hi / 65536) % 256, floor(hi / 256) % 256, hi % 256,
            floor(lo / 16777216) % 256, floor(lo / 65536) % 256, floor(lo / 256) % 256, lo % 256)
end

local function word(s, i)
  local a, b, c, d = byte(s, i, i + 3)
  return ((a * 256 + b) * 256 + c) * 256 + d
end

local function bytes_of(words)
  local out = {}
  for i = 1, #words do
    local x = words[i]
    out[i] = char(floor(x / 16777216) % 256, floor(x / 65536) % 256, floor(x / 256) % 256, x % 256)
  end
  return concat(out)
end

-- ---- SHA-256 ----

local K256 = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}

--- SHA-256 (FIPS 180-4) of a string.
-- @tparam string s the bytes
-- @treturn string 32 raw bytes (see `hex`, `sha256_hex`)
function M.sha256(s)
  s = pad(s)
  local h0, h1, h2, h3 = 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a
  local h4, h5, h6, h7 = 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19
  local w = {}
  for chunk = 1, #s, 64 do
    for i = 0, 15 do w[i] = word(s, chunk + i * 4) end
    for i = 16, 63 do
      local a, b = w[i - 15], w[i - 2]
      local s0 = bxor(bxor(rotr(a, 7), rotr(a, 18)), shr(a, 3))
      local s1 = bxor(bxor(rotr(b, 17), rotr(b, 19)), shr(b, 10))
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) % W
    end
    local a, b, c, d, e, f, g, h = h0, h1, h2, h3, h4, h5, h6, h7
    for i = 0, 63 do
      local S1 = bxor(bxor(rotr(e, 6), rotr(e, 11)), rotr(e, 25))
      local ch = bxor(band(e, f), band(bnot(e), g))
      local t1 = (h + S1 + ch + K256[i + 1] + w[i]) % W
      local S0 = bxor(bxor(rotr(a, 2), rotr(a, 13)), rotr(a, 22))
      local maj = bxor(bxor(band(a, b), band(a, c)), band(b, c))
      local t2 = (S0 + maj) % W
      h, g, f, e, d, c, b, a = g, f, e, (d + t1) % W, c, b, a, (t1 + t2) % W
    end
    h0, h1, h2, h3 = (h0 + a) % W, (h1 + b) % W, (h2 + c) % W, (h3 + d) % W
    h4, h5, h6, h7 = (h4 + e) % W, (h5 + f) % W, (h6 + g) % W, (h7 + h) % W
  end
  return bytes_of { h0, h1, h2, h3, h4, h5, h6, h7 }
end

-- ---- SHA-1 ----

--- SHA-1 (FIPS 180-4) of a string; for webhook signatures only.
-- @tparam string s the bytes
-- @treturn string 20 raw bytes
function M.sha1(s)
  s = pad(s)
  local h0, h1, h2, h3, h4 = 0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0
  local w = {}
  for chunk = 1, #s, 64 do
    for i = 0, 15 do w[i] = word(s, chunk + i * 4) end
    for i = 16, 79 do w[i] = rotl(bxor(bxor(w[i - 3], w[i - 8]), bxor(w[i - 14], w[i - 16])), 1) end
    local a, b, c, d, e = h0, h1, h2, h3, h4
    for i = 0, 79 do
      local f, k
      if i < 20 then
        f, k = bor(band(b, c), band(bnot(b), d)), 0x5a827999
      elseif i < 40 then
        f, k = bxor(bxor(b, c), d), 0x6ed9eba1
      elseif i < 60 then
        f, k = bor(bor(band(b, c), band(b, d)), band(c, d)), 0x8f1bbcdc
      else
        f, k = bxor(bxor(b, c), d), 0xca62c1d6
      end
      local t = (rotl(a, 5) + f + e + k + w[i]) % W
      e, d, c, b, a = d, c, rotl(b, 30), a, t
    end
    h0, h1, h2, h3, h4 = (h0 + a) % W, (h1 + b) % W, (h2 + c) % W, (h3 + d) % W, (h4 + e) % W
  end
  return bytes_of { h0, h1, h2, h3, h4 }
end

-- ---- HMAC (RFC 2104), hex, comparison ----

local function xor_pad(key, with)
  local out = {}
  for i = 1, 64 do out[i] = char(bxor(byte(key, i) or 0, with)) end
  return concat(out)
end

local function hmac(h, key, s)
  if #key > 64 then key = h(key) end
  return h(xor_pad(key, 0x5c) .. h(xor_pad(key, 0x36) .. s))
end

--- HMAC-SHA-256 (RFC 2104).
-- @tparam string key the key (any length)
-- @tparam string s the message
-- @treturn string 32 raw bytes
function M.hmac_sha256(key, s) return hmac(M.sha256, key, s) end

--- HMAC-SHA1 (RFC 2104), what `ngx.hmac_sha1` computes inside nginx.
-- @tparam string key the key (any length)
-- @tparam string s the message
-- @treturn string 20 raw bytes
function M.hmac_sha1(key, s) return hmac(M.sha1, key, s) end

--- Raw bytes as lower-case hex.
-- @tparam string raw the bytes
-- @treturn string two hex digits per byte
function M.hex(raw)
  return (raw:gsub(".", function(c) return format("%02x", byte(c)) end))
end

--- SHA-256 as 64 lower-case hex digits.
-- @tparam string s the bytes
-- @treturn string the digest in hex
function M.sha256_hex(s) return M.hex(M.sha256(s)) end

--- Whether two strings are equal, in time that depends only on their lengths (for signatures:
-- how much of a guess matched must not show in how long the check took).
-- @param a a string (anything else compares unequal)
-- @param b a string
-- @treturn boolean
function M.equal(a, b)
  if type(a) ~= "string" or type(b) ~= "string" or #a ~= #b then return false end
  local diff = 0
  for i = 1, #a do diff = bor(diff, bxor(byte(a, i), byte(b, i))) end
  return diff == 0
end

return M
