-- What the command line reads: --data bodies (JSON, @file, - for stdin) and --input files (CSV
-- with a header row of the API's field names, or JSON Lines).
local crm = require "crm"
local output = require "crm.cli.output"

local M = {}

local json = crm.json

local function read_all(path)
  if path == "-" then return io.stdin:read("*a") end
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

-- data(text) -> a decoded JSON object | nil, err. "@file" reads a file, "-" stdin. The error
-- names the option, the decoder's message and its byte offset: never the text (customer data).
function M.data(text, what)
  what = what or "--data"
  local src = text
  if text == "-" or text:sub(1, 1) == "@" then
    local err
    src, err = read_all(text == "-" and "-" or text:sub(2))
    if not src then return nil, output.usage_error(what .. ": " .. tostring(err), what) end
  end
  local v, derr = json.decode(src)
  if derr then
    -- The decoder's words and the byte it stopped at (err.position); never the text itself.
    local pos = tonumber(derr.position)
    return nil, output.usage_error(what .. " is not valid JSON: " .. tostring(derr.message)
      .. (pos and (" at byte " .. ("%d"):format(pos)) or ""), what)
  end
  if type(v) ~= "table" or json.is_array(v) then
    local got = ({ table = "an array", string = "a string", number = "a number", boolean = "a boolean" })[type(v)]
      or "null"
    return nil, output.usage_error(what .. " must be one JSON object, not " .. got, what)
  end
  return v
end

-- ---- CSV (RFC 4180) ----
-- Records end at LF or CRLF; cells are separated by commas; a cell that starts with a double
-- quote (after spaces or tabs) runs to the next lone quote, and may hold commas, line breaks and
-- doubled quotes ("" is one "). Text after a closing quote up to the next comma is kept as it
-- is (lenient, as spreadsheets write it). The whole text is read as one stream: a line break
-- inside a quoted cell belongs to the cell, never ends the record.

-- parse_csv(text) -> records: {{line = n, cells = {...}}, ...}; line is where the record
-- starts. A quoted cell that is never closed ends the text with {line = n, unclosed = true}.
local find, sub = string.find, string.sub
function M.parse_csv(text)
  local records, pos, line, n = {}, 1, 1, #text
  while pos <= n do
    local cells, rec_line = {}, line
    while true do
      local cell, stop, after -- after: the position just past a quoted cell's closing quote
      local q = find(text, '^[ \t]*"', pos)
      if q then
        local buf, p = {}, find(text, '"', pos, true) + 1
        while true do
          local close = find(text, '"', p, true)
          if not close then
            records[#records + 1] = { line = rec_line, unclosed = true }
            return records
          end
          local chunk = sub(text, p, close - 1)
          buf[#buf + 1] = chunk
          for _ in chunk:gmatch("\n") do line = line + 1 end
          if sub(text, close + 1, close + 1) == '"' then
            buf[#buf + 1] = '"'
            p = close + 2
          else
            p = close + 1
            break
          end
        end
        stop, after = find(text, "[,\n]", p) or n + 1, p
        cell = table.concat(buf) .. sub(text, p, stop - 1)
      else
        stop = find(text, "[,\n]", pos) or n + 1
        cell = sub(text, pos, stop - 1)
      end
      local c = sub(text, stop, stop)
      -- the CR of a CRLF (or of the text's last line) is not part of the cell
      if c ~= "," and sub(cell, -1) == "\r" and (after == nil or stop > after) then cell = sub(cell, 1, -2) end
      cells[#cells + 1] = cell
      pos = stop + 1
      if c == "\n" then
        line = line + 1
        break
      end
      if c ~= "," then break end -- the end of the text
      if pos > n then -- a comma at the very end: one more, empty cell
        cells[#cells + 1] = ""
        break
      end
    end
    records[#records + 1] = { line = rec_line, cells = cells }
  end
  return records
end

-- The cells of one line (no line breaks inside): parse_csv's first record.
function M.split_csv(line)
  local r = M.parse_csv(line)[1]
  return r and r.cells or { "" }
end

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

local function blank(cells)
  for _, c in ipairs(cells) do
    if c:find("%S") then return false end
  end
  return true
end

-- csv_rows(text) -> rows as M.rows returns them: a header record of the API's field names, then
-- one row per record (blank records skipped); empty cells are left out.
local function csv_rows(text)
  local out, header = {}, nil
  for _, rec in ipairs(M.parse_csv(text)) do
    if rec.unclosed then
      out[#out + 1] = { line = rec.line, err = output.usage_error("line " .. rec.line .. ": a quoted"
        .. " cell is not closed (a \" without its closing \")", "input") }
      break
    end
    if not blank(rec.cells) then
      if not header then
        header = {}
        for k, name in ipairs(rec.cells) do header[k] = trim(name) end
      else
        local row = {}
        for k, v in ipairs(rec.cells) do
          v = trim(v)
          local name = header[k]
          if name and name ~= "" and v ~= "" then row[name] = v end
        end
        out[#out + 1] = { line = rec.line, row = row }
      end
    end
  end
  return out
end

-- rows(path) -> {{line = n, row = table} | {line = n, err = err}, ...} | nil, err
-- A .csv file (or one whose first line has no "{") is CSV (RFC 4180: quoted cells may hold
-- line breaks); otherwise JSON Lines. A row that cannot be read is kept as an error, so it
-- becomes a result line like any other failure.
function M.rows(path)
  local text, err = read_all(path)
  if not text then return nil, output.usage_error("--input: " .. tostring(err), "input") end
  text = text:gsub("^\239\187\191", "")  -- a UTF-8 byte order mark
  local lines = {}
  for l in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = (l:gsub("\r$", "")) end
  local first
  for i, l in ipairs(lines) do
    if l:find("%S") then first = i break end
  end
  local out = {}
  if not first then return out end
  local is_csv = path:lower():match("%.csv$") ~= nil
    or (not path:lower():match("%.jsonl?$") and not lines[first]:find("^%s*{"))
  if is_csv then return csv_rows(text) end
  for i = first, #lines do
    local l = lines[i]
    if l:find("%S") then
      local v = json.decode(l)
      if type(v) == "table" and not json.is_array(v) then
        out[#out + 1] = { line = i, row = v }
      else
        out[#out + 1] = { line = i, err = output.usage_error("line " .. i .. " is not one JSON object", "input") }
      end
    end
  end
  return out
end

return M
