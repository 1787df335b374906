-- What crm prints never carries a secret or the PII it sent, and what is not PII survives.
local H = require "helper"
local cjson = require "cjson"
local errors = require "crm.error"

local GUID = "0b7d3f0e-1111-4a2b-9c3d-000000000001"

local strings_in, assert_absent = H.strings_in, H.assert_absent

describe("errors echoing secrets and PII", function()
  before_each(function() H.reset() end)

  it("redact field, code and request_id as well as the message (Toast)", function()
    local c = H.toast()
    local token = assert(c:login())
    local email = "echo.me@example.org"
    H.fault { path = "/crm/v1/customers/search", status = 400, count = 1,
              body = cjson.encode { status = 400, message = "bad " .. email,
                                    fieldName = "Bearer " .. token, code = H.client_secret,
                                    requestId = email } }
    local _, err = c:search_customers { email = email }
    assert.equal(400, err.status)
    local s = tostring(err)
    assert_absent(s, { token, H.client_secret, email })
    for _, k in ipairs { "message", "field", "code", "request_id" } do
      assert_absent(tostring(err[k]), { token, H.client_secret, email })
    end
    assert.matches("field=", s)
    assert.matches("request_id=", s)
  end)

  it("redact the API key wherever a TableCheck answer echoes it", function()
    local tc = H.tablecheck()
    H.fault { path = "/api/crm/v1/customers/", status = 422, count = 1,
              body = cjson.encode { errors = { { code = H.tablecheck_key, field = H.tablecheck_key,
                                                 message = "key " .. H.tablecheck_key } } } }
    local _, err = tc:get_customer("5ed64e249551e80639a4d995")
    assert.equal(422, err.status)
    assert_absent(tostring(err), { H.tablecheck_key })
    assert_absent(cjson.encode(err), { H.tablecheck_key })
  end)

  it("redact a non-JSON 200 whose Content-Type echoes the key", function()
    local tc = H.tablecheck()
    H.fault { path = "/api/crm/v1/customers/", status = 200, count = 10, body = "<html>oops</html>",
              content_type = "text/html; key=" .. H.tablecheck_key }
    local _, err = tc:get_customer("5ed64e249551e80639a4d995")
    assert.equal("decode", err.kind)
    assert.matches("text/html", err.message)
    assert_absent(tostring(err), { H.tablecheck_key })
    assert_absent(err.message, { H.tablecheck_key })
  end)

  it("hold no secret: cjson.encode(err) writes none and there is no _secrets field", function()
    local c = H.toast()
    local token = assert(c:login())
    H.fault { path = "/crm/v1/customers/", status = 500, count = 5,
              body = cjson.encode { message = "token " .. token .. " secret " .. H.client_secret } }
    local _, err = c:get_customer(GUID)
    assert.is_nil(err._secrets)
    local encoded = cjson.encode(err)
    assert_absent(encoded, { token, H.client_secret })
    assert_absent(table.concat(strings_in(err), "\n"), { token, H.client_secret })
  end)

  it("redact the exact names, emails and phones this client sent", function()
    local c = H.toast()
    H.fault { path = "/crm/v1/customers", method = "POST", status = 400, count = 1,
              body = cjson.encode { message = "Zebedee Quux at 2065550111 and zq@example.org rejected" } }
    local _, err = c:create_customer { firstName = "Zebedee", lastName = "Quux",
                                       email = "zq@example.org", phone = "2065550111" }
    local s = tostring(err)
    assert_absent(s, { "Zebedee", "Quux", "2065550111", "zq@example.org" })
    assert.matches("rejected", s)
  end)
end)

