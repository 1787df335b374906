-- The TableCheck examples run as scripts against the simulator, as a user would run them.
local cjson = require "cjson"
local H = require "helper"

local run = H.run_example

describe("TableCheck examples", function()
  before_each(function() H.reset() end)

  it("tablecheck_export writes every customer as one JSON line", function()
    H.tc_seed(230, "Export")
    H.config { tablecheck_synthetic_customers = 20 }
    local file = os.tmpname()
    local ok, log = run("tablecheck_export.lua", file)
    assert.is_true(ok, log)
    assert.matches("exported 250 customers", log, 1, true)
    local ids, n = {}, 0
    for line in io.lines(file) do
      local c = cjson.decode(line)
      assert.is_string(c.id)
      assert.is_nil(c.phone_objects) -- the server's fields only, nothing derived
      assert.is_nil(ids[c.id])
      ids[c.id] = true
      n = n + 1
      if c.first_name == "Export" then assert.matches('"tags":%[%]', line) end
    end
    os.remove(file)
    assert.equal(250, n)
    assert.equal(3, H.count("POST /api/crm/v1/customer_search"))
  end)

  it("tablecheck_dedupe plans, then merges each group", function()
    local c = H.tablecheck()
    local a = assert(c:create_customer(H.tc_customer { emails = { "twin@example.com" } }))
    local b = assert(c:create_customer(H.tc_customer { emails = { "Twin@Example.com" } }))
    local ok, out = run("tablecheck_dedupe.lua", "--dry-run")
    assert.is_true(ok, out)
    assert.matches("1 group", out, 1, true)
    assert.matches("plan: PUT /customers/" .. a.id, out, 1, true)
    assert.not_matches("twin@", out, 1, true)
    assert.equal(0, H.count("PUT /api/crm/v1/customers/" .. a.id))
    ok, out = run("tablecheck_dedupe.lua")
    assert.is_true(ok, out)
    assert.matches("merged: " .. a.id, out, 1, true)
    assert.same({ b.id }, assert(c:get_customer(a.id)).merged_customer_ids)
    assert.same({}, assert(c:find_duplicates()))
  end)
end)
