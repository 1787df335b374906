-- TableCheck simulator plumbing: errors, ids, timestamps, records in the
-- shared dict, query parameters, paging, response envelopes, field projection
-- and the fixed fixtures (franchise, shops, programs, flags).
--
-- Records are JSON under "tc:<collection>:<id>"; "tc:<collection>:list" is an
-- append-only list of ids in creation order (deleted records leave holes that
-- readers skip). Internal-only record fields start with "_" (_c/_u: created /
-- updated epoch seconds) and never reach a response.

local common = require("sim.common")

local M = {}

local null = common.null
local floor = math.floor

M.BASE = "/api/crm/v1"

---------------------------------------------------------------------------
-- Errors: handlers raise a "problem" and the dispatcher turns it into
-- {errors:[{code,message}]}; messages never contain emails or phone numbers.
---------------------------------------------------------------------------

local PROBLEM = {}

-- Raises a problem with one or several {code, message} entries.
function M.raise(status, code, message)
  error(setmetatable({ status = status, errors = { { code = code, message = message } } }, PROBLEM), 0)
end

function M.raise_many(status, errors)
  error(setmetatable({ status = status, errors = errors }, PROBLEM), 0)
end

function M.is_problem(e) return getmetatable(e) == PROBLEM end

function M.send_errors(status, errors, headers)
  local list = common.array()
  for i, e in ipairs(errors) do list[i] = { code = e.code, message = e.message } end
  return common.send_json(status, { errors = list }, headers)
end

function M.fail(status, code, message, headers)
  return M.send_errors(status, { { code = code, message = message } }, headers)
end

function M.not_found(what)
  M.raise(404, "not_found", what .. " not found")
end

---------------------------------------------------------------------------
-- Time and ids
---------------------------------------------------------------------------

M.now = common.now

-- Epoch seconds -> "2024-03-05T00:21:40.978Z"
function M.fmt_time(t)
  local sec = floor(t)
  local ms = floor((t - sec) * 1000 + 0.5)
  if ms >= 1000 then sec, ms = sec + 1, ms - 1000 end
  return os.date("!%Y-%m-%dT%H:%M:%S", sec) .. string.format(".%03dZ", ms)
end

-- A 24-hex BSON-like ObjectId: 4 bytes of time, 5 random bytes, a 3-byte
-- counter, so ids sort by creation time like Mongo's.
function M.oid()
  local n = common.incr(common.state(), "tc:oid") % 0x1000000
  return string.format("%08x%04x%06x%06x", floor(common.now()),
    math.random(0, 0xffff), math.random(0, 0xffffff), n)
end

function M.is_oid(s)
  return type(s) == "string" and #s == 24 and s:find("^%x+$") ~= nil
end

-- Stamps created/updated times on a new record.
function M.stamp_new(rec, now)
  rec._c, rec._u = now, now
  rec.created_at, rec.updated_at = M.fmt_time(now), M.fmt_time(now)
  return rec
end

function M.touch(rec, now)
  rec._u = now
  rec.updated_at = M.fmt_time(now)
  return rec
end

---------------------------------------------------------------------------
-- Records
---------------------------------------------------------------------------

local function rkey(coll, id) return "tc:" .. coll .. ":" .. id end
local function lname(coll) return "tc:" .. coll .. ":list" end

function M.get(coll, id)
  if type(id) ~= "string" then return nil end
  return common.get_json(common.state(), rkey(coll, id:lower()))
end

function M.exists(coll, id)
  return type(id) == "string" and common.state():get(rkey(coll, id:lower())) ~= nil
end

function M.put(coll, rec)
  common.set_json(common.state(), rkey(coll, rec.id), rec)
  return rec
end

function M.insert(coll, rec)
  M.put(coll, rec)
  common.list_push(common.state(), lname(coll), rec.id)
  return rec
end

function M.delete(coll, id)
  common.state():delete(rkey(coll, id))
end

function M.list_len(coll) return common.list_len(common.state(), lname(coll)) end

-- Id at position i of the creation-order list (may name a deleted record).
function M.list_id(coll, i) return common.list_get(common.state(), lname(coll), i) end

