--- TableCheck CRM v1: the `TableCheck` client.
-- Every operation of the OpenAPI contract (customers, shops, franchises,
-- reservations, reservation flags, memberships, membership programs), paging iterators, the
-- customer_search scroll iterator, and the flows built on them (contacts, merge, images).
-- `crm.tablecheck(opts)` is `require("crm.tablecheck").new(opts)`; the helper modules are also
-- `require("crm.tablecheck").contacts`, `.merge`, `.images` and `.schema` (the contract's
-- shapes, e.g. `schema.COUNTRIES`).
--
-- Queries and bodies are checked against the contract before sending (types, enums, formats,
-- required and unknown fields, 24-hex ids, E.164 phones). A write that is not idempotent (a
-- POST, a PUT that appends, a merge) is never sent twice: when its bytes reached the server and
-- the answer cannot be used, the error has `outcome_unknown = true`.
-- @module crm.tablecheck
-- @usage
-- local tc = assert(crm.tablecheck { api_key = os.getenv("CRM_TABLECHECK_API_KEY") })
-- local c, err = tc:create_customer { franchise_id = "5ed64e249551e80639a4d995",
--   first_name = "Ann", last_name = "Lee", emails = { "ann@example.org" }, phones = { "+81312345678" } }
-- if not c and err.outcome_unknown then
--   -- the server may have stored it: look before sending again
-- end
local client = require "crm.client"
local errors = require "crm.error"
local http = require "crm.http"
local pager = require "crm.pager"
local validate = require "crm.validate"
local retry = require "crm.retry"
local contacts = require "crm.tablecheck.contacts"

