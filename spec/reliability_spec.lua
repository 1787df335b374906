-- Requests that must not run twice, under faults that hide whether the server acted.
local H = require "helper"

describe("non-idempotent requests", function()
  before_each(function() H.reset() end)

  local function create(tc, email)
    return tc:create_customer { franchise_id = H.tc.franchise_id, first_name = "Once", last_name = "Only",
                                 emails = { email } }
  end

  local function stored(tc, email)
    local n = 0
    for c in tc:iter_search_customers { email = email } do
      assert(c)
      n = n + 1
    end
    return n
  end

  it("are sent once when the answer is lost on a reused connection", function()
    -- libcurl silently re-sends a request whose reused connection dies before any answer;
    -- a TableCheck create must get a connection of its own so that never happens.
    local tc = H.tablecheck()
    assert(tc:list_shops()) -- the connection is now warm and will be reused
    H.fault { path = "/api/crm/v1/customers", method = "POST", drop = true, after = true, count = 2 }
    local res, err = create(tc, "once@example.org")
    assert.is_nil(res)
    assert.is_true(err.outcome_unknown)
    assert.equal(1, H.count("POST /api/crm/v1/customers"))
    assert.equal(1, stored(tc, "once@example.org"))
  end)

  it("are retried when the request never left the machine", function()
    local tc = H.tablecheck { base_url = "http://127.0.0.1:1/api/crm/v1" }
    local res, err = create(tc, "never@example.org")
    assert.is_nil(res)
    assert.is_false(err.sent)
    assert.equal(4, err.attempts)
  end)

  it("are not retried after a 503, since the server may have acted", function()
    local tc = H.tablecheck()
    H.fault { path = "/api/crm/v1/customers", method = "POST", status = 503, count = 3 }
    local _, err = create(tc, "maybe@example.org")
    assert.equal(503, err.status)
    assert.equal(1, err.attempts)
    assert.matches("outcome is unknown", tostring(err))
  end)
end)
