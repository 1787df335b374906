--- Guest profiles from Toast orders (the CRM & guest-engagement integration guide): which orders
-- count (dining option behavior TAKE_OUT or DELIVERY), who the guest is (the check's Customer),
-- and what to keep about them. Pure Lua: no HTTP here. A profile set folds orders in idempotently
-- by order GUID, so a backfill, its resume and the orders-updated webhook can all feed one set.
--
-- Also `require("crm.toast").guests`. A client makes sets with `Toast:new_profile_set`; `new`
-- makes one from a context you already have. Only orders whose dining option has behavior
-- `TAKE_OUT` or `DELIVERY` count; voided or deleted orders, checks, selections and payments are
-- skipped; each check is credited to its own `customer`. Profiles are keyed by the normalised
-- email, else the phone; emails and phones are not linked across keys.
-- @module crm.toast.guests
-- @usage
-- local guests = require("crm.toast").guests
-- local set = assert(toast:new_profile_set())
-- set:fold(webhook_event)              -- an Order or {details = {order = Order}}
-- for key, profile in set:each() do print(key, profile.order_count, profile.total_spend) end
-- guests.write_jsonl(set, assert(io.open("guests.jsonl", "w")))
local errors = require "crm.error"
local http = require "crm.http"
local phones = require "crm.phone"
local retry = require "crm.retry"
local validate = require "crm.validate"

local M = {}

local type, pairs, ipairs, next, tostring, tonumber = type, pairs, ipairs, next, tostring, tonumber
local floor, sort, concat = math.floor, table.sort, table.concat

--- The dining option behaviors whose orders carry a Customer and count for guest history.
-- @table GUEST_BEHAVIORS
M.GUEST_BEHAVIORS = { TAKE_OUT = true, DELIVERY = true }
--- How many `favourite_items` a profile keeps unless `max_items` says otherwise.
M.DEFAULT_MAX_ITEMS = 10

-- -------------------------------------------------------------------------
-- Time: Toast date-times (yyyy-MM-ddTHH:mm:ss.SSS+0000) to epoch seconds and back
-- -------------------------------------------------------------------------

--- Reads a Toast date-time (or a date) as epoch seconds.
-- @tparam string s `"2024-03-05T18:22:10.123+0000"`, `"...Z"`, `"...+09:00"` or `"2024-03-05"`
-- @treturn[1] number epoch seconds (with the fraction)
-- @return[2] `nil` when `s` is not one of those forms (no error value: it is a parser)
function M.parse_time(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not y then return nil end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo < 1 or mo > 12 or d < 1 or d > 31 then return nil end
  local secs = retry.days_from_civil(y, mo, d) * 86400
  if rest == "" then return secs end
  local hh, mm, tail = rest:match("^T(%d%d):(%d%d)(.*)$")
  if not hh then return nil end
  local ss, frac = 0, 0
  local s2, tail2 = tail:match("^:(%d%d)(.*)$")
  if s2 then
    ss, tail = tonumber(s2), tail2
    local f, tail3 = tail:match("^[.,](%d+)(.*)$")
    if f then frac, tail = tonumber("0." .. f), tail3 end
  end
  local off = 0
  if tail ~= "" and tail ~= "Z" then
    local sign, oh, om = tail:match("^([%+%-])(%d%d):?(%d%d)$")
    if not sign then return nil end
    off = (tonumber(oh) * 3600 + tonumber(om) * 60) * (sign == "-" and -1 or 1)
  end
  return secs + tonumber(hh) * 3600 + tonumber(mm) * 60 + ss + frac - off
end

--- Writes epoch seconds in Toast's form, in UTC (`crm.toast_time` checks its input, then calls this).
-- @tparam number epoch seconds since 1970 (milliseconds rounded)
-- @treturn string `"yyyy-MM-ddTHH:mm:ss.SSS+0000"`
function M.format_time(epoch)
  local secs = floor(epoch)
  local ms = floor((epoch - secs) * 1000 + 0.5)
  if ms >= 1000 then secs, ms = secs + 1, ms - 1000 end
  return os.date("!%Y-%m-%dT%H:%M:%S", secs) .. string.format(".%03d+0000", ms)
end

-- An order's time: openedDate, else closedDate, else businessDate (yyyyMMdd).
local function order_time(o)
  local t = M.parse_time(o.openedDate) or M.parse_time(o.closedDate)
  if t then return t end
  local bd = tostring(o.businessDate or "")
  local y, m, d = bd:match("^(%d%d%d%d)(%d%d)(%d%d)$")
  if y then return retry.days_from_civil(tonumber(y), tonumber(m), tonumber(d)) * 86400 end
  return 0
end

-- -------------------------------------------------------------------------
-- Who the guest is
-- -------------------------------------------------------------------------

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

local function text(v)
  if type(v) ~= "string" then return nil end
  v = trim(v)
  return v ~= "" and v or nil
end

--- The normal form of an email: trimmed, lower case.
-- @tparam string s e.g. `" Ann@Example.ORG "`
-- @treturn[1] string e.g. `"ann@example.org"`
-- @return[2] `nil` unless it has name@domain
function M.normalize_email(s)
  s = text(s)
  if not s then return nil end
  s = s:lower()
  if not s:find("^[^%s@]+@[^%s@]+$") then return nil end
  return s
end

--- The normal form of a phone: E.164.
-- The library's one normaliser (crm.phone.normalize) with `country_code` (default "1", North
-- America) for national numbers.
-- @tparam string s e.g. `"(617) 555-0137"`
-- @tparam[opt="1"] string country_code the country calling code of national numbers
-- @treturn[1] string e.g. `"+16175550137"`
-- @return[2] `nil` when the text is not a phone number that places in E.164
-- @see crm.phone.normalize
function M.normalize_phone(s, country_code)
  return phones.normalize(s, country_code or "1")
end

--- The key of a guest's profile: the normalised email, else the normalised phone.
-- @tparam table c a Customer `{email, phone, ...}` (from an order's check)
-- @tparam[opt="1"] string country_code for national phone numbers
-- @treturn[1] string the key
-- @treturn[1] ?string the normalised email
-- @treturn[1] ?string the normalised phone
-- @return[2] `nil` when neither normalises
function M.guest_key(c, country_code)
  if type(c) ~= "table" then return nil end
  local email = M.normalize_email(c.email)
  local phone = M.normalize_phone(c.phone, country_code)
  local key = email or phone
  if not key then return nil end
  return key, email, phone
end

-- -------------------------------------------------------------------------
-- Context: dining options, employees and menu items, indexed by GUID
-- -------------------------------------------------------------------------

local function index_by_guid(list, make)
  local out = {}
  if type(list) ~= "table" then return out end
  for _, x in ipairs(list) do
    if type(x) == "table" and type(x.guid) == "string" then out[x.guid] = make(x) end
  end
  return out
end

--- Indexes dining options by GUID.
-- @tparam {table,...} list the array from `/config/v2/diningOptions`
-- @treturn table `{[guid] = {guid, name, behavior}}` (entries without a GUID are left out)
function M.index_dining_options(list)
  return index_by_guid(list, function(o)
    return { guid = o.guid, name = o.name, behavior = o.behavior }
  end)
end

--- Indexes employees by GUID.
-- @tparam {table,...} list the array from `/labor/v1/employees`
-- @treturn table `{[guid] = {guid, firstName, lastName, name}}` (`name`: first and last joined)
function M.index_employees(list)
  return index_by_guid(list, function(e)
    local name = concat({ text(e.firstName) or "", text(e.lastName) or "" }, " ")
    return { guid = e.guid, firstName = e.firstName, lastName = e.lastName, name = text(name) }
  end)
end

--- Indexes the menu items of a menus document by GUID.
-- Walks menus -> menuGroups (nested to any depth) -> menuItems; an item on several menus keeps
-- its first place.
-- @tparam table doc the document from `/menus/v2/menus`
-- @treturn table `{[guid] = {guid, name, price, menu, group}}`
function M.menu_items(doc)
  local out = {}
  local function walk(group, menu, depth)
    if type(group) ~= "table" or depth > 32 then return end
    for _, it in ipairs(type(group.menuItems) == "table" and group.menuItems or {}) do
      if type(it) == "table" and type(it.guid) == "string" and not out[it.guid] then
        out[it.guid] = { guid = it.guid, name = it.name, price = it.price, menu = menu, group = group.name }
      end
    end
    for _, sub in ipairs(type(group.menuGroups) == "table" and group.menuGroups or {}) do
      walk(sub, menu, depth + 1)
    end
  end
  if type(doc) == "table" and type(doc.menus) == "table" then
    for _, menu in ipairs(doc.menus) do
      if type(menu) == "table" then
        for _, g in ipairs(type(menu.menuGroups) == "table" and menu.menuGroups or {}) do
          walk(g, menu.name, 1)
        end
      end
    end
  end
  return out
end

-- -------------------------------------------------------------------------
-- Extraction: one order -> what it contributes to each guest
-- -------------------------------------------------------------------------

-- An amount in cents; a non-number, or one beyond any real order (a trillion either way: the
-- sums of a guest must stay exact integers and fit PostgreSQL's BIGINT), counts as none.
local MAX_AMOUNT, MAX_QUANTITY = 1e12, 1e9
local function cents(v)
  if type(v) ~= "number" or v ~= v or v > MAX_AMOUNT or v < -MAX_AMOUNT then return 0 end
  return floor(v * 100 + 0.5)
end

-- A selection's quantity: 1 when missing, not a number, or beyond any real one (a billion
-- either way: the sums of a guest's favourite items must stay finite in every database).
local function quantity(v)
  if type(v) ~= "number" or v ~= v or v > MAX_QUANTITY or v < -MAX_QUANTITY then return 1 end
  return v
end

local function gone(x) return x.voided == true or x.deleted == true end

local function ref_guid(v)
  return type(v) == "table" and type(v.guid) == "string" and v.guid or nil
end

-- The facts kept about one check: amounts, selections mapped to menu items, payments.
local function check_facts(check, items)
  local sels, pays = {}, {}
  for _, s in ipairs(type(check.selections) == "table" and check.selections or {}) do
    if type(s) == "table" and not gone(s) then
      local guid = ref_guid(s.item)
      local item = guid and items[guid]
      sels[#sels + 1] = { item = guid, name = item and item.name or text(s.displayName),
                          quantity = quantity(s.quantity),
                          price = cents(s.price) / 100 }
    end
  end
  local tip = 0
  for _, p in ipairs(type(check.payments) == "table" and check.payments or {}) do
    if type(p) == "table" and not gone(p) then
      pays[#pays + 1] = { type = p.type, amount = cents(p.amount) / 100, tipAmount = cents(p.tipAmount) / 100 }
      tip = tip + cents(p.tipAmount)
    end
  end
  return { guid = check.guid, displayNumber = check.displayNumber, amount = cents(check.amount) / 100,
           taxAmount = cents(check.taxAmount) / 100, totalAmount = cents(check.totalAmount) / 100,
           selections = sels, payments = pays }, cents(check.amount), cents(check.totalAmount), tip
end

--- What one order contributes to each guest (what `Set:fold` does with an order).
-- @tparam table order a Toast Order
-- @tparam crm.toast.GuestContext ctx `{dining_options, employees, items}`
-- @tparam[opt] table opts `{country_code}` for national phone numbers
-- @treturn {table,...} contributions: one per guest on the order's checks,
-- `{key, identity = {firstName, lastName, email, phone}, fact = OrderFact, t, cents}`; empty
-- when the order does not count
-- @treturn ?string reason (when there are none): "voided", "dining_option" (not
-- TAKE_OUT/DELIVERY), "unknown_dining_option", "no_customer"
function M.extract(order, ctx, opts)
  if gone(order) then return {}, "voided" end
  local cc = opts and opts.country_code
  local dg = ref_guid(order.diningOption)
  local option = dg and ctx.dining_options[dg]
  if not option then return {}, "unknown_dining_option" end
  if not M.GUEST_BEHAVIORS[option.behavior] then return {}, "dining_option" end
  local t = order_time(order)
  local by_key, keys = {}, {}
  for _, check in ipairs(type(order.checks) == "table" and order.checks or {}) do
    if type(check) == "table" and not gone(check) then
      local key, email, phone = M.guest_key(check.customer, cc)
      if key then
        local g = by_key[key]
        if not g then
          local c = check.customer
          g = { key = key, t = t, checks = {}, amount = 0, total = 0, tips = 0,
                identity = { firstName = text(c.firstName), lastName = text(c.lastName),
                             email = email, phone = phone } }
          by_key[key] = g
          keys[#keys + 1] = key
        end
        local facts, amount, total, tip = check_facts(check, ctx.items)
        g.checks[#g.checks + 1] = facts
        g.amount, g.total, g.tips = g.amount + amount, g.total + total, g.tips + tip
      end
    end
  end
  if #keys == 0 then return {}, "no_customer" end
  local sg = ref_guid(order.server)
  local server = sg and { guid = sg, name = ctx.employees[sg] and ctx.employees[sg].name } or nil
  local delivery
  if type(order.deliveryInfo) == "table" then
    local d = order.deliveryInfo
    delivery = { address1 = text(d.address1), address2 = text(d.address2), city = text(d.city),
                 state = text(d.state), zipCode = text(d.zipCode), notes = text(d.notes) }
  end
  local out = {}
  for i, key in ipairs(keys) do
    local g = by_key[key]
    out[i] = { key = key, t = t, identity = g.identity, fact = {
      guid = order.guid, openedDate = order.openedDate, closedDate = order.closedDate,
      businessDate = order.businessDate, source = order.source,
      diningOption = { guid = option.guid, name = option.name, behavior = option.behavior },
      server = server, delivery = delivery, checks = g.checks,
      amount = g.amount / 100, total = g.total / 100, tips = g.tips / 100,
    }, cents = { amount = g.amount, total = g.total, tips = g.tips } }
  end
  return out
end

-- -------------------------------------------------------------------------
-- Profile sets
-- -------------------------------------------------------------------------

--- A guest profile, as `Set:get` computes it (read-only; cached until an order changes it).
-- The guide lists no values for its table, so these fields are crm's choice.
-- @table Profile
-- @tfield string key the normalised email, else the E.164 phone
-- @tfield[opt] string firstName the latest non-empty value
-- @tfield[opt] string lastName the latest non-empty value
-- @tfield[opt] string email the latest non-empty value (normalised)
-- @tfield[opt] string phone the latest non-empty value (E.164)
-- @tfield number order_count orders that count
-- @tfield number check_count the guest's checks on them
-- @tfield number total_spend the sum of the guest's checks' `totalAmount`
-- @tfield number subtotal the sum of their `amount`
-- @tfield number tips the sum of the payments' `tipAmount`
-- @tfield number average_order `total_spend / order_count`, rounded to cents (0 without orders)
-- @tfield[opt] string first_order the first order's `openedDate` (else `closedDate`, `businessDate`)
-- @tfield[opt] string last_order the latest order's date, the same way
-- @tfield[opt] string first_order_guid
-- @tfield[opt] string last_order_guid
-- @tfield table dining orders by behavior, `{TAKE_OUT = n, DELIVERY = n}`
-- @tfield table payment_types payments by type, `{CREDIT = n, CASH = n, ...}`
-- @tfield {table,...} favourite_items the top `max_items` by quantity, then orders, then GUID:
-- `{guid, name, quantity, orders}`
-- @tfield {table,...} servers `{guid, name, orders}`, most orders first
-- @tfield {table,...} delivery_addresses distinct `{address1, address2, city, state, zipCode}`
-- @tfield {string,...} delivery_notes distinct notes
-- @tfield[opt] string crm_customer_guid the Toast CRM customer, after `sync_to_crm`
-- @tfield {OrderFact,...} orders the guest's orders, oldest first

--- One order as a profile keeps it (`Profile.orders`).
-- @table OrderFact
-- @tfield string guid
-- @tfield[opt] string openedDate
-- @tfield[opt] string closedDate
-- @tfield[opt] number businessDate
-- @tfield[opt] string source
-- @tfield table diningOption `{guid, name, behavior}`
-- @tfield[opt] table server `{guid, name}`
-- @tfield[opt] table delivery `{address1, address2, city, state, zipCode, notes}`
-- @tfield number amount the guest's checks' `amount`
-- @tfield number total their `totalAmount`
-- @tfield number tips their payments' tips
-- @tfield {table,...} checks the guest's checks: `{guid, displayNumber, amount, taxAmount,
-- totalAmount, selections = {{item, name, quantity, price}}, payments = {{type, amount,
-- tipAmount}}}`

--- What `Set:fold` returns.
-- @table FoldResult
-- @tfield string guid the order's GUID
-- @tfield {string,...} keys the profiles it counts for (empty when it does not count)
-- @tfield boolean replaced an earlier version of the order was folded before
-- @tfield boolean counted it counts for at least one profile
-- @tfield[opt] string reason why it does not count: `"stale"` (older `modifiedDate` than the
-- version folded; ignored), `"voided"`, `"dining_option"`, `"unknown_dining_option"`,
-- `"no_customer"`

local Set = {}
Set.__index = Set

local function check_context(ctx)
  if type(ctx) ~= "table" then return validate.fail("context", "must be a table") end
  for _, k in ipairs { "dining_options", "employees", "items" } do
    if type(ctx[k]) ~= "table" then
      return validate.fail("context." .. k, "must be a table indexed by GUID")
    end
  end
  return nil
end

--- An empty profile set (`guests.new`).
-- context = {dining_options, employees, items} as client:get_guest_context() returns it.
-- @tparam crm.toast.GuestContext ctx the context orders are mapped with
-- @tparam[opt] table opts
-- @tparam[opt=10] number opts.max_items how many `favourite_items` a profile keeps
-- @tparam[opt="1"] string opts.country_code for national phone numbers
-- @treturn[1] Set the set
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` (`"context.items"`, `"max_items"`, `"country_code"`)
function M.new(ctx, opts)
  local e = check_context(ctx) or validate.table(opts, "options")
  if e then return nil, e end
  opts = opts or {}
  e = validate.known_keys(opts, { max_items = true, country_code = true })
    or validate.number(opts.max_items, "max_items", { min = 1, integer = true })
    or phones.check_country_code(opts.country_code, "country_code")
  if e then return nil, e end
  return setmetatable({
    context = ctx, max_items = opts.max_items or M.DEFAULT_MAX_ITEMS,
    country_code = opts.country_code or "1",
    orders = {},   -- order guid -> {keys = {...}, modified = epoch | nil}
    guests = {},   -- key -> {[order guid] = contribution}
    cache = {},    -- key -> computed profile
    links = {},    -- key -> Toast CRM customer guid (sync_to_crm)
    n = 0,         -- number of profiles
  }, Set)
end

--- Whether `v` is a profile set.
-- @param v any value
-- @treturn boolean
function M.is_set(v) return getmetatable(v) == Set end

--- A profile set: guest profiles folded from orders, idempotently by order GUID.
-- @type Set

-- Accepts an Order or an orders webhook event ({eventType, details = {order = Order}}).
local function unwrap(v)
  if type(v) == "table" and type(v.details) == "table" and type(v.details.order) == "table" then
    return v.details.order
  end
  return v
end

local function forget(self, guid)
  local old = self.orders[guid]
  if not old then return end
  for _, key in ipairs(old.keys) do
    local g = self.guests[key]
    if g then
      g[guid] = nil
      self.cache[key] = nil
      if next(g) == nil then
        self.guests[key] = nil
        self.n = self.n - 1
      end
    end
  end
  self.orders[guid] = nil
end

--- Folds an order in (or a webhook event `{eventType, details = {order = Order}}`).
-- Idempotent by order GUID: folding an order again replaces what it contributed before (an
-- updated order), so nothing is counted twice. An order whose modifiedDate is older than the
-- version already folded is ignored (reason "stale"). Orders that do not count (voided, deleted,
-- dining option not TAKE_OUT/DELIVERY, no Customer) remove what an earlier version contributed.
-- @tparam table v an Order, or an orders webhook event
-- @treturn[1] FoldResult `{guid, keys, replaced, counted, reason}`
-- @return[2] `nil`
-- @treturn[2] Error `validation` (`field = "order"` or `"order.guid"`)
function Set:fold(v)
  local order = unwrap(v)
  if type(order) ~= "table" then return nil, validate.fail("order", "must be a table (an Order)") end
  if type(order.guid) ~= "string" or order.guid == "" then
    return nil, validate.fail("order.guid", "must be a non-empty string")
  end
  local guid = order.guid
  local modified = M.parse_time(order.modifiedDate)
  local old = self.orders[guid]
  if old and old.modified and modified and modified < old.modified then
    return { guid = guid, keys = old.keys, replaced = false, counted = #old.keys > 0, reason = "stale" }
  end
  local contributions, reason = M.extract(order, self.context, { country_code = self.country_code })
  forget(self, guid)
  local keys = {}
  for i, c in ipairs(contributions) do
    keys[i] = c.key
    local g = self.guests[c.key]
    if not g then
      g = {}
      self.guests[c.key] = g
      self.n = self.n + 1
    end
    g[guid] = c
    self.cache[c.key] = nil
  end
  self.orders[guid] = { keys = keys, modified = modified }
  return { guid = guid, keys = keys, replaced = old ~= nil, counted = #keys > 0, reason = reason }
end

--- Takes an order's contribution out (e.g. a deleted order).
-- @tparam string guid the order's GUID (unknown GUIDs are fine)
-- @treturn boolean `true`
function Set:remove(guid)
  forget(self, guid)
  return true
end

--- Records the Toast CRM customer a profile was synced to (`sync_to_crm` calls it).
-- @tparam string key the profile's key
-- @tparam string customer_guid the customer's GUID (`Profile.crm_customer_guid`)
function Set:link(key, customer_guid)
  self.links[key] = customer_guid
  self.cache[key] = nil
end

--- The number of profiles.
-- @treturn number
function Set:count() return self.n end

--- The number of distinct orders folded (counted or not).
-- @treturn number
function Set:order_count()
  local n = 0
  for _ in pairs(self.orders) do n = n + 1 end
  return n
end

--- Whether an order was folded (counted or not).
-- @tparam string guid the order's GUID
-- @treturn boolean
function Set:has_order(guid) return self.orders[guid] ~= nil end

local function by_time(a, b)
  if a.t ~= b.t then return a.t < b.t end
  return a.fact.guid < b.fact.guid
end

local function address_key(d)
  local parts = {}
  for i, f in ipairs { "address1", "address2", "city", "state", "zipCode" } do
    parts[i] = (d[f] or ""):lower():gsub("%s+", " ")
  end
  return concat(parts, "|")
end

-- Builds a profile from the orders a guest has (see README for the fields).
local function compute(self, key, contribs)
  local list = {}
  for _, c in pairs(contribs) do list[#list + 1] = c end
  sort(list, by_time)
  local p = { key = key, order_count = #list, check_count = 0, dining = {}, payment_types = {},
              favourite_items = {}, servers = {}, delivery_addresses = {}, delivery_notes = {},
              orders = {} }
  local total, amount, tips = 0, 0, 0
  local items, servers, addresses, notes = {}, {}, {}, {}
  for i, c in ipairs(list) do
    local f = c.fact
    p.orders[i] = f
    total, amount, tips = total + c.cents.total, amount + c.cents.amount, tips + c.cents.tips
    p.check_count = p.check_count + #f.checks
    local b = f.diningOption.behavior
    p.dining[b] = (p.dining[b] or 0) + 1
    -- the latest non-empty value of each identity field wins
    for _, field in ipairs { "firstName", "lastName", "email", "phone" } do
      if c.identity[field] then p[field] = c.identity[field] end
    end
    local seen = {}
    for _, check in ipairs(f.checks) do
      for _, s in ipairs(check.selections) do
        local ik = s.item or ("name:" .. tostring(s.name))
        local it = items[ik]
        if not it then
          it = { guid = s.item, name = s.name, quantity = 0, orders = 0 }
          items[ik] = it
        end
        it.quantity = it.quantity + s.quantity
        if not seen[ik] then it.orders, seen[ik] = it.orders + 1, true end
      end
      for _, pay in ipairs(check.payments) do
        if pay.type then p.payment_types[pay.type] = (p.payment_types[pay.type] or 0) + 1 end
      end
    end
    if f.server then
      local s = servers[f.server.guid]
      if not s then
        s = { guid = f.server.guid, name = f.server.name, orders = 0 }
        servers[f.server.guid] = s
      end
      s.orders = s.orders + 1
    end
    local d = f.delivery
    if d and d.address1 then
      local ak = address_key(d)
      if not addresses[ak] then
        addresses[ak] = true
        p.delivery_addresses[#p.delivery_addresses + 1] = { address1 = d.address1, address2 = d.address2,
          city = d.city, state = d.state, zipCode = d.zipCode }
      end
    end
    if d and d.notes and not notes[d.notes] then
      notes[d.notes] = true
      p.delivery_notes[#p.delivery_notes + 1] = d.notes
    end
  end
  p.total_spend, p.subtotal, p.tips = total / 100, amount / 100, tips / 100
  p.average_order = #list > 0 and floor(total / #list + 0.5) / 100 or 0
  if #list > 0 then
    local first, last = list[1].fact, list[#list].fact
    p.first_order = first.openedDate or first.closedDate or first.businessDate
    p.last_order = last.openedDate or last.closedDate or last.businessDate
    p.first_order_guid, p.last_order_guid = first.guid, last.guid
  end
  local ranked = {}
  for _, it in pairs(items) do ranked[#ranked + 1] = it end
  -- most units first, then most orders, then by GUID (or name) so the order is stable
  sort(ranked, function(a, b)
    if a.quantity ~= b.quantity then return a.quantity > b.quantity end
    if a.orders ~= b.orders then return a.orders > b.orders end
    return (a.guid or a.name or "") < (b.guid or b.name or "")
  end)
  for i = 1, math.min(#ranked, self.max_items) do p.favourite_items[i] = ranked[i] end
  for _, s in pairs(servers) do p.servers[#p.servers + 1] = s end
  sort(p.servers, function(a, b)
    if a.orders ~= b.orders then return a.orders > b.orders end
    return a.guid < b.guid
  end)
  p.crm_customer_guid = self.links[key]
  return p
end

--- A profile by key. Profiles are computed on demand and cached until they change;
-- treat them as read-only.
-- @tparam string key a normalised email or E.164 phone
-- @treturn ?Profile the profile, or `nil` when there is none
function Set:get(key)
  local contribs = self.guests[key]
  if not contribs then return nil end
  local p = self.cache[key]
  if not p then
    p = compute(self, key, contribs)
    self.cache[key] = p
  end
  return p
end

--- Every profile key.
-- @treturn {string,...} sorted
function Set:keys()
  local keys = {}
  for k in pairs(self.guests) do keys[#keys + 1] = k end
  sort(keys)
  return keys
end

--- Every profile.
-- @treturn {Profile,...} sorted by key
function Set:profiles()
  local out = {}
  for i, k in ipairs(self:keys()) do out[i] = self:get(k) end
  return out
end

--- Iterates over the profiles: `for key, profile in set:each() do ... end`.
-- @treturn function an iterator yielding `key, profile`, sorted by key
function Set:each()
  local keys, i = self:keys(), 0
  return function()
    i = i + 1
    local k = keys[i]
    if k then return k, self:get(k) end
  end
end

-- -------------------------------------------------------------------------
-- JSON Lines
-- -------------------------------------------------------------------------

local ARRAYS = { favourite_items = true, servers = true, delivery_addresses = true, delivery_notes = true,
                 orders = true, checks = true, selections = true, payments = true }

-- A copy in which the known array fields encode as [] when empty.
local function jsonable(v, name)
  if type(v) ~= "table" then return v end
  if ARRAYS[name] and next(v) == nil then return http.empty_array end
  local out = {}
  for k, x in pairs(v) do out[k] = jsonable(x, k) end
  return out
end

--- @type end

--- A profile as one line of JSON (no newline); empty lists are written as `[]`.
-- @tparam Profile p the profile
-- @treturn[1] string the JSON
-- @return[2] `nil`
-- @treturn[2] Error `validation` (`field = "profile"`) when it cannot be encoded
function M.encode_profile(p)
  local s, msg = http.encode(jsonable(p))
  if not s then return nil, errors.new("validation", "profile cannot be encoded: " .. msg, { field = "profile" }) end
  return s
end

--- Writes profiles as JSON Lines.
-- fh is anything with :write (an io file); one profile per line, sorted by key for a set.
-- @tparam Set|{Profile,...} profiles a set or an array of profiles
-- @param fh a file handle (anything with `:write`)
-- @treturn[1] number the lines written
-- @return[2] `nil`
-- @treturn[2] Error `validation` (`field = "profiles"` or `"fh"`), or `transport` with
-- `code = "write_failed"` and `written` (lines written before the failure)
function M.write_jsonl(profiles, fh)
  if M.is_set(profiles) then profiles = profiles:profiles() end
  if type(profiles) ~= "table" then
    return nil, validate.fail("profiles", "must be a profile set or an array of profiles")
  end
  local has_write = (type(fh) == "table" or type(fh) == "userdata")
    and pcall(function() return fh.write end) and fh.write ~= nil
  if not has_write then
    return nil, validate.fail("fh", "must be a file handle (something with :write)")
  end
  local n = 0
  for _, p in ipairs(profiles) do
    local line, e = M.encode_profile(p)
    if not line then return nil, e end
    local ok, werr = fh:write(line, "\n")
    if not ok then
      return nil, errors.new("transport", "writing profiles failed: " .. tostring(werr),
        { code = "write_failed", written = n })
    end
    n = n + 1
  end
  return n
end

--- @type Set

--- Writes this set as JSON Lines, sorted by key (`guests.write_jsonl(set, fh)`).
-- @param fh a file handle (anything with `:write`)
-- @treturn[1] number the lines written
-- @return[2] `nil`
-- @treturn[2] Error as for `write_jsonl`
function Set:write_jsonl(fh) return M.write_jsonl(self, fh) end

return M
