-- TableCheck CRM v1 against the simulator: the client, every operation of the contract, query
-- and body validation, paging and the GET /customers page limit, retries of writes.
local crm = require "crm"
local tablecheck = require "crm.tablecheck"
local H = require "helper"

local BASE = "/api/crm/v1"
local MISSING = "0123456789abcdef01234567" -- a well-formed id no record has

describe("TableCheck client", function()
  before_each(function() H.reset() end)

  describe("construction", function()
    local function refused(opts, field)
      local c, err = crm.tablecheck(opts)
      assert.is_nil(c)
      assert.equal("validation", err.kind)
      assert.equal(field, err.field)
      return err
    end

    it("requires an api_key and refuses one that could inject a header", function()
      refused({ base_url = H.tablecheck_url }, "api_key")
      refused({ base_url = H.tablecheck_url, api_key = "" }, "api_key")
      local err = refused({ base_url = H.tablecheck_url, api_key = "k\r\nX-Evil: 1" }, "api_key")
      assert.not_matches("Evil", tostring(err))
    end)

    it("refuses an api_key shorter than 4 bytes (it could not be scrubbed from errors)", function()
      for _, key in ipairs { "k", "ab", "abc" } do
        local err = refused({ base_url = H.tablecheck_url, api_key = key }, "api_key")
        assert.matches("at least 4 bytes", err.message, 1, true)
      end
      assert(crm.tablecheck { base_url = H.tablecheck_url, api_key = "abcd" }):close()
      assert.equal(0, H.total())
    end)

    it("refuses an api_key with a byte outside ASCII", function()
      for _, key in ipairs { "sim-key-\195\169", "\128\128\128\128", "key\255key" } do
        local err = refused({ base_url = H.tablecheck_url, api_key = key }, "api_key")
        assert.matches("ASCII", err.message, 1, true)
      end
      assert.equal(0, H.total())
    end)

    it("refuses unknown options, a bad clock and a bad scroll_ttl", function()
      refused({ api_key = "key1", apikey = "key1" }, "apikey")
      refused({ api_key = "key1", clock = os.time }, "clock")
      refused({ api_key = "key1", scroll_ttl = 0 }, "scroll_ttl")
      refused({ api_key = "key1", base_url = "ftp://x" }, "base_url")
    end)

    it("defaults to the production base URL of the contract and sends nothing", function()
      local c = assert(crm.tablecheck { api_key = "key1" })
      assert.equal("https://api.tablecheck.com/api/crm/v1", c.engine.base_url)
      assert.equal(tablecheck.DEFAULT_BASE_URL, c.engine.base_url)
      c:close()
      H.tablecheck()
      assert.equal(0, H.total())
    end)

    it("sends the key as the raw Authorization header value", function()
      local t = H.recording_transport()
      local c = H.tablecheck { transport = t }
      assert(c:list_shops())
      local auth
      for _, h in ipairs(t.log[1].headers) do auth = auth or h:match("^Authorization: (.*)$") end
      assert.equal(H.tablecheck_key, auth)
    end)

    it("reports a refused key as an auth error that does not contain the key", function()
      local c = H.tablecheck { api_key = "wrong-key-4711" }
      local res, err = c:list_customers()
      assert.is_nil(res)
      assert.equal("auth", err.kind)
      assert.equal(401, err.status)
      assert.equal("api_key_invalid", err.code)
      assert.not_matches("wrong%-key%-4711", tostring(err))
    end)

    it("scrubs the key from error text even when the server echoes it", function()
      H.fault { path = BASE .. "/shops", status = 400, count = 1,
                body = '{"errors":[{"code":"bad","message":"key sim-tablecheck-key refused"}]}' }
      local _, err = H.tablecheck():list_shops()
      assert.equal(400, err.status)
      assert.equal("bad", err.code)
      assert.not_matches("sim%-tablecheck%-key", tostring(err))
      assert.matches("<redacted>", tostring(err), 1, true)
    end)

    it("returns an error on a closed client and sends nothing", function()
      local c = H.tablecheck()
      c:close()
      local res, err = c:list_shops()
      assert.is_nil(res)
      assert.matches("closed", tostring(err))
      assert.equal(0, H.total())
    end)
  end)

  describe("shops and franchises", function()
    it("lists and shows shops by id and by slug", function()
      local c = H.tablecheck()
      local shops, _, pagination = assert(c:list_shops())
      assert.equal(2, #shops)
      assert.equal(0, pagination.page)
      assert.equal(H.tc.shop_ids[1], assert(c:get_shop(H.tc.shop_ids[1])).id)
      assert.equal(H.tc.shop_ids[1], assert(c:get_shop("sim-paris-cafe")).id)
      local only = assert(c:list_shops { franchise_ids = { H.tc.franchise_id }, ids = H.tc.shop_ids[2] })
      assert.equal(1, #only)
      assert.equal(H.tc.shop_ids[2], only[1].id)
    end)

    it("reads single objects under the contract's `reservation` key as well as their own", function()
      local c = H.tablecheck()
      local m = assert(c:create_membership { membership_program_id = H.tc.program_ids[2], code = "W-1" })
      for _, mode in ipairs { "spec", "natural", "both" } do
        H.config { tablecheck_envelope = mode }
        assert.equal(H.tc.shop_ids[1], assert(c:get_shop(H.tc.shop_ids[1])).id)
        assert.equal(H.tc.franchise_id, assert(c:get_franchise(H.tc.franchise_id)).id)
        assert.equal(H.tc.flag_ids[1], assert(c:get_reservation_flag(H.tc.flag_ids[1])).id)
        assert.equal(m.id, assert(c:get_membership(m.id)).id)
        local list = assert(c:list_memberships()) -- under "reservations" in spec mode
        assert.equal(m.id, list[1].id)
      end
    end)

    it("lists and shows franchises", function()
      local c = H.tablecheck()
      local list = assert(c:list_franchises { slugs = "sim-dining" })
      assert.equal(1, #list)
      assert.equal("sim-dining", assert(c:get_franchise(list[1].id)).slug)
      assert.equal(H.tc.franchise_id, assert(c:get_franchise("sim-dining")).id)
    end)

    it("maps an unknown id to a 404 http error that is not retried", function()
      local _, err = H.tablecheck():get_shop(MISSING)
      assert.equal("http", err.kind)
      assert.equal(404, err.status)
      assert.equal(1, H.count("GET " .. BASE .. "/shops/" .. MISSING))
    end)
  end)

  describe("reservation flags and membership programs", function()
    it("lists, filters and shows reservation flags", function()
      local c = H.tablecheck()
      assert.equal(2, #assert(c:list_reservation_flags()))
      local flag = assert(c:get_reservation_flag(H.tc.flag_ids[2]))
      assert.equal("Allergy", flag.name)
      local n = 0
      for f in c:iter_reservation_flags { per_page = 1 } do
        assert.is_string(f.id)
        n = n + 1
      end
      assert.equal(2, n)
    end)

    it("lists and shows membership programs with their tiers", function()
      local c = H.tablecheck()
      local programs = assert(c:list_membership_programs())
      assert.equal(2, #programs)
      local p = assert(c:get_membership_program(H.tc.program_ids[1]))
      assert.equal(3, #p.membership_tiers)
    end)
  end)

  describe("customers", function()
    it("creates a customer and exposes phones and emails in both shapes", function()
      local c = H.tablecheck()
      local input = H.tc_customer()
      local cust = assert(c:create_customer(input))
      assert.matches("^%x+$", cust.id)
      assert.same(input.phones, cust.phones)
      assert.equal(input.phones[1], cust.phone_objects[1].number)
      assert.is_string(cust.phone_objects[1].id)
      assert.same(input.emails, cust.emails)
      assert.equal(input.emails[1], cust.email_objects[1].email)
    end)

    it("derives phone_objects and emails when a response carries only one shape", function()
      local c = H.tablecheck()
      local cust = assert(c:create_customer(H.tc_customer()))
      local only = assert(c:get_customer(cust.id, { include_fields = { "id", "phone_objects", "emails" } }))
      assert.same(cust.phones, only.phones)
      assert.equal(cust.emails[1], only.email_objects[1].email)
      assert.is_nil(only.last_name)
    end)

    it("shows, amends and deletes", function()
      local c = H.tablecheck()
      local cust = assert(c:create_customer(H.tc_customer()))
      assert.equal(cust.id, assert(c:get_customer(cust.id)).id)
      local amended = assert(c:update_customer(cust.id, { first_name = "New Name" }))
      assert.equal("New Name", amended.first_name)
      assert.equal("Hopper", amended.last_name)
      assert.is_true(c:delete_customer(cust.id))
      local _, err = c:get_customer(cust.id)
      assert.equal(404, err.status)
    end)

    it("lists one page with filters and fields", function()
      local c = H.tablecheck()
      local a = assert(c:create_customer(H.tc_customer()))
      assert(c:create_customer(H.tc_customer()))
      local list, _, pagination = assert(c:list_customers { ids = { a.id }, exclude_fields = "memo,addresses" })
      assert.equal(1, #list)
      assert.equal(a.id, list[1].id)
      assert.equal(100, pagination.per_page)
      assert.equal(2, #assert(c:list_customers { created_at_min = "2000-01-01T00:00:00Z" }))
      assert.equal(0, #assert(c:list_customers { created_at_max = "2000-01-01T00:00:00Z" }))
    end)

    it("appends phones as strings, replaces them with overwrite_phones", function()
      local c = H.tablecheck()
      local cust = assert(c:create_customer(H.tc_customer { phones = { "+12061112222" } }))
      local appended = assert(c:update_customer(cust.id, { phones = { "+14253334444" } }))
      assert.same({ "+12061112222", "+14253334444" }, appended.phones)
      local replaced = assert(c:update_customer(cust.id, { phones = { "+818044445555" }, overwrite_phones = true }))
      assert.same({ "+818044445555" }, replaced.phones)
      local cleared = assert(c:update_customer(cust.id, { phones = crm.empty_array, overwrite_phones = true }))
      assert.same({}, cleared.phones)
    end)
  end)

  describe("validation before sending", function()
    local c, cust
    before_each(function()
      c = H.tablecheck()
      cust = assert(c:create_customer(H.tc_customer()))
    end)

    local function refuses(fn, field, rule)
      local before = H.total()
      local res, err = fn()
      assert.is_nil(res)
      assert.equal("validation", err.kind)
      assert.equal(field, err.field)
      if rule then assert.matches(rule, err.message, 1, true) end
      assert.matches(field, tostring(err), 1, true)
      assert.equal(before, H.total())
    end

    it("checks query parameters: pages, ids, date-times, fields, unknown names", function()
      local cases = {
        { { per_page = 1001 }, "per_page", "at most 1000" },
        { { per_page = 0 }, "per_page" },
        { { page = -1 }, "page" },
        { { page = 1.5 }, "page", "integer" },
        { { ids = "abc" }, "ids[1]", "24-character hex" },
        { { ids = { cust.id, "nope" } }, "ids[2]" },
        { { ids = {} }, "ids", "empty" },
        { { ids = { "a,b" } }, "ids[1]" },
        { { created_at_min = "yesterday" }, "created_at_min", "RFC 3339" },
        { { updated_at_max = "2024-01-01" }, "updated_at_max", "date-time" },
        { { include_fields = "id,bad field" }, "include_fields[2]" },
        { { exclude_fields = {} }, "exclude_fields" },
        { { start_at_min = "2024-01-01T00:00:00Z" }, "start_at_min", "not a query parameter" },
        { { page = 10 }, "page", "iter_search_customers" },
      }
      for _, case in ipairs(cases) do
        refuses(function() return c:list_customers(case[1]) end, case[2], case[3])
      end
      refuses(function() return c:list_reservations { sort = "pax" } end, "sort")
      refuses(function() return c:list_reservations { sort_order = "up" } end, "sort_order")
      refuses(function() return c:list_reservation_flags { include_fields = "id" } end, "include_fields")
      refuses(function() return c:get_customer(cust.id, { page = 1 }) end, "page")
      refuses(function() return c:get_customer("../etc") end, "customer_id")
      refuses(function() return c:get_shop("a/b") end, "shop_id")
      refuses(function() return c:delete_membership("") end, "membership_id")
    end)

    it("yields the validation error from an iterator built on bad input", function()
      local seen = {}
      for item, err in c:iter_customers { per_page = 5000 } do seen[#seen + 1] = { item, err } end
      assert.equal(1, #seen)
      assert.is_false(seen[1][1])
      assert.equal("per_page", seen[1][2].field)
    end)

    it("checks customer bodies against the contract", function()
      local create_cases = {
        { { first_name = "F" }, "franchise_id", "required" },
        { H.tc_customer { franchise_id = "abc" }, "franchise_id", "24-character hex" },
        { H.tc_customer { phones = { "206-555-0100" } }, "phones[1]", "E.164" },
        { H.tc_customer { phones = { "+0123456789" } }, "phones[1]", "E.164" },
        { H.tc_customer { phones = { { number = "12065550100" } } }, "phones[1].number", "E.164" },
        { H.tc_customer { phones = { "+12065550100", { number = "+12065550101" } } }, "phones[2]", "all strings" },
        { H.tc_customer { phones = "+12065550100" }, "phones", "array" },
        { H.tc_customer { emails = { "not-an-email" } }, "emails[1]", "email" },
        { H.tc_customer { emails = { { tag = "home" } } }, "emails[1].email", "required" },
        { H.tc_customer { allergies = { "nuts" } }, "allergies", "allerges" },
        { H.tc_customer { gender = "male" }, "gender", "sex" },
        { H.tc_customer { firstname = "typo" }, "firstname", "not a known field" },
        { H.tc_customer { sex = 3 }, "sex" },
        { H.tc_customer { tags = "vip" }, "tags", "array" },
        { H.tc_customer { first_name = "F\255" }, "first_name", "UTF-8" },
        { H.tc_customer { age_range = "70s" }, "age_range" },
        { H.tc_customer { country = "Japan" }, "country" },
        { H.tc_customer { addresses = { { tag = "castle" } } }, "addresses[1].tag" },
        { H.tc_customer { events = { { tag = "birthday", date = "01-01-2020" } } }, "events[1].date" },
        { H.tc_customer { socials = { { service = "myspace", username = "x" } } }, "socials[1].service" },
        { H.tc_customer { phones = { { id = cust.phone_objects[1].id, _destroy = true, number = 5 } } },
          "phones[1].number" },
        { H.tc_customer { merge_customer_ids = {} }, "merge_customer_ids", "empty" },
        { "not a table", "body" },
      }
      for _, case in ipairs(create_cases) do
        refuses(function() return c:create_customer(case[1]) end, case[2], case[3])
      end
      refuses(function() return c:update_customer(cust.id, {}) end, "body", "at least one field")
      refuses(function() return c:update_customer(cust.id, nil) end, "body", "required")
      refuses(function() return c:update_customer(cust.id, { phones = { { _destroy = true } } }) end,
        "phones[1].id", "_destroy")
      refuses(function() return c:update_customer(cust.id, { merge_customer_ids = { cust.id } }) end,
        "merge_customer_ids[1]", "itself")
      refuses(function()
        return c:update_customer(cust.id, { merge_customer_ids = { MISSING, MISSING } })
      end, "merge_customer_ids[2]", "repeats")
    end)

    it("checks reservation and membership bodies", function()
      local shop = H.tc.shop_ids[1]
      local ok = { shop_id = shop, pax = 2, start_at = "2030-01-29T19:15:00Z" }
      local function with(extra)
        local t = {}
        for k, v in pairs(ok) do t[k] = v end
        for k, v in pairs(extra) do t[k] = v end
        return t
      end
      refuses(function() return c:create_reservation { shop_id = shop, start_at = ok.start_at } end, "pax")
      refuses(function() return c:create_reservation(with { start_at = "tomorrow" }) end, "start_at")
      refuses(function() return c:create_reservation(with { pax = -1 }) end, "pax")
      refuses(function() return c:create_reservation(with { phone = "555" }) end, "phone")
      refuses(function() return c:create_reservation(with { status = "happy" }) end, "status")
      refuses(function() return c:create_reservation(with { seat_types = { "roof" } }) end, "seat_types[1]")
      refuses(function() return c:update_reservation("r1", {}) end, "body")
      refuses(function() return c:create_membership { membership_program_id = H.tc.program_ids[1] } end,
        "code")
      refuses(function()
        return c:create_membership { membership_program_id = H.tc.program_ids[1], code = "A",
                                      expiry_date = "2030/01/01" }
      end, "expiry_date")
      refuses(function() return c:update_membership("m1", { status = "gold" }) end, "status")
    end)
  end)

  describe("reservations", function()
    it("creates, shows (with its flags), updates and lists by customer", function()
      local c = H.tablecheck()
      local cust = assert(c:create_customer(H.tc_customer()))
      local r = assert(c:create_reservation {
        shop_id = H.tc.shop_ids[1], pax = 4, start_at = "2030-01-29T19:15:00Z", customer_id = cust.id,
        reservation_flag_ids = { H.tc.flag_ids[1] }, ref = "R-1",
      })
      assert.equal(4, r.pax)
      local shown, _, flags = assert(c:get_reservation(r.id))
      assert.equal(r.id, shown.id)
      assert.equal("table", type(flags))
      assert.equal(H.tc.flag_ids[1], flags[1].id)
      local updated = assert(c:update_reservation(r.id, { pax = 6, memo = "window seat" }))
      assert.equal(6, updated.pax)
      local mine = assert(c:list_reservations { customer_ids = { cust.id }, sort = "created_at" })
      assert.equal(1, #mine)
      assert.equal(r.id, mine[1].id)
      assert.equal(0, #assert(c:list_reservations { start_at_max = "2000-01-01T00:00:00Z" }))
    end)
  end)

  describe("memberships", function()
    it("creates, shows, updates, lists by customer and deletes", function()
      local c = H.tablecheck()
      local cust = assert(c:create_customer(H.tc_customer()))
      local m = assert(c:create_membership {
        membership_program_id = H.tc.program_ids[1], membership_tier_id = H.tc.tier_ids[2],
        code = "GOLD-1", customer_ids = { cust.id }, points = 10, start_date = "2024-01-01",
      })
      assert.equal("GOLD-1", m.code)
      assert.equal(m.id, assert(c:get_membership(m.id)).id)
      assert.equal(50, assert(c:update_membership(m.id, { points = 50 })).points)
      local list = assert(c:list_memberships { customer_ids = cust.id })
      assert.equal(1, #list)
      assert.is_true(c:delete_membership(m.id))
      assert.equal(0, #assert(c:list_memberships { customer_ids = cust.id }))
      local _, err = c:get_membership(m.id)
      assert.equal(404, err.status)
    end)
  end)

  describe("paging", function()
    it("iterates a list across pages and stops at a short page", function()
      H.tc_seed(7, "Paged")
      local c = H.tablecheck()
      local it = c:iter_customers { per_page = 3 }
      local n = 0
      for cust, err in it do
        assert.is_nil(err)
        assert.equal("Paged", cust.first_name)
        n = n + 1
      end
      assert.equal(7, n)
      assert.equal(3, it.pages)
      assert.is_false(it.truncated)
      assert.equal(3, H.count("GET " .. BASE .. "/customers"))
    end)

    it("never stops silently at the 10-page limit of GET /customers: it says so", function()
      H.tc_seed(25, "Many")
      local c = H.tablecheck()
      local it = c:iter_customers { per_page = 2 }
      local n, failure = 0, nil
      for cust, err in it do
        if cust == false then
          failure = err
        else
          n = n + 1
        end
      end
      assert.equal(20, n)
      assert.equal("list_limit", failure.code)
      assert.matches("iter_search_customers", tostring(failure), 1, true)
      assert.is_true(it.truncated)
      assert.equal(failure, it.err)
      -- page 10 is never requested: the client knows the limit
      assert.equal(10, H.count("GET " .. BASE .. "/customers"))
      local all, err = c:iter_customers({ per_page = 2 }):all()
      assert.is_nil(all)
      assert.equal("list_limit", err.code)
      assert.equal(20, #err.partial)
    end)

    it("reads all customers below the limit without a warning", function()
      H.tc_seed(19, "Few")
      local all = assert(H.tablecheck():iter_customers({ per_page = 2 }):all())
      assert.equal(19, #all)
    end)

    it("offers a page-wise variant", function()
      H.tc_seed(5, "Pages")
      local sizes = {}
      for page in H.tablecheck():iter_customers({ per_page = 2 }):each_page() do sizes[#sizes + 1] = #page end
      assert.same({ 2, 2, 1 }, sizes)
    end)
  end)

  describe("answers of an unexpected shape", function()
    -- Each case: a 200 body the simulator sends instead of the real answer, and the call.
    it("are decode errors, never Lua errors", function()
      local c = H.tablecheck()
      local cust = assert(c:create_customer(H.tc_customer()))
      local one = BASE .. "/customers/" .. cust.id
      local cases = {
        { one, "null", function() return c:get_customer(cust.id) end, "object" },
        { one, "[]", function() return c:get_customer(cust.id) end, "object" },
        { one, '{"customer":[1,2]}', function() return c:get_customer(cust.id) end, "not an object" },
        { one, '{"customer":{"id":"x","phones":"+12065550100"}}', function() return c:get_customer(cust.id) end,
          "phones is not an array" },
        { one, '{"customer":{"id":"x","email_objects":7}}',
          function() return c:update_customer(cust.id, { memo = "m" }) end, "email_objects is not an array" },
        { BASE .. "/customers", '{"customers":[{"id":"a"},5]}', function() return c:list_customers() end,
          "not an object" },
        { BASE .. "/customers", '{"customers":{"id":"a"}}', function() return c:list_customers() end,
          "customers array" },
        { BASE .. "/shops", '{"shops":[true]}', function() return c:iter_shops():all() end, "not an object" },
        { BASE .. "/memberships", '{"memberships":"none"}', function() return c:list_memberships() end,
          "memberships array" },
      }
      for i, case in ipairs(cases) do
        H.fault { path = case[1], status = 200, body = case[2], count = 1 }
        local ok, res, err = pcall(case[3])
        assert(ok, "case " .. i .. " raised: " .. tostring(res))
        assert.is_nil(res, "case " .. i)
        assert.equal("decode", err.kind, "case " .. i)
        assert.matches(case[4], err.message, 1, true)
      end
    end)
  end)

  describe("batch", function()
    it("runs TableCheck operations concurrently, results in order", function()
      H.tc_seed(5, "Batch")
      local c = H.tablecheck()
      local results = assert(c:batch {
        { "get_shop", H.tc.shop_ids[2] },
        { "get_customer", MISSING },
        function(cl) return cl:iter_search_customers({ first_name = "Batch" }):all() end,
      })
      assert.equal(H.tc.shop_ids[2], results[1].value.id)
      assert.equal(404, results[2].err.status)
      assert.equal(5, #results[3].value)
      assert.equal(2, results.succeeded)
    end)
  end)

  describe("retries", function()
    it("retries a read on 503", function()
      local c = H.tablecheck()
      H.fault { method = "GET", path = BASE .. "/shops", status = 503, count = 2 }
      assert.equal(2, #assert(c:list_shops()))
      assert.equal(3, H.count("GET " .. BASE .. "/shops"))
    end)

    it("does not repeat a create that reached the server", function()
      local c = H.tablecheck()
      H.fault { method = "POST", path = BASE .. "/customers", status = 503, count = 1 }
      local res, err = c:create_customer(H.tc_customer())
      assert.is_nil(res)
      assert.equal(503, err.status)
      assert.is_true(err.outcome_unknown)
      assert.equal(1, H.count("POST " .. BASE .. "/customers"))
    end)

    -- The server stores the record, then its answer is replaced by a 200 of the wrong shape.
    it("reports a create whose answer has the wrong shape as outcome unknown, sent once", function()
      local c = H.tablecheck()
      local creates = {
        { "/customers", function() return c:create_customer(H.tc_customer()) end,
          function() return c:list_customers() end },
        { "/reservations", function()
            return c:create_reservation { shop_id = H.tc.shop_ids[1], pax = 2, start_at = "2030-01-29T19:15:00Z" }
          end, function() return c:list_reservations() end },
        { "/memberships", function()
            return c:create_membership { membership_program_id = H.tc.program_ids[1], code = "SHAPE-1" }
          end, function() return c:list_memberships() end },
      }
      for _, case in ipairs(creates) do
        for _, body in ipairs { '{"nope":1}', '{"customer":[1],"reservation":7}' } do
          H.reset()
          H.fault { method = "POST", path = BASE .. case[1], status = 200, body = body, after = true }
          local res, err = case[2]()
          assert.is_nil(res, case[1])
          assert.equal("decode", err.kind, case[1])
          assert.is_true(err.outcome_unknown, case[1])
          assert.matches("outcome is unknown", tostring(err), 1, true)
          assert.equal(1, H.count("POST " .. BASE .. case[1]), case[1])
          assert.equal(1, #assert(case[3]()), case[1]) -- the server acted, once
        end
      end
    end)

    it("reports a non-repeatable amend whose answer has the wrong shape as outcome unknown", function()
      local c = H.tablecheck()
      local cust = assert(c:create_customer(H.tc_customer { phones = { "+12061112222" } }))
      local path = BASE .. "/customers/" .. cust.id
      H.fault { method = "PUT", path = path, status = 200, body = '{"customer":"saved"}', after = true }
      local res, err = c:update_customer(cust.id, { phones = { "+14253334444" } }) -- appends
      assert.is_nil(res)
      assert.is_true(err.outcome_unknown)
      assert.equal(1, H.count("PUT " .. path))
      assert.same({ "+12061112222", "+14253334444" }, assert(c:get_customer(cust.id)).phones)
      -- a repeatable amend may be sent again, so its outcome is not in doubt
      H.fault { method = "PUT", path = path, status = 200, body = '{"customer":"saved"}', after = true }
      res, err = c:update_customer(cust.id, { first_name = "Same" })
      assert.is_nil(res)
      assert.equal("decode", err.kind)
      assert.is_nil(err.outcome_unknown)
    end)

    it("retries a create that never left the machine", function()
      local c = H.tablecheck { base_url = "http://127.0.0.1:1/api/crm/v1" }
      local res, err = c:create_customer(H.tc_customer())
      assert.is_nil(res)
      assert.equal("transport", err.kind)
      assert.is_false(err.sent)
      assert.equal(4, err.attempts)
    end)

    it("reports a delete whose lost answer is retried into a 404 as done", function()
      local c = H.tablecheck()
      local cust = assert(c:create_customer(H.tc_customer()))
      local path = BASE .. "/customers/" .. cust.id
      -- the server deletes, then the answer is lost; the retry finds nothing left
      H.fault { method = "DELETE", path = path, status = 503, after = true, count = 1 }
      assert.is_true(c:delete_customer(cust.id))
      assert.equal(2, H.count("DELETE " .. path))
      assert.equal(404, select(2, c:get_customer(cust.id)).status)
      -- a record that never existed is still an error, after one request
      local res, err = c:delete_membership(MISSING)
      assert.is_nil(res)
      assert.equal(404, err.status)
      assert.equal(1, H.count("DELETE " .. BASE .. "/memberships/" .. MISSING))
    end)

    it("does not repeat an amend that adds a shop memo or destroys a nested object", function()
      local c = H.tablecheck()
      local cust = assert(c:create_customer(H.tc_customer { phones = { "+12061112222", "+14253334444" } }))
      local path = BASE .. "/customers/" .. cust.id
      H.fault { method = "PUT", path = path, status = 503, after = true, count = 2 }
      local _, err = c:update_customer(cust.id, { shop_memos = { { shop_id = H.tc.shop_ids[1], memo = "VIP" } } })
      assert.equal(503, err.status)
      assert.is_true(err.outcome_unknown)
      assert.equal(1, H.count("PUT " .. path))
      assert.equal(1, #assert(c:get_customer(cust.id)).shop_memos) -- applied once, not twice
      _, err = c:update_customer(cust.id, { phones = { { id = cust.phone_objects[2].id, _destroy = true } } })
      assert.is_true(err.outcome_unknown) -- not resent into a 422 that would hide the success
      assert.equal(2, H.count("PUT " .. path))
      assert.same({ "+12061112222" }, assert(c:get_customer(cust.id)).phones)
    end)

    it("retries an amend that can be repeated, but not one that appends", function()
      local c = H.tablecheck()
      local cust = assert(c:create_customer(H.tc_customer()))
      local path = BASE .. "/customers/" .. cust.id
      H.fault { method = "PUT", path = path, status = 503, count = 1 }
      assert.equal("Again", assert(c:update_customer(cust.id, { first_name = "Again" })).first_name)
      assert.equal(2, H.count("PUT " .. path))
      H.fault { method = "PUT", path = path, status = 503, count = 1 }
      local _, err = c:update_customer(cust.id, { phones = { "+12065550199" } })
      assert.equal(503, err.status)
      assert.equal(3, H.count("PUT " .. path))
      assert.same(cust.phones, assert(c:get_customer(cust.id)).phones)
    end)
  end)
end)

describe("TableCheck polling waits", function()
  it("checks the polling waits' options the same way for merges and images, sending nothing", function()
    H.reset()
    local tc = H.tablecheck()
    local id = "5ed64e2c9551e80639a4dcac"
    local _, e1 = tc:wait_for_images(id, { timeout = -1 })
    assert.equal("options.timeout", e1.field)
    local _, e2 = tc:wait_for_merge(id, { "5ed64e2c9551e80639a4dcad" }, { interval = 0 })
    assert.equal("options.interval", e2.field)
    local _, e3 = tc:merge_customers(id, { "5ed64e2c9551e80639a4dcad" }, { wait = { every = 1 } })
    assert.equal("wait.every", e3.field)
    local _, e4 = tc:wait_for_images(id, "soon")
    assert.equal("options", e4.field)
    assert.equal(0, H.total())
  end)
end)
