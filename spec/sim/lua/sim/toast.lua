-- Simulated Toast CRM v1 (plus the Toast machine-client login).
--
--   POST /authentication/v1/authentication/login
--   POST /crm/v1/customers
--   POST /crm/v1/customers/search?page=&pageSize=
--   GET  /crm/v1/customers/{customerId}
--   GET  /crm/v1/customers/{customerId}/creditSummary
--   GET  /crm/v1/customers/{customerId}/creditTransactions?page=&pageSize=
--   POST /crm/v1/customers/{customerId}/creditTransactions
--   GET  /crm/v1/creditTransactions?startDate=&endDate=&page=&pageSize=
--   GET  /crm/v1/creditTransactions/{transactionId}
--
-- Paging: `page` is a 1-based PAGE NUMBER (not an item offset); default 1.
-- `pageSize` defaults to 20, maximum 50 (more -> 400). A page with no items
-- answers 204 with no body. List endpoints answer a JSON array.
--
-- Every /crm/v1 route needs "Authorization: Bearer <token from login>" (401
-- otherwise) and a "Toast-Restaurant-External-ID" header (400 otherwise). All
-- data is kept per restaurant id (the header value, lower-cased). Errors use
-- Toast's error shape with a fresh requestId; messages never echo emails or
-- phone numbers.
--
-- Settings (POST /__sim/config): toast_accept_202, toast_token_ttl, toast_replay,
-- toast_client_id, toast_client_secret (see sim.common).

local common = require("sim.common")

local M = {}

local null = common.null
local given = common.given
local err = common.toast_error

local PAGE_DEFAULT, PAGE_MAX = 20, 50
local CREDIT_LIFETIME = 90 * 86400 -- ADD_VALUE credit expires after 90 days

---------------------------------------------------------------------------
-- Keys in the "sim" dict
---------------------------------------------------------------------------

local function k_token(tok) return "toast:token:" .. tok end
local function k_customer(rid, guid) return "toast:cust:" .. rid .. ":" .. guid end
local function k_customers(rid) return "toast:custs:" .. rid end
local function k_attempts(rid, guid) return "toast:attempts:" .. rid .. ":" .. guid end
local function k_tx(rid, guid) return "toast:tx:" .. rid .. ":" .. guid end
local function k_txs(rid) return "toast:txs:" .. rid end
local function k_customer_txs(rid, cust) return "toast:ctxs:" .. rid .. ":" .. cust end

---------------------------------------------------------------------------
-- Helpers
---------------------------------------------------------------------------

local function header(name)
  local v = ngx.req.get_headers()[name]
  if type(v) == "table" then v = v[1] end
  return v
end

local function json_object_body()
  local body, e = common.read_json()
  if body == nil then return nil, e end
  if type(body) ~= "table" or not common.is_object(body) then
    return nil, "request body must be a JSON object"
  end
  return body
end

local function query_args()
  return ngx.req.get_uri_args(100)
end

local function send_page(items, page, size)
  local slice = common.page_slice(items, page, size)
  if #slice == 0 then return common.send_empty(204) end
  -- items are stored JSON strings: splice them into an array verbatim
  return common.send_raw(200, "[" .. table.concat(slice, ",") .. "]", "application/json")
end

local function get_customer_record(rid, id)
  local d = common.state()
  return d:get(k_customer(rid, id:lower()))
end

local function digits(s)
  return (s:gsub("%D", ""))
end

---------------------------------------------------------------------------
-- Authentication
---------------------------------------------------------------------------

local function login()
  local body, e = json_object_body()
  if not body then return err(400, e) end
  if body.userAccessType ~= "TOAST_MACHINE_CLIENT" then
    return err(400, "userAccessType must be TOAST_MACHINE_CLIENT", "userAccessType")
  end
  local cfg = common.config()
  if type(body.clientId) ~= "string" or type(body.clientSecret) ~= "string"
    or body.clientId ~= cfg.toast_client_id or body.clientSecret ~= cfg.toast_client_secret then
    return err(401, "invalid client credentials")
  end
  local ttl = cfg.toast_token_ttl
  local token = "sim." .. common.random_hex(24)
  local expires = common.now() + ttl
  common.set(common.state(), k_token(token), expires, ttl + 60)
  common.stat("logins")
  return common.send_json(200, {
    status = "SUCCESS",
    token = {
      tokenType = "Bearer",
      accessToken = token,
      expiresIn = ttl,
      scope = null,
      idToken = null,
      refreshToken = null,
    },
  })
