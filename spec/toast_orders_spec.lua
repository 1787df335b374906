-- Toast guest history from orders against the simulator: the endpoints, the backfill (one-month
-- windows, spacing, resume from a checkpoint), the dining-option filter, the profile figures
-- (checked against values computed here from the simulator's raw orders), the webhook fold, the
-- sync to Toast CRM and the example script.
local cjson = require "cjson"
local core = require "crm.core"
local crm = require "crm"
local guests = require "crm.toast.guests"
local H = require "helper"

local null = cjson.null
local DAY = 86400
-- A fixed data set: 100 days of 8 orders a day ending 2024-04-30, read back from "now" =
-- 2024-05-01T00:00:00Z, so the twelve weeks cover 2024-02-07 .. 2024-05-01.
local NOW = 1714521600
local DATA = { toast_orders_seed = 11, toast_orders_days = 100, toast_orders_per_day = 8,
               toast_orders_end_date = "2024-05-01" }

local function iso(t) return guests.format_time(t) end

local function load_data(extra)
  H.reset()
  local cfg = {}
  for k, v in pairs(DATA) do cfg[k] = v end
  for k, v in pairs(extra or {}) do cfg[k] = v end
  H.config(cfg)
end

local function truth(from, to)
  return H.control("GET", "/__sim/toast/orders_truth?startDate=" .. core.escape(iso(from))
    .. "&endDate=" .. core.escape(iso(to)))
end

local function calls()
  return H.control("GET", "/__sim/toast/orders_calls").calls
end

-- Independent of crm.toast.guests: per simulator guest (its canonical key), from the raw orders
-- and the generator's own record of which guest is on which check.
local function expected_profiles(t)
  local behavior, guest, staff = {}, {}, {}
  for _, o in ipairs(t.diningOptions) do behavior[o.guid] = o.behavior end
  for _, g in ipairs(t.guests) do guest[g.id] = g end
  for _, e in ipairs(t.employees) do staff[e.guid] = e.firstName .. " " .. e.lastName end
  local out = {}
  for _, o in ipairs(t.orders) do
    local b = behavior[o.diningOption.guid]
    if o.voided ~= true and (b == "TAKE_OUT" or b == "DELIVERY") then
      for _, c in ipairs(o.checks) do
        local id = t.check_guests[c.guid]
        if id then
          local g = guest[id]
          local e = out[g.key]
          if not e then
            e = { guest = g, orders = {}, n = 0, cents = 0, items = {}, servers = {}, addresses = {},
                  n_addresses = 0 }
            out[g.key] = e
          end
          if not e.orders[o.guid] then
            e.orders[o.guid] = true
            e.n = e.n + 1
            if not e.first or o.openedDate < e.first then e.first = o.openedDate end
            if not e.last or o.openedDate > e.last then e.last = o.openedDate end
            local s = o.server.guid
            e.servers[s] = e.servers[s] or { n = 0, name = staff[s] }
            e.servers[s].n = e.servers[s].n + 1
            if o.deliveryInfo ~= null then
              local d = o.deliveryInfo
              local k = d.address1 .. "|" .. d.city .. "|" .. d.zipCode
              if not e.addresses[k] then e.addresses[k], e.n_addresses = true, e.n_addresses + 1 end
            end
          end
          e.cents = e.cents + math.floor(c.totalAmount * 100 + 0.5)
          for _, sel in ipairs(c.selections) do
            e.items[sel.item.guid] = (e.items[sel.item.guid] or 0) + sel.quantity
          end
        end
      end
    end
  end
  return out
end

local function keys_of(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

local function fast(extra)
  local o = { now = NOW, spacing = 0, allow_fast = true }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

describe("Toast guest history", function()
  describe("endpoints", function()
    local c
    before_each(function()
      load_data()
      c = H.toast()
    end)

    it("reads dining options, employees and the menu tree with the Toast client's auth", function()
      local options = assert(c:list_dining_options())
      assert.equal(6, #options)
      local behaviors = {}
      for _, o in ipairs(options) do behaviors[o.behavior] = (behaviors[o.behavior] or 0) + 1 end
      assert.same({ DINE_IN = 2, TAKE_OUT = 2, DELIVERY = 1, CATERING = 1 }, behaviors)
      local staff = assert(c:list_employees())
      assert.equal(8, #staff)
      assert.is_string(staff[1].firstName)
      local items = assert(c:list_menu_items())
      local n, names = 0, {}
      for guid, it in pairs(items) do
        n = n + 1
        assert.equal(guid, it.guid)
        names[it.name] = true
      end
      -- 13 items; Fries and Lemonade are on both menus, Latte sits in a nested group
      assert.equal(13, n)
      assert.is_true(names.Latte)
      assert.equal(1, H.stats().logins)
      assert.equal(1, H.count("GET /menus/v2/menus"))
    end)

    it("pages through ordersBulk for one window", function()
      local from = NOW - 5 * DAY
      local orders = assert(c:iter_orders { startDate = iso(from), endDate = iso(NOW), pageSize = 15,
                                                 spacing = 0, allow_fast = true }:all())
      local want = truth(from, NOW).orders
      assert.equal(40, #want)
      assert.equal(#want, #orders)
      for i = 1, #want do assert.equal(want[i].guid, orders[i].guid) end
      assert.equal(3, H.count("GET /orders/v2/ordersBulk")) -- 15 + 15 + 10
      local one = assert(c:list_orders { startDate = from, endDate = NOW, page = 2, pageSize = 15,
                                         spacing = 0, allow_fast = true })
      assert.equal(want[16].guid, one[1].guid)
    end)

    it("refuses windows over a month and short spacing before sending anything", function()
      local before = H.total()
      local _, e1 = c:list_orders { startDate = NOW - 40 * DAY, endDate = NOW }
      assert.equal("endDate", e1.field)
      local _, e2 = c:list_orders { startDate = NOW - DAY, endDate = NOW, spacing = 1 }
      assert.equal("spacing", e2.field)
      local _, e3 = c:backfill_orders { spacing = 2, now = NOW }
      assert.equal("validation", e3.kind)
      assert.equal("spacing", e3.field)
      local _, e4 = c:backfill_orders(fast { window_days = 32 })
      assert.equal("window_days", e4.field)
      local _, e5 = c:backfill_orders(fast { checkpoint = { through = "yesterday" } })
      assert.equal("checkpoint", e5.field)
      local _, e6 = c:backfill_orders(fast { on_progress = "print" })
      assert.equal("on_progress", e6.field)
      assert.equal(before, H.total())
    end)

    it("the simulator itself answers 400 to a window over 31 days", function()
      local token = assert(c:login())
      local raw = assert(core.new { timeout = 5 })
      local status, _, body = raw:request("GET", H.base_url .. "/orders/v2/ordersBulk?startDate="
        .. core.escape(iso(NOW - 40 * DAY)) .. "&endDate=" .. core.escape(iso(NOW)),
        { "Authorization: Bearer " .. token, "Toast-Restaurant-External-ID: " .. H.restaurant })
      raw:close()
      assert.equal(400, status)
      assert.matches("one month", body)
      local no_auth = assert(core.new { timeout = 5 })
      assert.equal(401, (no_auth:request("GET", H.base_url .. "/config/v2/diningOptions", {})))
      no_auth:close()
    end)
  end)

  describe("backfill of twelve weeks", function()
    local result, progress, windows_seen, recorded, elapsed, t
    setup(function()
      load_data()
      progress, windows_seen = {}, {}
      local c = H.toast()
      local t0 = core.now()
      -- 0.2 s between calls is for the simulator only; real use keeps the 5 s default.
      result = assert(c:backfill_orders {
        now = NOW, spacing = 0.2, allow_fast = true,
        on_window = function(orders, info) windows_seen[#windows_seen + 1] = { orders = orders, info = info } end,
        on_progress = function(info) progress[#progress + 1] = info end,
      })
      elapsed = core.now() - t0
      recorded = calls()
      t = truth(NOW - 84 * DAY, NOW)
    end)

    it("splits the range into windows of at most a month, in order, without gaps", function()
      assert.equal(3, result.windows)
      assert.equal(3, #progress)
      local pairs_seen, order = {}, {}
      for _, call in ipairs(recorded) do
        local k = call.startDate .. "/" .. call.endDate
        if not pairs_seen[k] then
          pairs_seen[k] = true
          order[#order + 1] = call
        end
        assert.equal(100, call.pageSize)
      end
      assert.equal(3, #order)
      assert.equal(iso(NOW - 84 * DAY), order[1].startDate)
      assert.equal(iso(NOW), order[3].endDate)
      for i, w in ipairs(order) do
        local span = guests.parse_time(w.endDate) - guests.parse_time(w.startDate)
        assert.is_true(span <= 28 * DAY and span > 0)
        if i > 1 then assert.equal(order[i - 1].endDate, w.startDate) end
        assert.equal(w.endDate, progress[i].checkpoint.through)
        assert.equal(i, progress[i].checkpoint.windows_done)
      end
      -- 224 orders a window: pages 1, 2, 3 each
      assert.equal(9, #recorded)
      assert.equal(9, result.calls)
      assert.equal(#t.orders, result.orders)
    end)

    it("keeps the configured spacing between ordersBulk calls, as the simulator measured it", function()
      local min_gap = math.huge
      for i = 2, #recorded do min_gap = math.min(min_gap, recorded[i].t - recorded[i - 1].t) end
      assert.is_true(min_gap >= 0.195, "smallest gap " .. min_gap)
      assert.is_true(elapsed >= 8 * 0.2)
    end)

    it("keeps the spacing when concurrent operations share one client", function()
      load_data()
      local c = H.toast()
      local ops = {}
      for i = 1, 4 do
        ops[i] = function(client)
          return client:list_orders { startDate = iso(NOW - (i + 1) * DAY), endDate = iso(NOW - i * DAY),
                                      spacing = 0.2, allow_fast = true }
        end
      end
      assert.equal(4, assert(c:batch(ops, { concurrency = 4 })).succeeded)
      local seen = calls()
      assert.equal(4, #seen)
      for i = 2, #seen do
        assert.is_true(seen[i].t - seen[i - 1].t >= 0.195, "gap " .. (seen[i].t - seen[i - 1].t))
      end
    end)

    it("hands every order of the range to on_window exactly once", function()
      local seen, n = {}, 0
      for _, w in ipairs(windows_seen) do
        for _, o in ipairs(w.orders) do
          assert.is_nil(seen[o.guid])
          seen[o.guid], n = true, n + 1
        end
      end
      assert.equal(#t.orders, n)
      for _, o in ipairs(t.orders) do assert.is_true(seen[o.guid]) end
    end)

    it("keeps only TAKE_OUT and DELIVERY orders, resolved through the dining options", function()
      local behavior = {}
      for _, o in ipairs(t.diningOptions) do behavior[o.guid] = o.behavior end
      local counted = {}
      for _, p in ipairs(result.profiles:profiles()) do
        for _, f in ipairs(p.orders) do
          counted[f.guid] = true
          assert.truthy(f.diningOption.behavior == "TAKE_OUT" or f.diningOption.behavior == "DELIVERY")
        end
      end
      -- orders with a Customer that must not count: dine-in, bar, catering, voided
      local excluded, dine_in_only = 0, {}
      for _, o in ipairs(t.orders) do
        local b = behavior[o.diningOption.guid]
        local has_guest = false
        for _, c in ipairs(o.checks) do has_guest = has_guest or t.check_guests[c.guid] ~= nil end
        if has_guest and (o.voided or not (b == "TAKE_OUT" or b == "DELIVERY")) then
          excluded = excluded + 1
          assert.is_nil(counted[o.guid])
        end
      end
      assert.is_true(excluded > 20)
      for _, g in ipairs(t.guests) do
        if g.dine_in_only then dine_in_only[#dine_in_only + 1] = g.key end
      end
      assert.equal(4, #dine_in_only)
      for _, key in ipairs(dine_in_only) do assert.is_nil(result.profiles:get(key)) end
    end)

    it("computes the same figures per guest as the raw orders give", function()
      local want = expected_profiles(t)
      assert.same(keys_of(want), result.profiles:keys())
      assert.is_true(#result.profiles:keys() >= 25)
      for key, e in pairs(want) do
        local p = result.profiles:get(key)
        assert.equal(e.n, p.order_count)
        assert.near(e.cents / 100, p.total_spend, 0.001)
        assert.equal(e.first, p.first_order)
        assert.equal(e.last, p.last_order)
        assert.equal(e.guest.firstName, p.firstName)
        if e.guest.email ~= null then assert.equal(e.guest.email, p.email) end
        if e.guest.phone ~= null then assert.equal(e.guest.phone, p.phone) end
        assert.equal(e.n_addresses, #p.delivery_addresses)
        -- favourite items: the quantities are right and ranked, and the top one is the maximum
        local top = 0
        for _, q in pairs(e.items) do top = math.max(top, q) end
        assert.equal(top, p.favourite_items[1].quantity)
        for i, it in ipairs(p.favourite_items) do
          assert.equal(e.items[it.guid], it.quantity)
          assert.is_string(it.name)
          if i > 1 then assert.is_true(p.favourite_items[i - 1].quantity >= it.quantity) end
        end
        local distinct = #keys_of(e.items)
        assert.equal(math.min(distinct, 10), #p.favourite_items)
        -- servers seen, with their names from the labor API
        assert.equal(#keys_of(e.servers), #p.servers)
        for _, s in ipairs(p.servers) do
          assert.equal(e.servers[s.guid].n, s.orders)
          assert.equal(e.servers[s.guid].name, s.name)
        end
      end
    end)

    it("writes one JSON line per profile", function()
      local path = os.tmpname()
      local fh = assert(io.open(path, "w"))
      local n = assert(result.profiles:write_jsonl(fh))
      fh:close()
      local lines, last_key = {}, ""
      for line in io.lines(path) do lines[#lines + 1] = line end
      os.remove(path)
      assert.equal(result.profiles:count(), n)
      assert.equal(n, #lines)
      local empty_addresses = 0
      for _, line in ipairs(lines) do
        local p = cjson.decode(line)
        assert.is_true(p.key > last_key)
        last_key = p.key
        assert.equal(p.order_count, #p.orders)
        assert.is_table(p.orders[1].checks[1].selections)
        if line:find('"delivery_addresses":[]', 1, true) then empty_addresses = empty_addresses + 1 end
      end
      assert.is_true(empty_addresses > 0) -- empty lists stay lists
      local _, err = result.profiles:write_jsonl("not a file")
      assert.equal("fh", err.field)
    end)
  end)

  describe("resume after a failure", function()
    it("continues from the last finished window: no order lost or counted twice", function()
      load_data()
      local delivered, c = {}, H.toast()
      local function collect(orders)
        for _, o in ipairs(orders) do delivered[#delivered + 1] = o.guid end
      end
      local res, err = c:backfill_orders(fast {
        on_window = collect,
        on_progress = function(info)
          if info.window == 1 then
            -- window 2: page 1 goes through, page 2 fails on every attempt
            H.fault { { path = "/orders/v2/ordersBulk", delay = 0.001, count = 1 },
                      { path = "/orders/v2/ordersBulk", status = 500, count = 4 } }
          end
        end,
      })
      assert.is_nil(res)
      assert.equal(500, err.status)
      assert.equal(4, err.attempts)
      assert.equal(2, err.window.index)
      local cp = err.checkpoint
      assert.equal(1, cp.windows_done)
      assert.equal(iso(NOW - 56 * DAY), cp.through)
      assert.equal(224, #delivered) -- window 1 only; window 2's first page was not handed out
      assert.equal(224, cp.orders)

      -- a crash: the checkpoint (and the profiles) were saved as JSON; a new client resumes
      local saved = cjson.decode(cjson.encode(cp))
      local before = #calls()
      local c2 = H.toast()
      -- without `now`, the resume finishes the original range (the checkpoint's endDate)
      local done = assert(c2:backfill_orders { checkpoint = saved, profiles = err.profiles, spacing = 0,
                                               allow_fast = true, on_window = collect })
      assert.equal(2, done.windows)
      assert.equal(cp.through, calls()[before + 1].startDate)
      assert.equal(3, done.checkpoint.windows_done)
      assert.equal(iso(NOW), done.checkpoint.endDate)

      local t = truth(NOW - 84 * DAY, NOW)
      local seen = {}
      for _, g in ipairs(delivered) do
        assert.is_nil(seen[g], "order delivered twice")
        seen[g] = true
      end
      assert.equal(#t.orders, #delivered)
      assert.equal(#t.orders, done.checkpoint.orders)
      for _, o in ipairs(t.orders) do assert.is_true(seen[o.guid], "order lost") end
      local want = expected_profiles(t)
      assert.same(keys_of(want), done.profiles:keys())
      for key, e in pairs(want) do
        assert.equal(e.n, done.profiles:get(key).order_count)
        assert.near(e.cents / 100, done.profiles:get(key).total_spend, 0.001)
      end
    end)
  end)

  describe("backfill against a hand-made ordersBulk", function()
    -- A Toast stand-in (a custom transport): ordersBulk answers serve(start, finish, page) as the
    -- JSON body, so the spec decides the server's window semantics and its data.
    local function client_for(serve)
      local t = { clock = H.manual_clock(NOW) }
      local function unescape(v) return (v:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)) end
      function t.request(_, _, url)
        local q = {}
        for k, v in url:gmatch("[?&]([^=&]+)=([^&]*)") do q[k] = unescape(v) end
        local body = serve(guests.parse_time(q.startDate), guests.parse_time(q.endDate), tonumber(q.page))
        return 200, { ["content-type"] = "application/json" }, body
      end
      function t.close() return true end
      return assert(crm.toast { base_url = "http://toast.test", restaurant_guid = H.restaurant, token = "tok-test",
                                transport = t })
    end

    local function order_json(guid, t)
      return cjson.encode { guid = guid, openedDate = iso(t), diningOption = { guid = "d" }, checks = {} }
    end

    it("hands an order on a window boundary out once, even if the server counts both ends in", function()
      local at = { a = NOW - 40 * DAY, b = NOW - 28 * DAY, c = NOW - DAY } -- b: where windows meet
      local c = client_for(function(from, to, page)
        local out = {}
        if page == 1 then
          for _, g in ipairs { "a", "b", "c" } do
            if at[g] >= from and at[g] <= to then out[#out + 1] = order_json(g, at[g]) end
          end
        end
        return "[" .. table.concat(out, ",") .. "]"
      end)
      local handed = {}
      local res = assert(c:backfill_orders(fast { weeks = 8, profiles = false, on_window = function(orders)
        for _, o in ipairs(orders) do handed[#handed + 1] = o.guid end
      end }))
      assert.equal(2, res.windows)
      assert.same({ "a", "b", "c" }, handed)
      assert.equal(3, res.orders)
    end)

    it("fails with a decode error, never a Lua error, on orders that are not objects with a guid", function()
      for _, body in ipairs { "[false]", '[{"guid":"x"},null]', "[1]", '[{"checks":[]}]', '[{"guid":""}]' } do
        local c = client_for(function() return body end)
        local ok, res, err = pcall(c.backfill_orders, c, fast { weeks = 1, profiles = false })
        assert.is_true(ok, res)
        assert.is_nil(res, body)
        assert.equal("decode", err.kind, body)
        assert.equal(1, err.window.index)
        assert.equal(0, err.checkpoint.windows_done)
      end
    end)
  end)

  describe("webhook fold", function()
    local c, ctx, t, behavior, dine_in
    setup(function()
      load_data()
      c = H.toast()
      ctx = assert(c:get_guest_context())
      t = truth(NOW - 10 * DAY, NOW)
      behavior = {}
      for _, o in ipairs(t.diningOptions) do
        behavior[o.guid] = o.behavior
        if o.behavior == "DINE_IN" then dine_in = o.guid end
      end
    end)

    local function copy(v) return cjson.decode(cjson.encode(v)) end

    -- A countable order whose checks all belong to one guest, and that guest's key.
    local function single_guest_order(skip)
      for _, o in ipairs(t.orders) do
        local b = behavior[o.diningOption.guid]
        if not o.voided and (b == "TAKE_OUT" or b == "DELIVERY") and o.guid ~= skip then
          local id, mixed = nil, false
          for _, ch in ipairs(o.checks) do
            local g = t.check_guests[ch.guid]
            if g and id and g ~= id then mixed = true end
            id = id or g
          end
          if id and not mixed then return copy(o), t.guests[id].key end
        end
      end
    end

    local function guest_cents(o, key)
      local n = 0
      for _, ch in ipairs(o.checks) do
        if ch.customer ~= null and guests.guest_key(ch.customer) == key then
          n = n + math.floor(ch.totalAmount * 100 + 0.5)
        end
      end
      return n / 100
    end

    it("replaces an updated order's earlier contribution instead of adding it again", function()
      local set = assert(guests.new(ctx))
      local o, key = single_guest_order()
      local info = assert(set:fold(o))
      assert.is_false(info.replaced)
      assert.same({ key }, info.keys)
      local spend = guest_cents(o, key)
      assert.equal(1, set:get(key).order_count)
      assert.near(spend, set:get(key).total_spend, 0.001)

      assert.is_true(assert(set:fold(o)).replaced) -- the same order again: no change
      assert.equal(1, set:get(key).order_count)
      assert.near(spend, set:get(key).total_spend, 0.001)

      -- the orders-updated webhook: the first check grew by 10.00
      local updated = copy(o)
      updated.checks[1].totalAmount = updated.checks[1].totalAmount + 10
      updated.modifiedDate = iso(guests.parse_time(o.modifiedDate) + 60)
      assert(set:fold { eventCategory = "orders", eventType = "ORDER_UPDATED", guid = "evt-1",
                        details = { order = updated } })
      assert.equal(1, set:get(key).order_count)
      assert.near(spend + 10, set:get(key).total_spend, 0.001)
      assert.equal(1, set:order_count())

      -- an older version arriving late is ignored
      assert.equal("stale", assert(set:fold(o)).reason)
      assert.near(spend + 10, set:get(key).total_spend, 0.001)

      -- a second order for the guest adds; moving the first to dine-in takes it out again
      local other = copy(o)
      other.guid = crm.guid()
      assert(set:fold(other))
      assert.equal(2, set:get(key).order_count)
      local moved = copy(updated)
      moved.diningOption.guid = dine_in
      moved.modifiedDate = iso(guests.parse_time(updated.modifiedDate) + 60)
      assert.equal("dining_option", assert(set:fold(moved)).reason)
      assert.equal(1, set:get(key).order_count)
      assert.equal(other.guid, set:get(key).orders[1].guid)
      -- voiding the last one removes the profile
      local voided = copy(other)
      voided.voided = true
      assert.equal("voided", assert(set:fold(voided)).reason)
      assert.is_nil(set:get(key))
      assert.equal(0, set:count())
    end)

    it("folds into a backfilled set without counting backfilled orders twice", function()
      local res = assert(c:backfill_orders(fast { weeks = 10 / 7 }))
      local o, key = single_guest_order()
      local before = res.profiles:get(key)
      local n, spend = before.order_count, before.total_spend
      assert(res.profiles:fold(o))
      assert.equal(n, res.profiles:get(key).order_count)
      assert.near(spend, res.profiles:get(key).total_spend, 0.001)
      local fresh = copy(o)
      fresh.guid = crm.guid()
      assert(res.profiles:fold { details = { order = fresh } })
      assert.equal(n + 1, res.profiles:get(key).order_count)
    end)

    it("refuses input that is not an order", function()
      local set = assert(guests.new(ctx))
      local _, e1 = set:fold("x")
      assert.equal("order", e1.field)
      local _, e2 = set:fold { checks = {} }
      assert.equal("order.guid", e2.field)
      local _, e3 = guests.new { dining_options = {} }
      assert.equal("context.employees", e3.field)
    end)
  end)

  describe("normalisation", function()
    it("keys guests by lower-cased, trimmed email, else by the phone's digits", function()
      assert.equal("ann@example.org", guests.normalize_email("  Ann@Example.ORG "))
      assert.is_nil(guests.normalize_email("not an email"))
      assert.equal("+16175550137", guests.normalize_phone("(617) 555-0137"))
      assert.equal("+16175550137", guests.normalize_phone("1-617-555-0137"))
      assert.equal("+16175550137", guests.normalize_phone("+1 617.555.0137"))
      assert.equal("+447700900123", guests.normalize_phone("+44 7700 900123"))
      assert.is_nil(guests.normalize_phone("12-34"))
      assert.equal("ann@example.org", (guests.guest_key { email = "ANN@example.org", phone = "617 555 0137" }))
      assert.equal("+16175550137", (guests.guest_key { email = "", phone = "617 555 0137" }))
      assert.is_nil(guests.guest_key { firstName = "Nobody" })
    end)
  end)

  describe("sync to Toast CRM", function()
    local c, res
    before_each(function()
      load_data()
      c = H.toast()
      res = assert(c:backfill_orders(fast { weeks = 12 }))
    end)

    it("creates each guest once, then finds them; skips profiles without a last name", function()
      local set = res.profiles
      local without_last = 0
      for _, p in ipairs(set:profiles()) do
        if not p.lastName then without_last = without_last + 1 end
      end
      assert.equal(2, without_last)
      local report = assert(c:sync_to_crm(set, { concurrency = 8 }))
      assert.equal(set:count(), report.total)
      assert.equal(set:count() - 2, report.created)
      assert.equal(0, report.found)
      assert.equal(0, report.failed)
      assert.equal(2, report.skipped)
      assert.equal(report.created, H.count("POST /crm/v1/customers"))
      for i, r in ipairs(report.results) do
        local p = set:get(r.key)
        if r.status == "skipped" then
          assert.equal("lastName missing", r.reason)
        else
          assert.equal("created", r.status)
          assert.equal(r.guid, p.crm_customer_guid)
          local cust = assert(c:get_customer(r.guid))
          assert.equal(p.firstName, cust.firstName)
          assert.equal(p.email or p.phone, cust.email or cust.phone)
        end
        assert.equal(set:keys()[i], r.key)
      end

      local again = assert(c:sync_to_crm(set:profiles()))
      assert.equal(report.created, again.found)
      assert.equal(0, again.created)
      assert.equal(report.created, H.count("POST /crm/v1/customers"))
    end)

    it("never creates one guest twice when two profiles share a phone or an email", function()
      H.reset()
      local fresh = H.toast()
      local profiles = {
        { key = "a@example.org", firstName = "Ann", lastName = "Lee", email = "a@example.org",
          phone = "+16175550101" },
        { key = "+16175550101", firstName = "Ann", lastName = "Lee", phone = "+1 617 555 0101" },
        { key = "A@Example.org", firstName = "Ann", lastName = "Lee", email = "A@Example.org" },
        { key = "b@example.org", firstName = "Bo", lastName = "Ito", email = "b@example.org" },
      }
      local report = assert(fresh:sync_to_crm(profiles, { concurrency = 8 }))
      assert.equal(2, report.created)
      assert.equal(2, report.found)
      assert.equal(2, H.count("POST /crm/v1/customers"))
      assert.equal(report.results[1].guid, report.results[2].guid)
      assert.equal(report.results[1].guid, report.results[3].guid)
    end)

    it("reports failures per guest and carries on", function()
      H.fault { method = "POST", path = "/crm/v1/customers/search", status = 400, count = 1 }
      local report = assert(c:sync_to_crm(res.profiles, { concurrency = 4 }))
      assert.equal(1, report.failed)
      assert.equal(res.profiles:count() - 3, report.created)
      local failed
      for _, r in ipairs(report.results) do
        if r.status == "failed" then failed = r end
      end
      assert.equal(400, failed.err.status)
      assert.is_string(failed.reason)
      local _, err = c:sync_to_crm(res.profiles, { concurrency = 0 })
      assert.equal("concurrency", err.field)
    end)
  end)

  describe("example", function()
    it("toast_guest_history backfills, writes JSON Lines and prints a summary", function()
      H.reset()
      local LUA = rawget(_G, "jit") and "luajit" or "lua5.4"
      local file, out = os.tmpname(), os.tmpname()
      local ok = os.execute(("CRM_SIM_PORT=%d %s examples/toast_guest_history.lua %s > %s 2>&1")
        :format(H.port, LUA, file, out))
      local f = assert(io.open(out))
      local log = f:read("*a")
      f:close()
      os.remove(out)
      assert.is_true(ok == true or ok == 0, log)
      local n = 0
      for line in io.lines(file) do
        assert.is_string(cjson.decode(line).key)
        n = n + 1
      end
      os.remove(file)
      assert.is_true(n > 20)
      assert.matches(n .. " guest profiles", log, 1, true)
    end)
  end)
end)
