-- A leak hunt: servers that echo secrets in the shapes a plain substring scrub misses, and the
-- command line's own words about the data it was given. Each case here leaked before its fix.
local H = require "helper"
local cjson = require "cjson"

local GUID = "0b7d3f0e-1111-4a2b-9c3d-000000000001"

local strings_in, assert_absent = H.strings_in, H.assert_absent

-- Everything an error shows: tostring, every string in it, both encodings.
local function shown(err)
  local parts = strings_in(err)
  parts[#parts + 1] = tostring(err)
  parts[#parts + 1] = cjson.encode(err)
  parts[#parts + 1] = assert(require("crm").json.encode(err))
  return table.concat(parts, "\n")
end

describe("a server echoing the token", function()
  before_each(function() H.reset() end)

  it("a token replaced by a new login stays scrubbed when an answer echoes it later", function()
    local c = H.toast()
    local old = assert(c:login())
    -- A 401 makes the client drop the token and log in again; an answer to a request that was
    -- sent with the old token (a concurrent one) may still echo it.
    H.fault { path = "/crm/v1/customers/", status = 401, count = 1 }
    local _, err = c:get_customer(GUID)
    assert.equal(404, err.status) -- logged in again, and the simulator knows no such customer
    local new = assert(c:login())
    assert.are_not.equal(old, new)
    H.fault { path = "/crm/v1/customers/", status = 400, count = 1,
              body = cjson.encode { message = "token " .. old .. " is not valid", requestId = old } }
    _, err = c:get_customer(GUID)
    assert.equal(400, err.status)
    assert_absent(shown(err), { old, new })
  end)

  it("half of the token in one field and half in another is scrubbed in both", function()
    local c = H.toast()
    local token = assert(c:login())
    local mid = math.floor(#token / 2)
    local a, b = token:sub(1, mid), token:sub(mid + 1)
    H.fault { path = "/crm/v1/customers/", status = 400, count = 1,
              body = cjson.encode { message = "got " .. a, code = b, errors = { { detail = a, more = b } } } }
    local _, err = c:get_customer(GUID)
    assert.equal(400, err.status)
    assert_absent(shown(err), { a, b })
    assert.matches("got <redacted>", err.message)
  end)

  it("a token cut by a NUL, a control byte or an invalid UTF-8 byte is scrubbed on both sides", function()
    local c = H.toast()
    local token = assert(c:login())
    local a, b = token:sub(1, 20), token:sub(21)
    for _, sep in ipairs { "\\u0000", "\\n", "\255" } do
      H.fault { path = "/crm/v1/customers/", status = 400, count = 1,
                body = '{"message":"bad ' .. a .. sep .. b .. '"}' }
      local _, err = c:get_customer(GUID)
      assert.equal(400, err.status)
      assert_absent(shown(err), { a, b })
    end
  end)

  it("a Content-Type that carries part of the token is scrubbed", function()
    local c = H.toast()
    local token = assert(c:login())
    H.fault { path = "/crm/v1/customers/", status = 200, count = 10, body = "<html>",
              content_type = "text/html; t=" .. token:sub(1, 24) }
    local _, err = c:get_customer(GUID)
    assert.equal("decode", err.kind)
    assert.matches("text/html", err.message)
    assert_absent(shown(err), { token:sub(1, 24), token:sub(5, 24) })
  end)

  it("a credential under a credential's name in an error answer is scrubbed, known or not", function()
    local c = H.toast()
    H.fault { path = "/authentication/v1/authentication/login", status = 409, count = 1,
              body = cjson.encode { message = "session exists",
                token = { accessToken = "eyJhbGciOiJIUzI1NiJ9.b3RoZXI.c2lnbmF0dXJl", refreshToken = "rt-9f8e7d6c5b4a" },
                session = { api_key = "tc-live-0a1b2c3d", password = "hunter2hunter2",
                            ["Authorization"] = "Token tok-5e6f7a8b9c" } } }
    local _, err = c:login()
    assert.equal("auth", err.kind)
    assert_absent(shown(err), { "eyJhbGciOiJIUzI1NiJ9", "b3RoZXI", "rt-9f8e7d6c5b4a", "tc-live-0a1b2c3d",
                                "hunter2hunter2", "tok-5e6f7a8b9c" })
    assert.equal("session exists", err.body.message)
  end)

  it("a secret echoed in another case, whole or in part, is scrubbed", function()
    local tc = H.tablecheck()
    local key = H.tablecheck_key
    H.fault { path = "/api/crm/v1/shops", status = 401, count = 1,
              body = cjson.encode { message = "INVALID API KEY " .. key:upper() .. " ("
                .. key:upper():sub(1, 12) .. ")" } }
    local _, err = tc:list_shops()
    assert.equal(401, err.status)
    assert_absent(shown(err), { key:upper(), key:upper():sub(1, 12) })
    assert.matches("INVALID API KEY <redacted>", err.message)
  end)

  it("a client secret echoed percent-encoded (as in a URL) is scrubbed", function()
    local secret = "Zr/8q+Kd=w2LmXp9&s"
    local c = H.toast { client_secret = secret }
    H.fault { path = "/authentication/v1/authentication/login", status = 400, count = 1,
              body = cjson.encode { message = "see https://auth.example/?secret="
                .. secret:gsub("[^%w]", function(ch) return ("%%%02X"):format(ch:byte()) end) } }
    local _, err = c:login()
    assert.equal("auth", err.kind)
    assert_absent(shown(err), { "Zr%2F8q%2BKd%3Dw2LmXp9%26s", "Zr%2F8q", "w2LmXp9" })
    assert.matches("secret=<redacted>", err.message)
  end)
end)

describe("a proxy echoing its credentials", function()
  before_each(function() H.reset() end)

  it("scrubs them as the Basic header carries them and as curl decodes them", function()
    -- The simulator stands in for the proxy: curl sends it the absolute URL and the
    -- Proxy-Authorization header, and the answer repeats the credentials in every form.
    local basic = "Y3JtLXVzZXI6aHVudGVyIUA6MjJwdw==" -- base64("crm-user:hunter!@:22pw")
    local tc = H.tablecheck { base_url = "http://tablecheck.invalid/api/crm/v1",
                              proxy = "http://crm-user:hunter%21%40%3A22pw@127.0.0.1:" .. H.port }
    H.fault { path = "/api/crm/v1/shops", status = 407, count = 1,
              body = cjson.encode { errors = { { code = "proxy", message = "Proxy-Authorization: Basic "
                .. basic .. " refused; password hunter!@:22pw" } }, also = basic } }
    local _, err = tc:list_shops()
    assert.equal(407, err.status)
    assert_absent(shown(err), { basic, "hunter!@:22pw", "hunter" })
    assert.matches("Basic <redacted>", err.message)
  end)

  it("scrubs any Basic credentials an Authorization line carries, by shape", function()
    local tc = H.tablecheck()
    local other = "c29tZW9uZTplbHNlcw=="
    H.fault { path = "/api/crm/v1/shops", status = 400, count = 1,
              body = cjson.encode { errors = { { code = "x", message = "authorization: basic " .. other } } } }
    local _, err = tc:list_shops()
    assert.equal(400, err.status)
    assert_absent(shown(err), { other })
  end)
end)

describe("a server echoing the guest it was sent in other shapes", function()
  before_each(function() H.reset() end)

  local GUEST = { firstName = "Zanzibar", lastName = "Quixote", email = "zq.private@example.org",
                  phone = "206-555-0111" }

  local function echoed(body)
    local c = H.toast()
    H.fault { path = "/crm/v1/customers", method = "POST", status = 400, count = 1, body = body }
    local _, err = c:create_customer(GUEST)
    assert.equal(400, err.status)
    return err
  end

  it("an email broken by a line break, a tab or a space around @ or the dot", function()
    for _, sep in ipairs { "\\n", "\\r\\n", "\\t", " " } do
      for _, text in ipairs { "zq.private@example" .. sep .. ".org", "zq.private" .. sep .. "@example.org",
                              "zq.private@" .. sep .. "example.org" } do
        local err = echoed('{"message":"bad ' .. text .. '","detail":"' .. text .. '"}')
        assert_absent(shown(err), { "zq.private" })
      end
    end
  end)

  it("an email cut short at the end of a server's text, the guest's or anyone's", function()
    local err = echoed(cjson.encode { message = "bad zq.private@exa", detail = "holder o.brewster@exa" })
    assert_absent(shown(err), { "zq.private", "o.brewster" })
  end)

  it("an email written with an HTML entity for @, the guest's or anyone's", function()
    local err = echoed(cjson.encode { message = "bad zq.private&#64;example.org or o.b&#x40;example.com",
                                      detail = "o.b&commat;example.com" })
    assert_absent(shown(err), { "zq.private", "o.b&", "o.b@" })
  end)

  it("a phone broken by a NUL or other byte leaves no run of its digits", function()
    local err = echoed('{"message":"bad 206\\u00005550111 / 206:5550111","detail":"+1206555\\n0111"}')
    assert_absent(shown(err), { "5550111", "1206555" })
  end)

  it("anyone's phone or email percent-encoded in a URL is redacted by shape", function()
    local err = echoed(cjson.encode { message = "see /lookup?phone=%2B1%20206%20555%200199&email=o.b%40example.com",
                                      detail = "tel:%2B12%20065550111" })
    assert_absent(shown(err), { "555%200199", "0199", "o.b%40", "o.b@", "065550111" })
    assert.matches("/lookup%?phone=", err.message)
  end)

  it("a phone the answer gives as a JSON number", function()
    local err = echoed('{"message":"bad","phone":2065550111,"x":12065550111,"amount":25}')
    assert_absent(shown(err), { "2065550111" })
    assert.equal(25, err.body.amount)
    err = echoed("2065550111") -- the whole answer
    assert_absent(shown(err), { "2065550111" })
  end)
end)

describe("names and phones as Japanese text writes them", function()
  before_each(function() H.reset() end)

  -- The error of a TableCheck create of `extra` whose 422 says `message`.
  local function refused_with(message, extra)
    local tc = H.tablecheck()
    H.fault { path = "/api/crm/v1/customers", method = "POST", status = 422, count = 1,
              body = cjson.encode { errors = { { code = "taken", message = message } } } }
    local _, err = tc:create_customer(H.tc_customer(extra))
    assert.equal(422, err.status)
    return err
  end

  it("a kanji or kana name the request sent is <pii> inside a sentence", function()
    local err = refused_with("山田太郎様（ヤマダタロウ）は既に登録されています",
      { kanji_last_name = "山田", kanji_first_name = "太郎", last_name = "ヤマダ", first_name = "タロウ" })
    assert_absent(shown(err), { "山田", "太郎", "ヤマダ", "タロウ" })
    assert.matches("既に登録されています", err.message)
  end)

  it("an E.164 phone the request sent, echoed in its national form with the trunk 0", function()
    local err = refused_with("電話番号 09012345678 は既に使われています (9012345678)",
      { phones = { "+819012345678" } })
    assert_absent(shown(err), { "9012345678" })
  end)

  it("a phone in full-width digits next to kana, the guest's or anyone's", function()
    local err = refused_with("電話番号０９０１２３４５６７８は既に使われています（他：０３－１２３４－５６７８）",
      { phones = { "+819012345678" } })
    assert_absent(shown(err), { "９０１２３４５６７８", "9012345678", "１２３４－５６７８", "1234-5678" })
    assert.matches("は既に使われています", err.message)
  end)
end)

describe("an error answer about another guest", function()
  before_each(function() H.reset() end)

  local OTHER = { "Ottoline", "Brewster", "o.brewster", "2065550199", "Elmwood", "window seat" }

  it("Toast: the other guest's record and the name its message repeats are <pii>", function()
    local c = H.toast()
    H.fault { path = "/crm/v1/customers", method = "POST", status = 409, count = 1,
              body = cjson.encode { status = 409, fieldName = "phone",
                message = "Customer Ottoline Brewster already holds this phone",
                existing = { firstName = "Ottoline", lastName = "Brewster", email = "o.brewster@example.org",
                             phone = "2065550199", address = "12 Elmwood Street", note = "likes window seat",
                             guid = "0b7d3f0e-1111-4a2b-9c3d-00000000aaaa" } } }
    local _, err = c:create_customer { firstName = "Ann", lastName = "Lee", phone = "2065550111" }
    assert.equal(409, err.status)
    assert_absent(shown(err), OTHER)
    assert.equal("phone", err.field)
    assert.matches("already holds this phone", err.message)
    assert.equal("0b7d3f0e-1111-4a2b-9c3d-00000000aaaa", err.body.existing.guid)
  end)

  it("TableCheck: nested person fields at any depth, and the name in the message", function()
    local tc = H.tablecheck()
    H.fault { path = "/api/crm/v1/customers", method = "POST", status = 422, count = 1,
              body = cjson.encode { errors = { { code = "taken", field = "phones",
                                                 message = "phone is taken by Ottoline Brewster" } },
                                    conflict = { customer = { first_name = "Ottoline", last_name = "Brewster",
                                      memo = "likes window seat", id = "5ed64e249551e80639a4aaaa",
                                      addresses = { { street = "12 Elmwood Street" } } } } } }
    local _, err = tc:create_customer(H.tc_customer())
    assert.equal(422, err.status)
    assert_absent(shown(err), OTHER)
    assert.equal("phones", err.field)
    assert.equal("taken", err.code)
    assert.equal("5ed64e249551e80639a4aaaa", err.body.conflict.customer.id)
  end)
end)

describe("customer data an error carries for the program", function()
  before_each(function() H.reset() end)

  it("Pager:all's err.partial is readable but in no encoding of the error", function()
    local tc = H.tablecheck()
    local a = assert(tc:create_customer(H.tc_customer { first_name = "Partialann", memo = "vip guest" }))
    assert(tc:create_customer(H.tc_customer { first_name = "Partialbob" }))
    assert(tc:create_customer(H.tc_customer { first_name = "Partialcat" }))
    H.fault { method = "GET", path = "/api/crm/v1/customers", match = "page=1", status = 400, count = 1 }
    local all, err = tc:iter_customers({ per_page = 2 }):all()
    assert.is_nil(all)
    assert.equal(400, err.status)
    assert.equal(2, #err.partial)
    for k in pairs(err) do assert.are_not.equal("partial", k) end
    assert_absent(shown(err), { "Partialann", "Partialbob", a.emails[1], "vip guest" })
  end)

  it("wait_for_images' err.images (a guest's photos) is readable but in no encoding of the error", function()
    local tc = H.tablecheck()
    local cust = assert(tc:create_customer(H.tc_customer()))
    -- One photo is done (its URL shows the guest), the other still uploading.
    H.fault { method = "GET", path = "/api/crm/v1/customers/" .. cust.id, status = 200, count = 100,
              body = { customer = { id = cust.id, images = {
                { id = "5ed64e249551e80639a4bb01", url = "https://cdn.example/faces/partialann.jpg",
                  image_variants = { { url = "https://cdn.example/faces/partialann-s.jpg" } } },
                { id = "5ed64e249551e80639a4bb02" } } } } }
    local res, err = tc:wait_for_images(cust.id, { timeout = 0.2, interval = 0.05 })
    assert.is_nil(res)
    assert.equal("images_pending", err.code)
    assert.equal(2, #err.images)
    assert.same({ "5ed64e249551e80639a4bb02" }, err.ids)
    for k in pairs(err) do assert.are_not.equal("images", k) end
    assert_absent(shown(err), { "partialann" })
  end)
end)

describe("the shared store's log line", function()
  local stores = require "crm.store"
  local saved
  before_each(function()
    H.reset()
    saved = stores.log
  end)
  after_each(function() stores.log = saved end)

  it("never shows the token when a failing store's error quotes the value it holds", function()
    local logs = {}
    stores.log = function(msg) logs[#logs + 1] = msg end
    local inner = stores.new_local()
    local careless = {
      get = function(_, k)
        local v = inner:get(k)
        if type(v) == "string" and v:find(" crm1 ", 1, true) then
          error("redis: cannot parse the value '" .. v .. "'")
        end
        return v
      end,
      set = function(_, k, ...) return inner:set(k, ...) end,
      add = function(_, k, ...) return inner:add(k, ...) end,
      incr = function(_, k, ...) return inner:incr(k, ...) end,
    }
    local c = H.toast { store = careless }
    for _ = 1, 3 do assert(c:search_customers { lastName = "Nobody" }) end
    assert.equal(1, #logs)
    assert.matches("cannot parse the value", logs[1])
    local tokens = H.control("GET", "/__sim/secrets").tokens
    assert.is_true(#tokens > 0)
    for _, t in ipairs(tokens) do assert_absent(logs[1], { t, t:sub(1, 16), t:sub(-16) }) end
  end)
end)

describe("validation of unknown keys", function()
  before_each(function() H.reset() end)

  it("names a key shaped like a field name, and never one that may be a guest's data", function()
    local toast, tc = H.toast(), H.tablecheck()
    local cases = {
      { toast:create_customer { firstName = "Ann", lastName = "Lee", email = "a@example.org",
                                ["Zanzibar Quixote"] = "x" } },
      { toast:create_customer { firstName = "Ann", lastName = "Lee", email = "a@example.org",
                                ["zq.private@example.org"] = true } },
      { toast:search_customers { ["+1 206 555 0111"] = "x" } },
      { tc:create_customer(H.tc_customer { ["Zanzibar Quixote"] = 1 }) },
      { tc:list_customers { ["Zanzibar Quixote"] = 1 } },
      { toast:create_customer { firstName = "Ann", lastName = "Lee", email = "a@example.org",
                                [12065550111] = "x" } },
    }
    for _, case in ipairs(cases) do
      local res, err = case[1], case[2]
      assert.is_nil(res)
      assert.equal("validation", err.kind)
      assert_absent(shown(err), { "Zanzibar", "zq.private", "555 0111", "12065550111" })
    end
    local _, err = toast:create_customer { firstName = "Ann", lastName = "Lee", email = "a@example.org",
                                           firstname = "Ann" }
    assert.equal("firstname", err.field)
    assert.equal(0, H.total())
  end)
end)

-- ---- the command line ----

local home = H.tmpdir("config", "state")

-- crm(args) -> {code, out, err}: bin/crm with a private config and state home.
local function crm_run(args)
  return H.capture(("CRM_SIM_PORT=%d XDG_CONFIG_HOME=%s XDG_STATE_HOME=%s %s bin/crm %s"):format(H.port,
    H.quote(home .. "/config"), H.quote(home .. "/state"), H.lua, args))
end

local function file(name, text)
  local path = home .. "/" .. name
  H.spit(path, text)
  return H.quote(path)
end

describe("crm's usage errors", function()
  it("do not repeat a guest's email or phone typed where a command or a number belongs", function()
    local r = crm_run("--sim toast customers zq.private@example.org")
    assert.equal(2, r.code)
    assert.matches("unknown command", r.err)
    H.assert_absent(r.err, { "zq.private" })
    r = crm_run("--sim tablecheck customers list --page '+1 206 555 0111'")
    assert.equal(2, r.code)
    assert.matches("%-%-page must be a number", r.err)
    H.assert_absent(r.err, { "555 0111" })
  end)
end)

describe("crm's config file", function()
  local config = require "crm.cli.config"

  it("never quotes an unknown key that is no setting name (a secret put where its name belongs)", function()
    local path = home .. "/swapped.json"
    H.spit(path, require("crm").json.encode { ["tc-Kq8vZ2mN4pX7"] = "CRM_TABLECHECK_API_KEY" })
    assert(os.execute("chmod 600 " .. H.quote(path)))
    local t, err = config.read_file(path, true)
    assert.is_nil(t)
    assert.equal("config", err.field)
    assert_absent(tostring(err), { "Kq8vZ2mN4pX7" })
    H.spit(path, require("crm").json.encode { CRM_TABLECHECK_APIKEY = "tc-Kq8vZ2mN4pX7" })
    t, err = config.read_file(path, true)
    assert.is_nil(t)
    assert.matches("CRM_TABLECHECK_APIKEY", tostring(err)) -- a misspelt name is named
    assert_absent(tostring(err), { "Kq8vZ2mN4pX7" })
    os.remove(path)
  end)
end)

describe("crm --input", function()
  before_each(function() H.reset() end)

  it("never names a file's columns when the file has no header row (its first guest)", function()
    local csv = file("nohdr.csv", "Zanzibar,Quixote,zq.private@example.org,+12065550111\n"
      .. "Ann,Lee,ann@example.org,+12065550122\n")
    for _, args in ipairs { "", " --strict" } do
      local r = crm_run("--sim toast customers find-or-create --input " .. csv .. args)
      assert.are_not.equal(0, r.code)
      H.assert_absent(r.err .. r.out, { "Zanzibar", "Quixote", "zq.private", "2065550111" })
      assert.matches("header row", r.err)
    end
  end)

  it("names unknown columns that look like field names, and only counts the others", function()
    local csv = file("extra.csv", "firstName,lastName,email,loyalty_tier,Ann Lee's notes\n"
      .. "Zed,Quux,zq@example.org,gold,x\n")
    local r = crm_run("--sim toast customers find-or-create --input " .. csv)
    assert.equal(0, r.code, r.err)
    assert.matches("loyalty_tier", r.err)
    assert.matches("1 more", r.err)
    H.assert_absent(r.err, { "Ann Lee" })
  end)
end)
