-- TableCheck merges, the duplicate finder and the nested phones/emails update helper.
local H = require "helper"

local BASE = "/api/crm/v1"
local MISSING = "0123456789abcdef01234567"

local function puts(id) return H.count("PUT " .. BASE .. "/customers/" .. id) end

describe("TableCheck merge", function()
  local c
  before_each(function()
    H.reset()
    c = H.tablecheck()
  end)

  -- Two records of one person that disagree: names, company, phones and emails overlap.
  local function pair()
    local a = assert(c:create_customer(H.tc_customer {
      first_name = "James", last_name = "Smith", phones = { "+12061112222" },
      emails = { "James@Example.com" }, tags = { "vip" },
    }))
    local b = assert(c:create_customer(H.tc_customer {
      first_name = "Jim", last_name = "Smith", company_name = "Acme", kanji_last_name = "スミス",
      phones = { "+12061112222", "+14253334444" }, emails = { "james@example.com", "jim@acme.test" },
      tags = { "regular" },
    }))
    return a, b
  end

  it("keeps the primary's fields, fills gaps, unions contacts, and sends one PUT", function()
    local a, b = pair()
    local merged, _, report = assert(c:merge_customers(a.id, { b.id }))
    assert.equal(a.id, merged.id)
    assert.equal("James", merged.first_name)       -- primary wins the conflict
    assert.equal("Acme", merged.company_name)      -- gap filled from the secondary
    assert.equal("スミス", merged.alt_last_name)     -- read as alt_*, written as kanji_*
    assert.same({ "vip" }, merged.tags)
    assert.same({ "+12061112222", "+14253334444" }, merged.phones)
    assert.same({ "james@example.com", "jim@acme.test" }, merged.emails)
    assert.same({ b.id }, merged.merged_customer_ids)
    assert.equal(1, puts(a.id))
    assert.equal(0, puts(b.id))
    local _, err = c:get_customer(b.id)
    assert.equal(404, err.status) -- the secondary is gone

    assert.equal(a.id, report.fields.first_name)
    assert.equal(b.id, report.fields.company_name)
    assert.equal("union", report.fields.phones)
    assert.same({ value = "+14253334444", from = b.id }, report.phones[2])
    assert.same({ value = "jim@acme.test", from = b.id }, report.emails[2])
    local conflicts = {}
    for _, x in ipairs(report.conflicts) do conflicts[x.field] = x end
    assert.equal("James", conflicts.first_name.value)
    assert.same({ { customer_id = b.id, value = "Jim" } }, conflicts.first_name.others)
    assert.is_nil(conflicts.last_name) -- equal values are no conflict
    assert.is_true(report.request.body.overwrite_phones)
    assert.same({ b.id }, report.request.body.merge_customer_ids)
  end)

  it("copies addresses from a secondary only when the primary has none", function()
    local home = { tag = "home", street = "1 Main St", city = "Seattle", country = "US" }
    local a = assert(c:create_customer(H.tc_customer()))
    local b = assert(c:create_customer(H.tc_customer { addresses = { home } }))
    local merged, _, report = assert(c:merge_customers(a.id, { b.id }))
    assert.equal(1, #merged.addresses)
    assert.equal("Seattle", merged.addresses[1].city)
    assert.equal(b.id, report.fields.addresses)
    local d = assert(c:create_customer(H.tc_customer { addresses = { { tag = "work", city = "Tokyo" } } }))
    local request
    request, _, report = assert(c:merge_customers(a.id, { d.id }, { dry_run = true }))
    assert.is_nil(request.body.addresses) -- appending the primary's own would duplicate them
    -- the secondary's address is not kept, and the report says so
    local lost
    for _, x in ipairs(report.conflicts) do
      if x.field == "addresses" then lost = x end
    end
    assert.equal(a.id, lost.kept)
    assert.equal(d.id, lost.others[1].customer_id)
    assert.equal("Tokyo", lost.others[1].value[1].city)
  end)

  it("plans without sending on dry_run", function()
    local a, b = pair()
    local request, _, report = assert(c:merge_customers(a.id, { b.id }, { dry_run = true }))
    assert.equal("PUT", request.method)
    assert.equal("/customers/" .. a.id, request.path)
    assert.same({ b.id }, request.body.merge_customer_ids)
    assert.same({ "+12061112222", "+14253334444" }, request.body.phones)
    assert.is_true(request.body.overwrite_emails)
    assert.equal("Acme", request.body.company_name)
    assert.is_true(report.dry_run)
    assert.equal(0, puts(a.id))
    assert.equal("Jim", assert(c:get_customer(b.id)).first_name) -- untouched
  end)

  it("lets a resolve function replace the policy", function()
    local a, b = pair()
    local seen
    local merged, _, report = assert(c:merge_customers(a.id, { b.id }, {
      resolve = function(primary, secondaries, body)
        seen = { primary.id, secondaries[1].id, body.company_name }
        return { first_name = secondaries[1].first_name, memo = "merged by hand" }, { note = "mine" }
      end,
    }))
    assert.same({ a.id, b.id, "Acme" }, seen)
    assert.equal("Jim", merged.first_name)
    assert.equal("merged by hand", merged.memo)
    assert.is_nil(merged.company_name) -- the default plan was replaced, not added to
    assert.same({ "+12061112222" }, merged.phones)
    assert.equal("mine", report.note)
    assert.same({ b.id }, merged.merged_customer_ids)
  end)

  it("lets resolve edit the default plan, stop the merge, or not touch merge_customer_ids", function()
    local a, b = pair()
    local request = assert(c:merge_customers(a.id, { b.id }, { dry_run = true, resolve = function(_, _, body)
      body.first_name = "Jimmy"
      return body
    end }))
    assert.equal("Jimmy", request.body.first_name)
    assert.equal("Acme", request.body.company_name)
    local _, err = c:merge_customers(a.id, { b.id }, { resolve = function() return nil end })
    assert.equal("resolve", err.field)
    _, err = c:merge_customers(a.id, { b.id }, { resolve = function() return { merge_customer_ids = { a.id } } end })
    assert.equal("merge_customer_ids", err.field)
    _, err = c:merge_customers(a.id, { b.id }, { resolve = function() return { phones = { "call me" } } end })
    assert.equal("phones[1]", err.field)
    assert.equal(0, puts(a.id))
  end)

  it("stops, sending nothing, when resolve raises", function()
    local a, b = pair()
    local res, err = c:merge_customers(a.id, { b.id }, { resolve = function() error("boom") end })
    assert.is_nil(res)
    assert.equal("validation", err.kind)
    assert.equal("resolve", err.field)
    assert.matches("boom", err.message, 1, true)
    assert.equal(0, puts(a.id))
  end)

  describe("values the default plan cannot carry over", function()
    -- b as the server might hold it: a phone from before E.164 and an email without a domain.
    local function legacy(b, fields)
      local raw = assert(c:get_customer(b.id))
      for k, v in pairs(fields) do raw[k] = v end
      raw.phone_objects, raw.email_objects = nil, nil
      H.fault { method = "GET", path = BASE .. "/customers/" .. b.id, status = 200, count = 1,
                body = { customer = raw } }
    end

    it("refuses to merge when a secondary's phone or email would be lost", function()
      local a, b = pair()
      legacy(b, { phones = { "88002000600" }, emails = { "jim@acme" } })
      local res, err = c:merge_customers(a.id, { b.id })
      assert.is_nil(res)
      assert.equal("validation", err.kind)
      assert.equal("merge_would_lose_values", err.code)
      assert.equal("phones", err.field)
      assert.same({ b.id }, err.ids)
      assert.equal(2, #err.report.skipped)
      assert.not_matches("88002000600", tostring(err), 1, true)
      assert.not_matches("jim@acme", tostring(err), 1, true)
      assert.equal(0, puts(a.id))
      assert.equal("Jim", assert(c:get_customer(b.id)).first_name) -- still there

      -- a resolve function decides, and the merge goes ahead
      legacy(b, { phones = { "88002000600" } })
      local merged = assert(c:merge_customers(a.id, { b.id }, { resolve = function(_, _, body, report)
        assert.equal("88002000600", report.skipped[1].value)
        return body
      end }))
      assert.same({ b.id }, merged.merged_customer_ids)
    end)

    it("refuses when the union would overwrite a phone of the primary, not when it leaves it", function()
      local a, b = pair()
      legacy(a, { phones = { "88002000600" } })
      local _, err = c:merge_customers(b.id, { a.id }, { dry_run = true }) -- a as the secondary: lost
      assert.equal("merge_would_lose_values", err.code)
      -- the same record as the primary, and no phones to bring in: nothing is overwritten
      local d = assert(c:create_customer(H.tc_customer { phones = {} }))
      legacy(a, { phones = { "88002000600" } })
      local request = assert(c:merge_customers(a.id, { d.id }, { dry_run = true }))
      assert.is_nil(request.body.overwrite_phones)
      legacy(a, { phones = { "88002000600" } })
      _, err = c:merge_customers(a.id, { b.id }, { dry_run = true }) -- b's phones would overwrite a's
      assert.equal("merge_would_lose_values", err.code)
      assert.same({ a.id }, err.ids)
    end)
  end)

  it("refuses bad id lists with nothing sent", function()
    local a = assert(c:create_customer(H.tc_customer()))
    local before = H.total()
    local cases = {
      { { a.id, { a.id } }, "secondary_ids[1]", "itself" },
      { { a.id, {} }, "secondary_ids", "at least one" },
      { { a.id, { MISSING, MISSING } }, "secondary_ids[2]", "repeats" },
      { { a.id, MISSING }, "secondary_ids", "array" },
      { { a.id, { "../x" } }, "secondary_ids[1]" },
      { { a.id, { "jim-smith" } }, "secondary_ids[1]", "24-character hex" },
      { { nil, { MISSING } }, "primary_id" },
    }
    for _, case in ipairs(cases) do
      local res, err = c:merge_customers(case[1][1], case[1][2])
      assert.is_nil(res)
      assert.equal("validation", err.kind)
      assert.equal(case[2], err.field)
      if case[3] then assert.matches(case[3], err.message, 1, true) end
    end
    local _, err = c:merge_customers(a.id, { MISSING }, { dryrun = true })
    assert.equal("dryrun", err.field)
    assert.equal(before, H.total())
  end)

  it("refuses ids that do not exist, sending no PUT", function()
    local a, b = pair()
    local res, err = c:merge_customers(a.id, { b.id, MISSING })
    assert.is_nil(res)
    assert.equal(404, err.status)
    assert.equal("secondary_ids[2]", err.field)
    assert.same({ MISSING }, err.ids)
    assert.matches("does not exist", tostring(err), 1, true)
    assert.matches(MISSING, tostring(err), 1, true)
    res, err = c:merge_customers(MISSING, { a.id })
    assert.is_nil(res)
    assert.equal("primary_id", err.field)
    assert.equal(0, puts(a.id) + puts(MISSING))
    assert.equal("Jim", assert(c:get_customer(b.id)).first_name)
  end)

  it("does not repeat the merge PUT once it may have reached the server", function()
    local a, b = pair()
    H.fault { method = "PUT", path = BASE .. "/customers/" .. a.id, status = 502, count = 1 }
    local _, err = c:merge_customers(a.id, { b.id })
    assert.equal(502, err.status)
    assert.is_true(err.outcome_unknown)
    assert.equal(1, puts(a.id))
    assert.same({ b.id }, err.report.request.body.merge_customer_ids) -- what may have happened
  end)

  it("reports a merge answered with a body of the wrong shape as outcome unknown", function()
    local a, b = pair()
    -- the server merges, then its answer is replaced by a 200 without a customer object
    H.fault { method = "PUT", path = BASE .. "/customers/" .. a.id, status = 200, body = '{"ok":true}',
              after = true }
    local res, err = c:merge_customers(a.id, { b.id })
    assert.is_nil(res)
    assert.equal("decode", err.kind)
    assert.is_true(err.outcome_unknown)
    assert.equal(1, puts(a.id))
    assert.same({ b.id }, err.report.request.body.merge_customer_ids)
    assert.same({ b.id }, assert(c:get_customer(a.id)).merged_customer_ids) -- it happened, once
  end)

  describe("wait", function()
    -- b has a reservation and a membership, which move to a asynchronously.
    local function with_links()
      local a, b = pair()
      local r = assert(c:create_reservation { shop_id = H.tc.shop_ids[1], pax = 2,
        start_at = "2030-01-01T19:00:00Z", customer_id = b.id })
      local m = assert(c:create_membership { membership_program_id = H.tc.program_ids[1],
        code = "M-" .. b.id, customer_ids = { b.id } })
      return a, b, r, m
    end

    it("polls until merged_customer_ids and the moved reservations and memberships show it", function()
      H.config { tablecheck_merge_delay = 0.6 }
      local a, b, r, m = with_links()
      local t0 = require("crm.core").now()
      local merged = assert(c:merge_customers(a.id, { b.id }, { wait = { timeout = 10, interval = 0.05 } }))
      assert.is_true(require("crm.core").now() - t0 >= 0.5)
      assert.same({ b.id }, merged.merged_customer_ids)
      assert.same({ a.id }, assert(c:get_reservation(r.id)).customer_ids)
      assert.equal(a.id, assert(c:get_membership(m.id)).customers[1].id)
    end)

    it("times out with the pending ids when the move takes too long", function()
      H.config { tablecheck_merge_delay = 30 }
      local a, b = with_links()
      local res, err = c:merge_customers(a.id, { b.id }, { wait = { timeout = 0.3, interval = 0.05 } })
      assert.is_nil(res)
      assert.equal("timeout", err.kind)
      assert.equal("merge_pending", err.code)
      assert.same({ b.id }, err.ids)
      assert.equal("associated_objects", err.stage)
      assert.matches("accepted", tostring(err), 1, true)
      assert.equal(a.id, err.customer.id) -- the merge itself went through
      assert.equal(1, puts(a.id))
    end)

    it("waits on its own with wait_for_merge", function()
      H.config { tablecheck_merge_delay = 0.3 }
      local a, b = with_links()
      local _, err = c:wait_for_merge(a.id, { b.id }, { timeout = 0 }) -- not merged yet
      assert.equal("merge_pending", err.code)
      assert.equal("merged_customer_ids", err.stage)
      assert(c:update_customer(a.id, { merge_customer_ids = { b.id } }))
      assert.equal(a.id, assert(c:wait_for_merge(a.id, { b.id }, { timeout = 5, interval = 0.05 })).id)
      _, err = c:wait_for_merge(a.id, { MISSING }, { timeout = 0 })
      assert.equal("merged_customer_ids", err.stage)
    end)

    it("keeps waiting, without a Lua error, through answers of an unexpected shape", function()
      local a, b = pair()
      H.fault { method = "GET", path = BASE .. "/customers/" .. a.id, status = 200, count = 1,
                body = { customer = { id = a.id, merged_customer_ids = "all of them" } } }
      H.fault { method = "GET", path = BASE .. "/reservations", status = 200, count = 1,
                body = { reservations = { { id = MISSING, customer_ids = 7, primary_customer_id = b.id } } } }
      assert(c:update_customer(a.id, { merge_customer_ids = { b.id } }))
      local ok, res, err = pcall(c.wait_for_merge, c, a.id, { b.id }, { timeout = 5, interval = 0.01 })
      assert(ok, res)
      assert.equal(a.id, res and res.id, err and tostring(err))
    end)
  end)
end)

describe("TableCheck find_duplicates", function()
  before_each(function() H.reset() end)

  it("groups customers sharing a normalised email or phone, transitively, oldest first", function()
    local c = H.tablecheck()
    local one = assert(c:create_customer(H.tc_customer { emails = { "dup@example.com" }, phones = {} }))
    local two = assert(c:create_customer(H.tc_customer { emails = { "DUP@Example.com" },
                                                           phones = { "+819012345678" } }))
    local three = assert(c:create_customer(H.tc_customer { emails = {}, phones = { "+819012345678" } }))
    assert(c:create_customer(H.tc_customer()))
    H.config { tablecheck_synthetic_customers = 300 } -- plenty of unrelated customers
    local groups, _, stats = assert(c:find_duplicates())
    assert.equal(1, #groups)
    local g = groups[1]
    assert.equal(one.id, g.primary)
    assert.same({ two.id, three.id }, g.secondaries)
    assert.equal(304, stats.scanned)
    assert.same({ by = "email", value = "dup@example.com", ids = { one.id, two.id } }, g.reasons[1])
    assert.same({ by = "phone", value = "+819012345678", ids = { two.id, three.id } }, g.reasons[2])

    local merged = assert(c:merge_customers(g.primary, g.secondaries))
    assert.same({ two.id, three.id }, merged.merged_customer_ids)
    assert.same({ "dup@example.com" }, merged.emails)
    assert.same({ "+819012345678" }, merged.phones)
    assert.same({}, assert(c:find_duplicates()))
  end)

  it("breaks created_at ties by search order", function()
    local seeded = H.tc_seed(3, "Tie", { emails = { "tie@example.com" } }) -- one timestamp for all
    local groups = assert(H.tablecheck():find_duplicates { first_name = "Tie" })
    assert.equal(1, #groups)
    assert.equal(seeded.first_id, groups[1].primary)
    assert.equal(seeded.last_id, groups[1].secondaries[2])
  end)

  it("can match on one kind only and passes a query to the search", function()
    local c = H.tablecheck()
    assert(c:create_customer(H.tc_customer { first_name = "Pat", emails = { "x@example.com" },
                                              phones = { "+12065550000" } }))
    assert(c:create_customer(H.tc_customer { first_name = "Pat", emails = { "y@example.com" },
                                              phones = { "+12065550000" } }))
    assert.equal(0, #assert(c:find_duplicates({ first_name = "Pat" }, { by = { "email" } })))
    assert.equal(1, #assert(c:find_duplicates({ first_name = "Pat" }, { by = { "phone" } })))
    local _, err = c:find_duplicates({}, { by = { "name" } })
    assert.equal("by[1]", err.field)
  end)
end)

describe("TableCheck contacts helper", function()
  local c, cust
  before_each(function()
    H.reset()
    c = H.tablecheck()
    cust = assert(c:create_customer(H.tc_customer {
      phones = { "+12061112222", "+14253334444" }, emails = { "foo@bar.com", "baz@qux.com" },
    }))
  end)

  local function phone_id(n) return cust.phone_objects[n].id end
  local function email_id(n) return cust.email_objects[n].id end

  it("modifies and destroys by id and adds new entries", function()
    local body = assert(c:plan_contacts(cust, {
      phones = { modify = { [phone_id(1)] = "+818044445555" }, destroy = { phone_id(2) } },
      emails = { add = { "me@test.com" } },
    }))
    assert.same({ { id = phone_id(1), number = "+818044445555" }, { id = phone_id(2), _destroy = true } },
      body.phones)
    assert.is_nil(body.overwrite_phones)
    local updated = assert(c:update_customer(cust.id, body))
    assert.same({ "+818044445555" }, updated.phones)
    assert.equal(phone_id(1), updated.phone_objects[1].id) -- the same object, changed
    assert.same({ "foo@bar.com", "baz@qux.com", "me@test.com" }, updated.emails)
  end)

  it("keeps listed objects under overwrite and drops the rest", function()
    local body = assert(c:plan_contacts(cust, {
      emails = { keep = { email_id(2) }, add = { { email = "new@x.org", tag = "work" } }, overwrite = true },
    }))
    assert.is_true(body.overwrite_emails)
    local updated = assert(c:update_customer(cust.id, body))
    assert.same({ "baz@qux.com", "new@x.org" }, updated.emails)
    assert.equal("work", updated.email_objects[2].tag)
    local cleared = assert(c:update_customer(cust.id, assert(c:plan_contacts(updated,
      { phones = { overwrite = true } }))))
    assert.same({}, cleared.phones)
  end)

  it("sets an exact list, keeping the objects that stay", function()
    local body = assert(c:plan_contacts(cust, { emails = { set = { "BAZ@qux.com ", "new@x.org" } } }))
    local updated = assert(c:update_customer(cust.id, body))
    assert.same({ "baz@qux.com", "new@x.org" }, updated.emails)
    assert.equal(email_id(2), updated.email_objects[1].id)
  end)

  it("refuses ids the customer does not have, reused ids and bad values, sending nothing", function()
    local before = H.total()
    local cases = {
      { { phones = { destroy = { MISSING } } }, "phones.destroy[1]", "not the id" },
      { { phones = { keep = { phone_id(1) }, destroy = { phone_id(1) } } }, "phones.destroy[1]", "already" },
      { { phones = { add = { "555-1234" } } }, "phones.add[1]", "E.164" },
      { { phones = { modify = { [phone_id(1)] = { number = "12" } } } }, "phones.modify." .. phone_id(1) .. ".number" },
      { { emails = { add = { "nope" } } }, "emails.add[1]", "email" },
      { { emails = { set = { "a@b.co" }, overwrite = true } }, "emails.set", "cannot be combined" },
      { { addresses = { set = {} } }, "addresses.set", "only for phones" },
      { { phones = { replace = {} } }, "phones.replace" },
      { { nicknames = {} }, "nicknames" },
      { {}, "spec", "changes nothing" },
    }
    for _, case in ipairs(cases) do
      local body, err = c:plan_contacts(cust, case[1])
      assert.is_nil(body)
      assert.equal("validation", err.kind)
      assert.equal(case[2], err.field)
      if case[3] then assert.matches(case[3], err.message, 1, true) end
    end
    assert.equal(before, H.total())
  end)
end)
