-- crm.validate on its own: the shared input rules both clients build on (no HTTP here; the
-- client specs show the same rules stop requests before they are sent).
local validate = require "crm.validate"

local function refuses(err, field, rule)
  assert.is_table(err)
  assert.equal("validation", err.kind)
  assert.equal(field, err.field)
  if rule then assert.matches(rule, err.message, 1, true) end
end

describe("validate.id", function()
  it("refuses dot segments and their percent-encoded spellings", function()
    for _, v in ipairs { ".", "..", "...", "%2e", "%2E", "%2e%2e", "%2E%2e", ".%2e", "%2e.", "./", "../",
                         "..\\", "a/../b" } do
      refuses(validate.id(v, "id"), "id")
    end
    refuses(validate.id(".", "id"), "id", "dot segment")
  end)

  it("accepts ids that only contain dots among other characters", function()
    for _, v in ipairs { ".a", "a.", "v1.2", "a.b.c", "5ed64e249551e80639a4d995", "sim-paris-cafe",
                         "6f1d2d0e-8f65-4d7b-9b59-0f1f0c8e0a11", "caf\195\169" } do
      assert.is_nil(validate.id(v, "id"), v)
    end
  end)
end)

describe("validate.parse_datetime and validate.datetime (RFC 3339)", function()
  it("refuses impossible values: month 13, 31 February, hour 29, offset +99:99", function()
    for _, v in ipairs { "2024-13-01T00:00:00Z", "2024-02-31T00:00:00Z", "2023-02-29T12:00:00Z",
                         "2024-01-01T29:00:00Z", "2024-01-01T00:00:00+99:99", "2024-01-01T00:00:00+23:60",
                         "2024-01-01T23:60:00Z", "2024-01-01T00:00:61Z", "2024-06-31T00:00:00Z" } do
      assert.is_nil(validate.parse_datetime(v), v)
      refuses(validate.datetime(v, "at"), "at", "RFC 3339")
    end
  end)

  it("wants seconds and an offset, in the extended form", function()
    for _, v in ipairs { "2024-01-01T00:00Z", "2024-01-01T00:00:00", "2024-01-01", "2024-01-01T00:00:00+0900",
                         "2024-01-01T00:00:00+09", "2024-01-01 00:00:00Z", "2024-01-01T00:00:00.Z",
                         "2024-01-01T00:00:00,5Z", " 2024-01-01T00:00:00Z", 0 } do
      refuses(validate.datetime(v, "at"), "at")
    end
    refuses(validate.datetime("2024-01-01T00:00Z", "at"), "at", "has no seconds")
    refuses(validate.datetime("2024-01-01T00:00:00", "at"), "at", "has no time zone offset")
  end)

  it("accepts what RFC 3339 allows: fractions, lower-case t and z, -00:00, leap seconds", function()
    for _, v in ipairs { "2024-01-01T00:00:00Z", "2024-01-01T00:00:00.1Z", "2024-01-01T00:00:00.123456789+09:00",
                         "2024-01-01t00:00:00z", "2024-01-01T00:00:00-00:00", "2016-12-31T23:59:60Z",
                         "2024-02-29T23:59:59+23:59", "0001-01-01T00:00:00Z" } do
      assert.is_nil(validate.datetime(v, "at"), v)
    end
    local t = assert(validate.parse_datetime("2024-02-29T23:59:59.25-05:30"))
    assert.same({ year = 2024, month = 2, day = 29, hour = 23, min = 59, sec = 59, frac = "25", offset = -330 }, t)
    assert.is_nil(validate.datetime(nil, "at"))
  end)

  it("keeps Toast's looser ISO-8601 (compact offsets, no seconds, no zone) but only real values", function()
    for _, v in ipairs { "2024-03-05", "2024-03-05T00:21", "2024-03-05T00:21:40.978+0900", "2024-03-05T00:21:40Z" } do
      assert.is_nil(validate.iso8601(v, "startDate"), v)
    end
    for _, v in ipairs { "2024-13-05", "2024-02-30T00:21", "2024-03-05T25:00", "2024-03-05T00:21:40+9999" } do
      refuses(validate.iso8601(v, "startDate"), "startDate")
    end
  end)
end)

