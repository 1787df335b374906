-- Toast CRM v1: OAuth machine-client login, the eight customer and credit operations, the 202
-- create confirmation, paging iterators and find_or_create.
local platform = require "crm.platform"
local client = require "crm.client"
local errors = require "crm.error"
local pager = require "crm.pager"
local validate = require "crm.validate"

local M = {}
local Toast = {}
local MT = client.class(Toast)

local escape = platform.escape
local type, floor = type, math.floor

local LOGIN_PATH = "/authentication/v1/authentication/login"
local CRM = "/crm/v1"
M.MAX_PAGE_SIZE = 50
M.DEFAULT_BASE_URL = "https://ws-api.toasttab.com"

local KNOWN = {
  restaurant_guid = true, client_id = true, client_secret = true, token = true,
  confirm_timeout = true, confirm_attempts = true,
}

-- Toast's error body: {status, code, message, fieldName, requestId, ...}.
local function parse_error(body)
  if type(body) ~= "table" then return nil end
  local msg = body.message or body.developerMessage
  return type(msg) == "string" and msg or nil,
    type(body.requestId) == "string" and body.requestId or nil,
    type(body.code) == "number" and string.format("%d", body.code)
      or type(body.code) == "string" and body.code or nil,
    type(body.fieldName) == "string" and body.fieldName or nil
end

-- crm.toast{ base_url, restaurant_guid, client_id, client_secret | token, ... } -> client | nil, err
function M.new(opts)
  if type(opts) ~= "table" then return nil, validate.fail("options", "must be a table") end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  if o.base_url == nil then o.base_url = M.DEFAULT_BASE_URL end
  local self = setmetatable({}, MT)
  local ok, err = client.init(self, o, KNOWN, parse_error)
  if not ok then return nil, err end
  err = validate.header_value(o.restaurant_guid, "restaurant_guid")
  if not err and o.token ~= nil then
    err = validate.header_value(o.token, "token")
  elseif not err then
    err = validate.string(o.client_id, "client_id", { required = true, max = 256 })
      or validate.string(o.client_secret, "client_secret", { required = true, max = 1024 })
  end
  err = err or validate.number(o.confirm_timeout, "confirm_timeout", { gt = 0, max = 3600 })
    or validate.number(o.confirm_attempts, "confirm_attempts", { min = 1, integer = true })
  if err then
    self:close()
    return nil, err
  end
  self.restaurant_guid = o.restaurant_guid
  -- Credentials and the current token live in the private table (crm.client.private), never on
  -- the client table itself.
  local private = client.private(self)
  self.client_id, private.client_secret = o.client_id, o.client_secret
  self.fixed_token = o.token ~= nil
  private.token = o.token
  self.token_expires = math.huge
  self.confirm_timeout = o.confirm_timeout or 30
  self.confirm_attempts = o.confirm_attempts or 100
  -- The longest a login can take: the retry deadline plus one last request.
  self.login_wait = self.policy.deadline + (o.timeout or 30)
  -- Scrubbed from any error text: the secret and whatever token is current.
  self.engine:set_secret(1, o.client_secret)
  self.engine:set_secret(2, o.token)
  return self
end

-- ---- authentication ----

-- login() -> token | nil, err. Called lazily; exposed so a script can fail fast.
function Toast:login()
  if self._closed then return nil, client.closed_error() end
  local private = client.private(self)
  if self.fixed_token then return private.token end
  local res, err = self.policy:run(function()
    return self.engine:send {
      method = "POST", path = LOGIN_PATH, shape = "object", ok = { [200] = true },
      headers = { "Content-Type: application/json", "Accept: application/json" },
      body = { clientId = self.client_id, clientSecret = private.client_secret,
               userAccessType = "TOAST_MACHINE_CLIENT" },
    }
  end, true)
  if not res then
    if err.kind == "http" or err.kind == "auth" then
      err.kind = "auth"
      err.message = "login failed: " .. err.message
    end
    return nil, err
  end
  local t = res.data.token
  if type(t) ~= "table" or type(t.accessToken) ~= "string" or t.accessToken == "" then
    return nil, errors.new("decode", "login response has no token.accessToken", { status = res.status })
  end
  local ttl = type(t.expiresIn) == "number" and t.expiresIn > 0 and t.expiresIn or 3600
  private.token = t.accessToken
  -- Renew a little early so a token never expires in flight.
  self.token_expires = self.clock.now() + ttl - math.min(60, ttl * 0.1)
  self.engine:set_secret(2, private.token)
  return private.token
