-- Toast CRM v1 against the simulator: auth, customers, search, credit, and failure modes.
local crm = require "crm"
local H = require "helper"

local function now_toast() return crm.toast_time(os.time()) end

describe("Toast client", function()
  before_each(function() H.reset() end)

  describe("construction", function()
    local function refused(opts, field)
      local c, err = crm.toast(opts)
      assert.is_nil(c)
      assert.equal("validation", err.kind)
      assert.equal(field, err.field)
      return err
    end

    it("requires a restaurant guid and credentials", function()
      refused({ base_url = H.base_url, client_id = "a", client_secret = "b" }, "restaurant_guid")
      refused({ base_url = H.base_url, restaurant_guid = H.restaurant, client_id = "a" }, "client_secret")
      refused({ base_url = H.base_url, restaurant_guid = H.restaurant }, "client_id")
    end)

    it("refuses bad URLs, unknown options, header injection and insecure spellings", function()
      refused({ base_url = "ftp://x", restaurant_guid = H.restaurant, token = "tok-test" }, "base_url")
      refused({ base_url = H.base_url, restaurant_guid = H.restaurant, token = "tok-test", pageSize = 5 },
        "pageSize")
      refused({ base_url = H.base_url, restaurant_guid = "r\r\nX-Evil: 1", token = "tok-test" }, "restaurant_guid")
      refused({ base_url = H.base_url, restaurant_guid = H.restaurant, token = "tok-test", verify = false }, "verify")
      refused({ base_url = H.base_url, restaurant_guid = H.restaurant, token = "tok-test", timeout = -1 }, "timeout")
    end)

    it("sends nothing when constructed", function()
      H.toast()
      assert.equal(0, H.total())
    end)
  end)

  describe("authentication", function()
    it("logs in once and reuses the token", function()
      local c = H.toast()
      assert(c:create_customer(H.customer()))
      assert(c:search_customers { lastName = "Lovelace" })
      assert.equal(1, H.stats().logins)
      c:close()
    end)

    it("logs in again when the token has expired", function()
      H.config { toast_token_ttl = 1 }
      local c = H.toast()
      assert(c:create_customer(H.customer()))
      require("crm.core").sleep(1.1)
      assert(c:create_customer(H.customer()))
      assert.equal(2, H.stats().logins)
    end)

    it("logs in again once on a 401 and retries the call", function()
      local c = H.toast()
      assert(c:login())
      H.fault { path = "/crm/v1/customers", status = 401, count = 1 }
      local cust = assert(c:create_customer(H.customer()))
      assert.is_string(cust.guid)
      assert.equal(2, H.stats().logins)
    end)

    it("gives up after the single re-login when 401 persists", function()
      local c = H.toast()
      H.fault { path = "/crm/v1/customers", status = 401, count = 5 }
      local res, err = c:create_customer(H.customer())
      assert.is_nil(res)
      assert.equal("auth", err.kind)
      assert.equal(401, err.status)
      assert.equal(2, H.stats().logins)
    end)

    it("reports refused credentials as an auth error without the secret", function()
      local c = H.toast { client_secret = "wrong-secret-value" }
      local res, err = c:get_customer(crm.guid())
      assert.is_nil(res)
      assert.equal("auth", err.kind)
      assert.not_matches("wrong%-secret%-value", tostring(err))
    end)

    it("uses a fixed token and never logs in", function()
      local c = H.toast { client_id = false, client_secret = false, token = "not-a-real-token" }
      local res, err = c:get_customer(crm.guid())
      assert.is_nil(res)
      assert.equal("auth", err.kind)
      assert.equal(0, H.stats().logins)
      assert.not_matches("not%-a%-real%-token", tostring(err))
    end)
  end)

  describe("create_customer", function()
    it("adds a lowercase GUID and returns the customer", function()
      local c = H.toast()
      local input = H.customer()
      local cust = assert(c:create_customer(input))
      assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", cust.guid)
      assert.equal(cust.guid:lower(), cust.guid)
      assert.equal(input.firstName, cust.firstName)
      assert.equal("Customer", cust.entityType)
      assert.is_nil(input.guid) -- the caller's table is not modified
      assert.is_nil(cust.phone) -- JSON null reads as nil
    end)

    it("keeps a caller's GUID", function()
      local g = crm.guid()
      local cust = assert(H.toast():create_customer(H.customer { guid = g }))
      assert.equal(g, cust.guid)
    end)

    it("validates before sending anything", function()
      local c = H.toast()
      local cases = {
        { { lastName = "L", email = "a@b.co" }, "firstName" },
        { { firstName = "F", email = "a@b.co" }, "lastName" },
        { { firstName = "F", lastName = "L" }, "email" },
        { { firstName = "F", lastName = "L", email = "not-an-email" }, "email" },
        { { firstName = "F", lastName = "L", phone = "call me" }, "phone" },
        { { firstName = 42, lastName = "L", email = "a@b.co" }, "firstName" },
        { { firstName = "F", lastName = "L", email = "a@b.co", guid = "nope" }, "guid" },
        { { firstName = "F", lastName = "L", email = "a@b.co", firstname = "typo" }, "firstname" },
        { { firstName = "F\255", lastName = "L", email = "a@b.co" }, "firstName" },
        { { firstName = ("x"):rep(300), lastName = "L", email = "a@b.co" }, "firstName" },
      }
      for _, case in ipairs(cases) do
        local res, err = c:create_customer(case[1])
        assert.is_nil(res)
        assert.equal("validation", err.kind)
        assert.equal(case[2], err.field)
        assert.matches(case[2], tostring(err), 1, true)
      end
      assert.equal(0, H.total())
    end)

    it("confirms a 202 by posting the same GUID until it gets 200", function()
      H.config { toast_accept_202 = 2 }
      local c = H.toast()
      local cust = assert(c:create_customer(H.customer { lastName = "Pending" }))
      assert.equal(3, H.count("POST /crm/v1/customers"))
      local found = assert(c:search_customers { lastName = "Pending" })
      assert.equal(1, #found)
      assert.equal(cust.guid, found[1].guid)
    end)

    it("returns a timeout that carries the GUID when 202 never ends, and nothing is lost", function()
      H.config { toast_accept_202 = 1000 }
      local c = H.toast()
      local res, err = c:create_customer(H.customer { lastName = "Slow" }, { confirm_timeout = 0.3 })
      assert.is_nil(res)
      assert.equal("timeout", err.kind)
      assert.is_true(err.pending)
      assert.matches("^%x+%-", err.guid)
      assert.matches(err.guid, tostring(err), 1, true)
      -- Later the record is processed; the carried GUID finds it.
      H.config { toast_accept_202 = 0 }
      local again = assert(c:create_customer(H.customer { lastName = "Slow", guid = err.guid }))
      assert.equal(err.guid, again.guid)
      assert.equal(err.guid, assert(c:get_customer(err.guid)).guid)
    end)

    it("retries 5xx with the same GUID and creates one record", function()
      H.fault { method = "POST", path = "/crm/v1/customers", status = 503, count = 2 }
      local c = H.toast()
      local cust = assert(c:create_customer(H.customer { lastName = "Retried" }))
      assert.equal(1, #assert(c:search_customers { lastName = "Retried" }))
      assert.is_string(cust.guid)
    end)

    it("returns the error with attempts and request_id when 5xx persists", function()
      H.fault { method = "POST", path = "/crm/v1/customers", status = 500, count = 10 }
      local res, err = H.toast():create_customer(H.customer())
      assert.is_nil(res)
      assert.equal("http", err.kind)
      assert.equal(500, err.status)
      assert.equal(4, err.attempts)
      assert.is_string(err.request_id)
      assert.is_true(err.retryable)
    end)

    it("does not retry a 400", function()
      H.fault { method = "POST", path = "/crm/v1/customers", status = 400, count = 3 }
      local res, err = H.toast():create_customer(H.customer())
      assert.is_nil(res)
      assert.equal(400, err.status)
      assert.equal(1, H.count("POST /crm/v1/customers"))
    end)
  end)

  describe("get_customer", function()
    it("gets a customer by GUID", function()
      local c = H.toast()
      local cust = assert(c:create_customer(H.customer()))
      local got = assert(c:get_customer(cust.guid))
      assert.equal(cust.email, got.email)
    end)

    it("maps 404 to an http error", function()
      local res, err = H.toast():get_customer(crm.guid())
      assert.is_nil(res)
      assert.equal("http", err.kind)
      assert.equal(404, err.status)
      assert.is_false(err.retryable)
    end)

    it("refuses ids that would change the path, sending nothing", function()
      local c = H.toast()
      for _, bad in ipairs { "../admin", "a/b", "a?b", "a#b", "a\r\nb", "", 12 } do
        local res, err = c:get_customer(bad)
        assert.is_nil(res)
        assert.equal("customerId", err.field)
      end
      assert.equal(0, H.total())
    end)
  end)

  describe("search", function()
    it("finds by any query field", function()
      local c = H.toast()
      local cust = assert(c:create_customer(H.customer { phone = "+1 206 555 0100", lastName = "Findme" }))
      for _, q in ipairs { { email = cust.email }, { lastName = "Findme" }, { phone = "+1 206 555 0100" },
                           { firstName = cust.firstName, lastName = "Findme" } } do
        local found = assert(c:search_customers(q))
        assert.equal(1, #found)
        assert.equal(cust.guid, found[1].guid)
      end
    end)

    it("returns an empty array on 204", function()
      local found = assert(H.toast():search_customers { email = "nobody@example.org" })
      assert.same({}, found)
    end)

    it("validates the query and the page size before sending", function()
      local c = H.toast()
      local _, e1 = c:search_customers {}
      assert.equal("query", e1.field)
      local _, e2 = c:search_customers { nickname = "x" }
      assert.equal("query.nickname", e2.field)
      local _, e3 = c:search_customers({ lastName = "x" }, { pageSize = 51 })
      assert.equal("pageSize", e3.field)
      assert.equal(0, H.total())
    end)

    it("iterates across several pages", function()
      local c = H.toast()
      for _ = 1, 7 do assert(c:create_customer(H.customer { lastName = "Paged" })) end
      local it = c:iter_search_customers({ lastName = "Paged" }, { pageSize = 3 })
      local n = 0
      for cust, err in it do
        assert.is_nil(err)
        assert.equal("Paged", cust.lastName)
        n = n + 1
      end
      assert.equal(7, n)
      assert.equal(3, it.pages)
      assert.is_nil(it.err)
    end)

    it("stops on a full last page followed by 204", function()
      local c = H.toast()
      for _ = 1, 4 do assert(c:create_customer(H.customer { lastName = "Even" })) end
      local it = c:iter_search_customers({ lastName = "Even" }, { pageSize = 2 })
      local all = assert(it:all())
      assert.equal(4, #all)
      assert.equal(3, H.count("POST /crm/v1/customers/search"))
    end)

    it("offers a page-wise variant", function()
      local c = H.toast()
      for _ = 1, 5 do assert(c:create_customer(H.customer { lastName = "Pages" })) end
      local sizes = {}
      for page in c:iter_search_customers({ lastName = "Pages" }, { pageSize = 2 }):each_page() do
        sizes[#sizes + 1] = #page
      end
      assert.same({ 2, 2, 1 }, sizes)
    end)

    it("reports an error in the middle of paging", function()
      local c = H.toast()
      for _ = 1, 5 do assert(c:create_customer(H.customer { lastName = "Broken" })) end
      local it = c:iter_search_customers({ lastName = "Broken" }, { pageSize = 2 })
      local first = it()
      assert.equal("Broken", first.lastName)
      assert(it())
      H.fault { path = "/crm/v1/customers/search", status = 400, count = 1 }
      local item, err = it()
      assert.is_false(item)
      assert.equal(400, err.status)
      assert.equal(err, it.err)
      assert.is_nil(it())
    end)

    it("yields a validation error from an iterator built on bad input", function()
      local items = {}
      for item, err in H.toast():iter_search_customers {} do items[#items + 1] = { item, err } end
      assert.equal(1, #items)
      assert.is_false(items[1][1])
      assert.equal("validation", items[1][2].kind)
    end)
  end)

  describe("find_or_create", function()
    it("creates once, then finds the same record", function()
      local c = H.toast()
      local input = H.customer()
      local a, _, how1 = assert(c:find_or_create(input))
      local b, _, how2 = assert(c:find_or_create(input))
      assert.equal("created", how1)
      assert.equal("found", how2)
      assert.equal(a.guid, b.guid)
    end)

    it("finds by phone when there is no email", function()
      local c = H.toast()
      local a = assert(c:create_customer { firstName = "P", lastName = "Q", phone = "+15550001111" })
      local b, _, how = assert(c:find_or_create { firstName = "P", lastName = "Q", phone = "+15550001111" })
      assert.equal("found", how)
      assert.equal(a.guid, b.guid)
    end)
  end)

  describe("credit", function()
    local c, cust
    before_each(function()
      c = H.toast()
      cust = assert(c:create_customer(H.customer()))
    end)

    it("adds value and returns the transaction", function()
      local t = assert(c:add_credit(cust.guid, { amount = 10.5, localCreatedDate = now_toast(),
                                                 note = "welcome" }))
      assert.equal("ADD_VALUE", t.transactionType)
      assert.equal(10.5, t.amount)
      assert.equal(cust.guid, t.customer.guid)
      assert.equal(t.guid:lower(), t.guid)
    end)

    it("validates the transaction before sending", function()
      local before = H.total()
      local date = now_toast()
      local cases = {
        { { amount = 5, localCreatedDate = date, transactionType = "REDEMPTION" }, "transactionType" },
        { { amount = 0, localCreatedDate = date }, "amount" },
        { { amount = -3, localCreatedDate = date }, "amount" },
        { { amount = 0 / 0, localCreatedDate = date }, "amount" },
        { { amount = math.huge, localCreatedDate = date }, "amount" },
        { { amount = "10", localCreatedDate = date }, "amount" },
        { { amount = 5 }, "localCreatedDate" },
        { { amount = 5, localCreatedDate = "2018-06-16 15:01" }, "localCreatedDate" },
        { { amount = 5, localCreatedDate = date, guid = "x" }, "guid" },
      }
      for _, case in ipairs(cases) do
        local res, err = c:add_credit(cust.guid, case[1])
        assert.is_nil(res)
        assert.equal("validation", err.kind)
        assert.equal(case[2], err.field)
      end
      assert.equal(before, H.total())
    end)

    it("retries with the same GUID, so value is never added twice", function()
      H.fault { method = "POST", path = "/crm/v1/customers/" .. cust.guid .. "/creditTransactions",
                status = 502, count = 2 }
      local t = assert(c:add_credit(cust.guid, { amount = 7, localCreatedDate = now_toast() }))
      -- Replaying the same GUID later must not add value either.
      assert(c:add_credit(cust.guid, { amount = 7, localCreatedDate = now_toast(), guid = t.guid }))
      local summary = assert(c:get_credit_summary(cust.guid))
      assert.equal(7, summary.amount)
      assert.equal(1, #assert(c:list_customer_credit_transactions(cust.guid)))
    end)

    it("carries the GUID on failure so the caller can retry the same transaction", function()
      H.fault { method = "POST", path = "/crm/v1/customers/" .. cust.guid .. "/creditTransactions",
                status = 503, count = 4 }
      local res, err = c:add_credit(cust.guid, { amount = 3, localCreatedDate = now_toast() })
      assert.is_nil(res)
      assert.matches("^%x+%-", err.guid)
      local t = assert(c:add_credit(cust.guid, { amount = 3, localCreatedDate = now_toast(),
                                                 guid = err.guid }))
      assert.equal(err.guid, t.guid)
    end)

    it("summarises credit with the earliest expiration", function()
      assert.same({ amount = 0 }, { amount = assert(c:get_credit_summary(cust.guid)).amount })
      assert(c:add_credit(cust.guid, { amount = 5, localCreatedDate = now_toast() }))
      assert(c:add_credit(cust.guid, { amount = 2.5, localCreatedDate = now_toast() }))
      local s = assert(c:get_credit_summary(cust.guid))
      assert.equal(7.5, s.amount)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT", s.earliestExpirationDate)
    end)

    it("lists a customer's transactions newest first, across pages", function()
      local guids = {}
      for i = 1, 5 do
        guids[i] = assert(c:add_credit(cust.guid, { amount = i, localCreatedDate = now_toast() })).guid
      end
      local seen = {}
      for t in c:iter_customer_credit_transactions(cust.guid, { pageSize = 2 }) do
        seen[#seen + 1] = t.guid
      end
      assert.same({ guids[5], guids[4], guids[3], guids[2], guids[1] }, seen)
    end)

    it("returns an empty list on 204 for a customer without transactions", function()
      assert.same({}, assert(c:list_customer_credit_transactions(cust.guid)))
    end)

    it("lists the restaurant's transactions in a date range", function()
      local t = assert(c:add_credit(cust.guid, { amount = 4, localCreatedDate = now_toast() }))
      local inside = assert(c:list_credit_transactions { startDate = "2000-01-01T00:00:00.000+0000",
                                                    endDate = "2999-01-01T00:00:00.000+0000" })
      assert.equal(t.guid, inside[1].guid)
      local outside = assert(c:list_credit_transactions { startDate = "2000-01-01T00:00:00.000+0000",
                                                     endDate = "2000-01-02T00:00:00.000+0000" })
      assert.same({}, outside)
      local n = 0
      for _ in c:iter_credit_transactions { pageSize = 1 } do n = n + 1 end
      assert.equal(1, n)
      local _, err = c:list_credit_transactions { startDate = "yesterday" }
      assert.equal("startDate", err.field)
    end)

    it("gets one transaction by id, and 404 for an unknown one", function()
      local t = assert(c:add_credit(cust.guid, { amount = 1, localCreatedDate = now_toast() }))
      assert.equal(1, assert(c:get_credit_transaction(t.guid)).amount)
      local _, err = c:get_credit_transaction(crm.guid())
      assert.equal(404, err.status)
    end)
  end)

  describe("transport", function()
    it("keeps one connection alive across sequential calls", function()
      local c = H.toast()
      local cust = assert(c:create_customer(H.customer()))
      for _ = 1, 20 do assert(c:get_customer(cust.guid)) end
      assert.equal(1, H.stats().connections)
    end)
  end)

  describe("failure modes", function()
    it("reports a dropped connection as a transport error after retrying", function()
      H.fault { path = "/crm/v1/customers/", drop = true, count = 10 }
      local res, err = H.toast():get_customer(crm.guid())
      assert.is_nil(res)
      assert.equal("transport", err.kind)
      assert.matches("^CURLE_", err.code)
      assert.equal(4, err.attempts)
    end)

    it("recovers from one dropped connection", function()
      local c = H.toast()
      local cust = assert(c:create_customer(H.customer()))
      H.fault { path = "/crm/v1/customers/", drop = true, count = 1 }
      assert.equal(cust.guid, assert(c:get_customer(cust.guid)).guid)
    end)

    it("creates once when the answer to a processed create is lost", function()
      local c = H.toast()
      -- The server stores the customer, then the connection drops before the answer.
      H.fault { method = "POST", path = "/crm/v1/customers", drop = true, after = true, count = 1 }
      local cust = assert(c:create_customer(H.customer { lastName = "LostAnswer" }))
      local found = assert(c:search_customers { lastName = "LostAnswer" })
      assert.equal(1, #found)
      assert.equal(cust.guid, found[1].guid)
      assert.equal(2, H.count("POST /crm/v1/customers"))
    end)

    it("adds credit once when the connection drops mid-body after the server added it", function()
      local c = H.toast()
      local cust = assert(c:create_customer(H.customer()))
      H.fault { method = "POST", path = "/crm/v1/customers/" .. cust.guid .. "/creditTransactions",
                partial = true, after = true, count = 1 }
      assert(c:add_credit(cust.guid, { amount = 12, localCreatedDate = now_toast() }))
      assert.equal(12, assert(c:get_credit_summary(cust.guid)).amount)
      assert.equal(1, #assert(c:list_customer_credit_transactions(cust.guid)))
    end)

    it("reports a body cut off mid-way as a transport error", function()
      H.fault { path = "/crm/v1/customers/", status = 200, body = '{"guid":"abc","firstName":"x"}',
                partial = true, count = 10 }
      local res, err = H.toast():get_customer(crm.guid())
      assert.is_nil(res)
      assert.equal("transport", err.kind)
      assert.equal("CURLE_PARTIAL_FILE", err.code)
    end)

    it("reports a body that is not JSON as a decode error", function()
      -- every attempt gets it: whether a spoiled 2xx is retried is crm.http's business
      H.fault { path = "/crm/v1/customers/", status = 200, body = "{\"guid\": tru", count = 10 }
      local res, err = H.toast():get_customer(crm.guid())
      assert.is_nil(res)
      assert.equal("decode", err.kind)
      assert.equal(200, err.status)
    end)

    it("reports an array where an object belongs as a decode error", function()
      H.fault { path = "/crm/v1/customers/", status = 200, body = "[1,2,3]", count = 1 }
      local _, err = H.toast():get_customer(crm.guid())
      assert.equal("decode", err.kind)
    end)

    it("times out a slow response", function()
      H.fault { path = "/crm/v1/customers/", delay = 2, count = 1 }
      local c = H.toast { timeout = 0.3, retry = { max_attempts = 1 } }
      local res, err = c:get_customer(crm.guid())
      assert.is_nil(res)
      assert.equal("timeout", err.kind)
      assert.equal("CURLE_OPERATION_TIMEDOUT", err.code)
    end)

    it("honours Retry-After on 429", function()
      H.fault { path = "/crm/v1/customers/", status = 429, retry_after = 1, count = 1 }
      local c = H.toast()
      local cust = assert(c:create_customer(H.customer()))
      local t0 = require("crm.core").now()
      assert(c:get_customer(cust.guid))
      assert.is_true(require("crm.core").now() - t0 >= 0.95)
    end)

    it("returns an error, not a crash, on a closed client; close is idempotent", function()
      local c = H.toast()
      c:close()
      c:close()
      local res, err = c:get_customer(crm.guid())
      assert.is_nil(res)
      assert.equal("transport", err.kind)
      assert.matches("closed", tostring(err))
      assert.equal(0, H.total())
    end)
  end)
end)
