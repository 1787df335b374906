-- Imports guests from a CSV file into Toast CRM, 16 at a time: each row is find_or_create'd, so
-- running the import twice creates nobody twice, and a guest the file lists several times (in
-- any spelling of the email's case or the phone's format) is created once: concurrent
-- find_or_creates for one guest take turns on its email and phone. The CSV has a header row
-- naming the columns firstName, lastName, email, phone (any order; simple quoting with "..." is
-- understood; spaces around a value are dropped).
--   lua examples/toast_import_csv.lua guests.csv
-- Runs against the local simulator unless CRM_TOAST_URL (and credentials) say otherwise;
-- CRM_TOAST_COUNTRY is the country of national phone numbers (default "1").
local crm = require "crm"

local path = arg[1]
if not path then
  io.stderr:write("usage: toast_import_csv.lua FILE.csv\n")
  os.exit(2)
end

-- One CSV line into fields: commas separate, "..." quotes, "" inside quotes is a quote.
local function split_csv(line)
  local fields, i, n = {}, 1, #line
  while i <= n + 1 do
    if line:sub(i, i) == '"' then
      local value, j = {}, i + 1
      while j <= n do
        local c = line:sub(j, j)
        if c == '"' and line:sub(j + 1, j + 1) == '"' then
          value[#value + 1], j = '"', j + 2
        elseif c == '"' then
          break
        else
          value[#value + 1], j = c, j + 1
        end
      end
      fields[#fields + 1] = table.concat(value)
      i = (line:find(",", j, true) or n + 1) + 1
    else
      local comma = line:find(",", i, true) or n + 1
      fields[#fields + 1] = line:sub(i, comma - 1)
      i = comma + 1
    end
  end
  return fields
end

local f = assert(io.open(path))
local header = split_csv((f:read("l") or ""):gsub("\r$", ""))
local rows = {}
for line in f:lines() do
  line = line:gsub("\r$", "")
  if line:find("%S") then
    local values, row = split_csv(line), {}
    for k, name in ipairs(header) do
      local v = values[k] and values[k]:gsub("^%s+", ""):gsub("%s+$", "")
      if v and v ~= "" then row[name:gsub("^%s+", ""):gsub("%s+$", "")] = v end
    end
    rows[#rows + 1] = row
  end
end
f:close()

local port = os.getenv("CRM_SIM_PORT") or "18080"
local client = assert(crm.toast {
  base_url = os.getenv("CRM_TOAST_URL") or ("http://127.0.0.1:" .. port),
  restaurant_guid = os.getenv("CRM_TOAST_RESTAURANT") or "6f1d2d0e-8f65-4d7b-9b59-0f1f0c8e0a11",
  client_id = os.getenv("CRM_TOAST_CLIENT_ID") or "sim-client",
  client_secret = os.getenv("CRM_TOAST_CLIENT_SECRET") or "sim-secret",
  default_country_code = os.getenv("CRM_TOAST_COUNTRY"),
})

local ops = {}
for i, row in ipairs(rows) do
  ops[i] = function(c) return c:find_or_create(row) end
end
local results, err = client:batch(ops, { concurrency = 16 })
if not results then
  io.stderr:write("import failed: ", tostring(err), "\n")
  os.exit(1)
end
local counts = { created = 0, found = 0 }
for i, r in ipairs(results) do
  if r.value then
    counts[r.extra] = counts[r.extra] + 1
  else
    -- Row numbers and the error, never the row's email or phone (tostring(err) redacts them).
    io.stderr:write(("row %d: %s\n"):format(i + 1, tostring(r.err)))
  end
end
print(("imported %d rows: %d created, %d found, %d failed"):format(#rows, counts.created, counts.found,
  results.failed))
client:close()
os.exit(results.failed == 0 and 0 or 1)