end

-- One login at a time per client: concurrent operations (a curl batch, nginx light threads,
-- other nginx requests sharing a module-level client) wait for the one that is logging in
-- instead of each starting their own. The clock's sleep yields (batch loop, ngx.sleep), so the
-- login can finish meanwhile. `_logging_in` holds when that login started: one that never ended
-- (its nginx request was aborted mid-way) stops holding the others back after `login_wait`.
-- Where sleeping would hold the thread (nginx's log phase, say), waiting would only stall the
-- login it waits for, so the caller logs in itself.
local function current_token(self)
  local clock = self.clock
  while self._logging_in and clock.now() - self._logging_in < self.login_wait
      and (clock.yields == nil or clock.yields()) do
    clock.sleep(0.005)
  end
  local private = client.private(self)
  if private.token and clock.now() < self.token_expires then return private.token end
  private.token = nil
  local started = clock.now()
  self._logging_in = started
  local ok, token, err = pcall(self.login, self)
  if self._logging_in == started then self._logging_in = false end
  if not ok then error(token, 0) end
  return token, err
end

-- Header arrays are rebuilt only when the token changes: they are the same for every call.
local function headers_for(self, token, has_body)
  local private = client.private(self)
  local cache = private.headers
  if not cache or cache.token ~= token then
    local base = {
      "Authorization: Bearer " .. token,
      "Toast-Restaurant-External-ID: " .. self.restaurant_guid,
      "Accept: application/json",
    }
    local with_body = { base[1], base[2], base[3], "Content-Type: application/json" }
    cache = { token = token, [false] = base, [true] = with_body }
    private.headers = cache
  end
  return cache[has_body]
end

-- One call with auth, a single re-login on 401, and the retry policy around it.
function Toast:_call(req, idempotent, policy)
  if self._closed then return nil, client.closed_error() end
  req.idempotent = idempotent
  local relogged = false
  return (policy or self.policy):run(function()
    local token, err = current_token(self)
    if not token then return nil, err end
    req.headers = headers_for(self, token, req.body ~= nil)
    local res
    res, err = self.engine:send(req)
    if err and err.status == 401 and not self.fixed_token and not relogged then
      relogged = true
      -- Only drop the token this request used; another operation may have renewed it already.
      local private = client.private(self)
      if private.token == token then private.token = nil end
      token, err = current_token(self)
      if not token then return nil, err end
      req.headers = headers_for(self, token, req.body ~= nil)
      res, err = self.engine:send(req)
    end
    return res, err
  end, idempotent)
end

-- ---- input checks ----

local CUSTOMER_FIELDS = { guid = true, firstName = true, lastName = true, email = true, phone = true }
local QUERY_FIELDS = { firstName = true, lastName = true, email = true, phone = true }

local function check_phone(v, field)
  local e = validate.string(v, field, { nonempty = true, max = 32 })
  if e then return e end
  if v ~= nil and (not v:find("^[%d%+%-%s%.%(%)]+$") or not v:find("%d")) then
    return validate.fail(field, "must be a phone number (digits, +, -, spaces, dots, parentheses)")
  end
  return nil
end

local function check_customer(c)
  local e = validate.table(c, "customer", true)
    or validate.known_keys(c, CUSTOMER_FIELDS)
    or validate.string(c.firstName, "firstName", { required = true, max = 255 })
    or validate.string(c.lastName, "lastName", { required = true, max = 255 })
    or validate.email(c.email, "email")
    or check_phone(c.phone, "phone")
  if e then return e end
  if c.guid ~= nil then
    e = validate.uuid(c.guid, "guid")
    if e then return e end
  end
  if c.email == nil and c.phone == nil then
    return validate.fail("email", "or phone is required (at least one of them)")
  end
  return nil
end

local function check_page_opts(opts)
  local e = validate.table(opts, "options")
  if e then return e end
  opts = opts or {}
  return validate.known_keys(opts, { page = true, pageSize = true, startDate = true, endDate = true })
    or validate.number(opts.page, "page", { min = 1, integer = true })
    or validate.number(opts.pageSize, "pageSize", { min = 1, max = M.MAX_PAGE_SIZE, integer = true })
end

local TOAST_TIME = "^%d%d%d%d%-[01]%d%-[0-3]%dT[0-2]%d:[0-5]%d:[0-6]%d%.%d%d%d[+-]%d%d%d%d$"

-- Toast's date-time format: yyyy-MM-ddTHH:mm:ss.SSS+hhmm, e.g. 2018-06-16T15:01:14.000+0000.
function M.format_time(epoch)
  epoch = epoch or os.time()
  local secs = floor(epoch)
  local ms = floor((epoch - secs) * 1000 + 0.5)
  if ms >= 1000 then ms = 999 end
  return os.date("!%Y-%m-%dT%H:%M:%S", secs) .. string.format(".%03d+0000", ms)
end

-- ---- customers ----

-- create_customer(customer [, {confirm_timeout}]) -> customer | nil, err (err.guid set)
function Toast:create_customer(c, opts)
  local e = check_customer(c) or validate.table(opts, "options")
  if e then return nil, e end
  opts = opts or {}
  e = validate.known_keys(opts, { confirm_timeout = true })
    or validate.number(opts.confirm_timeout, "confirm_timeout", { gt = 0, max = 3600 })
  if e then return nil, e end
  local body = {}
  for k, v in pairs(c) do body[k] = v end
  -- The GUID is fixed before the first attempt, so every retry and 202 re-POST is the same record.
  body.guid = body.guid or platform.guid()
  local deadline = opts.confirm_timeout or self.confirm_timeout
  local policy = self.policy:with { deadline = deadline, max_pending = self.confirm_attempts }
  -- Toast's contract for 202: POST the same record again until it answers 200.
  local req = { method = "POST", path = CRM .. "/customers", body = body, shape = "object",
                ok = { [200] = true }, pending_status = { [202] = true } }
  local res, err = self:_call(req, true, policy)
  if res then return res.data end
  err.guid = body.guid
  if err.status == 202 then
    err.kind = "timeout"
    err.pending = true
    err.message = "customer creation was accepted (202) but not confirmed within "
      .. deadline .. "s; look it up later with get_customer(err.guid)"
  end
  return nil, err
end

function Toast:get_customer(id)
  local e = validate.id(id, "customerId")
  if e then return nil, e end
  local res, err = self:_call({ method = "GET", path = CRM .. "/customers/" .. escape(id),
                                shape = "object" }, true)
  if not res then return nil, err end
  return res.data
end

local function check_query(q)
  local e = validate.table(q, "query", true)
  if e then return e end
  e = validate.known_keys(q, QUERY_FIELDS, "query.")
    or validate.string(q.firstName, "query.firstName", { nonempty = true, max = 255 })
    or validate.string(q.lastName, "query.lastName", { nonempty = true, max = 255 })
    or validate.string(q.email, "query.email", { nonempty = true, max = 254 })
    or check_phone(q.phone, "query.phone")
  if e then return e end
  if next(q) == nil then
    return validate.fail("query", "needs at least one of firstName, lastName, email, phone")
  end
  return nil
end

local function list_request(method, path, params, body, page, size)
  local query = {}
  for k, v in pairs(params or {}) do
    if k ~= "page" and k ~= "pageSize" then query[k] = v end
  end
  query.page, query.pageSize = page, size
  return { method = method, path = path, query = query, body = body, shape = "array" }
end

-- One page: array (empty on 204) | nil, err
local function fetch_page(self, method, path, params, body)
  local res, err = self:_call(list_request(method, path, params, body, params.page,
    params.pageSize), true)
  if not res then return nil, err end
  return res.data or {}
end

-- A pager over a page/pageSize endpoint; stops on 204, an empty page or a short page.
local function pages(self, method, path, params, body)
  local size = params.pageSize or M.MAX_PAGE_SIZE
  return pager.new(function(p)
    local items, err = self:_call(list_request(method, path, params, body, p.page, size), true)
    if not items then return nil, err end
    items = items.data or {}
    p.page = p.page + 1
    return items, #items < size
  end, { page = params.page or 1, page_size = size })
end

-- search_customers(query [, {page, pageSize}]) -> array | nil, err
function Toast:search_customers(q, opts)
  local e = check_query(q) or check_page_opts(opts)
  if e then return nil, e end
  return fetch_page(self, "POST", CRM .. "/customers/search", opts or {}, { query = q })
end

-- search_iter(query [, {page, pageSize}]) -> pager yielding customers
function Toast:search_iter(q, opts)
  local e = check_query(q) or check_page_opts(opts)
  if e then return pager.failed(e) end
  return pages(self, "POST", CRM .. "/customers/search", opts or {}, { query = q })
end

-- find_or_create(customer) -> customer, "found" | "created" | nil, err
-- Searches by email, then by phone, as Toast asks, and creates only when nothing matches.
function Toast:find_or_create(c, opts)
  local e = check_customer(c)
  if e then return nil, e end
  for _, key in ipairs { "email", "phone" } do
    if c[key] ~= nil then
      local found, err = self:search_customers({ [key] = c[key] }, { pageSize = 1 })
      if not found then return nil, err end
      if found[1] then return found[1], "found" end
    end
  end
  local created, err = self:create_customer(c, opts)
  if not created then return nil, err end
  return created, "created"
end

-- ---- credit ----

function Toast:credit_summary(id)
  local e = validate.id(id, "customerId")
  if e then return nil, e end
  local res, err = self:_call({ method = "GET", shape = "object",
    path = CRM .. "/customers/" .. escape(id) .. "/creditSummary" }, true)
  if not res then return nil, err end
  return res.data
end

function Toast:customer_credit_transactions(id, opts)
  local e = validate.id(id, "customerId") or check_page_opts(opts)
  if e then return nil, e end
  return fetch_page(self, "GET", CRM .. "/customers/" .. escape(id) .. "/creditTransactions",
    opts or {})
end

function Toast:customer_credit_transactions_iter(id, opts)
  local e = validate.id(id, "customerId") or check_page_opts(opts)
  if e then return pager.failed(e) end
  return pages(self, "GET", CRM .. "/customers/" .. escape(id) .. "/creditTransactions", opts or {})
end

local function check_range(opts)
  local e = check_page_opts(opts)
  if e then return e end
  opts = opts or {}
  return validate.iso8601(opts.startDate, "startDate") or validate.iso8601(opts.endDate, "endDate")
end

-- credit_transactions{startDate, endDate, page, pageSize}: the restaurant's, newest first.
function Toast:credit_transactions(opts)
  local e = check_range(opts)
  if e then return nil, e end
  return fetch_page(self, "GET", CRM .. "/creditTransactions", opts or {})
end

function Toast:credit_transactions_iter(opts)
  local e = check_range(opts)
  if e then return pager.failed(e) end
  return pages(self, "GET", CRM .. "/creditTransactions", opts or {})
end

function Toast:credit_transaction(id)
  local e = validate.id(id, "transactionId")
  if e then return nil, e end
  local res, err = self:_call({ method = "GET", shape = "object",
    path = CRM .. "/creditTransactions/" .. escape(id) }, true)
  if not res then return nil, err end
  return res.data
end

local CREDIT_FIELDS = { guid = true, transactionType = true, amount = true,
                        localCreatedDate = true, note = true }

-- add_credit(customerId, {amount, localCreatedDate, note, guid}) -> transaction | nil, err
-- The GUID is made once; pass err.guid back in to retry the same transaction later.
function Toast:add_credit(id, txn)
  local e = validate.id(id, "customerId") or validate.table(txn, "transaction", true)
  if e then return nil, e end
  e = validate.known_keys(txn, CREDIT_FIELDS)
    or validate.enum(txn.transactionType, "transactionType", { "ADD_VALUE" })
    or validate.number(txn.amount, "amount", { required = true, gt = 0, max = 1e9 })
    or validate.string(txn.localCreatedDate, "localCreatedDate", { required = true, max = 40 })
    or validate.string(txn.note, "note", { max = 1024 })
  if e then return nil, e end
  if not txn.localCreatedDate:find(TOAST_TIME) then
    return nil, validate.fail("localCreatedDate",
      "must be yyyy-MM-ddTHH:mm:ss.SSS+hhmm (e.g. 2018-06-16T15:01:14.000+0000)")
  end
  if txn.guid ~= nil then
    e = validate.uuid(txn.guid, "guid")
    if e then return nil, e end
  end
  local body = {}
  for k, v in pairs(txn) do body[k] = v end
  body.transactionType = "ADD_VALUE"
  body.guid = body.guid or platform.guid()
  local res, err = self:_call({ method = "POST", shape = "object", ok = { [200] = true },
    path = CRM .. "/customers/" .. escape(id) .. "/creditTransactions", body = body }, true)
  if not res then
    err.guid = body.guid
    return nil, err
  end
  return res.data
end

-- Guest history from orders (orders, dining options, employees, menus, backfill, sync to CRM):
-- lua/crm/toast/orders.lua, mixed into this class; profiles in lua/crm/toast/guests.lua.
M.orders = require "crm.toast.orders"
M.orders.mixin(Toast)
M.guests = M.orders.guests

return M
