-- The hardening of issue 19: redaction at any depth, stores that answer garbage, encoding depth,
-- the field named in deep-nesting errors, constructor checks before tostring, core.build's
-- errors, shared tokens bound to their credentials, public image hosts, scroll continuation.
local H = require "helper"
local crm = require "crm"
local cjson = require "cjson"
local errors = require "crm.error"
local stores = require "crm.store"
local core = require "crm.core"

-- A table nested n deep: {k = {k = ... leaf}}; built in a loop (no recursion).
local function deep(n, k, leaf)
  local t = leaf
  for _ = 1, n do t = { [k] = t } end
  return t
end

-- The innermost value of deep(), read in a loop.
local function bottom(t, k)
  while type(t) == "table" and t[k] ~= nil do t = t[k] end
  return t
end

-- Inside a describe: a reset simulator before each spec, and crm.store's log lines caught in
-- the returned list (emptied before each spec) instead of written to stderr.
local function capture_logs()
  local logs, saved = {}, nil
  before_each(function()
    H.reset()
    for i = #logs, 1, -1 do logs[i] = nil end
    saved = stores.log
    stores.log = function(msg) logs[#logs + 1] = msg end
  end)
  after_each(function() stores.log = saved end)
  return logs
end

describe("redaction at any depth", function()
  local SECRET = "s3cr3t-key-material"

  it("scrubs a 100,000-deep error body: err.body, crm.json.encode(err), tostring(err)", function()
    local body = deep(100000, "a", { msg = "Bearer tok.abc123 and " .. SECRET .. " and zed@example.org" })
    local ok, err = pcall(errors.new, "http", "bad", { status = 400, body = body }, { secrets = { SECRET } })
    assert.is_true(ok, tostring(err))
    local leaf = bottom(err.body, "a")
    assert.is_string(leaf.msg)
    assert.is_nil(leaf.msg:find(SECRET, 1, true))
    assert.is_nil(leaf.msg:find("tok.abc123", 1, true))
    assert.is_nil(leaf.msg:find("zed@example.org", 1, true))
    local eok, text = pcall(crm.json.encode, err)
    assert.is_true(eok, tostring(text))
    if text then assert.is_nil(text:find(SECRET, 1, true)) end
    local sok, s = pcall(tostring, err)
    assert.is_true(sok)
    assert.is_nil(s:find(SECRET, 1, true))
  end)

  it("scrubs an answer's body nested 25 levels deep (the old cap was 20)", function()
    H.reset()
    local c = H.tablecheck()
    local body = deep(25, "e", { message = "key " .. H.tablecheck_key })
    H.fault { path = "/api/crm/v1/customers/", status = 422, count = 1, body = cjson.encode(body) }
    local _, err = c:get_customer("5ed64e249551e80639a4d995")
    assert.equal(422, err.status)
    assert.is_nil(bottom(err.body, "e").message:find(H.tablecheck_key, 1, true))
    assert.is_nil(cjson.encode(err):find(H.tablecheck_key, 1, true))
  end)

  it("scrubs what a batch operation raises: the bearer token in its message", function()
    H.reset()
    local c = H.toast()
    local token = assert(c:login())
    local shown = setmetatable({}, { __tostring = function() return "table says " .. token end })
    local results = assert(c:batch {
      function() error("raw token " .. token, 0) end,
      function() error(shown) end,
      function() error({ token = token }) end,
    })
    for i = 1, 3 do
      local e = results[i].err
      assert.equal("ops[" .. i .. "]", e.field)
      assert.is_nil(e.message:find(token, 1, true), e.message)
      assert.is_nil(tostring(e):find(token, 1, true))
      assert.is_nil(cjson.encode(e):find(token, 1, true))
    end
    c:close()
  end)
end)

describe("a store that answers garbage", function()
  local logs = capture_logs()

  for _, case in ipairs {
    { "a table", function() return { token = "x" } end },
    { "a boolean", function() return true end },
    { "a function", function() return print end },
    { "a userdata", function() return io.stdout end },
    { "nil and an error whose __tostring raises",
      function() return nil, setmetatable({}, { __tostring = function() error("boom") end }) end },
  } do
    it("is a failing store when get returns " .. case[1] .. " for the token: falls back, logs once", function()
      local inner = stores.new_local()
      local st = {
        get = function(_, key)
          if key:find(":t:", 1, true) then return case[2]() end -- luacheck: ignore 631
          return inner:get(key)
        end,
        set = function(_, ...) return inner:set(...) end,
        add = function(_, ...) return inner:add(...) end,
        incr = function(_, ...) return inner:incr(...) end,
      }
      local c = H.toast { store = st }
      local ok, cust, err = pcall(function()
        local created = assert(c:create_customer(H.customer()))
        return c:get_customer(created.guid)
      end)
      assert.is_true(ok, tostring(cust))
      assert.is_table(cust, tostring(err))
      assert.is_table(c:get_customer(cust.guid))
      assert.equal(1, #logs)
      assert.matches("store failed", logs[1])
      assert.is_nil(logs[1]:find(H.client_secret, 1, true))
      c:close()
    end)
  end
end)

describe("crm.json.encode depth", function()
  it("refuses a table nested 200,000 deep with the validation error, never a stack overflow", function()
    local ok, s, err = pcall(crm.json.encode, deep(200000, "a", 1))
    assert.is_true(ok, tostring(s))
    assert.is_nil(s)
    assert.equal("validation", err.kind)
    assert.equal("value", err.field)
    assert.matches("deep", err.message)
    assert.is_nil(err.message:find("overflow", 1, true))
  end)

  it("refuses a cycle as too deep, and still encodes 500 levels", function()
    local t = {}
    t.self = t
    local s, err = crm.json.encode(t)
    assert.is_nil(s)
    assert.equal("validation", err.kind)
    assert.is_string(crm.json.encode(deep(500, "a", 1)))
  end)
end)

describe("deep-nesting errors name the field", function()
  it("refuses a 5,000-deep table as firstName with field=firstName", function()
    H.reset()
    local c = H.toast()
    local before = H.total()
    local _, err = c:create_customer(H.customer { firstName = deep(5000, "x", "Ada") })
    assert.equal("validation", err.kind)
    assert.equal("firstName", err.field)
    local _, terr = H.tablecheck():create_customer(H.tc_customer { memo = deep(5000, "x", "m") })
    assert.equal("memo", terr.field)
    assert.equal(before, H.total())
  end)
end)

describe("constructor checks before tostring", function()
  local R = H.restaurant
  local raising = setmetatable({}, { __tostring = function() error("tostring raised") end })

  it("never lets a credential's raising __tostring escape, with or without a store", function()
    local st = stores.new_local()
    local cases = {
      { "toast", { restaurant_guid = R, client_id = raising, client_secret = "secret1" }, "client_id" },
      { "toast", { restaurant_guid = R, client_id = raising, client_secret = "secret1", store = st }, "client_id" },
      { "toast", { restaurant_guid = R, client_id = "id", client_secret = raising, store = st }, "client_secret" },
      { "toast", { restaurant_guid = R, token = raising, store = st }, "token" },
      { "tablecheck", { api_key = raising }, "api_key" },
      { "tablecheck", { api_key = raising, store = st }, "api_key" },
      { "toast", { restaurant_guid = R, client_id = {}, client_secret = "secret1" }, "client_id" },
      { "toast", { restaurant_guid = R, client_id = "id", client_secret = "secret1",
                   default_country_code = raising }, "default_country_code" },
      { "tablecheck", { api_key = "abcd", scroll_ttl = raising }, "scroll_ttl" },
      { "tablecheck", { api_key = "abcd", allow_private_image_urls = "yes" }, "allow_private_image_urls" },
    }
    for i, case in ipairs(cases) do
      case[2].base_url = H.base_url
      local ok, c, err = pcall(crm[case[1]], case[2])
      assert.is_true(ok, "case " .. i .. " raised: " .. tostring(c))
      assert.is_nil(c, "case " .. i)
      assert.equal("validation", err.kind, "case " .. i)
      assert.equal(case[3], err.field, "case " .. i)
    end
  end)
end)

describe("core.build", function()
  local GUID = "0b7d3f0e-1111-4a2b-9c3d-000000000001"
  it("answers nil, err for a bad op or base instead of raising", function()
    for _, bad in ipairs { 0, -1, 1.5, "1", true, {} } do
      local ok, m, err = pcall(core.build, bad, "http://h", GUID)
      assert.is_true(ok, tostring(m))
      assert.is_nil(m)
      assert.equal("validation", err.kind)
      assert.equal("bad_op", err.name)
    end
    for _, bad in ipairs { {}, true, print } do
      local ok, m, err = pcall(core.build, core.ops["toast.get_customer"], bad, GUID)
      assert.is_true(ok, tostring(m))
      assert.is_nil(m)
      assert.equal("bad_url", err.name)
    end
  end)

  it("refuses CR, LF, NUL and spaces in the base as h:call does", function()
    for _, base in ipairs { "http://h/\r\nX: y", "http://h\n", "http://h/\0", "http://h/ a" } do
      local m, err = core.build(core.ops["toast.get_customer"], base, GUID)
      assert.is_nil(m)
      assert.equal("validation", err.kind)
      assert.equal("bad_url", err.name)
    end
    assert.equal("GET", (core.build(core.ops["toast.get_customer"], "http://h", GUID)))
  end)
end)

describe("image_upload_url names a public host", function()
  local images = require "crm.tablecheck.images"
  local PRIVATE = {
    "http://localhost/a.png", "https://localhost/a.png", "http://LOCALHOST./a.png",
    "http://shop.localhost/a.png", "http://intranet/a.png", "http://intranet./a.png",
    "http://127.0.0.1/a.png", "http://127.1/a.png", "http://0x7f.0.0.1/a.png",
    "http://2130706433/a.png", "http://017700000001/a.png", "http://0177.0.0.01/a.png",
    "http://0x7f000001/a.png", "http://10.1.2.3/a.png", "http://172.16.0.1/a.png",
    "http://172.31.255.255/a.png", "http://192.168.0.10/a.png", "http://169.254.169.254/a.png",
    "http://100.64.0.1/a.png", "http://100.127.255.254/a.png", "http://0.0.0.0/a.png",
    "http://0/a.png", "http://user@127.0.0.1:8080/a.png", "http://[::1]/a.png",
    "http://[::]/a.png", "http://[::ffff:127.0.0.1]/a.png", "http://[::ffff:7f00:1]/a.png",
    "http://[fe80::1]/a.png", "http://[fe80::1%25eth0]/a.png", "http://[fc00::1]/a.png",
    "http://[fd12:3456::1]/a.png", "http://[0:0:0:0:0:0:0:1]/a.png", "http://[::ffff:10.0.0.1]/a.png",
    "http://[::ffff:192.168.1.1]:8080/a.png", "http://[not-an-ip]/a.png", "http://1.2.3.4.5/a.png",
    "http://256.1.1.1/a.png", "http://08.1.1.1/a.png",
  }
  local PUBLIC = {
    "https://cdn.example.com/a.png", "https://i.pravatar.cc/300", "http://93.184.216.34/a.png",
    "http://[2606:4700::1111]/a.png", "http://[::ffff:8.8.8.8]/a.png", "http://172.32.0.1/a.png",
    "http://100.128.0.1/a.png", "http://x.test/a.png", "https://cdn.example.com./a.png",
  }

  it("refuses loopback, private, link-local, CGNAT and unspecified hosts in every spelling", function()
    for _, url in ipairs(PRIVATE) do
      local e = images.check_public_host(url, "images[1].image_upload_url")
      assert.is_table(e, url)
      assert.equal("images[1].image_upload_url", e.field)
      assert.matches("public host", e.message)
    end
    for _, url in ipairs(PUBLIC) do
      assert.is_nil(images.check_public_host(url, "f"), url)
    end
  end)

  it("is checked on create, amend and reservation create, and nothing is sent", function()
    H.reset()
    local c = H.tablecheck()
    local before = H.total()
    local bad = { { image_upload_url = "http://127.1/a.png" } }
    local _, e1 = c:create_customer(H.tc_customer { images = bad })
    assert.equal("images[1].image_upload_url", e1.field)
    assert.matches("public host", tostring(e1))
    local _, e2 = c:update_customer("5ed64e249551e80639a4d995", { images = {
      { image_upload_url = "https://cdn.example.com/a.png" }, { image_upload_url = "http://[::1]/b.png" } } })
    assert.equal("images[2].image_upload_url", e2.field)
    local _, e3 = c:create_reservation { shop_id = H.tc.shop_ids[1], pax = 2,
      start_at = "2030-01-01T19:00:00Z", images = { { image_upload_url = "https://localhost/menu.png" } } }
    assert.equal("images[1].image_upload_url", e3.field)
    assert.equal(before, H.total())
  end)

  it("lets allow_private_image_urls = true send the simulator's own URLs (never the default)", function()
    H.reset()
    local own = H.base_url .. "/images/a.png"
    local c = H.tablecheck { allow_private_image_urls = true }
    local cust = assert(c:create_customer(H.tc_customer { images = { { image_upload_url = own } } }))
    assert.equal(1, #cust.images)
    local _, err = H.tablecheck():create_customer(H.tc_customer { images = { { image_upload_url = own } } })
    assert.equal("images[1].image_upload_url", err.field)
  end)
end)

describe("TableCheck search_customers{scroll_id = id}", function()
  before_each(function() H.reset() end)

  it("continues a scroll: sends only {scroll_id} and returns the page as search_customers does", function()
    H.tc_seed(250, "Cont")
    local t = H.recording_transport()
    local c = H.tablecheck { transport = t }
    local first, _, page = assert(c:search_customers { first_name = "Cont" })
    assert.equal(200, #first)
    assert.equal(250, page.total_results)
    assert.is_string(page.scroll_id)
    -- a caller that kept only the scroll_id (a queue, a restart) continues with a new client
    local c2 = H.tablecheck { transport = t }
    local second, _, page2 = assert(c2:search_customers { scroll_id = page.scroll_id })
    assert.equal(50, #second)
    assert.equal("Cont", second[1].first_name)
    assert.equal(250, page2.total_results)
    assert.same({ scroll_id = page.scroll_id }, cjson.decode(t.log[2].body))
    local seen = {}
    for _, x in ipairs(first) do seen[x.id] = true end
    for _, x in ipairs(second) do assert.is_nil(seen[x.id]) end
  end)

  it("refuses any other field beside scroll_id, and a scroll_id that is not a string; nothing sent", function()
    local c = H.tablecheck()
    local before = H.total()
    local _, e1 = c:search_customers { scroll_id = "abc", first_name = "X" }
    assert.equal("validation", e1.kind)
    assert.equal("first_name", e1.field)
    local _, e2 = c:search_customers { scroll_id = 42 }
    assert.equal("scroll_id", e2.field)
    local _, e3 = c:search_customers { scroll_id = "" }
    assert.equal("scroll_id", e3.field)
    assert.equal(before, H.total())
  end)
end)

describe("a shared Toast token bound to its credentials", function()
  local hash = require "crm.hash"
  local logs = capture_logs()

  -- A store that ignores the namespace part of the key: every tenant sees the same "t:0".
  local function mixing(inner)
    local function plain(key) return (key:gsub("^crm:%x+:", "")) end
    return {
      get = function(_, k) return inner:get(plain(k)) end,
      set = function(_, k, ...) return inner:set(plain(k), ...) end,
      add = function(_, k, ...) return inner:add(plain(k), ...) end,
      incr = function(_, k, ...) return inner:incr(plain(k), ...) end,
    }
  end

  it("stores HMAC(client_secret, client_id, base URL, token, expiry) beside the token", function()
    local inner = stores.new_local()
    local c = H.toast { store = mixing(inner) }
    local token = assert(c:login())
    assert(c:search_customers { lastName = "Nobody" })
    local v = inner:get("t:0")
    local t, expiry, tag = v:match("^(.+) crm1 (%d+) (%x+)$")
    assert.is_string(t)
    assert.equal(hash.hex(hash.hmac_sha256(H.client_secret, H.client_id .. "\0" .. H.base_url .. "\0"
      .. t .. "\0" .. expiry)), tag)
    assert.is_nil(v:find(H.client_secret, 1, true))
    assert.is_string(token)
    -- another restaurant with the same credentials uses the same token: no second login
    local logins = H.stats().logins
    local other = H.toast { store = mixing(inner), restaurant_guid = "00000000-0000-4000-8000-000000000001" }
    assert(other:search_customers { lastName = "Nobody" })
    assert.equal(logins, H.stats().logins)
    assert.equal(0, #logs)
  end)

  it("ignores another tenant's token that a store hands over, and logs that once", function()
    local inner = stores.new_local()
    local a = H.toast { store = mixing(inner) }
    assert(a:search_customers { lastName = "Nobody" })
    -- tenant b: other credentials, the same (broken) store
    local b = H.toast { store = mixing(inner), client_id = "other-client", client_secret = "other-secret" }
    local _, err = b:search_customers { lastName = "Nobody" }
    assert.equal("auth", err.kind) -- it logged in with its own credentials, which the server refuses
    local _, err2 = b:get_customer(crm.guid())
    assert.equal("auth", err2.kind)
    assert.equal(1, #logs)
    assert.matches("not bound to these credentials", logs[1])
  end)

  it("ignores an unbound or forged entry, logs once and logs in itself", function()
    local inner = stores.new_local()
    local c = H.toast { store = mixing(inner) }
    local token = assert(c:login())
    inner:set("t:0", token) -- a bare token: no tag
    local c2 = H.toast { store = mixing(inner) }
    local logins = H.stats().logins
    assert(c2:search_customers { lastName = "Nobody" })
    assert.equal(logins + 1, H.stats().logins)
    inner:set("t:0", token .. " crm1 9999999999 " .. ("ab"):rep(32)) -- a forged tag
    local c3 = H.toast { store = mixing(inner) }
    assert(c3:search_customers { lastName = "Nobody" })
    assert(c3:search_customers { lastName = "Nobody" })
    assert.equal(logins + 2, H.stats().logins)
    assert.equal(2, #logs) -- once per client
  end)
end)

describe("the command line's config file", function()
  local config = require "crm.cli.config"

  it("is refused when group or others can write it, not only read it", function()
    local path = os.tmpname()
    H.spit(path, crm.json.encode { CRM_TABLECHECK_API_KEY = H.tablecheck_key })
    for _, mode in ipairs { "620", "602", "622", "660", "606" } do
      assert(os.execute("chmod " .. mode .. " " .. path))
      local t, err = config.read_file(path, true)
      assert.is_nil(t, mode)
      assert.equal("config", err.field, mode)
      assert.matches("by group or others", err.message)
      assert.is_nil(err.message:find(H.tablecheck_key, 1, true))
    end
    assert(os.execute("chmod 620 " .. path))
    assert.matches("writable by group or others", select(2, config.read_file(path, true)).message)
    for _, mode in ipairs { "600", "400" } do
      assert(os.execute("chmod " .. mode .. " " .. path))
      assert.equal(H.tablecheck_key, assert(config.read_file(path, true)).CRM_TABLECHECK_API_KEY, mode)
    end
    os.remove(path)
  end)

  it("is refused when another user owns it (checked when the specs run as root)", function()
    local _, _, _, euid = core.file_mode("/")
    assert.is_number(euid)
    if euid ~= 0 then return end
    local path = os.tmpname()
    H.spit(path, "{}")
    assert(os.execute("chmod 600 " .. path .. " && chown 65534 " .. path))
    local t, err = config.read_file(path, true)
    assert.is_nil(t)
    assert.matches("belongs to another user", err.message)
    os.remove(path)
  end)
end)

describe("--dry-run masks by field", function()
  local inspect = require "crm.cli.inspect"
  local ID, GUID = "5ed64e249551e80639a4d995", "0b7d3f0e-1111-4a2b-9c3d-000000000001"

  -- Person fields of both contracts, filled with text a shape rule would let through:
  -- upper-case words, dates and digits.
  local function tablecheck_body()
    return {
      franchise_id = ID, first_name = "ZELDA", last_name = "HYRULE", alt_first_name = "ZEL",
      alt_last_name = "HYR", alpha_first_name = "ZLD", kanji_first_name = "ZK", kanji_last_name = "HK",
      name_prefix = "DR", title = "CEO", company_name = "ACME", company_title = "CTO",
      company_division = "RND", gender = "female", age_range = "AGE_30S", locale = "en",
      memo = "VIP", memo2 = "NUT_FREE", likes = { "WINE" }, dislikes = { "BEER" },
      allergies = { "PEANUTS" }, birthday = "1990-04-01",
      emails = { "ZED@EXAMPLE.ORG" }, phones = { { id = ID, number = "+14155550100" } },
      addresses = { { street = "MAIN_ST", street2 = "APT_4", city = "LONDON", region = "ENG",
                      postal_code = "12345", country = "GB" } },
      socials = { { provider = "twitter", username = "ZELDA_X" } },
      events = { { tag = "birthday", date = "1990-04-01", months = { 4 }, day = 1, memo = "CAKE" } },
      shop_memos = { { shop_id = ID, memo = "REGULAR" } },
      images = { { image_upload_url = "https://cdn.example.com/ZELDA.png" } },
      allow_marketing = true, sms_number = "4155550100",
    }
  end
  local SECRET_VALUES = { "ZELDA", "HYRULE", "ZEL", "HYR", "ZLD", "ZK", "HK", "DR", "CEO", "ACME",
    "CTO", "RND", "female", "AGE_30S", "VIP", "NUT_FREE", "WINE", "BEER", "PEANUTS", "1990-04-01",
    "ZED@EXAMPLE.ORG", "4155550100", "MAIN_ST", "APT_4", "LONDON", "ENG", "12345", "GB", "ZELDA_X",
    "CAKE", "REGULAR", "cdn.example.com", "SMITH", "JOHN", "LOYAL_GUEST", "2065550100", "2031-01-01" }

  local function shown(body)
    return inspect.describe("POST", "http://h/api/crm/v1/customers", { "Authorization: k" },
      crm.json.encode(body), {})
  end

  local function assert_masked(text)
    for _, v in ipairs(SECRET_VALUES) do
      assert.is_nil(text:find(v, 1, true), v .. " shown in: " .. text)
    end
  end

  it("shows every person field of TableCheck's bodies as <pii>, keeping ids and flags", function()
    local text = shown(tablecheck_body())
    assert_masked(text)
    assert.truthy(text:find(ID, 1, true))
    assert.truthy(text:find('"allow_marketing":true', 1, true))
    local r = shown { shop_id = ID, pax = 2, start_at = "2030-01-01T19:00:00Z", party_name = "SMITH",
                      customer_name = "JOHN", memo = "LOYAL_GUEST", special_request = "LONDON" }
    assert_masked(r)
    assert.truthy(r:find("2030-01-01T19:00:00Z", 1, true))
  end)

  it("shows Toast's customer and credit fields as <pii>, keeping GUIDs, amounts and types", function()
    local c = shown { guid = GUID, firstName = "JOHN", lastName = "SMITH", email = "ZED@EXAMPLE.ORG",
                      phone = "2065550100" }
    assert_masked(c)
    assert.truthy(c:find(GUID, 1, true))
    local t = shown { guid = GUID, amount = 4.5, transactionType = "ADD_VALUE",
                      localCreatedDate = "2030-01-01T00:00:00.000+0000", note = "LOYAL_GUEST",
                      expirationDate = "2031-01-01" }
    assert.truthy(t:find("ADD_VALUE", 1, true))
    assert.truthy(t:find("4.5", 1, true))
    assert.is_nil(t:find("LOYAL_GUEST", 1, true))
  end)

  it("masks a body nested deeper than 20 levels", function()
    local text = shown(deep(50, "memo", "ZELDA"))
    assert.is_nil(text:find("ZELDA", 1, true))
    assert.is_nil(shown(deep(50, "x", { first_name = "ZELDA" })):find("ZELDA", 1, true))
  end)
end)