end

-- True when the request carries a valid, unexpired bearer token.
local function authorized()
  local h = header("authorization")
  if type(h) ~= "string" then return false end
  local scheme, tok = h:match("^%s*(%S+)%s+(%S+)%s*$")
  if not scheme or scheme:lower() ~= "bearer" then return false end
  local expires = common.state():get(k_token(tok))
  return type(expires) == "number" and expires > common.now()
end
M.authorized = authorized -- shared with sim.toast_orders (same auth)

---------------------------------------------------------------------------
-- Customers
---------------------------------------------------------------------------

-- Validates a Customer body; returns the record to store or nil, message, field.
local function validate_customer(body)
  if body.guid == nil or body.guid == null then return nil, "guid is required", "guid" end
  if not common.is_uuid(body.guid) then return nil, "guid must be a UUID", "guid" end
  for _, f in ipairs({ "firstName", "lastName" }) do
    local v = body[f]
    if type(v) ~= "string" or not v:find("%S") then
      return nil, f .. " is required and must be a non-empty string", f
    end
  end
  local email, phone = body.email, body.phone
  if given(email) then
    if type(email) ~= "string" then return nil, "email must be a string", "email" end
    if not email:find("^[^%s@]+@[^%s@]+$") then
      return nil, "email is not a valid email address", "email"
    end
  else
    email = nil
  end
  if given(phone) then
    if type(phone) ~= "string" then return nil, "phone must be a string", "phone" end
    if not phone:find("%d") then return nil, "phone is not a valid phone number", "phone" end
  else
    phone = nil
  end
  if not email and not phone then
    return nil, "one of phone or email is required", "email"
  end
  return {
    guid = body.guid:lower(),
    entityType = "Customer",
    firstName = body.firstName,
    lastName = body.lastName,
    phone = phone or null,
    email = email or null,
  }
end

-- A POST whose GUID is already stored: the first record, unchanged (200), or with
-- toast_replay = "conflict" a 409 whose message names the GUID.
local function replayed(existing, what, guid)
  if common.config().toast_replay == "conflict" then
    return err(409, "a " .. what .. " with guid " .. guid .. " already exists")
  end
  return common.send_raw(200, existing, "application/json")
end

local function create_customer(ctx)
  local body, e = json_object_body()
  if not body then return err(400, e) end
  local rec, msg, field = validate_customer(body)
  if not rec then return err(400, msg, field) end
  local d = common.state()
  local rid = ctx.rid
  local existing = d:get(k_customer(rid, rec.guid))
  if existing then return replayed(existing, "customer", rec.guid) end
  local attempts = common.incr(d, k_attempts(rid, rec.guid))
  if attempts <= common.config().toast_accept_202 then
    return common.send_empty(202)
  end
  local json = common.encode(rec)
  if d:add(k_customer(rid, rec.guid), json) then
    common.list_push(d, k_customers(rid), rec.guid)
    return common.send_raw(200, json, "application/json")
  end
  -- another request stored it in the meantime: answer with that one
  return common.send_raw(200, d:get(k_customer(rid, rec.guid)), "application/json")
end

local SEARCH_FIELDS = { "firstName", "lastName", "email", "phone" }

