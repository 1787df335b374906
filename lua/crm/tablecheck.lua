-- TableCheck CRM v1: every operation of the OpenAPI contract (customers, shops, franchises,
-- reservations, reservation flags, memberships, membership programs), paging iterators, the
-- customer_search scroll iterator, and the flows built on them (contacts, merge, images).
local client = require "crm.client"
local errors = require "crm.error"
local http = require "crm.http"
local pager = require "crm.pager"
local validate = require "crm.validate"
local retry = require "crm.retry"
local contacts = require "crm.tablecheck.contacts"
local images = require "crm.tablecheck.images"
local merge = require "crm.tablecheck.merge"
local schema = require "crm.tablecheck.schema"

local M = {}
local TableCheck = {}
local MT = client.class(TableCheck)

local type, ipairs, next, concat = type, ipairs, next, table.concat
local escape = http.escape

M.DEFAULT_BASE_URL = "https://api.tablecheck.com/api/crm/v1"
M.MAX_PER_PAGE = schema.MAX_PER_PAGE               -- per_page limit of every list endpoint
M.CUSTOMERS_MAX_PAGES = schema.CUSTOMERS_MAX_PAGES -- GET /customers serves pages 0..9 only
M.SEARCH_PAGE_SIZE = 200                           -- customer_search answers 200 at a time
M.SCROLL_TTL = 300                                 -- a scroll_id unused for 5 minutes expires

M.contacts, M.images, M.merge, M.schema = contacts, images, merge, schema

local KNOWN = { api_key = true, clock = true, scroll_ttl = true }

