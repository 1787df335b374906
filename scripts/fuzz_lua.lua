--[[ The Lua-driven fuzz loop for the C core's entry points that take untrusted input: answer
  decoding (core.decode) and the request builders (core.build, h:call, m:submit_call,
  core.header_set). `make fuzz` runs it under ASan and UBSan (build/asan/crm/core.so, the
  sanitizer runtime preloaded); it runs against any build of the core the same way.

    FUZZ_SEED=N    the random seed (default 1): the same seed replays the same inputs
    FUZZ_ITERS=N   iterations (default 20000)

  Every iteration:
  - decode, against two oracles written here. A random JSON tree is written out with random
    white space and escapes, and the value the tree means is known. A hostile text (a mutated
    tree, or random bytes) is judged by lua-cjson on the original text (valid or not, and the
    values) plus a small structure parser of this script (which tables were arrays, which
    objects). Either way core.decode must give the same success or failure, a deep-equal value,
    array_mt exactly on the arrays (empty ones too) and never on objects, nulls dropped in objects
    (unless keep_nulls) and kept in arrays, and "out of range" exactly when a number overflows.
  - core.build with every operation and hostile ids, queries and bases: it never raises (a bad
    op is nil, bad_op; a base that is not a string or holds CR, LF, NUL or a space is nil,
    bad_url, as h:call refuses it), refuses exactly what validate.id (TableCheck) or
    the GUID rule (Toast) refuses, naming the field, and an accepted URL is the base, then only
    bytes 0x21..0x7e, its path segments decoding back to the ids, the query sorted and encoded.
    h:call and m:submit_call refuse the same way (nothing is sent for those); a slice of the
    accepted ones goes to http://127.0.0.1:1 (connection refused) to run the whole call path.
  - core.header_set with hostile line arrays: an error table or a set, never a crash; sets and
    handles closed twice, and a closed one refused.
  The first failure stops the loop with the iteration, the seed and the input. ]]

local json = require "crm.json"
local validate = require "crm.validate"
local core = require("crm.platform").core
local cjson = require "cjson"

local type, pairs, next, tostring, rawget, rawequal = type, pairs, next, tostring, rawget, rawequal
local getmetatable, setmetatable, pcall = getmetatable, setmetatable, pcall
local byte, char, sub, rep, format = string.byte, string.char, string.sub, string.rep, string.format
local floor, huge = math.floor, math.huge
local concat, sort = table.concat, table.sort

local SEED = tonumber(os.getenv("FUZZ_SEED") or "") or 1
local ITERS = tonumber(os.getenv("FUZZ_ITERS") or "") or 20000
math.randomseed(SEED)
local random = math.random

local array_mt, null = json.array_mt, json.null
local NOT_JSON = "response body is not valid JSON"
local OUT_OF_RANGE = "response body has a number out of range"

-- The codec crm.json hands the core, configured the same way: the oracle's own lua-cjson.
local codec = cjson.new()
codec.decode_invalid_numbers(false)
local cjson_decode = codec.decode

local iteration = 0
local stats = { texts = 0, generated = 0, valid = 0, refused_range = 0, builds = 0,
                accepted = 0, calls = 0, sent = 0, header_sets = 0 }

local function show(v)
  if type(v) ~= "string" then return tostring(v) end
  local q = format("%q", v)
  if #q > 2000 then q = sub(q, 1, 2000) .. "... (" .. #v .. " bytes)" end
  return q
end

local function fail(what, input, detail)
  io.stderr:write(format("fuzz_lua: FAIL %s at iteration %d (FUZZ_SEED=%d replays it)\n  %s\n",
    what, iteration, SEED, detail))
  if input ~= nil then io.stderr:write("  input: ", show(input), "\n") end
  os.exit(1)
end

