-- The child of the crash chaos (spec/chaos_crash.lua): a keyed import, as a cron job would run
-- it (in Lua, or with plan.cli through the command line). Usage: chaos_crash_child.lua PLAN.json
-- DONE_FILE
-- Toast customers (create_customer with an idempotency key) and TableCheck guests
-- (find_or_create) first, then the Toast credits (add_credit with a key), each phase through
-- client:batch. Nothing is remembered between runs: the keys alone make a rerun exact. Writes
-- DONE_FILE when every row succeeded; exits 1 otherwise (the parent runs it again).
local crm = require "crm"

local plan_path, done_path = arg[1], arg[2]
local f = assert(io.open(plan_path, "rb"))
local plan = assert(crm.json.decode(f:read("a")))
f:close()

local retry = { max_attempts = 4, base_delay = 0.01, max_delay = 0.05, deadline = 5 }
local toast = assert(crm.toast { base_url = plan.base_url, restaurant_guid = plan.restaurant,
                                 client_id = plan.client_id, client_secret = plan.client_secret,
                                 timeout = 5, retry = retry })
local tc = assert(crm.tablecheck { base_url = plan.tablecheck_url, api_key = plan.tablecheck_key,
                                   timeout = 5, retry = retry })

local failed = 0
local function run(client, ops)
  local results = assert(client:batch(ops, { concurrency = 8 }))
  for _, r in ipairs(results) do
    if not r.value then
      failed = failed + 1
      io.stderr:write("row failed: ", tostring(r.err), "\n")
    end
  end
end

-- plan.unkeyed: the import as it was written before keys (a self-check of the parent's counts:
-- reruns then duplicate): no keys, and TableCheck's bare create_customer.
local unkeyed = plan.unkeyed
local function key(row) return not unkeyed and { idempotency_key = row.key } or nil end
local emails = {}
for _, row in ipairs(plan.rows) do
  if row.kind == "toast_customer" then emails[row.key] = row.email end
end
local function customer_of(row)
  if not unkeyed then return assert(toast:get_idempotency_guid("create_customer", row.customer_key)) end
  local found, err = toast:search_customers { email = emails[row.customer_key] }
  if not found then return nil, err end
  if not found[1] then return nil, require("crm.error").new("http", "no customer yet", { status = 404 }) end
  return found[1].guid
end

local toast_first, tc_first, credits = {}, {}, {}
for _, row in ipairs(plan.rows) do
  if row.kind == "toast_customer" then
    toast_first[#toast_first + 1] = function()
      return toast:create_customer({ firstName = row.firstName, lastName = row.lastName, email = row.email },
        key(row))
    end
  elseif row.kind == "tc_customer" then
    tc_first[#tc_first + 1] = function()
      local body = { franchise_id = plan.franchise_id, first_name = row.firstName,
                     last_name = row.lastName, emails = { row.email } }
      if unkeyed then return tc:create_customer(body) end
      local c, err = tc:find_or_create(body)
      return c, err
    end
  else
    credits[#credits + 1] = function()
      local customer, err = customer_of(row)
      if not customer then return nil, err end
      return toast:add_credit(customer, { amount = row.amount, note = row.note,
                                          localCreatedDate = plan.date }, key(row))
    end
  end
end
-- plan.cli: the Toast rows go through the command line instead (`crm toast customers create
-- --input`, `crm toast credit add --input`, keys in the idempotency_key column); the parent kills
-- the whole process group, so a crm process in flight dies too.
local function crm_import(args)
  local ok = os.execute(plan.cli.lua .. " bin/crm --sim " .. args .. " >/dev/null")
  if ok ~= true and ok ~= 0 then
    failed = failed + 1
    io.stderr:write("crm ", args, " failed\n")
  end
end

if plan.cli then
  crm_import("toast customers create --input " .. plan.cli.customers)
  run(tc, tc_first)
  crm_import("toast credit add --input " .. plan.cli.credits)
else
  run(toast, toast_first)
  run(tc, tc_first)
  run(toast, credits)
end
toast:close()
tc:close()
if failed > 0 then os.exit(1, true) end
local d = assert(io.open(done_path, "wb"))
d:write("done\n")
d:close()
os.exit(0, true)
