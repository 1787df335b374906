-- Many restaurants on one Toast client against the simulator (toast_restaurants seeds them, and
-- refuses any other restaurant with 403): restaurant views (one login, one rate, the header per
-- view, errors naming the restaurant, batches mixing restaurants, a shared store) and
-- backfill_restaurants (per-restaurant spacing from the simulator's arrival times, a failing
-- restaurant skipped, a kill and a resume writing every order once, the slowest-not-the-sum
-- proof on a virtual clock).
local core = require "crm.core"
local file_sink = require("crm.toast").file_sink
local stores = require "crm.store"
local H = require "helper"

local NOW = 1714521600 -- 2024-05-01T00:00:00Z: twelve weeks back are three 28-day windows
local UNKNOWN = "11111111-2222-4333-8444-555555555555"

local function seed(n, extra)
  H.reset()
  local cfg = { toast_restaurants = n, toast_orders_seed = 5, toast_orders_days = 84,
                toast_orders_per_day = 2, toast_orders_end_date = "2024-05-01" }
  for k, v in pairs(extra or {}) do cfg[k] = v end
  H.config(cfg)
  local list = H.control("GET", "/__sim/toast/restaurants").restaurants
  assert(#list == n)
  return list
end

local function guids_of(list)
  local out = {}
  for i, r in ipairs(list) do out[i] = r.guid end
  return out
end

local function tmpdir()
  local p = os.tmpname()
  os.remove(p)
  return p
end

local function truth_guids(guid)
  local t = H.control("GET", "/__sim/toast/orders_truth?restaurant=" .. guid)
  local set = {}
  for _, o in ipairs(t.orders) do set[o.guid] = true end
  return set, #t.orders
end

-- The GUIDs in a restaurant's orders file, and how often each appears.
local function written(sink, guid)
  local counts, n = {}, 0
  for o in sink:each_order(guid) do
    counts[o.guid] = (counts[o.guid] or 0) + 1
    n = n + 1
  end
  return counts, n
end

local function assert_exactly_once(sink, guid)
  local want, n_want = truth_guids(guid)
  local got, n_got = written(sink, guid)
  assert.equal(n_want, n_got)
  for g in pairs(want) do assert.equal(1, got[g], "order " .. g .. " of " .. guid) end
end

-- The simulator's arrival times of n reads in one batch of `client`, read i through view_of(i).
local function arrivals(client, n, view_of)
  H.config { record_times = true }
  local ops = {}
  for i = 1, n do ops[i] = function(c) return view_of(i, c):get_customer(core.guid()) end end
  client:batch(ops, { concurrency = n })
  local times = H.control("GET", "/__sim/times").times
  assert.equal(n, #times)
  return times
end

describe("restaurant views", function()
  it("twenty restaurants cost one login; each view's calls carry its own header, mixed in one batch", function()
    local list = seed(20)
    local toast = H.toast()
    local ops = {}
    for i, r in ipairs(list) do
      ops[i] = function(c)
        return c:use_restaurant(r.guid):create_customer(H.customer { lastName = "R" .. i })
      end
    end
    local results = assert(toast:batch(ops, { concurrency = 20 }))
    assert.equal(20, results.succeeded)
    assert.equal(1, H.stats().logins)
    local where = {}
    for _, c in ipairs(H.control("GET", "/__sim/toast/customers").customers) do where[c.guid] = c.restaurant end
    for i, r in ipairs(list) do
      assert.equal(r.guid:lower(), where[results[i].value.guid], "customer of restaurant " .. i)
    end
    -- A view asked for again is the same view; the client keeps its own restaurant.
    assert.equal(toast:use_restaurant(list[3].guid), toast:use_restaurant(list[3].guid))
    assert.equal(H.restaurant, toast.restaurant_guid)
    toast:close()
  end)

  it("errors name the restaurant: an HTTP error, a validation error, a pager's error", function()
    local list = seed(2)
    local toast = H.toast()
    local v = toast:use_restaurant(UNKNOWN)
    local res, err = v:list_dining_options()
    assert.is_nil(res)
    assert.equal(403, err.status)
    assert.equal(UNKNOWN, err.restaurant_guid)
    res, err = toast:use_restaurant(list[2].guid):get_customer("not-a-guid")
    assert.is_nil(res)
    assert.equal("validation", err.kind)
    assert.equal(list[2].guid, err.restaurant_guid)
    local it = v:iter_search_customers { lastName = "Lee" }
    local item, perr = it()
    assert.is_false(item)
    assert.equal(UNKNOWN, perr.restaurant_guid)
    item, perr = toast:use_restaurant(list[2].guid):iter_search_customers { nickname = "x" }()
    assert.is_false(item)
    assert.equal("validation", perr.kind)
    assert.equal(list[2].guid, perr.restaurant_guid)
    -- A bad GUID is refused before anything is sent.
    local before = H.total()
    local bad, berr = toast:use_restaurant("nope")
    assert.is_nil(bad)
    assert.equal("restaurant_guid", berr.field)
    bad, berr = toast:use_restaurant(list[1].guid, { spacing_scope = "city" })
    assert.is_nil(bad)
    assert.equal("spacing_scope", berr.field)
    assert.equal(before, H.total())
    -- The failing restaurant did not cost the others their token: one login in all.
    assert(toast:use_restaurant(list[1].guid):list_dining_options())
    assert.equal(1, H.stats().logins)
    toast:close()
  end)

  it("the client's rate is one budget across its restaurants", function()
    local list = seed(20)
    local toast = H.toast { rate = { per_second = 50, burst = 5 } }
    assert(toast:login())
    local times = arrivals(toast, 40, function(i, c) return c:use_restaurant(list[(i - 1) % 20 + 1].guid) end)
    H.assert_rate_bound(times, 50, 5)
    toast:close()
  end)

  it("a cap per restaurant holds that restaurant to its own rate, on top of the client's", function()
    local list = seed(2)
    local toast = H.toast()
    assert(toast:login())
    local capped = assert(toast:use_restaurant(list[1].guid, { rate = { per_second = 10, burst = 1 } }))
    local times = arrivals(toast, 8, function() return capped end)
    table.sort(times)
    -- request k arrives no earlier than (k - 1) / 10 s after the first (the loopback's jitter aside)
    for k = 2, #times do
      local at = times[k] - times[1]
      assert.is_true(at >= (k - 1) / 10 - 0.02, ("request %d at %.3f s"):format(k, at))
    end
    local _, err = toast:use_restaurant(list[2].guid, { rate = { per_second = 0 } })
    assert.equal("rate.per_second", err.field)
    toast:close()
  end)

  it("with a store, a restaurant's cap holds across the clients sharing it", function()
    local list = seed(2)
    local s = stores.new_local()
    local a, b = H.toast { store = s }, H.toast { store = s }
    assert(a:list_dining_options()) -- the token, in the store
    local cap = { rate = { per_second = 10, burst = 1 } }
    local va, vb = assert(a:use_restaurant(list[2].guid, cap)), assert(b:use_restaurant(list[2].guid, cap))
    H.assert_rate_bound(arrivals(a, 10, function(i) return i % 2 == 0 and va or vb end), 10, 1)
    a:close()
    b:close()
  end)

  it("find_or_create keys its locks and its creates by the view's restaurant", function()
    local list = seed(2)
    local toast = H.toast()
    local c = H.customer()
    local a, _, how_a = toast:use_restaurant(list[1].guid):find_or_create(c)
    local b, _, how_b = toast:use_restaurant(list[2].guid):find_or_create(c)
    assert.equal("created", how_a)
    assert.equal("created", how_b)
    assert.are_not.equal(a.guid, b.guid)
    local _, _, again = toast:use_restaurant(list[2].guid):find_or_create(c)
    assert.equal("found", again)
    toast:close()
  end)

  it("with a shared store, clients and their views across restaurants share one login", function()
    local list = seed(3)
    local s = stores.new_local()
    local a, b = H.toast { store = s }, H.toast { store = s }
    assert(a:use_restaurant(list[2].guid):list_dining_options())
    assert(b:use_restaurant(list[3].guid):list_dining_options())
    assert(b:list_dining_options())
    assert.equal(1, H.stats().logins)
    a:close()
    -- A view closes with its client.
    local _, err = a:use_restaurant(list[2].guid):list_employees()
    assert.equal("closed", err.code)
    b:use_restaurant(list[3].guid):close()
    _, err = b:list_employees()
    assert.equal("closed", err.code)
  end)
end)

describe("backfill_restaurants", function()
  it("spaces each restaurant's ordersBulk calls, side by side: arrivals measured by the simulator", function()
    local list = seed(3)
    local toast = H.toast()
    local dir = tmpdir()
    local events = {}
    local res = assert(toast:backfill_restaurants(guids_of(list), {
      dir = dir, now = NOW, spacing = 0.2, allow_fast = true, concurrency = 3,
      on_progress = function(p) events[#events + 1] = p.event end }))
    assert.equal(3, res.done)
    local by = {}
    local all = H.control("GET", "/__sim/toast/orders_calls").calls
    for _, c in ipairs(all) do
      by[c.restaurant] = by[c.restaurant] or {}
      table.insert(by[c.restaurant], c.t)
    end
    local sink = assert(file_sink(dir))
    for _, r in ipairs(list) do
      local ts = by[r.guid:lower()]
      assert.is_true(#ts >= 3)
      for k = 2, #ts do assert.is_true(ts[k] - ts[k - 1] >= 0.2 - 0.005, ("gap %.3f"):format(ts[k] - ts[k - 1])) end
      assert_exactly_once(sink, r.guid)
    end
    -- Side by side: some calls of different restaurants arrive closer together than the spacing.
    table.sort(all, function(x, y) return x.t < y.t end)
    local close = false
    for k = 2, #all do
      if all[k].restaurant ~= all[k - 1].restaurant and all[k].t - all[k - 1].t < 0.2 then close = true end
    end
    assert.is_true(close)
    assert.equal("start", events[1])
    assert.equal(1, H.stats().logins)
    toast:close()
  end)

  it("with spacing_scope = partner, every ordersBulk call of the run is spaced from the last", function()
    local list = seed(3)
    local toast = H.toast()
    local res = assert(toast:backfill_restaurants(guids_of(list), {
      dir = tmpdir(), now = NOW, spacing = 0.2, allow_fast = true, concurrency = 3,
      spacing_scope = "partner" }))
    assert.equal(3, res.done)
    local all = H.control("GET", "/__sim/toast/orders_calls").calls
    table.sort(all, function(x, y) return x.t < y.t end)
    for k = 2, #all do assert.is_true(all[k].t - all[k - 1].t >= 0.2 - 0.005) end
    toast:close()
  end)

  it("a failing restaurant (403, 5xx past the retries) is reported and skipped; the others finish", function()
    local list = seed(3)
    local toast = H.toast()
    local dir = tmpdir()
    local guids = guids_of(list)
    table.insert(guids, 2, UNKNOWN)
    local failed = {}
    local res = assert(toast:backfill_restaurants(guids, {
      dir = dir, now = NOW, spacing = 0.2, allow_fast = true, concurrency = 2,
      on_progress = function(p)
        if p.event == "failed" then failed[#failed + 1] = p.restaurant.restaurant_guid end
      end }))
    assert.equal(3, res.done)
    assert.equal(1, res.failed)
    local r = res.restaurants[2]
    assert.equal("failed", r.status)
    assert.equal(403, r.err.status)
    assert.equal(UNKNOWN, r.err.restaurant_guid)
    assert.same({ UNKNOWN }, failed)
    local sink = assert(file_sink(dir))
    for _, x in ipairs(list) do assert_exactly_once(sink, x.guid) end
    assert.equal(1, H.stats().logins)
    toast:close()
  end)

  it("a 401 that persists right after a fresh login fails that restaurant alone: one re-login in all", function()
    local list = seed(3)
    H.config { toast_unauthorized_restaurants = list[2].guid }
    local toast = H.toast()
    local res = assert(toast:backfill_restaurants(guids_of(list), {
      dir = tmpdir(), now = NOW, spacing = 0.05, allow_fast = true, concurrency = 3 }))
    assert.equal("failed", res.restaurants[2].status)
    assert.equal(401, res.restaurants[2].err.status)
    assert.equal(list[2].guid, res.restaurants[2].err.restaurant_guid)
    assert.equal("done", res.restaurants[1].status)
    assert.equal("done", res.restaurants[3].status)
    -- The first login, and the one fresh login the 401 asked for; the others went on with it.
    assert.equal(2, H.stats().logins)
    toast:close()
  end)

  it("repeated 5xx fail only that restaurant", function()
    local list = seed(2)
    local toast = H.toast()
    -- Every ordersBulk answer is a 503 until the first restaurant's retries are spent; the
    -- second one starts afterwards (concurrency 1) and finishes.
    H.fault { method = "GET", path = "/orders/v2/ordersBulk", status = 503, count = H.fast_retry.max_attempts }
    local res = assert(toast:backfill_restaurants(guids_of(list), {
      dir = tmpdir(), now = NOW, spacing = 0, allow_fast = true, concurrency = 1 }))
    assert.equal("failed", res.restaurants[1].status)
    assert.equal(503, res.restaurants[1].err.status)
    assert.equal(list[1].guid, res.restaurants[1].err.restaurant_guid)
    assert.equal("done", res.restaurants[2].status)
    toast:close()
  end)

  it("stop: restaurants stop after their current window, none starts; a second run completes them", function()
    local list = seed(4)
    local toast = H.toast()
    local dir = tmpdir()
    local asked = false
    local res = assert(toast:backfill_restaurants(guids_of(list), {
      dir = dir, now = NOW, spacing = 0.05, allow_fast = true, concurrency = 2,
      on_progress = function(p) if p.event == "window" then asked = true end end,
      stop = function() return asked end }))
    assert.is_true(res.stopped >= 1)
    assert.equal(2, res.done + res.stopped)
    assert.equal(2, res.not_started)
    assert.equal("not_started", res.restaurants[4].status)
    res = assert(toast:backfill_restaurants(guids_of(list), { dir = dir, now = NOW, spacing = 0.05,
                                                              allow_fast = true, concurrency = 4 }))
    assert.equal(4, res.done)
    local sink = assert(file_sink(dir))
    for _, r in ipairs(list) do assert_exactly_once(sink, r.guid) end
    toast:close()
  end)

  it("checks its arguments before sending anything", function()
    seed(1)
    local toast = H.toast()
    local cases = {
      { { "nope" }, { dir = tmpdir() }, "restaurants[1]" },
      { {}, { dir = tmpdir() }, "restaurants" },
      { { H.restaurant }, {}, "sink" },
      { { H.restaurant }, { dir = tmpdir(), spacing = 1 }, "spacing" },
      { { H.restaurant }, { dir = tmpdir(), spacing_scope = "x" }, "spacing_scope" },
      { { H.restaurant }, { dir = tmpdir(), concurrency = 0 }, "concurrency" },
      { { H.restaurant }, { sink = {} }, "sink.load_checkpoint" },
      { { H.restaurant }, { dir = tmpdir(), rate = { per_second = -1 } }, "rate.per_second" },
      { { H.restaurant }, { dir = tmpdir(), guest_context = "yes" }, "guest_context" },
    }
    for _, c in ipairs(cases) do
      local res, err = toast:backfill_restaurants(c[1], c[2])
      assert.is_nil(res)
      assert.equal(c[3], err.field)
    end
    assert.equal(0, H.total())
    toast:close()
  end)

  it("the file sink forgets orders written after the last saved checkpoint", function()
    local dir = tmpdir()
    local sink = assert(file_sink(dir))
    local g = H.restaurant
    assert.is_nil(sink:load_checkpoint(g))
    assert(sink:write_orders(g, { { guid = "a" }, { guid = "b" } }, {}))
    assert(sink:save_checkpoint(g, { through = "x" }))
    assert(sink:write_orders(g, { { guid = "c" } }, {})) -- then killed: no checkpoint for it
    local again = assert(file_sink(dir))
    assert.same({ through = "x" }, again:load_checkpoint(g))
    local got = {}
    for o in again:each_order(g) do got[#got + 1] = o.guid end
    assert.same({ "a", "b" }, got)
  end)

  it("a run killed by SIGKILL resumes each restaurant and writes every order exactly once", function()
    local list = seed(4)
    local dir = tmpdir()
    local guids = guids_of(list)
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(([[
local crm = require "crm"
local toast = assert(crm.toast { base_url = %q, restaurant_guid = %q, client_id = %q,
  client_secret = %q, timeout = 5 })
local res = toast:backfill_restaurants({ %q, %q, %q, %q }, { dir = %q, now = %d, spacing = 0.15,
  allow_fast = true, concurrency = 4, page_size = 20 })
print(res and "finished" or "failed")
]]):format(H.base_url, H.restaurant, H.client_id, H.client_secret, guids[1], guids[2], guids[3], guids[4],
      dir, NOW))
    f:close()
    local p = assert(io.popen("sh -c 'echo $$; exec " .. H.lua .. " "
      .. script .. "' 2>&1"))
    local pid = assert(tonumber(p:read("*l")))
    -- Kill it once a few windows are in (a checkpoint file per restaurant that has one).
    local deadline = core.now() + 30
    local function checkpoints()
      local n = 0
      for _, g in ipairs(guids) do
        local cf = io.open(dir .. "/" .. g:lower() .. ".checkpoint.json")
        if cf then
          n = n + 1
          cf:close()
        end
      end
      return n
    end
    while checkpoints() < 2 and core.now() < deadline do core.sleep(0.02) end
    os.execute("kill -9 " .. pid)
    local out = p:read("*a")
    p:close()
    os.remove(script)
    assert.is_nil(out:find("finished", 1, true), "the child finished before it was killed")
    -- Some restaurant stopped part-way: its orders file is not complete yet.
    local sink = assert(file_sink(dir))
    local partial = false
    for _, g in ipairs(guids) do
      local _, n_want = truth_guids(g)
      local _, n_got = written(sink, g)
      if n_got < n_want then partial = true end
    end
    assert.is_true(partial)
    local toast = H.toast()
    local res = assert(toast:backfill_restaurants(guids, { dir = dir, now = NOW, spacing = 0.05,
                                                          allow_fast = true, concurrency = 4, page_size = 20 }))
    assert.equal(4, res.done)
    for _, g in ipairs(guids) do assert_exactly_once(sink, g) end
    toast:close()
  end)
end)

-- A virtual clock: `sleep` yields the running task and the clock jumps to the earliest wake-up.
-- The HTTP requests are real (the curl transport, to the simulator) and take no virtual time.
local function virtual_transport()
  local real = assert(require("crm.transport").new("curl", { timeout = 5 }))
  local t, tasks, sleepers = 0, {}, {}
  local clock = {}
  function clock.now() return t end
  function clock.yields() return tasks[coroutine.running()] ~= nil end
  function clock.sleep(s)
    local co = coroutine.running()
    if not tasks[co] then
      t = t + (s or 0)
      return
    end
    sleepers[#sleepers + 1] = { co = co, wake = t + math.max(s or 0, 0) }
    coroutine.yield()
  end
  -- run(fns, concurrency): the tasks side by side in virtual time.
  function clock.run(fns, concurrency)
    local next_fn, running = 1, 0
    local function start()
      while running < concurrency and next_fn <= #fns do
        local fn = fns[next_fn]
        next_fn = next_fn + 1
        local co = coroutine.create(function() fn() end)
        tasks[co], running = true, running + 1
        sleepers[#sleepers + 1] = { co = co, wake = t }
      end
    end
    start()
    while #sleepers > 0 do
      local best = 1
      for i = 2, #sleepers do
        if sleepers[i].wake < sleepers[best].wake then best = i end
      end
      local s = table.remove(sleepers, best)
      if s.wake > t then t = s.wake end
      assert(coroutine.resume(s.co))
      if coroutine.status(s.co) == "dead" then
        tasks[s.co], running = nil, running - 1
        start()
      end
    end
  end
  return { clock = clock, request = function(_, ...) return real:request(...) end,
           close = function() return real:close() end }
end

describe("backfill_restaurants on a virtual clock", function()
  local function run(scope)
    local list = seed(4)
    local transport = virtual_transport()
    local toast = H.toast { transport = transport }
    local started = transport.clock.now()
    local res = assert(toast:backfill_restaurants(guids_of(list), {
      dir = tmpdir(), now = NOW, spacing = 5, concurrency = 4, page_size = 25, spacing_scope = scope }))
    assert.equal(4, res.done)
    local calls = {}
    for i, r in ipairs(res.restaurants) do calls[i] = r.calls end
    return transport.clock.now() - started, calls
  end

  it("per-restaurant spacing: the run takes as long as its slowest restaurant, not the sum", function()
    local elapsed, calls = run("restaurant")
    local slowest, sum = 0, 0
    for _, n in ipairs(calls) do
      slowest, sum = math.max(slowest, (n - 1) * 5), sum + n
    end
    assert.is_true(calls[4] > calls[1]) -- the restaurants differ in size
    assert.near(slowest, elapsed, 1e-6)
    assert.is_true(elapsed < (sum - 1) * 5)
  end)

  it("per-partner spacing: the run takes the sum", function()
    local elapsed, calls = run("partner")
    local sum = 0
    for _, n in ipairs(calls) do sum = sum + n end
    assert.near((sum - 1) * 5, elapsed, 0.05)
  end)
end)

describe("the simulator's restaurants", function()
  it("share some guests across restaurants, and restaurant 1 is the CLI's --sim restaurant", function()
    local list = seed(3)
    assert.equal(H.restaurant, list[1].guid)
    local keys = {}
    for i, r in ipairs(list) do
      local t = H.control("GET", "/__sim/toast/orders_truth?restaurant=" .. r.guid)
      assert.equal(r.orders, #t.orders)
      keys[i] = {}
      for _, o in ipairs(t.orders) do
        for _, c in ipairs(o.checks) do
          local id = t.check_guests[c.guid]
          if id then keys[i][id] = true end
        end
      end
    end
    local shared, only = 0, 0
    for id in pairs(keys[1]) do
      if keys[2][id] then shared = shared + 1 else only = only + 1 end
    end
    assert.is_true(shared > 0)
    assert.is_true(only > 0)
    -- Different restaurants, different orders.
    local a = H.control("GET", "/__sim/toast/orders_truth?restaurant=" .. list[1].guid).orders[1].guid
    local b = H.control("GET", "/__sim/toast/orders_truth?restaurant=" .. list[2].guid).orders[1].guid
    assert.are_not.equal(a, b)
  end)
end)

-- bin/crm in a subprocess: {code, out (lines decoded), err}.
-- cli(args [, env [, state]]): bin/crm with fresh config and state directories, or the given
-- state directory (crm sim keeps its pid there: start, status and stop must share one).
local function cli(args, env, state)
  local out, err = os.tmpname(), os.tmpname()
  local status = io.popen(("%s%s CRM_SIM_PORT=%d XDG_CONFIG_HOME=%s XDG_STATE_HOME=%s %s bin/crm %s >%s 2>%s"
    .. " </dev/null; echo $?"):format(H.CLEAN_ENV, env or "", H.port, tmpdir(), state or tmpdir(), H.lua, args,
    out, err))
    :read("*a")
  local r = { code = tonumber(status:match("%d+")), out = {}, err = H.slurp(err) }
  for l in H.slurp(out):gmatch("[^\n]+") do r.out[#r.out + 1] = require("crm").json.decode(l) end
  os.remove(out)
  os.remove(err)
  return r
end

describe("the command line with many restaurants", function()
  it("crm sim start --restaurants N seeds them; start and status print their GUIDs and order counts", function()
    local port, state = H.port + 48, tmpdir()
    local r = cli(("sim start --port %d --restaurants 3"):format(port), nil, state)
    assert.equal(0, r.code, r.err)
    assert.equal(3, #r.out[1].restaurants)
    assert.equal(H.restaurant, r.out[1].restaurants[1].guid)
    assert.equal(84 * 7, r.out[1].restaurants[2].orders) -- twelve weeks of 7 a day
    r = cli(("sim status --port %d"):format(port), nil, state)
    assert.equal(0, r.code, r.err)
    assert.equal(3, #r.out[1].restaurants)
    assert.equal(0, cli(("sim stop --port %d"):format(port), nil, state).code)
  end)

  it("guests backfill --restaurant (repeated), --restaurants FILE: profiles per restaurant, failures named", function()
    local list = seed(3, { toast_orders_end_date = "" }) -- the CLI reads back from today
    local r = cli("--sim toast guests backfill --weeks 4 --spacing 0.05 --restaurant " .. list[2].guid
      .. " --restaurant " .. list[3].guid)
    assert.equal(0, r.code, r.err)
    local seen = {}
    for _, p in ipairs(r.out) do seen[p.restaurant_guid] = (seen[p.restaurant_guid] or 0) + 1 end
    assert.is_true(seen[list[2].guid] > 0)
    assert.is_true(seen[list[3].guid] > 0)
    local file = os.tmpname()
    local f = assert(io.open(file, "w"))
    f:write("# the partner's restaurants\n", list[1].guid, "\n\n", UNKNOWN, "\n")
    f:close()
    r = cli("--sim toast guests backfill --weeks 4 --spacing 0.05 --restaurants " .. file)
    os.remove(file)
    assert.are_not.equal(0, r.code)
    assert.truthy(r.err:find("restaurant " .. UNKNOWN, 1, true), r.err)
    assert.truthy(r.err:find("1 failed", 1, true), r.err)
    for _, p in ipairs(r.out) do assert.equal(list[1].guid, p.restaurant_guid) end
    assert.is_true(#r.out > 0)
  end)

  it("--restaurant stands in for CRM_TOAST_RESTAURANT (not set here)", function()
    local list = seed(2, { toast_orders_end_date = "" })
    local env = ("-u CRM_TOAST_RESTAURANT CRM_TOAST_URL=%s CRM_TOAST_CLIENT_ID=%s CRM_TOAST_CLIENT_SECRET=%s")
      :format(H.base_url, H.client_id, H.client_secret)
    local r = cli("toast guests backfill --weeks 2 --spacing 0.05 --restaurant " .. list[2].guid, env)
    assert.equal(0, r.code, r.err)
    local calls = H.control("GET", "/__sim/toast/orders_calls").calls
    assert.is_true(#calls > 0)
    for _, c in ipairs(calls) do assert.equal(list[2].guid, c.restaurant) end
    r = cli("toast guests backfill --weeks 2", env)
    assert.equal(2, r.code)
    assert.truthy(r.err:find("CRM_TOAST_RESTAURANT", 1, true), r.err)
  end)

  -- bin/crm ARGS in the background, Ctrl-C once `ready` (a file) exists -> exit code, stdout, stderr
  local function interrupt(args, ready)
    local out, err, rc = os.tmpname(), os.tmpname(), os.tmpname()
    local p = assert(io.popen(("sh -c 'echo $$; CRM_SIM_PORT=%d XDG_STATE_HOME=%s exec %s bin/crm %s >%s 2>%s'"
      .. "; echo $? >%s"):format(H.port, tmpdir(), H.lua, args, out, err, rc)))
    local pid = assert(tonumber(p:read("*l")))
    for _ = 1, 200 do
      if H.exists(ready) then break end
      core.sleep(0.05)
    end
    assert(os.execute("kill -INT " .. pid))
    p:read("*a")
    p:close()
    local r = { code = H.slurp(rc):match("%d+"), out = H.slurp(out), err = H.slurp(err) }
    for _, f in ipairs { out, err, rc } do os.remove(f) end
    return r
  end

  it("Ctrl-C stops a backfill of several restaurants (exit 130, no profiles); the same command resumes", function()
    local list = seed(3, { toast_orders_end_date = "" })
    local dir = tmpdir()
    local args = ("--sim toast guests backfill --weeks 8 --window-days 7 --spacing 0.3 --checkpoint %s"
      .. " --restaurant %s --restaurant %s --restaurant %s"):format(dir, list[1].guid, list[2].guid, list[3].guid)
    local r = interrupt(args, dir .. "/" .. list[1].guid .. ".checkpoint.json")
    assert.equal("130", r.code)
    assert.truthy(r.err:find("backfill interrupted", 1, true), r.err)
    assert.truthy(r.err:find("resume with: crm --sim toast guests backfill --checkpoint", 1, true), r.err)
    assert.equal("", r.out)
    local resumed = cli((args:gsub("%-%-spacing 0%.3", "--spacing 0.05")))
    assert.equal(0, resumed.code, resumed.err)
    local fresh = cli((args:gsub(dir, tmpdir()):gsub("%-%-spacing 0%.3", "--spacing 0.05")))
    assert.equal(0, fresh.code, fresh.err)
    assert.is_true(#fresh.out > 0)
    assert.equal(#fresh.out, #resumed.out)
    for i, want in ipairs(fresh.out) do
      assert.equal(want.restaurant_guid, resumed.out[i].restaurant_guid)
      assert.equal(want.key, resumed.out[i].key)
      assert.equal(want.order_count, resumed.out[i].order_count)
    end
  end)

  it("Ctrl-C with one --restaurant: the resume command names that restaurant", function()
    local list = seed(2, { toast_orders_end_date = "" })
    local journal = tmpdir() .. ".jsonl"
    local r = interrupt(("--sim toast guests backfill --weeks 8 --window-days 7 --spacing 0.3 --checkpoint %s"
      .. " --restaurant %s"):format(journal, list[2].guid), journal)
    assert.equal("130", r.code)
    assert.truthy(r.err:find("--restaurant " .. list[2].guid, 1, true), r.err)
    for _, c in ipairs(H.control("GET", "/__sim/toast/orders_calls").calls) do
      assert.equal(list[2].guid, c.restaurant)
    end
  end)
end)
