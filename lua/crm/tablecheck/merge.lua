--- Merging TableCheck customers, and the shapes `merge_customers` and `find_duplicates` return.
-- The API merges records (PUT merge_customer_ids) but does not
-- combine their fields, so merge() reads everyone involved, resolves the fields, sends one PUT
-- and can wait for the asynchronous transfer. find_duplicates() makes groups merge() takes.
-- Call them as client methods: `TableCheck:merge_customers`, `TableCheck:wait_for_merge`,
-- `TableCheck:find_duplicates`. Also `require("crm.tablecheck").merge`.
-- @module crm.tablecheck.merge
local errors = require "crm.error"
local http = require "crm.http"
local retry = require "crm.retry"
local validate = require "crm.validate"
local contacts = require "crm.tablecheck.contacts"
local schema = require "crm.tablecheck.schema"

local M = {}

local type, pairs, ipairs, next, tostring = type, pairs, ipairs, next, tostring
local sort = table.sort
local fail = validate.fail
local null = http.null

--- What the default policy fills, as `{field on the Customer read, field of CustomerUpdateParams}`
-- pairs: the contract names several differently (alt_first_name is written as kanji_first_name,
-- gender as sex, allergies as allerges, ...).
-- Values replace the primary's, so its own are sent back unchanged.
-- @table FIELDS
M.FIELDS = {
  { "first_name", "first_name" }, { "last_name", "last_name" },
  { "alt_first_name", "kanji_first_name" }, { "alt_last_name", "kanji_last_name" },
  { "company_name", "company_name" }, { "company_title", "title" },
  { "company_division", "division" }, { "gender", "sex" }, { "locale", "locale" },
  { "memo", "memo" }, { "parent_shop_id", "parent_shop_id" },
  { "tags", "tags" }, { "likes", "likes" }, { "dislikes", "dislikes" },
  { "allergies", "allerges" },
}
local SEX = { male = 1, female = 2 }
--- Nested lists that are appended to, not replaced: taken from a secondary only when the primary
-- has none, copied without ids and with only the fields the write side takes
-- (`{[list] = {field, ...}}` for `addresses`, `socials`, `events`).
-- @table NESTED
M.NESTED = {
  addresses = { "tag", "street", "street2", "city", "region", "postal_code", "country" },
  socials = { "service", "username" },
  events = { "tag", "date", "months", "day", "memo" },
}

local function nonempty(v)
  if v == nil or v == null then return false end
  if type(v) == "string" then return v:find("%S") ~= nil end
  if type(v) == "table" then return next(v) ~= nil end
  return true
end