-- The schemas (the contract's request shapes), merges and image waits load on first use.
local function lazy(name)
  return setmetatable({}, { __index = function(t, k)
    local m = require(name)
    setmetatable(t, { __index = m })
    return m[k]
  end })
end
local images = lazy "crm.tablecheck.images"
local merge = lazy "crm.tablecheck.merge"
local schema = lazy "crm.tablecheck.schema"

local M = {}
local TableCheck = {}
local MT = client.class(TableCheck, "tablecheck")

local type, ipairs, next, concat = type, ipairs, next, table.concat
-- The C core's operations (src/ops.c): each resource's list, show and writes (op_spec below).
local OPS = http.OPS
-- Every call takes the one road of both clients (crm.client.call).
local call, PRIVATE = client.call, client.PRIVATE

--- The default `base_url` (the contract's server).
M.DEFAULT_BASE_URL = "https://api.tablecheck.com/api/crm/v1"
--- The `per_page` limit of every list endpoint (1000).
M.MAX_PER_PAGE = 1000               -- per_page limit of every list endpoint
--- `GET /customers` serves pages 0..9 only (10).
M.CUSTOMERS_MAX_PAGES = 10 -- GET /customers serves pages 0..9 only
--- customer_search answers 200 customers at a time.
M.SEARCH_PAGE_SIZE = 200                           -- customer_search answers 200 at a time
--- Seconds a scroll_id lasts between pages: unused for 5 minutes, it expires.
M.SCROLL_TTL = 300                                 -- a scroll_id unused for 5 minutes expires

M.contacts, M.images, M.merge, M.schema = contacts, images, merge, schema

-- Options with a type are type-checked before anything reads them (crm.client.init).
local KNOWN = { api_key = "string", clock = true, scroll_ttl = "number",
                allow_private_image_urls = "boolean" }

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

--- The options of `crm.tablecheck{}`: these, and the common `crm.client.Options` (`base_url`
-- defaults to `https://api.tablecheck.com/api/crm/v1`).
-- @table Options
-- @tfield string api_key required: sent as the raw Authorization header (ApiKeyAuth); scrubbed
-- from error text, so it must be at least 4 bytes (and ASCII, as every header value)
-- @tfield[opt=300] number scroll_ttl seconds a customer_search scroll_id stays usable between
-- pages (TableCheck: 300; more than 0, at most 86400)
-- @tfield[opt] table clock `{now = fn, sleep = fn}`: replaces the monotonic clock for retries,
-- scroll expiry and the waits (merge, images); for tests and schedulers
-- @tfield[opt=false] boolean allow_private_image_urls lets `image_upload_url` name a loopback,
-- private or single-label host (a test against a local server); never on by default, since
-- TableCheck fetches the image from a public URL (see `crm.tablecheck.images.check_public_host`)

--- Builds a TableCheck client (`crm.tablecheck(opts)`). Validates and sends nothing.
-- @tparam Options opts the TableCheck options and the common `crm.client.Options`
-- @treturn[1] TableCheck the client
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` naming the option (an unknown option, a missing
-- or short `api_key`, a bad `base_url`, `clock` without `now`/`sleep`)
-- @usage local tc = assert(crm.tablecheck { api_key = os.getenv("CRM_TABLECHECK_API_KEY") })
function M.new(opts)
  if type(opts) ~= "table" then return nil, validate.fail("options", "must be a table") end
  local o = {}
  for k, v in next, opts do o[k] = v end
  if o.base_url == nil then o.base_url = M.DEFAULT_BASE_URL end
  local self = setmetatable({}, MT)
  local ok, err = client.init(self, o, KNOWN, parse_error,
    function(x) return "api_key\0" .. (type(x.api_key) == "string" and x.api_key or "") end)
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
  -- image_upload_url may name a loopback or private host: for tests against a local server only.
  self.allow_private_image_urls = o.allow_private_image_urls == true
  self._timeout = o.timeout
  self.engine:set_secret(1, o.api_key)
  -- The header lines carry the key, so they live in the private table, not on the client.
  local private = client.private(self)
  private.headers = { "Authorization: " .. o.api_key, "Accept: application/json" }
  private.body_headers = { private.headers[1], private.headers[2], "Content-Type: application/json" }
  -- The same lines as the C core's libcurl lists, made once per client.
  local core = require("crm.platform").core
  private.hs = core and core.header_set(private.headers, private.body_headers) or nil
  return self
end

-- The header lines of an attempt (crm.client.call): the key's, made once per client.
-- -> lines, header set
function TableCheck:_auth(has_body)
  local private = PRIVATE[self]
  if has_body then return private.body_headers, private.hs end
  return private.headers, private.hs
end

-- The policy of a write: it ends with outcome_unknown when any attempt may have acted (crm.retry).
function TableCheck:_write_policy()
  local p = PRIVATE[self].write_policy
  if not p or p.base ~= self.policy then
    p = { base = self.policy, policy = self.policy:with { write = true } }
    PRIVATE[self].write_policy = p
  end
  return p.policy
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
-- An operation's constant description (crm.http's Engine:call): the op of core.ops, the shape
-- of its answer, the names of its ids and their rule.
local function op_spec(name, ids, fresh)
  local op = OPS["tablecheck." .. name]
  if not op then return nil end
  return { op = op, shape = "object", id_names = ids, id_rule = validate.id, fresh = fresh }
end
-- Each resource's operations, as r.list, r.show, r.create, r.amend, r.delete (absent ones nil).
for name, r in pairs(RESOURCES) do
  local ids = { r.id }
  r.list, r.create = op_spec(name .. ".list"), op_spec(name .. ".create")
  r.show, r.amend = op_spec(name .. ".show", ids), op_spec(name .. ".amend", ids)
  -- A connection of its own: see delete.
  r.delete = op_spec(name .. ".delete", ids, true)
end
local SEARCH = op_spec("customer_search")
-- A scroll continuation: never sent twice (see iter_search_customers).
local SEARCH_MORE = op_spec("customer_search", nil, true)

local function decode_error(status, message)
  return errors.new("decode", message, { status = status })
end

-- An object (want_array: an array) under one of `keys` of the response body.
local function unwrap(status, data, keys, want_array)
  if type(data) == "table" then
    for i = 1, #keys do
      local v = data[keys[i]]
      if type(v) == "table" and (not want_array or v[1] ~= nil or next(v) == nil) then return v end
    end
  end
  return nil, decode_error(status, "response has no " .. keys[1] .. (want_array and " array" or " object"))
end

-- Checks one object of an answer: a table with named fields; for customers the contact lists
-- are arrays (and both shapes are offered, see contacts.expose). -> item | nil, err
local function prepare(status, name, item)
  if type(item) ~= "table" or item[1] ~= nil then
    return nil, decode_error(status, "response has a " .. name .. " entry that is not an object")
  end
  if name == "customers" then
    local ok, field = contacts.expose(item)
    if not ok then
      return nil, decode_error(status, "response has a customer whose " .. field .. " is not an array")
    end
  end
  return item
end

-- The array under one of `keys`, every item checked by prepare. -> items | nil, err
local function unwrap_items(status, data, name, keys)
  local items, err = unwrap(status, data, keys, true)
  if not items then return nil, err end
  for i = 1, #items do
    local ok
    ok, err = prepare(status, name, items[i])
    if not ok then return nil, err end
  end
  return items
end

local function pagination_of(data)
  local p = data.pagination
  return type(p) == "table" and p or {}
end

-- One page of a list endpoint: items, pagination | nil, err.
local function fetch_page(self, name, query)
  local r = RESOURCES[name]
  local status, data = call(self, r.list, nil, nil, query, nil, true)
  if not status then return nil, data end
  local items, err = unwrap_items(status, data, name, r.many)
  if not items then return nil, err end
  return items, pagination_of(data)
end

-- One page: items, nil, pagination | nil, err (the second value is the error, and only that).
local function list(self, name, params)
  local query, err = schema.query(name, params)
  if not query then return nil, err end
  local items, pagination = fetch_page(self, name, query)
  if not items then return nil, pagination end
  return items, nil, pagination
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

-- GET one object: item (and the whole body when `whole`) | nil, err. The id is checked by the C
-- core before anything is sent (the same rule as validate.id, which names the field when it
-- refuses); with parameters, here first, so that a bad id is the error named before a bad
-- parameter.
local function show(self, name, id, params, whole)
  local r = RESOURCES[name]
  local query
  if params ~= nil then
    local e = validate.id(id, r.id)
    if e then return nil, e end
    local qerr
    query, qerr = schema.query(name .. "_show", params)
    if not query then return nil, qerr end
  end
  local status, data = call(self, r.show, id, nil, query, nil, true)
  if not status then return nil, data end
  local item, err = unwrap(status, data, r.one)
  if not item then return nil, err end
  item, err = prepare(status, name, item)
  if not item then return nil, err end
  if whole then return item, data end
  return item
end

-- A checked body: POST (create) or PUT (update) -> the written object | nil, err.
-- A success status with a body of the wrong shape still means the server acted: for a write
-- that must not run twice the error says the outcome is unknown, so no caller sends it again.
function TableCheck:_write(name, method, id, body, idempotent)
  local r = RESOURCES[name]
  local status, data = call(self, method == "POST" and r.create or r.amend, id, nil, nil, body,
    idempotent, self:_write_policy())
  if not status then return nil, data end
  local item, err = unwrap(status, data, r.one)
  if item then item, err = prepare(status, name, item) end
  if not item then
    err.sent = true
    if not idempotent then errors.mark_unknown(err) end
    return nil, err
  end
  return item
end

local function create(self, name, kind, body)
  local checked, err = schema.body(kind, body, self)
  if not checked then return nil, err end
  -- POST creates a record each time it arrives: retried only when it never left this machine.
  return self:_write(name, "POST", nil, checked, false)
end

local function update(self, name, kind, id, body)
  local e = validate.id(id, RESOURCES[name].id)
  if e then return nil, e end
  local checked, err = schema.body(kind, body, self)
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
  local status, err = call(self, r.delete, id, nil, nil, nil, true, self:_write_policy(), function(aerr)
      if aerr.status == 404 and maybe_done then return 404 end
      -- Anything but the server's final word (a 5xx, a lost, cut or spoiled answer) may have
      -- come after the delete was done.
      maybe_done = maybe_done or not retry.is_definitive(aerr)
      return nil, aerr
    end)
  if not status then return nil, err end
  return true
end

--- What the `list_` methods return second (as the server sent it), and `search_customers` too.
-- @table Pagination
-- @tfield[opt] number page list endpoints: the page served (from 0)
-- @tfield[opt] number per_page list endpoints: the page size
-- @tfield[opt] string scroll_id `search_customers`: what continues the search
-- @tfield[opt] number total_results `search_customers`: how many customers match

--- A TableCheck client, made by `crm.tablecheck{}` (`new`). Its methods take and return plain
-- Lua tables shaped like the contract's JSON. Customers always offer both contact shapes:
-- `phones`/`emails` (strings) and `phone_objects`/`email_objects` (with ids); the one the
-- server left out is built when first read (see `crm.tablecheck.contacts.expose`). Bodies
-- never carry `crm.null` or arrays with holes (both refused).
-- @type TableCheck

-- ---- customers ----

--- One page of customers (`GET /customers`).
-- GET /customers serves at most 10 pages of 1000: `page = 10` or more is refused before
-- sending; `iter_search_customers` reads every customer.
-- @tparam[opt] table params the query: `{ids, shop_ids, created_at_min/max, updated_at_min/max,
-- page, per_page, include_fields, exclude_fields}`; `page` from 0, `per_page` 1 to 1000
-- @treturn[1] {table,...} the customers of that page
-- @return[1] `nil` (no error)
-- @treturn[1] Pagination the answer's `pagination` (`{}` when absent)
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` (a parameter the contract does not define, a bad
-- id, `page`/`per_page` out of range), or `http`, `auth`, `transport`, `timeout`, `decode`
function TableCheck:list_customers(params) return list(self, "customers", params) end

--- Every page of customers, as a pager (`GET /customers`, 1000 per page unless `per_page`).
-- Stops at a short page.
-- @tparam[opt] table params the query, as for the `list_` method (`page` is the first page)
-- @treturn crm.pager.Pager yields each item; bad input is yielded as `false, err` before
-- anything is sent
-- At the 10-page limit, when page 9 came back full, it yields a `validation` error with
-- `code = "list_limit"` (it never truncates silently) and sets `it.truncated = true`.
function TableCheck:iter_customers(params) return iter(self, "customers", params) end

--- Reads one customer (`GET /customers/{id}`).
-- @tparam string id the customer's id
-- @tparam[opt] table params `{include_fields, exclude_fields}` (arrays or comma-separated text)
-- @treturn[1] table the customer (with `phones`, `emails`, `phone_objects`, `email_objects`)
-- @return[2] `nil`
-- @treturn[2] Error `validation` (a bad id or parameter), `http` (404: no such customer; a
-- merged customer is destroyed), `auth`, `transport`, `timeout`, `decode`
function TableCheck:get_customer(id, params) return show(self, "customers", id, params) end

--- Creates a customer (`POST /customers`, CustomerCreateParams: `franchise_id` required).
-- A POST carries no client id, so it is retried only when it never left this machine, and it
-- always gets a connection of its own.
-- @tparam table body the customer: `franchise_id`, names, `emails`/`phones` as arrays of
-- strings (phones E.164), ...; read names (`alt_first_name`, `gender`, ...) are refused with a
-- hint to the write name
-- @treturn[1] table the created customer
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` when the body breaks the contract (nothing sent);
-- `http` (a 4xx is the server's final word), `auth`, `transport`, `timeout`, `decode`;
-- `outcome_unknown = true` when it may have been stored (look it up before sending it again)
function TableCheck:create_customer(body)
  return create(self, "customers", "customer_create", body)
end

--- Updates a customer (`PUT /customers/{id}`, CustomerUpdateParams; a partial update).
-- Retried on failure only when sending it twice changes nothing (no appended phones/emails,
-- uploads or merges). `images = {{image_upload_url = url}, {id = id, _destroy = true}}` adds and
-- removes images (allowed types only; changing an existing image is refused).
-- @tparam string id the customer's id
-- @tparam table body the fields to change; `client:plan_contacts` builds the nested parts
-- @treturn[1] table the customer as updated
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` when the body breaks the contract (nothing sent);
-- `http` (a 4xx is the server's final word), `auth`, `transport`, `timeout`, `decode`;
-- `outcome_unknown = true` for a PUT that is not repeatable whose answer was lost
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

--- Deletes a customer (`DELETE /customers/{id}`).
-- Retried like a read, on a connection of its own; when an earlier attempt may have done it,
-- a 404 on the retry returns `true`: the record is gone either way.
-- @tparam string id the customer's id
-- @treturn[1] boolean `true`
-- @return[2] `nil`
-- @treturn[2] Error `validation` (a bad id), `http` (404: none), `auth`, `transport`,
-- `timeout`
function TableCheck:delete_customer(id) return delete(self, "customers", id) end

local SEARCH_OPTIONS = { restart_on_expiry = true, max_restarts = true }
local CUSTOMER_KEYS = RESOURCES.customers.many

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

-- The next page of a scroll: POST {scroll_id} -> status, data | nil, err (iter_search_customers and
-- search_customers{scroll_id = id}). A scroll moves on each time the server serves a page (the
-- seed's scroll ids are Elasticsearch's), so a continuation that reached the server is never
-- sent again: a lost answer would silently skip a page (err.scroll_lost). It gets a connection
-- of its own for the same reason. An expired scroll is a timeout error, expired_by = "server".
local function continue_scroll(self, scroll_id)
  local status, cerr = call(self, SEARCH_MORE, nil, nil, nil, { scroll_id = scroll_id }, true,
    nil, function(aerr)
      if not retry.is_definitive(aerr) then
        aerr.retryable, aerr.scroll_lost = false, true
        aerr.message = aerr.message .. "; the scroll may have moved past this page, so it was not"
          .. " sent again" .. RESTART_HINT
      end
      return nil, aerr
    end)
  if not status and scroll_expired(cerr) then
    cerr.kind, cerr.expired_by = "timeout", "server"
    cerr.code = cerr.code or "scroll_expired"
    cerr.message = "the server says the customer_search scroll expired (a scroll_id lasts 5"
      .. " minutes between pages): " .. cerr.message .. RESTART_HINT
  end
  return status, cerr
end

--- Every customer a search matches, as a pager (`POST /customer_search`, CustomerSearchParams).
--    for c, err in client:iter_search_customers({first_name = "Jim", has_email = true}) do ... end
-- The first request sends the query, every later one only {scroll_id}; it stops when a page
-- comes back empty. it.total is pagination.total_results once the first page is in.
-- A scroll_id unused for scroll_ttl seconds (5 minutes) expires: the iterator notices before
-- sending (client-side) or from the server's answer and yields a timeout error with code
-- scroll_expired (err.expired_by = "client" | "server").
-- opts.restart_on_expiry = true: start the search again instead (at most opts.max_restarts = 3
-- times in a row). The ids already yielded are remembered and skipped, so nothing repeats; that
-- set grows with the number of customers read, so leave it off for constant-memory exports.
-- A continuation whose answer was lost after it reached the server is never sent again (that
-- would skip a page): the error has `scroll_lost = true` (or, with `restart_on_expiry`, the
-- search starts over).
-- @tparam[opt] table query CustomerSearchParams (`{}`: every customer)
-- @tparam[opt] table opts
-- @tparam[opt=false] boolean opts.restart_on_expiry start over on an expired or lost scroll
-- @tparam[opt=3] number opts.max_restarts restarts in a row before giving up
-- @treturn crm.pager.Pager yields each customer (`it.total`, `it.restarts`); errors are
-- yielded as `false, err`: `validation` for bad input (nothing sent), `timeout` with
-- `code = "scroll_expired"` and `expired_by`, an error with `scroll_lost = true`, `decode`
-- with `code = "no_scroll_id"`, or `http`, `auth`, `transport`
-- @usage local it = tc:iter_search_customers({ has_email = true }, { restart_on_expiry = true })
-- for c, err in it do
--   if c == false then error(tostring(err)) end
--   print(c.id, it.total)
-- end
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
      return call(self, SEARCH, nil, nil, nil, body, true)
    end
    local idle = clock.now() - p.last_at
    if idle > ttl then
      return nil, errors.new("timeout", string.format("the customer_search scroll expired: %.0fs"
        .. " passed between pages and a scroll_id lasts %gs", idle, ttl) .. RESTART_HINT,
        { code = "scroll_expired", expired_by = "client" })
    end
    return continue_scroll(self, p.scroll_id)
  end

  -- One answer: the customers not yielded before a restart (all of them otherwise) and whether
  -- the search is over -> customers, last | nil, err
  local function take(p, status, data)
    local items, derr = unwrap_items(status, data, "customers", CUSTOMER_KEYS)
    if not items then return nil, derr end
    local pagination = pagination_of(data)
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
      local status, rerr = request(p)
      if status then
        p.started = true
        local out, last = take(p, status, rerr)
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

-- The query {scroll_id = id}: nil, or the scroll_id | nil, err (another field beside it).
local function scroll_query(query)
  if type(query) ~= "table" or rawget(query, "scroll_id") == nil then return nil end
  for k in next, query do
    if k ~= "scroll_id" then
      return nil, validate.fail(validate.key_name(k), "cannot be given with scroll_id (a continuation"
        .. " sends only {scroll_id}; the query belongs to the first page)")
    end
  end
  local sid = rawget(query, "scroll_id")
  local e = validate.string(sid, "scroll_id", { nonempty = true, max = 4096 })
  if e then return nil, e end
  return sid
end

--- One page of a search (`POST /customer_search`): up to 200 customers.
-- With a query: the first page. With `{scroll_id = id}` (the `pagination.scroll_id` of the
-- page before, kept in a queue or across a restart): the next page of that scroll, sent as
-- `{scroll_id}` alone, and never sent again once it may have reached the server
-- (`err.scroll_lost`); an expired scroll is a `timeout` error with `code = "scroll_expired"`.
-- Pagination holds scroll_id and total_results as the server sent them. iter_search_customers
-- reads every page and is the recommended way.
-- @tparam[opt] table query CustomerSearchParams (`{}`: every customer), or `{scroll_id = id}`
-- and no other field
-- @treturn[1] {table,...} the customers of the page
-- @return[1] `nil` (no error)
-- @treturn[1] Pagination `{scroll_id, total_results}`
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` (nothing sent; a field beside `scroll_id` is
-- refused), or `http`, `auth`, `transport`, `timeout`, `decode`
-- @usage local page, _, pagination = assert(tc:search_customers { first_name = "Jim" })
-- local next_page = assert(tc:search_customers { scroll_id = pagination.scroll_id })
function TableCheck:search_customers(query)
  local sid, err = scroll_query(query)
  if err then return nil, err end
  local status, data
  if sid then
    status, data = continue_scroll(self, sid)
  else
    local body
    body, err = schema.body("customer_search", query or {})
    if not body then return nil, err end
    status, data = call(self, SEARCH, nil, nil, nil, body, true)
  end
  if not status then return nil, data end
  local items
  items, err = unwrap_items(status, data, "customers", CUSTOMER_KEYS)
  if not items then return nil, err end
  return items, nil, pagination_of(data)
end

-- ---- shops and franchises ----

--- One page of shops (`GET /shops`).
-- @tparam[opt] table params the query: `{ids, slugs, franchise_ids, page, per_page,
-- include_fields, exclude_fields}`; `page` from 0, `per_page` 1 to 1000
-- @treturn[1] {table,...} the shops of that page
-- @return[1] `nil` (no error)
-- @treturn[1] Pagination the answer's `pagination` (`{}` when absent)
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` (a parameter the contract does not define, a bad
-- id, `page`/`per_page` out of range), or `http`, `auth`, `transport`, `timeout`, `decode`
function TableCheck:list_shops(params) return list(self, "shops", params) end
--- Every page of shops, as a pager (`GET /shops`, 1000 per page unless `per_page`).
-- Stops at a short page.
-- @tparam[opt] table params the query, as for the `list_` method (`page` is the first page)
-- @treturn crm.pager.Pager yields each item; bad input is yielded as `false, err` before
-- anything is sent
function TableCheck:iter_shops(params) return iter(self, "shops", params) end
--- Reads one shop (`GET /shops/{shop_id}`). The id or the slug.
-- @tparam string id the shop's id
-- @treturn[1] table the shop
-- @return[2] `nil`
-- @treturn[2] Error `validation` (a bad id: empty, `.`/`..`), `http` (404: none), `auth`,
-- `transport`, `timeout`, `decode`
function TableCheck:get_shop(id) return show(self, "shops", id) end

--- One page of franchises (`GET /franchises`).
-- @tparam[opt] table params the query: `{ids, names, slugs, page, per_page, include_fields,
-- exclude_fields}`; `page` from 0, `per_page` 1 to 1000
-- @treturn[1] {table,...} the franchises of that page
-- @return[1] `nil` (no error)
-- @treturn[1] Pagination the answer's `pagination` (`{}` when absent)
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` (a parameter the contract does not define, a bad
-- id, `page`/`per_page` out of range), or `http`, `auth`, `transport`, `timeout`, `decode`
function TableCheck:list_franchises(params) return list(self, "franchises", params) end
--- Every page of franchises, as a pager (`GET /franchises`, 1000 per page unless `per_page`).
-- Stops at a short page.
-- @tparam[opt] table params the query, as for the `list_` method (`page` is the first page)
-- @treturn crm.pager.Pager yields each item; bad input is yielded as `false, err` before
-- anything is sent
function TableCheck:iter_franchises(params) return iter(self, "franchises", params) end
--- Reads one franchise (`GET /franchises/{franchise_id}`). The id or the slug.
-- @tparam string id the franchise's id
-- @treturn[1] table the franchise
-- @return[2] `nil`
-- @treturn[2] Error `validation` (a bad id: empty, `.`/`..`), `http` (404: none), `auth`,
-- `transport`, `timeout`, `decode`
function TableCheck:get_franchise(id) return show(self, "franchises", id) end

-- ---- reservations ----

--- One page of reservations (`GET /reservations`).
-- @tparam[opt] table params the query: `{ids, customer_ids, created_at_*, updated_at_*,
-- start_at_min/max, sort, sort_order, page, per_page, include_fields, exclude_fields}`; `page`
-- from 0, `per_page` 1 to 1000
-- @treturn[1] {table,...} the reservations of that page
-- @return[1] `nil` (no error)
-- @treturn[1] Pagination the answer's `pagination` (`{}` when absent)
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` (a parameter the contract does not define, a bad
-- id, `page`/`per_page` out of range), or `http`, `auth`, `transport`, `timeout`, `decode`
function TableCheck:list_reservations(params) return list(self, "reservations", params) end
--- Every page of reservations, as a pager (`GET /reservations`, 1000 per page unless `per_page`).
-- Stops at a short page.
-- @tparam[opt] table params the query, as for the `list_` method (`page` is the first page)
-- @treturn crm.pager.Pager yields each item; bad input is yielded as `false, err` before
-- anything is sent
function TableCheck:iter_reservations(params) return iter(self, "reservations", params) end

--- Reads one reservation and its flags (`GET /reservations/{id}`).
-- @tparam string id the reservation's id
-- @tparam[opt] table params `{include_fields, exclude_fields}`
-- @treturn[1] table the reservation
-- @return[1] `nil` (no error)
-- @treturn[1] {table,...} the answer's `reservation_flags` (`{}` when absent)
-- @return[2] `nil`
-- @treturn[2] Error `validation`, `http` (404: none), `auth`, `transport`, `timeout`, `decode`
function TableCheck:get_reservation(id, params)
  local r, data = show(self, "reservations", id, params, true)
  if not r then return nil, data end
  return r, nil, type(data.reservation_flags) == "table" and data.reservation_flags or {}
end

--- Creates a reservation (`POST /reservations`, ReservationCreateParams: `shop_id`, `pax`,
-- `start_at` required). Never sent twice, as for `create_customer`.
-- @tparam table body the reservation
-- @treturn[1] table the created reservation
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` when the body breaks the contract (nothing sent);
-- `http` (a 4xx is the server's final word), `auth`, `transport`, `timeout`, `decode`;
-- `outcome_unknown = true` when it may have been stored
function TableCheck:create_reservation(body)
  return create(self, "reservations", "reservation_create", body)
end

--- Updates a reservation (`PUT /reservations/{id}`, ReservationUpdateParams).
-- @tparam string id the reservation's id (or reference)
-- @tparam table body the fields to change
-- @treturn[1] table the reservation as updated
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` when the body breaks the contract (nothing sent);
-- `http` (a 4xx is the server's final word), `auth`, `transport`, `timeout`, `decode`;
-- `outcome_unknown = true` for a PUT that is not repeatable whose answer was lost
function TableCheck:update_reservation(id, body)
  return update(self, "reservations", "reservation_update", id, body)
end

-- ---- reservation flags ----

--- One page of reservation flags (`GET /reservation_flags`).
-- @tparam[opt] table params the query: `{ids, shop_ids, created_at_*, updated_at_*, page,
-- per_page}`; `page` from 0, `per_page` 1 to 1000
-- @treturn[1] {table,...} the reservation flags of that page
-- @return[1] `nil` (no error)
-- @treturn[1] Pagination the answer's `pagination` (`{}` when absent)
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` (a parameter the contract does not define, a bad
-- id, `page`/`per_page` out of range), or `http`, `auth`, `transport`, `timeout`, `decode`
function TableCheck:list_reservation_flags(params) return list(self, "reservation_flags", params) end
--- Every page of reservation flags, as a pager (`GET /reservation_flags`, 1000 per page unless `per_page`).
-- Stops at a short page.
-- @tparam[opt] table params the query, as for the `list_` method (`page` is the first page)
-- @treturn crm.pager.Pager yields each item; bad input is yielded as `false, err` before
-- anything is sent
function TableCheck:iter_reservation_flags(params) return iter(self, "reservation_flags", params) end
--- Reads one reservation flag (`GET /reservation_flags/{id}`).
-- @tparam string id the reservation flag's id
-- @treturn[1] table the reservation flag
-- @return[2] `nil`
-- @treturn[2] Error `validation` (a bad id: empty, `.`/`..`), `http` (404: none), `auth`,
-- `transport`, `timeout`, `decode`
function TableCheck:get_reservation_flag(id) return show(self, "reservation_flags", id) end

-- ---- memberships ----

--- One page of memberships (`GET /memberships`).
-- @tparam[opt] table params the query: `{ids, customer_ids, code, membership_program_id,
-- created_at_*, updated_at_*, page, per_page, include_fields, exclude_fields}`; `page` from 0,
-- `per_page` 1 to 1000
-- @treturn[1] {table,...} the memberships of that page
-- @return[1] `nil` (no error)
-- @treturn[1] Pagination the answer's `pagination` (`{}` when absent)
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` (a parameter the contract does not define, a bad
-- id, `page`/`per_page` out of range), or `http`, `auth`, `transport`, `timeout`, `decode`
function TableCheck:list_memberships(params) return list(self, "memberships", params) end
--- Every page of memberships, as a pager (`GET /memberships`, 1000 per page unless `per_page`).
-- Stops at a short page.
-- @tparam[opt] table params the query, as for the `list_` method (`page` is the first page)
-- @treturn crm.pager.Pager yields each item; bad input is yielded as `false, err` before
-- anything is sent
function TableCheck:iter_memberships(params) return iter(self, "memberships", params) end
--- Reads one membership (`GET /memberships/{id}`).
-- @tparam string id the membership's id
-- @treturn[1] table the membership
-- @return[2] `nil`
-- @treturn[2] Error `validation` (a bad id: empty, `.`/`..`), `http` (404: none), `auth`,
-- `transport`, `timeout`, `decode`
function TableCheck:get_membership(id) return show(self, "memberships", id) end

--- Creates a membership (`POST /memberships`, MembershipCreateParams: `membership_program_id`,
-- `code` required). Never sent twice, as for `create_customer`.
-- @tparam table body the membership
-- @treturn[1] table the created membership
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` when the body breaks the contract (nothing sent);
-- `http` (a 4xx is the server's final word), `auth`, `transport`, `timeout`, `decode`;
-- `outcome_unknown = true` when it may have been stored
function TableCheck:create_membership(body)
  return create(self, "memberships", "membership_create", body)
end

--- Updates a membership (`PUT /memberships/{id}`, MembershipUpdateParams).
-- @tparam string id the membership's id
-- @tparam table body the fields to change
-- @treturn[1] table the membership as updated
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` when the body breaks the contract (nothing sent);
-- `http` (a 4xx is the server's final word), `auth`, `transport`, `timeout`, `decode`;
-- `outcome_unknown = true` for a PUT that is not repeatable whose answer was lost
function TableCheck:update_membership(id, body)
  return update(self, "memberships", "membership_update", id, body)
end

--- Deletes a membership (`DELETE /memberships/{id}`); as for `delete_customer`.
-- @tparam string id the membership's id
-- @treturn[1] boolean `true` (also when a retry finds it already gone)
-- @return[2] `nil`
-- @treturn[2] Error `validation`, `http` (404: none), `auth`, `transport`, `timeout`
function TableCheck:delete_membership(id) return delete(self, "memberships", id) end

-- ---- membership programs ----

--- One page of membership programs (`GET /membership_programs`).
-- @tparam[opt] table params the query: `{ids, membership_ids, created_at_*, updated_at_*, page,
-- per_page, include_fields, exclude_fields}`; `page` from 0, `per_page` 1 to 1000
-- @treturn[1] {table,...} the membership programs of that page
-- @return[1] `nil` (no error)
-- @treturn[1] Pagination the answer's `pagination` (`{}` when absent)
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` (a parameter the contract does not define, a bad
-- id, `page`/`per_page` out of range), or `http`, `auth`, `transport`, `timeout`, `decode`
function TableCheck:list_membership_programs(params) return list(self, "membership_programs", params) end
--- Every page of membership programs, as a pager (`GET /membership_programs`, 1000 per page unless `per_page`).
-- Stops at a short page.
-- @tparam[opt] table params the query, as for the `list_` method (`page` is the first page)
-- @treturn crm.pager.Pager yields each item; bad input is yielded as `false, err` before
-- anything is sent
function TableCheck:iter_membership_programs(params) return iter(self, "membership_programs", params) end
--- Reads one membership program (`GET /membership_programs/{id}`).
-- @tparam string id the membership program's id
-- @treturn[1] table the membership program
-- @return[2] `nil`
-- @treturn[2] Error `validation` (a bad id: empty, `.`/`..`), `http` (404: none), `auth`,
-- `transport`, `timeout`, `decode`
function TableCheck:get_membership_program(id) return show(self, "membership_programs", id) end

-- ---- flows ----

--- Builds the nested phones/emails/addresses/socials/events part of an `update_customer` body.
-- A nested phones/emails/... update for update_customer (see crm.tablecheck.contacts.plan).
-- Sends nothing.
-- @function TableCheck:plan_contacts
-- @tparam table customer the customer as read (`get_customer`): the ids the spec names must be
-- among its `phone_objects`, `email_objects`, `addresses`, ...
-- @tparam table spec `{phones = section, emails = section, addresses = ..., socials = ...,
-- events = ...}`, each section `{keep, modify, destroy, add, overwrite}` or, for phones and
-- emails, `{set}`: see `crm.tablecheck.contacts.plan`
-- @treturn[1] table the body for `update_customer`
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` (`"phones.modify.ID"`, `"emails.set[2]"`,
-- `"spec"` when it changes nothing)
-- @usage local body = assert(tc:plan_contacts(customer, { phones = { set = { "+81312345678" } } }))
-- local updated, err = tc:update_customer(customer.id, body)

-- (Defined with `.` and an unused first argument: the client is not needed to build a body.
-- The plain comment keeps LDoc from reading the `_` into the documented signature.)
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

--- Merges customers into one (reads every customer involved, then one `PUT /customers/{id}`).
-- Resolves the fields (default: keep the primary's non-empty fields, fill gaps from the
-- secondaries, union phones and emails in normal form) and sends one PUT with the fields, the
-- `overwrite_*` flags and `merge_customer_ids`. The PUT is never sent twice. Merges that share
-- a customer take turns on one client. Self-merges, empty or repeated lists and unknown ids
-- fail before any PUT; so does a merge that would lose a phone or email value (not E.164, not
-- an email: `code = "merge_would_lose_values"`) unless `resolve` decides.
-- @tparam string primary_id the customer that stays (24-hex id)
-- @tparam {string,...} secondary_ids the customers merged into it (destroyed by TableCheck)
-- @tparam[opt] table opts
-- @tparam[opt] function opts.resolve `function(primary, secondaries, body, report)` returning
-- `fields [, report]`: replaces the policy; `body`/`report` are the default plan, which it may
-- edit and return; return `nil, err` to stop
-- @tparam[opt] boolean opts.dry_run read and resolve, return the planned request, send no PUT
-- @tparam[opt] boolean|table opts.wait `true` or `{timeout, interval, max_interval}`: after the
-- PUT, wait as `wait_for_merge` does
-- @treturn[1] table the merged customer (what the PUT answered; with `wait`, the customer once
-- the merge finished)
-- @return[1] `nil` (no error)
-- @treturn[1] crm.tablecheck.merge.MergeReport the report
-- @treturn[2] crm.tablecheck.merge.MergeRequest with `dry_run`: the planned
-- `{method = "PUT", path, body}` (nothing sent)
-- @return[2] `nil` (no error)
-- @treturn[2] crm.tablecheck.merge.MergeReport with `dry_run`: the report (`report.dry_run = true`,
-- `report.request` is the first value)
-- @return[3] `nil`
-- @treturn[3] Error `validation` with `field` (`"secondary_ids[2]"`, `"resolve"`; `code =
-- "merge_would_lose_values"` with `ids` and `report`), `http` (404 on a read: `field` and
-- `ids` name the missing customer), or the PUT's error with `err.report`
-- (`outcome_unknown = true` when it may have been applied); with `wait`, a `timeout` with
-- `code = "merge_pending"`, `err.customer` and `err.report`
-- @usage local plan, err, report = tc:merge_customers(g.primary, g.secondaries, { dry_run = true })
-- if err then error(tostring(err)) end
-- print(plan.method, plan.path, #report.conflicts)
-- local merged, err2, rep = tc:merge_customers(g.primary, g.secondaries, { wait = { timeout = 60 } })
function TableCheck:merge_customers(primary_id, secondary_ids, opts)
  return merge.merge(self, primary_id, secondary_ids, opts)
end

--- Waits until a merge has finished (polls `GET /customers/{primary_id}`, reservations and
-- memberships). Done when the primary's `merged_customer_ids` holds every secondary and no
-- reservation or membership still names one (TableCheck moves them asynchronously).
-- @tparam string primary_id the customer merged into
-- @tparam {string,...} secondary_ids the customers merged
-- @tparam[opt] table opts
-- @tparam[opt=300] number opts.timeout seconds to wait
-- @tparam[opt=0.25] number opts.interval first wait between polls (doubling)
-- @tparam[opt=5] number opts.max_interval longest wait between polls
-- @treturn[1] table the primary customer, merge finished
-- @return[2] `nil`
-- @treturn[2] Error `timeout` with `code = "merge_pending"`, `ids` (the secondaries not done)
-- and `stage` (`"merged_customer_ids"` or `"associated_objects"`); `validation` for bad ids or
-- options; or a read's error
function TableCheck:wait_for_merge(primary_id, secondary_ids, opts)
  return merge.wait(self, primary_id, secondary_ids, opts)
end

--- Groups customers that share a normalised email or E.164 phone (`POST /customer_search`).
-- Reads every customer the search matches and groups them transitively, oldest first, ready to
-- feed `merge_customers(g.primary, g.secondaries)`. Instead of a query it takes any iterator
-- of customers already read (a function that returns a customer per call and `nil` at the end,
-- or `false, err`; a pager), e.g. an export's lines decoded back: then nothing is requested.
-- @tparam[opt] table|function query CustomerSearchParams (default `{}`: every customer), or an
-- iterator of customers
-- @tparam[opt] table opts
-- @tparam[opt] {string,...} opts.by what links customers: `{"email", "phone"}` (the default),
-- or one of them
-- @tparam[opt] boolean opts.restart_on_expiry start the search over when its scroll expires
-- (more than 5 minutes between pages), skipping the customers already read; passed to
-- `iter_search_customers` (refused with an iterator)
-- @tparam[opt] function opts.on_progress `function(scanned, total)` after each customer read
-- (`total` is `pagination.total_results`); one that raises stops the scan with a `validation`
-- error (`field = "on_progress"`)
-- @treturn[1] {crm.tablecheck.merge.DuplicateGroup,...} the groups `{primary, secondaries, ids,
-- reasons}`, sorted by `primary`
-- @return[1] `nil` (no error)
-- @treturn[1] crm.tablecheck.merge.DuplicateStats `{scanned, total}`
-- @return[2] `nil`
-- @treturn[2] Error `validation` (`field = "by[1]"`, an unknown option), or the search's error
-- @usage local groups, err, stats = tc:find_duplicates(nil, { by = { "email" } })
-- if err then error(tostring(err)) end
-- for _, g in ipairs(groups) do print(g.primary, #g.secondaries, g.reasons[1].value) end
function TableCheck:find_duplicates(query, opts) return merge.find_duplicates(self, query, opts) end

--- Waits until a customer's image uploads have finished (polls `GET /customers/{id}`).
-- Uploads are asynchronous: done when every image has a `url` and `image_variants`.
-- @tparam string customer_id the customer's id
-- @tparam[opt] table opts
-- @tparam[opt=60] number opts.timeout seconds to wait
-- @tparam[opt=0.25] number opts.interval first wait between polls (doubling)
-- @tparam[opt=5] number opts.max_interval longest wait between polls
-- @treturn[1] {table,...} the customer's images, each with `url` and `image_variants`
-- @return[2] `nil`
-- @treturn[2] Error `timeout` with `code = "images_pending"`, `ids` (the images still
-- uploading) and `images`; `validation`; `decode` when `images` is not an array; or a read's error
function TableCheck:wait_for_images(customer_id, opts) return images.wait(self, customer_id, opts) end

-- find_or_create (search by normalised email and phone, create only when nothing matches):
-- lua/crm/tablecheck/find.lua, documented there, loaded on first use.
function TableCheck:find_or_create(body, opts)
  return require("crm.tablecheck.find").find_or_create(self, body, opts)
end

--- Runs operations concurrently on this client; see `crm.client.batch` for the whole story.
-- @function TableCheck:batch
-- @tparam {function|table,...} ops `function(client) ... end` or `{"method_name", args...}` each
-- @tparam[opt] table opts `{concurrency = 16, stop_on_error = false}`
-- @treturn[1] crm.client.BatchResults one record per op, in input order: `{value, extra}` or
-- `{err}`, plus `results.succeeded` and `results.failed`
-- @return[2] `nil` for bad arguments or options
-- @treturn[2] Error `validation` with `field`, or `transport` (`code = "closed"`)

--- Frees the connection; see `crm.client.close`. Safe twice; also on `__gc` and `<close>`.
-- Later calls return a `transport` error with `code = "closed"`.
-- @function TableCheck:close
-- @treturn boolean `true`

return M
