-- Streams every TableCheck customer to JSON Lines: one customer per line, on stdout or into the
-- file named by the first argument. customer_search reads 200 at a time, so memory stays flat
-- however many customers there are.
--   lua examples/tablecheck_export.lua [customers.jsonl]
-- Runs against the local simulator unless CRM_TABLECHECK_URL and CRM_TABLECHECK_API_KEY say
-- otherwise.
local crm = require "crm"

local port = os.getenv("CRM_SIM_PORT") or "18080"
local client = assert(crm.tablecheck {
  base_url = os.getenv("CRM_TABLECHECK_URL") or ("http://127.0.0.1:" .. port .. "/api/crm/v1"),
  api_key = os.getenv("CRM_TABLECHECK_API_KEY") or "sim-tablecheck-key",
})

local out = io.stdout
if arg[1] then out = assert(io.open(arg[1], "w")) end

local it = client:iter_search_customers()
local n = 0
for customer, err in it do
  if customer == false then
    io.stderr:write("export stopped after ", n, " customers: ", tostring(err), "\n")
    os.exit(1)
  end
  -- Answers are decoded by crm.json, so an empty list the server sent ([]) is written back as [].
  out:write(assert(crm.json.encode(customer)), "\n")
  n = n + 1
  if n % 10000 == 0 then io.stderr:write(n, " of ", it.total or "?", " customers\n") end
end
if out ~= io.stdout then assert(out:close()) end
client:close()
io.stderr:write("exported ", n, " customers\n")
