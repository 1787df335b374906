--- TableCheck's `find_or_create`: the cross-run answer where the API has no client id.
-- A TableCheck POST carries no id of the caller's, so a create that is run again creates again.
-- `find_or_create` searches first (`POST /customer_search`, by every normalised email and E.164
-- phone of the body, within its franchise) and creates only when nothing matches; calls for the
-- same guest take turns (crm.flight), through the shared store when the client has one
-- (`shared_dict`/`store`), so workers and processes sharing it never create a guest twice.
-- crm.tablecheck's `TableCheck:find_or_create` loads it on first use.
-- @module crm.tablecheck.find
local client = require "crm.client"
local contacts = require "crm.tablecheck.contacts"
local flight = require "crm.flight"
local platform = require "crm.platform"
local schema = require "crm.tablecheck.schema"
local validate = require "crm.validate"

local M = {}

local type, ipairs = type, ipairs

-- The values of a body's emails or phones (strings, or objects with `key`), in normal form.
local function normal_values(list, key, normalize)
  local out, seen = {}, {}
  for _, v in ipairs(type(list) == "table" and list or {}) do
    local raw = type(v) == "table" and v[key] or v
    local n = type(raw) == "string" and normalize(raw) or nil
    if n and not seen[n] then
      seen[n] = true
      out[#out + 1] = n
    end
  end
  return out
end

-- Whether a customer the search found is really the guest: the same franchise, and an email or
-- phone equal in normal form (the search matches substrings: "ann@" finds "joann@").
local function holds(customer, field, wanted, normalize)
  for _, v in ipairs(type(customer[field]) == "table" and customer[field] or {}) do
    if type(v) == "string" and normalize(v) == wanted then return true end
  end
  return false
end

-- The client's single-flight locks for find_or_create: in the shared store when there is one.
local function locks_of(self)
  local private = client.private(self)
  if not private.find_flight then
    local shared = private.shared
    private.find_flight = flight.new { clock = self.clock,
                                       store = shared and shared.view("f:", true),
                                       id = shared and platform.guid(),
                                       shared = shared ~= nil and not platform.ngx }
  end
  return private.find_flight
end

-- Every search, in order: {query, field, value, normalize}.
local function plan(body)
  local fid = body.franchise_id
  local searches, keys = {}, {}
  local ns = "tablecheck:" .. tostring(fid):lower() .. ":"
  for _, e in ipairs(normal_values(body.emails, "email", contacts.normalize_email)) do
    searches[#searches + 1] = { query = { email = e, franchise_id = fid }, field = "emails", value = e,
                                normalize = contacts.normalize_email }
    keys[#keys + 1] = ns .. "e:" .. e
  end
  for _, p in ipairs(normal_values(body.phones, "number", contacts.normalize_phone)) do
    searches[#searches + 1] = { query = { phone = p, franchise_id = fid }, field = "phones", value = p,
                                normalize = contacts.normalize_phone }
    keys[#keys + 1] = ns .. "p:" .. p
  end
  return searches, keys
end

local function search_then_create(self, searches, body, locks, held, ttl)
  for _, s in ipairs(searches) do
    locks:extend(held, ttl)
    for c, err in self:iter_search_customers(s.query) do
      if c == false then return nil, err end
      if c.franchise_id == nil or tostring(c.franchise_id):lower() == tostring(body.franchise_id):lower() then
        if holds(c, s.field, s.value, s.normalize) then return c, nil, "found" end
      end
    end
  end
  locks:extend(held, ttl)
  local created, err = self:create_customer(body)
  if not created then return nil, err end
  return created, nil, "created"
end

--- Finds a customer by email or phone, or creates it (`POST /customer_search`, then
-- `POST /customers`).
-- Searches the body's franchise by every email (trimmed, lower-cased) and every phone (E.164)
-- of the body, and creates only when no customer holds any of them in the same normal form.
-- Calls for the same guest take turns: each holds its guest's email and phone keys from the
-- first search to the end of the create, on this client, or across workers and processes when
-- the client has a shared store (`shared_dict`/`store`). The real API's search index may lag
-- behind a create: a guest created a moment ago elsewhere, without the shared store, may not be
-- found yet.
-- @tparam crm.tablecheck.TableCheck self the client (called as `tc:find_or_create(body, opts)`)
-- @tparam table body the customer, as for `create_customer` (`franchise_id` required), with at
-- least one email or phone
-- @tparam[opt] table opts
-- @tparam[opt] number opts.wait seconds to wait for another call on the same guest (default:
-- the flight's hold time)
-- @treturn[1] table the customer found or created
-- @treturn[1] nil
-- @treturn[1] string `"found"` or `"created"`
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` (nothing sent), the search's or the create's error
-- (`outcome_unknown` when the create may have been stored), or `timeout` with
-- `code = "flight_wait"`
-- @usage local c, err, how = tc:find_or_create { franchise_id = fid, first_name = "Ann",
--   last_name = "Lee", emails = { "ann@example.org" } }
-- if not c then error(tostring(err)) end
-- print(c.id, how)   -- "found" or "created"
function M.find_or_create(self, body, opts)
  local e = validate.table(opts, "options")
  if e then return nil, e end
  opts = opts or {}
  e = validate.known_keys(opts, { wait = true })
    or validate.number(opts.wait, "wait", { min = 0, max = 3600 })
  if e then return nil, e end
  local checked, err = schema.body("customer_create", body)
  if not checked then return nil, err end
  local searches, keys = plan(checked)
  if #searches == 0 then
    return nil, validate.fail("emails", "or phones is required: find_or_create searches by them"
      .. " (an email address, or a phone in E.164)")
  end
  if self._closed then return nil, client.closed_error() end
  local locks, ttl = locks_of(self), self:_flight_ttl()
  local held, lerr = locks:acquire(keys, { ttl = ttl, wait = opts.wait })
  if not held then return nil, lerr end
  local ok, res, rerr, how = pcall(search_then_create, self, searches, checked, locks, held, ttl)
  locks:release(held)
  if not ok then error(res, 0) end
  return res, rerr, how
end

return M
