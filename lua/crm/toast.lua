--- Toast CRM v1: the `Toast` client.
-- OAuth machine-client login, the eight customer and credit operations, the 202 create
-- confirmation, paging iterators, `find_or_create`, and the guest history from orders (orders,
-- dining options, employees, menus, the backfill and the sync to CRM; lua/crm/toast/orders.lua).
-- `crm.toast(opts)` is `require("crm.toast").new(opts)`.
--
-- Toast CRM v1 is deprecated by Toast: talk to Toast's partnership team before building on it.
-- Every call returns `nil, err` on failure (a `crm.error.Error`); nothing raises.
-- @module crm.toast
-- @usage
-- local crm = require "crm"
-- local toast = assert(crm.toast { restaurant_guid = "76cb1b05-cb1e-4adf-863a-b2a94a5ecdcf",
--   client_id = os.getenv("CRM_TOAST_CLIENT_ID"), client_secret = os.getenv("CRM_TOAST_CLIENT_SECRET") })
-- local guest, how = toast:find_or_create { firstName = "Josephine", lastName = "Banton",
--   email = "jbanton@example.org" }
-- if not guest then error(tostring(how)) end
-- toast:close()
local platform = require "crm.platform"
local client = require "crm.client"
local errors = require "crm.error"
local json = require "crm.json"
local flight = require "crm.flight"
local http = require "crm.http"
local pager = require "crm.pager"
local phones = require "crm.phone"
local validate = require "crm.validate"
local shared_token = require "crm.toast.token"

local M = {}
local Toast = {}
local MT = client.class(Toast, "toast")

local type, floor, pcall, error = type, math.floor, pcall, error
local null = http.null
local OPS = http.OPS
local PRIVATE = client.PRIVATE
local call = client.call

local LOGIN_PATH = "/authentication/v1/authentication/login"
-- Paths: the operations of src/ops.c (core.ops), under /crm/v1.
--- The largest `pageSize` Toast's paged endpoints take (the iterators use it).
M.MAX_PAGE_SIZE = 50
--- The default `base_url`.
M.DEFAULT_BASE_URL = "https://ws-api.toasttab.com"

-- Options with a type are type-checked before anything reads them (crm.client.init);
-- client_id and client_secret are checked below, unless a token makes them unused.
local KNOWN = {
  restaurant_guid = "string", client_id = true, client_secret = true, token = "string",
  confirm_timeout = "number", confirm_attempts = "number", default_country_code = "string",
}

--- The shortest `client_secret` or `token` accepted, in bytes.
-- Secrets shorter than this are refused: error text could not scrub them safely (crm.error
-- redacts secrets of at least 4 bytes; shorter ones would match ordinary text).
M.MIN_SECRET_BYTES = 4

local function check_secret(v, field)
  if type(v) == "string" and #v < M.MIN_SECRET_BYTES then
    return validate.fail(field, "must be at least " .. M.MIN_SECRET_BYTES .. " bytes")
  end
  return nil
end

-- Every id Toast puts in a path or a header is a "Toast POS GUID".
local function check_guid(v, field)
  if not validate.is_uuid(v) then
    return validate.fail(field, "must be a Toast POS GUID (8-4-4-4-12 hex digits)")
  end
  return nil
end

-- The credentials, as the key of the shared store's namespace (crm.store; never stored).
-- Only strings reach it (KNOWN's types are checked first); anything else counts as empty.
local function identity(o)
  local function text(v) return type(v) == "string" and v or "" end
  if o.token ~= nil then return "token\0" .. text(o.token) end
  return "client\0" .. text(o.client_id) .. "\0" .. text(o.client_secret)
end

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

--- The options of `crm.toast{}`: these, and the common `crm.client.Options` (`base_url` defaults
-- to `https://ws-api.toasttab.com`; paths `/crm/v1/...` and `/authentication/v1/...` are added).
-- @table Options
-- @tfield string restaurant_guid required: the restaurant's Toast POS GUID, sent as
-- `Toast-Restaurant-External-ID` on every call
-- @tfield string client_id OAuth machine-client id (required unless `token`; at most 256 bytes)
-- @tfield string client_secret OAuth machine-client secret (required unless `token`; 4 to 1024
-- bytes); kept off the client table and scrubbed from every error
-- @tfield[opt] string token a fixed bearer token (at least 4 bytes); then the client never logs in
-- @tfield[opt=30] number confirm_timeout seconds to wait out 202 answers on a create or a credit
-- add (more than 0, at most 3600)
-- @tfield[opt=100] number confirm_attempts most 202 answers to wait out on one create
-- @tfield[opt="1"] string default_country_code country calling code (1 to 3 digits, e.g. `"44"`)
-- for national phone numbers: `find_or_create`'s search keys, guest profiles, `sync_to_crm`

--- Builds a Toast client (`crm.toast(opts)`). Validates and sends nothing: the first call logs
-- in, and the token is cached until shortly before `expiresIn` runs out (10% or 60 s early).
-- A 401 on any call causes one fresh login and one resend.
-- restaurant_guid is a Toast POS GUID; client_secret and token are at least 4 bytes;
-- default_country_code ("1" unless given; digits such as "44") places national phone numbers.
-- @tparam Options opts the Toast options and the common `crm.client.Options`
-- @treturn[1] Toast the client
-- @return[2] `nil`
-- @treturn[2] Error `validation`, with `field` naming the option (an unknown option, a
-- `restaurant_guid` that is not a GUID, a missing `client_id`, a short secret, a bad `base_url`)
-- @usage local toast, err = crm.toast { restaurant_guid = guid, client_id = id, client_secret = secret }
function M.new(opts)
  if type(opts) ~= "table" then return nil, validate.fail("options", "must be a table") end
  local o = {}
  for k, v in next, opts do o[k] = v end
  if o.base_url == nil then o.base_url = M.DEFAULT_BASE_URL end
  local self = setmetatable({}, MT)
  local ok, err = client.init(self, o, KNOWN, parse_error, identity)
  if not ok then return nil, err end
  err = validate.header_value(o.restaurant_guid, "restaurant_guid")
    or check_guid(o.restaurant_guid, "restaurant_guid")
  if not err and o.token ~= nil then
    err = validate.header_value(o.token, "token") or check_secret(o.token, "token")
  elseif not err then
    err = validate.string(o.client_id, "client_id", { required = true, max = 256 })
      or validate.string(o.client_secret, "client_secret", { required = true, max = 1024 })
      or check_secret(o.client_secret, "client_secret")
  end
  err = err or validate.number(o.confirm_timeout, "confirm_timeout", { gt = 0, max = 3600 })
    or validate.number(o.confirm_attempts, "confirm_attempts", { min = 1, integer = true })
    or validate.string(o.default_country_code, "default_country_code", { max = 3 })
    or phones.check_country_code(o.default_country_code, "default_country_code")
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
  self._logging_in = false
  self.confirm_timeout = o.confirm_timeout or 30
  self.confirm_attempts = o.confirm_attempts or 100
  -- National phone numbers (no + or 00) belong to this country: search keys, profiles, sync.
  self.default_country_code = o.default_country_code or "1"
  -- The longest a login can take: the retry deadline plus one last request.
  self.login_wait = self.policy.deadline + (o.timeout or 30)
  -- How long a find_or_create holds its keys per step (one search, or the confirmed create):
  -- a login, the step's retry deadline and its last request, with room for rate-limit waits.
  -- The holder extends its keys before every step, so a slow server cannot make them expire
  -- under it; a holder that never finished (an aborted nginx request) stops holding the others
  -- one step later.
  self.flight_ttl = 2 * (self.login_wait + self.policy.deadline + (o.timeout or 30))
    + self.confirm_timeout
  -- The single-flight locks of find_or_create live off the client table too: their keys are
  -- the guests' normalised emails and phones.
  -- With shared_dict/store they live in the store (lock names hashed), and so does the token.
  local shared = private.shared
  private.flight = flight.new { clock = self.clock, store = shared and shared.view("f:", true),
                                id = shared and platform.guid(),
                                shared = shared ~= nil and not platform.ngx }
  if shared and not self.fixed_token then private.shared_token = shared_token.new(self, shared.view("")) end
  private.pending_guids = {}
  -- Scrubbed from any error text: the secret and whatever token is current.
  self.engine:set_secret(1, o.client_secret)
  self.engine:set_secret(2, o.token)
  return self
end

--- A Toast client, made by `crm.toast{}` (`new`). Its methods take and return plain Lua tables
-- shaped like Toast's JSON; JSON `null` reads as `nil` in objects (inside arrays it stays
-- `crm.null`). Ids in paths (`customerId`, `transactionId`) must be GUIDs, checked before
-- sending (`validation` error with `field`). The client table holds no secret.
-- @type Toast

