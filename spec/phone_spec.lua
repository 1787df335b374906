-- The one phone normaliser (crm.phone), as Toast and TableCheck use it.
local crm = require "crm"
local phone = require "crm.phone"
local guests = require "crm.toast.guests"
local contacts = require "crm.tablecheck.contacts"
local H = require "helper"

describe("crm.phone", function()
  local n = phone.normalize

  it("gives one E.164 form for the spellings of one number", function()
    for _, s in ipairs { "+1 (206) 555-0100", "206.555.0100", "(206) 555 0100", "1-206-555-0100",
                         "+12065550100", " 206-555-0100 ", "001 206 555 0100", "011 1 206 555 0100" } do
      assert.equal("+12065550100", n(s, "1"), s)
    end
  end)

  it("drops the national trunk prefix 0 of a national number", function()
    assert.equal("+442079460958", n("020 7946 0958", "44"))
    assert.equal("+442079460958", n("+44 (0)20 7946 0958"))
    assert.equal("+442079460958", n("0044 (0)20 7946 0958"))
    assert.equal("+442079460958", n("0044 20 7946 0958", "1"))
    assert.equal("+819012345678", n("090-1234-5678", "81"))
    assert.equal("+442079460958", n("44 20 7946 0958", "44")) -- international without its +
    assert.equal("+390612345678", n("06 1234 5678", "39"))   -- Italy keeps its 0
  end)

  it("gives nil for what cannot be placed or is not a phone number", function()
    assert.is_nil(n("020 7946 0958"))        -- national, and no country to place it in
    assert.is_nil(n("555 0100", "1"))        -- seven digits are not a North American number
    assert.is_nil(n("12-34", "1"))
    assert.is_nil(n("+1 206 555 0100 ext 5"))
    assert.is_nil(n("call me", "1"))
    assert.is_nil(n("+0 206 555 0100"))
    assert.is_nil(n("+1234567890123456"))    -- 16 digits
    assert.is_nil(n(12065550100, "1"))
    assert.is_nil(n(nil, "1"))
  end)

  it("is the one behind Toast's profiles, TableCheck's contacts and crm.normalize_phone", function()
    assert.equal("+442079460958", guests.normalize_phone("020 7946 0958", "44"))
    assert.equal("+16175550137", guests.normalize_phone("(617) 555-0137")) -- default country 1
    assert.equal("+442079460958", contacts.normalize_phone("+44 (0)20 7946 0958"))
    assert.is_nil(contacts.normalize_phone("206.555.0100")) -- TableCheck: no default country
    assert.equal("+442079460958", crm.normalize_phone("020 7946 0958", "44"))
  end)

  it("checks country codes", function()
    assert.is_true(phone.is_country_code("1"))
    assert.is_true(phone.is_country_code("358"))
    for _, bad in ipairs { "0", "01", "1234", "+1", "x", "", 44 } do
      assert.is_false(phone.is_country_code(bad), tostring(bad))
    end
  end)
end)

describe("Toast default_country_code", function()
  before_each(function() H.reset() end)

  it("places national numbers in that country when finding or creating a guest", function()
    local c = H.toast { default_country_code = "44" }
    local a, _, how = assert(c:find_or_create { firstName = "Uk", lastName = "Caller", phone = "020 7946 0958" })
    assert.equal("created", how)
    assert.equal("+442079460958", a.phone)
    local b
    b, _, how = assert(c:find_or_create { firstName = "Uk", lastName = "Caller", phone = "+44 20 7946 0958" })
    assert.equal("found", how)
    assert.equal(a.guid, b.guid)
  end)

  it("is the default country of the client's profile sets", function()
    assert.equal("44", assert(H.toast { default_country_code = "44" }:new_profile_set()).country_code)
    assert.equal("1", assert(H.toast():new_profile_set()).country_code)
    assert.equal("7", assert(H.toast { default_country_code = "44" }:new_profile_set { country_code = "7" })
      .country_code)
  end)

  it("must be a country calling code, refused when the client is built", function()
    for _, bad in ipairs { "0", "1234", "+44", "x", 44, "" } do
      local c, err = crm.toast { base_url = H.base_url, restaurant_guid = H.restaurant,
                                 token = "tok-test", default_country_code = bad }
      assert.is_nil(c)
      assert.equal("validation", err.kind)
      assert.equal("default_country_code", err.field)
    end
    assert.equal(0, H.total())
  end)
end)