local function same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do
    if not same(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

-- A list from an answer, or an empty one when the field is absent or not a table.
local NONE = {}
local function items(v) return type(v) == "table" and v or NONE end

-- A nested list as the write side takes it: objects without ids, only `keys`; nil when empty.
local function copy_nested(list, keys)
  local out = {}
  for _, o in ipairs(items(list)) do
    if type(o) == "table" then
      local c = {}
      for _, k in ipairs(keys) do c[k] = o[k] end
      out[#out + 1] = c
    end
  end
  return out[1] and out or nil
end

-- The first customer (primary first) whose value(c[name]) is not nil, that value, and a
-- conflict record when later customers hold other values (report.conflicts).
local function pick(all, name, field, value)
  local chosen, kept, conflict
  for _, c in ipairs(all) do
    local v = value(c[name])
    if v ~= nil then
      if not chosen then
        chosen, kept = c, v
      elseif not same(kept, v) then
        conflict = conflict or { field = field, kept = chosen.id, value = kept, others = {} }
        conflict.others[#conflict.others + 1] = { customer_id = c.id, value = v }
      end
    end
  end
  return chosen, kept, conflict
end

local function present(v) return nonempty(v) and v or nil end

-- Union of one contact kind across customers, primary first, in normal form. Values that have
-- no normal form go to report.skipped: the merge overwrites the list, so they would be lost.
local function union(all, kind, normalize, report)
  local seen, list = {}, {}
  for _, c in ipairs(all) do
    local values = c[kind]
    if values ~= nil and type(values) ~= "table" then
      report.skipped[#report.skipped + 1] = { field = kind, customer_id = c.id, value = values,
        rule = "not an array" }
    end
    for _, v in ipairs(items(values)) do
      local n = normalize(v)
      if not n then
        report.skipped[#report.skipped + 1] = { field = kind, customer_id = c.id, value = v,
          rule = kind == "phones" and "not an E.164 number" or "not an email address" }
      elseif not seen[n] then
        seen[n] = true
        list[#list + 1] = n
        report[kind][#report[kind] + 1] = { value = n, from = c.id }
      end
    end
  end
  return list
end

--- The report of a merge: what `merge_customers` returns second (with `dry_run` too), what a
-- `resolve` function receives, and `err.report` when the PUT fails.
-- @table MergeReport
-- @tfield table fields `fields[field] = id` of the customer the value came from, by the field
-- sent (`"union"` for phones and emails)
-- @tfield {table,...} conflicts `{field, kept = id, value, others = {{customer_id, value}}}`:
-- values of the secondaries that lose to an earlier customer's (nested lists included: they
-- come from one customer, without ids)
-- @tfield {table,...} phones `{value, from = id}` in the order sent (E.164)
-- @tfield {table,...} emails `{value, from = id}` in the order sent (normalised)
-- @tfield {table,...} skipped `{field, customer_id, value, rule}`: values without a normal form
-- (not E.164 / not an email), which the overwritten lists would lose
-- @tfield string primary_id
-- @tfield {string,...} secondary_ids
-- @tfield MergeRequest request the PUT sent (or planned, with `dry_run`)
-- @tfield[opt] boolean dry_run `true` with `dry_run`: nothing was sent
-- @tfield[opt] boolean custom `true` when a `resolve` function decided

--- The planned request: `merge_customers` with `dry_run = true` returns it first (it is also
-- `report.request`).
-- @table MergeRequest
-- @tfield string method `"PUT"`
-- @tfield string path `"/customers/PRIMARY_ID"` (under `base_url`)
-- @tfield table body the checked CustomerUpdateParams: the resolved fields, `overwrite_phones`/
-- `overwrite_emails` when the union is sent, and `merge_customer_ids`

--- The default policy: the PUT body and the report for a merge (what `resolve` receives).
-- Returns the PUT body (without merge_customer_ids) and the report:
-- report.fields[field] = id of the customer the value came from, by the field sent ("union" for
-- phones/emails); report.conflicts = { {field, kept = id, value, others = { {customer_id,
-- value} }} }: values of the secondaries that lose to an earlier customer's (nested lists
-- included: they come from one customer, without ids); report.phones, report.emails =
-- { {value, from = id} } in the order sent; report.skipped = values without a normal form (not
-- E.164 / not an email); merge() refuses to drop them unless a resolve function decides.
-- @tparam table primary the primary customer, as read
-- @tparam {table,...} secondaries the secondaries, as read
-- @treturn table the body (CustomerUpdateParams, without `merge_customer_ids`)
-- @treturn MergeReport the report (without `primary_id`, `secondary_ids`, `request`)
function M.default_plan(primary, secondaries)
  local all = { primary }
  for i = 1, #secondaries do all[i + 1] = secondaries[i] end
  local body = {}
  local report = { fields = {}, conflicts = {}, phones = {}, emails = {}, skipped = {} }
  local function note(conflict)
    if conflict then report.conflicts[#report.conflicts + 1] = conflict end
  end
  for _, pair in ipairs(M.FIELDS) do
    local name, write = pair[1], pair[2]
    local chosen, v, conflict = pick(all, name, write, present)
    if write == "sex" and v ~= nil then v = SEX[v] end
    if v ~= nil then
      body[write] = v
      report.fields[write] = chosen.id
    end
    note(conflict)
  end
  local nested = {}
  for name in pairs(M.NESTED) do nested[#nested + 1] = name end
  sort(nested)
  for _, name in ipairs(nested) do
    local keys = M.NESTED[name]
    local chosen, list, conflict = pick(all, name, name, function(x) return copy_nested(x, keys) end)
    if chosen then report.fields[name] = chosen.id end
    -- The primary's own list stays as it is; sending it again would append a second copy.
    if chosen and chosen ~= primary then body[name] = list end
    note(conflict)
  end
  for _, c in ipairs(all) do contacts.expose(c) end
  local phones = union(all, "phones", contacts.normalize_phone, report)
  if #phones > 0 then
    body.phones, body.overwrite_phones = phones, true
    report.fields.phones = "union"
  end
  local emails = union(all, "emails", contacts.normalize_email, report)
  if #emails > 0 then
    body.emails, body.overwrite_emails = emails, true
    report.fields.emails = "union"
  end
  return body, report
end

-- primary_id and a non-empty array of distinct other ids.
local function check_ids(primary_id, secondary_ids)
  local e = validate.id(primary_id, "primary_id")
  if e then return e end
  if type(secondary_ids) ~= "table" then
    return fail("secondary_ids", "must be an array of customer ids")
  end
  local n = #secondary_ids
  for k in pairs(secondary_ids) do
    if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then
      return fail("secondary_ids", "must be an array of customer ids")
    end
  end
  if n == 0 then return fail("secondary_ids", "must list at least one customer to merge") end
  local seen = {}
  for i, id in ipairs(secondary_ids) do
    local f = "secondary_ids[" .. i .. "]"
    e = validate.id(id, f)
    if e then return e end
    -- They travel in merge_customer_ids, which takes TableCheck ids only.
    if not schema.is_object_id(id) then return fail(f, "must be a 24-character hex customer id") end
    if id == primary_id then
      return fail(f, "is the primary customer: a customer cannot be merged into itself")
    end
    if seen[id] then return fail(f, "repeats secondary_ids[" .. seen[id] .. "]") end
    seen[id] = i
  end
  return nil
end

-- Reads one customer for a merge; a 404 says which argument named it.
local function read(client, id, field)
  local c, err = client:get_customer(id)
  if c then return c end
  if err.status == 404 then
    err.message = "the customer named by " .. field .. " does not exist (a customer merged before"
      .. " is destroyed; merged_customer_ids of the one it went into says so), so no merge was sent: "
      .. err.message
    err.field, err.ids = field, { id }
  end
  return nil, err
end

-- Ids among `wanted` that reservations or memberships still name (the transfer is asynchronous).
local function still_linked(client, secondary_ids)
  local wanted = {}
  for _, id in ipairs(secondary_ids) do wanted[id] = true end
  local left, seen = {}, {}
  local function note(id)
    id = tostring(id)
    if wanted[id] and not seen[id] then
      seen[id] = true
      left[#left + 1] = id
    end
  end
  for r, err in client:iter_reservations { customer_ids = secondary_ids } do
    if r == false then return nil, err end
    for _, id in ipairs(items(r.customer_ids)) do note(id) end
    if r.primary_customer_id then note(r.primary_customer_id) end
  end
  for m, err in client:iter_memberships { customer_ids = secondary_ids } do
    if m == false then return nil, err end
    for _, id in ipairs(items(m.customer_ids)) do note(id) end
    for _, c in ipairs(items(m.customers)) do
      if type(c) == "table" and c.id then note(c.id) end
    end
  end
  return left
end

--- `TableCheck:wait_for_merge`, as a function of the client.
-- Done when the primary's merged_customer_ids holds every secondary and no reservation or
-- membership still names one.
-- @tparam crm.tablecheck.TableCheck client the client
-- @tparam string primary_id
-- @tparam {string,...} secondary_ids
-- @tparam[opt] table opts `{timeout = 300, interval = 0.25, max_interval = 5}`
-- @treturn[1] table the primary customer
-- @return[2] `nil`
-- @treturn[2] Error as for `TableCheck:wait_for_merge` (`code = "merge_pending"`, `ids`, `stage`)
function M.wait(client, primary_id, secondary_ids, opts)
  local e = check_ids(primary_id, secondary_ids) or validate.wait_options(opts, "options")
  if e then return nil, e end
  opts = opts or {}
  local timeout = opts.timeout or 300
  local customer, err, state = retry.poll(client.clock,
    { timeout = timeout, interval = opts.interval, max_interval = opts.max_interval },
    function()
      local c, cerr = client:get_customer(primary_id)
      if not c then return nil, cerr end
      local merged = {}
      for _, id in ipairs(items(c.merged_customer_ids)) do merged[tostring(id)] = true end
      local missing = {}
      for _, id in ipairs(secondary_ids) do
        if not merged[id] then missing[#missing + 1] = id end
      end
      if #missing > 0 then return nil, nil, { stage = "merged_customer_ids", ids = missing } end
      local left, lerr = still_linked(client, secondary_ids)
      if not left then return nil, lerr end
      if #left > 0 then return nil, nil, { stage = "associated_objects", ids = left } end
      return c
    end)
  if customer then return customer end
  if err then return nil, err end
  local what = state.stage == "merged_customer_ids"
    and " not yet in the primary's merged_customer_ids"
    or " still named by reservations or memberships"
  return nil, errors.new("timeout", "merge not finished after " .. timeout .. "s: "
    .. #state.ids .. " secondary customer(s)" .. what, { code = "merge_pending", ids = state.ids,
    stage = state.stage })
end

local MERGE_OPTIONS = { resolve = true, dry_run = true, wait = true }

-- The default plan overwrites phones and emails with their union, and the secondaries are
-- destroyed: a value without a normal form (report.skipped) would be lost unless it is the
-- primary's and its list is left alone. Such a merge is refused until a resolve function
-- decides. -> nil | err (no values in the text: they are PII)
local function would_drop(primary, body, report)
  local ids, seen, n, field = {}, {}, 0, nil
  for _, s in ipairs(report.skipped) do
    if s.customer_id ~= primary.id or body["overwrite_" .. s.field] then
      local id = tostring(s.customer_id)
      if not seen[id] then
        seen[id] = true
        ids[#ids + 1] = id
      end
      n, field = n + 1, field or s.field
    end
  end
  if n == 0 then return nil end
  return errors.attach(errors.new("validation", "the merge would lose " .. n .. " phone or email"
    .. " value(s) that are not E.164 numbers or email addresses (customers in ids), so nothing was"
    .. " sent; pass resolve to decide what to keep (report.skipped, one of its arguments, lists"
    .. " them)", { field = field, code = "merge_would_lose_values", ids = ids }), "report", report)
end

local merge_locked

-- res, report | nil, err -> res, nil, report | nil, err: the library's one convention (the second
-- value is the error, and only that).
local function third(res, second)
  if res == nil then return nil, second end
  return res, nil, second
end

--- `TableCheck:merge_customers`, as a function of the client.
-- opts.resolve(primary, secondaries, body, report) -> fields [, report]: replaces the policy;
-- `body`/`report` are the default plan, which it may edit and return. Return nil, err to stop.
-- opts.dry_run = true: read and resolve, return {method, path, body} without sending the PUT.
-- opts.wait = true | {timeout, interval, max_interval}: after the PUT, wait_for_merge.
-- @tparam crm.tablecheck.TableCheck client the client
-- @tparam string primary_id
-- @tparam {string,...} secondary_ids
-- @tparam[opt] table opts `{resolve, dry_run, wait}`
-- @treturn[1] table the merged customer
-- @return[1] `nil` (no error)
-- @treturn[1] MergeReport the report
-- @treturn[2] MergeRequest with `dry_run`: the planned request (nothing sent)
-- @return[2] `nil` (no error)
-- @treturn[2] MergeReport with `dry_run`: the report
-- @return[3] `nil`
-- @treturn[3] Error as for `TableCheck:merge_customers`
function M.merge(client, primary_id, secondary_ids, opts)
  local e = check_ids(primary_id, secondary_ids) or validate.table(opts, "options")
  if e then return nil, e end
  if opts == nil or not opts.dry_run then
    -- Merges that share a customer take turns (crm.flight, per client): one reads its records
    -- only after another that touches them has finished, so no merge is planned from a record
    -- that another merge is changing or destroying.
    local keys = { "tc:merge:" .. primary_id }
    for i, id in ipairs(secondary_ids) do keys[i + 1] = "tc:merge:" .. id end
    local locks = client:_locks()
    local held, lerr = locks:acquire(keys, { ttl = client:_flight_ttl() })
    if not held then return nil, lerr end
    local ok, r1, r2 = pcall(merge_locked, client, primary_id, secondary_ids, opts, locks, held)
    locks:release(held)
    if not ok then error(r1, 0) end
    return third(r1, r2)
  end
  return third(merge_locked(client, primary_id, secondary_ids, opts))
end

function merge_locked(client, primary_id, secondary_ids, opts, locks, held)
  local e = check_ids(primary_id, secondary_ids) or validate.table(opts, "options")
  if e then return nil, e end
  opts = opts or {}
  e = validate.known_keys(opts, MERGE_OPTIONS) or validate.boolean(opts.dry_run, "dry_run")
  if e then return nil, e end
  if opts.resolve ~= nil and type(opts.resolve) ~= "function" then
    return nil, fail("resolve", "must be a function")
  end
  if opts.wait ~= nil and opts.wait ~= true and opts.wait ~= false then
    e = validate.wait_options(opts.wait, "wait")
    if e then return nil, e end
  end

  local primary, err = read(client, primary_id, "primary_id")
  if not primary then return nil, err end
  local secondaries = {}
  for i, id in ipairs(secondary_ids) do
    secondaries[i], err = read(client, id, "secondary_ids[" .. i .. "]")
    if not secondaries[i] then return nil, err end
  end

  local body, report = M.default_plan(primary, secondaries)
  if opts.resolve then
    local ok, fields, custom = pcall(opts.resolve, primary, secondaries, body, report)
    if not ok then
      return nil, fail("resolve", "raised an error, so nothing was merged: " .. tostring(fields))
    end
    if fields == nil then
      if errors.is(custom) then return nil, custom end
      return nil, fail("resolve", "returned no fields; nothing was merged")
    end
    if type(fields) ~= "table" then return nil, fail("resolve", "must return a table of fields") end
    if fields.merge_customer_ids ~= nil then
      return nil, fail("merge_customer_ids", "is set by merge from secondary_ids; leave it out")
    end
    local edited = fields == body -- the default plan, changed in place
    body = {}
    for k, v in pairs(fields) do body[k] = v end
    if type(custom) == "table" then
      report = custom
    elseif not edited then
      report = { fields = {}, conflicts = {}, phones = {}, emails = {}, skipped = {} }
    end
    report.custom = true
  else
    e = would_drop(primary, body, report)
    if e then return nil, e end
  end
  local ids = {}
  for i, id in ipairs(secondary_ids) do ids[i] = id end
  body.merge_customer_ids = ids
  local checked
  checked, e = schema.body("customer_update", body)
  if not checked then return nil, e end

  report.primary_id, report.secondary_ids = primary_id, ids
  report.request = { method = "PUT", path = "/customers/" .. http.escape(primary_id), body = checked }
  if opts.dry_run then
    report.dry_run = true
    return report.request, report
  end
  -- Not repeatable: once the secondaries are destroyed a second PUT fails, so a lost answer is
  -- reported as an unknown outcome rather than retried.
  local merged
  if locks then locks:extend(held, client:_flight_ttl()) end
  merged, err = client:_write("customers", "PUT", primary_id, checked, false)
  if not merged then
    errors.attach(err, "report", report)
    return nil, err
  end
  if opts.wait then
    local done
    if locks then
      local w = type(opts.wait) == "table" and opts.wait.timeout or 30
      locks:extend(held, w + client:_flight_ttl())
    end
    done, err = M.wait(client, primary_id, ids, opts.wait ~= true and opts.wait or nil)
    if not done then
      errors.attach(err, "customer", merged)
      errors.attach(err, "report", report)
      err.message = "the merge was accepted, but " .. err.message
      return nil, err
    end
    merged = done
  end
  return merged, report
end

-- ---- duplicates ----

local DUP_OPTIONS = { by = true, restart_on_expiry = true, on_progress = true }

--- A group of duplicates, as `find_duplicates` returns them.
-- Ids are ordered oldest first by created_at (ties: the order the search returned them), so
-- primary is the oldest and merge(g.primary, g.secondaries) keeps it.
-- @table DuplicateGroup
-- @tfield string primary the oldest customer's id (`ids[1]`)
-- @tfield {string,...} secondaries the others, oldest first (`ids[2..]`)
-- @tfield {string,...} ids every customer of the group, oldest first
-- @tfield {table,...} reasons `{by = "email"|"phone", value, ids}`: each normalised email or
-- phone shared, and the ids that share it (sorted by `by`, then `value`)

--- What `find_duplicates` returns third (`groups, nil, stats`).
-- @table DuplicateStats
-- @tfield number scanned customers read
-- @tfield[opt] number total the search's `total_results`

--- `TableCheck:find_duplicates`, as a function of the client.
-- Reads every customer the search matches (iter_search_customers) and groups the ones that share a
-- normalised email or E.164 phone, transitively.
-- @tparam crm.tablecheck.TableCheck client the client
-- @tparam[opt] table query CustomerSearchParams
-- @tparam[opt] table opts `{by = {"email", "phone"}, restart_on_expiry, on_progress}`
-- @treturn[1] {DuplicateGroup,...} the groups, sorted by `primary`
-- @return[1] `nil` (no error)
-- @treturn[1] DuplicateStats `{scanned, total}`
-- @return[2] `nil`
-- @treturn[2] Error as for `TableCheck:find_duplicates`
function M.find_duplicates(client, query, opts)
  local e = validate.table(opts, "options")
  if e then return nil, e end
  opts = opts or {}
  e = validate.known_keys(opts, DUP_OPTIONS) or validate.table(opts.by, "by")
  if e then return nil, e end
  local on_progress = opts.on_progress
  if on_progress ~= nil and type(on_progress) ~= "function" then
    return nil, fail("on_progress", "must be a function(scanned, total)")
  end
  local by = { email = true, phone = true }
  if opts.by then
    by = {}
    for i, b in ipairs(opts.by) do
      e = validate.enum(b, "by[" .. i .. "]", { "email", "phone" })
      if e then return nil, e end
      by[b] = true
    end
    if next(by) == nil then return nil, fail("by", "must name email, phone or both") end
  end

  local parent, created, order, owner, members = {}, {}, {}, {}, {}
  local function find(x)
    while parent[x] ~= x do
      parent[x] = parent[parent[x]]
      x = parent[x]
    end
    return x
  end
  local function link(key, id)
    local first = owner[key]
    if not first then
      owner[key], members[key] = id, { id }
    elseif first ~= id then
      local list = members[key]
      if list[#list] ~= id then list[#list + 1] = id end
      local a, b = find(first), find(id)
      if a ~= b then parent[b] = a end
    end
  end

  -- The customers: a search (query, or nil for everyone), or any iterator of customers the
  -- caller already holds (an export's lines read back, a pager), so nothing is read twice.
  local it
  local count = 0
  local mt = type(query) == "table" and getmetatable(query) or nil
  if type(query) == "function" or (mt and type(mt) == "table" and mt.__call) then
    if opts.restart_on_expiry ~= nil then
      return nil, fail("restart_on_expiry", "applies to the search find_duplicates runs, not to customers"
        .. " passed in as an iterator")
    end
    it = query
  else
    it = client:iter_search_customers(query or {}, { restart_on_expiry = opts.restart_on_expiry })
  end
  for c, err in it do
    if c == false then
      if err and err.code == "scroll_expired" or (err and err.scroll_lost) then
        -- The iterator's hint names its own option; here the option is find_duplicates'.
        err.message = (err.message:gsub("; start the search again, or pass restart_on_expiry.*$", ""))
          .. "; call find_duplicates again, or pass it restart_on_expiry = true to start the search over"
          .. " by itself (customers already read are not read twice)"
      end
      return nil, err
    end
    count = count + 1
    if type(c) ~= "table" then
      return nil, fail("customers", "the iterator gave a " .. type(c) .. " as customer " .. count
        .. " (a customer table, nil at the end, or false, err)")
    end
    local total = type(it) == "table" and it.total or nil
    if on_progress then
      -- A raising callback (a caller's Ctrl-C, say) stops the scan like a failed page would.
      local ok, msg = pcall(on_progress, count, total)
      if not ok then
        return nil, errors.new("validation", "on_progress raised an error: " .. tostring(msg),
          { field = "on_progress" })
      end
    end
    local id = c.id and tostring(c.id)
    if id and not parent[id] then
      parent[id] = id
      order[id] = count
      created[id] = type(c.created_at) == "string" and c.created_at or ""
      if by.email then
        for _, v in ipairs(c.emails or {}) do
          local n = contacts.normalize_email(v)
          if n then link("email\0" .. n, id) end
        end
      end
      if by.phone then
        for _, v in ipairs(c.phones or {}) do
          local n = contacts.normalize_phone(v)
          if n then link("phone\0" .. n, id) end
        end
      end
    end
  end

  local by_root = {}
  for id in pairs(parent) do
    local r = find(id)
    if r ~= id then
      local g = by_root[r] or { ids = { r }, reasons = {} }
      by_root[r] = g
      g.ids[#g.ids + 1] = id
    end
  end
  for key, list in pairs(members) do
    if #list > 1 then
      local kind, value = key:match("^(%a+)%z(.*)$")
      local g = by_root[find(list[1])]
      g.reasons[#g.reasons + 1] = { by = kind, value = value, ids = list }
    end
  end
  local groups = {}
  for _, g in pairs(by_root) do
    sort(g.ids, function(a, b)
      if created[a] ~= created[b] then return created[a] < created[b] end
      return order[a] < order[b]
    end)
    g.primary = g.ids[1]
    g.secondaries = {}
    for i = 2, #g.ids do g.secondaries[i - 1] = g.ids[i] end
    sort(g.reasons, function(a, b)
      if a.by ~= b.by then return a.by < b.by end
      return a.value < b.value
    end)
    groups[#groups + 1] = g
  end
  sort(groups, function(a, b) return a.primary < b.primary end)
  -- Arrays to crm.json, so an export of the groups writes [] where there are none.
  return require("crm.json").array(groups), nil, { scanned = count, total = type(it) == "table" and it.total or nil }
end

return M
