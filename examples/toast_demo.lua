-- Creates, searches and credits a Toast customer, printing each step.
-- Runs against the local simulator unless CRM_TOAST_URL (and credentials) say otherwise.
local crm = require "crm"

local port = os.getenv("CRM_SIM_PORT") or "18080"
local client = assert(crm.toast {
  base_url = os.getenv("CRM_TOAST_URL") or ("http://127.0.0.1:" .. port),
  restaurant_guid = os.getenv("CRM_TOAST_RESTAURANT") or "6f1d2d0e-8f65-4d7b-9b59-0f1f0c8e0a11",
  client_id = os.getenv("CRM_TOAST_CLIENT_ID") or "sim-client",
  client_secret = os.getenv("CRM_TOAST_CLIENT_SECRET") or "sim-secret",
})

local function step(label, value, err)
  if value == nil then
    io.stderr:write(label, " failed: ", tostring(err), "\n")
    os.exit(1)
  end
  print(label)
  return value
end

local guest = { firstName = "Josephine", lastName = "Banton", email = "jbanton@example.org" }

-- Toast asks integrators to search before creating, so a guest is never duplicated.
local customer, ferr, how = client:find_or_create(guest)
step(("find_or_create: %s customer %s"):format(how or "?", customer and customer.guid), customer, ferr)

local again, err2, how2 = client:find_or_create(guest)
step(("find_or_create again: %s the same customer (%s)"):format(how2 or "?",
  tostring(again and again.guid == customer.guid)), again, err2)

local n = 0
for c, err in client:iter_search_customers { lastName = "Banton" } do
  if c == false then step("search", nil, err) end
  n = n + 1
end
print(("search lastName=Banton: %d customer(s)"):format(n))

local txn, err = client:add_credit(customer.guid, {
  amount = 10.00, localCreatedDate = crm.toast_time(), note = "welcome credit",
})
step(("add_credit: %.2f added, transaction %s"):format(txn and txn.amount or 0, txn and txn.guid), txn, err)

local summary
summary, err = client:get_credit_summary(customer.guid)
step(("get_credit_summary: %.2f available, earliest expiration %s"):format(
  summary and summary.amount or 0, summary and summary.earliestExpirationDate or "none"), summary, err)

local history = {}
for t, terr in client:iter_customer_credit_transactions(customer.guid) do
  if t == false then step("credit transactions", nil, terr) end
  history[#history + 1] = ("%s %.2f"):format(t.transactionType, t.amount)
end
print("credit transactions (newest first): " .. table.concat(history, ", "))
client:close()
