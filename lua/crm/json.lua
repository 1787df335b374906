--- crm.json: JSON that round-trips. decode marks every array it makes, so encode writes an empty
-- one back as [] (lua-cjson 2.1.0 decodes [] and {} to the same empty table, and encodes an
-- empty table as {}). crm's own request and answer path (crm.http) uses these same functions.
-- Also `require("crm").json`. Like everything in crm, nothing raises: bad input gives `nil, err`.
--
--   decode(text [, {keep_nulls = true}]) -> value | nil, err
--   encode(value)                        -> text  | nil, err
--   null        JSON null (cjson.null)
--   array_mt    the metatable of every decoded array; set it on a table to make {} encode as []
--   array([t])  t (or a new table) with array_mt
--   empty_array a shared marker that always encodes as []
--
-- (`decode_text` and `encode_text` are crm.http's plain-message forms and are not part of the
-- reference.)
-- @module crm.json
-- @usage
-- local json = require("crm").json
-- local v = assert(json.decode('{"tags": [], "memo": {}}'))
-- print(json.encode(v))                  --> {"tags":[],"memo":{}} (keys in cjson's order)
-- print(json.encode({ ids = json.empty_array }))   --> {"ids":[]}
local cjson = require "cjson"
local errors = require "crm.error"
local platform = require "crm.platform"

local type, next, pcall, tostring, tonumber = type, next, pcall, tostring, tonumber
local setmetatable, getmetatable = setmetatable, getmetatable
local find, sub, format, match = string.find, string.sub, string.format, string.match
local concat = table.concat

local M = {}

local codec = cjson.new()
codec.encode_sparse_array(false)
codec.encode_invalid_numbers(false)
local cjson_encode = codec.encode

local marks = require "crm.marks"
local null = codec.null
assert(null == marks.null)
--- JSON null (`cjson.null`; the same value as `crm.null`).
M.null = null

-- No __index, __newindex or __len: a decoded array behaves as a plain table (t[1], #t, next,
-- ipairs); only crm.json.encode and getmetatable see the difference.
local array_mt = marks.array_mt
--- The metatable of every decoded array; set it on a table to make `{}` encode as `[]`.
M.array_mt = array_mt

--- Marks a table as an array, so it encodes as `[]` even when empty.
-- @tparam[opt] table t the table (default: a new one)
-- @treturn table `t`, with `array_mt`
function M.array(t)
  return setmetatable(t or {}, array_mt)
end

--- A shared marker that always encodes as `[]` (`crm.empty_array`); never modify it.
-- An empty table encodes as {}; this marker (never modified) encodes as [].
M.empty_array = marks.empty_array

--- Whether `encode` writes `v` as an array: a decoded one, one made with `array()`, the marker.
-- @param v any value
-- @treturn boolean
function M.is_array(v)
  return rawequal(v, M.empty_array) or (type(v) == "table" and getmetatable(v) == array_mt)
end

-- -------------------------------------------------------------------------
-- decode
-- -------------------------------------------------------------------------

-- Decoding is the C core's own (src/jdec.c), one pass from the text to the value: every array
-- gets array_mt, JSON null in objects is dropped (arrays keep theirs, so no element
-- disappears), integers stay integers under Lua 5.4, numbers beyond a double are refused.
-- lua-cjson only encodes.
local core = platform.core
core.json_setup(array_mt)

-- pieces: a reused buffer for swap_marks.
local pieces = {}

local NOT_JSON = "response body is not valid JSON"
local OUT_OF_RANGE = "response body has a number out of range"

-- decode_text(s, keep_nulls) -> value | nil, message: crm.http's decode (plain messages,
-- NOT_JSON or OUT_OF_RANGE; the C core uses the same texts).
M.decode_text = core.decode

-- -------------------------------------------------------------------------
-- encode
-- -------------------------------------------------------------------------

-- cjson writes numbers with 14 significant digits. A fraction is rounded at the 14th digit
-- (0.1 + 0.2 goes out as 0.3), which changes no amount anyone means; an integer whose digits
-- do not fit in 14 would be sent as another integer, so it is refused (under LuaJIT every
-- number is a double, and the APIs' own JSON readers may read numbers as doubles too: a
-- 17-digit id cannot travel as a number either way).
local function exact_number(x)
  return x ~= x or x % 1 ~= 0 or tonumber(format("%.14g", x)) == x
end

-- What cjson writes with an exponent: an integer of 10^14 or more (1e+14). It travels through
-- cjson as a marker string with its digits and is written back with all of them.
local math_type = math.type
local function long_integer(x)
  return x % 1 == 0 and (x >= 1e14 or x <= -1e14) and x > -2 ^ 63 and x < 2 ^ 63
end
local function digits(x)
  if math_type and math_type(x) == "integer" then return format("%d", x) end
  return format("%.0f", x)
end

-- An empty array travels through cjson as this string and is swapped for [] afterwards. cjson
-- writes its NULs as \u0000, so the swap looks for that form.
local EMPTY = "\0crm:empty-array\0"
local INT = "\0crm:int" -- then the digits, then a NUL
local MARK_JSON = '"\\u0000crm:'

