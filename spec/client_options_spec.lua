-- The options every client shares: base_url and proxy rules, header bytes, the rate limiter
-- under concurrency, Retry-After and backoff jitter.
local H = require "helper"
local crm = require "crm"
local core = require "crm.core"
local retry = require "crm.retry"

local GUID = "0b7d3f0e-1111-4a2b-9c3d-000000000001"

local function tablecheck(extra)
  local o = { base_url = H.tablecheck_url, api_key = H.tablecheck_key, timeout = 5 }
  for k, v in pairs(extra or {}) do o[k] = v end
  return crm.tablecheck(o)
end

describe("base_url", function()
  it("is refused, before anything is sent, when it could send requests elsewhere", function()
    H.reset()
    local bad = {
      "http://user:pw@127.0.0.1:" .. H.port .. "/api/crm/v1",  -- userinfo
      "http://127.0.0.1:" .. H.port .. "@evil.example/api",      -- @ trick
      "http://evil.example\\@127.0.0.1/api",                     -- backslash
      "http://127.0.0.1:" .. H.port .. "\\api",
      "http://127.0.0.1:" .. H.port .. "/api?x=1",               -- query
      "http://127.0.0.1:" .. H.port .. "/api#frag",              -- fragment
      "http://127.0.0.1:0/api", "http://127.0.0.1:65536/api",    -- bad ports
      "http://127.0.0.1:abc/api", "http://127.0.0.1:/api",
      "ftp://127.0.0.1/api", "http:///api", "http://exämple.org/api",
    }
    for _, url in ipairs(bad) do
      local c, err = tablecheck { base_url = url }
      assert.is_nil(c, url)
      assert.equal("validation", err.kind, url)
      assert.equal("base_url", err.field, url)
    end
    for _, url in ipairs { "http://127.0.0.1:" .. H.port .. "/api/crm/v1", "https://[::1]:8443/api",
                           "HTTPS://api.tablecheck.com/api/crm/v1/" } do
      assert.is_truthy(tablecheck { base_url = url }, url)
    end
    assert.equal(0, H.total())
  end)
end)

describe("proxies", function()
  local function run_with_env(env, script)
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(script)
    f:close()
    local lua = arg and arg[-1] or "lua5.4"
    local cmd = ("env %s %s %s 2>&1"):format(env, lua, path)
    local p = assert(io.popen(cmd))
    local out = p:read("*a")
    p:close()
    os.remove(path)
    return out
  end

  it("ignores http_proxy, https_proxy and ALL_PROXY from the environment", function()
    H.reset()
    local dead = "http://127.0.0.1:1"
    local out = run_with_env(("http_proxy=%s HTTP_PROXY=%s https_proxy=%s ALL_PROXY=%s all_proxy=%s")
      :format(dead, dead, dead, dead, dead), ([[
        local crm = require "crm"
        local c = assert(crm.tablecheck { base_url = %q, api_key = %q, timeout = 3 })
        local shops, err = c:list_shops()
        print(shops and "OK" or tostring(err))
      ]]):format(H.tablecheck_url, H.tablecheck_key))
    assert.matches("OK", out)
    assert.equal(1, H.count("GET /api/crm/v1/shops"))
  end)

  it("uses the proxy option: a host only the proxy can reach", function()
    H.reset()
    local c = assert(tablecheck { base_url = "http://tablecheck.invalid/api/crm/v1",
                                  proxy = "http://127.0.0.1:" .. H.port })
    assert(c:list_shops())
    assert.equal(1, H.count("GET /api/crm/v1/shops"))
    -- Without it, the same host does not resolve.
    local direct = assert(tablecheck { base_url = "http://tablecheck.invalid/api/crm/v1",
                                       retry = { max_attempts = 1 } })
    local res, err = direct:list_shops()
    assert.is_nil(res)
    assert.equal("transport", err.kind)
  end)

  it("checks the proxy URL and keeps its password out of errors", function()
    for _, p in ipairs { "gopher://127.0.0.1:70", "http://127.0.0.1:99999", "127.0.0.1:3128", 5 } do
      local c, err = tablecheck { proxy = p }
      assert.is_nil(c)
      assert.equal("proxy", err.field)
    end
    local c = assert(tablecheck { proxy = "http://crm:hunter22pw@127.0.0.1:1",
                                  retry = { max_attempts = 1 } })
    local _, err = c:list_shops()
    assert.equal("transport", err.kind)
    assert.is_nil(tostring(err):find("hunter22pw", 1, true))
    for k, v in pairs(c) do
      assert.is_nil(tostring(v):find("hunter22pw", 1, true), k)
    end
  end)
end)

