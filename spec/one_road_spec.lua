-- One road for every call: reads of both clients enter the same functions, from the client's
-- method through crm.client.call and crm.http's Engine:call to the C core's h:call (or, in a
-- batch, the router and the multi), and the retry policy only when an attempt failed.
-- Proved by recording the functions a call enters (debug.sethook call events).
local H = require "helper"
local client = require "crm.client"
local retry = require "crm.retry"
local toast_mod = require "crm.toast"

-- The functions entered while fn runs, as a set (function -> true). LuaJIT runs compiled code
-- without hooks, so the JIT is off meanwhile.
local function entered(fn)
  local seen = {}
  local getinfo = debug.getinfo
  if jit then jit.off() jit.flush() end
  debug.sethook(function()
    local info = getinfo(2, "f")
    if info and info.func then seen[info.func] = true end
  end, "c")
  local ok, a, b = pcall(fn)
  debug.sethook()
  if jit then jit.on() end
  assert(ok, a)
  return seen, a, b
end

-- The functions of the shared modules (crm.client, crm.http, crm.retry, crm.batch) among them,
-- by name, for messages: the part of the road both clients must share.
local function shared_names(seen)
  local names = {}
  for f in pairs(seen) do
    local info = debug.getinfo(f, "S")
    local src = info.short_src or ""
    if src:find("crm/client.lua", 1, true) or src:find("crm/http.lua", 1, true)
        or src:find("crm/retry.lua", 1, true) or src:find("crm/batch.lua", 1, true) then
      names[#names + 1] = src:match("crm/(.*)$") .. ":" .. info.linedefined
    end
  end
  table.sort(names)
  return names
end

describe("one road", function()
  local toast, tc, guid, tc_id
  local Policy_run, Engine_call, Router_call, handle_call

  before_each(function()
    H.reset()
    -- Seeded on first use, once per process: not part of any call's road.
    retry.random()
    toast, tc = H.toast(), H.tablecheck()
    guid = assert(toast:create_customer(H.customer())).guid
    tc_id = assert(tc:create_customer(H.tc_customer())).id
    -- The functions of the road, taken from the objects themselves.
    Policy_run = getmetatable(toast.policy).__index.run
    Engine_call = getmetatable(toast.engine).__index.call
    Router_call = getmetatable(toast.transport).__index.call
    handle_call = getmetatable(toast.transport.handle).__index.call
    assert.equal(Engine_call, getmetatable(tc.engine).__index.call)
    assert.equal(handle_call, getmetatable(tc.transport.handle).__index.call)
  end)

  after_each(function()
    toast:close()
    tc:close()
  end)

  it("has no read lane beside it: the removed fast paths are gone", function()
    local Toast = getmetatable(toast).__index
    assert.is_nil(rawget(Toast, "_read"))
    assert.is_nil(rawget(Toast, "_batch_read"))
    assert.is_nil(rawget(Toast, "_batch_reads"))
    assert.is_nil(toast_mod._read)
  end)

  it("takes both clients' reads through crm.client.call, Engine:call and h:call, and nothing else shared", function()
    local a, value = entered(function() return toast:get_customer(guid) end)
    assert.equal(guid, value.guid)
    local b, item = entered(function() return tc:get_customer(tc_id) end)
    assert.equal(tc_id, item.id)
    for _, seen in ipairs { a, b } do
      assert.is_true(seen[client.call] == true, "crm.client.call entered")
      assert.is_true(seen[Engine_call] == true, "Engine:call entered")
      assert.is_true(seen[handle_call] == true, "the C core's h:call entered")
      -- Success on the first attempt: the policy never runs, no closure is made for it.
      assert.is_nil(seen[Policy_run])
    end
    -- The same shared functions, in the same number: one road, not two that meet.
    assert.same(shared_names(a), shared_names(b))
  end)

  it("enters the retry policy from the same road when the first attempt fails, for both clients", function()
    H.fault { path = "/crm/v1/customers/" .. guid, status = 503, count = 1 }
    H.fault { path = "/api/crm/v1/customers/" .. tc_id, status = 503, count = 1 }
    local a, value = entered(function() return toast:get_customer(guid) end)
    assert.equal(guid, value.guid)
    local b, item = entered(function() return tc:get_customer(tc_id) end)
    assert.equal(tc_id, item.id)
    for _, seen in ipairs { a, b } do
      assert.is_true(seen[client.call] == true)
      assert.is_true(seen[Policy_run] == true, "the policy ran after the failed attempt")
      assert.is_true(seen[Engine_call] == true)
    end
    assert.same(shared_names(a), shared_names(b))
  end)

  it("runs a batch's operations on the same road, through the router to the multi", function()
    local function op_of(id)
      -- An op that records what it enters inside its worker (hooks are per coroutine in 5.4).
      return function(c)
        local seen, value = entered(function() return c:get_customer(id) end)
        return { seen = seen, value = value }
      end
    end
    local ra = assert(toast:batch({ op_of(guid) }))
    local rb = assert(tc:batch({ op_of(tc_id) }))
    assert.equal(1, ra.succeeded)
    assert.equal(1, rb.succeeded)
    local a, b = ra[1].value, rb[1].value
    assert.equal(guid, a.value.guid)
    assert.equal(tc_id, b.value.id)
    for _, seen in ipairs { a.seen, b.seen } do
      assert.is_true(seen[client.call] == true)
      assert.is_true(seen[Engine_call] == true)
      assert.is_true(seen[Router_call] == true, "the router hands the exchange to the multi")
      assert.is_nil(seen[handle_call], "not the client's own handle inside a batch")
    end
    assert.same(shared_names(a.seen), shared_names(b.seen))
  end)

  it("sends a refused login once: a 401 to the login itself is not a token to renew", function()
    local c = H.toast { client_secret = "not-the-secret" }
    local LOGIN = "POST /authentication/v1/authentication/login"
    local before = H.count(LOGIN)
    local value, err = c:get_customer(guid)
    assert.is_nil(value)
    assert.equal("auth", err.kind)
    assert.matches("login failed", err.message)
    assert.equal(1, H.count(LOGIN) - before)
    c:close()
  end)

  it("sends nothing when the token cannot be a header line (libcurl refuses the header set)", function()
    H.fault { path = "/authentication/v1/authentication/login", status = 200, count = 1,
              body = { token = { accessToken = "tok\r\nX-Injected: 1", expiresIn = 3600 } } }
    local c = H.toast()
    local key = "GET /crm/v1/customers/" .. guid
    local before = H.count(key)
    local value, err = c:get_customer(guid)
    assert.is_nil(value)
    assert.equal("bad_header", err.code)
    assert.is_false(err.sent)
    assert.equal(before, H.count(key))
    c:close()
  end)

  it("counts the retry deadline from before the first attempt", function()
    -- A policy whose deadline is shorter than the first attempt: a slow first answer (a 503
    -- after 0.3 s) leaves no room for a second one, so the call gives up after one attempt.
    local c = H.toast { retry = { max_attempts = 4, base_delay = 0.01, max_delay = 0.01, deadline = 0.2 } }
    assert(c:get_customer(guid))
    H.fault { path = "/crm/v1/customers/" .. guid, status = 503, delay = 0.3, count = 1 }
    local value, err = c:get_customer(guid)
    assert.is_nil(value)
    assert.equal(503, err.status)
    assert.equal(1, err.attempts)
    assert.matches("retry deadline reached", err.message)
    c:close()
    assert.is_true(retry.is_policy(toast.policy))
  end)
end)
