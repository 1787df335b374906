-- Simulated Toast orders, configuration, labor and menus APIs: what a guest-history (CRM &
-- guest engagement) integration reads. The data set is generated, not stored: a seeded,
-- deterministic function of the settings below, so every request (and the ground truth) sees
-- the same orders.
--
--   GET /orders/v2/ordersBulk?startDate=&endDate=&page=&pageSize=   (or ?businessDate=yyyyMMdd)
--   GET /config/v2/diningOptions
--   GET /labor/v1/employees
--   GET /menus/v2/menus
--
-- Same auth as Toast CRM: a bearer token from the machine-client login (401 otherwise) and a
-- Toast-Restaurant-External-ID header (400 otherwise). Every restaurant sees the same data,
-- unless toast_restaurants seeds some (below).
--
-- ordersBulk:
--   * startDate and endDate (ISO-8601) select orders whose openedDate is in [startDate, endDate):
--     start inclusive, end exclusive. businessDate=yyyyMMdd instead selects one business day.
--   * endDate - startDate may be at most 31 days ("one month"); more -> 400. endDate before
--     startDate -> 400. Neither a range nor a businessDate -> 400.
--   * page is 1-based (default 1); pageSize defaults to 100, at most 100. Orders come sorted by
--     openedDate, then guid; a page past the end is [] (200).
--   * every ordersBulk request that reaches the API (faulted ones too) is recorded with its
--     arrival time, for GET /__sim/toast/orders_calls.
--
-- The data set (settings through POST /__sim/config):
--   toast_orders_seed      (7)    the seed
--   toast_orders_days      (120)  days of orders, ending the day before toast_orders_end_date
--   toast_orders_per_day   (6)    orders per day
--   toast_orders_end_date  ("")   yyyy-MM-dd, exclusive; "" means today (UTC)
--   toast_restaurants      (0)    0: any restaurant header is accepted and sees the data set
--                                 above. N > 0: N seeded restaurants (a partner's), each with
--                                 its own orders; any other restaurant gets 403, on the CRM
--                                 routes too. Restaurant 1 is the CLI's --sim restaurant
--                                 (6f1d2d0e-...-0f1f0c8e0a11), the others' GUIDs follow from
--                                 the seed. Restaurant k has toast_orders_per_day + (k - 1) % 4
--                                 orders a day (so some take longer than others) and its own
--                                 orders (seed + k); its guests come from the one pool of 36,
--                                 each restaurant leaving out every fourth of them (a different
--                                 fourth each), so most guests order at several restaurants.
--   toast_unauthorized_restaurants ("")  comma-separated GUIDs that answer 401 to every token (a
--                                 restaurant whose access was withdrawn: a fresh login does not help)
-- It has six dining options (Dine In and Bar: DINE_IN; Take Out and Curbside: TAKE_OUT;
-- Delivery: DELIVERY; Catering: CATERING), eight employees, two menus (nested groups; two items
-- on both menus) and 36 guests. Guests are picked for TAKE_OUT and DELIVERY orders 85% of the
-- time and for other orders 30% of the time; every ninth guest only ever dines in. Each order has
-- one to three checks: the first carries the guest's Customer, later ones the same guest, another
-- guest (a split) or none. Guests' emails and phones are spelled differently from order to order
-- (case, spaces, phone punctuation); every sixth guest has no email, some have no phone, two have
-- no last name. About 3% of orders are voided. DELIVERY orders carry deliveryInfo.
--
-- Control routes (added to /__sim/ by sim.control):
--   GET /__sim/toast/orders_calls   {calls = [{t, restaurant, startDate, endDate, businessDate,
--                                   page, pageSize}]}, t = arrival time in epoch seconds (ms
--                                   precision), restaurant = the header's value (lower-cased)
--   GET /__sim/toast/restaurants    {restaurants = [{guid, orders, per_day}], days}: the seeded
--                                   restaurants and how many orders each has
--   GET /__sim/toast/orders_truth[?startDate=&endDate=&restaurant=]   the raw orders of the
--       range (all of them by default; of that seeded restaurant) exactly as ordersBulk serves
--       them, plus what the generator knows: guests
--       [{id, key, firstName, lastName, email, phone, dine_in_only}] (key = the canonical email,
--       else the E.164 phone), check_guests {checkGuid = guest id}, diningOptions, employees,
--       menuItems [{guid, name, price}], first_day and end_day (yyyy-MM-dd).

local common = require("sim.common")

local M = {}

local null = common.null
local err = common.toast_error
local floor = math.floor

local PAGE_DEFAULT, PAGE_MAX = 100, 100
local MAX_WINDOW = 31 * 86400
local CALLS = "toast_orders:calls"

common.register_config({
  toast_orders_seed = 7,
  toast_orders_days = 120,
  toast_orders_per_day = 6,
  toast_orders_end_date = "",
  toast_restaurants = 0,
  toast_unauthorized_restaurants = "",
}, {
  toast_orders_seed = function(v)
    return v >= 0 and v <= 1e6 and v == floor(v), "must be an integer from 0 to 1000000"
  end,
  toast_orders_days = function(v)
    return v >= 1 and v <= 730 and v == floor(v), "must be an integer from 1 to 730"
  end,
  toast_orders_per_day = function(v)
    return v >= 0 and v <= 200 and v == floor(v), "must be an integer from 0 to 200"
  end,
  toast_restaurants = function(v)
    return v >= 0 and v <= 1000 and v == floor(v), "must be an integer from 0 to 1000"
  end,
  toast_orders_end_date = function(v)
    return v == "" or (v:find("^%d%d%d%d%-%d%d%-%d%d$") and common.parse_iso8601(v)) ~= nil,
      "must be yyyy-MM-dd or empty (today)"
  end,
})

---------------------------------------------------------------------------
-- A deterministic random stream (Park-Miller; exact in doubles, so LuaJIT agrees)
---------------------------------------------------------------------------

local MOD = 2147483647

local function stream(seed)
  local s = seed % (MOD - 1) + 1
  local r = {}
  function r.next()
    s = (s * 48271) % MOD
    return s
  end
  function r.int(a, b) return a + r.next() % (b - a + 1) end
  function r.chance(p) return r.next() / MOD < p end
  function r.pick(t) return t[r.int(1, #t)] end
  function r.weighted(t) -- t = {{weight, value}, ...}
    local total = 0
    for _, w in ipairs(t) do total = total + w[1] end
    local x = r.int(1, total)
    for _, w in ipairs(t) do
      x = x - w[1]
      if x <= 0 then return w[2] end
    end
    return t[#t][2]
  end
  function r.uuid()
    local h = {}
    for i = 1, 32 do h[i] = string.format("%x", r.next() % 16) end
    h[13] = "4"
    local v = r.next() % 4 + 1
    h[17] = ("89ab"):sub(v, v)
    local s32 = table.concat(h)
    return s32:sub(1, 8) .. "-" .. s32:sub(9, 12) .. "-" .. s32:sub(13, 16) .. "-"
      .. s32:sub(17, 20) .. "-" .. s32:sub(21, 32)
  end
  return r
end

---------------------------------------------------------------------------
-- The world: dining options, employees, menus and guests (from the seed)
---------------------------------------------------------------------------

local OPTIONS = {
  { "Dine In", "DINE_IN", 30 }, { "Bar", "DINE_IN", 10 }, { "Take Out", "TAKE_OUT", 25 },
  { "Curbside", "TAKE_OUT", 10 }, { "Delivery", "DELIVERY", 20 }, { "Catering", "CATERING", 5 },
}
local STAFF = {
  { "Maria", "Lopez" }, { "Sam", "Okafor" }, { "Priya", "Nair" }, { "Tom", "Becker" },
  { "Lena", "Vogel" }, { "Jamal", "Reed" }, { "Yuki", "Sato" }, { "Ana", "Costa" },
}
-- {menu, group, subgroup or false, item name, price in cents}
local ITEMS = {
  { "Lunch", "Mains", false, "Club Sandwich", 1250 }, { "Lunch", "Mains", false, "Caesar Salad", 1100 },
  { "Lunch", "Mains", false, "Tomato Soup", 750 }, { "Lunch", "Sides", false, "Fries", 450 },
  { "Lunch", "Drinks", "Hot Drinks", "Latte", 450 }, { "Lunch", "Drinks", "Hot Drinks", "Tea", 300 },
  { "Lunch", "Drinks", false, "Lemonade", 400 },
  { "Dinner", "Mains", false, "Steak Frites", 2800 }, { "Dinner", "Mains", false, "Salmon", 2400 },
  { "Dinner", "Mains", false, "Mushroom Risotto", 1900 }, { "Dinner", "Desserts", false, "Tiramisu", 900 },
  { "Dinner", "Desserts", false, "Cheesecake", 850 }, { "Dinner", "Drinks", false, "House Red", 1000 },
}
local SHARED = { Fries = true, Lemonade = true } -- also on the Dinner menu, same guid
local FIRST = { "Ann", "Ben", "Cara", "Dev", "Eve", "Finn", "Gia", "Hugo", "Ivy", "Jon", "Kim", "Leo" }
local LAST = { "Smith", "Garcia", "Chen", "Khan", "Muller", "Rossi", "Dubois", "Kowalski", "Silva" }
local STREETS = { "Elm St", "Oak Ave", "Pine Rd", "Maple Dr", "Cedar Ln", "Birch Way" }
local CITIES = { { "Boston", "MA", "021" }, { "Cambridge", "MA", "021" }, { "Somerville", "MA", "021" } }
local NOTES = { "Leave at the door", "Ring the bell", "Call on arrival", "Side entrance" }
local N_GUESTS = 36

local function build_world(seed)
  local r = stream(seed * 7919 + 11)
  local w = { options = {}, employees = {}, items = {}, guests = {} }
  for i, o in ipairs(OPTIONS) do
    w.options[i] = { guid = r.uuid(), entityType = "DiningOption", externalId = null, name = o[1],
                     behavior = o[2], curbside = o[1] == "Curbside", weight = o[3] }
  end
  for i, s in ipairs(STAFF) do
    w.employees[i] = { guid = r.uuid(), entityType = "RestaurantUser", firstName = s[1], lastName = s[2],
                       email = s[1]:lower() .. "@staff.example", deleted = false,
                       externalEmployeeId = string.format("E%03d", i) }
  end
  for i, it in ipairs(ITEMS) do
    w.items[i] = { guid = r.uuid(), name = it[4], price = it[5], menu = it[1], group = it[2],
                   subgroup = it[3] or nil }
  end
  for i = 1, N_GUESTS do
    local first = FIRST[(i - 1) % #FIRST + 1]
    local last = LAST[(i * 5 - 1) % #LAST + 1]
    local g = { id = i, firstName = first, lastName = last, dine_in_only = i % 9 == 4 }
    if i == 5 or i == 17 then g.lastName = nil end
    if i % 6 ~= 0 then g.email = (first .. "." .. last .. i .. "@example.org"):lower() end
    if i % 7 ~= 3 or not g.email then g.phone = string.format("+1617555%04d", 100 + i * 37) end
    g.key = g.email or g.phone
    g.addresses = {}
    for a = 1, r.int(1, 2) do
      local city = r.pick(CITIES)
      g.addresses[a] = { address1 = r.int(1, 250) .. " " .. r.pick(STREETS), city = city[1],
                         state = city[2], zipCode = city[3] .. r.int(10, 99) }
    end
    w.guests[i] = g
  end
  w.pickup_guests, w.all_guests = {}, w.guests
  for _, g in ipairs(w.guests) do
    if not g.dine_in_only then w.pickup_guests[#w.pickup_guests + 1] = g end
  end
  return w
end

-- How a guest's contact details are typed on one order.
local function spell_email(r, email)
  local v = r.int(1, 5)
  if v == 1 then return email:sub(1, 1):upper() .. email:sub(2) end
  if v == 2 then return "  " .. email:upper() .. " " end
  return email
end

local function spell_phone(r, phone)
  local d = phone:sub(3) -- ten digits after +1
  local v = r.int(1, 5)
  if v == 1 then return "(" .. d:sub(1, 3) .. ") " .. d:sub(4, 6) .. "-" .. d:sub(7) end
  if v == 2 then return d:sub(1, 3) .. "." .. d:sub(4, 6) .. "." .. d:sub(7) end
  if v == 3 then return "+1 " .. d:sub(1, 3) .. "-" .. d:sub(4, 6) .. "-" .. d:sub(7) end
  if v == 4 then return d end
  return phone
end

local function customer_of(r, g)
  return { guid = null, entityType = "Customer", firstName = g.firstName, lastName = g.lastName or null,
           email = g.email and spell_email(r, g.email) or null,
           phone = g.phone and spell_phone(r, g.phone) or null }
end

---------------------------------------------------------------------------
-- Orders, one day at a time
---------------------------------------------------------------------------

local function ymd(day)
  return os.date("!%Y-%m-%d", day * 86400)
end

local function business_date(day)
  return tonumber(os.date("!%Y%m%d", day * 86400))
end

local function money(cents) return cents / 100 end

local PAY_TYPES = { "CREDIT", "CREDIT", "CREDIT", "CASH", "GIFTCARD", "OTHER" }
local SOURCES = { "Online", "In Store", "Phone" }

-- Restaurant k's guests: the pools without every fourth guest (a different fourth for each k);
-- k = 0 (no seeded restaurants) keeps them all.
local function pools_for(w, k)
  if k == 0 then return w.pickup_guests, w.all_guests end
  w.pools = w.pools or {}
  local p = w.pools[k % 4]
  if not p then
    p = { {}, {} }
    for _, g in ipairs(w.guests) do
      if g.id % 4 ~= k % 4 then
        p[2][#p[2] + 1] = g
        if not g.dine_in_only then p[1][#p[1] + 1] = g end
      end
    end
    w.pools[k % 4] = p
  end
  return p[1], p[2]
end

-- Returns an array of {t, guid, json, check_guests = {checkGuid = guest id}}, sorted.
local function build_day(w, seed, day, per_day, k)
  local r = stream((seed * 1000003 + day * 7919) % (MOD - 1))
  local weights = {}
  for _, o in ipairs(w.options) do weights[#weights + 1] = { o.weight, o } end
  local pickup_pool, all_pool = pools_for(w, k or 0)
  local out = {}
  for _ = 1, per_day do
    local opt = r.weighted(weights)
    local pickup = opt.behavior == "TAKE_OUT" or opt.behavior == "DELIVERY"
    local pool = pickup and pickup_pool or all_pool
    local guest
    if r.chance(pickup and 0.85 or 0.3) then
      -- popular guests come back more often: the smaller of two draws
      guest = pool[math.min(r.int(1, #pool), r.int(1, #pool))]
    end
    local opened = day * 86400 + r.int(11 * 3600, 22 * 3600) + r.int(0, 999) / 1000
    local closed = opened + r.int(15, 90) * 60
    local server = r.pick(w.employees)
    local order = {
      guid = r.uuid(), entityType = "Order", externalId = null,
      openedDate = common.format_time(opened), closedDate = common.format_time(closed),
      modifiedDate = common.format_time(closed), createdDate = common.format_time(opened),
      businessDate = business_date(day),
      diningOption = { guid = opt.guid, entityType = "DiningOption" },
      server = { guid = server.guid, entityType = "RestaurantUser" },
      source = pickup and r.pick(SOURCES) or "In Store",
      numberOfGuests = r.int(1, 4), voided = r.chance(0.03), deleted = false,
      deliveryInfo = null, checks = common.array(),
    }
    local rec = { t = opened, guid = order.guid, check_guests = {} }
    for c = 1, r.int(1, 3) do
      local who
      if c == 1 then
        who = guest
      elseif guest then
        local roll = r.int(1, 10)
        if roll <= 6 then who = guest elseif roll <= 7 then who = r.pick(pool) end
      end
      local check = { guid = r.uuid(), entityType = "Check", displayNumber = tostring(r.int(1, 999)),
                      customer = who and customer_of(r, who) or null,
                      selections = common.array(), payments = common.array() }
      if who then rec.check_guests[check.guid] = who.id end
      local amount = 0
      for _ = 1, r.int(1, 4) do
        local item = r.pick(w.items)
        local qty = r.int(1, 3)
        amount = amount + item.price * qty
        check.selections[#check.selections + 1] = {
          guid = r.uuid(), entityType = "MenuItemSelection", item = { guid = item.guid, entityType = "MenuItem" },
          displayName = item.name, quantity = qty, price = money(item.price * qty), voided = false,
        }
      end
      local tax = floor(amount * 0.0875 + 0.5)
      check.amount, check.taxAmount, check.totalAmount = money(amount), money(tax), money(amount + tax)
      local total = amount + tax
      local parts = r.chance(0.2) and { floor(total / 2), total - floor(total / 2) } or { total }
      for _, part in ipairs(parts) do
        local ptype = r.pick(PAY_TYPES)
        local tip = ptype == "CASH" and 0 or floor(part * r.int(0, 25) / 100)
        check.payments[#check.payments + 1] = { guid = r.uuid(), entityType = "OrderPayment",
          type = ptype, amount = money(part), tipAmount = money(tip) }
      end
      order.checks[c] = check
    end
    if opt.behavior == "DELIVERY" then
      local a = guest and r.pick(guest.addresses) or { address1 = r.int(1, 250) .. " " .. r.pick(STREETS),
        city = "Boston", state = "MA", zipCode = "02110" }
      order.deliveryInfo = { address1 = a.address1, address2 = null, city = a.city, state = a.state,
                             zipCode = a.zipCode, notes = r.chance(0.5) and r.pick(NOTES) or null,
                             deliveredDate = common.format_time(closed) }
    end
    rec.json = common.encode(order)
    out[#out + 1] = rec
  end
  table.sort(out, function(a, b)
    if a.t ~= b.t then return a.t < b.t end
    return a.guid < b.guid
  end)
  return out
end

-- The data set is a pure function of the settings, so each worker may cache it.
local cache = { sig = nil }

-- The seeded restaurants: {guids = {...}, index = {[lower-case guid] = k}}, per seed and count.
local SIM_RESTAURANT = "6f1d2d0e-8f65-4d7b-9b59-0f1f0c8e0a11"
local seeded = { sig = nil }
local function restaurants(cfg)
  cfg = cfg or common.config()
  local n = cfg.toast_restaurants
  local sig = cfg.toast_orders_seed .. "|" .. n
  if seeded.sig ~= sig then
    local r = stream(cfg.toast_orders_seed * 104729 + 17)
    seeded = { sig = sig, guids = {}, index = {} }
    for k = 1, n do
      local g = k == 1 and SIM_RESTAURANT or r.uuid()
      seeded.guids[k], seeded.index[g] = g, k
    end
  end
  return seeded
end

-- restaurant_index(header value [, cfg]) -> k (1..N) of a seeded restaurant, 0 when none are
-- seeded (every restaurant sees the one data set), nil for a restaurant that is not seeded.
function M.restaurant_index(rid, cfg)
  cfg = cfg or common.config()
  if cfg.toast_restaurants == 0 then return 0 end
  return restaurants(cfg).index[(rid:match("^%s*(.-)%s*$")):lower()]
end

-- admit(header value) -> k as restaurant_index gives it | nil, the refusal sent: 403 for a
-- restaurant that is not seeded, 401 for one of toast_unauthorized_restaurants (whatever the
-- token). Neither set (the usual case): no more than a look at the stored settings' text, so
-- every other spec's requests cost the simulator what they did (arrival-time proofs rely on it).
function M.admit(rid)
  local raw = common.state():get("config")
  if not raw or not (raw:find("toast_restaurants", 1, true) or raw:find("toast_unauthorized", 1, true)) then
    return 0
  end
  local cfg = common.config()
  local k = M.restaurant_index(rid, cfg)
  if not k then
    return nil, err(403, "the restaurant in Toast-Restaurant-External-ID is not connected to this partner",
      "Toast-Restaurant-External-ID")
  end
  local list = cfg.toast_unauthorized_restaurants
  if list ~= "" then
    local want = (rid:match("^%s*(.-)%s*$")):lower()
    for g in list:gmatch("[^,%s]+") do
      if g:lower() == want then return nil, err(401, "missing, invalid or expired access token") end
    end
  end
  return k
end

local function per_day_of(cfg, k)
  if k == 0 then return cfg.toast_orders_per_day end
  return cfg.toast_orders_per_day + (k - 1) % 4
end

local function dataset()
  local cfg = common.config()
  local end_day
  if cfg.toast_orders_end_date == "" then
    end_day = floor(common.now() / 86400)
  else
    end_day = floor(common.parse_iso8601(cfg.toast_orders_end_date) / 86400)
  end
  local sig = table.concat({ cfg.toast_orders_seed, cfg.toast_orders_days, cfg.toast_orders_per_day,
                             end_day }, "|")
  if cache.sig ~= sig then
    cache = { sig = sig, days = {}, world = build_world(cfg.toast_orders_seed),
              seed = cfg.toast_orders_seed, per_day = cfg.toast_orders_per_day,
              first_day = end_day - cfg.toast_orders_days, end_day = end_day, cached = 0 }
  end
  return cache
end

-- Restaurant k's days (k = 0: the one data set). At most 128 restaurants' days are kept, so a
-- thousand seeded restaurants do not fill the worker's memory.
local function day_orders(ds, day, k)
  k = k or 0
  if day < ds.first_day or day >= ds.end_day then return {} end
  local days = ds.days[k]
  if not days then
    if ds.cached >= 128 then ds.days, ds.cached = {}, 0 end
    days = {}
    ds.days[k], ds.cached = days, ds.cached + 1
  end
  local list = days[day]
  if not list then
    list = build_day(ds.world, ds.seed + k, day, per_day_of(common.config(), k), k)
    days[day] = list
  end
  return list
end

-- Records with start <= t < finish, sorted (restaurant k's; 0: the one data set).
local function orders_between(ds, start, finish, k)
  local out = {}
  for day = math.max(floor(start / 86400), ds.first_day), math.min(floor(finish / 86400), ds.end_day - 1) do
    for _, rec in ipairs(day_orders(ds, day, k)) do
      if rec.t >= start and rec.t < finish then out[#out + 1] = rec end
    end
  end
  return out
end

---------------------------------------------------------------------------
-- API handlers
---------------------------------------------------------------------------

local function public_option(o)
  return { guid = o.guid, entityType = o.entityType, externalId = o.externalId, name = o.name,
           behavior = o.behavior, curbside = o.curbside }
end

local function orders_bulk(k)
  local args = ngx.req.get_uri_args(100)
  local page, size, perr = common.page_params(args, PAGE_DEFAULT, PAGE_MAX)
  if not page then return err(400, size, perr) end
  local ds = dataset()
  local start, finish
  local bd = args.businessDate
  if type(bd) == "string" and bd ~= "" then
    local y, m, d = bd:match("^(%d%d%d%d)(%d%d)(%d%d)$")
    start = y and common.parse_iso8601(y .. "-" .. m .. "-" .. d)
    if not start then return err(400, "businessDate must be yyyyMMdd", "businessDate") end
    finish = start + 86400
  else
    for _, name in ipairs({ "startDate", "endDate" }) do
      local v = args[name]
      if type(v) ~= "string" or v == "" then
        return err(400, "startDate and endDate (or businessDate) are required", name)
      end
    end
    start, finish = common.parse_iso8601(args.startDate), common.parse_iso8601(args.endDate)
    if not start then return err(400, "startDate must be an ISO-8601 date-time", "startDate") end
    if not finish then return err(400, "endDate must be an ISO-8601 date-time", "endDate") end
    if finish < start then return err(400, "endDate must not be before startDate", "endDate") end
    if finish - start > MAX_WINDOW then
      return err(400, "the interval between startDate and endDate must not exceed one month (31 days)",
        "endDate")
    end
  end
  local recs = orders_between(ds, start, finish, k)
  local parts = {}
  for i = (page - 1) * size + 1, math.min(#recs, page * size) do parts[#parts + 1] = recs[i].json end
  return common.send_raw(200, "[" .. table.concat(parts, ",") .. "]", "application/json")
end

local function dining_options()
  local out = common.array()
  for i, o in ipairs(dataset().world.options) do out[i] = public_option(o) end
  return common.send_json(200, out)
end

local function employees()
  return common.send_json(200, common.array(dataset().world.employees))
end

-- menus -> menuGroups (-> menuGroups) -> menuItems, Toast's menus v2 shape.
local function menus_document(w)
  local menus, by_name = common.array(), {}
  local function group_in(list, name, guid_seed)
    for _, g in ipairs(list) do
      if g.name == name then return g end
    end
    local r = stream(guid_seed)
    local g = { guid = r.uuid(), name = name, menuItems = common.array(), menuGroups = common.array() }
    list[#list + 1] = g
    return g
  end
  local function add(menu_name, item, n)
    local menu = by_name[menu_name]
    if not menu then
      menu = { guid = stream(#menus + 101).uuid(), name = menu_name, menuGroups = common.array() }
      by_name[menu_name] = menu
      menus[#menus + 1] = menu
    end
    local g = group_in(menu.menuGroups, item.group, n * 31 + #menu.menuGroups + 1)
    if item.subgroup then g = group_in(g.menuGroups, item.subgroup, n * 37 + 7) end
    g.menuItems[#g.menuItems + 1] = { guid = item.guid, name = item.name, price = money(item.price),
                                      pricingStrategy = "BASE_PRICE" }
  end
  for n, item in ipairs(w.items) do
    add(item.menu, item, n)
    if SHARED[item.name] then add("Dinner", { guid = item.guid, name = item.name, price = item.price,
                                              group = "Extras" }, n + 100) end
  end
  return { restaurantGuid = null, lastUpdated = "2024-01-01T00:00:00.000+0000",
           restaurantTimeZone = "UTC", menus = menus }
end

local function menus()
  return common.send_json(200, menus_document(dataset().world))
end

local ROUTES = {
  ["/orders/v2/ordersBulk"] = orders_bulk,
  ["/config/v2/diningOptions"] = dining_options,
  ["/labor/v1/employees"] = employees,
  ["/menus/v2/menus"] = menus,
}

local function header(name)
  local v = ngx.req.get_headers()[name]
  if type(v) == "table" then v = v[1] end
  return v
end

function M.handle(method, path)
  local h = ROUTES[path]
  if not h then return err(404, "no such endpoint") end
  if method ~= "GET" then return err(405, "method " .. method .. " not allowed", nil, { Allow = "GET" }) end
  if not require("sim.toast").authorized() then
    return err(401, "missing, invalid or expired access token")
  end
  local rid = header("toast-restaurant-external-id")
  if type(rid) ~= "string" or not rid:find("%S") then
    return err(400, "Toast-Restaurant-External-ID header is required", "Toast-Restaurant-External-ID")
  end
  local k, refused = M.admit(rid)
  if not k then return refused end
  return h(k)
end

-- Called by sim.api for every API request before faults apply: records ordersBulk arrivals.
function M.observe(method, path)
  if method ~= "GET" or path ~= "/orders/v2/ordersBulk" then return end
  local a = ngx.req.get_uri_args(100)
  local function s(v) return type(v) == "string" and v or null end
  local rid = ngx.req.get_headers()["toast-restaurant-external-id"]
  if type(rid) == "table" then rid = rid[1] end
  common.list_push(common.state(), CALLS, common.encode({
    t = common.now(), restaurant = type(rid) == "string" and rid:lower() or null,
    startDate = s(a.startDate), endDate = s(a.endDate),
    businessDate = s(a.businessDate), page = tonumber(a.page) or null,
    pageSize = tonumber(a.pageSize) or null,
  }))
end

---------------------------------------------------------------------------
-- Control routes
---------------------------------------------------------------------------

local function calls()
  local out = common.array()
  for _, json in ipairs(common.list_items(common.state(), CALLS)) do out[#out + 1] = common.decode(json) end
  return common.send_json(200, { calls = out })
end

local function truth()
  local args = ngx.req.get_uri_args(20)
  local ds = dataset()
  local start, finish = ds.first_day * 86400, ds.end_day * 86400
  if type(args.startDate) == "string" and args.startDate ~= "" then
    start = common.parse_iso8601(args.startDate)
    if not start then return common.send_json(400, { error = "startDate must be ISO-8601" }) end
  end
  if type(args.endDate) == "string" and args.endDate ~= "" then
    finish = common.parse_iso8601(args.endDate)
    if not finish then return common.send_json(400, { error = "endDate must be ISO-8601" }) end
  end
  local which = 0
  if type(args.restaurant) == "string" and args.restaurant ~= "" then
    which = M.restaurant_index(args.restaurant)
    if not which then return common.send_json(404, { error = "no such seeded restaurant" }) end
  end
  local recs = orders_between(ds, start, finish, which)
  local jsons, check_guests = {}, {}
  for i, rec in ipairs(recs) do
    jsons[i] = rec.json
    for k, v in pairs(rec.check_guests) do check_guests[k] = v end
  end
  local w = ds.world
  local guests, options, items = common.array(), common.array(), common.array()
  for i, g in ipairs(w.guests) do
    guests[i] = { id = g.id, key = g.key, firstName = g.firstName, lastName = g.lastName or null,
                  email = g.email or null, phone = g.phone or null, dine_in_only = g.dine_in_only }
  end
  for i, o in ipairs(w.options) do options[i] = public_option(o) end
  for i, it in ipairs(w.items) do items[i] = { guid = it.guid, name = it.name, price = money(it.price) } end
  local rest = common.encode({
    guests = guests, check_guests = check_guests, diningOptions = options,
    employees = common.array(w.employees), menuItems = items,
    first_day = ymd(ds.first_day), end_day = ymd(ds.end_day),
  })
  return common.send_raw(200, '{"orders":[' .. table.concat(jsons, ",") .. "]," .. rest:sub(2),
    "application/json")
end

local function seeded_list()
  local cfg, ds = common.config(), dataset()
  local out = common.array()
  for k, g in ipairs(restaurants().guids) do
    out[k] = { guid = g, per_day = per_day_of(cfg, k), orders = per_day_of(cfg, k) * (ds.end_day - ds.first_day) }
  end
  return common.send_json(200, { restaurants = out, days = ds.end_day - ds.first_day })
end

M.control_routes = {
  ["/__sim/toast/restaurants"] = { GET = seeded_list },
  ["/__sim/toast/orders_calls"] = { GET = calls },
  ["/__sim/toast/orders_truth"] = { GET = truth },
}

return M
