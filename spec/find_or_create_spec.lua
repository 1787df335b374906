-- find_or_create: single flight per guest (crm.flight), normalised search keys, and the lock
-- module itself.
local core = require "crm.core"
local flight = require "crm.flight"
local H = require "helper"

-- A clock for the lock module alone: time moves only by sleeping; `yields` as asked.
local function fake_clock(yields)
  local c = H.manual_clock(0)
  c.yields = function() return yields end
  return c
end

-- Coroutines that sleep by yielding to a round-robin loop: enough to interleave two acquirers.
local function interleave(fns, clock)
  local cos = {}
  for i, fn in ipairs(fns) do cos[i] = coroutine.create(fn) end
  clock.sleep = function(s)
    clock.t = clock.t + s
    coroutine.yield()
  end
  for _ = 1, 10000 do
    local alive = false
    for _, co in ipairs(cos) do
      if coroutine.status(co) ~= "dead" then
        alive = true
        local ok, msg = coroutine.resume(co)
        assert(ok, msg)
      end
    end
    if not alive then return true end
  end
  return false
end

describe("crm.flight", function()
  it("holds a key until it is released, and bounds the wait of the others", function()
    local clock = fake_clock(true)
    local locks = flight.new { clock = clock }
    local held = assert(locks:acquire({ "b", "a" }, { ttl = 60 }))
    assert.is_true(held.locked)
    assert.same({ "a", "b" }, held.keys)
    local none, err = locks:acquire({ "a" }, { ttl = 60, wait = 1 })
    assert.is_nil(none)
    assert.equal("timeout", err.kind)
    assert.is_true(clock.t >= 1 and clock.t < 2)
    -- a failed acquire gives back what it took: it got "0", then timed out on "a"
    assert.is_nil(locks:acquire({ "a", "0" }, { wait = 0.5 }))
    assert(locks:acquire({ "0" }, { wait = 0 }))
    assert(locks:release(held))
    local again = assert(locks:acquire({ "a", "b" }, { wait = 0 }))
    assert.equal(0, again.waited)
  end)

  it("stops a holder that never released from blocking the others after its ttl", function()
    local clock = fake_clock(true)
    local locks = flight.new { clock = clock }
    assert(locks:acquire({ "k" }, { ttl = 5 })) -- and never released: the holder died
    local held = assert(locks:acquire({ "k" }, { ttl = 5 }))
    assert.is_true(held.waited >= 5 and held.waited < 5.2)
  end)

  it("never lets a late release take a key that has passed to someone else", function()
    local clock = fake_clock(true)
    local locks = flight.new { clock = clock }
    local first = assert(locks:acquire({ "k" }, { ttl = 1 }))
    local second = assert(locks:acquire({ "k" }, { ttl = 60 }))
    locks:release(first) -- too late: its ttl ran out and "k" is second's now
    assert.is_nil(locks:acquire({ "k" }, { wait = 0.5 }))
    locks:release(second)
    assert(locks:acquire({ "k" }, { wait = 0 }))
  end)

  it("takes keys in sorted order, so callers asking in opposite orders cannot deadlock", function()
    local clock = fake_clock(true)
    -- Every key taken hands the turn to the other caller, so they interleave key by key.
    local inner = flight.new_store(clock)
    local store = {
      add = function(_, k, v, ttl)
        local ok = inner:add(k, v, ttl)
        if ok then coroutine.yield() end
        return ok
      end,
      get = function(_, k) return inner:get(k) end,
      set = function(_, k, v) return inner:set(k, v) end,
    }
    local locks = flight.new { clock = clock, store = store }
    local order = {}
    local function worker(name, keys)
      return function()
        local held = assert(locks:acquire(keys, { ttl = 100, wait = 50 }))
        order[#order + 1] = name
        clock.sleep(1) -- work while holding both
        locks:release(held)
      end
    end
    assert.is_true(interleave({ worker("A", { "x", "y" }), worker("B", { "y", "x" }) }, clock))
    assert.same({ "A", "B" }, order)
    assert.is_true(clock.t < 50) -- B waited for A, not for its wait bound
  end)

  it("locks nothing where sleeping would hold the thread: nothing else can run", function()
    local locks = flight.new { clock = fake_clock(false) }
    local a = assert(locks:acquire({ "k" }))
    local b = assert(locks:acquire({ "k" }))
    assert.is_false(a.locked)
    assert.is_false(b.locked)
  end)

  it("keeps its keys in any store with add, get and set", function()
    local clock = fake_clock(true)
    local calls = {}
    local inner = flight.new_store(clock)
    local store = {
      add = function(_, k, v, ttl) calls[#calls + 1] = "add " .. k .. " " .. ttl return inner:add(k, v, ttl) end,
      get = function(_, k) return inner:get(k) end,
      set = function(_, k, v) calls[#calls + 1] = "set " .. k .. " " .. tostring(v) return inner:set(k, v) end,
    }
    local locks = flight.new { clock = clock, store = store }
    locks:release(assert(locks:acquire({ "k" }, { ttl = 7 })))
    assert.same({ "add k 7", "set k nil" }, calls)
  end)
end)

describe("find_or_create", function()
  before_each(function() H.reset() end)

  local function people(last)
    return assert(H.toast():search_customers({ lastName = last }, { pageSize = 50 }))
  end

  it("creates one customer when concurrent calls in a batch look for the same guest", function()
    local c = H.toast()
    assert(c:login()) -- so that all eight start searching at once
    local guest = H.customer { lastName = "Racer" }
    -- Searches are slow: every call misses before the first create, unless they take turns.
    H.fault { method = "POST", path = "/crm/v1/customers/search", delay = 0.2, count = 40 }
    local ops = {}
    for i = 1, 8 do ops[i] = function(cl) return cl:find_or_create(guest) end end
    local results = assert(c:batch(ops, { concurrency = 8 }))
    assert.equal(8, results.succeeded)
    local created, guids = 0, {}
    for _, r in ipairs(results) do
      if r.extra == "created" then created = created + 1 end
      guids[r.value.guid] = true
    end
    assert.equal(1, created)
    assert.equal(1, #people("Racer"))
    assert.equal(1, H.count("POST /crm/v1/customers"))
    assert.is_not_nil(guids[people("Racer")[1].guid])
  end)

  it("creates one customer when the calls share only the phone or only the email", function()
    local c = H.toast()
    local email = "twin." .. core.guid():sub(1, 8) .. "@example.org"
    H.fault { method = "POST", path = "/crm/v1/customers/search", delay = 0.2, count = 40 }
    local guests = {
      { firstName = "Tess", lastName = "Twin", email = email, phone = "+1 (206) 555-0199" },
      { firstName = "Tess", lastName = "Twin", phone = "206.555.0199" },
      { firstName = "Tess", lastName = "Twin", email = "  " .. email:upper() .. " " },
    }
    local ops = {}
    for i, g in ipairs(guests) do ops[i] = function(cl) return cl:find_or_create(g) end end
    local results = assert(c:batch(ops, { concurrency = 3 }))
    assert.equal(3, results.succeeded)
    assert.equal(1, #people("Twin"))
  end)

  it("gives the keys back when an operation raises, so the next call does not wait", function()
    local inner = assert(core.new { timeout = 5 })
    local raise = false
    local t = {}
    function t.request(_, method, url, headers, body, timeout)
      if raise and url:find("/customers/search", 1, true) then
        raise = false
        error("transport bug")
      end
      return inner:request(method, url, headers, body, timeout)
    end
    function t.close() return inner:close() end
    local c = H.toast { transport = t }
    local guest = H.customer { lastName = "Raiser" }
    assert(c:login())
    raise = true
    local t0 = core.now()
    local results = assert(c:batch({ function(cl) return cl:find_or_create(guest) end,
                                     function(cl) return cl:find_or_create(guest) end },
                                   { concurrency = 1 }))
    assert.matches("transport bug", results[1].err.message)
    assert.equal("created", results[2].extra)
    assert.is_true(core.now() - t0 < 2, "the second call waited for a lock nobody held")
  end)

  it("finds a guest whatever the email's case and spacing or the phone's format", function()
    local c = H.toast()
    local tag = core.guid():sub(1, 8)
    local a, _, how = assert(c:find_or_create { firstName = "Ann", lastName = "Norm",
      email = " Ann." .. tag .. "@Example.ORG ", phone = "+1 (206) 555-0100" })
    assert.equal("created", how)
    -- created in the normal forms
    assert.equal("ann." .. tag .. "@example.org", a.email)
    assert.equal("+12065550100", a.phone)
    local b
    b, _, how = assert(c:find_or_create { firstName = "Ann", lastName = "Norm",
      email = "ANN." .. tag .. "@example.org" })
    assert.equal("found", how)
    assert.equal(a.guid, b.guid)
    b, _, how = assert(c:find_or_create { firstName = "Ann", lastName = "Norm", phone = "206.555.0100" })
    assert.equal("found", how)
    assert.equal(a.guid, b.guid)
    assert.equal(1, #people("Norm"))
  end)

  it("searches by the value as given too, when it differs from the normal form", function()
    local c = H.toast()
    -- stored by someone else in a national spelling: its digits differ from E.164's (crm itself
    -- writes E.164 only)
    local old = H.toast_store { guid = core.guid(), firstName = "Old", lastName = "Spelling",
                                phone = "206.555.0142" }
    local before = H.count("POST /crm/v1/customers/search")
    local found, _, how = assert(c:find_or_create { firstName = "Old", lastName = "Spelling",
                                                 phone = "206.555.0142" })
    assert.equal("found", how)
    assert.equal(old.guid, found.guid)
    assert.equal(before + 2, H.count("POST /crm/v1/customers/search"))
  end)

  it("validates everything, options included, before searching", function()
    local c = H.toast()
    local _, e1 = c:find_or_create(H.customer(), { confirm_timeout = -1 })
    assert.equal("confirm_timeout", e1.field)
    local _, e2 = c:find_or_create { firstName = "F", lastName = "L", email = "  " }
    assert.equal("email", e2.field)
    local _, e3 = c:find_or_create "nope"
    assert.equal("customer", e3.field)
    assert.equal(0, H.total())
  end)

  it("keeps the guests' emails off the client table (the locks live in the private table)", function()
    local c = H.toast()
    local guest = H.customer()
    assert(c:batch({ function(cl) return cl:find_or_create(guest) end }))
    local seen = {}
    local function walk(v, depth)
      if type(v) == "string" then
        assert.is_nil(v:find(guest.email, 1, true))
        assert.is_nil(v:find(H.client_secret, 1, true))
      elseif type(v) == "table" and not seen[v] and depth < 6 then
        seen[v] = true
        for k, x in pairs(v) do
          walk(k, depth + 1)
          walk(x, depth + 1)
        end
      end
    end
    walk(c, 0)
  end)
end)