-- s with every marker written as what it stands for: plain finds (memchr speed), the pieces
-- table reused.
local function swap_marks(s)
  local n, last = 0, 1
  while true do
    local i = find(s, MARK_JSON, last, true)
    if not i then break end
    local _, e, body = find(s, '^([%w%-]+)\\u0000"', i + #MARK_JSON)
    local with = body == "empty-array" and "[]" or body and match(body, "^int(%-?%d+)$")
    pieces[n + 1] = sub(s, last, i - 1)
    if with then
      pieces[n + 2] = with
      last = e + 1
    else -- never one of crm's (prepare refuses strings that hold them)
      pieces[n + 2] = MARK_JSON
      last = i + #MARK_JSON
    end
    n = n + 2
  end
  pieces[n + 1] = sub(s, last)
  local out = concat(pieces, "", 1, n + 1)
  for k = 1, n + 1 do pieces[k] = nil end
  return out
end

--[[ prepare(v, seen) -> value, changed | nil, nil, bad
  Walks the value once: empty arrays (the marker, or an empty table with array_mt) become EMPTY,
  in copies of the tables on their path (the caller's tables are not changed); numbers JSON would
  change are found. seen maps a table to what it became, so a table used twice is copied once and
  a cycle ends in cjson's depth limit. ]]
local MAX_DEPTH = 1000 -- lua-cjson's own encode limit: deeper tables are refused before it
local TOO_DEEP = {}      -- prepare's `bad` for a table nested deeper than MAX_DEPTH
local function prepare(v, seen, depth)
  local tv = type(v)
  if tv == "number" then
    if not exact_number(v) then return nil, nil, v end
    if long_integer(v) then return INT .. digits(v) .. "\0", true end
    return v, false
  end
  if tv == "string" then
    -- The swap after cjson looks for the markers' JSON form; a string that holds one would be
    -- cut there and written as broken JSON.
    if find(v, EMPTY, 1, true) or find(v, INT, 1, true) then return nil, nil, v end
    return v, false
  end
  if tv ~= "table" then return v, false end
  -- Bounded here, before any recursion runs deep: a table nested 200,000 levels gets the
  -- validation error, never a stack overflow (of Lua's stack or cjson's C stack).
  if depth > MAX_DEPTH then return nil, nil, TOO_DEEP end
  if rawequal(v, M.empty_array) or (next(v) == nil and getmetatable(v) == array_mt) then
    return EMPTY, true
  end
  local done = seen[v]
  if done ~= nil then return done, done ~= v end
  seen[v] = v
  local copy
  for k, x in next, v do
    local nx, changed, bad = prepare(x, seen, depth + 1)
    if bad ~= nil then return nil, nil, bad end
    if changed then
      copy = copy or {}
      copy[k] = nx
    end
  end
  if not copy then return v, false end
  for k, x in next, v do
    if copy[k] == nil then copy[k] = x end
  end
  seen[v] = copy
  return copy, true
end

-- encode_text(v) -> text | nil, message: crm.http's encode (plain messages).
function M.encode_text(v)
  local marked, changed, bad = prepare(v, {}, 1)
  if bad == TOO_DEEP then
    return nil, "tables nested more than " .. MAX_DEPTH .. " levels deep (or a table that contains itself)"
  end
  if bad ~= nil then
    if type(bad) == "string" then
      return nil, "a string holding crm's internal marker (NUL crm:empty-array NUL or NUL crm:int)"
        .. " cannot be sent"
    end
    local shown = math_type and math_type(bad) == "integer" and format("%d", bad) or format("%.17g", bad)
    return nil, "the number " .. shown .. " cannot be sent exactly (JSON"
      .. " numbers go out with 14 significant digits); round it, or send it as text"
  end
  local ok, s = pcall(cjson_encode, marked)
  if not ok then return nil, tostring(s) end
  if changed then s = swap_marks(s) end
  return s
end

-- -------------------------------------------------------------------------
-- the public functions: crm errors
-- -------------------------------------------------------------------------

local PUBLIC_MESSAGE = {
  [NOT_JSON] = "the text is not valid JSON",
  [OUT_OF_RANGE] = "the text has a number out of range (beyond a double)",
}

--- Decodes JSON text. Every array gets `array_mt`, so `encode` writes an empty one back as `[]`.
-- JSON null becomes `nil` in objects and stays `null` in arrays (no element disappears).
-- Under Lua 5.4 a number without fraction or exponent that fits 64 bits is an integer; every
-- other number (and every number under LuaJIT) is the nearest double. NaN, Infinity, hex
-- numbers, numbers beyond a double and bytes after the value are errors; the error's
-- `position` is the 1-based byte offset where the text goes wrong.
-- @tparam string s the JSON text
-- @tparam[opt] table opts
-- @tparam[opt=false] boolean opts.keep_nulls keep JSON null as `null` in objects too
-- @treturn[1] any the value
-- @return[2] `nil`
-- @treturn[2] crm.error.Error `decode`: "the text is not valid JSON" or a number out of range,
-- with `position`
function M.decode(s, opts)
  local v, msg, position = M.decode_text(s, opts ~= nil and opts.keep_nulls)
  if msg then
    return nil, errors.new("decode", PUBLIC_MESSAGE[msg] or msg, position and { position = position })
  end
  return v
end

--- Encodes a value as JSON. Tables with `array_mt` (decoded arrays, `array()`) and
-- `empty_array` are written as `[]` when empty; other empty tables as `{}`. The caller's tables
-- are not changed.
-- @param v the value
-- @treturn[1] string the JSON text
-- @return[2] `nil`
-- @treturn[2] crm.error.Error `validation` with `field = "value"`: a number JSON would change
-- (an integer past 10^14), a cycle (too deep), a function or userdata, ...
function M.encode(v)
  local s, msg = M.encode_text(v)
  if not s then
    return nil, errors.new("validation", "value cannot be encoded as JSON: " .. msg, { field = "value" })
  end
  return s
end

return M
