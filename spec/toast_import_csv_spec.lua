-- examples/toast_import_csv.lua as a user runs it, against a slow simulator and a CSV that lists
-- guests several times.
local core = require "crm.core"
local H = require "helper"

local function run(csv) return H.run_example("toast_import_csv.lua", csv) end

describe("toast_import_csv", function()
  before_each(function() H.reset() end)

  it("creates a guest the CSV lists several times once, even when searches are slow", function()
    local tag = core.guid():sub(1, 8)
    local last = "Dup" .. tag
    local csv = os.tmpname()
    local f = assert(io.open(csv, "w"))
    f:write("firstName,lastName,email,phone\n")
    -- three guests four times each (the email in other cases and spacing, with and without a
    -- phone), one guest known by phone three times in three formats, and one listed once
    for i = 1, 3 do
      local email = ("g%d.%s@example.org"):format(i, tag)
      f:write(("Guest%d,%s,%s,\n"):format(i, last, email))
      f:write(("Guest%d,%s, %s ,+1 (206) 555-01%02d\n"):format(i, last, email:upper(), i))
      f:write(("Guest%d,%s,%s,206.555.01%02d\n"):format(i, last, email, i))
      f:write(("Guest%d,%s,%s,\n"):format(i, last, email:gsub("^g", "G")))
    end
    for _, p in ipairs { "+1 (206) 555-0188", "206.555.0188", "206-555-0188" } do
      f:write(("Phoebe,%s,,%s\n"):format(last, p))
    end
    f:write(("Solo,%s,solo.%s@example.org,\n"):format(last, tag))
    f:close()
    H.fault { method = "POST", path = "/crm/v1/customers/search", delay = 0.15, count = 1000 }
    local ok, out = run(csv)
    assert.is_true(ok, out)
    assert.matches("imported 16 rows: 5 created, 11 found, 0 failed", out, 1, true)
    H.clear_faults()
    local all = assert(H.toast():search_customers({ lastName = last }, { pageSize = 50 }))
    assert.equal(5, #all)
    assert.equal(5, H.count("POST /crm/v1/customers"))
    -- and again: everybody is found
    ok, out = run(csv)
    assert.is_true(ok, out)
    assert.matches("imported 16 rows: 0 created, 16 found, 0 failed", out, 1, true)
    os.remove(csv)
  end)

  it("reads a quoted cell that holds a line break as one cell (RFC 4180), not as two rows", function()
    local tag = core.guid():sub(1, 8)
    local csv = os.tmpname()
    local f = assert(io.open(csv, "w"))
    f:write('firstName,lastName,email,phone\r\n')
    f:write(('"Maria ""M""",Two%s,"two.%s@example.org",\r\n'):format(tag, tag))
    f:write(('Ann,"Line%s\r\nBreak","ann.%s@example.org",\r\n'):format(tag, tag))
    f:close()
    local ok, out = run(csv)
    assert.is_true(ok, out)
    assert.matches("imported 2 rows: 2 created, 0 found, 0 failed", out, 1, true)
    local maria = assert(H.toast():search_customers({ email = "two." .. tag .. "@example.org" }))
    assert.equal('Maria "M"', maria[1].firstName)
    assert.equal(2, H.count("POST /crm/v1/customers"))
    os.remove(csv)
  end)
end)