describe("validate.date", function()
  it("takes YYYY-MM-DD naming a real day only", function()
    for _, v in ipairs { "2024-02-29", "2000-02-29", "1999-12-31" } do assert.is_nil(validate.date(v, "d"), v) end
    for _, v in ipairs { "2023-02-29", "1900-02-29", "2024-04-31", "2024-13-01", "2024-00-01", "2024-01-00",
                         "01-01-2020", "2024-1-01", "2024-01-01T00:00:00Z", "" } do
      refuses(validate.date(v, "d"), "d", "real calendar date")
    end
  end)
end)

describe("validate.email", function()
  it("accepts addr-specs with atext, quoted local parts, UTF-8 and address literals", function()
    for _, v in ipairs { "a@b.co", "o'brien+tag@example.co.jp", "first.last@sub.example.org", "x@b.c",
                         "!#$%&'*+-/=?^_`{|}~@example.com", '"john doe"@example.com', '"a\\"b"@example.com',
                         "\229\144\141@\228\190\139.jp", "x@[192.0.2.1]", "x@[IPv6:2001:db8::1]",
                         "a@xn--bcher-kva.example" } do
      assert.is_nil(validate.email(v, "email"), v)
      assert.is_true(validate.is_email(v), v)
    end
  end)

  it("refuses what is not one", function()
    for _, v in ipairs { "a@b", "plain", "@b.co", "a@", "a@@b.co", ".a@b.co", "a.@b.co", "a..b@c.co",
                         "a b@c.co", "a@b..co", "a@.b.co", "a@b.co.", "a@-b.co", "a@b-.co", "<a>@b.co",
                         "a,b@c.co", "a;b@c.co", "a@b_c.co", "a\1b@c.co", "a@b.c\127o", '"a"b"@c.co',
                         "a@[300.0.0.1]", "a@[1.2.3]", string.rep("a", 65) .. "@b.co",
                         "a@" .. string.rep("b", 64) .. ".co", "a\255@b.co" } do
      refuses(validate.email(v, "email"), "email")
      assert.is_false(validate.is_email(v), v)
    end
  end)
end)

describe("validate.number with integer = true", function()
  it("refuses integers beyond 10^14 (JSON sends 14 digits) and non-finite values", function()
    for _, v in ipairs { 1e308, 2 ^ 53, 1e14 + 1, -1e14 - 1, math.huge, -math.huge, 0 / 0, 1.5 } do
      refuses(validate.number(v, "page", { integer = true }), "page")
    end
    assert.is_nil(validate.number(1e14, "page", { integer = true }))
    assert.is_nil(validate.number(-1e14, "page", { integer = true }))
  end)
end)

describe("validate.header_value", function()
  it("refuses bytes outside ASCII and control characters", function()
    refuses(validate.header_value("key\195\169", "api_key"), "api_key", "ASCII")
    refuses(validate.header_value("\128", "api_key"), "api_key", "ASCII")
    refuses(validate.header_value("a\r\nb", "api_key"), "api_key", "control")
    refuses(validate.header_value("a\127", "api_key"), "api_key", "control")
    assert.is_nil(validate.header_value("sim-tablecheck-key", "api_key"))
  end)

  it("refuses a value shorter than opts.min", function()
    refuses(validate.header_value("abc", "api_key", { min = 4 }), "api_key", "at least 4 bytes")
    assert.is_nil(validate.header_value("abcd", "api_key", { min = 4 }))
    assert.is_nil(validate.header_value("a", "token"))
  end)
end)

describe("validate.id_list", function()
  it("refuses items that contain a comma", function()
    refuses(validate.id_list({ "a", "b,c" }, "ids"), "ids[2]")
    refuses(validate.id_list("a,", "ids"), "ids[2]")
    assert.is_nil(validate.id_list("a,b", "ids"))
  end)
end)
