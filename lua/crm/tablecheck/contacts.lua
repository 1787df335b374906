--- Phones, emails and the other nested lists of a TableCheck customer: the normal forms used to
-- compare them, both response shapes (phones and phone_objects), and the builder of nested
-- updates (keep, modify or _destroy objects by id, add new ones, the overwrite_* flags).
-- `TableCheck:plan_contacts` calls `plan`. Also `require("crm.tablecheck").contacts`.
-- @module crm.tablecheck.contacts
local http = require "crm.http"
local phones = require "crm.phone"
-- The schemas load on first use (plan checks a body; reading answers needs none of it).
local schema = setmetatable({}, { __index = function(_, k) return require("crm.tablecheck.schema")[k] end })
local validate = require "crm.validate"

local M = {}

local type, pairs, ipairs, next, tostring = type, pairs, ipairs, next, tostring
local fail = validate.fail
local empty_array = http.empty_array

-- ---- normal forms ----

--- The normal form of an email: lower case, no surrounding space.
-- @tparam string s
-- @treturn[1] string the normal form
-- @return[2] `nil` when it is not an email address
function M.normalize_email(s)
  if type(s) ~= "string" then return nil end
  s = s:gsub("^%s+", ""):gsub("%s+$", ""):lower()
  if validate.email(s, "email") then return nil end
  return s
end

--- The normal form of a phone: E.164.
-- E.164 through the library's one normaliser (crm.phone): separators dropped, a 00 prefix
-- read as +; nil for a national number, which cannot be placed without its country (TableCheck
-- has no default country: its contract asks for E.164 phones).
-- @tparam string s
-- @treturn[1] string e.g. `"+81312345678"`
-- @return[2] `nil` for a national number or text that is not a phone
function M.normalize_phone(s)
  return phones.normalize(s)
end

-- ---- response shape ----

-- The API returns phones/emails as strings and phone_objects/email_objects as objects; when a
-- response carries only one of the pair (search results, include_fields) the other is derived
-- on first access, so callers can rely on both. Derived objects have no id. Deriving lazily
-- keeps iter_search_customers exports cheap and keeps what the server did not send out of
-- pairs() and JSON encodings.
local DERIVED = {
  phones = { from = "phone_objects", key = "number" },
  emails = { from = "email_objects", key = "email" },
  phone_objects = { from = "phones", key = "number", objects = true },
  email_objects = { from = "emails", key = "email", objects = true },
}