-- ---- authentication ----

--- Logs in (`POST /authentication/v1/authentication/login`), with `clientId`, `clientSecret`
-- and `userAccessType = "TOAST_MACHINE_CLIENT"`.
-- Called lazily by every other method; exposed so a script can fail fast. With a fixed `token`
-- it returns that token and sends nothing.
-- @treturn[1] string the access token (scrubbed from every error; do not log it)
-- @return[2] `nil`
-- @treturn[2] Error `auth` when the login is refused (401/403 or another HTTP error, message
-- `login failed: ...`), `decode` when the answer has no `token.accessToken`, `transport` or
-- `timeout` otherwise (`code = "closed"` on a closed client)
function Toast:login()
  if self._closed then return nil, client.closed_error() end
  local private = client.private(self)
  if self.fixed_token then return private.token end
  local status, data = self.policy:run(function()
    return self.engine:send {
      method = "POST", path = LOGIN_PATH, shape = "object", ok = { [200] = true },
      headers = { "Content-Type: application/json", "Accept: application/json" },
      body = { clientId = self.client_id, clientSecret = private.client_secret,
               userAccessType = "TOAST_MACHINE_CLIENT" },
    }
  end, true)
  if not status then
    local err = data
    if err.kind == "http" or err.kind == "auth" then
      err.kind = "auth"
      err.message = "login failed: " .. err.message
    end
    -- The operation that wanted the token was not sent (crm.retry: not an attempt that acted).
    err.login = true
    return nil, err
  end
  local t = data and data.token
  if type(t) ~= "table" or type(t.accessToken) ~= "string" or t.accessToken == "" then
    return nil, errors.new("decode", "login response has no token.accessToken", { status = status, login = true })
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
  local shared = client.private(self).shared_token
  if shared then return shared:current() end
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

-- Toast answered 401 to `token`: drop it (only that one; another operation may have renewed it
-- already), for every worker when the token is shared.
local function drop_token(self, token)
  local private = client.private(self)
  if private.shared_token then return private.shared_token:invalidate(token) end
  if private.token == token then private.token = nil end
end

-- Header lines are rebuilt only when the token changes: they are the same for every call. The
-- C core keeps them as libcurl lists (core.header_set); the arrays serve the other transports.
local header_set = platform.core and platform.core.header_set
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
    -- The old set is not closed here: attempts that picked it may still be waiting (a rate
    -- limit, a batch) and send it, and a 401 then renews it; the collector frees it.
    cache = { token = token, [false] = base, [true] = with_body,
              hs = header_set and header_set(base, with_body) or nil }
    private.headers = cache
  end
  return cache[has_body], cache.hs
end

-- The header lines of an attempt (crm.client.call): those of the current token, logging in
-- when there is none. -> lines, header set (nil when libcurl could not take the lines: crm.http
-- then sends the array, and the transport refuses it), token | nil, err. With this client's own token
-- current and no login under way, the cached lines are taken as they are (`now`: the clock's
-- time, when the caller has it). When a login is due,
-- the ids of a read by id are checked first (spec.id_rule): nothing is sent, the login
-- included, for a bad id (the C core checks them before sending otherwise).
function Toast:_auth(has_body, spec, a1, now)
  local private = PRIVATE[self]
  local token, cache = private.token, private.headers
  if token and cache and cache.token == token and not self._logging_in and not private.shared_token
      and (now or self.clock.now()) < self.token_expires then
    return cache[has_body], cache.hs, token
  end
  if spec and spec.check_first then
    local e = spec.id_rule(a1, spec.id_names[1])
    if e then return nil, e end
  end
  local err
  token, err = current_token(self)
  if not token then return nil, err end
  local headers, hs = headers_for(self, token, has_body)
  return headers, hs, token
end

-- A 401 to `token` (crm.client.call): drop it and log in again, once per call. -> whether to
-- send once more
function Toast:_renew(err, token, state)
  -- No token: nothing was sent (the login itself failed), so there is nothing to renew.
  if token == nil or err.status ~= 401 or self.fixed_token or state.relogged then return false end
  state.relogged = true
  drop_token(self, token)
  return true
end

-- Requests of Lua's own (orders): req = {method, path, query, shape, ...} (crm.http's
-- Engine:send), on the one road, with the policy given or the client's.
-- -> status, data | nil, err
function Toast:_call(req, idempotent, policy)
  return call(self, req, nil, nil, req.query, req.body, idempotent, policy)
end

-- ---- the C core's operations (src/ops.c) ----

local CUSTOMER_ID, TRANSACTION_ID = { "customerId" }, { "transactionId" }
-- An operation's constant description (crm.http's Engine:call): the op of core.ops, the shape
-- of its answer, the names of its ids and their rule.
local function op_spec(name, ids, shape, extra)
  local spec = { op = OPS[name], id_names = ids, id_rule = check_guid, shape = shape }
  for k, v in pairs(extra or {}) do spec[k] = v end
  return spec
end
-- Reads by id: a bad id is refused before anything is sent, a login included.
local GET_CUSTOMER = op_spec("toast.get_customer", CUSTOMER_ID, "object", { check_first = true })
local GET_CREDIT_SUMMARY = op_spec("toast.get_credit_summary", CUSTOMER_ID, "object",
  { check_first = true })
local GET_CREDIT_TRANSACTION = op_spec("toast.get_credit_transaction", TRANSACTION_ID, "object",
  { check_first = true })
