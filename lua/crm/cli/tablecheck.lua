-- `crm tablecheck ...`: customers, export, duplicates, merges, images and the read-mostly
-- resources, on crm.tablecheck's public API.
local output = require "crm.cli.output"
local input = require "crm.cli.input"
local inspect = require "crm.cli.inspect"

local M = {}

-- The resources beside customers: command name, the client's method names and an example id.
M.RESOURCES = {
  { command = "shops", title = "Shops.", list = "list_shops", iter = "iter_shops", get = "get_shop",
    example = "5ed64e279551e80639a4da51" },
  { command = "franchises", title = "Franchises.", list = "list_franchises", iter = "iter_franchises",
    get = "get_franchise", example = "5ed64e249551e80639a4d995" },
  { command = "reservations", title = "Reservations.", list = "list_reservations",
    iter = "iter_reservations", get = "get_reservation", params_on_show = true,
    create = "create_reservation", create_schema = "ReservationCreateParams",
    update = "update_reservation", update_schema = "ReservationUpdateParams",
    example = "5ed64e2c9551e80639a4dd01" },
  { command = "reservation-flags", title = "Reservation flags.", list = "list_reservation_flags",
    iter = "iter_reservation_flags", get = "get_reservation_flag", example = "5ed64e2b9551e80639a4dc01" },
  { command = "memberships", title = "Memberships.", list = "list_memberships", iter = "iter_memberships",
    get = "get_membership", create = "create_membership", create_schema = "MembershipCreateParams",
    update = "update_membership", update_schema = "MembershipUpdateParams",
    delete = "delete_membership", example = "5ed64e2a9551e80639a4db21" },
  { command = "membership-programs", title = "Membership programs.", list = "list_membership_programs",
    iter = "iter_membership_programs", get = "get_membership_program",
    example = "5ed64e2a9551e80639a4db01" },
}
local BY_COMMAND = {}
for _, r in ipairs(M.RESOURCES) do BY_COMMAND[r.command] = r end
local CUSTOMERS = { list = "list_customers", iter = "iter_customers", get = "get_customer",
  params_on_show = true, create = "create_customer", update = "update_customer", delete = "delete_customer" }

local function json_option(ctx, name, flag)
  local v = ctx.args[name]
  if v == nil then return {} end
  return input.data(v, flag)
end

local function stream(ctx, it, bar)
  for item, err in it do
    if item == false then
      output.flush()
      if bar then bar:finish() end
      return ctx:fail(err)
    end
    local code = ctx:line(item)
    if code ~= 0 then return code end
    if bar then bar:update(it.count, it.total) end
  end
  return 0
end