local LAZY = { __index = function(customer, k)
  local d = DERIVED[k]
  local src = d and rawget(customer, d.from)
  if type(src) ~= "table" then return nil end
  local out = {}
  for _, v in ipairs(src) do
    if d.objects then
      out[#out + 1] = { [d.key] = v }
    elseif type(v) == "table" and v[d.key] ~= nil then
      out[#out + 1] = v[d.key]
    end
  end
  rawset(customer, k, out)
  return out
end }

--- Offers both contact shapes on a customer read from the API.
-- The API returns phones/emails as strings and phone_objects/email_objects as objects; when a
-- response carries only one of the pair (search results, include_fields) the other is derived
-- on first access (derived objects have no id; they stay out of `pairs()` and JSON encodings).
-- Checks that the four contact fields are arrays where present and arranges the derivation.
-- Called on every customer a search yields: a few field reads, no allocation. The client calls
-- it on every customer it returns.
-- @tparam table customer a customer as decoded
-- @treturn[1] table the same customer
-- @return[2] `nil`
-- @treturn[2] string the field that is not an array (`"phones"`, `"email_objects"`, ...)
function M.expose(customer)
  local p, po = customer.phones, customer.phone_objects
  local e, eo = customer.emails, customer.email_objects
  if p ~= nil and type(p) ~= "table" then return nil, "phones" end
  if po ~= nil and type(po) ~= "table" then return nil, "phone_objects" end
  if e ~= nil and type(e) ~= "table" then return nil, "emails" end
  if eo ~= nil and type(eo) ~= "table" then return nil, "email_objects" end
  if (p == nil or po == nil or e == nil or eo == nil) and getmetatable(customer) == nil then
    setmetatable(customer, LAZY)
  end
  return customer
end

-- ---- nested updates ----

-- kind -> where the customer keeps the current objects, the field that holds the value (phones
-- and emails), the check of one value and its normal form.
local KINDS = {
  phones = { current = "phone_objects", key = "number", normalize = M.normalize_phone },
  emails = { current = "email_objects", key = "email", normalize = M.normalize_email },
  addresses = { current = "addresses" },
  socials = { current = "socials" },
  events = { current = "events" },
}
M.KINDS = KINDS

local SECTION_KEYS = { keep = true, modify = true, destroy = true, add = true, set = true,
                       overwrite = true }

local function id_list(v, f)
  if v == nil then return nil end
  if type(v) ~= "table" or v[1] == nil and next(v) ~= nil then return fail(f, "must be an array of ids") end
  for i = 1, #v do
    local e = validate.id(v[i], f .. "[" .. i .. "]")
    if e then return e end
  end
  return nil
end

-- A new or modified value as the object sent: for phones and emails a string or an object,
-- otherwise an object. The value itself is checked here, so errors name the spec's path.
local function as_object(kind, v, field)
  local spec = KINDS[kind]
  local out = {}
  if type(v) == "string" and spec.key then
    out[spec.key] = v
  elseif type(v) == "table" and v[1] == nil then
    for k, x in pairs(v) do out[k] = x end
  else
    return nil, fail(field, spec.key and ("must be the " .. spec.key .. " or an object")
      or "must be an object")
  end
  local value = spec.key and out[spec.key]
  if value ~= nil then
    local f = type(v) == "string" and field or field .. "." .. spec.key
    local e
    if kind == "phones" then
      e = validate.string(value, f) or validate.e164(value, f)
    else
      e = validate.email(value, f)
    end
    if e then return nil, e end
  end
  return out
end

-- Plans one section; appends to `out` (the list sent) and returns overwrite flag | nil, err.
local function plan_section(kind, customer, sec, out)
  local spec, f = KINDS[kind], kind
  local e = validate.table(sec, f, true) or validate.known_keys(sec, SECTION_KEYS, f .. ".")
    or id_list(sec.keep, f .. ".keep") or id_list(sec.destroy, f .. ".destroy")
    or validate.boolean(sec.overwrite, f .. ".overwrite")
    or validate.table(sec.modify, f .. ".modify") or validate.table(sec.add, f .. ".add")
  if e then return nil, e end
  if sec.set ~= nil then
    if not spec.key then return nil, fail(f .. ".set", "is only for phones and emails") end
    if sec.keep or sec.modify or sec.destroy or sec.add or sec.overwrite ~= nil then
      return nil, fail(f .. ".set", "cannot be combined with keep, modify, destroy, add or overwrite")
    end
  end

  local current = customer[spec.current]
  local by_id = {}
  if type(current) == "table" then
    for _, o in ipairs(current) do
      if type(o) == "table" and o.id ~= nil then by_id[tostring(o.id)] = o end
    end
  end
  local used = {}
  local function existing(id, field)
    if not by_id[id] then
      return fail(field, "is not the id of one of this customer's " .. spec.current
        .. " (read the customer first; include_fields may have left them out)")
    end
    if used[id] then return fail(field, "names an id already used by " .. used[id]) end
    used[id] = field
    return nil
  end

  if sec.set ~= nil then
    -- The exact final list: unlisted objects are destroyed and missing values added, so the
    -- objects that stay keep their ids and tags (no overwrite flag needed).
    e = validate.table(sec.set, f .. ".set", true)
    if e then return nil, e end
    local wanted, order = {}, {}
    for i, v in ipairs(sec.set) do
      local n = spec.normalize(v)
      if not n then
        return nil, fail(f .. ".set[" .. i .. "]", kind == "phones" and "must be an E.164 phone number"
          or "must be an email address")
      end
      if not wanted[n] then
        wanted[n] = true
        order[#order + 1] = n
      end
    end
    local have = {}
    for _, o in ipairs(type(current) == "table" and current or {}) do
      local n = type(o) == "table" and spec.normalize(o[spec.key])
      if n and wanted[n] and not have[n] then
        have[n] = true
      elseif type(o) == "table" and o.id ~= nil then
        out[#out + 1] = { id = o.id, _destroy = true }
      end
    end
    for _, n in ipairs(order) do
      if not have[n] then out[#out + 1] = { [spec.key] = n } end
    end
    return false
  end

  for i, id in ipairs(sec.keep or {}) do
    e = existing(id, f .. ".keep[" .. i .. "]")
    if e then return nil, e end
    -- Listed only under overwrite, where leaving an object out would delete it.
    if sec.overwrite then
      local o = { id = id }
      if spec.key then o[spec.key] = by_id[id][spec.key] end
      out[#out + 1] = o
    end
  end
  local ids = {}
  for id in pairs(sec.modify or {}) do ids[#ids + 1] = tostring(id) end
  table.sort(ids)
  for _, id in ipairs(ids) do
    local field = f .. ".modify." .. id
    e = validate.id(id, field) or existing(id, field)
    if e then return nil, e end
    local o
    o, e = as_object(kind, sec.modify[id], field)
    if not o then return nil, e end
    if o.id ~= nil and tostring(o.id) ~= id then return nil, fail(field .. ".id", "must match the key") end
    o.id = id
    out[#out + 1] = o
  end
  for i, id in ipairs(sec.destroy or {}) do
    e = existing(id, f .. ".destroy[" .. i .. "]")
    if e then return nil, e end
    out[#out + 1] = { id = id, _destroy = true }
  end
  for i, v in ipairs(sec.add or {}) do
    local field = f .. ".add[" .. i .. "]"
    if type(v) == "table" and v.id ~= nil then
      return nil, fail(field .. ".id", "must be absent: add is for new entries")
    end
    local o
    o, e = as_object(kind, v, field)
    if not o then return nil, e end
    out[#out + 1] = o
  end
  return sec.overwrite == true
end

local PLAN_ORDER = { "phones", "emails", "addresses", "socials", "events" }
local PLAN_KEYS = {}
for _, kind in ipairs(PLAN_ORDER) do PLAN_KEYS[kind] = true end

--- The nested-update part of a `PUT /customers/{id}` (`TableCheck:plan_contacts`).
-- Sends nothing. `spec.phones`, `spec.emails`, `spec.addresses`, `spec.socials` and
-- `spec.events` are sections:
--
-- * `keep = {id, ...}`: kept as they are (sent only with overwrite, which needs them)
-- * `modify = {[id] = value, ...}`: new value; for phones/emails a string or
--   `{number|email, tag}`
-- * `destroy = {id, ...}`: sent as `{id = id, _destroy = true}`
-- * `add = {value, ...}`: new entries
-- * `overwrite = true`: sets `overwrite_KIND`: whatever is not listed is removed
-- * `set = {value, ...}`: phones/emails only: the exact final list, compared in normal form;
--   unlisted objects are destroyed, missing ones added (alone: no other key with it)
--
-- The result is checked like any update_customer body (E.164 phones, email addresses).
-- @tparam table customer as read (needs phone_objects, email_objects, addresses, ... for the
-- ids it names)
-- @tparam table spec `{phones, emails, addresses, socials, events}`, each a section
-- @treturn[1] table the body for `update_customer`
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` naming the spec's path (`"phones.keep[1]"`,
-- `"emails.set[2]"`; `"spec"` when it changes nothing)
function M.plan(customer, spec)
  local e = validate.table(customer, "customer", true) or validate.table(spec, "spec", true)
    or validate.known_keys(spec, PLAN_KEYS)
  if e then return nil, e end
  local body = {}
  for _, kind in ipairs(PLAN_ORDER) do -- in order, so the first error is always the same one
    if spec[kind] ~= nil then
      local out = {}
      local overwrite, err = plan_section(kind, customer, spec[kind], out)
      if overwrite == nil then return nil, err end
      if overwrite then
        body["overwrite_" .. kind] = true
        body[kind] = #out > 0 and out or empty_array
      elseif #out > 0 then
        body[kind] = out
      end
    end
  end
  if next(body) == nil then return nil, fail("spec", "changes nothing") end
  local checked, err = schema.body("customer_update", body)
  if not checked then return nil, err end
  return checked
end

return M