local SEARCH_CUSTOMERS = op_spec("toast.search_customers", CUSTOMER_ID, "array")
local LIST_CUSTOMER_CREDIT = op_spec("toast.list_customer_credit_transactions", CUSTOMER_ID, "array")
local LIST_CREDIT = op_spec("toast.list_credit_transactions", CUSTOMER_ID, "array")
-- Writes confirmed through 202 (confirmed_post): done on 200 only.
local CONFIRMED = { ok = { [200] = true }, pending_status = { [202] = true } }
local CREATE_CUSTOMER = op_spec("toast.create_customer", CUSTOMER_ID, "object", CONFIRMED)
local ADD_CREDIT = op_spec("toast.add_credit", CUSTOMER_ID, "object", CONFIRMED)

-- ---- input checks ----

-- The Customer fields a request may carry; entityType is what Toast answers ("Customer"), so a
-- customer read back can be passed in again: it is checked, then left out of the request.
local CUSTOMER_FIELDS = { guid = true, firstName = true, lastName = true, email = true, phone = true,
                          entityType = true }
local READ_ONLY = { entityType = true }
local QUERY_FIELDS = { firstName = true, lastName = true, email = true, phone = true }

-- The rules' options, made once (a search or a page checks them on every call).
local PHONE_TEXT = { nonempty = true, max = 32 }
local NAME_TEXT, EMAIL_TEXT = { nonempty = true, max = 255 }, { nonempty = true, max = 254 }
local PAGE_RULE = { min = 1, integer = true }
local PAGE_SIZE_RULE = { min = 1, max = M.MAX_PAGE_SIZE, integer = true }

local function check_phone(v, field)
  local e = validate.string(v, field, PHONE_TEXT)
  if e then return e end
  if v ~= nil and (not v:find("^[%d%+%-%s%.%(%)]+$") or not v:find("%d")) then
    return validate.fail(field, "must be a phone number (digits, +, -, spaces, dots, parentheses)")
  end
  return nil
end

-- crm.null (JSON null) for email or phone means "not given", as Toast's own Customer shows it.
local function given(v)
  if v == null then return nil end
  return v
end

-- A phone that is written must place in E.164 (it is stored in that form): "12" is no phone.
local function check_phone_write(v, field, country_code)
  local e = check_phone(v, field)
  if e or v == nil then return e end
  if not phones.normalize(v, country_code) then
    return validate.fail(field, "must be a phone number that places in E.164: + and 7 to 15 digits, or a"
      .. " national number of default_country_code " .. tostring(country_code))
  end
  return nil
end

local function check_customer(c, country_code)
  local e = validate.table(c, "customer", true)
    or validate.known_keys(c, CUSTOMER_FIELDS)
    or validate.string(c.firstName, "firstName", { required = true, max = 255 })
    or validate.string(c.lastName, "lastName", { required = true, max = 255 })
    or validate.email(given(c.email), "email")
    or check_phone_write(given(c.phone), "phone", country_code)
    or validate.enum(c.entityType, "entityType", { "Customer" })
  if e then return e end
  if c.guid ~= nil then
    e = validate.uuid(c.guid, "guid")
    if e then return e end
  end
  if given(c.email) == nil and given(c.phone) == nil then
    return validate.fail("email", "or phone is required (at least one of them)")
  end
  return nil
end

-- The body of a create: the caller's fields without the read-only ones and without nulls (the
-- seed's POST example leaves out the contact it does not have), the phone in E.164 (one rule
-- for every write: create_customer and find_or_create store the same form), and a GUID.
local function customer_body(c, country_code)
  local body = {}
  for k, v in pairs(c) do
    if not READ_ONLY[k] and v ~= null then body[k] = v end
  end
  if type(body.phone) == "string" then body.phone = phones.normalize(body.phone, country_code) or body.phone end
  -- The GUID is fixed before the first attempt, so every retry and 202 re-POST is the same record.
  body.guid = body.guid or platform.guid()
  return body
end

--- The longest `idempotency_key` a write takes, in bytes.
M.MAX_IDEMPOTENCY_KEY_BYTES = 256

-- The options of a write: confirm_timeout and idempotency_key (a non-empty string: an order
-- GUID, a CSV row id).
local function check_confirm_opts(opts)
  local e = validate.table(opts, "options")
  if e or opts == nil then return e end
  return validate.known_keys(opts, { confirm_timeout = true, idempotency_key = true })
    or validate.number(opts.confirm_timeout, "confirm_timeout", { gt = 0, max = 3600 })
    or validate.string(opts.idempotency_key, "idempotency_key",
      { nonempty = true, max = M.MAX_IDEMPOTENCY_KEY_BYTES })
end

-- Paging options; startDate/endDate only where the seed gives them (the restaurant's credit
-- transactions), so nothing else sends a parameter Toast does not define.
local PAGE_KEYS = { page = true, pageSize = true }
local RANGE_KEYS = { page = true, pageSize = true, startDate = true, endDate = true }
local function check_page_opts(opts, with_range)
  local e = validate.table(opts, "options")
  if e then return e end
  opts = opts or {}
  return validate.known_keys(opts, with_range and RANGE_KEYS or PAGE_KEYS)
    or validate.number(opts.page, "page", PAGE_RULE)
    or validate.number(opts.pageSize, "pageSize", PAGE_SIZE_RULE)
end

-- ---- Toast's date-time: yyyy-MM-ddTHH:mm:ss.SSS+hhmm, e.g. 2018-06-16T15:01:14.000+0000 ----

-- Epoch seconds Toast's four-digit years can show: 1970-01-01 up to the end of 9999.
local MAX_EPOCH = 253402300800

-- A parsed RFC 3339 date-time (validate.parse_datetime) in Toast's form: the same local time
-- and offset (not converted to UTC). Fractions beyond milliseconds are truncated (.9999 ->
-- .999, so the date never moves); a leap second :60 is sent as :59.999, which Toast's format
-- can show.
local function toast_form(t)
  local sec, ms = t.sec, (t.frac .. "000"):sub(1, 3)
  if sec == 60 then sec, ms = 59, "999" end
  local off = t.offset
  local sign = off < 0 and "-" or "+"
  if off < 0 then off = -off end
  return ("%04d-%02d-%02dT%02d:%02d:%02d.%s%s%02d%02d"):format(t.year, t.month, t.day, t.hour,
    t.min, sec, ms, sign, floor(off / 60), off % 60)
end

local TIME_RULE = "must be an RFC 3339 date-time with an offset (e.g. 2024-03-05T09:21:40+09:00,"
  .. " 2018-06-16T15:01:14.000+0000 or ...Z)"

-- toast_time(s, field) -> Toast's form of an RFC 3339 date-time | nil, validation error
local function toast_time(s, field)
  local t, why = validate.parse_datetime(s, { compact_offset = true })
  if not t then return nil, validate.fail(field, TIME_RULE .. "; it " .. why) end
  return toast_form(t)
end

--- @type end

