-- One return convention for the whole API: on success the second value is nil (`res, err`
-- everywhere), extra success values come third. Every public method of both client classes is
-- called against the simulator; a method this spec has no call for fails it, so a new method
-- cannot skip the rule.
local crm = require "crm"
local guests = require "crm.toast.guests"
local H = require "helper"

-- The public methods of a client class: its metatable's functions without a leading "_".
local function public_methods(client)
  local names = {}
  for k, v in next, getmetatable(client).__index do
    if type(v) == "function" and type(k) == "string" and not k:find("^_") then names[#names + 1] = k end
  end
  table.sort(names)
  return names
end

-- pack(...) -> {n = select("#", ...), ...}
local function pack(...) return { n = select("#", ...), ... } end

-- check(name, ...) -> the values: the first is not nil, the second is nil.
local function check(name, ...)
  local r = pack(...)
  assert.is_not_nil(r[1], name .. " failed: " .. tostring(r[2]))
  assert.is_nil(r[2], name .. " returned a second value on success: " .. tostring(r[2]))
  return r
end

-- every_method(client, class, order, calls, run, iter_args): the calls in `order` first (they
-- make what later ones read), then every public method: a pager (iter_*) with its arguments, any
-- other through `run`, close last. A method without a call fails the spec.
local function every_method(c, class, order, calls, run, iter_args)
  for _, name in ipairs(order) do run(name) end
  local methods = public_methods(c)
  for _, name in ipairs(methods) do
    if name:find("^iter_") then
      check(name, c[name](c, (table.unpack or unpack)(iter_args[name] or {})))
    elseif name ~= "close" then
      assert.is_function(calls[name], class .. ":" .. name .. " has no call in this spec: add one")
      run(name)
    end
  end
  run("close")
  assert.is_true(#methods >= 25, #methods .. " methods")
end

local NOW = 1714521600 -- the orders data set's "now" (see toast_orders_spec)
local function day_of_orders()
  return { startDate = guests.format_time(NOW - 86400), endDate = guests.format_time(NOW), spacing = 0,
           allow_fast = true }
end

describe("the return convention", function()
  before_each(function()
    H.reset()
    H.config { toast_orders_seed = 11, toast_orders_days = 20, toast_orders_per_day = 3,
               toast_orders_end_date = "2024-05-01" }
  end)

  it("no TableCheck method returns a second value on success", function()
    local c = H.tablecheck()
    local cust = check("create_customer", c:create_customer(H.tc_customer()))[1]
    local twin = assert(c:create_customer(H.tc_customer { emails = cust.emails }))
    local reservation, membership
    local calls = {
      create_customer = function() return c:create_customer(H.tc_customer()) end,
      get_customer = function() return c:get_customer(cust.id) end,
      update_customer = function() return c:update_customer(cust.id, { memo = "convention" }) end,
      delete_customer = function()
        return c:delete_customer(assert(c:create_customer(H.tc_customer())).id)
      end,
      list_customers = function() return c:list_customers { per_page = 2 } end,
      search_customers = function() return c:search_customers {} end,
      get_shop = function() return c:get_shop(H.tc.shop_ids[1]) end,
      list_shops = function() return c:list_shops() end,
      get_franchise = function() return c:get_franchise(H.tc.franchise_id) end,
      list_franchises = function() return c:list_franchises() end,
      create_reservation = function()
        return c:create_reservation { shop_id = H.tc.shop_ids[1], pax = 2, start_at = "2030-01-29T19:15:00Z",
                                      customer_id = cust.id, reservation_flag_ids = { H.tc.flag_ids[1] } }
      end,
      get_reservation = function() return c:get_reservation(reservation.id) end,
      update_reservation = function() return c:update_reservation(reservation.id, { pax = 3 }) end,
      list_reservations = function() return c:list_reservations() end,
      get_reservation_flag = function() return c:get_reservation_flag(H.tc.flag_ids[1]) end,
      list_reservation_flags = function() return c:list_reservation_flags() end,
      create_membership = function()
        return c:create_membership { membership_program_id = H.tc.program_ids[2], code = "C-" .. crm.guid():sub(1, 6) }
      end,
      get_membership = function() return c:get_membership(membership.id) end,
      update_membership = function() return c:update_membership(membership.id, { code = "D-1" }) end,
      list_memberships = function() return c:list_memberships() end,
      delete_membership = function() return c:delete_membership(membership.id) end,
      get_membership_program = function() return c:get_membership_program(H.tc.program_ids[1]) end,
      list_membership_programs = function() return c:list_membership_programs() end,
      plan_contacts = function()
        return c:plan_contacts(assert(c:get_customer(cust.id)), { phones = { set = { "+81312345678" } } })
      end,
      find_duplicates = function() return c:find_duplicates() end,
      merge_customers = function() return c:merge_customers(cust.id, { twin.id }, { dry_run = true }) end,
      wait_for_merge = function()
        assert(c:merge_customers(cust.id, { twin.id }))
        return c:wait_for_merge(cust.id, { twin.id }, { timeout = 10, interval = 0.01 })
      end,
      wait_for_images = function() return c:wait_for_images(cust.id, { timeout = 5 }) end,
      batch = function() return c:batch { { "get_customer", cust.id } } end,
      close = function() return c:close() end,
      -- another branch adds it (the exactly-once issue); its success must follow the rule too
      find_or_create = function() return c:find_or_create(H.tc_customer()) end,
    }
    local order = { "create_customer", "get_customer", "update_customer", "delete_customer", "list_customers",
      "search_customers", "create_reservation", "get_reservation", "update_reservation", "create_membership",
      "get_membership", "update_membership", "delete_membership", "plan_contacts", "find_duplicates",
      "merge_customers", "wait_for_merge" }
    local seen = {}
    local function run(name)
      if seen[name] then return end
      seen[name] = true
      local r = check(name, calls[name]())
      if name == "create_reservation" then reservation = r[1] end
      if name == "create_membership" then membership = r[1] end
      if name == "get_reservation" then assert.is_table(r[3], "get_reservation: the flags come third") end
      if name == "merge_customers" then assert.is_table(r[3].fields, "merge_customers: the report comes third") end
      if name == "find_duplicates" then assert.is_number(r[3].scanned, "find_duplicates: the stats come third") end
      if name:find("^list_") or name == "search_customers" then
        assert.is_table(r[3], name .. ": the pagination comes third")
      end
    end
    every_method(c, "TableCheck", order, calls, run, {})
  end)

  it("no Toast method returns a second value on success", function()
    local c = H.toast()
    local cust = check("create_customer", c:create_customer(H.customer()))[1]
    local txn
    local profiles = assert(c:new_profile_set())
    local calls = {
      login = function() return c:login() end,
      create_customer = function() return c:create_customer(H.customer()) end,
      get_customer = function() return c:get_customer(cust.guid) end,
      search_customers = function() return c:search_customers { lastName = cust.lastName } end,
      find_or_create = function() return c:find_or_create(H.customer()) end,
      get_idempotency_guid = function() return c:get_idempotency_guid("add_credit", "order-1") end,
      add_credit = function()
        return c:add_credit(cust.guid, { amount = 5, localCreatedDate = crm.toast_time() })
      end,
      get_credit_summary = function() return c:get_credit_summary(cust.guid) end,
      get_credit_transaction = function() return c:get_credit_transaction(txn.guid) end,
      list_customer_credit_transactions = function() return c:list_customer_credit_transactions(cust.guid) end,
      list_credit_transactions = function() return c:list_credit_transactions() end,
      list_orders = function() return c:list_orders(day_of_orders()) end,
      list_dining_options = function() return c:list_dining_options() end,
      list_employees = function() return c:list_employees() end,
      list_menu_items = function() return c:list_menu_items() end,
      get_menus = function() return c:get_menus() end,
      get_guest_context = function() return c:get_guest_context() end,
      new_profile_set = function() return c:new_profile_set() end,
      backfill_orders = function()
        return c:backfill_orders { now = NOW, spacing = 0, allow_fast = true, weeks = 1, profiles = profiles }
      end,
      sync_to_crm = function() return c:sync_to_crm(profiles) end,
      use_restaurant = function() return c:use_restaurant(H.restaurant) end,
      backfill_restaurants = function()
        return c:backfill_restaurants({ H.restaurant }, { dir = H.tmpdir(), now = NOW, spacing = 0,
                                                          allow_fast = true, weeks = 1 })
      end,
      batch = function() return c:batch { { "get_customer", cust.guid } } end,
      close = function() return c:close() end,
    }
    local order = { "login", "add_credit", "get_credit_transaction", "backfill_orders", "sync_to_crm" }
    local seen = {}
    local function run(name)
      if seen[name] then return end
      seen[name] = true
      local r = check(name, calls[name]())
      if name == "add_credit" then txn = r[1] end
      if name == "find_or_create" then assert.equal("created", r[3], "find_or_create: how comes third") end
    end
    every_method(c, "Toast", order, calls, run, {
      iter_customer_credit_transactions = { cust.guid },
      iter_search_customers = { { lastName = cust.lastName } },
      iter_orders = { day_of_orders() },
    })
  end)
end)
