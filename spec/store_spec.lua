-- The shared store outside nginx (crm.store, crm.hash, crm.toast.token): two clients in one
-- process sharing a store object stand in for two nginx workers sharing a lua_shared_dict.
-- The 4-worker proof is spec/openresty_scale_spec.lua; two processes over Redis are
-- spec/redis_store_spec.lua.
local core = require "crm.core"
local crm = require "crm"
local hash = require "crm.hash"
local stores = require "crm.store"
local H = require "helper"

local function hex(s) return hash.hex(s) end

-- A store that records every key and value it is given, over the in-process store.
local function recording()
  local inner = stores.new_local()
  local seen = {}
  local s = {}
  function s.get(_, k) seen[#seen + 1] = k return inner:get(k) end
  function s.set(_, k, v, ttl) seen[#seen + 1] = k .. "=" .. tostring(v) return inner:set(k, v, ttl) end
  function s.add(_, k, v, ttl) seen[#seen + 1] = k .. "=" .. tostring(v) return inner:add(k, v, ttl) end
  function s.incr(_, k, n, init, ttl) seen[#seen + 1] = k return inner:incr(k, n, init, ttl) end
  return s, seen, inner
end

describe("crm.hash", function()
  it("computes SHA-256, SHA-1 and HMAC as the published test vectors say", function()
    assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", hash.sha256_hex(""))
    assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", hash.sha256_hex("abc"))
    assert.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
      hash.sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
    assert.equal("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
      hash.sha256_hex(("a"):rep(1000000)))
    assert.equal("a9993e364706816aba3e25717850c26c9cd0d89d", hex(hash.sha1("abc")))
    assert.equal("84983e441c3bd26ebaae4aa1f95129e5e54670f1",
      hex(hash.sha1("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")))
    -- RFC 4231 case 2, RFC 2202 case 2, and a key longer than a block (RFC 4231 case 6)
    assert.equal("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
      hex(hash.hmac_sha256("Jefe", "what do ya want for nothing?")))
    assert.equal("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
      hex(hash.hmac_sha1("Jefe", "what do ya want for nothing?")))
    assert.equal("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
      hex(hash.hmac_sha256(("\170"):rep(131), "Test Using Larger Than Block-Size Key - Hash Key First")))
  end)

  it("compares in constant time over equal lengths", function()
    assert.is_true(hash.equal("abc", "abc"))
    assert.is_false(hash.equal("abc", "abd"))
    assert.is_false(hash.equal("abc", "ab"))
    assert.is_false(hash.equal(nil, "ab"))
  end)
end)

describe("crm.store", function()
  before_each(function() H.reset() end)

  it("refuses a store without the four methods, naming the field", function()
    local _, e1 = crm.toast { restaurant_guid = H.restaurant, client_id = "a", client_secret = "abcd",
                              store = 5 }
    assert.equal("store", e1.field)
    local partial = { get = function() end, set = function() end, add = function() end }
    local _, e2 = crm.toast { restaurant_guid = H.restaurant, client_id = "a", client_secret = "abcd",
                              store = partial }
    assert.equal("validation", e2.kind)
    assert.equal("store.incr", e2.field)
    local _, e3 = crm.tablecheck { api_key = "abcdef", shared_dict = "crm" }
    assert.equal("shared_dict", e3.field)
    assert.matches("needs nginx", e3.message)
    local _, e4 = crm.toast { restaurant_guid = H.restaurant, client_id = "a", client_secret = "abcd",
                              shared_dict = "crm", store = stores.new_local() }
    assert.equal("store", e4.field)
    assert(crm.toast { restaurant_guid = H.restaurant, client_id = "a", client_secret = "abcd",
                       store = stores.new_local() })
  end)

  it("names keys by base URL and a keyed hash of the credentials, never the secret", function()
    local a = stores.namespace("http://x", "client\0id\0secret1")
    assert.matches("^crm:%x+$", a)
    assert.equal(36, #a)
    assert.equal(a, (stores.namespace("http://x", "client\0id\0secret1")))
    assert.are_not.equal(a, (stores.namespace("http://y", "client\0id\0secret1")))
    assert.are_not.equal(a, (stores.namespace("http://x", "client\0id\0secret2")))
    -- A whole session: the store sees the token and hashes, never the secret, the client id or
    -- the guest's email and phone.
    local s, seen = recording()
    local c = H.toast { store = s }
    local guest = H.customer { phone = "+12065550142" }
    assert(c:find_or_create(guest))
    local all = table.concat(seen, "\n")
    assert.is_true(#seen > 0)
    for _, secret in ipairs { H.client_secret, H.client_id, guest.email, "2065550142", "Lovelace" } do
      assert.is_nil(all:find(secret, 1, true), secret)
    end
    assert.matches("crm:%x+:t:0=sim%.", all) -- the bearer token itself is there, until it expires
  end)

  it("makes one login for two clients sharing a store; a second store logs in again", function()
    local s = stores.new_local()
    local a, b = H.toast { store = s }, H.toast { store = s }
    assert(a:search_customers { lastName = "Nobody" })
    assert(b:search_customers { lastName = "Nobody" })
    assert(a:search_customers { lastName = "Nobody" })
    assert.equal(1, H.stats().logins)
    assert(H.toast { store = stores.new_local() }:search_customers { lastName = "Nobody" })
    assert.equal(2, H.stats().logins)
    -- and without a store each client logs in for itself
    assert(H.toast():search_customers { lastName = "Nobody" })
    assert.equal(3, H.stats().logins)
  end)

  it("logs in once while concurrent clients wait on the lock, then all use that token", function()
    local s = stores.new_local()
    local a, b = H.toast { store = s }, H.toast { store = s }
    H.fault { path = "/authentication/v1/authentication/login", delay = 0.3, count = 1 }
    local ops = {}
    for i = 1, 8 do
      local c = i % 2 == 0 and a or b
      ops[i] = function() return c:search_customers { lastName = "Nobody" } end
    end
    local r = assert(a:batch(ops, { concurrency = 8 }))
    assert.equal(8, r.succeeded)
    assert.equal(1, H.stats().logins)
  end)

  it("on 401s seen by several clients at once, invalidates the token for all: one re-login", function()
    local s = stores.new_local()
    local a, b = H.toast { store = s }, H.toast { store = s }
    assert(a:search_customers { lastName = "Nobody" })
    assert.equal(1, H.stats().logins)
    H.fault { path = "/crm/v1/customers/search", status = 401, delay = 0.2, count = 4 }
    local ops = {}
    for i = 1, 4 do
      local c = i % 2 == 0 and a or b
      ops[i] = function() return c:search_customers { lastName = "Nobody" } end
    end
    local r = assert(a:batch(ops, { concurrency = 4 }))
    assert.equal(4, r.succeeded)
    assert.equal(2, H.stats().logins)
    -- b follows a's new token without a login of its own
    assert(b:search_customers { lastName = "Nobody" })
    assert.equal(2, H.stats().logins)
  end)

  it("a 401 reporter that died between its bad mark and the generation bump strands nobody", function()
    local s = stores.new_local()
    local a = H.toast { store = s }
    assert(a:search_customers { lastName = "Nobody" })
    local ns
    for k in pairs(s.entries) do ns = ns or k:match("^(crm:%x+):t:0$") end
    assert.is_string(ns)
    -- A process got a 401 for generation 0's token, added the mark, and was killed (or lost its
    -- Redis) before its incr of the generation: the mark is there, the generation is still 0.
    assert.is_true(s:add(ns .. ":tb:0", 1, 300))
    H.reset() -- the simulator forgets its tokens: generation 0's token is refused from now on
    -- Before: every call failed with a 401 until the mark's ttl ran out (the stale token was
    -- taken again and again). Now: one new login, and the others follow it.
    local b = H.toast { store = s }
    assert(b:search_customers { lastName = "Nobody" })
    assert(a:search_customers { lastName = "Nobody" })
    assert(b:search_customers { lastName = "Nobody" })
    assert.equal(1, H.stats().logins)
  end)

  it("logs in again when the stored token expires", function()
    H.config { toast_token_ttl = 1 }
    local s = stores.new_local()
    local a, b = H.toast { store = s }, H.toast { store = s }
    assert(a:search_customers { lastName = "Nobody" })
    core.sleep(1.1) -- the token's life (1 s) less crm's margin: it is gone from the store
    assert(b:search_customers { lastName = "Nobody" })
    assert(a:search_customers { lastName = "Nobody" })
    assert.equal(2, H.stats().logins)
  end)

  it("holds one rate for two clients sharing a store", function()
    local function run(shared)
      local s = shared and stores.new_local() or nil
      local rate = { per_second = 20, burst = 2 }
      local a = H.toast { store = s, token = "fixed-token", rate = rate }
      local b = H.toast { store = s or nil, token = "fixed-token", rate = rate }
      local t0 = core.now()
      for i = 1, 20 do
        local c = i % 2 == 0 and a or b
        c:get_customer(core.guid()) -- a 401 (the simulator knows no such token): one request each
      end
      return core.now() - t0
    end
    local alone, shared = run(false), run(true)
    -- 20 requests at 20/s with a burst of 2: at least 0.9 s together; each alone is 10 at 20/s
    assert.is_true(shared >= 0.85, shared)
    assert.is_true(alone < 0.8, alone)
  end)

  it("a slot is never handed out twice: concurrent takers in a batch keep the bound", function()
    local s = stores.new_local()
    local rate = { per_second = 50, burst = 5 }
    local a = H.toast { store = s, token = "fixed-token", rate = rate }
    local b = H.toast { store = s, token = "fixed-token", rate = rate }
    H.config { record_times = true }
    local ops = {}
    for i = 1, 40 do
      local c = i % 2 == 0 and a or b
      ops[i] = function() return c:get_customer(core.guid()) end
    end
    a:batch(ops, { concurrency = 40 })
    local times = H.control("GET", "/__sim/times").times
    assert.equal(40, #times)
    table.sort(times)
    -- any span of L seconds: at most 50 * L + 5 (a little slack for the loopback's jitter)
    for i = 1, #times do
      for j = i, #times do
        local span = times[j] - times[i]
        assert.is_true(j - i + 1 <= 50 * span + 5 + 1, ("%d requests in %.3f s"):format(j - i + 1, span))
      end
    end
  end)

  it("find_or_create takes turns across clients sharing a store: one customer", function()
    local s = stores.new_local()
    local a, b = H.toast { store = s }, H.toast { store = s }
    H.fault { method = "POST", path = "/crm/v1/customers/search", delay = 0.2, count = 8 }
    local guest = H.customer()
    local ops = {}
    for i = 1, 4 do
      local c = i % 2 == 0 and a or b
      ops[i] = function() return c:find_or_create(guest) end
    end
    local r = assert(a:batch(ops, { concurrency = 4 }))
    assert.equal(4, r.succeeded)
    local hows = {}
    for _, x in ipairs(r) do hows[x.extra] = (hows[x.extra] or 0) + 1 end
    assert.same({ created = 1, found = 3 }, hows)
  end)

  it("falls back to per-process state when the store fails, logs once, never fails a call", function()
    local lines = {}
    local old = stores.log
    stores.log = function(msg) lines[#lines + 1] = msg end
    local broken = {}
    for _, m in ipairs(stores.METHODS) do
      broken[m] = function() error("connection refused to 10.0.0.9:6379 secret=" .. H.client_secret) end
    end
    local full = { -- a dict that is full: answers, with "no memory"
      get = function() return nil end,
      set = function() return false, "no memory" end,
      add = function() return false, "no memory" end,
      incr = function() return nil, "no memory" end,
    }
    local ok, err = pcall(function()
      for _, s in ipairs { broken, full } do
        lines = {}
        local c = H.toast { store = s, rate = { per_second = 1000 } }
        for _ = 1, 3 do assert(c:search_customers { lastName = "Nobody" }) end
        assert(c:find_or_create(H.customer()))
        assert.equal(1, #lines)
        assert.matches("per worker", lines[1])
        assert.is_nil(lines[1]:find(H.client_secret, 1, true))
      end
    end)
    stores.log = old
    assert(ok, err)
    assert.equal(2, H.stats().logins) -- one per client: the fallback keeps the token
  end)

  it("never logs the bearer token when a failing store's error repeats what it was given", function()
    local lines = {}
    local old = stores.log
    stores.log = function(msg) lines[#lines + 1] = msg end
    local inner = stores.new_local()
    local echoing = { -- an adapter whose set error quotes the value's first word
      get = function(_, k) return inner:get(k) end,
      add = function(_, k, v, ttl) return inner:add(k, v, ttl) end,
      incr = function(_, k, n, init, ttl) return inner:incr(k, n, init, ttl) end,
      set = function(_, k, v, ttl)
        if type(v) == "string" and v:find(" ", 1, true) then
          error("ERR value too big: " .. v:match("^%S+") .. "...")
        end
        return inner:set(k, v, ttl)
      end,
    }
    local ok, err = pcall(function()
      local c = H.toast { store = echoing }
      assert(c:search_customers { lastName = "Nobody" })
      local token = require("crm.client").private(c).token
      assert.is_string(token)
      assert.equal(1, #lines)
      assert.matches("value too big", lines[1])
      -- before: the line carried the token itself (only the whole stored entry was scrubbed)
      assert.is_nil(lines[1]:find(token, 1, true))
    end)
    stores.log = old
    assert(ok, err)
  end)

  it("goes back to the store once it works again", function()
    local healthy = true
    local inner = stores.new_local()
    local s = {}
    for _, m in ipairs(stores.METHODS) do
      s[m] = function(_, ...)
        if not healthy then error("down") end
        return inner[m](inner, ...)
      end
    end
    local g = stores.guard(s, { log = function() end })
    local old = stores.RECHECK
    stores.RECHECK = 0.2
    healthy = false
    assert.is_true(g:add("k", 1, 60))
    stores.RECHECK = old
    assert.is_true(g:is_down())
    healthy = true
    core.sleep(0.25)
    assert.is_false(g:is_down())
    assert.is_true(g:add("k", 1, 60)) -- the store never had it
    assert.is_false(g:add("k", 1, 60))
    assert.equal(1, inner:get("k"))
  end)
end)