local function list(ctx, tc, r)
  local a = ctx.args
  local params, err = json_option(ctx, "params", "--params")
  if not params then return ctx:fail(err) end
  if a.page then params.page = a.page end
  if a.per_page then params.per_page = a.per_page end
  if a.all then return stream(ctx, tc[r.iter](tc, params)) end
  local items, lerr, pagination = tc[r.list](tc, params)
  if not items then return ctx:fail(lerr) end
  for _, item in ipairs(items) do
    local code = ctx:line(item)
    if code ~= 0 then return code end
  end
  -- The page's place in the whole goes to stderr: stdout holds only the items.
  if type(pagination) == "table" and next(pagination) ~= nil then
    local parts = {}
    for _, k in ipairs { "page", "per_page", "total_pages", "total_count", "total_results" } do
      local v = pagination[k]
      if v ~= nil then parts[#parts + 1] = k .. "=" .. output.text(v) end
    end
    if #parts > 0 then output.note("pagination: " .. table.concat(parts, " ")) end
  end
  return 0
end

local function resource(ctx, tc, r)
  local a = ctx.args
  local verb = a.verb
  if verb == "list" then return list(ctx, tc, r) end
  if verb == "show" then
    local params, err = json_option(ctx, "params", "--params")
    if not params then return ctx:fail(err) end
    if r.params_on_show then return ctx:result(tc[r.get](tc, a.id, params)) end
    return ctx:result(tc[r.get](tc, a.id))
  end
  if verb == "delete" then
    local ok, err = tc[r.delete](tc, a.id)
    if not ok then return ctx:result(nil, err) end
    return ctx:line { deleted = true, id = a.id }
  end
  local body, err = ctx:data()
  if err then return ctx:fail(err) end
  if not body then return ctx:fail(output.usage_error(verb .. " needs --data JSON (or @file, or -)", "data")) end
  if verb == "create" then return ctx:result(tc[r.create](tc, body)) end
  return ctx:result(tc[r.update](tc, a.id, body))
end

local function export(ctx, tc)
  local query, err = json_option(ctx, "query", "--query")
  if not query then return ctx:fail(err) end
  local it = tc:iter_search_customers(query)
  local bar = ctx:progress("export")
  ctx:trap_interrupt()
  local interrupted = false
  for c, cerr in it do
    if c == false then
      output.flush()
      bar:finish(("export stopped after %d customers"):format(it.count - 1 >= 0 and it.count or 0))
      return ctx:fail(cerr)
    end
    local code = ctx:line(c)
    if code ~= 0 then return code end
    bar:update(it.count, it.total)
    if ctx.interrupted() then
      interrupted = true
      break
    end
  end
  output.flush()
  if interrupted then
    bar:finish(("export interrupted: %d of %s customers written"):format(it.count, output.text(it.total or "?")))
    return output.EXIT.interrupted
  end
  bar:finish(("export: %d customers in %.1fs"):format(it.count, bar:elapsed()))
  return 0
end

-- from_file(path) -> an iterator of the customers of a JSON Lines file (an export) | nil, err
local function from_file(path)
  local f, ferr = io.open(path, "rb")
  if not f then return nil, output.usage_error("--from: " .. tostring(ferr), "from") end
  local n = 0
  return function()
    local l
    repeat
      l = f:read("*l")
      n = n + 1
    until l == nil or l:find("%S")
    if l == nil then
      f:close()
      return nil
    end
    local c = require("crm").json.decode(l)
    if type(c) ~= "table" then
      f:close()
      return false, output.usage_error("--from: line " .. n .. " is not one JSON object (a customer)", "from")
    end
    return c
  end
end

local function duplicates(ctx, tc)
  local a = ctx.args
  local query, err = json_option(ctx, "query", "--query")
  if not query then return ctx:fail(err) end
  if a.from then
    if a.query or a.restart_on_expiry then
      return ctx:fail(output.usage_error("--from reads the customers from a file: no --query or"
        .. " --restart-on-expiry with it", "from"))
    end
    query, err = from_file(a.from)
    if not query then return ctx:fail(err) end
  end
  local by = {}
  for b in tostring(a.by):gmatch("[^,%s]+") do by[#by + 1] = b end
  local bar = ctx:progress("duplicates: scanned")
  ctx:trap_interrupt()
  local groups, derr, stats = tc:find_duplicates(query, { by = by, restart_on_expiry = a.restart_on_expiry or nil,
                                                          on_progress = function(n, total)
    bar:update(n, total)
    if ctx.interrupted() then error("interrupted", 0) end
  end })
  if not groups then
    if ctx.interrupted() then
      bar:finish("duplicates interrupted: nothing written")
      return output.EXIT.interrupted
    end
    bar:finish()
    return ctx:fail(derr)
  end
  for _, g in ipairs(groups) do
    local code = ctx:line(g)
    if code ~= 0 then return code end
  end
  output.flush()
  bar:finish(("duplicates: %d customers scanned, %d groups"):format(stats.scanned, #groups))
  return 0
end

local function merge(ctx, tc)
  local a = ctx.args
  if ctx.dry_run then
    local plan, perr, report = tc:merge_customers(a.primary, a.secondaries, { dry_run = true })
    if not plan then return ctx:fail(perr) end
    local body = require("crm").json.encode(plan.body)
    output.note(inspect.describe(plan.method, plan.path, { "Authorization: <api key>",
      "Accept: application/json", "Content-Type: application/json" }, body, {}))
    return ctx:line { dry_run = true, method = plan.method, path = plan.path, body = plan.body,
                      report = report }
  end
  local wait = a.wait and { timeout = a.wait } or nil
  local merged, merr, report = tc:merge_customers(a.primary, a.secondaries, { wait = wait })
  if not merged then return ctx:fail(merr) end
  return ctx:line { merged = merged, report = report }
end

function M.run(ctx)
  local a = ctx.args
  local tc, err = ctx:tablecheck()
  if not tc then return ctx:fail(err) end
  local code
  if a.resource == "customers" then
    if a.verb == "export" then code = export(ctx, tc) else code = resource(ctx, tc, CUSTOMERS) end
  elseif a.resource == "duplicates" then
    code = duplicates(ctx, tc)
  elseif a.resource == "merge" then
    code = merge(ctx, tc)
  elseif a.resource == "images" then
    local images, ierr = tc:wait_for_images(a.customer_id, { timeout = a.max_wait })
    if not images then code = ctx:fail(ierr)
    else code = ctx:line { customer_id = a.customer_id, images = images } end
  else
    code = resource(ctx, tc, BY_COMMAND[a.resource])
  end
  tc:close()
  return code
end

return M
