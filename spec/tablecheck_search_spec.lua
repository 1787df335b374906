-- TableCheck customer_search: scroll paging, total_results, expiry (server- and client-side),
-- restart_on_expiry, and the checks on the query.
local cjson = require "cjson"
local core = require "crm.core"
local http = require "crm.http"
local H = require "helper"

local SEARCH = "POST /api/crm/v1/customer_search"

local function ids_of(it)
  local ids, n = {}, 0
  for c, err in it do
    assert(c, err and tostring(err))
    assert.is_nil(ids[c.id], "customer yielded twice")
    ids[c.id] = true
    n = n + 1
  end
  return ids, n
end

describe("TableCheck iter_search_customers", function()
  before_each(function() H.reset() end)

  it("follows scroll_id 200 at a time, sending only the scroll_id after the first page", function()
    H.tc_seed(450, "Scroll")
    local t = H.recording_transport()
    local c = H.tablecheck { transport = t }
    local it = c:iter_search_customers { first_name = "Scroll", has_email = true }
    local first = assert(it())
    assert.equal("Scroll", first.first_name)
    assert.equal(450, it.total) -- known after the first page, long before the end
    local _, n = ids_of(it)
    assert.equal(449, n)
    assert.equal(4, #t.log) -- 200 + 200 + 50, then an empty page
    assert.equal(4, H.count(SEARCH))
    local bodies = {}
    for i, req in ipairs(t.log) do bodies[i] = cjson.decode(req.body) end
    assert.same({ first_name = "Scroll", has_email = true }, bodies[1])
    for i = 2, 4 do
      assert.same({ "scroll_id" }, (function()
        local keys = {}
        for k in pairs(bodies[i]) do keys[#keys + 1] = k end
        return keys
      end)())
      assert.is_string(bodies[i].scroll_id)
      assert.not_equal(bodies[i - 1].scroll_id, bodies[i].scroll_id)
    end
    assert.equal(4, it.pages)
  end)

  it("stops on an empty page, not on a short one", function()
    H.config { tablecheck_search_page_size = 2 }
    H.tc_seed(3, "Short")
    local _, n = ids_of(H.tablecheck():iter_search_customers { first_name = "Short" })
    assert.equal(3, n)
    assert.equal(3, H.count(SEARCH)) -- 2, 1, then 0
  end)

  it("returns only what the query matches and exposes both phone shapes", function()
    H.tc_seed(3, "Jim")
    H.tc_seed(2, "Ann")
    local it = H.tablecheck():iter_search_customers { first_name = "jim", phone = "+1206" }
    local n = 0
    for c in it do
      assert.equal("Jim", c.first_name)
      assert.matches("^%+1206", c.phones[1])
      -- what the server sent, as it sent it: search results carry no phone_objects ...
      assert.not_matches("phone_objects", http.encode(c), 1, true)
      -- ... and they are there when asked for
      assert.equal(c.phones[1], c.phone_objects[1].number)
      assert.equal(c.emails[1], c.email_objects[1].email)
      n = n + 1
    end
    assert.equal(3, n)
    assert.equal(3, it.total)
  end)

  it("yields a decode error for a page of an unexpected shape, never a Lua error", function()
    local cases = {
      { '{"customers":[{"id":"a"},5],"pagination":{"scroll_id":"s"}}', "not an object" },
      { '{"customers":[{"id":"a","emails":"a@example.com"}]}', "emails is not an array" },
      { '{"customers":null}', "customers array" },
      { '{"customers":{"id":"a"}}', "customers array" },
    }
    local c = H.tablecheck()
    for _, case in ipairs(cases) do
      H.fault { path = "/api/crm/v1/customer_search", status = 200, body = case[1], count = 1 }
      local ok, items, err = pcall(function()
        return c:iter_search_customers({}, { restart_on_expiry = true }):all()
      end)
      assert(ok, items)
      assert.is_nil(items)
      assert.equal("decode", err.kind)
      assert.matches(case[2], err.message, 1, true)
      H.fault { path = "/api/crm/v1/customer_search", status = 200, body = case[1], count = 1 }
      local groups, derr = c:find_duplicates()
      assert.is_nil(groups)
      assert.equal("decode", derr.kind)
    end
  end)

  it("stops with no_scroll_id when a page has no scroll_id and results remain", function()
    local page = '{"customers":[{"id":"5f0000000000000000000001"}],"pagination":{"total_results":%d}}'
    H.fault { path = "/api/crm/v1/customer_search", status = 200, body = page:format(3), count = 1 }
    local c = H.tablecheck()
    local items, err = c:iter_search_customers():all()
    assert.is_nil(items)
    assert.equal("no_scroll_id", err.code)
    assert.equal(1, #err.partial)
    -- the last page may come without one: then the search is simply over
    H.fault { path = "/api/crm/v1/customer_search", status = 200, body = page:format(1), count = 1 }
    assert.equal(1, #assert(c:iter_search_customers():all()))
    assert.equal(2, H.count(SEARCH))
  end)

  it("reads synthetic customers beyond the stored ones", function()
    H.config { tablecheck_synthetic_customers = 500 }
    H.tc_seed(5, "Real")
    local it = H.tablecheck():iter_search_customers()
    local _, n = ids_of(it)
    assert.equal(505, n)
    assert.equal(505, it.total)
  end)

  describe("an expired scroll", function()
    it("is recognised from the server's answer and says so", function()
      H.config { tablecheck_search_page_size = 2, tablecheck_scroll_ttl = 0.3 }
      H.tc_seed(5, "Slow")
      local it = H.tablecheck():iter_search_customers()
      assert.equal(2, #assert(it:next_page()))
      core.sleep(0.5)
      local page, err = it:next_page()
      assert.is_false(page)
      assert.equal("timeout", err.kind)
      assert.equal("server", err.expired_by)
      assert.equal(404, err.status)
      assert.equal("scroll_expired", err.code)
      assert.matches("expired", tostring(err), 1, true)
      assert.matches("restart_on_expiry", tostring(err), 1, true)
      assert.equal(2, H.count(SEARCH))
      assert.is_nil(it()) -- reported once, then the iterator is over
    end)

    it("is caught on the client before sending, after 5 minutes between pages", function()
      H.config { tablecheck_search_page_size = 2 }
      H.tc_seed(5, "Idle")
      local clock = H.manual_clock()
      local it = H.tablecheck({ clock = clock }):iter_search_customers()
      assert(it:next_page())
      clock.advance(299)
      assert(it:next_page()) -- within 5 minutes: fine
      clock.advance(301)
      local page, err = it:next_page()
      assert.is_false(page)
      assert.equal("scroll_expired", err.code)
      assert.equal("client", err.expired_by)
      assert.matches("301s", tostring(err), 1, true)
      assert.equal(2, H.count(SEARCH)) -- the stale scroll_id was never sent
    end)

    it("honours a shorter scroll_ttl option", function()
      H.config { tablecheck_search_page_size = 2 }
      H.tc_seed(3, "Ttl")
      local clock = H.manual_clock()
      local it = H.tablecheck({ scroll_ttl = 20, clock = clock }):iter_search_customers()
      assert(it:next_page())
      clock.advance(21)
      local _, err = it:next_page()
      assert.equal("client", err.expired_by)
      assert.matches("lasts 20s", err.message, 1, true)
      assert.equal(1, H.count(SEARCH))
    end)

    it("restarts the search with restart_on_expiry, without repeating customers", function()
      H.config { tablecheck_search_page_size = 2 }
      H.tc_seed(5, "Again")
      local it = H.tablecheck():iter_search_customers({ first_name = "Again" }, { restart_on_expiry = true })
      local first = assert(it:next_page())
      -- the next scroll request finds its scroll expired, as the simulator words it
      H.fault { path = "/api/crm/v1/customer_search", status = 404, count = 1,
                body = { errors = { { code = "scroll_expired", message = "scroll_id has expired" } } } }
      local ids = { [first[1].id] = true, [first[2].id] = true }
      local rest, n = ids_of(it)
      for id in pairs(rest) do
        assert.is_nil(ids[id])
        ids[id] = true
      end
      assert.equal(3, n)
      assert.equal(1, it.restarts)
      -- expired scroll, the query again (its first page skipped as already seen), then on
      assert.equal(6, H.count(SEARCH))
    end)

    it("restarts after a client-side expiry too", function()
      H.config { tablecheck_search_page_size = 2 }
      H.tc_seed(4, "Clock")
      local clock = H.manual_clock()
      local t = H.recording_transport()
      local it = H.tablecheck({ clock = clock, transport = t })
        :iter_search_customers({ first_name = "Clock" }, { restart_on_expiry = true })
      assert(it:next_page())
      clock.advance(600)
      local _, n = ids_of(it)
      assert.equal(2, n)
      assert.equal(1, it.restarts)
      assert.same({ first_name = "Clock" }, cjson.decode(t.log[2].body)) -- started over
    end)

    it("gives up after max_restarts when every scroll expires", function()
      H.config { tablecheck_search_page_size = 1, tablecheck_scroll_ttl = 0.1 }
      H.tc_seed(3, "Never")
      H.fault { path = "/api/crm/v1/customer_search", delay = 0.2, count = 100 }
      local it = H.tablecheck():iter_search_customers({}, { restart_on_expiry = true, max_restarts = 1 })
      local items, err = it:all()
      assert.is_nil(items)
      assert.equal("scroll_expired", err.code)
      assert.equal(1, #err.partial)
      assert.equal(1, it.restarts)
      assert.equal(4, H.count(SEARCH))
    end)
  end)

  it("passes other errors through once", function()
    H.tc_seed(3, "Err")
    H.config { tablecheck_search_page_size = 1 }
    local it = H.tablecheck():iter_search_customers()
    assert(it())
    H.fault { path = "/api/crm/v1/customer_search", status = 400, count = 1 }
    local item, err = it()
    assert.is_false(item)
    assert.equal(400, err.status)
    assert.equal("http", err.kind)
    assert.is_nil(it())
  end)

  it("checks the query and the options before sending", function()
    local c = H.tablecheck()
    local cases = {
      { { firstname = "x" }, "firstname" },
      { { scroll_id = "abc" }, "scroll_id" },
      { { phone = "206555" }, "phone" },
      { { phone = "+1206abc" }, "phone" },
      { { has_email = "yes" }, "has_email" },
      { { created_at_min = "2024-01-01" }, "created_at_min" },
      { { event_date_min = "2024-01-01T00:00:00Z" }, "event_date_min" },
      { { locales = { "xx" } }, "locales[1]" },
      { { parent_shop_ids = { "shop" } }, "parent_shop_ids[1]" },
      { { reservation_pax_min = 1.5 }, "reservation_pax_min" },
      { { payment_average_amt_min = "lots" }, "payment_average_amt_min" },
      { { gender = "other" }, "gender" },
    }
    for _, case in ipairs(cases) do
      local item, err = c:iter_search_customers(case[1])()
      assert.is_false(item)
      assert.equal("validation", err.kind)
      assert.equal(case[2], err.field)
    end
    local item, err = c:iter_search_customers({}, { restart = true })()
    assert.is_false(item)
    assert.equal("restart", err.field)
    assert.equal(0, H.total())
    -- a prefix is a valid phone query, as in the guide's example
    assert(c:iter_search_customers({ phone = "+1206", payment_average_amt_min = 12.5 })() == nil)
  end)
end)