-- All live records of a collection in creation order, decoded.
function M.all(coll)
  local d = common.state()
  local out = {}
  for _, id in ipairs(common.list_items(d, lname(coll))) do
    local rec = common.get_json(d, rkey(coll, id))
    if rec then out[#out + 1] = rec end
  end
  return out
end

-- The records on zero-based page q.page (q.per_page long) among the live
-- records of coll that pass pred (nil: all), in creation order. Without a
-- predicate only that page's records are decoded.
function M.page_records(coll, pred, q)
  local d = common.state()
  local first = q.page * q.per_page + 1
  local last = first + q.per_page - 1
  local out, seen = {}, 0
  for i = 1, M.list_len(coll) do
    local id = M.list_id(coll, i)
    local json = id and d:get(rkey(coll, id))
    if json then
      local rec
      if pred then
        rec = common.decode(json)
        if not pred(rec) then rec = false end
      end
      if rec ~= false then
        seen = seen + 1
        if seen >= first then out[#out + 1] = rec or common.decode(json) end
        if seen >= last then break end
      end
    end
  end
  return out
end

-- Finds the first live record for which pred(rec) is true.
function M.find(coll, pred)
  for _, rec in ipairs(M.all(coll)) do
    if pred(rec) then return rec end
  end
  return nil
end

-- Small JSON values that are not records (job queues, redirects).
function M.get_value(key) return common.get_json(common.state(), "tc:" .. key) end
function M.set_value(key, v, ttl) common.set_json(common.state(), "tc:" .. key, v, ttl) end
function M.delete_value(key) common.state():delete("tc:" .. key) end

---------------------------------------------------------------------------
-- Small helpers shared by the resource modules
---------------------------------------------------------------------------

-- v, or JSON null when v is nil.
function M.v(x)
  if x == nil then return null end
  return x
end

-- A JSON array copy of a Lua sequence (nil -> []).
function M.arr(t)
  local out = common.array()
  for i, x in ipairs(t or {}) do out[i] = x end
  return out
end

function M.contains(list, x)
  for _, y in ipairs(list or {}) do
    if y == x then return true end
  end
  return false
end

function M.set_of(list)
  local s = {}
  for _, x in ipairs(list or {}) do s[x] = true end
  return s
end

function M.copy(t)
  local out = {}
  for k, x in pairs(t) do out[k] = x end
  return out
end

---------------------------------------------------------------------------
-- Request body
---------------------------------------------------------------------------

-- The decoded JSON object body; raises 400 when it is missing or not an object.
function M.json_body()
  local raw, err = common.read_body()
  if not raw then M.raise(400, "bad_request", err) end
  if raw:match("^%s*$") then
    M.raise(400, "parameter_missing", "a JSON request body is required")
  end
  local v = common.decode(raw)
  if v == nil then M.raise(400, "invalid_json", "request body is not valid JSON") end
  if type(v) ~= "table" or not common.is_object(v) then
    M.raise(400, "invalid_json", "request body must be a JSON object")
  end
  return v
end

---------------------------------------------------------------------------
-- Query parameters
---------------------------------------------------------------------------

-- Parameter kinds used by the list endpoints (mirroring the OpenAPI spec):
--   page      zero-based page number, integer >= 0 (default 0)
--   per_page  integer 1..1000 (default 100)
--   ids       array or comma-separated list of 24-hex ids
--   list      array or comma-separated list of strings
--   time      ISO 8601 date-time
--   string    any string
--   {enum}    one of the listed strings
-- `ids[]=a&ids[]=b`, `ids=a&ids=b` and `ids=a,b` are all accepted for lists.

local PER_PAGE_DEFAULT, PER_PAGE_MAX = 100, 1000

local function bad(name, what)
  M.raise(400, "invalid_parameter", "query parameter " .. name .. " " .. what)
end

local function values_of(raw)
  if type(raw) == "table" then return raw end
  if raw == true then return { "" } end
  return { raw }
end

local function one_value(name, raw)
  local vals = values_of(raw)
  if #vals > 1 then bad(name, "must be given once") end
  return vals[1]
end

local function split_list(raw)
  local out = {}
  for _, v in ipairs(values_of(raw)) do
    for part in tostring(v):gmatch("[^,]+") do
      part = part:match("^%s*(.-)%s*$")
      if part ~= "" then out[#out + 1] = part end
    end
  end
  return out
end

local function int_value(name, raw)
  local s = one_value(name, raw)
  if type(s) ~= "string" or not s:find("^%d+$") then bad(name, "must be a non-negative integer") end
  return tonumber(s)
end

-- Reads and checks the query string against spec (name -> kind). Unknown
-- parameters are refused when tablecheck_strict is on. Returns a table of
-- normalised values; page and per_page are always set when listed in spec.
function M.query(spec)
  local raw = ngx.req.get_uri_args(200)
  local strict = common.config().tablecheck_strict
  local args = {}
  for k, v in pairs(raw) do
    local name = type(k) == "string" and k:gsub("%[%]$", "") or tostring(k)
    if args[name] ~= nil then
      -- ids=a&ids[]=b: merge
      local merged = values_of(args[name])
      for _, x in ipairs(values_of(v)) do merged[#merged + 1] = x end
      v = merged
    end
    args[name] = v
  end
  local q = {}
  for name, v in pairs(args) do
    local kind = spec[name]
    if kind == nil then
      if strict then
        local known = {}
        for n in pairs(spec) do known[#known + 1] = n end
        table.sort(known)
        M.raise(400, "unknown_parameter", "unknown query parameter '" .. name
          .. "' (this endpoint takes: " .. table.concat(known, ", ") .. ")")
      end
    elseif kind == "page" then
      q.page = int_value(name, v)
    elseif kind == "per_page" then
      local n = int_value(name, v)
      if n < 1 or n > PER_PAGE_MAX then bad(name, "must be between 1 and " .. PER_PAGE_MAX) end
      q.per_page = n
    elseif kind == "ids" then
      local list = split_list(v)
      for i, id in ipairs(list) do
        if not M.is_oid(id) then bad(name, "must list 24-character hex ids") end
        list[i] = id:lower()
      end
      q[name] = #list > 0 and list or nil -- "ids=" filters nothing
    elseif kind == "list" then
      local list = split_list(v)
      q[name] = #list > 0 and list or nil
    elseif kind == "time" then
      local s = one_value(name, v)
      local t = type(s) == "string" and s:find("T") and common.parse_iso8601(s)
      if not t then bad(name, "must be an ISO 8601 date-time such as 2020-01-29T19:00:00Z") end
      q[name] = t
    elseif kind == "string" then
      q[name] = one_value(name, v)
    elseif type(kind) == "table" then
      local s = one_value(name, v)
      if not M.contains(kind, s) then bad(name, "must be one of: " .. table.concat(kind, ", ")) end
      q[name] = s
    else
      error("bad query spec kind for " .. name)
    end
  end
  if spec.page then q.page = q.page or 0 end
  if spec.per_page then q.per_page = q.per_page or PER_PAGE_DEFAULT end
  return q
end

-- Spec fragments shared by the list endpoints.
M.PAGING = { page = "page", per_page = "per_page" }
M.TIMES = { created_at_min = "time", created_at_max = "time", updated_at_min = "time", updated_at_max = "time" }
M.FIELDS = { include_fields = "string", exclude_fields = "string" }

function M.params(...)
  local out = {}
  for _, part in ipairs({ ... }) do
    for k, v in pairs(part) do out[k] = v end
  end
  return out
end

-- True when rec passes the created/updated window in q (epochs in _c/_u).
function M.in_time_window(rec, q)
  if q.created_at_min and (rec._c or 0) < q.created_at_min then return false end
  if q.created_at_max and (rec._c or 0) > q.created_at_max then return false end
  if q.updated_at_min and (rec._u or 0) < q.updated_at_min then return false end
  if q.updated_at_max and (rec._u or 0) > q.updated_at_max then return false end
  return true
end

-- True when list filter `want` (nil = no filter) contains value.
function M.want(want, value)
  if want == nil then return true end
  return M.contains(want, value)
end

---------------------------------------------------------------------------
-- Paging, envelopes, projection
---------------------------------------------------------------------------

-- Items of the zero-based page q.page of size q.per_page.
function M.page_of(items, q)
  local out = {}
  local first = q.page * q.per_page + 1
  for i = first, math.min(#items, first + q.per_page - 1) do
    out[#out + 1] = items[i]
  end
  return out
end

function M.pagination(q)
  return { page = q.page, per_page = q.per_page }
end

-- Where the spec's wrapper key is a copy-paste slip (e.g. a Shop under
-- "reservation"), tablecheck_envelope picks what we send: "spec" (the literal
-- key), "natural" (the resource's own name) or "both".
function M.envelope(out, spec_key, natural_key, value)
  if spec_key == natural_key then
    out[spec_key] = value
    return out
  end
  local mode = common.config().tablecheck_envelope
  if mode == "spec" or mode == "both" then out[spec_key] = value end
  if mode == "natural" or mode == "both" then out[natural_key] = value end
  return out
end

local ARRAY_MT = getmetatable(common.array())

local function field_tree(s)
  if type(s) ~= "string" or s == "" then return nil end
  local tree = {}
  for path in s:gmatch("[^,]+") do
    path = path:match("^%s*(.-)%s*$")
    local node = tree
    local parts = {}
    for p in path:gmatch("[^%.]+") do parts[#parts + 1] = p end
    for i, p in ipairs(parts) do
      if i == #parts then
        node[p] = true
      else
        if node[p] == true then break end
        node[p] = node[p] or {}
        node = node[p]
      end
    end
  end
  return tree
end

local include, exclude

function include(v, tree)
  if type(v) ~= "table" then return v end
  if getmetatable(v) == ARRAY_MT then
    local out = common.array()
    for i, x in ipairs(v) do out[i] = include(x, tree) end
    return out
  end
  local out = {}
  for k, sub in pairs(tree) do
    local x = v[k]
    if x ~= nil then out[k] = (sub == true) and x or include(x, sub) end
  end
  return out
end

function exclude(v, tree)
  if type(v) ~= "table" then return v end
  if getmetatable(v) == ARRAY_MT then
    local out = common.array()
    for i, x in ipairs(v) do out[i] = exclude(x, tree) end
    return out
  end
  local out = {}
  for k, x in pairs(v) do
    local sub = tree[k]
    if sub == nil then
      out[k] = x
    elseif sub ~= true then
      out[k] = exclude(x, sub)
    end
  end
  return out
end

-- Applies include_fields / exclude_fields (dot notation) to one rendered object.
function M.project(obj, q)
  local inc, exc = field_tree(q.include_fields), field_tree(q.exclude_fields)
  if inc then obj = include(obj, inc) end
  if exc then obj = exclude(obj, exc) end
  return obj
end

---------------------------------------------------------------------------
-- Fixtures: created on the first TableCheck request after start or reset
---------------------------------------------------------------------------

local FIXTURE_TIME = 1591099200 -- 2020-06-02T12:00:00Z

M.FIXTURES = {
  franchise_id = "5ed64e249551e80639a4d995",
  shop_ids = { "5ed64e279551e80639a4da51", "5ed64e279551e80639a4da52" },
  membership_program_ids = { "5ed64e2a9551e80639a4db01", "5ed64e2a9551e80639a4db02" },
  membership_tier_ids = {
    ["5ed64e2a9551e80639a4db01"] = {
      "5ed64e2a9551e80639a4db11", "5ed64e2a9551e80639a4db12", "5ed64e2a9551e80639a4db13",
    },
    ["5ed64e2a9551e80639a4db02"] = { "5ed64e2a9551e80639a4db21" },
  },
  reservation_flag_ids = { "5ed64e2b9551e80639a4dc01", "5ed64e2b9551e80639a4dc02" },
}

local function fixture(rec)
  return M.stamp_new(rec, FIXTURE_TIME)
end

local function create_fixtures()
  local F = M.FIXTURES
  local franchise = { id = F.franchise_id, name = "Sim Dining Co." }
  M.insert("franchises", fixture({
    id = F.franchise_id, name = "Sim Dining Co.", slug = "sim-dining",
    name_translations = { en = "Sim Dining Co.", ja = "シムダイニング株式会社" },
  }))
  M.insert("shops", fixture({
    id = F.shop_ids[1], slug = "sim-paris-cafe", internal_name = "Paris Cafe",
    name_translations = { en = "Paris Cafe", fr = "Café de Paris", ja = "カフェデパリ" },
    country = "JP", currency = "JPY", time_zone = "Asia/Tokyo", franchise = franchise,
    service_categories = { {
      id = "5ed64e299551e80639a4da61",
      name_translations = { en = "Sushi Bar", ja = "寿司バー" },
      description_translations = { en = "The sushi bar at our restaurant." },
    } },
  }))
  M.insert("shops", fixture({
    id = F.shop_ids[2], slug = "sim-seattle-grill", internal_name = "Seattle Grill",
    name_translations = { en = "Seattle Grill" },
    country = "US", currency = "USD", time_zone = "America/Los_Angeles", franchise = franchise,
    service_categories = {},
  }))
  local tiers = F.membership_tier_ids
  M.insert("membership_programs", fixture({
    id = F.membership_program_ids[1], name = "Sim Rewards", point_multiplier = "1.0", franchise = franchise,
    membership_tiers = {
      { id = tiers[F.membership_program_ids[1]][1], name = "Silver", code = "silver", tier = 1 },
      { id = tiers[F.membership_program_ids[1]][2], name = "Gold", code = "gold", tier = 2 },
      { id = tiers[F.membership_program_ids[1]][3], name = "Platinum", code = "platinum", tier = 3 },
    },
  }))
  M.insert("membership_programs", fixture({
    id = F.membership_program_ids[2], name = "Sim Wine Club", point_multiplier = "2.0", franchise = franchise,
    membership_tiers = {
      { id = tiers[F.membership_program_ids[2]][1], name = "Member", code = "member", tier = 1 },
    },
  }))
  M.insert("reservation_flags", fixture({
    id = F.reservation_flag_ids[1], franchise_id = F.franchise_id, shop_ids = {}, all_shops = true,
    name = "VIP", description = "Very important guest", icon = "star", color = "#f5a623",
  }))
  M.insert("reservation_flags", fixture({
    id = F.reservation_flag_ids[2], franchise_id = F.franchise_id, shop_ids = { F.shop_ids[1] },
    all_shops = false, name = "Allergy", description = "Check allergies before service",
    icon = "alert", color = "#d0021b",
  }))
end

-- Creates the fixtures once per reset (the "add" makes it happen once).
function M.ensure_fixtures()
  local d = common.state()
  if d:get("tc:fixtures") then return end
  if d:add("tc:fixtures", true) then create_fixtures() end
end

return M