describe("header values", function()
  it("must be ASCII, in options and at the C core", function()
    local c, err = tablecheck { user_agent = "crm-t\195\169st" }
    assert.is_nil(c)
    assert.equal("user_agent", err.field)
    local h = assert(core.new { timeout = 2 })
    local status, e = h:request("GET", H.base_url .. "/__sim/stats", { "X-Name: caf\195\169" })
    assert.is_nil(status)
    assert.equal("bad_header", e.name)
    assert.is_false(e.sent)
    h:close()
  end)
end)

describe("paging numbers", function()
  it("go out only as integers in range", function()
    H.reset()
    local c = H.toast()
    for _, page in ipairs { 1e308, 2 ^ 60, 1.5, 0 / 0 } do
      local res, err = c:search_customers({ lastName = "Lovelace" }, { page = page })
      assert.is_nil(res)
      assert.equal("page", err.field)
    end
    assert.equal(0, H.count("POST /crm/v1/customers/search"))
    assert.equal("?page=9007199254740991", require("crm.http").query { page = 2 ^ 53 - 1 })
  end)
end)

describe("the rate limiter under concurrency", function()
  it("holds its rate inside client:batch: the token is reserved before sleeping", function()
    H.reset()
    local sent = {}
    local c = H.toast { rate = { per_second = 20, burst = 1 },
                        debug = function(line)
                          if line:find("^%-> GET") then sent[#sent + 1] = core.now() end
                        end }
    assert(c:login())
    local ops = {}
    for i = 1, 10 do ops[i] = function(cl) return cl:get_customer(GUID) end end
    assert(c:batch(ops, { concurrency = 10 }))
    assert.equal(10, #sent)
    table.sort(sent)
    -- After the login spent the burst, request k may leave no earlier than k / 20 s after it.
    for k = 2, #sent do
      assert.is_true(sent[k] - sent[1] >= (k - 1) / 20 - 0.01,
        ("request %d left %.3fs after the first"):format(k, sent[k] - sent[1]))
    end
  end)
end)

describe("Retry-After", function()
  local now = 784111777 -- Sun, 06 Nov 1994 08:49:37 GMT
  it("reads all three HTTP-date forms of RFC 9110", function()
    assert.equal(60, retry.parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now))
    assert.equal(60, retry.parse_retry_after("Sunday, 06-Nov-94 08:50:37 GMT", now))
    assert.equal(60, retry.parse_retry_after("Sun Nov  6 08:50:37 1994", now))
    assert.equal(0, retry.parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now))
  end)

  it("gives negative delays 0, fractions as written, and ignores junk", function()
    assert.equal(120, retry.parse_retry_after(" 120 "))
    assert.equal(0, retry.parse_retry_after("-5"))
    assert.equal(1.5, retry.parse_retry_after("1.5"))
    assert.is_nil(retry.parse_retry_after("soon"))
    assert.is_nil(retry.parse_retry_after("Funday, 06 Nov 1994 08:50:37 GMT", now))
    assert.is_nil(retry.parse_retry_after("Sun, 06 Foo 1994 08:50:37 GMT", now))
  end)
end)

describe("backoff jitter", function()
  it("is seeded per process, so two processes do not retry in lockstep", function()
    local lua = arg and arg[-1] or "lua5.4"
    local script = 'local r = require "crm.retry"; local t = {} for i = 1, 4 do t[i] = '
      .. 'string.format("%.6f", r.random()) end print(table.concat(t, " "))'
    local function draw()
      local p = assert(io.popen(("%s -e %q"):format(lua, script)))
      local out = p:read("*l")
      p:close()
      return out
    end
    local a, b = draw(), draw()
    assert.is_truthy(a and a:find("^%d"), tostring(a))
    assert.are_not.equal(a, b)
  end)

  it("stays within [0, cap)", function()
    local p = assert(retry.new({ base_delay = 0.1, max_delay = 0.4 }, { now = os.time, sleep = function() end }))
    for attempt = 1, 6 do
      for _ = 1, 50 do
        local w = p:backoff(attempt)
        assert.is_true(w >= 0 and w < math.min(0.4, 0.1 * 2 ^ (attempt - 1)))
      end
    end
  end)
end)