-- TableCheck's error body: {errors = [{code, message}, ...]}.
local function parse_error(body)
  local list = body.errors
  if type(list) ~= "table" then
    return type(body.message) == "string" and body.message or nil
  end
  local messages, code, field = {}, nil, nil
  for _, e in ipairs(list) do
    if type(e) == "table" then
      if type(e.message) == "string" then messages[#messages + 1] = e.message end
      code = code or (type(e.code) == "string" and e.code or nil)
      field = field or (type(e.field) == "string" and e.field or nil)
    end
  end
  return #messages > 0 and concat(messages, "; ") or nil, nil, code, field
end

local function check_clock(c)
  if c == nil then return nil end
  if type(c) ~= "table" or type(c.now) ~= "function" or type(c.sleep) ~= "function" then
    return validate.fail("clock", "must be a table with now() and sleep(seconds) functions")
  end
  return nil
end

--[[ crm.tablecheck{ api_key, base_url = M.DEFAULT_BASE_URL, clock, scroll_ttl = 300, ... }
  -> client | nil, err
  api_key    sent as the raw Authorization header (ApiKeyAuth); scrubbed from error text, so
             it must be at least 4 bytes (and ASCII, as every header value)
  clock      {now = fn, sleep = fn}: replaces the monotonic clock for retries, scroll expiry and
             the waits (merge, images); for tests and schedulers
  scroll_ttl seconds a customer_search scroll_id stays usable between pages (TableCheck: 300)
  and the options every client takes (timeout, retry, transport, ...; see crm.client). ]]
function M.new(opts)
  if type(opts) ~= "table" then return nil, validate.fail("options", "must be a table") end
  local o = {}
  for k, v in next, opts do o[k] = v end
  if o.base_url == nil then o.base_url = M.DEFAULT_BASE_URL end
  local self = setmetatable({}, MT)
  local ok, err = client.init(self, o, KNOWN, parse_error)
  if not ok then return nil, err end
  -- A key shorter than 4 bytes could not be told from other text, so it could not be scrubbed
  -- from error messages (crm.error redacts secrets of 4 bytes and more).
  err = validate.header_value(o.api_key, "api_key", { min = 4 })
    or validate.number(o.scroll_ttl, "scroll_ttl", { gt = 0, max = 86400 })
    or check_clock(o.clock)
  if err then
    self:close()
    return nil, err
  end
  if o.clock then
    self.clock = o.clock
    self.policy.clock = o.clock
  end
  self.scroll_ttl = o.scroll_ttl or M.SCROLL_TTL
  self._timeout = o.timeout
  self.engine:set_secret(1, o.api_key)
  -- The header lines carry the key, so they live in the private table, not on the client.
  local private = client.private(self)
  private.headers = { "Authorization: " .. o.api_key, "Accept: application/json" }
  private.body_headers = { private.headers[1], private.headers[2], "Content-Type: application/json" }
  return self
end

-- One call under the retry policy. `idempotent` = false: retried only if it never left here.
-- settle(err) -> res | nil, err: may turn an attempt's error into a result.
function TableCheck:_call(req, idempotent, settle)
  if self._closed then return nil, client.closed_error() end
  local private = client.private(self)
  req.headers = req.body ~= nil and private.body_headers or private.headers
  req.shape = "object"
  req.idempotent = idempotent
  local engine = self.engine
  return self.policy:run(function()
    local res, err = engine:send(req)
    if err and settle then return settle(err) end
    return res, err
  end, idempotent)
end

-- ---- resources: path, list key, item key, id name ----

-- The contract wraps shops, franchises, reservation flags and memberships in a `reservation`
-- key (and lists memberships under `reservations`), evidently copied from reservations; the
-- resource's own name is read first and the contract's spelling is accepted too.
local RESOURCES = {
  customers = { path = "/customers", many = { "customers" }, one = { "customer" },
                id = "customer_id", max_pages = M.CUSTOMERS_MAX_PAGES },
  shops = { path = "/shops", many = { "shops" }, one = { "shop", "reservation" }, id = "shop_id" },
  franchises = { path = "/franchises", many = { "franchises" }, one = { "franchise", "reservation" },
                 id = "franchise_id" },
  reservations = { path = "/reservations", many = { "reservations" }, one = { "reservation" },
                   id = "reservation_id" },
  reservation_flags = { path = "/reservation_flags", many = { "reservation_flags" },
                        one = { "reservation_flag", "reservation" }, id = "reservation_flag_id" },
  memberships = { path = "/memberships", many = { "memberships", "reservations" },
                  one = { "membership", "reservation" }, id = "membership_id" },
  membership_programs = { path = "/membership_programs", many = { "membership_programs" },
                          one = { "membership_program" }, id = "membership_program_id" },
}

local function decode_error(res, message)
  return errors.new("decode", message, { status = res.status })
end

-- An object (want_array: an array) under one of `keys` of the response body.
local function unwrap(res, keys, want_array)
  local data = res.data
  if type(data) == "table" then
    for _, k in ipairs(keys) do
      local v = data[k]
      if type(v) == "table" and (not want_array or v[1] ~= nil or next(v) == nil) then return v end
    end
  end
  return nil, decode_error(res, "response has no " .. keys[1] .. (want_array and " array" or " object"))
end

-- Checks one object of an answer: a table with named fields; for customers the contact lists
-- are arrays (and both shapes are offered, see contacts.expose). -> item | nil, err
local function prepare(res, name, item)
  if type(item) ~= "table" or item[1] ~= nil then
    return nil, decode_error(res, "response has a " .. name .. " entry that is not an object")
  end
  if name == "customers" then
    local ok, field = contacts.expose(item)
    if not ok then
      return nil, decode_error(res, "response has a customer whose " .. field .. " is not an array")
    end
  end
  return item
end

-- The array under one of `keys`, every item checked by prepare. -> items | nil, err
local function unwrap_items(res, name, keys)
  local items, err = unwrap(res, keys, true)
  if not items then return nil, err end
  for i = 1, #items do
    local ok
    ok, err = prepare(res, name, items[i])
    if not ok then return nil, err end
  end
  return items
end

local function pagination_of(res)
  local p = res.data.pagination
  return type(p) == "table" and p or {}
end

-- One page of a list endpoint: items, pagination | nil, err.
local function fetch_page(self, name, query)
  local r = RESOURCES[name]
  local res, err = self:_call({ method = "GET", path = r.path, query = query }, true)
  if not res then return nil, err end
  local items
  items, err = unwrap_items(res, name, r.many)
  if not items then return nil, err end
  return items, pagination_of(res)
end

local function list(self, name, params)
  local query, err = schema.query(name, params)
  if not query then return nil, err end
  return fetch_page(self, name, query)
end

-- A pager over page/per_page (per_page 1000 unless given); stops at a short page. Where the
-- endpoint serves a limited number of pages (GET /customers: 10) and the last one was full, it
-- yields a list_limit error rather than stop as if it had read everything.
local function iter(self, name, params)
  local query, err = schema.query(name, params)
  if not query then return pager.failed(err) end
  local r = RESOURCES[name]
  local per_page = query.per_page or M.MAX_PER_PAGE
  query.per_page = per_page
  return pager.new(function(p)
    if r.max_pages and p.page >= r.max_pages then
      p.truncated = true
      return nil, errors.new("validation", "GET " .. r.path .. " serves at most " .. r.max_pages
        .. " pages of " .. per_page .. " and the last one was full, so more may exist; use"
        .. " iter_search_customers to read them all", { code = "list_limit", field = "page" })
    end
    query.page = p.page
    local items, ferr = fetch_page(self, name, query)
    if not items then return nil, ferr end
    p.page = p.page + 1
    return items, #items < per_page
  end, { page = query.page or 0, per_page = per_page, truncated = false })
end

-- GET one object: item, whole body | nil, err.
local function show(self, name, id, params)
  local r = RESOURCES[name]
  local e = validate.id(id, r.id)
  if e then return nil, e end
  local query, err = schema.query(name .. "_show", params)
  if not query then return nil, err end
  local res
  res, err = self:_call({ method = "GET", path = r.path .. "/" .. escape(id), query = query }, true)
  if not res then return nil, err end
  local item
  item, err = unwrap(res, r.one)
  if not item then return nil, err end
  item, err = prepare(res, name, item)
  if not item then return nil, err end
  return item, res.data
end

local function show_one(self, name, id, params)
  local item, err = show(self, name, id, params)
  if not item then return nil, err end
  return item
end

-- A checked body: POST (create) or PUT (update) -> the written object | nil, err.
-- A success status with a body of the wrong shape still means the server acted: for a write
-- that must not run twice the error says the outcome is unknown, so no caller sends it again.
function TableCheck:_write(name, method, id, body, idempotent)
  local r = RESOURCES[name]
  local path = r.path
  if id ~= nil then path = path .. "/" .. escape(id) end
  local res, err = self:_call({ method = method, path = path, body = body }, idempotent)
  if not res then return nil, err end
  local item
  item, err = unwrap(res, r.one)
  if item then item, err = prepare(res, name, item) end
  if not item then
    err.sent = true
    if not idempotent then errors.mark_unknown(err) end
    return nil, err
  end
  return item
end

local function create(self, name, kind, body)
  local checked, err = schema.body(kind, body)
  if not checked then return nil, err end
  -- POST creates a record each time it arrives: retried only when it never left this machine.
  return self:_write(name, "POST", nil, checked, false)
end

local function update(self, name, kind, id, body)
  local e = validate.id(id, RESOURCES[name].id)
  if e then return nil, e end
  local checked, err = schema.body(kind, body)
  if not checked then return nil, err end
  return self:_write(name, "PUT", id, checked, schema.write_is_repeatable(checked))
end

-- DELETE is retried like a read. When an earlier attempt may have deleted the record (it
-- reached the server and the answer was lost or a 5xx), a 404 on the retry means just that:
-- done, not an error.
local function delete(self, name, id)
  local r = RESOURCES[name]
  local e = validate.id(id, r.id)
  if e then return nil, e end
  local maybe_done = false
  -- A connection of its own: libcurl would otherwise re-send it silently on a reused connection
  -- that died after the server acted, and the 404 of that second DELETE would look like failure.
  local res, err = self:_call({ method = "DELETE", path = r.path .. "/" .. escape(id), fresh = true },
    true, function(aerr)
      if aerr.status == 404 and maybe_done then return { status = 404 } end
      -- Anything but the server's final word (a 5xx, a lost, cut or spoiled answer) may have
      -- come after the delete was done.
      maybe_done = maybe_done or not retry.is_definitive(aerr)
      return nil, aerr
    end)
  if not res then return nil, err end
  return true
end

-- ---- customers ----

-- GET /customers {ids, shop_ids, created_at_min/max, updated_at_min/max, page (0-9), per_page
-- (<= 1000), include_fields, exclude_fields} -> customers, pagination | nil, err
function TableCheck:list_customers(params) return list(self, "customers", params) end

-- The same as a pager; at the 10-page limit it yields a list_limit error (it.truncated = true).
function TableCheck:iter_customers(params) return iter(self, "customers", params) end

-- GET /customers/{id} {include_fields, exclude_fields} -> customer | nil, err
function TableCheck:get_customer(id, params) return show_one(self, "customers", id, params) end

-- POST /customers (CustomerCreateParams: franchise_id required) -> customer | nil, err
function TableCheck:create_customer(body)
  return create(self, "customers", "customer_create", body)
end

-- PUT /customers/{id} (CustomerUpdateParams) -> customer | nil, err. Retried on failure only
-- when sending it twice changes nothing (no appended phones/emails, uploads or merges).
function TableCheck:update_customer(id, body)
  if type(body) == "table" and type(body.merge_customer_ids) == "table" then
    for i, m in ipairs(body.merge_customer_ids) do
      if m == id then
        return nil, validate.fail("merge_customer_ids[" .. i .. "]",
          "is the customer itself: a customer cannot be merged into itself")
      end
    end
  end
  return update(self, "customers", "customer_update", id, body)
end

-- DELETE /customers/{id} -> true | nil, err
function TableCheck:delete_customer(id) return delete(self, "customers", id) end

local SEARCH_OPTIONS = { restart_on_expiry = true, max_restarts = true }
local SEARCH_PATH, CUSTOMER_KEYS = "/customer_search", RESOURCES.customers.many

local function scroll_expired(err)
  if err.kind ~= "http" or not err.status or err.status < 400 or err.status >= 500 then
    return false
  end
  local text = ((err.code or "") .. " " .. (err.message or "")):lower()
  return text:find("scroll", 1, true) ~= nil
    and (text:find("expire", 1, true) or text:find("invalid", 1, true)
      or text:find("not found", 1, true) or text:find("unknown", 1, true)) ~= nil
end

local RESTART_HINT = "; start the search again, or pass restart_on_expiry = true to have the"
  .. " iterator do it"

--[[ POST /customer_search (CustomerSearchParams) as a pager of customers:
    for c, err in client:iter_search_customers({first_name = "Jim", has_email = true}) do ... end
  The first request sends the query, every later one only {scroll_id}; it stops when a page
  comes back empty. it.total is pagination.total_results once the first page is in.
  A scroll_id unused for scroll_ttl seconds (5 minutes) expires: the iterator notices before
  sending (client-side) or from the server's answer and yields a timeout error with code
  scroll_expired (err.expired_by = "client" | "server").
  opts.restart_on_expiry = true: start the search again instead (at most opts.max_restarts = 3
  times in a row). The ids already yielded are remembered and skipped, so nothing repeats; that
  set grows with the number of customers read, so leave it off for constant-memory exports. ]]
function TableCheck:iter_search_customers(query, opts)
  local body, err = schema.body("customer_search", query or {})
  if not body then return pager.failed(err) end
  err = validate.table(opts, "options")
  if err then return pager.failed(err) end
  opts = opts or {}
  err = validate.known_keys(opts, SEARCH_OPTIONS)
    or validate.boolean(opts.restart_on_expiry, "restart_on_expiry")
    or validate.number(opts.max_restarts, "max_restarts", { min = 0, integer = true })
  if err then return pager.failed(err) end
  local seen = opts.restart_on_expiry and {} or nil
  local max_restarts = opts.max_restarts or 3
  local clock, ttl = self.clock, self.scroll_ttl

  -- The first page (the query) or the next one ({scroll_id}) -> answer | nil, err; an expired
  -- scroll is a timeout error with expired_by = "client" (not sent) or "server".
  local function request(p)
    if not p.scroll_id then
      return self:_call({ method = "POST", path = SEARCH_PATH, body = body }, true)
    end
    local idle = clock.now() - p.last_at
    if idle > ttl then
      return nil, errors.new("timeout", string.format("the customer_search scroll expired: %.0fs"
        .. " passed between pages and a scroll_id lasts %gs", idle, ttl) .. RESTART_HINT,
        { code = "scroll_expired", expired_by = "client" })
    end
    -- A scroll moves on each time the server serves a page (the seed's scroll ids are
    -- Elasticsearch's), so a continuation that reached the server is never sent again: a lost
    -- answer would silently skip a page. It gets a connection of its own for the same reason.
    local res, cerr = self:_call({ method = "POST", path = SEARCH_PATH, body = { scroll_id = p.scroll_id },
                                   fresh = true }, true, function(aerr)
      if not retry.is_definitive(aerr) then
        aerr.retryable, aerr.scroll_lost = false, true
        aerr.message = aerr.message .. "; the scroll may have moved past this page, so it was not"
          .. " sent again" .. RESTART_HINT
      end
      return nil, aerr
    end)
    if not res and scroll_expired(cerr) then
      cerr.kind, cerr.expired_by = "timeout", "server"
      cerr.code = cerr.code or "scroll_expired"
      cerr.message = "the server says the customer_search scroll expired (a scroll_id lasts 5"
        .. " minutes between pages): " .. cerr.message .. RESTART_HINT
    end
    return res, cerr
  end

  -- One answer: the customers not yielded before a restart (all of them otherwise) and whether
  -- the search is over -> customers, last | nil, err
  local function take(p, res)
    local items, derr = unwrap_items(res, "customers", CUSTOMER_KEYS)
    if not items then return nil, derr end
    local pagination = pagination_of(res)
    p.last_at, p.fetched = clock.now(), p.fetched + #items
    if p.total == nil and type(pagination.total_results) == "number" then
      p.total = math.floor(pagination.total_results)
    end
    local sid = pagination.scroll_id
    p.scroll_id = type(sid) == "string" and sid ~= "" and sid or nil
    if #items == 0 then return items, true end
    local out = items
    if seen then
      out = {}
      for _, c in ipairs(items) do
        local id = c.id ~= nil and tostring(c.id) or nil
        if not (id and seen[id]) then
          if id then seen[id] = true end
          out[#out + 1] = c
        end
      end
    end
    -- Without a scroll_id the search can go on only if everything has been read.
    return out, p.scroll_id == nil and p.total ~= nil and p.fetched >= p.total
  end

  return pager.new(function(p)
    while true do
      if p.started and not p.scroll_id then
        return nil, errors.new("decode", "customer_search page had results but no"
          .. " pagination.scroll_id to continue from", { code = "no_scroll_id" })
      end
      local res, rerr = request(p)
      if res then
        p.started = true
        local out, last = take(p, res)
        if not out then return nil, last end
        if #out > 0 then p.restarted = 0 end
        -- A page of customers all yielded before the restart gives nothing new: read on.
        if #out > 0 or last then return out, last end
      elseif (rerr.expired_by or rerr.scroll_lost) and seen and p.restarted < max_restarts then
        p.restarted, p.restarts = p.restarted + 1, p.restarts + 1
        p.scroll_id, p.started, p.fetched = nil, false, 0
      else
        return nil, rerr
      end
    end
  end, { started = false, fetched = 0, restarts = 0, restarted = 0, last_at = 0 })
end

-- search_customers(query) -> customers, pagination | nil, err: the first page only (up to 200),
-- with pagination.scroll_id and total_results as the server sent them. iter_search_customers
-- reads every page.
function TableCheck:search_customers(query)
  local body, err = schema.body("customer_search", query or {})
  if not body then return nil, err end
  local res
  res, err = self:_call({ method = "POST", path = SEARCH_PATH, body = body }, true)
  if not res then return nil, err end
  local items
  items, err = unwrap_items(res, "customers", CUSTOMER_KEYS)
  if not items then return nil, err end
  return items, pagination_of(res)
end

-- ---- shops and franchises ----

-- GET /shops {ids, slugs, franchise_ids, page, per_page, include_fields, exclude_fields}
function TableCheck:list_shops(params) return list(self, "shops", params) end
function TableCheck:iter_shops(params) return iter(self, "shops", params) end
-- GET /shops/{shop_id} (id or slug)
function TableCheck:get_shop(id) return show_one(self, "shops", id) end

-- GET /franchises {ids, names, slugs, page, per_page, include_fields, exclude_fields}
function TableCheck:list_franchises(params) return list(self, "franchises", params) end
function TableCheck:iter_franchises(params) return iter(self, "franchises", params) end
-- GET /franchises/{franchise_id} (id or slug)
function TableCheck:get_franchise(id) return show_one(self, "franchises", id) end

-- ---- reservations ----

-- GET /reservations {ids, customer_ids, created_at_*, updated_at_*, start_at_min/max, sort,
-- sort_order, page, per_page, include_fields, exclude_fields}
function TableCheck:list_reservations(params) return list(self, "reservations", params) end
function TableCheck:iter_reservations(params) return iter(self, "reservations", params) end

-- GET /reservations/{id} {include_fields, exclude_fields} -> reservation, reservation_flags
function TableCheck:get_reservation(id, params)
  local r, data = show(self, "reservations", id, params)
  if not r then return nil, data end
  return r, type(data.reservation_flags) == "table" and data.reservation_flags or {}
end

-- POST /reservations (ReservationCreateParams: shop_id, pax, start_at required)
function TableCheck:create_reservation(body)
  return create(self, "reservations", "reservation_create", body)
end

-- PUT /reservations/{id} (ReservationUpdateParams)
function TableCheck:update_reservation(id, body)
  return update(self, "reservations", "reservation_update", id, body)
end

-- ---- reservation flags ----

-- GET /reservation_flags {ids, shop_ids, created_at_*, updated_at_*, page, per_page}
function TableCheck:list_reservation_flags(params) return list(self, "reservation_flags", params) end
function TableCheck:iter_reservation_flags(params) return iter(self, "reservation_flags", params) end
-- GET /reservation_flags/{id}
function TableCheck:get_reservation_flag(id) return show_one(self, "reservation_flags", id) end

-- ---- memberships ----

-- GET /memberships {ids, customer_ids, code, membership_program_id, created_at_*, updated_at_*,
-- page, per_page, include_fields, exclude_fields}
function TableCheck:list_memberships(params) return list(self, "memberships", params) end
function TableCheck:iter_memberships(params) return iter(self, "memberships", params) end
-- GET /memberships/{id}
function TableCheck:get_membership(id) return show_one(self, "memberships", id) end

-- POST /memberships (MembershipCreateParams: membership_program_id, code required)
function TableCheck:create_membership(body)
  return create(self, "memberships", "membership_create", body)
end

-- PUT /memberships/{id} (MembershipUpdateParams)
function TableCheck:update_membership(id, body)
  return update(self, "memberships", "membership_update", id, body)
end

-- DELETE /memberships/{id} -> true
function TableCheck:delete_membership(id) return delete(self, "memberships", id) end

-- ---- membership programs ----

-- GET /membership_programs {ids, membership_ids, created_at_*, updated_at_*, page, per_page,
-- include_fields, exclude_fields}
function TableCheck:list_membership_programs(params) return list(self, "membership_programs", params) end
function TableCheck:iter_membership_programs(params) return iter(self, "membership_programs", params) end
-- GET /membership_programs/{id}
function TableCheck:get_membership_program(id) return show_one(self, "membership_programs", id) end

-- ---- flows ----

-- contacts(customer, spec) -> body | nil, err: a nested phones/emails/... update for
-- update_customer (see crm.tablecheck.contacts.plan). Sends nothing.
function TableCheck.plan_contacts(_, customer, spec) return contacts.plan(customer, spec) end

-- The client's single-flight locks (crm.flight), for merges that share a customer, and how long
-- one step may hold them (a read or the PUT, each within the retry deadline and one request).
function TableCheck:_locks()
  local private = client.private(self)
  private.flight = private.flight or require("crm.flight").new { clock = self.clock }
  return private.flight
end
function TableCheck:_flight_ttl()
  return 2 * (self.policy.deadline + (self._timeout or 30))
end

-- merge(primary_id, secondary_ids [, {resolve, dry_run, wait}]) -> customer, report
function TableCheck:merge_customers(primary_id, secondary_ids, opts)
  return merge.merge(self, primary_id, secondary_ids, opts)
end

-- wait_for_merge(primary_id, secondary_ids [, {timeout, interval, max_interval}]) -> customer
function TableCheck:wait_for_merge(primary_id, secondary_ids, opts)
  return merge.wait(self, primary_id, secondary_ids, opts)
end

-- find_duplicates([query [, {by, restart_on_expiry}]]) -> groups, stats
function TableCheck:find_duplicates(query, opts) return merge.find_duplicates(self, query, opts) end

-- wait_for_images(customer_id [, {timeout, interval, max_interval}]) -> images
function TableCheck:wait_for_images(customer_id, opts) return images.wait(self, customer_id, opts) end

return M
