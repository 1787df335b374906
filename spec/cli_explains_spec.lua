-- The command line explains itself (issue 20): versions, options named in their errors, the
-- sub-command's usage, one name per GUID, --input with columns it does not know.
local crm = require "crm"
local core = require "crm.core"
local H = require "helper"

local q = H.quote
local home = H.tmpdir("config", "state")

local function crm_run(args)
  return H.capture(("CRM_SIM_PORT=%d XDG_CONFIG_HOME=%s XDG_STATE_HOME=%s %s bin/crm %s"):format(H.port,
    q(home .. "/config"), q(home .. "/state"), H.lua, args))
end

local function write(name, text)
  local path = home .. "/" .. name
  H.spit(path, text)
  return path
end

describe("crm explains itself", function()
  before_each(function() H.reset() end)

  it("crm --version is one plain line; crm version one JSON line", function()
    local r = crm_run("--version")
    assert.equal(0, r.code, r.err)
    assert.truthy(r.out:find("^crm " .. crm._VERSION:gsub("%.", "%%.") .. " %(C core " .. core.version:gsub("%.", "%%.")
      .. ", "), r.out)
    assert.equal(1, select(2, r.out:gsub("\n", "")))
    assert.truthy(r.out:find("libcurl %d+%.%d+"), r.out)
    r = crm_run("version")
    assert.equal(0, r.code, r.err)
    local v = crm.json.decode(r.out)
    assert.equal(crm._VERSION, v.crm)
    assert.equal(core.version, v.core)
    assert.truthy(v.lua:find("Lua", 1, true))
  end)

  it("a value that is not a number names its option", function()
    local r = crm_run("--sim --timeout abc tablecheck shops list")
    assert.equal(2, r.code)
    assert.truthy(r.err:find("crm: --timeout must be a number, not 'abc'", 1, true), r.err)
    r = crm_run("--sim tablecheck customers list --per-page many")
    assert.equal(2, r.code)
    assert.truthy(r.err:find("--per-page must be a number, not 'many'", 1, true), r.err)
  end)

  it("--data that is not JSON names the option and the decoder's error (with its byte)", function()
    local r = crm_run("--sim tablecheck customers create --data '{bad'")
    assert.equal(2, r.code)
    local _, derr = crm.json.decode("{bad")
    local want = "--data is not valid JSON: " .. derr.message
      .. (derr.position and (" at byte " .. ("%d"):format(derr.position)) or "")
    assert.truthy(r.err:find(want, 1, true), r.err)
    assert.truthy(r.err:find("field=--data", 1, true), r.err)
    r = crm_run("--sim tablecheck customers create --data '[1]'")
    assert.truthy(r.err:find("--data must be one JSON object, not an array", 1, true), r.err)
  end)

  it("a sub-command's usage error prints the sub-command's usage", function()
    local r = crm_run("toast credit add 3f2b8a1e-5c4d-4e6f-9a7b-0c1d2e3f4a5b --bogus")
    assert.equal(2, r.code)
    assert.truthy(r.err:find("^Usage: crm toast credit add "), r.err)
    assert.truthy(r.err:find("crm toast credit add --help", 1, true), r.err)
    r = crm_run("tablecheck customers show")
    assert.truthy(r.err:find("^Usage: crm tablecheck customers show "), r.err)
  end)

  it("credit add: the transaction's GUID is --transaction-guid; --guid is refused with the new name", function()
    local customer = H.toast():create_customer(H.customer()).guid
    local r = crm_run("--sim toast credit add " .. customer .. " --amount 5 --guid " .. core.guid())
    assert.equal(2, r.code)
    assert.truthy(r.err:find("--guid is now --transaction-guid", 1, true), r.err)
    local txn = core.guid()
    r = crm_run("--sim toast credit add " .. customer .. " --amount 5 --transaction-guid " .. txn)
    assert.equal(0, r.code, r.err)
    assert.equal(txn, crm.json.decode(r.out).guid)
    r = crm_run("toast credit add --help")
    assert.truthy(r.out:find("--transaction-guid", 1, true))
    assert.is_nil(r.out:find("%-%-guid"))
  end)

  it("--input ignores columns it does not know with one warning; --strict refuses them", function()
    local tag = core.guid():sub(1, 8)
    local csv = write("in.csv", "firstName,lastName,email,loyalty_tier,notes\n"
      .. "Una,One,una." .. tag .. "@example.org,gold,x\n"
      .. "Duo,Two,duo." .. tag .. "@example.org,silver,y\n")
    local r = crm_run("--sim toast customers find-or-create --input " .. q(csv))
    assert.equal(0, r.code, r.err)
    local _, warnings = r.err:gsub("ignoring the columns crm does not know: loyalty_tier, notes", "")
    assert.equal(1, warnings, r.err)
    assert.equal(2, #H.control("GET", "/__sim/toast/customers").customers)
    r = crm_run("--sim toast customers find-or-create --strict --input " .. q(csv))
    assert.equal(2, r.code)
    assert.truthy(r.err:find("--input has columns crm does not know: loyalty_tier, notes", 1, true), r.err)
    assert.equal("", r.out)
  end)

  it("--input: identical row errors are written once, then counted", function()
    local rows = { "firstName,lastName,email" }
    for i = 1, 12 do rows[#rows + 1] = "Nomail" .. i .. ",Row," end
    local r = crm_run("--sim toast customers find-or-create --input " .. q(write("bad.csv", table.concat(rows, "\n"))))
    assert.equal(2, r.code)
    local _, n = r.err:gsub("email or phone is required", "")
    assert.equal(2, n, r.err) -- the first row's line, and the summary
    assert.truthy(r.err:find("the same error on 11 more rows (lines 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, ...)", 1, true),
      r.err)
    local _, results = r.out:gsub("\n", "")
    assert.equal(12, results) -- every row still has its result line
  end)

  it("duplicates --from an export reads the API once; --restart-on-expiry is the library's option", function()
    H.tc_seed(4, "Else")
    local twins = {}
    for i, email in ipairs { "same@example.com", "Same@Example.com" } do
      twins[i] = assert(H.tablecheck():create_customer(H.tc_customer { emails = { email } }))
    end
    local a, b = twins[1], twins[2]
    local export = crm_run("--sim tablecheck customers export")
    assert.equal(0, export.code, export.err)
    local searches = H.count("POST /api/crm/v1/customer_search")
    local r = crm_run("--sim tablecheck duplicates --from " .. q(write("export.jsonl", export.out)))
    assert.equal(0, r.code, r.err)
    assert.equal(searches, H.count("POST /api/crm/v1/customer_search"))
    local g = crm.json.decode(r.out)
    assert.equal(a.id, g.primary)
    assert.same({ b.id }, g.secondaries)
    r = crm_run("--sim tablecheck duplicates --restart-on-expiry")
    assert.equal(0, r.code, r.err)
    assert.equal(a.id, crm.json.decode(r.out).primary)
    r = crm_run("--sim tablecheck duplicates --from " .. q(write("bad.jsonl", export.out .. "oops\n")))
    assert.equal(2, r.code)
    assert.truthy(r.err:find("--from: line 7 is not one JSON object", 1, true), r.err)
  end)

  it("a page's pagination line prints integers as integers", function()
    H.tc_seed(5, "Page")
    local r = crm_run("--sim tablecheck customers list --page 0 --per-page 2")
    assert.equal(0, r.code, r.err)
    assert.truthy(r.err:find("per_page=2 ", 1, true) or r.err:find("per_page=2\n", 1, true), r.err)
    assert.is_nil(r.err:find("%d%.0"), r.err)
  end)
end)
