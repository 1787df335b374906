-- One naming scheme across both clients: verb, then noun; list_ is one page, iter_ a pager.
local H = require "helper"

local VERBS = { "get", "list", "iter", "search", "create", "update", "delete", "add", "find", "use",
                "merge", "wait", "plan", "login", "close", "batch", "backfill", "sync", "new" }

local function public_methods(client)
  local out = {}
  for name, v in pairs(getmetatable(client).__index) do
    if type(v) == "function" and not name:find("^_") then out[#out + 1] = name end
  end
  table.sort(out)
  return out
end

local OLD = { "customers_list", "customers_iter", "customers_show", "customers_create", "customers_amend",
              "customers_delete", "customers_search", "shops_list", "shops_show", "reservations_update",
              "memberships_show", "membership_programs_list", "contacts", "merge", "search_iter",
              "credit_summary", "credit_transactions", "credit_transaction", "customer_credit_transactions",
              "orders_bulk", "dining_options", "employees", "menus", "profile_set" }

describe("method names", function()
  it("start with a verb on both clients, and no old name is left", function()
    for _, client in ipairs { H.toast(), H.tablecheck() } do
      local methods = public_methods(client)
      assert.is_true(#methods > 10)
      for _, name in ipairs(methods) do
        local verb = name:match("^(%a+)")
        local ok = false
        for _, v in ipairs(VERBS) do ok = ok or verb == v end
        assert.is_true(ok, name .. " does not start with a known verb")
      end
      local index = getmetatable(client).__index
      for _, old in ipairs(OLD) do assert.is_nil(rawget(index, old), old) end
    end
  end)

  it("pair every iter_X with a list_X or search_X that returns one page", function()
    for _, client in ipairs { H.toast(), H.tablecheck() } do
      local index = getmetatable(client).__index
      for _, name in ipairs(public_methods(client)) do
        local rest = name:match("^iter_(.+)$")
        if rest then
          assert.is_truthy(index["list_" .. rest] or index[rest] or index["search_" .. rest:gsub("^search_", "")],
            name .. " has no one-page partner")
        end
      end
    end
  end)

  it("TableCheck search_customers returns the first page and its pagination", function()
    H.reset()
    H.tc_seed(250, "Page")
    local tc = H.tablecheck()
    local items, _, pagination = assert(tc:search_customers {})
    assert.equal(200, #items)
    assert.equal(250, pagination.total_results)
    assert.is_string(pagination.scroll_id)
    assert.equal(1, H.count("POST /api/crm/v1/customer_search"))
  end)
end)
