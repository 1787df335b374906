-- The command line's idempotency keys: --idempotency-key, the key column of --input imports
-- (credit add, customers create, find-or-create), reruns that add nothing, and exit code 8.
local crm = require "crm"
local H = require "helper"

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir .. "/config"))

local function write(name, text)
  local path = dir .. "/" .. name
  H.spit(path, text)
  return path
end

-- bin/crm --sim ARGS -> {code, out = {decoded lines}, err = stderr text}
local function crm_sim(args)
  local errfile = os.tmpname()
  local p = assert(io.popen(H.CLEAN_ENV .. "CRM_SIM_PORT=" .. H.port .. " XDG_CONFIG_HOME=" .. dir
    .. "/config " .. H.lua .. " bin/crm --sim " .. args .. " 2>" .. errfile .. " </dev/null; echo \"rc=$?\""))
  local text = p:read("a")
  p:close()
  local code = tonumber(text:match("rc=(%d+)%s*$"))
  local out = {}
  for l in text:gsub("rc=%d+%s*$", ""):gmatch("[^\n]+") do out[#out + 1] = assert(crm.json.decode(l)) end
  local r = { code = code, out = out, err = H.slurp(errfile) }
  os.remove(errfile)
  return r
end

local function statuses(r)
  local s = {}
  for _, l in ipairs(r.out) do s[#s + 1] = l.status end
  return table.concat(s, ",")
end

describe("crm idempotency keys", function()
  local toast
  before_each(function()
    H.reset()
    toast = H.toast()
  end)
  after_each(function()
    H.clear_faults()
    toast:close()
  end)

  it("imports keyed credits once however often the import runs", function()
    local c = assert(toast:create_customer(H.customer()))
    local file = write("credits.csv", "customerId,amount,note,idempotency_key\n" .. c.guid .. ",4,a,o-1\n"
      .. c.guid .. ",2.5,,o-2\n")
    for run = 1, 3 do
      local r = crm_sim("toast credit add --input " .. file)
      assert.equal(0, r.code)
      assert.is_nil(r.err:find("would add every credit again", 1, true))
      -- a rerun adds nothing, and says so: the rows are found, not added
      if run == 1 then
        assert.equal("added,added", statuses(r))
        assert.truthy(r.err:find("2 rows: 2 added, 0 already added (found), 0 failed", 1, true), r.err)
      else
        assert.equal("found,found", statuses(r))
        assert.truthy(r.err:find("2 rows: 0 added, 2 already added (found), 0 failed", 1, true), r.err)
      end
    end
    assert.equal(6.5, assert(toast:get_credit_summary(c.guid)).amount)
    local again = crm_sim("toast credit add --input " .. file)
    assert.equal(toast:get_idempotency_guid("add_credit", "o-1"), again.out[1].transaction.guid)
    -- the single form takes the same key: nothing more (and says so on stderr; the transaction
    -- stays stdout's line), and another amount is a mismatch
    local single = crm_sim("toast credit add " .. c.guid .. " --amount 4 --idempotency-key o-1")
    assert.equal(0, single.code)
    assert.equal(toast:get_idempotency_guid("add_credit", "o-1"), single.out[1].guid)
    assert.truthy(single.err:find("credit add: already done by an earlier run", 1, true), single.err)
    local r = crm_sim("toast credit add " .. c.guid .. " --amount 5 --idempotency-key o-1")
    assert.equal(4, r.code)
    assert.matches("idempotency_mismatch", r.err)
    assert.equal(6.5, assert(toast:get_credit_summary(c.guid)).amount)
  end)

  it("says on stderr when a single keyed write was done before, and nothing when it is new", function()
    local first = crm_sim("toast customers create --first-name Ada --last-name Keyed --email ada.keyed@example.org"
      .. " --idempotency-key c-1")
    assert.equal(0, first.code)
    assert.equal(toast:get_idempotency_guid("create_customer", "c-1"), first.out[1].guid)
    assert.is_nil(first.err:find("already done", 1, true), first.err)
    local again = crm_sim("toast customers create --first-name Ada --last-name Keyed --email ada.keyed@example.org"
      .. " --idempotency-key c-1")
    assert.equal(0, again.code)
    assert.equal(first.out[1].guid, again.out[1].guid)
    assert.truthy(again.err:find("customers create: already done by an earlier run", 1, true), again.err)
    -- no PII in the note
    assert.is_nil(again.err:find("ada.keyed", 1, true), again.err)
  end)

  it("says which rows of a rerun were added before: by key, or by the row's own guid", function()
    local c = assert(toast:create_customer(H.customer()))
    local txn = crm.guid()
    local first = write("first.csv", "customerId,amount,guid,idempotency_key\n" .. c.guid .. ",1,,p-1\n")
    assert.equal("added", statuses(crm_sim("toast credit add --input " .. first)))
    local plain = write("guid.csv", "customerId,amount,guid\n" .. c.guid .. ",2," .. txn .. "\n")
    assert.equal("added", statuses(crm_sim("toast credit add --input " .. plain)))
    assert.equal("found", statuses(crm_sim("toast credit add --input " .. plain)))
    -- the old row beside a new one, and the old key with another amount: refused, not found
    local more = write("more.csv", "customerId,amount,idempotency_key\n" .. c.guid .. ",1,p-1\n"
      .. c.guid .. ",3,p-2\n" .. c.guid .. ",9,p-1\n")
    local r = crm_sim("toast credit add --input " .. more)
    assert.equal("found,added,failed", statuses(r))
    assert.equal("idempotency_mismatch", r.out[3].error.code)
    assert.truthy(r.err:find("3 rows: 1 added, 1 already added (found), 1 failed", 1, true), r.err)
    assert.equal(6, assert(toast:get_credit_summary(c.guid)).amount)
  end)

  it("says once on stderr that an import without a key column would credit again", function()
    local c = assert(toast:create_customer(H.customer()))
    local file = write("nokey.csv", "customerId,amount\n" .. c.guid .. ",1\n" .. c.guid .. ",2\n")
    local r = crm_sim("toast credit add --input " .. file)
    assert.equal(0, r.code)
    local _, n = r.err:gsub("would add every credit again", "")
    assert.equal(1, n)
  end)

  it("creates keyed customers once, with --key-column, and refuses a row without its key", function()
    local file = write("guests.csv", "firstName,lastName,email,row\nAnn,Lee,ann.k@example.org,r1\n"
      .. "Bo,Lee,bo.k@example.org,\n")
    for run = 1, 2 do
      local r = crm_sim("toast customers create --input " .. file .. " --key-column row")
      -- the rerun creates nobody, and says so: the keyed row is found
      assert.equal(run == 1 and "created,failed" or "found,failed", statuses(r))
      assert.truthy(r.err:find(run == 1 and "1 created, 0 already created (found)"
        or "0 created, 1 already created (found)", 1, true), r.err)
      assert.equal("row", r.out[2].error.field)
      assert.equal(toast:get_idempotency_guid("create_customer", "r1"), r.out[1].customer.guid)
    end
    assert.equal(1, #assert(toast:search_customers { email = "ann.k@example.org" }))
    assert.equal(0, #assert(toast:search_customers { email = "bo.k@example.org" }))
  end)

  it("gives find-or-create --input rows their keys (the column is not sent as a field)", function()
    local file = write("foc.jsonl",
      '{"firstName":"Cy","lastName":"Lee","email":"cy.k@example.org","idempotency_key":7}\n')
    local r = crm_sim("toast customers find-or-create --input " .. file)
    assert.equal(0, r.code)
    assert.equal("created", r.out[1].status)
    assert.equal(toast:get_idempotency_guid("find_or_create", "7"), r.out[1].customer.guid)
    assert.equal("found", crm_sim("toast customers find-or-create --input " .. file).out[1].status)
    r = crm_sim("toast customers find-or-create --input " .. file .. " --idempotency-key x")
    assert.equal(2, r.code)
  end)

  it("exits 8 when a keyed credit's outcome is unknown", function()
    local c = assert(toast:create_customer(H.customer()))
    H.fault { method = "POST", path = "/crm/v1/customers/" .. c.guid, status = 503, count = 20 }
    local r = crm_sim("toast credit add " .. c.guid .. " --amount 1 --idempotency-key k-8")
    assert.equal(8, r.code)
    assert.matches("outcome_unknown", r.err)
  end)
end)
