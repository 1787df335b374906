--[[ The Lua-driven fuzz loop for the command line's CSV reader (crm.cli.input: parse_csv and
  rows), part of `make fuzz` (and `make fuzz-lua`).

    FUZZ_SEED=N    the random seed (default 1): the same seed replays the same inputs
    FUZZ_ITERS=N   iterations (default 20000)

  Every iteration:
  - round trip: random records of random cells (quotes, commas, CR, LF, CRLF, spaces, tabs, NUL,
    bytes past ASCII, a byte order mark's bytes) written per RFC 4180 (a cell quoted when it
    must be, or at random), joined by LF or CRLF, read back: the same records, cell for cell;
  - without quotes: hostile text with no double quote reads as the plain split (records at LF,
    cells at commas, the CR of a CRLF dropped);
  - hostile text (random bytes from a CSV-heavy alphabet, or a written text with bytes flipped):
    parse_csv never raises, every record has cells (strings) or is the last one and unclosed,
    and the lines records start on rise; every 50th text also goes through rows() from a file.
  The first failure stops the loop with the iteration, the seed and the input. ]]

local input = require "crm.cli.input"

local SEED = tonumber(os.getenv("FUZZ_SEED") or "") or 1
local ITERS = tonumber(os.getenv("FUZZ_ITERS") or "") or 20000
math.randomseed(SEED)
local random = math.random
local concat, format = table.concat, string.format

local iteration = 0
local stats = { round_trips = 0, plain = 0, hostile = 0, files = 0 }

local function fail(what, text, detail)
  io.stderr:write(format("fuzz_csv: FAILED at iteration %d (FUZZ_SEED=%d): %s\n  input: %q\n  %s\n",
    iteration, SEED, what, text, detail or ""))
  os.exit(1)
end

local PIECES = { "a", "Z", "0", " ", "\t", ",", '"', '""', "\n", "\r", "\r\n", "\0", "é", "\255",
                 "\239\187\191", "x y", "Maria", "" }
local function cell()
  local parts = {}
  for k = 1, random(0, 8) do parts[k] = PIECES[random(#PIECES)] end
  return concat(parts)
end

-- One record per RFC 4180: quoted when it must be (a quote, comma, CR or LF, a leading space or
-- tab, or the only cell of its record and empty), or when `all`.
local function encode(record, all)
  local out = {}
  for i, c in ipairs(record) do
    if all or random() < 0.1 or c:find('[",\r\n]') or c:find("^[ \t]") or (#record == 1 and c == "") then
      c = '"' .. c:gsub('"', '""') .. '"'
    end
    out[i] = c
  end
  return concat(out, ",")
end

local function same(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do
    local x, y = a[i], b[i]
    if type(x) ~= "table" or type(y) ~= "table" or #x ~= #y then return false end
    for k = 1, #x do
      if x[k] ~= y[k] then return false end
    end
  end
  return true
end

local function cells_of(records)
  local out = {}
  for i, r in ipairs(records) do out[i] = r.cells or "unclosed" end
  return out
end

local function show(records)
  local out = {}
  for i, r in ipairs(records) do
    if type(r) ~= "table" then
      out[i] = tostring(r)
    else
      local cs = {}
      for k, c in ipairs(r) do cs[k] = format("%q", c) end
      out[i] = "{" .. concat(cs, ", ") .. "}"
    end
  end
  return concat(out, " ")
end

local function parse(text)
  local ok, records = pcall(input.parse_csv, text)
  if not ok then fail("parse_csv raised", text, tostring(records)) end
  return records
end

local function round_trip()
  local records = {}
  for r = 1, random(1, 5) do
    local rec = {}
    for c = 1, random(1, 5) do rec[c] = cell() end
    records[r] = rec
  end
  local lines, all = {}, random() < 0.2
  for r, rec in ipairs(records) do lines[r] = encode(rec, all) end
  local text = concat(lines, random() < 0.5 and "\n" or "\r\n")
  if random() < 0.3 then text = text .. (random() < 0.5 and "\n" or "\r\n") end
  local got = cells_of(parse(text))
  if not same(records, got) then fail("round trip", text, "want " .. show(records) .. "\n  got  " .. show(got)) end
  stats.round_trips = stats.round_trips + 1
  return text
end

local PLAIN = { "a", "b", " ", ",", "\n", "\r", "\r\n", "\t", "é", "\0" }
local function plain()
  local parts = {}
  for k = 1, random(0, 30) do parts[k] = PLAIN[random(#PLAIN)] end
  local text = concat(parts)
  -- the oracle: records at LF (a last LF ends the last record), cells at commas, a CR before
  -- the LF dropped
  local want = {}
  local body = text:sub(-1) == "\n" and text:sub(1, -2) or text
  if text ~= "" then
    for l in (body .. "\n"):gmatch("([^\n]*)\n") do
      local rec = {}
      for c in (l .. ","):gmatch("([^,]*),") do rec[#rec + 1] = c end
      rec[#rec] = rec[#rec]:gsub("\r$", "")
      want[#want + 1] = rec
    end
  end
  local got = cells_of(parse(text))
  if not same(want, got) then fail("plain split", text, "want " .. show(want) .. "\n  got  " .. show(got)) end
  stats.plain = stats.plain + 1
end

local HOSTILE = { '"', ",", "\n", "\r", "a", " ", '""', "\r\n", "\0" }
local function hostile(seed_text)
  local text
  if seed_text and random() < 0.5 then
    local bytes = { seed_text:byte(1, -1) }
    for _ = 1, random(1, 3) do
      if #bytes > 0 then bytes[random(#bytes)] = (HOSTILE[random(#HOSTILE)]):byte(1) or 0 end
    end
    text = string.char(unpack and unpack(bytes) or table.unpack(bytes)) -- luacheck: ignore 143
  else
    local parts = {}
    for k = 1, random(0, 40) do parts[k] = HOSTILE[random(#HOSTILE)] end
    text = concat(parts)
  end
  local records = parse(text)
  local last = 0
  for i, r in ipairs(records) do
    if type(r.line) ~= "number" or r.line <= last then
      fail("lines", text, "record " .. i .. " line " .. tostring(r.line))
    end
    last = r.line
    if r.unclosed then
      if i ~= #records then fail("unclosed", text, "an unclosed record that is not the last") end
    else
      for _, c in ipairs(r.cells) do
        if type(c) ~= "string" then fail("cells", text, "a cell that is not a string") end
      end
    end
  end
  stats.hostile = stats.hostile + 1
  if iteration % 50 == 0 then
    local path = os.tmpname() .. ".csv"
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
    local ok, rows = pcall(input.rows, path)
    os.remove(path)
    if not ok or type(rows) ~= "table" then fail("rows", text, tostring(rows)) end
    stats.files = stats.files + 1
  end
end

local started = os.clock()
for i = 1, ITERS do
  iteration = i
  local text = round_trip()
  plain()
  hostile(text)
end
print(format("fuzz_csv: %d iterations, FUZZ_SEED=%d, %s: %d round trips, %d plain splits, %d hostile"
  .. " texts (%d through rows), %.1f s CPU: OK", ITERS, SEED, rawget(_G, "jit") and jit.version or _VERSION,
  stats.round_trips, stats.plain, stats.hostile, stats.files, os.clock() - started))
