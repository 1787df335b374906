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
-- (`decode_text`, `encode_text`, `mark_arrays` and `placeholder_text` are crm.http's plain-message
-- forms and are not part of the reference.)
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
local find, sub, byte, format = string.find, string.sub, string.byte, string.format
local concat = table.concat

local M = {}

local codec = cjson.new()
codec.encode_sparse_array(false)
codec.encode_invalid_numbers(false)
-- NaN, Infinity and hex numbers in an answer are decode errors, not numbers.
codec.decode_invalid_numbers(false)
local cjson_decode, cjson_encode = codec.decode, codec.encode

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

-- JSON null becomes nil in objects, so `if c.phone then` means what it says. In arrays it stays
-- null: removing it would leave a hole and silently drop an element.
local strip_nulls = platform.strip_nulls
local has_long_exponent = platform.has_long_exponent

--[[ mark_arrays(v, placeholders, strip) -> count
  The one pass over a decoded value (the C core may take it over: same contract). Every array
  (a table with [1]; cjson makes no holes, and objects have only string keys) gets array_mt.
  placeholders: the text had each empty array `[]` written as `[true]` (see decode), so a
  one-element array holding true is emptied again and counted. strip: nulls in objects are
  removed (arrays keep theirs). Returns how many placeholders were found. Nesting is bounded by
  cjson's decode depth (1000). ]]
local function mark_arrays(v, placeholders, strip)
  local found = 0
  local x = v[1]
  if x ~= nil then
    setmetatable(v, array_mt)
    if placeholders and x == true and v[2] == nil then
      v[1] = nil
      return 1
    end
    local i = 1
    repeat
      if type(x) == "table" then found = found + mark_arrays(x, placeholders, strip) end
      i = i + 1
      x = v[i]
    until x == nil
  else
    for k, y in next, v do
      if type(y) == "table" then
        found = found + mark_arrays(y, placeholders, strip)
      elseif strip and y == null then
        v[k] = nil -- clearing a visited field is allowed during next
      end
    end
  end
  return found
end
M.mark_arrays = mark_arrays

-- The exact way, for texts where a placeholder could be mistaken (an array [true] in the data,
-- or `[]` inside a string): outside strings, every non-empty array gets false as a first element
-- and every empty one becomes [true]. Returns the rewritten text, or nil if it is malformed
-- (cjson then reports on the original).
local function tag_every_array(s)
  local out, n, last, pos = {}, 0, 1, 1
  while true do
    local i = find(s, '[%["]', pos)
    if not i then break end
    if byte(s, i) == 34 then -- a string: skip to its closing quote
      local j = i + 1
      while true do
        j = find(s, '["\\]', j)
        if not j then return nil end
        if byte(s, j) == 34 then break end
        j = j + 2
      end
      pos = j + 1
    else
      local _, e = find(s, "^%s*%]", i + 1)
      n = n + 1
      if e then
        out[n] = sub(s, last, i) .. "true]"
        last, pos = e + 1, e + 1
      else
        out[n] = sub(s, last, i) .. "false,"
        last, pos = i + 1, i + 1
      end
    end
  end
  out[n + 1] = sub(s, last)
  return concat(out)
end

-- Undoes tag_every_array on the decoded value: drops the first element of every array
-- ([true] becomes empty), sets array_mt, strips nulls in objects.
local function untag(v, strip)
  local x = v[1]
  if x ~= nil then
    setmetatable(v, array_mt)
    local n = #v
    for i = 2, n do
      local y = v[i]
      v[i - 1] = y
      if type(y) == "table" then untag(y, strip) end
    end
    v[n] = nil
  else
    for k, y in next, v do
      if type(y) == "table" then
        untag(y, strip)
      elseif strip and y == null then
        v[k] = nil
      end
    end
  end
end

-- A number too large for a double (1e400) decodes as infinity: refused like Infinity itself.
local huge = math.huge
local function has_infinity(v, depth)
  if v == huge or v == -huge then return true end
  if type(v) ~= "table" or depth > 1000 then return false end
  for _, x in next, v do
    if has_infinity(x, depth + 1) then return true end
  end
  return false
end

-- placeholder_text(s) -> text, placeholders, exact: s with every empty array `[ ]` written as
-- `[true]`, and how many; exact when an array starting with true is in s (then a placeholder
-- could be mistaken for data). One plain find per `[` (memchr speed); the pieces table is reused.
local pieces = {}
local function placeholder_text(s)
  local n, last, pos, count = 0, 1, 1, 0
  while true do
    local i = find(s, "[", pos, true)
    if not i then break end
    local b = byte(s, i + 1)
    local e
    if b == 93 then -- ]
      e = i + 1
    elseif b == 32 or b == 10 or b == 13 or b == 9 then
      local _, j = find(s, "^%s*%]", i + 1)
      e = j
      if not e and find(s, "^%s*true%s*%]", i + 1) then return s, 0, true end
    elseif b == 116 and find(s, "^true%s*%]", i + 1) then -- t
      return s, 0, true
    end
    if e then
      pieces[n + 1] = sub(s, last, i)
      pieces[n + 2] = "true]"
      n = n + 2
      last = e + 1
      count = count + 1
    end
    pos = (e or i) + 1
  end
  if count == 0 then return s, 0, false end
  pieces[n + 1] = sub(s, last)
  local text = concat(pieces, "", 1, n + 1)
  for k = 1, n + 1 do pieces[k] = nil end
  return text, count, false
end

M.placeholder_text = placeholder_text

local NOT_JSON = "response body is not valid JSON"
local OUT_OF_RANGE = "response body has a number out of range"

-- The C core decodes with this same codec and does the marking walk in one C pass (src/json.c);
-- the Lua walk below is what runs where the core is not loaded.
local core = platform.core
if core and core.json_setup then core.json_setup(cjson_decode, array_mt) end

-- decode_text(s, keep_nulls) -> value | nil, message: crm.http's decode (plain messages).
local function lua_decode_text(s, keep_nulls)
  if type(s) ~= "string" then return nil, NOT_JSON end
  local strip = not keep_nulls and find(s, "null", 1, true) ~= nil
  local ok, v
  if not find(s, "[", 1, true) then
    -- No array anywhere: nothing to mark.
    ok, v = pcall(cjson_decode, s)
    if not ok then return nil, NOT_JSON end
    if strip and type(v) == "table" then strip_nulls(v) end
  else
    -- Each empty array `[]` is written `[true]` (the same grammar; the walk finds it again)
    -- unless the text already has such an array; if one was inside a string, the count tells.
    local text, placeholders, exact = placeholder_text(s)
    if not exact then
      ok, v = pcall(cjson_decode, text)
      if not ok then return nil, NOT_JSON end
      local found = type(v) == "table" and mark_arrays(v, placeholders > 0, strip) or 0
      if found ~= placeholders then exact = true end
    end
    if exact then
      local tagged = tag_every_array(s)
      ok, v = pcall(cjson_decode, tagged or s)
      if not ok or not tagged then return nil, NOT_JSON end
      if type(v) == "table" then untag(v, strip) end
    end
  end
  if has_long_exponent(s) and has_infinity(v, 0) then
    return nil, OUT_OF_RANGE
  end
  return v
end
M.lua_decode_text = lua_decode_text
M.decode_text = core and core.decode or lua_decode_text

-- -------------------------------------------------------------------------
-- encode
-- -------------------------------------------------------------------------

-- cjson writes numbers with 14 significant digits. A fraction is rounded at the 14th digit
-- (0.1 + 0.2 goes out as 0.3), which changes no amount anyone means; an integer past 10^14
-- would be sent as another integer, so it is refused.
local function exact_number(x)
  return x ~= x or x % 1 ~= 0 or tonumber(format("%.14g", x)) == x
end

-- An empty array travels through cjson as this string and is swapped for [] afterwards. cjson
-- writes its NULs as \u0000, so the swap looks for that form.
local EMPTY = "\0crm:empty-array\0"
local EMPTY_JSON = '"\\u0000crm:empty-array\\u0000"'

-- s with every EMPTY_JSON written as []: plain finds (memchr speed), the pieces table reused.
local function swap_empty(s)
  local n, last = 0, 1
  local len = #EMPTY_JSON
  while true do
    local i = find(s, EMPTY_JSON, last, true)
    if not i then break end
    pieces[n + 1] = sub(s, last, i - 1)
    pieces[n + 2] = "[]"
    n = n + 2
    last = i + len
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
local function prepare(v, seen)
  local tv = type(v)
  if tv == "number" then
    if not exact_number(v) then return nil, nil, v end
    return v, false
  end
  if tv == "string" then
    -- The swap after cjson looks for the marker's JSON form; a string that holds it would be
    -- cut there and written as broken JSON.
    if find(v, EMPTY, 1, true) then return nil, nil, v end
    return v, false
  end
  if tv ~= "table" then return v, false end
  if rawequal(v, M.empty_array) or (next(v) == nil and getmetatable(v) == array_mt) then
    return EMPTY, true
  end
  local done = seen[v]
  if done ~= nil then return done, done ~= v end
  seen[v] = v
  local copy
  for k, x in next, v do
    local nx, changed, bad = prepare(x, seen)
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
  local marked, changed, bad = prepare(v, {})
  if bad ~= nil then
    if type(bad) == "string" then
      return nil, "a string holding crm's internal marker (NUL crm:empty-array NUL) cannot be sent"
    end
    return nil, "the number " .. format("%.17g", bad) .. " cannot be sent exactly (JSON"
      .. " numbers go out with 14 significant digits); round it, or send it as text"
  end
  local ok, s = pcall(cjson_encode, marked)
  if not ok then return nil, tostring(s) end
  if changed then s = swap_empty(s) end
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
-- JSON null becomes `nil` in objects and stays `null` in arrays (no element disappears);
-- NaN, Infinity, hex numbers and numbers beyond a double are errors.
-- @tparam string s the JSON text
-- @tparam[opt] table opts
-- @tparam[opt=false] boolean opts.keep_nulls keep JSON null as `null` in objects too
-- @treturn[1] any the value
-- @return[2] `nil`
-- @treturn[2] crm.error.Error `decode`: "the text is not valid JSON" or a number out of range
function M.decode(s, opts)
  local v, msg = M.decode_text(s, opts ~= nil and opts.keep_nulls)
  if msg then return nil, errors.new("decode", PUBLIC_MESSAGE[msg] or msg) end
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