--- A time in Toast's form `yyyy-MM-ddTHH:mm:ss.SSS+hhmm` (`crm.toast_time`). Never raises.
--
-- * nil: the current time, in UTC
-- * number: epoch seconds (1970 to 9999), in UTC, milliseconds rounded
-- * string: an RFC 3339 date-time (`Z`, `+HH:MM` or Toast's `+HHMM`; any fraction): the same
--   local time and offset in Toast's form, fractions truncated to milliseconds (a leap second
--   `:60` is sent as `:59.999`)
--
-- Anything else, or an impossible date-time, gives a validation error naming "time".
-- @tparam[opt] number|string x epoch seconds or an RFC 3339 date-time; default: now
-- @treturn[1] string e.g. `"2024-03-05T09:21:40.000+0900"`
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field = "time"`
-- @usage crm.toast_time()                            --> "2024-03-05T00:21:40.123+0000"
-- crm.toast_time("2024-03-05T09:21:40+09:00")  --> "2024-03-05T09:21:40.000+0900"
function M.format_time(x)
  if x == nil then x = platform.wall_time() end
  if type(x) == "string" then return toast_time(x, "time") end
  local e = validate.number(x, "time", { min = 0 })
  if e then return nil, e end
  if floor(x + 0.0005) >= MAX_EPOCH then
    return nil, validate.fail("time", "must be epoch seconds before the year 10000")
  end
  -- The one formatter of epochs in Toast's form (guest history uses it too).
  return require("crm.toast.guests").format_time(x)
end

--- @type Toast

-- ---- customers ----

-- ---- idempotency keys and replays ----

-- The client GUID of a keyed write: the RFC 9562 version-5 UUID whose namespace is the
-- restaurant GUID and whose name is the operation, a newline, then the key. Any process on any
-- host that sends the same key for the same operation sends the same GUID. -> guid | nil, err
local function derive_guid(self, operation, key)
  local g, why = platform.core.guid_v5(self.restaurant_guid, operation .. "\n" .. key)
  if not g then return nil, validate.fail("restaurant_guid", why) end
  return g
end

-- apply_key(self, operation, body, asked, opts) -> nil | validation error: with an
-- idempotency_key the body's guid is the derived one; a guid asked for alongside must be that one.
local function apply_key(self, operation, body, asked, opts)
  local key = opts and opts.idempotency_key
  if key == nil then return nil end
  local g, e = derive_guid(self, operation, key)
  if not g then return e end
  if asked ~= nil and asked:lower() ~= g then
    return validate.fail("guid", "must be the GUID derived from idempotency_key (" .. g
      .. ") when both are given")
  end
  body.guid = g
  return nil
end

--- The client GUID a write with an idempotency key sends: an RFC 9562 version-5 UUID, namespace
-- the restaurant GUID, name `operation .. "\n" .. key`. To look the record up later
-- (`get_customer`, `get_credit_transaction`) without sending anything.
-- @tparam string operation `"create_customer"`, `"find_or_create"` or `"add_credit"`
-- @tparam string key the idempotency key
-- @treturn[1] string the GUID (lowercase)
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` (`"operation"`, `"idempotency_key"`)
function Toast:get_idempotency_guid(operation, key)
  local e = validate.enum(operation, "operation", { "create_customer", "find_or_create", "add_credit" })
    or validate.string(key, "idempotency_key", { required = true, max = M.MAX_IDEMPOTENCY_KEY_BYTES })
  if e then return nil, e end
  return derive_guid(self, operation, key)
end

-- Whether an error answer says the GUID is taken: a 400 or 409 whose message, field or body
-- names the GUID.
local function names_guid(err, guid)
  if err.status ~= 400 and err.status ~= 409 then return false end
  if err.field == "guid" then return true end
  local hit = false
  local function look(v, depth)
    if hit or depth > 8 then return end
    if type(v) == "string" then
      hit = v:lower():find(guid, 1, true) ~= nil
    elseif type(v) == "table" then
      for _, x in pairs(v) do look(x, depth + 1) end
    end
  end
  look(err.message, 0)
  look(err.body, 0)
  return hit
end