describe("the error body", function()
  before_each(function() H.reset() end)

  it("is scrubbed like the message: secrets, sent PII, bearer text, emails, phones", function()
    local c = H.toast()
    local token = assert(c:login())
    H.fault { path = "/crm/v1/customers", method = "POST", status = 400, count = 1,
              body = cjson.encode { message = "bad Leaky", errors = { {
                detail = "leak.check@example.org / other.person@example.com / 206.555.0100 / Bearer "
                  .. token .. " / Bearer abc.def.ghi / " .. H.client_secret } } } }
    local _, err = c:create_customer { firstName = "Leaky", lastName = "Person",
                                       email = "leak.check@example.org" }
    assert.equal(400, err.status)
    local encoded = cjson.encode(err)
    assert_absent(encoded, { "Leaky", "leak.check", "other.person", "555.0100", "abc.def.ghi", token,
                             H.client_secret })
    assert.matches("<email>", err.body.errors[1].detail)
    assert.matches("Bearer <redacted>", err.body.errors[1].detail)
  end)
end)

describe("the client table", function()
  it("exposes no secret, token or Authorization line, before and after login", function()
    local c = H.toast()
    local needles = { H.client_secret }
    local before = table.concat(strings_in(c), "\n")
    assert_absent(before, needles)
    local token = assert(c:login())
    assert(c:get_customer(assert(c:create_customer(H.customer())).guid))
    assert.is_nil(c.client_secret)
    assert.is_nil(c.token)
    assert_absent(table.concat(strings_in(c), "\n"), { H.client_secret, token })
    local tc = H.tablecheck()
    assert(tc:list_shops())
    assert_absent(table.concat(strings_in(tc), "\n"), { H.tablecheck_key })
  end)
end)

describe("redaction by shape", function()
  it("covers every email validation accepts", function()
    for _, email in ipairs { "josé.müller@exämple.de", "a@b.c", "o'brien@example.org",
                             "first+tag@sub.example.co.uk", "UPPER@EXAMPLE.ORG" } do
      local s = tostring(errors.new("http", "guest " .. email .. " exists"))
      assert.equal("crm http: guest <email> exists", s, email)
    end
  end)

  it("redacts phone-shaped text: a + or separators", function()
    for _, phone in ipairs { "+12065550100", "+1 (206) 555-0100", "206.555.0100", "206-555-0100",
                             "(206) 555 0100", "+44 20 7946 0958" } do
      local s = errors.redact("call " .. phone .. " now")
      assert.equal("call <phone> now", s, phone)
    end
  end)

  it("spares GUIDs, 24-hex ids, amounts, counts, dates and paths", function()
    local keep = {
      "customer a0b12345-6789-4bcd-8ef0-123456789abc not found",
      "customer 00000000-0000-0000-0000-000000000000 not found",
      "shop 5ed64e249551e80639a4d995 has 1234567 guests",
      "amount must be at most 1000000000",
      "amount 12.50 added",
      "GET /crm/v1/customers/a0b12345-6789-4bcd-8ef0-123456789abc/creditSummary",
      "see /var/lib/crm/2024-03-05/1234567.json",
      "at 2018-06-16T15:01:14.000+0000",
      "page 3 of 12, 9999999 in total",
    }
    for _, text in ipairs(keep) do
      assert.equal(text, errors.redact(text))
    end
  end)

  it("keeps the ids people debug with in debug lines", function()
    H.reset()
    local lines = {}
    local c = H.toast { debug = function(l) lines[#lines + 1] = l end }
    local cust = assert(c:create_customer(H.customer { phone = "+1 206 555 0142" }))
    assert(c:get_customer(cust.guid))
    local all = table.concat(lines, "\n")
    assert.matches("/crm/v1/customers/" .. cust.guid:gsub("%-", "%%-"), all)
    assert_absent(all, { "555 0142", cust.email })
  end)
end)

describe("the debug hook", function()
  it("cannot break the call it reports on when it raises", function()
    H.reset()
    local calls = 0
    local c = H.toast { debug = function() calls = calls + 1 error("hook bug") end }
    local cust, err = c:create_customer(H.customer())
    assert.is_nil(err)
    assert.is_truthy(cust.guid)
    assert.is_true(calls >= 2)
  end)
end)
