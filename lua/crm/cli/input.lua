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

-- One CSV line into fields: commas separate, "..." quotes, "" inside quotes is a quote.
local function split_csv(line)
  local fields, i, n = {}, 1, #line
  while i <= n + 1 do
    if line:sub(i, i) == '"' then
      local buf, j = {}, i + 1
      while j <= n do
        local c = line:sub(j, j)
        if c == '"' then
          if line:sub(j + 1, j + 1) == '"' then
            buf[#buf + 1] = '"'
            j = j + 2
          else
            break
          end
        else
          buf[#buf + 1] = c
          j = j + 1
        end
      end
      fields[#fields + 1] = table.concat(buf)
      local comma = line:find(",", j + 1, true)
      i = (comma or n + 1) + 1
    else
      local comma = line:find(",", i, true) or n + 1
      fields[#fields + 1] = line:sub(i, comma - 1)
      i = comma + 1
    end
  end
  return fields
end
M.split_csv = split_csv

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

-- rows(path) -> {{line = n, row = table} | {line = n, err = err}, ...} | nil, err
-- A .csv file (or one whose first line has no "{") is CSV; otherwise JSON Lines. A row that
-- cannot be read is kept as an error, so it becomes a result line like any other failure.
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
  if is_csv then
    local header = split_csv(lines[first])
    for k, name in ipairs(header) do header[k] = trim(name) end
    for i = first + 1, #lines do
      local l = lines[i]
      if l:find("%S") then
        local row = {}
        for k, v in ipairs(split_csv(l)) do
          v = trim(v)
          local name = header[k]
          if name and name ~= "" and v ~= "" then row[name] = v end
        end
        out[#out + 1] = { line = i, row = row }
      end
    end
  else
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
  end
  return out
end

return M