local function search_customers(ctx)
  local page, size, perr = common.page_params(query_args(), PAGE_DEFAULT, PAGE_MAX)
  if not page then return err(400, size, perr) end
  local body, e = json_object_body()
  if not body then return err(400, e) end
  local q = body.query
  if type(q) ~= "table" or not common.is_object(q) then
    return err(400, "query must be a CustomerSearchQuery object", "query")
  end
  local crit, n = {}, 0
  for _, f in ipairs(SEARCH_FIELDS) do
    local v = q[f]
    if given(v) then
      if type(v) ~= "string" then return err(400, "query." .. f .. " must be a string", "query." .. f) end
      if f == "phone" then
        v = digits(v)
        if v == "" then return err(400, "query.phone has no digits", "query.phone") end
      else
        v = v:lower()
      end
      crit[f] = v
      n = n + 1
    end
  end
  if n == 0 then
    return err(400, "query must contain at least one of firstName, lastName, email, phone", "query")
  end
  local d = common.state()
  local matches = {}
  for _, guid in ipairs(common.list_items(d, k_customers(ctx.rid))) do
    local json = d:get(k_customer(ctx.rid, guid))
    local c = json and common.decode(json)
    if c then
      local ok = true
      for f, want in pairs(crit) do
        local have = c[f]
        if type(have) ~= "string" then ok = false; break end
        if f == "phone" then have = digits(have) else have = have:lower() end
        if have ~= want then ok = false; break end
      end
      if ok then matches[#matches + 1] = json end
    end
  end
  return send_page(matches, page, size)
end

local function get_customer(ctx)
  local json = get_customer_record(ctx.rid, ctx.id)
  if not json then return err(404, "customer not found") end
  return common.send_raw(200, json, "application/json")
end

---------------------------------------------------------------------------
-- Credit transactions
---------------------------------------------------------------------------

-- Transactions of a customer, newest first, as decoded tables.
local function customer_transactions(rid, cust)
  local d = common.state()
  local out = {}
  for _, guid in ipairs(common.list_items(d, k_customer_txs(rid, cust), true)) do
    local json = d:get(k_tx(rid, guid))
    if json then out[#out + 1] = json end
  end
  return out
end

local function credit_summary(ctx)
  local json = get_customer_record(ctx.rid, ctx.id)
  if not json then return err(404, "customer not found") end
  local amount, earliest, earliest_t = 0, null, nil
  local now = common.now()
  for _, txjson in ipairs(customer_transactions(ctx.rid, ctx.id:lower())) do
    local tx = common.decode(txjson)
    if tx and tx.transactionType == "ADD_VALUE" then
      amount = amount + tx.amount
      local exp = common.parse_iso8601(tx.expirationDate)
      if exp and exp > now and (not earliest_t or exp < earliest_t) then
        earliest, earliest_t = tx.expirationDate, exp
      end
    end
  end
  return common.send_json(200, { amount = amount, earliestExpirationDate = earliest })
end

local function list_customer_tx(ctx)
  local page, size, perr = common.page_params(query_args(), PAGE_DEFAULT, PAGE_MAX)
  if not page then return err(400, size, perr) end
  if not get_customer_record(ctx.rid, ctx.id) then return err(404, "customer not found") end
  return send_page(customer_transactions(ctx.rid, ctx.id:lower()), page, size)
end

local LOCAL_DATE = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%d[%+%-]%d%d%d%d$"

local function validate_tx(body)
  if body.guid == nil or body.guid == null then return nil, "guid is required", "guid" end
  if not common.is_uuid(body.guid) then return nil, "guid must be a UUID", "guid" end
  if body.transactionType ~= "ADD_VALUE" then
    return nil, "transactionType must be ADD_VALUE", "transactionType"
  end
  local amount = body.amount
  if type(amount) ~= "number" or amount ~= amount or amount == math.huge or amount <= 0 then
    return nil, "amount must be a number greater than 0", "amount"
  end
  local lcd = body.localCreatedDate
  if type(lcd) ~= "string" or not lcd:find(LOCAL_DATE) or not common.parse_iso8601(lcd) then
    return nil, "localCreatedDate must look like 2018-06-16T15:01:14.000+0000", "localCreatedDate"
  end
  local note = body.note
  if note == nil then note = null end
  if note ~= null and type(note) ~= "string" then return nil, "note must be a string", "note" end
  return { guid = body.guid:lower(), amount = amount, localCreatedDate = lcd, note = note }
end

local function add_tx(ctx)
  local cust_json = get_customer_record(ctx.rid, ctx.id)
  if not cust_json then return err(404, "customer not found") end
  local body, e = json_object_body()
  if not body then return err(400, e) end
  local v, msg, field = validate_tx(body)
  if not v then return err(400, msg, field) end
  local d = common.state()
  local rid, cust = ctx.rid, ctx.id:lower()
  local existing = d:get(k_tx(rid, v.guid))
  if existing then return replayed(existing, "credit transaction", v.guid) end
  local now = common.now()
  local tx = {
    guid = v.guid,
    entityType = "CustomerCreditTransaction",
    approver = null,
    note = v.note,
    server = null,
    amount = v.amount,
    restaurant = { guid = rid, entityType = "Restaurant" },
    transactionDate = common.format_time(now),
    transactionType = "ADD_VALUE",
    familyGuid = null,
    localCreatedDate = v.localCreatedDate,
    device = null,
    expirationDate = common.format_time(now + CREDIT_LIFETIME),
    customer = { guid = cust, entityType = "Customer" },
  }
  local json = common.encode(tx)
  if d:add(k_tx(rid, v.guid), json) then
    common.list_push(d, k_txs(rid), v.guid)
    common.list_push(d, k_customer_txs(rid, cust), v.guid)
    return common.send_raw(200, json, "application/json")
  end
  return common.send_raw(200, d:get(k_tx(rid, v.guid)), "application/json")
end

local function list_tx(ctx)
  local args = query_args()
  local page, size, perr = common.page_params(args, PAGE_DEFAULT, PAGE_MAX)
  if not page then return err(400, size, perr) end
  local bounds = {}
  for _, name in ipairs({ "startDate", "endDate" }) do
    local s = args[name]
    if s ~= nil and s ~= "" then
      local t = type(s) == "string" and common.parse_iso8601(s)
      if not t then return err(400, name .. " must be an ISO-8601 date-time", name) end
      bounds[name] = t
    end
  end
  local d = common.state()
  local items = {}
  for _, guid in ipairs(common.list_items(d, k_txs(ctx.rid), true)) do
    local json = d:get(k_tx(ctx.rid, guid))
    local tx = json and common.decode(json)
    local t = tx and common.parse_iso8601(tx.transactionDate)
    if t and (not bounds.startDate or t >= bounds.startDate)
      and (not bounds.endDate or t <= bounds.endDate) then
      items[#items + 1] = json
    end
  end
  return send_page(items, page, size)
end

local function get_tx(ctx)
  local json = common.state():get(k_tx(ctx.rid, ctx.id:lower()))
  if not json then return err(404, "credit transaction not found") end
  return common.send_raw(200, json, "application/json")
end

---------------------------------------------------------------------------
-- Routing
---------------------------------------------------------------------------

-- pattern, handlers by method, public (no auth / restaurant header needed)
local ROUTES = {
  { "^/authentication/v1/authentication/login$", { POST = login }, true },
  { "^/crm/v1/customers$", { POST = create_customer } },
  { "^/crm/v1/customers/search$", { POST = search_customers } },
  { "^/crm/v1/customers/([^/]+)$", { GET = get_customer } },
  { "^/crm/v1/customers/([^/]+)/creditSummary$", { GET = credit_summary } },
  { "^/crm/v1/customers/([^/]+)/creditTransactions$", { GET = list_customer_tx, POST = add_tx } },
  { "^/crm/v1/creditTransactions$", { GET = list_tx } },
  { "^/crm/v1/creditTransactions/([^/]+)$", { GET = get_tx } },
}

function M.handle(method, path)
  local handler, public, id
  local allowed, seen = {}, false
  for _, r in ipairs(ROUTES) do
    local m = { path:match(r[1]) }
    if m[1] then
      seen = true
      local h = r[2][method]
      if h then
        handler, public, id = h, r[3], m[1]
        break
      end
      for name in pairs(r[2]) do allowed[#allowed + 1] = name end
    end
  end
  if not handler then
    if seen then
      table.sort(allowed)
      return err(405, "method " .. method .. " not allowed", nil,
        { Allow = table.concat(allowed, ", ") })
    end
    return err(404, "no such endpoint")
  end
  -- a route without a capture yields the whole match, not an id
  if id == path then id = nil end
  local ctx = { method = method, path = path, id = id }
  if not public then
    if not authorized() then return err(401, "missing, invalid or expired access token") end
    local rid = header("toast-restaurant-external-id")
    if type(rid) ~= "string" or not rid:find("%S") then
      return err(400, "Toast-Restaurant-External-ID header is required", "Toast-Restaurant-External-ID")
    end
    ctx.rid = rid:match("^%s*(.-)%s*$"):lower()
    -- With seeded restaurants (toast_restaurants > 0), only those are connected.
    local admitted, refused = require("sim.toast_orders").admit(ctx.rid)
    if not admitted then return refused end
  end
  return handler(ctx)
end

return M