local function pick(t) return t[random(#t)] end
local function chance(p) return random() < p end

local function random_bytes(n, alphabet)
  local out = {}
  for i = 1, n do
    if alphabet then
      local k = random(#alphabet)
      out[i] = sub(alphabet, k, k)
    else
      out[i] = char(random(0, 255))
    end
  end
  return concat(out)
end

-- ---------------------------------------------------------------------------------------------
-- deep comparison: types, numbers (the sign of zero too), strings, metatables, key sets
-- ---------------------------------------------------------------------------------------------

local function diff(a, b, path, depth)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return path .. ": " .. ta .. " vs " .. tb end
  if ta == "number" then
    if math.type and math.type(a) ~= math.type(b) then
      return path .. ": " .. math.type(a) .. " vs " .. math.type(b)
    end
    if a ~= b and not (a ~= a and b ~= b) then return path .. ": " .. a .. " vs " .. b end
    if a == 0 and 1 / a ~= 1 / b then return path .. ": the sign of zero" end
    return nil
  end
  if ta ~= "table" then
    if not rawequal(a, b) then return path .. ": " .. show(a) .. " vs " .. show(b) end
    return nil
  end
  if depth > 1100 then return path .. ": too deep" end
  local ma, mb = getmetatable(a), getmetatable(b)
  if ma ~= mb then
    local function name(m) return m == nil and "no metatable" or m == array_mt and "array_mt" or "another" end
    return path .. ": " .. name(ma) .. " vs " .. name(mb)
  end
  for k, v in next, a do
    local d = diff(v, rawget(b, k), path .. "[" .. show(k) .. "]", depth + 1)
    if d then return d end
  end
  for k in next, b do
    if rawget(a, k) == nil then return path .. "[" .. show(k) .. "]: missing vs present" end
  end
  return nil
end

-- ---------------------------------------------------------------------------------------------
-- oracle 1: random JSON trees, written out with random white space and escapes
-- ---------------------------------------------------------------------------------------------

local WS = { " ", "\t", "\n", "\r" }
local function ws()
  if chance(0.6) then return "" end
  local out = {}
  for i = 1, random(1, 3) do out[i] = pick(WS) end
  return concat(out)
end

local function utf8_char(cp)
  if cp < 0x80 then return char(cp) end
  if cp < 0x800 then return char(0xC0 + floor(cp / 64), 0x80 + cp % 64) end
  if cp < 0x10000 then
    return char(0xE0 + floor(cp / 4096), 0x80 + floor(cp / 64) % 64, 0x80 + cp % 64)
  end
  return char(0xF0 + floor(cp / 262144), 0x80 + floor(cp / 4096) % 64, 0x80 + floor(cp / 64) % 64,
    0x80 + cp % 64)
end

local SHORT_ESCAPE = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
                       ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
-- Pieces of string content that look like JSON to a careless scan.
local TRICKY = { "[", "]", "[]", "[ ]", "[true]", "{", "}", '"', "\\", "/", ",", ":", "null",
                 "true", "false", "1e400", "e999", rep("9", 250), "\0", "\127", "\255", "\192\175",
                 "é", "中", "😀", "\\u005b" }

-- One piece of string content: its Lua value and its JSON text.
local function string_piece()
  local r = random(10)
  if r <= 3 then -- plain ASCII
    local s = random_bytes(random(0, 6), "abcXYZ019 -_.")
    return s, s
  elseif r <= 5 then -- a tricky piece, escaped where JSON needs it
    local s = pick(TRICKY)
    if s == "\\u005b" then return "\\u005b", "\\\\u005b" end
    local out = s:gsub('[%c"\\]', function(c)
      return SHORT_ESCAPE[c] or format("\\u%04x", byte(c))
    end)
    return s, out
  elseif r <= 7 then -- one character, escaped in one of the ways JSON allows
    local c = random(0, 127)
    local s = char(c)
    local how = random(3)
    if c == 34 or c == 92 or c < 32 or how == 1 then
      if how == 2 and SHORT_ESCAPE[s] then return s, SHORT_ESCAPE[s] end
      return s, format(pick { "\\u%04x", "\\u%04X" }, c)
    end
    if c == 47 and how == 3 then return "/", "\\/" end
    return s, s
  else -- a code point past ASCII: raw UTF-8, \uXXXX, or a surrogate pair
    local cp
    repeat cp = pick { random(0x80, 0x7FF), random(0x800, 0xFFFF), random(0x10000, 0x10FFFF) }
    until cp < 0xD800 or cp > 0xDFFF
    local s = utf8_char(cp)
    if chance(0.5) then return s, s end
    if cp < 0x10000 then return s, format("\\u%04x", cp) end
    local v = cp - 0x10000
    return s, format("\\u%04X\\u%04x", 0xD800 + floor(v / 1024), 0xDC00 + v % 1024)
  end
end

local function gen_string()
  local vals, texts = {}, {}
  for i = 1, random(0, 5) do vals[i], texts[i] = string_piece() end
  return concat(vals), '"' .. concat(texts) .. '"'
end

local function zeros(n) return rep("0", n) end
local NUMBERS = {
  "0", "-0", "17", "-5", "1.5", "-0.25", "3.0", "1.", "1e5", "2E-3", "1e+2", "6.02e23", "1E0",
  "1e308", "1.7976931348623157e308", "1.7976931348623159e308", "1e309", "1e400", "-1e400",
  "2E+308", "1e-400", "1e0400", "-1e-0400", "4.9e-324", "9007199254740993", "123456789012345678",
  "1" .. zeros(15), "1" .. zeros(199), "1" .. zeros(200), "1" .. zeros(250), "1" .. zeros(308),
  "1" .. zeros(309), "1" .. zeros(400), rep("9", 309), "-" .. rep("9", 309), rep("9", 308),
  "0." .. zeros(300) .. "1", "1" .. zeros(290) .. "e20", "1" .. zeros(250) .. "e-300",
  "1" .. zeros(209) .. "e99", "1" .. zeros(199) .. "e99", "-1" .. zeros(290) .. "E+19",
  "1.e400", "1.E+309", "-2.e308", "1.e-400", "1.e5",
}

-- The number crm's decoder makes of a number's text: under Lua 5.3+ an integer when the text
-- has no fraction or exponent and fits (but "-0" stays the float -0.0), else cjson's double.
local function crm_number(text, double)
  if math.type and text ~= "-0" and text:find("^%-?%d+$") then
    local i = tonumber(text)
    if math.type(i) == "integer" then return i end
  end
  return double
end

local function gen_number()
  local text
  if chance(0.5) then
    text = pick(NUMBERS)
  else
    text = tostring(random(-100000, 100000))
    if chance(0.3) then text = text .. "." .. random(0, 999) end
    if chance(0.2) then text = text .. pick { "e", "E", "e+", "e-" } .. random(0, 40) end
  end
  return crm_number(text, cjson_decode(text)), text
end

local KEYS = { "a", "b", "id", "1", "0", "", "[", "]", "[]", "null", "true", 'q"uote', "back\\slash",
               "1e400", "é" }

-- gen(depth) -> node, text. Nodes: {"arr", items}, {"obj", keys, values}, {"num", v},
-- {"str", v}, {"bool", v}, {"null"}.
local gen
local function gen_container(depth)
  if chance(0.5) then
    local items, parts = {}, {}
    for i = 1, (chance(0.25) and 0 or random(1, 4)) do
      items[i], parts[i] = gen(depth + 1)
      parts[i] = ws() .. parts[i] .. ws()
    end
    local inner = #parts == 0 and ws() or concat(parts, ",")
    return { "arr", items }, "[" .. inner .. "]"
  end
  local keys, values, parts = {}, {}, {}
  for i = 1, (chance(0.25) and 0 or random(1, 4)) do
    local k, kt
    if chance(0.6) then
      k = pick(KEYS)
      kt = '"' .. k:gsub('["\\]', "\\%0") .. '"'
    else
      k, kt = gen_string()
    end
    local v, vt = gen(depth + 1)
    keys[i], values[i] = k, v
    parts[i] = ws() .. kt .. ws() .. ":" .. ws() .. vt .. ws()
  end
  local inner = #parts == 0 and ws() or concat(parts, ",")
  return { "obj", keys, values }, "{" .. inner .. "}"
end

function gen(depth)
  local r = random(10)
  if depth < 6 and r <= 5 then return gen_container(depth) end
  r = random(10)
  if r <= 3 then
    local v, t = gen_number()
    return { "num", v }, t
  elseif r <= 6 then
    local v, t = gen_string()
    return { "str", v }, t
  elseif r <= 8 then
    local v = chance(0.5)
    return { "bool", v }, tostring(v)
  end
  return { "null" }, "null"
end

-- A chain of `depth` containers around an empty array (cjson's limit is 1000 levels).
local function gen_deep(depth)
  local open, close, node = {}, {}, { "arr", {} }
  local kinds = {}
  for i = 1, depth - 1 do kinds[i] = chance(0.5) and "arr" or "obj" end
  for i = depth - 1, 1, -1 do
    if kinds[i] == "arr" then node = { "arr", { node } } else node = { "obj", { "k" }, { node } } end
  end
  for i = 1, depth - 1 do
    open[i] = kinds[i] == "arr" and "[" or '{"k":'
    close[depth - i] = kinds[i] == "arr" and "]" or "}"
  end
  return node, concat(open) .. "[]" .. concat(close), depth <= 1000
end

-- The value a tree means: arrays with array_mt, null dropped in objects unless keep.
-- Returns value, overflow (a number beyond a double somewhere).
local function meaning(node, keep)
  local kind = node[1]
  if kind == "num" then return node[2], node[2] == huge or node[2] == -huge end
  if kind == "str" or kind == "bool" then return node[2], false end
  if kind == "null" then return null, false end
  local out, over = {}, false
  if kind == "arr" then
    setmetatable(out, array_mt)
    for i, item in ipairs(node[2]) do
      local v, o = meaning(item, keep)
      out[i], over = v, over or o
    end
  else
    -- of equal keys the last one wins; a number beyond a double before it is refused all the same
    local last = {}
    for i, k in ipairs(node[2]) do last[k] = i end
    for i, k in ipairs(node[2]) do
      local v, o = meaning(node[3][i], keep)
      over = over or o
      if last[k] == i and not (v == null and not keep) then out[k] = v end
    end
  end
  return out, over
end

-- ---------------------------------------------------------------------------------------------
-- oracle 2: lua-cjson on the original text, plus which of its tables were arrays
-- ---------------------------------------------------------------------------------------------

-- The structure of the first JSON value of s (a text lua-cjson accepted): a tree of
-- {"arr", {shape...}}, {"obj", {key = shape}} (the last of equal keys), {"tok", text} (a number,
-- true, false or null) and false (a string); and whether any number of the text is beyond a
-- double (crm refuses it even where a repeated key hides it from cjson's value).
local function parse_shape(s)
  local pos = 1
  local overflow = false
  local function skip_ws() pos = s:find("[^ \t\n\r]", pos) or #s + 1 end
  local function string_end(i) -- s[i] is '"': the index of the closing quote
    local j = i + 1
    while true do
      j = s:find('["\\]', j)
      if not j then error("unclosed string at " .. i) end
      if byte(s, j) == 34 then return j end
      j = j + 2
    end
  end
  local value
  function value(depth)
    if depth > 1001 then error("too deep") end
    skip_ws()
    local c = sub(s, pos, pos)
    if c == "[" then
      pos = pos + 1
      local items = {}
      skip_ws()
      if sub(s, pos, pos) == "]" then pos = pos + 1; return { "arr", items } end
      while true do
        items[#items + 1] = value(depth + 1)
        skip_ws()
        c = sub(s, pos, pos)
        pos = pos + 1
        if c == "]" then return { "arr", items } end
        if c ~= "," then error("expected , or ] at " .. (pos - 1)) end
      end
    elseif c == "{" then
      pos = pos + 1
      local fields = {}
      skip_ws()
      if sub(s, pos, pos) == "}" then pos = pos + 1; return { "obj", fields } end
      while true do
        skip_ws()
        if sub(s, pos, pos) ~= '"' then error("expected a key at " .. pos) end
        local e = string_end(pos)
        local key = cjson_decode(sub(s, pos, e))
        pos = e + 1
        skip_ws()
        if sub(s, pos, pos) ~= ":" then error("expected : at " .. pos) end
        pos = pos + 1
        fields[key] = value(depth + 1)
        skip_ws()
        c = sub(s, pos, pos)
        pos = pos + 1
        if c == "}" then return { "obj", fields } end
        if c ~= "," then error("expected , or } at " .. (pos - 1)) end
      end
    elseif c == '"' then
      pos = string_end(pos) + 1
      return false
    else
      local e = s:find("[,%]}%z \t\n\r]", pos) or #s + 1
      if e == pos then error("empty token at " .. pos) end
      local token = sub(s, pos, e - 1)
      local x = tonumber(token)
      if x == huge or x == -huge then overflow = true end
      pos = e
      return { "tok", token }
    end
  end
  return value(1), overflow
end

-- cjson's value with the shape applied: arrays marked, nulls in objects dropped unless keep.
local function shaped(raw, shape, keep, where)
  if not shape or shape[1] == "tok" then
    if type(raw) == "table" then error("a table where the text has a scalar at " .. where) end
    if shape and type(raw) == "number" then return crm_number(shape[2], raw), raw == huge or raw == -huge end
    return raw, raw == huge or raw == -huge
  end
  if type(raw) ~= "table" then error("a scalar where the text has a container at " .. where) end
  local out, over = {}, false
  if shape[1] == "arr" then
    setmetatable(out, array_mt)
    local n = 0
    for _ in next, raw do n = n + 1 end
    if n ~= #shape[2] then error("an array of " .. n .. " items for " .. #shape[2] .. " at " .. where) end
    for i, sh in ipairs(shape[2]) do
      local v, o = shaped(raw[i], sh, keep, where .. "/" .. i)
      out[i], over = v, over or o
    end
  else
    for k, v in next, raw do
      local sh = shape[2][k]
      if sh == nil then error("a key the text does not have: " .. show(k) .. " at " .. where) end
      local x, o = shaped(v, sh, keep, where .. "/" .. k)
      over = over or o
      if not (x == null and not keep) then out[k] = x end
    end
  end
  return out, over
end

-- The answer core.decode must give for s: value | nil, message.
local function oracle(s, keep)
  -- cjson reads a text up to its first NUL byte; crm refuses a text with one anywhere.
  if s:find("\0", 1, true) then return nil, NOT_JSON end
  local ok, raw = pcall(cjson_decode, s)
  if not ok then return nil, NOT_JSON end
  local pok, shape, overflow = pcall(parse_shape, s)
  if not pok then fail("oracle", s, "the structure parser failed on a text cjson accepted: " .. shape) end
  local sok, v, over = pcall(shaped, raw, shape, keep, "$")
  if not sok then fail("oracle", s, "cjson's value and the structure disagree: " .. v) end
  if over or overflow then return nil, OUT_OF_RANGE end
  return v
end

local function check_decode(s, keep, want, want_msg, label)
  stats.texts = stats.texts + 1
  local ok, v, msg = pcall(core.decode, s, keep)
  if not ok then fail("decode raised", s, tostring(v)) end
  if want_msg then
    if v ~= nil or msg ~= want_msg then
      fail("decode " .. label, s, format("want nil, %q; got %s, %s (keep_nulls=%s)", want_msg,
        show(v), show(msg), tostring(keep)))
    end
    if want_msg == OUT_OF_RANGE then stats.refused_range = stats.refused_range + 1 end
    return
  end
  stats.valid = stats.valid + 1
  if msg ~= nil then
    fail("decode " .. label, s, format("want a value; got nil, %s (keep_nulls=%s)", show(msg), tostring(keep)))
  end
  local d = diff(v, want, "$", 0)
  if d then fail("decode " .. label, s, d .. " (got vs want, keep_nulls=" .. tostring(keep) .. ")") end
end

-- ---------------------------------------------------------------------------------------------
-- hostile texts
-- ---------------------------------------------------------------------------------------------

local JSONISH = '[]{}",:\\ \t\n\r0123456789eE+-.truefalsn\0\255u'
local INSERTS = { "[", "]", "[]", "[ ]", "[true]", "[true,", '"', "\\", "\0", "null", ",", ":", "{}",
                  "1e400", rep("9", 250), "true", "false", "\\u0000", "\239\187\191", "\n" }

local function mutate(s)
  for _ = 1, random(1, 4) do
    local n = #s
    local i = random(1, n + 1)
    local r = random(7)
    if r == 1 and n > 0 then -- replace one byte
      s = sub(s, 1, i - 1) .. random_bytes(1, chance(0.7) and JSONISH or nil) .. sub(s, i + 1)
    elseif r == 2 then -- insert a piece
      s = sub(s, 1, i - 1) .. pick(INSERTS) .. sub(s, i)
    elseif r == 3 and n > 0 then -- delete a run
      s = sub(s, 1, i - 1) .. sub(s, i + random(1, 8))
    elseif r == 4 then -- cut
      s = sub(s, 1, i - 1)
    elseif r == 5 and n > 0 then -- repeat a slice
      local from = math.min(i, n)
      local j = random(from, math.min(n, from + 20))
      s = sub(s, 1, j) .. sub(s, from, j) .. sub(s, j + 1)
    elseif r == 6 then -- wrap it
      s = pick { "[", "{\"k\":", "[[]," } .. s .. pick { "]", "}", "]]" }
    else -- append garbage
      s = s .. random_bytes(random(1, 4), JSONISH)
    end
  end
  return s
end

local function hostile_text(seed_text)
  local r = random(10)
  if r <= 6 then return mutate(seed_text) end
  if r <= 9 then return random_bytes(random(0, 40), JSONISH) end
  return random_bytes(random(0, 40))
end

local function fuzz_decode()
  -- a generated tree: known meaning, and oracle 2 on the same text
  local node, text = gen(0)
  if chance(0.3) then text = ws() .. text .. ws() end
  stats.generated = stats.generated + 1
  for _, keep in ipairs { false, true } do
    local want, over = meaning(node, keep)
    if over then check_decode(text, keep, nil, OUT_OF_RANGE, "(generated)")
    else check_decode(text, keep, want, nil, "(generated)") end
    local v2, m2 = oracle(text, keep)
    if m2 then
      if not over or m2 ~= OUT_OF_RANGE then fail("oracle", text, "oracle 2 refused a generated text: " .. m2) end
    elseif over or diff(v2, want, "$", 0) then
      fail("oracle", text, "the two oracles disagree: " .. tostring(diff(v2, want, "$", 0)))
    end
  end
  -- a hostile text derived from it, judged by oracle 2
  local s = hostile_text(text)
  local keep = pick { false, true, nil, 0, "yes" } -- lua_toboolean: only false and nil are false
  local want, msg = oracle(s, keep ~= nil and keep ~= false)
  check_decode(s, keep, want, msg, "(hostile)")
  -- the text after a NUL is never read
  if chance(0.05) then
    local t = text .. "\0" .. hostile_text(text)
    local w2, m2 = oracle(t, false)
    check_decode(t, false, w2, m2, "(after NUL)")
  end
end

local function fuzz_decode_fixed()
  -- not strings: nil, NOT_JSON
  for _, v in ipairs { 42, true, {}, print } do check_decode(v, false, nil, NOT_JSON, "(not a string)") end
  local ok, v, msg = pcall(core.decode)
  if not ok or v ~= nil or msg ~= NOT_JSON then fail("decode()", nil, show(v) .. " " .. show(msg)) end
  -- nesting at and past cjson's limit
  for _, depth in ipairs { 999, 1000, 1001, 1500 } do
    local node, text, valid = gen_deep(depth)
    if valid then check_decode(text, false, (meaning(node, false)), nil, "(deep " .. depth .. ")")
    else check_decode(text, false, nil, NOT_JSON, "(deep " .. depth .. ")") end
    local w, m = oracle(text, false)
    check_decode(text, false, w, m, "(deep " .. depth .. ", oracle 2)")
  end
  -- the placeholders the rewrite uses, as data
  for _, text in ipairs { "[true]", "[[true]]", "[[],[true]]", "[true,[]]", "[false,[]]", "[[true],[]]",
                          '{"1":[]}', '{"1":true}', "[[[]]]", "[ [ ] ]", '["[]",[]]', '["\\"[]",[]]',
                          "[1e400]", "[[],1e400]", "1e400", "-1e400", "[" .. rep("9", 400) .. "]",
                          "1" .. zeros(290) .. "e20", "[null,[]]", '{"a":null,"b":[null,[]]}', "[]", "{}",
                          " [] ", "[]\0", "[] \0 [", "[\0]", "\0[]", "" } do
    for _, keep in ipairs { false, true } do
      local w, m = oracle(text, keep)
      check_decode(text, keep, w, m, "(fixed)")
    end
  end
end

-- ---------------------------------------------------------------------------------------------
-- request builders
-- ---------------------------------------------------------------------------------------------

local OPS = {} -- {num, name, method, path, slots = {names}, toast}
for name, num in pairs(core.ops) do
  local _, method, path = core.op_info(num)
  local slots = {}
  for s in path:gmatch("{([^}]*)}") do slots[#slots + 1] = s end
  OPS[#OPS + 1] = { num = num, name = name, method = method, path = path, slots = slots,
                    toast = name:find("^toast%.") ~= nil }
end
sort(OPS, function(a, b) return a.num < b.num end)
for i, op in ipairs(OPS) do
  if op.num ~= i then fail("core.ops", nil, "numbers are not 1.." .. #OPS) end
end

local function escape(s)
  return (s:gsub("[^%w%-%._~]", function(c) return format("%%%02X", byte(c)) end))
end
local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

local function hex_string(n, upper)
  local digits = upper and "0123456789ABCDEF" or "0123456789abcdef"
  local out = {}
  for i = 1, n do
    local k = random(16)
    out[i] = sub(digits, k, k)
  end
  return concat(out)
end
local function guid(upper)
  return hex_string(8, upper) .. "-" .. hex_string(4, upper) .. "-" .. hex_string(4, upper) .. "-"
    .. hex_string(4, upper) .. "-" .. hex_string(12, upper)
end

local ID_PIECES = { "/", "?", "#", "%", "..", ".", " ", "\t", "\0", "\r\n", "\\", "\127", "\128",
                    "\192\175", "\237\160\128", "\244\144\128\128", "\255", "é", "中", "😀", "a.b",
                    "%2e", "~", '"', "<>", "'", "&=+", ";", "@", ":", "-", "_", "x", "42", "\11", "\12" }
local THREAD = coroutine.create(function() end)

local function hostile_id()
  local r = random(20)
  if r == 1 then return pick { true, false, 0, 1.5, -1, huge, 0 / 0, 2 ^ 63, {}, { "a" }, print,
                                io.stdout, THREAD } end
  if r == 2 then return nil end
  if r <= 6 then
    local g = guid(chance(0.3))
    if chance(0.5) then return g end
    local m = random(8)
    if m == 1 then return g:sub(2) end
    if m == 2 then return g .. pick { "a", "\n", "\0", "-" } end
    if m == 3 then return g:upper() end
    if m == 4 then local i = random(36); return g:sub(1, i - 1) .. pick { "g", "-", "\0", " ", "é" } .. g:sub(i + 1) end
    if m == 5 then return g:gsub("-", "") end
    if m == 6 then return "{" .. g .. "}" end
    return g:sub(1, 35) .. "0"
  end
  if r <= 9 then return random_bytes(random(1, 24), "abcdefABCDEF0123456789-_") end
  if r <= 11 then -- lengths around the 128-byte limit, ASCII or ending in a 2-byte character
    local n = pick { 127, 128, 129, 126, 200 }
    if chance(0.5) then return rep("a", n) end
    return rep("a", n - 2) .. "é"
  end
  if r <= 18 then
    local parts = {}
    for i = 1, random(1, 4) do
      parts[i] = chance(0.5) and pick(ID_PIECES) or random_bytes(random(1, 5), "abcXYZ019")
    end
    return concat(parts)
  end
  return random_bytes(random(0, 12))
end

local QUERY_KEYS = { "page", "per_page", "a", "b", "", "a b", "é", "\0", "a\0b", "a\0", "&", "=", "+",
                     "%", "Z", "~k", "key.with.dots" }
local function hostile_scalar()
  local r = random(14)
  if r <= 3 then return random_bytes(random(0, 10), chance(0.5) and JSONISH or nil) end
  if r <= 5 then return random(-1000, 1000) end
  if r == 6 then return pick { 0.5, -0.0, 0.0, 1e300, -1e-300, 2 ^ 53, 2 ^ 53 - 1, -2 ^ 53, -(2 ^ 53 - 1),
                               2 ^ 63, 1e15, 3.0, 0.1 } end
  if r == 7 then return pick { 0 / 0, huge, -huge } end
  if r == 8 then return math.maxinteger or 2 ^ 62 end
  if r == 9 then return math.mininteger or -2 ^ 62 end
  if r == 10 then return chance(0.5) end
  if r == 11 then return print end
  if r == 12 then return io.stdout end
  if r == 13 then return random_bytes(256) end
  return pick(ID_PIECES)
end

local function hostile_value()
  local r = random(10)
  if r <= 6 then return hostile_scalar() end
  if r == 7 then return {} end
  if r == 8 then return { a = 1 } end
  local t = {}
  for i = 1, random(1, 5) do
    if chance(0.85) then
      local v = hostile_scalar()
      if type(v) == "function" or type(v) == "userdata" then v = "f" end
      t[i] = v
    else
      t[i] = pick { {}, { 1 }, print }
    end
  end
  if chance(0.15) then t[#t + 2] = "after a hole" end
  return t
end

local function hostile_query()
  local r = random(12)
  if r == 1 then return nil end
  if r == 2 then return pick { 42, true, print } end
  if r == 3 then
    return pick { "?a=b", "?a=b&c=d", "", "?q=\r\nX-Evil: 1", "? space", "?\0", "?é", "?\127",
                  "#frag", random_bytes(random(0, 12)) }
  end
  local q = {}
  local n = chance(0.1) and random(30, 80) or random(0, 5)
  for _ = 1, n do
    local k = chance(0.7) and pick(QUERY_KEYS) or random_bytes(random(0, 6), chance(0.5) and JSONISH or nil)
    q[k] = hostile_value()
  end
  if chance(0.08) then q[pick { 1, 2.5, true }] = "non-string key" end
  if chance(0.03) then q[{}] = "table key" end
  if chance(0.05) then
    setmetatable(q, { __index = function() error("the query's __index must not run") end })
  end
  return q
end

local function hostile_base()
  local r = random(10)
  if r <= 6 then return pick { "https://api.example.com", "http://127.0.0.1:1", "", "https://h/x/" } end
  if r == 7 then return random_bytes(random(0, 20)) end
  if r == 8 then return pick { 123, 1.5 } end -- numbers: luaL_checklstring takes them
  if r == 9 then return pick { nil, true, {}, print } end -- bad_url: not a string
  return "https://h" .. pick(ID_PIECES)
end

-- The query string crm.http.query wrote, refusing what the core refuses; nil for a refusal.
local function want_query(q)
  local tq = type(q)
  if tq == "string" then
    -- A pre-built query string goes out as it is, but only as printable ASCII.
    if q:find("[^\33-\126]") then return nil end
    return q
  end
  if tq ~= "table" then return "" end
  local keys = {}
  for k in next, q do
    if type(k) ~= "string" then return nil end
    keys[#keys + 1] = k
  end
  sort(keys)
  local out = {}
  for i, k in ipairs(keys) do
    local v = rawget(q, k)
    local tv, text = type(v), nil
    if tv == "string" then
      text = v
    elseif tv == "boolean" then
      text = tostring(v)
    elseif tv == "number" then
      if v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then text = format("%d", v) else text = tostring(v) end
    elseif tv == "table" then
      local items = {}
      local j = 1
      while rawget(v, j) ~= nil do
        local x = rawget(v, j)
        local tx = type(x)
        if tx ~= "string" and tx ~= "number" and tx ~= "boolean" then return nil end
        items[j] = tostring(x)
        j = j + 1
      end
      text = concat(items, ",")
    else
      return nil
    end
    out[i] = escape(k) .. "=" .. escape(text)
  end
  if #out == 0 then return "" end
  return "?" .. concat(out, "&")
end

-- What core.build must answer: nil, "bad_url" | false, field | method, url, fresh.
local function want_build(op, base, a1, a2, q)
  if type(base) ~= "string" and type(base) ~= "number" then return nil, "bad_url" end
  if type(base) == "string" and base:find("[%z\r\n ]") then return nil, "bad_url" end
  local ids = { a1, a2 }
  local path = op.path
  for i, slot in ipairs(op.slots) do
    local id = ids[i]
    local fine
    if op.toast then fine = validate.is_uuid(id) else fine = validate.id(id, slot) == nil end
    if not fine then return false, slot end
    path = path:gsub("{" .. slot .. "}", function() return escape(id) end, 1)
  end
  local qs = want_query(q)
  if qs == nil then return false, "query" end
  return op.method, tostring(base) .. path .. qs, op.method == "DELETE"
end

local function check_url(op, base, url, ids, input)
  local rest = url:sub(#tostring(base) + 1)
  local at = rest:find("[^\33-\126]")
  if at then fail("build", input, "a byte outside 0x21..0x7e after the base: " .. show(url)) end
  local path = rest:match("^[^?]*")
  -- the template's segments, with the ids decoded back
  local tsegs, usegs = {}, {}
  for seg in (op.path .. "/"):gmatch("([^/]*)/") do tsegs[#tsegs + 1] = seg end
  for seg in (path .. "/"):gmatch("([^/]*)/") do usegs[#usegs + 1] = seg end
  if #tsegs ~= #usegs then fail("build", input, "segments: " .. op.path .. " vs " .. show(path)) end
  local k = 0
  for i, t in ipairs(tsegs) do
    if t:find("^{") then
      k = k + 1
      if unescape(usegs[i]) ~= ids[k] then fail("build", input, "segment " .. i .. " does not decode to the id") end
    elseif t ~= usegs[i] then
      fail("build", input, "segment " .. i .. ": " .. show(usegs[i]) .. " for " .. t)
    end
  end
end

local function describe(op, base, a1, a2, q)
  local function d(v)
    if type(v) ~= "table" then return show(v) end
    local parts = {}
    for k, x in next, v do parts[#parts + 1] = "[" .. show(k) .. "]=" .. d(x) end
    return "{" .. concat(parts, ", ") .. (getmetatable(v) and "} (with a metatable)" or "}")
  end
  return format("core.build(%d %s, %s, %s, %s, %s)", op.num, op.name, d(base), d(a1), d(a2), d(q))
end

local handle = assert(core.new { timeout = 0.5, connect_timeout = 0.5 })
local multi = assert(core.multi { size = 2, timeout = 0.5, connect_timeout = 0.5 })
local hset = assert(core.header_set({ "Accept: application/json" },
  { "Accept: application/json", "Content-Type: application/json" }))
local closed_set = assert(core.header_set({}, {}))
closed_set:close()
closed_set:close()
local closed_handle = assert(core.new {})
closed_handle:close()
closed_handle:close()

local SEND_EVERY = 25 -- one accepted call in this many goes to 127.0.0.1:1

local function check_err(r1, r2, input, what)
  if r1 ~= nil or type(r2) ~= "table" or type(r2.kind) ~= "string" or type(r2.name) ~= "string"
    or type(r2.message) ~= "string" then
    fail(what, input, "want nil, {kind, name, message}; got " .. show(r1) .. ", " .. show(r2))
  end
end

local function fuzz_build()
  local op = pick(OPS)
  local base, a1, a2, q = hostile_base(), hostile_id(), hostile_id(), hostile_query()
  if chance(0.3) and #op.slots > 0 then a1 = op.toast and guid() or random_bytes(random(1, 10), "abc123-_") end
  local input = describe(op, base, a1, a2, q)
  stats.builds = stats.builds + 1
  local w1, w2, w3 = want_build(op, base, a1, a2, q)
  local ok, m, url, fresh = pcall(core.build, op.num, base, a1, a2, q)
  if not ok then fail("build raised", input, tostring(m)) end
  if w1 == nil then
    if m ~= nil or type(url) ~= "table" or url.name ~= w2 or url.kind ~= "validation" then
      fail("build", input, "want nil, " .. w2 .. "; got " .. show(m) .. ", " .. show(url))
    end
    return
  end
  if w1 == false then
    if m ~= false or url ~= w2 then
      fail("build", input, format("want false, %q; got %s, %s", w2, show(m), show(url)))
    end
  else
    if m ~= w1 or url ~= w2 or fresh ~= w3 then
      fail("build", input, format("want %s %s %s; got %s %s %s", show(w1), show(w2), tostring(w3),
        show(m), show(url), tostring(fresh)))
    end
    stats.accepted = stats.accepted + 1
    if type(q) ~= "string" then check_url(op, base, url, { a1, a2 }, input) end
  end

  -- h:call and m:submit_call: the same refusals, before anything is sent
  if type(base) ~= "string" then return end
  local cbase = chance(0.5) and "http://127.0.0.1:1"
    or pick { "http://127.0.0.1:1/p", "http://127.0.0.1:1/\r\n", "http://127.0.0.1:1/ sp",
              "http://127.0.0.1:1/\0", "http://127.0.0.1:1/\255", "http://127.0.0.1:1/%" }
  local body = chance(0.3) and '{"a":1}' or nil
  if w1 == false then
    stats.calls = stats.calls + 1
    local cok, r1, r2 = pcall(handle.call, handle, cbase, hset, op.num, a1, a2, q, body, 0.5, chance(0.5))
    if not cok then fail("h:call raised", input, tostring(r1)) end
    if r1 ~= false or r2 ~= w2 then fail("h:call", input, format("want false, %q; got %s, %s", w2, show(r1), show(r2))) end
    cok, r1, r2 = pcall(multi.submit_call, multi, cbase, hset, op.num, a1, a2, q, body, 0.5, false)
    if not cok then fail("m:submit_call raised", input, tostring(r1)) end
    if r1 ~= false or r2 ~= w2 then fail("m:submit_call", input, format("want false, %q; got %s, %s", w2, show(r1), show(r2))) end
    -- a closed header set or handle is refused first
    r1, r2 = handle:call(cbase, closed_set, op.num, a1, a2, q, body)
    check_err(r1, r2, input, "h:call with a closed set")
    r1, r2 = closed_handle:call(cbase, hset, op.num, a1, a2, q, body)
    check_err(r1, r2, input, "a closed handle's call")
  elseif stats.accepted % SEND_EVERY == 0 then
    stats.calls, stats.sent = stats.calls + 1, stats.sent + 1
    local cok, r1, r2 = pcall(handle.call, handle, cbase, hset, op.num, a1, a2, q, body, 0.5, chance(0.5))
    if not cok then fail("h:call raised", input, tostring(r1)) end
    if type(r1) ~= "number" then check_err(r1, r2, input, "h:call to 127.0.0.1:1") end
    local bad = cbase:find("[%z\r\n ]")
    if bad and (type(r2) ~= "table" or r2.name ~= "bad_url") then
      fail("h:call", input, "a base with a control character or space must give bad_url, got " .. show(r2 and r2.name))
    end
  end
end

-- A bad op argument: core.build answers nil, bad_op; h:call raises (a bug of crm's own code).
local function fuzz_bad_op()
  local bads = { 0, #OPS + 1, -1, 1.5, 0 / 0, huge, "1", true, {}, 2 ^ 31, 2 ^ 53 }
  for i = 1, #bads + 1 do
    local bad = bads[i] -- and nil last
    local ok, m, err = pcall(core.build, bad, "https://h", guid(), "x", nil)
    if not ok or m ~= nil or type(err) ~= "table" or err.name ~= "bad_op" then
      fail("build", tostring(bad), "a bad op must give nil, bad_op; got " .. show(m) .. ", " .. show(err))
    end
    ok = pcall(handle.call, handle, "http://127.0.0.1:1", hset, bad, guid())
    if ok then fail("h:call", tostring(bad), "a bad op must raise") end
  end
end

-- ---------------------------------------------------------------------------------------------
-- header sets
-- ---------------------------------------------------------------------------------------------

local function hostile_line()
  local r = random(12)
  if r <= 4 then return "X-" .. random_bytes(random(1, 8), "abcXYZ-") .. ": " .. random_bytes(random(0, 20), "abc 123;=,") end
  if r == 5 then return pick { "", ":", "Accept:", " : ", rep("a", 10000), "\1\2\t", "\127" } end
  if r == 6 then return "X: " .. pick { "\r", "\n", "\r\n", "\0", "\128", "é", "\255" } .. "v" end
  if r == 7 then return pick { 42, 1.5, true, {}, print, io.stdout } end
  return random_bytes(random(0, 12), chance(0.5) and nil or "abc: \r\n\0\128")
end

-- The Lua rule of core.header_set for one array: true when every line (up to the first nil) is
-- a string without CR, LF, NUL or a byte >= 0x80.
local function lines_fine(t)
  local i = 1
  while t[i] ~= nil do
    local v = t[i]
    if type(v) ~= "string" or v:find("[%z\r\n\128-\255]") then return false end
    i = i + 1
  end
  return true
end

local function fuzz_header_set()
  stats.header_sets = stats.header_sets + 1
  local function lines()
    local t = {}
    for i = 1, random(0, 5) do t[i] = hostile_line() end
    if chance(0.1) then t[#t + 2] = "\r\nafter a hole" end
    if chance(0.1) then t.name = "\r\n" end
    return t
  end
  local a, b = lines(), lines()
  if chance(0.03) then
    local x = ({ "Accept: x", 42 })[random(0, 2)] -- nil for 0
    if chance(0.5) then a = x else b = x end
    local ok = pcall(core.header_set, a, b)
    if ok then fail("header_set", show(a) .. " " .. show(b), "a non-table argument must raise") end
    return
  end
  local ok, hs, err = pcall(core.header_set, a, b)
  if not ok then fail("header_set raised", nil, tostring(hs)) end
  local want = lines_fine(a) and lines_fine(b)
  if want then
    if type(hs) ~= "userdata" then fail("header_set", nil, "want a set; got " .. show(hs) .. ", " .. show(err)) end
    if chance(0.2) then
      local r1, r2 = handle:call("http://127.0.0.1:1/\r\n", hs, pick(OPS).num, guid(), "x")
      if r1 == false then -- an id the op refused: fine as well
        if type(r2) ~= "string" then fail("h:call", nil, "false without a field") end
      else
        check_err(r1, r2, nil, "h:call with a fresh set")
      end
    end
    local n = random(0, 2)
    for _ = 1, n do hs:close() end
    if n > 0 then
      local r1, r2 = handle:call("http://127.0.0.1:1", hs, OPS[2].num, guid())
      check_err(r1, r2, nil, "h:call with a closed set")
      if r2.name ~= "closed" then fail("h:call", nil, "a closed set: " .. show(r2.name)) end
    end
  else
    if hs ~= nil or type(err) ~= "table" or err.kind ~= "validation" or err.name ~= "bad_header" then
      fail("header_set", nil, "want nil, bad_header; got " .. show(hs) .. ", " .. show(err and err.name))
    end
  end
end

-- ---------------------------------------------------------------------------------------------
-- the loop
-- ---------------------------------------------------------------------------------------------

local started = os.clock()
fuzz_decode_fixed()
fuzz_bad_op()
for i = 1, ITERS do
  iteration = i
  fuzz_decode()
  fuzz_build()
  if i % 4 == 0 then fuzz_header_set() end
  if i % 5000 == 0 then fuzz_decode_fixed() end
end
handle:close()
handle:close()
multi:close()
multi:close()
hset:close()
hset:close()
collectgarbage()

print(format("fuzz_lua: %d iterations, FUZZ_SEED=%d, %s: %d texts decoded (%d generated trees, %d"
  .. " values, %d out of range), %d builds (%d accepted), %d calls (%d sent to 127.0.0.1:1), %d"
  .. " header sets, %.1f s CPU: OK", ITERS, SEED, jit and jit.version or _VERSION, stats.texts, stats.generated,
  stats.valid, stats.refused_range, stats.builds, stats.accepted, stats.calls, stats.sent,
  stats.header_sets, os.clock() - started))
