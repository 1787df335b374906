-- The 0.1.0 method names and their 0.2.0 names, as data (CHANGELOG.md's rename table; a spec
-- checks the two agree). A client class looks a missing method up here, so calling an old name
-- raises an error that names the new method instead of "attempt to call a nil value".
local M = {}

M.tablecheck = {
  customers_list = "list_customers", customers_iter = "iter_customers", customers_show = "get_customer",
  customers_create = "create_customer", customers_amend = "update_customer",
  customers_delete = "delete_customer", customers_search = "iter_search_customers",
  shops_list = "list_shops", shops_iter = "iter_shops", shops_show = "get_shop",
  franchises_list = "list_franchises", franchises_iter = "iter_franchises", franchises_show = "get_franchise",
  reservations_list = "list_reservations", reservations_iter = "iter_reservations",
  reservations_show = "get_reservation", reservations_create = "create_reservation",
  reservations_update = "update_reservation",
  reservation_flags_list = "list_reservation_flags", reservation_flags_iter = "iter_reservation_flags",
  reservation_flags_show = "get_reservation_flag",
  memberships_list = "list_memberships", memberships_iter = "iter_memberships",
  memberships_show = "get_membership", memberships_create = "create_membership",
  memberships_update = "update_membership", memberships_delete = "delete_membership",
  membership_programs_list = "list_membership_programs", membership_programs_iter = "iter_membership_programs",
  membership_programs_show = "get_membership_program",
  contacts = "plan_contacts", merge = "merge_customers",
}

M.toast = {
  search_iter = "iter_search_customers", credit_summary = "get_credit_summary",
  customer_credit_transactions = "list_customer_credit_transactions",
  customer_credit_transactions_iter = "iter_customer_credit_transactions",
  credit_transactions = "list_credit_transactions", credit_transactions_iter = "iter_credit_transactions",
  credit_transaction = "get_credit_transaction",
  orders_bulk = "list_orders", orders_bulk_iter = "iter_orders",
  dining_options = "list_dining_options", employees = "list_employees", menus = "get_menus",
  menu_items = "list_menu_items", guest_context = "get_guest_context", profile_set = "new_profile_set",
}

-- guard(methods, kind): a 0.1.0 name of the class reads as a function that raises when called,
-- naming the new method (at the caller's line; inside client:batch the raise becomes the
-- operation's error like any other); any other missing key is nil as before.
-- The function an old name reads as. Made here, not inside __index: a function that makes a
-- closure closes upvalues on every return (bytecode UCLO), which LuaJIT does not compile, and
-- __index runs on every lookup of a field a client lacks, inside nginx's hot path too.
local function raiser(kind, old, new)
  return function()
    error("crm: " .. kind .. " client method '" .. old .. "' was renamed to '" .. new
      .. "' in 0.2.0 (CHANGELOG.md lists every rename)", 2)
  end
end

function M.guard(methods, kind)
  local names = M[kind]
  return setmetatable(methods, { __index = function(_, k)
    local new = names[k]
    if new then return raiser(kind, k, new) end
    return nil
  end })
end

return M
