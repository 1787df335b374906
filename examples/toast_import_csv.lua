-- Imports guests from a CSV file into Toast CRM, 16 at a time: each row is find_or_create'd, so
-- running the import twice creates nobody twice, and a guest the file lists several times (in
-- any spelling of the email's case or the phone's format) is created once: concurrent
-- find_or_creates for one guest take turns on its email and phone. The CSV has a header row
-- naming the columns firstName, lastName, email, phone (any order; quoted cells per RFC 4180,
-- line breaks inside them included; spaces around a value are dropped).
--   lua examples/toast_import_csv.lua guests.csv
-- Runs against the local simulator unless CRM_TOAST_URL (and credentials) say otherwise;
-- CRM_TOAST_COUNTRY is the country of national phone numbers (default "1").
local crm = require "crm"

local path = arg[1]
if not path then
  io.stderr:write("usage: toast_import_csv.lua FILE.csv\n")
  os.exit(2)
end

-- The rows, read by crm's own CSV reader (the one `crm ... --input` uses: RFC 4180, so a quoted
-- cell may hold commas, doubled quotes and line breaks; a byte order mark is skipped). A row
-- that cannot be read becomes a failed result below, like any other failure.
local read, rerr = require("crm.cli.input").rows(path)
if not read then
  io.stderr:write("cannot read ", path, ": ", tostring(rerr), "\n")
  os.exit(2)
end
local rows, lines = {}, {}
for _, r in ipairs(read) do
  local row = r.row
  if row then
    for k, v in pairs(row) do
      if type(v) == "string" then
        v = v:gsub("^%s+", ""):gsub("%s+$", "")
        row[k] = v ~= "" and v or nil
      end
    end
  end
  rows[#rows + 1], lines[#lines + 1] = r, r.line
end

local port = os.getenv("CRM_SIM_PORT") or "18080"
local client = assert(crm.toast {
  base_url = os.getenv("CRM_TOAST_URL") or ("http://127.0.0.1:" .. port),
  restaurant_guid = os.getenv("CRM_TOAST_RESTAURANT") or "6f1d2d0e-8f65-4d7b-9b59-0f1f0c8e0a11",
  client_id = os.getenv("CRM_TOAST_CLIENT_ID") or "sim-client",
  client_secret = os.getenv("CRM_TOAST_CLIENT_SECRET") or "sim-secret",
  default_country_code = os.getenv("CRM_TOAST_COUNTRY"),
})

local ops = {}
for i, r in ipairs(rows) do
  ops[i] = function(c)
    if r.err then return nil, r.err end
    return c:find_or_create(r.row)
  end
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
    -- Line numbers and the error, never the row's email or phone (tostring(err) redacts them).
    io.stderr:write(("line %d: %s\n"):format(lines[i], tostring(r.err)))
  end
end
print(("imported %d rows: %d created, %d found, %d failed"):format(#rows, counts.created, counts.found,
  results.failed))
client:close()
os.exit(results.failed == 0 and 0 or 1)