-- The fields of a stored record that differ from what the request asked. Fields the record
-- leaves out are not compared.
local function norm_name(v)
  if type(v) ~= "string" then return nil end
  return (v:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", ""):lower())
end
local function norm_email(v)
  v = given(v)
  if type(v) ~= "string" then return nil end
  return (v:gsub("^%s+", ""):gsub("%s+$", ""):lower())
end
local function differs_customer(self, rec, body)
  local out = {}
  local function norm_phone(v)
    v = given(v)
    if type(v) ~= "string" then return nil end
    return phones.normalize(v, self.default_country_code) or v:gsub("%D", "")
  end
  local function cmp(field, norm)
    local had = rec[field]
    if had == nil and field ~= "email" and field ~= "phone" then return end
    if norm(had) ~= norm(body[field]) then out[#out + 1] = field end
  end
  cmp("firstName", norm_name)
  cmp("lastName", norm_name)
  cmp("email", norm_email)
  cmp("phone", norm_phone)
  return out
end
local function differs_credit(_, rec, body, id)
  local out = {}
  if rec.amount ~= nil and (type(rec.amount) ~= "number" or math.abs(rec.amount - body.amount) > 1e-9) then
    out[#out + 1] = "amount"
  end
  if rec.transactionType ~= nil and rec.transactionType ~= body.transactionType then
    out[#out + 1] = "transactionType"
  end
  local cust = type(rec.customer) == "table" and rec.customer.guid
  if rec.customer ~= nil and (type(cust) ~= "string" or cust:lower() ~= id:lower()) then
    out[#out + 1] = "customer"
  end
  return out
end

-- A replayed GUID whose stored record is not what this request asked: the call fails, the
-- stored record in err.record (attached: out of pairs(err) and JSON encodings, as it holds
-- customer data), and nothing is sent again.
local function mismatch(what, guid, fields, record, status)
  local e = errors.new("http", what .. " guid " .. guid .. " already names a stored record that"
    .. " differs from this request (" .. table.concat(fields, ", ") .. "); it was not sent again:"
    .. " use another idempotency_key or guid", { status = status, code = "idempotency_mismatch",
                                                  guid = guid, sent = true })
  return errors.attach(e, "record", record)
end

-- Toast's contract for 202: POST the same record again until it answers 200, within `deadline`.
-- `what` names the record in the error; `lookup` the call that finds it later; `differs`
-- compares a stored record with what was asked.
-- Whatever Toast answers for the GUID is compared with the request: a 200 with its record, or a
-- 400/409 naming the GUID (the record is read with `lookup`). A record that differs fails with
-- code "idempotency_mismatch"; it is never returned as the success of this request.
local function confirmed_post(self, spec, id, body, deadline, what, lookup, differs)
  local policy = self.policy:with { deadline = deadline, max_pending = self.confirm_attempts,
                                    write = true }
  local status, data = call(self, spec, id, nil, nil, body, true, policy)
  local record, err
  if status then
    local got = data.guid
    if got == nil or (type(got) == "string" and got:lower() == body.guid:lower()) then
      record = data
    else
      -- The answer is about another record: what happened to ours is not known.
      err = errors.mark_unknown(errors.new("decode", what .. " was answered with another record's"
        .. " guid", { status = status, sent = true }), true)
    end
  else
    err = data
    if names_guid(err, body.guid:lower()) then
      local stored, gerr = self[lookup](self, body.guid)
      if stored then
        record = stored
      elseif gerr.status ~= 404 then
        -- The server says the GUID is taken, and the record could not be read to compare.
        errors.mark_unknown(err, true)
      end
    end
  end
  if record then
    local fields = differs(self, record, body, id)
    if #fields == 0 then return record end
    return nil, mismatch(what, body.guid, fields, record, status or err.status)
  end
  err.guid = body.guid
  if err.status == 202 then
    err.kind = "timeout"
    err.pending = true
    err.message = what .. " was accepted (202) but not confirmed within " .. deadline
      .. "s; look it up later with " .. lookup .. "(err.guid), or send it again with that guid"
  end
  return nil, err
end

local function create(self, body, opts)
  return confirmed_post(self, CREATE_CUSTOMER, nil, body,
    opts and opts.confirm_timeout or self.confirm_timeout, "customer creation", "get_customer",
    differs_customer)
end

--- Creates a customer (`POST /crm/v1/customers`), confirming a 202.
-- customer: {firstName, lastName, email and/or phone, guid?}; one of email and phone may be
-- crm.null, and a customer read back from Toast (entityType = "Customer") is accepted as it is.
-- Without a `guid` the client makes a lowercase one before the first attempt; every retry and
-- every re-POST after a `202 Accepted` sends that same GUID, so nothing is created twice (a
-- duplicate GUID returns the existing record).
-- @tparam table c the customer `{firstName, lastName, email, phone, guid}`: `firstName` and
-- `lastName` non-empty strings (at most 255 bytes, UTF-8); at least one of `email`
-- (name@domain) or `phone` (digits, `+`, `-`, spaces, dots, parentheses, and one that places in
-- E.164: international, or national for the client's `default_country_code`; it is sent in
-- E.164, as `find_or_create` sends it: `"+1 206 555 0199"` is stored as `"+12065550199"`), the other absent or
-- `crm.null` (left out of the request); `guid` a UUID if given; `entityType = "Customer"` allowed
-- (not sent); nothing else
-- @tparam[opt] table opts
-- @tparam[opt] number opts.confirm_timeout seconds to wait out 202 answers (default: the
-- client's `confirm_timeout`)
-- @tparam[opt] string opts.idempotency_key a key of yours (an order id, a row id; 1 to 256
-- bytes): the GUID is derived from it (RFC 9562 v5, see `get_idempotency_guid`), so a rerun in
-- any process sends the same GUID and Toast keeps one record. A `guid` given too must be that one
-- @treturn[1] Customer the created customer, as Toast answers it
-- @return[2] `nil`
-- @treturn[2] Error with `err.guid` (the GUID sent) on every error after validation.
-- `http` with `code = "idempotency_mismatch"` and `err.record` when Toast holds another record
-- under that GUID (nothing sent again); `outcome_unknown` when an attempt may have created it;
-- `validation` with `field` for bad input (nothing sent); `timeout` with `pending = true` when
-- the server kept answering 202 past `confirm_timeout` (the record may still appear: look it up
-- with `get_customer(err.guid)` or send it again with `guid = err.guid`); `http`, `auth`,
-- `transport`, `decode` otherwise
function Toast:create_customer(c, opts)
  local e
  c, e = validate.plain(c, "customer")
  if e then return nil, e end
  opts, e = validate.plain(opts, "options")
  if e then return nil, e end
  e = check_customer(c, self.default_country_code) or check_confirm_opts(opts)
  if e then return nil, e end
  local body = customer_body(c, self.default_country_code)
  e = apply_key(self, "create_customer", body, c.guid, opts)
  if e then return nil, e end
  return create(self, body, opts)
end

--- Reads one customer (`GET /crm/v1/customers/{customerId}`).
-- @tparam string id the customer's GUID
-- @treturn[1] Customer the customer
-- @return[2] `nil`
-- @treturn[2] Error `validation` (`field = "customerId"`: not a GUID), `http` (`status = 404`
-- when there is no such customer), `auth`, `transport`, `timeout`, `decode`
function Toast:get_customer(id)
  local status, data = call(self, GET_CUSTOMER, id, nil, nil, nil, true)
  if not status then return nil, data end
  return data
end

local function check_query(q)
  local e = validate.table(q, "query", true)
  if e then return e end
  e = validate.known_keys(q, QUERY_FIELDS, "query.")
    or validate.string(q.firstName, "query.firstName", NAME_TEXT)
    or validate.string(q.lastName, "query.lastName", NAME_TEXT)
    or validate.string(q.email, "query.email", EMAIL_TEXT)
    or check_phone(q.phone, "query.phone")
  if e then return e end
  if next(q) == nil then
    return validate.fail("query", "needs at least one of firstName, lastName, email, phone")
  end
  return nil
end

-- A page's query: the caller's parameters, with page and pageSize as given.
local function page_query(params, page, size)
  local query = {}
  for k, v in pairs(params or {}) do
    if k ~= "page" and k ~= "pageSize" then query[k] = v end
  end
  query.page, query.pageSize = page, size
  return query
end

-- The items of a page answer: every one an object (a Customer, a transaction); `[null]`,
-- `["x"]` or `[[]]` are not results. -> items | nil, decode error
local function page_items(status, data)
  -- A 204 (no records) is an empty array too: crm.json writes it back as [].
  local items = data or json.array()
  for i = 1, #items do
    local item = items[i]
    if type(item) ~= "table" or (item[1] ~= nil) then
      return nil, errors.new("decode", "page answer has an entry that is not an object (entry " .. i
        .. ")", { status = status, sent = true })
    end
  end
  return items
end

-- One page: array (empty on 204) | nil, err
local function fetch_page(self, spec, id, params, body, page, size)
  local status, data = call(self, spec, id, nil, page_query(params, page, size), body, true)
  if not status then return nil, data end
  return page_items(status, data)
end

-- A pager over a page/pageSize endpoint; stops on 204, an empty page or a short page.
local function pages(self, spec, id, params, body)
  local size = params.pageSize or M.MAX_PAGE_SIZE
  return pager.new(function(p)
    local items, err = fetch_page(self, spec, id, params, body, p.page, size)
    if not items then return nil, err end
    p.page = p.page + 1
    return items, #items < size
  end, { page = params.page or 1, page_size = size })
end

-- Inputs are read from raw copies (validate.plain): checked exactly as sent.
local function plain2(a, fa, b, fb)
  local e
  a, e = validate.plain(a, fa)
  if e then return nil, nil, e end
  b, e = validate.plain(b, fb)
  if e then return nil, nil, e end
  return a, b
end

--- Searches customers, one page (`POST /crm/v1/customers/search`).
-- Inputs are read from raw copies: checked exactly as sent.
-- @tparam table q the query: a non-empty subset of `{firstName, lastName, email, phone}` (non-empty
-- strings; `phone` as for `create_customer`)
-- @tparam[opt] table opts
-- @tparam[opt=1] number opts.page page number, from 1
-- @tparam[opt] number opts.pageSize 1 to 50 (`MAX_PAGE_SIZE`)
-- @treturn[1] {Customer,...} the customers of that page (`{}` on 204)
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` (`"query"`, `"query.email"`, `"pageSize"`), or
-- `http`, `auth`, `transport`, `timeout`, `decode` (an entry that is not an object)
function Toast:search_customers(q, opts)
  local e
  q, opts, e = plain2(q, "query", opts, "options")
  if e then return nil, e end
  e = check_query(q) or check_page_opts(opts)
  if e then return nil, e end
  opts = opts or {}
  return fetch_page(self, SEARCH_CUSTOMERS, nil, opts, { query = q }, opts.page, opts.pageSize)
end

--- Every page of a search, as a pager of customers (`POST /crm/v1/customers/search`).
-- Pages of `pageSize` (50 unless given); stops on 204, an empty page or a short page.
-- @tparam table q the query, as for `search_customers`
-- @tparam[opt] table opts `{page, pageSize}`: the first page and the page size
-- @treturn crm.pager.Pager yields each `Customer`; bad input is yielded as `false, err`
-- (`validation`) before anything is sent, a failure mid-way as `false, err` once
-- @usage for c, err in toast:iter_search_customers { lastName = "Banton" } do
--   if c == false then error(tostring(err)) end
--   print(c.guid, c.firstName)
-- end
function Toast:iter_search_customers(q, opts)
  local e
  q, opts, e = plain2(q, "query", opts, "options")
  if e then return pager.failed(e) end
  e = check_query(q) or check_page_opts(opts)
  if e then return pager.failed(e) end
  return pages(self, SEARCH_CUSTOMERS, nil, opts or {}, { query = q })
end

local function trim(v)
  if type(v) ~= "string" then return v end
  return (v:gsub("^%s+", ""):gsub("%s+$", ""))
end

-- The searches find_or_create makes, in order, the record it would create, and its lock keys.
-- Emails are compared trimmed and lower-cased, phones in E.164 (national numbers take the
-- client's default_country_code). The seeds do not say how Toast matches either, so where the
-- value as given differs from its normal form it is searched for as given too (a record stored
-- before in that spelling). A new record is created with the normal forms.
local function plan_find(self, c)
  local searches, keys = {}, {}
  local body = customer_body(c, self.default_country_code)
  local ns = "toast:" .. self.restaurant_guid:lower() .. ":"
  local email, phone = given(c.email), given(c.phone)
  if email ~= nil then
    local n = email:lower()
    searches[#searches + 1] = { email = n }
    if n ~= email then searches[#searches + 1] = { email = email } end
    keys[#keys + 1] = ns .. "e:" .. n
    body.email = n
  end
  if phone ~= nil then
    local n = phones.normalize(phone, self.default_country_code)
    searches[#searches + 1] = { phone = n or phone }
    if n and n ~= phone then searches[#searches + 1] = { phone = phone } end
    keys[#keys + 1] = ns .. "p:" .. (n or phone:gsub("%D", ""))
    body.phone = n or phone
  end
  return searches, body, keys
end

-- Whether a customer from a search answer is the one searched for: the same email (trimmed,
-- lower-cased) or the same phone (in E.164, or as given). A server that matches loosely
-- (`ann@` finding `joann@`) must not hand another guest's record back as "found".
local function matches(self, found, search)
  if type(found) ~= "table" then return false end
  if search.email then
    return type(found.email) == "string" and trim(found.email):lower() == search.email:lower()
  end
  if type(found.phone) ~= "string" then return false end
  if found.phone == search.phone then return true end
  local a = phones.normalize(found.phone, self.default_country_code)
  return a ~= nil and a == phones.normalize(search.phone, self.default_country_code)
end

local function find_then_create(self, searches, body, opts, locks, held)
  for i = 1, #searches do
    locks:extend(held, self.flight_ttl)
    local found, err = self:search_customers(searches[i], { pageSize = 10 })
    if not found then return nil, err end
    for j = 1, #found do
      if matches(self, found[j], searches[i]) then return found[j], "found" end
    end
  end
  locks:extend(held, self.flight_ttl)
  local created, err = create(self, body, opts)
  if not created then return nil, err end
  return created, "created"
end

--- Finds a customer by email or phone, or creates it (search, then `POST /crm/v1/customers`).
-- Searches by email, then by phone, as Toast asks, and creates only when nothing matches: the
-- email trimmed and lower-cased, the phone in E.164 (national numbers take the client's
-- `default_country_code`), and where the value as given differs, as given too. A hit must
-- really be the guest (same normalised email or phone); a new record is created with the
-- normal forms. Concurrent calls on one client (a batch, nginx light threads,
-- requests of one worker sharing the client) for the same guest take turns: each holds its
-- guest's email key and phone key (crm.flight) from the first search to the end of the create,
-- so the next one's search finds what the first created. A key is held at most flight_ttl
-- seconds (a login, two searches and a confirmed create). A create that was accepted (202) but
-- never confirmed is sent again with the same GUID by the next call for that guest.
-- Like every call it returns `res, err`, and says how in a third value: `customer, nil, how`.
-- @tparam table c the customer, as for `create_customer` (`email` and `phone` are trimmed first)
-- @tparam[opt] table opts `{confirm_timeout, idempotency_key}`, as for `create_customer`
-- @treturn[1] Customer the customer found or created
-- @return[1] `nil` (no error)
-- @treturn[1] string `"found"` or `"created"`
-- @return[2] `nil`
-- @treturn[2] Error as for `search_customers` and `create_customer` (`err.guid`, `pending`);
-- `timeout` with `code = "flight_wait"` when another call for the same guest held it too long
-- @usage local guest, err, how = toast:find_or_create { firstName = "Ann", lastName = "Lee",
--   email = "ann@example.org" }
-- if err then error(tostring(err)) end
-- print(guest.guid, how)                        -- "found" or "created"
function Toast:find_or_create(c, opts)
  local e
  c, opts, e = plain2(c, "customer", opts, "options")
  if e then return nil, e end
  e = validate.table(c, "customer", true)
  if e then return nil, e end
  local input = {}
  for k, v in pairs(c) do input[k] = v end
  input.email, input.phone = trim(input.email), trim(input.phone)
  e = check_customer(input, self.default_country_code) or check_confirm_opts(opts)
  if e then return nil, e end
  if self._closed then return nil, client.closed_error() end
  local searches, body, keys = plan_find(self, input)
  e = apply_key(self, "find_or_create", body, input.guid, opts)
  if e then return nil, e end
  local private = client.private(self)
  local locks = private.flight
  local held, err = locks:acquire(keys, { ttl = self.flight_ttl })
  if not held then return nil, err end
  -- A create of this guest that was accepted (202) but never confirmed, or whose outcome was
  -- not learnt, may still appear: the next attempt sends the same GUID, so Toast keeps one.
  -- Only the very same guest (every key and both names) takes it: a guest who shares only a
  -- phone with the pending one is another record and gets a GUID of its own.
  local pending = private.pending_guids
  local sorted_keys = {}
  for i = 1, #keys do sorted_keys[i] = keys[i] end
  table.sort(sorted_keys)
  local fingerprint = table.concat(sorted_keys, "\0") .. "\0" .. tostring(body.firstName):lower()
    .. "\0" .. tostring(body.lastName):lower()
  if input.guid == nil and not (opts and opts.idempotency_key) and pending[fingerprint] then
    body.guid = pending[fingerprint]
  end
  local ok, res, how = pcall(find_then_create, self, searches, body, opts, locks, held)
  if ok and res then
    pending[fingerprint] = nil
  elseif ok and how and how.guid == body.guid and how.kind ~= "validation"
      and how.code ~= "idempotency_mismatch"
      and not (how.status and how.status >= 400 and how.status < 500) then
    pending[fingerprint] = body.guid
  end
  locks:release(held)
  if not ok then error(res, 0) end
  -- One convention for every call: on success the second value is nil; how is the third.
  if res == nil then return nil, how end
  return res, nil, how
end

-- ---- credit ----

--- A customer's credit balance (`GET /crm/v1/customers/{customerId}/creditSummary`).
-- @tparam string id the customer's GUID
-- @treturn[1] CreditSummary `{amount, earliestExpirationDate}`
-- @return[2] `nil`
-- @treturn[2] Error `validation` (`field = "customerId"`), `http` (404: no such customer),
-- `auth`, `transport`, `timeout`, `decode`
function Toast:get_credit_summary(id)
  local status, data = call(self, GET_CREDIT_SUMMARY, id, nil, nil, nil, true)
  if not status then return nil, data end
  return data
end

--- One page of a customer's credit transactions, newest first
-- (`GET /crm/v1/customers/{customerId}/creditTransactions`).
-- @tparam string id the customer's GUID
-- @tparam[opt] table opts `{page, pageSize}` (page from 1, pageSize 1 to 50)
-- @treturn[1] {CreditTransaction,...} that page (`{}` on 204)
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` (`"customerId"`, `"page"`, `"pageSize"`), or
-- `http`, `auth`, `transport`, `timeout`, `decode`
function Toast:list_customer_credit_transactions(id, opts)
  local e = check_guid(id, "customerId") or check_page_opts(opts)
  if e then return nil, e end
  opts = opts or {}
  return fetch_page(self, LIST_CUSTOMER_CREDIT, id, opts, nil, opts.page, opts.pageSize)
end

--- Every page of a customer's credit transactions, as a pager (newest first).
-- @tparam string id the customer's GUID
-- @tparam[opt] table opts `{page, pageSize}`: the first page and the page size (50 unless given)
-- @treturn crm.pager.Pager yields each `CreditTransaction`; bad input is yielded as
-- `false, err` before anything is sent
function Toast:iter_customer_credit_transactions(id, opts)
  local e = check_guid(id, "customerId") or check_page_opts(opts)
  if e then return pager.failed(e) end
  return pages(self, LIST_CUSTOMER_CREDIT, id, opts or {})
end

-- The instant an ISO-8601 range bound names, in seconds (a date alone is its midnight; no zone
-- is read as UTC), for comparing the two bounds. nil when it cannot be told.
local function range_instant(s)
  if type(s) ~= "string" then return nil end
  local y, m, d = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)$")
  local t = y and { year = tonumber(y), month = tonumber(m), day = tonumber(d), hour = 0, min = 0,
                    sec = 0 }
    or validate.parse_datetime(s, { compact_offset = true, seconds_optional = true,
                                    offset_optional = true })
  if not t then return nil end
  local days = require("crm.retry").days_from_civil(t.year, t.month, t.day)
  return days * 86400 + t.hour * 3600 + t.min * 60 + t.sec - (t.offset or 0) * 60
end

local function check_range(opts)
  local e = check_page_opts(opts, true)
  if e then return e end
  opts = opts or {}
  e = validate.iso8601(opts.startDate, "startDate") or validate.iso8601(opts.endDate, "endDate")
  if e then return e end
  -- A reversed range can only come back empty: say so instead of sending it.
  local from, to = range_instant(opts.startDate), range_instant(opts.endDate)
  if from and to and from > to then
    return validate.fail("endDate", "must not be before startDate")
  end
  return nil
end

--- One page of the restaurant's credit transactions, newest first
-- (`GET /crm/v1/creditTransactions`).
-- `startDate`/`endDate` select transactions that occurred in the range: by their own time
-- (`transactionDate`), not the `localCreatedDate` sent, so back-dated credits are found by when
-- they were added.
-- @tparam[opt] table opts
-- @tparam[opt] string opts.startDate a real ISO-8601 date or date-time
-- @tparam[opt] string opts.endDate the same, not before `startDate`
-- @tparam[opt=1] number opts.page page number, from 1
-- @tparam[opt] number opts.pageSize 1 to 50
-- @treturn[1] {CreditTransaction,...} that page (`{}` on 204)
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` (`"startDate"`, `"endDate"`, `"pageSize"`), or
-- `http`, `auth`, `transport`, `timeout`, `decode`
function Toast:list_credit_transactions(opts)
  local e = check_range(opts)
  if e then return nil, e end
  opts = opts or {}
  return fetch_page(self, LIST_CREDIT, nil, opts, nil, opts.page, opts.pageSize)
end

--- Every page of the restaurant's credit transactions, as a pager (newest first).
-- @tparam[opt] table opts `{startDate, endDate, page, pageSize}`, as for `list_credit_transactions`
-- @treturn crm.pager.Pager yields each `CreditTransaction`; bad input is yielded as
-- `false, err` before anything is sent
function Toast:iter_credit_transactions(opts)
  local e = check_range(opts)
  if e then return pager.failed(e) end
  return pages(self, LIST_CREDIT, nil, opts or {})
end

--- Reads one credit transaction (`GET /crm/v1/creditTransactions/{transactionId}`).
-- @tparam string id the transaction's GUID
-- @treturn[1] CreditTransaction the transaction
-- @return[2] `nil`
-- @treturn[2] Error `validation` (`field = "transactionId"`), `http` (404: no such
-- transaction), `auth`, `transport`, `timeout`, `decode`
function Toast:get_credit_transaction(id)
  local status, data = call(self, GET_CREDIT_TRANSACTION, id, nil, nil, nil, true)
  if not status then return nil, data end
  return data
end

local CREDIT_FIELDS = { guid = true, transactionType = true, amount = true,
                        localCreatedDate = true, note = true, device = true }

-- device: a ToastReference {guid, entityType} to the POS device (the seed lists it on the
-- transaction without marking it response-only).
local function check_device(d)
  if d == nil then return nil end
  local e = validate.table(d, "device")
    or validate.known_keys(d, { guid = true, entityType = true }, "device.")
    or validate.uuid(d.guid, "device.guid")
    or validate.string(d.entityType, "device.entityType", { max = 64 })
  return e
end

--- Adds credit to a customer (`POST /crm/v1/customers/{customerId}/creditTransactions`).
-- localCreatedDate is any RFC 3339 date-time with an offset (Z, +09:00 or Toast's +0900, with or
-- without a fraction); it is sent in Toast's yyyy-MM-ddTHH:mm:ss.SSS+hhmm form with the same local
-- time and offset (see toast_form). The GUID is made once; pass err.guid back in to retry the
-- same transaction later. The seed documents only 200 for this POST; should Toast answer 202 as
-- it does for a customer, the same transaction (same GUID) is POSTed again until 200, within
-- confirm_timeout, and err.pending says when it was never confirmed. Credit is never added twice.
-- @tparam string id the customer's GUID
-- @tparam table txn the transaction `{amount, localCreatedDate, note, guid, transactionType}`:
-- `amount` a finite number > 0 (at most 1e9); `localCreatedDate` required, a date-time string
-- (`crm.toast_time()` makes one for now); `note` a string (at most 1024 bytes); `guid` a UUID
-- if given; `transactionType` absent or `"ADD_VALUE"` (always sent as `ADD_VALUE`)
-- @tparam[opt] table opts `{confirm_timeout, idempotency_key}`, as for `create_customer`
-- @treturn[1] CreditTransaction the transaction, as Toast answers it
-- @return[2] `nil`
-- @treturn[2] Error with `err.guid` (the transaction GUID sent) on every error after validation.
-- `http` with `code = "idempotency_mismatch"` and `err.record` (the stored transaction) when the
-- GUID names a transaction with another amount, type or customer (nothing sent again);
-- `outcome_unknown` when an attempt may have added it (replaying the same GUID is safe).
-- `validation` with `field` (`"amount"`, `"localCreatedDate"`, `"customerId"`) for bad input;
-- `timeout` with `pending = true` after unconfirmed 202s; `http` (400, 404), `auth`,
-- `transport`, `decode` otherwise. Replay with `guid = err.guid` when `err.retryable` or
-- `err.pending`; a 4xx is final
-- @usage local txn, err = toast:add_credit(customer.guid, { amount = 10,
--   localCreatedDate = crm.toast_time() })
-- if not txn and err.guid and (err.retryable or err.pending) then
--   txn, err = toast:add_credit(customer.guid, { amount = 10,
--     localCreatedDate = crm.toast_time(), guid = err.guid })
-- end
function Toast:add_credit(id, txn, opts)
  local e
  txn, opts, e = plain2(txn, "transaction", opts, "options")
  if e then return nil, e end
  e = check_guid(id, "customerId") or validate.table(txn, "transaction", true)
  if e then return nil, e end
  e = validate.known_keys(txn, CREDIT_FIELDS)
    or validate.enum(txn.transactionType, "transactionType", { "ADD_VALUE" })
    or validate.number(txn.amount, "amount", { required = true, gt = 0, max = 1e9 })
    or (type(txn.localCreatedDate) == "number"
        and validate.fail("localCreatedDate", "must be a date-time string; crm.toast_time(epoch) makes one"))
    or validate.string(txn.localCreatedDate, "localCreatedDate", { required = true, max = 64 })
    or validate.string(txn.note, "note", { max = 1024 })
    or (txn.guid ~= nil and validate.uuid(txn.guid, "guid"))
    or check_device(txn.device)
    or check_confirm_opts(opts)
  if e then return nil, e end
  local date, derr = toast_time(txn.localCreatedDate, "localCreatedDate")
  if not date then return nil, derr end
  local body = {}
  for k, v in pairs(txn) do body[k] = v end
  body.transactionType = "ADD_VALUE"
  body.localCreatedDate = date
  body.guid = body.guid or platform.guid()
  e = apply_key(self, "add_credit", body, txn.guid, opts)
  if e then return nil, e end
  return confirmed_post(self, ADD_CREDIT, id, body,
    opts and opts.confirm_timeout or self.confirm_timeout, "the credit transaction",
    "get_credit_transaction", differs_credit)
end

--- Runs operations concurrently on this client; see `crm.client.batch` for the whole story.
-- @function Toast:batch
-- @tparam {function|table,...} ops `function(client) ... end` or `{"method_name", args...}` each
-- @tparam[opt] table opts `{concurrency = 16, stop_on_error = false}`
-- @treturn[1] crm.client.BatchResults one record per op, in input order: `{value, extra}` or
-- `{err}`, plus `results.succeeded` and `results.failed`
-- @return[2] `nil` for bad arguments or options
-- @treturn[2] Error `validation` with `field`, or `transport` (`code = "closed"`)
-- @usage local results = toast:batch({ { "get_customer", id1 }, { "get_customer", id2 } })

--- Frees the connection; see `crm.client.close`. Safe twice; also on `__gc` and `<close>`.
-- Later calls return a `transport` error with `code = "closed"`.
-- @function Toast:close
-- @treturn boolean `true`

--- @type end

--- A Toast Customer, as the API answers it (and as `create_customer` takes it).
-- @table Customer
-- @tfield string guid the customer's GUID
-- @tfield string firstName
-- @tfield string lastName
-- @tfield[opt] string email absent when Toast has none (JSON null reads as nil)
-- @tfield[opt] string phone
-- @tfield[opt] string entityType `"Customer"`
-- @see Toast:get_customer

--- What `get_credit_summary` returns.
-- @table CreditSummary
-- @tfield number amount the customer's credit balance
-- @tfield[opt] string earliestExpirationDate when the earliest credit expires (Toast's date-time)

--- A CustomerCreditTransaction, as the API answers it (the fields Toast's reference names;
-- others it sends are kept).
-- @table CreditTransaction
-- @tfield string guid the transaction's GUID (the one `add_credit` sent)
-- @tfield number amount
-- @tfield string transactionType `"ADD_VALUE"`
-- @tfield string localCreatedDate as sent, in Toast's form
-- @tfield[opt] string transactionDate when Toast recorded it (what `startDate`/`endDate` select)
-- @tfield[opt] string expirationDate
-- @tfield[opt] string note
-- @tfield[opt] table customer `{guid, entityType}`
-- @tfield[opt] table restaurant `{guid, entityType}`

-- Guest history from orders (orders, dining options, employees, menus, backfill, sync to CRM):
-- lua/crm/toast/orders.lua, mixed into this class; profiles in lua/crm/toast/guests.lua.
-- It loads on first use: each of its methods starts as a stub that loads the module, which
-- replaces the stubs with the real methods (a spec checks the list against the module).
M.ORDERS_METHODS = { "list_orders", "iter_orders", "list_dining_options", "list_employees",
                     "get_menus", "list_menu_items", "get_guest_context", "new_profile_set",
                     "backfill_orders", "sync_to_crm" }
local function load_orders()
  local orders = require "crm.toast.orders"
  for _, name in ipairs(M.ORDERS_METHODS) do Toast[name] = nil end
  orders.mixin(Toast)
  return orders
end
for _, name in ipairs(M.ORDERS_METHODS) do
  Toast[name] = function(self, ...)
    load_orders()
    return Toast[name](self, ...)
  end
end
-- Many restaurants on one client (`use_restaurant(guid)` views; lua/crm/toast/restaurants.lua) and
-- their backfill (`backfill_restaurants`, loaded on first use; lua/crm/toast/fleet.lua).
require("crm.toast.restaurants").mixin(Toast)
function Toast:backfill_restaurants(...)
  return require("crm.toast.fleet").backfill(self, ...)
end
function M.file_sink(dir) return require("crm.toast.fleet").file_sink(dir) end
-- `M.orders` (the orders module, `crm.toast.orders`) and `M.guests` (the guest profile module,
-- `crm.toast.guests`: profile sets without a client) are loaded when first read.
setmetatable(M, { __index = function(t, k)
  if k == "orders" or k == "guests" then
    local orders = load_orders()
    rawset(t, "orders", orders)
    rawset(t, "guests", orders.guests)
    return rawget(t, k)
  end
end })

return M
