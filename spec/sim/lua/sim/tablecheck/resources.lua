-- TableCheck shops, franchises, reservation flags, membership programs
-- (read-only fixtures), reservations and memberships.

local common = require("sim.common")
local store = require("sim.tablecheck.store")
local schema = require("sim.tablecheck.schema")
local customers = require("sim.tablecheck.customers")

local M = {}

local null = common.null
local v, arr = store.v, store.arr
local raise = store.raise

local function validate(s, body)
  local errs = schema.validate(s, body, common.config().tablecheck_strict)
  if errs then store.raise_many(422, errs) end
end

-- A record by id, cached for the rest of the request (fixtures mostly).
local function cached(coll, id)
  if type(id) ~= "string" then return nil end
  local c = ngx.ctx.tc_cache
  if not c then
    c = {}
    ngx.ctx.tc_cache = c
  end
  local key = coll .. ":" .. id
  local rec = c[key]
  if rec == nil then
    rec = store.get(coll, id) or false
    c[key] = rec
  end
  return rec or nil
end

-- Sends a page of records: {<key>: [...], pagination}.
local function send_list(items, q, render, spec_key, natural_key)
  local out = common.array()
  for i, rec in ipairs(items) do out[i] = store.project(render(rec), q) end
  local body = store.envelope({ pagination = store.pagination(q) }, spec_key, natural_key or spec_key, out)
  return common.send_json(200, body)
end

local function send_one(obj, spec_key, natural_key, extra)
  local body = store.envelope(extra or {}, spec_key, natural_key or spec_key, obj)
  return common.send_json(200, body)
end

-- Record by id, or by another unique field (slug, ref) when the key is not one.
local function by_id_or(coll, key, field)
  local rec = store.is_oid(key) and store.get(coll, key:lower())
  if rec then return rec end
  return store.find(coll, function(r) return r[field] == key end)
end

---------------------------------------------------------------------------
-- Franchises
---------------------------------------------------------------------------

local function franchise_embed(id)
  local f = cached("franchises", id)
  if not f then return null end
  return { id = f.id, name = f.name }
end

local function render_franchise(f)
  return { id = f.id, name = f.name, name_translations = f.name_translations, slug = f.slug }
end

local FRANCHISE_LIST = store.params(store.PAGING, store.FIELDS, { ids = "ids", names = "list", slugs = "list" })

function M.list_franchises()
  local q = store.query(FRANCHISE_LIST)
  local items = store.page_records("franchises", function(f)
    return store.want(q.ids, f.id) and store.want(q.names, f.name) and store.want(q.slugs, f.slug)
  end, q)
  return send_list(items, q, render_franchise, "franchises")
end

function M.show_franchise(ctx)
  store.query({})
  local f = by_id_or("franchises", ctx.id, "slug")
  if not f then store.not_found("franchise") end
  -- FranchiseShowResponse wraps the Franchise in "reservation"
  return send_one(render_franchise(f), "reservation", "franchise")
end

---------------------------------------------------------------------------
-- Shops
---------------------------------------------------------------------------

local function shop_embed(s)
  return {
    id = s.id, name_translations = s.name_translations, internal_name = s.internal_name, slug = s.slug,
    country = s.country, currency = s.currency, time_zone = s.time_zone,
  }
end

local function render_shop(s)
  local out = shop_embed(s)
  out.service_categories = common.array()
  for i, sc in ipairs(s.service_categories or {}) do
    out.service_categories[i] = {
      id = sc.id, name_translations = sc.name_translations,
      description_translations = v(sc.description_translations), image = null,
    }
  end
  out.franchise = s.franchise
  return out
end

local SHOP_LIST = store.params(store.PAGING, store.FIELDS, { ids = "ids", slugs = "list", franchise_ids = "ids" })

function M.list_shops()
  local q = store.query(SHOP_LIST)
  local items = store.page_records("shops", function(s)
    return store.want(q.ids, s.id) and store.want(q.slugs, s.slug) and store.want(q.franchise_ids, s.franchise.id)
  end, q)
  return send_list(items, q, render_shop, "shops")
end

function M.show_shop(ctx)
  store.query({})
  local s = by_id_or("shops", ctx.id, "slug")
  if not s then store.not_found("shop") end
  -- ShopShowResponse wraps the Shop in "reservation"
  return send_one(render_shop(s), "reservation", "shop")
end

---------------------------------------------------------------------------
-- Reservation flags
---------------------------------------------------------------------------

local function render_flag(f)
  return {
    id = f.id, franchise_id = f.franchise_id, shop_ids = arr(f.shop_ids), all_shops = f.all_shops == true,
    name = f.name, description = v(f.description), icon = v(f.icon), color = v(f.color),
    created_at = f.created_at, updated_at = f.updated_at,
  }
end

local FLAG_LIST = store.params(store.PAGING, store.TIMES, { ids = "ids", shop_ids = "ids" })

function M.list_flags()
  local q = store.query(FLAG_LIST)
  local shops = q.shop_ids and store.set_of(q.shop_ids)
  local items = store.page_records("reservation_flags", function(f)
    if shops then
      -- an empty shop_ids means "all shops"
      local hit = f.all_shops or #(f.shop_ids or {}) == 0
      for _, id in ipairs(f.shop_ids or {}) do
        if shops[id] then hit = true end
      end
      if not hit then return false end
    end
    return store.want(q.ids, f.id) and store.in_time_window(f, q)
  end, q)
  return send_list(items, q, render_flag, "reservation_flags")
end

function M.show_flag(ctx)
  store.query({})
  local f = store.is_oid(ctx.id) and store.get("reservation_flags", ctx.id:lower())
  if not f then store.not_found("reservation flag") end
  -- ReservationFlagShowResponse wraps the flag in "reservation"
  return send_one(render_flag(f), "reservation", "reservation_flag")
end

---------------------------------------------------------------------------
-- Membership programs
---------------------------------------------------------------------------

local function render_program(p)
  local tiers = common.array()
  for i, t in ipairs(p.membership_tiers or {}) do
    tiers[i] = { id = t.id, name = t.name, code = t.code, tier = t.tier }
  end
  return {
    id = p.id, name = p.name, point_multiplier = p.point_multiplier, franchise = p.franchise,
    membership_tiers = tiers, created_at = p.created_at, updated_at = p.updated_at,
  }
end

local PROGRAM_LIST = store.params(store.PAGING, store.TIMES, store.FIELDS, { ids = "ids", membership_ids = "ids" })

function M.list_programs()
  local q = store.query(PROGRAM_LIST)
  local programs_of
  if q.membership_ids then
    programs_of = {}
    for _, id in ipairs(q.membership_ids) do
      local m = store.get("memberships", id)
      if m and m.membership_program_id then programs_of[m.membership_program_id] = true end
    end
  end
  local items = store.page_records("membership_programs", function(p)
    return store.want(q.ids, p.id) and (not programs_of or programs_of[p.id]) and store.in_time_window(p, q)
  end, q)
  return send_list(items, q, render_program, "membership_programs")
end

function M.show_program(ctx)
  store.query({})
  local p = store.is_oid(ctx.id) and store.get("membership_programs", ctx.id:lower())
  if not p then store.not_found("membership program") end
  return send_one(render_program(p), "membership_program")
end

---------------------------------------------------------------------------
-- Customer embeds for reservations and memberships
---------------------------------------------------------------------------

local function customer_embeds(ids, now)
  local out = common.array()
  for _, id in ipairs(ids or {}) do
    local c = store.get("customers", id)
    if c then out[#out + 1] = customers.render(c, now, true) end
  end
  return out
end

local function check_customer_ids(ids, label)
  local out, seen = {}, {}
  for i, id in ipairs(ids) do
    id = id:lower()
    if not store.exists("customers", id) then
      raise(422, "invalid_parameter", label .. "[" .. (i - 1) .. "] does not name an existing customer")
    end
    if not seen[id] then out[#out + 1], seen[id] = id, true end
  end
  return out
end

---------------------------------------------------------------------------
-- Reservations
---------------------------------------------------------------------------

local RES_SCALARS = { "ref", "pax", "pax_adult", "pax_senior", "pax_child", "pax_baby", "source", "channel",
  "special_request", "memo", "memo2", "seat_types", "smoking", "status", "points", "party_name", "room_name",
  "cancel_reason_type", "cancel_reason", "cancelled_by_customer", "send_emails", "send_texts", "email", "phone" }
local SUB_PAX = { "pax_adult", "pax_senior", "pax_child", "pax_baby" }
local DEFAULT_DURATION = 7200

local function visit_history(customer_id, now)
  if not customer_id then return "no_customer" end
  local l = customers.links()[customer_id]
  local n = l and customers.visit_stats(l.res, now).visits or 0
  return ({ "new", "visit2", "visit3" })[n + 1] or "repeater"
end

local function apply_reservation(r, body, now)
  if body.shop_id ~= nil then
    local shop = store.get("shops", body.shop_id)
    if not shop then raise(422, "invalid_parameter", "shop_id does not name a shop of this account") end
    r.shop_id, r.franchise_id = shop.id, shop.franchise.id
  end
  for _, f in ipairs(RES_SCALARS) do
    local x = body[f]
    if x == null then r[f] = nil elseif x ~= nil then r[f] = x end
  end
  if type(body.ref) == "string" and store.find("reservations", function(o)
    return o.ref == body.ref and o.id ~= r.id
  end) then
    raise(422, "invalid_parameter", "ref is already used by another reservation")
  end
  -- pax is the sum of the parts: derive whichever side was not sent
  local parts_given = false
  for _, f in ipairs(SUB_PAX) do
    if body[f] ~= nil then parts_given = true end
  end
  local others = (r.pax_senior or 0) + (r.pax_child or 0) + (r.pax_baby or 0)
  if body.pax == nil and parts_given then
    r.pax = (r.pax_adult or 0) + others
  elseif body.pax_adult == nil and r.pax then
    r.pax_adult = r.pax - others
  end
  if not r.pax or r.pax < 1 then raise(422, "invalid_parameter", "pax must be at least 1") end
  for _, f in ipairs(SUB_PAX) do
    if r[f] and r[f] < 0 then
      raise(422, "invalid_parameter", f .. " must not be negative (pax is the sum of the pax_* fields)")
    end
  end
  if (r.pax_adult or 0) + others ~= r.pax then
    raise(422, "invalid_parameter", "pax must equal pax_adult + pax_senior + pax_child + pax_baby")
  end
  if body.start_at ~= nil and body.start_at ~= null then
    r._s = common.parse_iso8601(body.start_at)
    r.start_at = store.fmt_time(r._s)
  end
  if body.duration ~= nil then
    if body.duration ~= null and body.duration <= 0 then
      raise(422, "invalid_parameter", "duration must be positive")
    end
    r.duration = body.duration ~= null and body.duration or nil
  end
  if body.customer_id == null or body.customer_ref == null then
    r.customer_ids, r.primary_customer_id = {}, nil
  end
  local cid
  if type(body.customer_id) == "string" then
    cid = body.customer_id:lower()
    if not store.exists("customers", cid) then
      raise(422, "invalid_parameter", "customer_id does not name an existing customer")
    end
  elseif type(body.customer_ref) == "string" then
    local c = store.find("customers", function(c) return c.ref == body.customer_ref end)
    if not c then raise(422, "invalid_parameter", "customer_ref does not name an existing customer") end
    cid = c.id
  end
  if cid then r.customer_ids, r.primary_customer_id = { cid }, cid end
  if body.reservation_flag_ids ~= nil then
    local ids = {}
    for i, id in ipairs(body.reservation_flag_ids ~= null and body.reservation_flag_ids or {}) do
      if not store.is_oid(id) or not store.exists("reservation_flags", id) then
        raise(422, "invalid_parameter", "reservation_flag_ids[" .. (i - 1) .. "] does not name a reservation flag")
      end
      ids[#ids + 1] = id:lower()
    end
    r.reservation_flag_ids = ids
  end
  if body.images ~= nil and body.images ~= null then
    r.images = customers.apply_images(r.images, body.images, now, "images")
  end
end

local function render_reservation(r, now)
  local shop = cached("shops", r.shop_id)
  return {
    id = r.id, ref = v(r.ref), franchise_id = v(r.franchise_id), shop_id = v(r.shop_id),
    customer_ids = arr(r.customer_ids), primary_customer_id = v(r.primary_customer_id),
    table_ids = common.array(), service_category_id = null, promo_id = null,
    created_at = r.created_at, updated_at = r.updated_at, start_at = v(r.start_at),
    duration = r.duration or DEFAULT_DURATION,
    pax = v(r.pax), pax_adult = v(r.pax_adult), pax_senior = r.pax_senior or 0, pax_child = r.pax_child or 0,
    pax_baby = r.pax_baby or 0,
    status = v(r.status), source = v(r.source), channel = v(r.channel), provider = v(r.provider),
    provider_ref = v(r.provider_ref), points = v(r.points), seat_types = arr(r.seat_types),
    smoking = v(r.smoking), special_request = v(r.special_request), memo = v(r.memo), memo2 = v(r.memo2),
    visit_history = v(r.visit_history), party_name = v(r.party_name), room_name = v(r.room_name),
    cancel_reason_type = v(r.cancel_reason_type), cancel_reason = v(r.cancel_reason),
    cancelled_by_customer = r.cancelled_by_customer == true,
    send_emails = r.send_emails == true, send_texts = r.send_texts == true, enable_sms = r.send_texts == true,
    email = v(r.email), phone = v(r.phone), sms_number = v(r.phone),
    franchise = franchise_embed(r.franchise_id), shop = shop and shop_embed(shop) or null,
    customers = customer_embeds(r.customer_ids, now),
    images = customers.render_images(r.images, now),
    orders = common.array(), pos_journals = common.array(), payments = common.array(),
    questions = common.array(), tables = common.array(), service_category = null, promo = null,
    -- not in the Reservation schema; the flags themselves come in the show
    -- response's reservation_flags
    reservation_flag_ids = arr(r.reservation_flag_ids),
  }
end

local function send_reservation(r, now, q)
  local obj = render_reservation(r, now)
  if q then obj = store.project(obj, q) end
  local flags = common.array()
  for _, id in ipairs(r.reservation_flag_ids or {}) do
    local f = cached("reservation_flags", id)
    if f then flags[#flags + 1] = render_flag(f) end
  end
  return common.send_json(200, { reservation = obj, reservation_flags = flags })
end

local RES_LIST = store.params(store.PAGING, store.TIMES, store.FIELDS, {
  ids = "ids", customer_ids = "ids", start_at_min = "time", start_at_max = "time",
  sort = { "start_at", "created_at", "updated_at" }, sort_order = { "asc", "desc" },
})
local SORT_FIELD = { start_at = "_s", created_at = "_c", updated_at = "_u" }

function M.list_reservations()
  local q = store.query(RES_LIST)
  local ids, cids = q.ids and store.set_of(q.ids), q.customer_ids and store.set_of(q.customer_ids)
  local items = {}
  for i, r in ipairs(store.all("reservations")) do
    local ok = (not ids or ids[r.id]) and store.in_time_window(r, q)
      and (not q.start_at_min or (r._s or 0) >= q.start_at_min)
      and (not q.start_at_max or (r._s or 0) <= q.start_at_max)
    if ok and cids then ok = false
      for _, cid in ipairs(r.customer_ids or {}) do
        if cids[cid] then ok = true end
      end
    end
    if ok then
      r._pos = i
      items[#items + 1] = r
    end
  end
  local field, desc = SORT_FIELD[q.sort or "start_at"], q.sort_order == "desc"
  table.sort(items, function(a, b)
    local x, y = a[field] or 0, b[field] or 0
    if x ~= y then
      if desc then return x > y end
      return x < y
    end
    return a._pos < b._pos
  end)
  local now = store.now()
  return send_list(store.page_of(items, q), q, function(r) return render_reservation(r, now) end, "reservations")
end

function M.show_reservation(ctx)
  local q = store.query(store.FIELDS)
  local r = by_id_or("reservations", ctx.id, "ref")
  if not r then store.not_found("reservation") end
  return send_reservation(r, store.now(), q)
end

function M.create_reservation()
  local body = store.json_body()
  validate(schema.reservation_create, body)
  local now = store.now()
  local r = store.stamp_new({ id = store.oid(), status = "confirmed", source = "web", provider = "tablecheck" }, now)
  apply_reservation(r, body, now)
  r.visit_history = visit_history(r.primary_customer_id, now)
  store.insert("reservations", r)
  customers.forget_links()
  return send_reservation(r, now)
end

function M.update_reservation(ctx)
  local r = by_id_or("reservations", ctx.id, "ref")
  if not r then store.not_found("reservation") end
  local body = store.json_body()
  validate(schema.reservation_update, body)
  local now = store.now()
  apply_reservation(r, body, now)
  store.put("reservations", store.touch(r, now))
  customers.forget_links()
  return send_reservation(r, now)
end

---------------------------------------------------------------------------
-- Memberships
---------------------------------------------------------------------------

local MEMBERSHIP_SCALARS = { "code", "points", "status", "start_date", "expiry_date" }

local function apply_membership(m, body)
  for _, f in ipairs(MEMBERSHIP_SCALARS) do
    local x = body[f]
    if x == null then m[f] = nil elseif x ~= nil then m[f] = x end
  end
  if type(body.membership_program_id) == "string" then
    local id = body.membership_program_id:lower()
    if not store.exists("membership_programs", id) then
      raise(422, "invalid_parameter", "membership_program_id does not name a membership program")
    end
    m.membership_program_id = id
  end
  if body.membership_tier_id == null then
    m.membership_tier_id = nil
  elseif body.membership_tier_id ~= nil then
    m.membership_tier_id = body.membership_tier_id:lower()
  end
  if m.membership_tier_id then
    local p = store.get("membership_programs", m.membership_program_id)
    local found = false
    for _, t in ipairs(p and p.membership_tiers or {}) do
      if t.id == m.membership_tier_id then found = true end
    end
    if not found then
      raise(422, "invalid_parameter", "membership_tier_id is not a tier of the membership's program")
    end
  end
  if body.customer_ids == null then
    m.customer_ids = {}
  elseif body.customer_ids ~= nil then
    m.customer_ids = check_customer_ids(body.customer_ids, "customer_ids")
  end
end

local function render_membership(m, now)
  local pname, tname = customers.program_names(m.membership_program_id, m.membership_tier_id)
  return {
    id = m.id, code = v(m.code), membership_program_id = v(m.membership_program_id),
    membership_program_name = v(pname), membership_tier_id = v(m.membership_tier_id),
    membership_tier_name = v(tname), status = v(m.status),
    customers = customer_embeds(m.customer_ids, now),
    created_at = m.created_at, updated_at = m.updated_at,
    -- writable through MembershipUpdateParams, missing from the Membership schema
    points = m.points or 0, start_date = v(m.start_date), expiry_date = v(m.expiry_date),
    customer_ids = arr(m.customer_ids),
  }
end

-- MembershipShowResponse / MembershipsListResponse wrap in "reservation(s)"
local function send_membership(m, now)
  return send_one(render_membership(m, now), "reservation", "membership")
end

local MEMBERSHIP_LIST = store.params(store.PAGING, store.TIMES, store.FIELDS, {
  ids = "ids", customer_ids = "ids", code = "string", membership_program_id = "ids",
})

function M.list_memberships()
  local q = store.query(MEMBERSHIP_LIST)
  local cids = q.customer_ids and store.set_of(q.customer_ids)
  local items = store.page_records("memberships", function(m)
    if cids then
      local hit = false
      for _, cid in ipairs(m.customer_ids or {}) do
        if cids[cid] then hit = true end
      end
      if not hit then return false end
    end
    return store.want(q.ids, m.id) and (q.code == nil or m.code == q.code)
      and store.want(q.membership_program_id, m.membership_program_id) and store.in_time_window(m, q)
  end, q)
  local now = store.now()
  return send_list(items, q, function(m) return render_membership(m, now) end, "reservations", "memberships")
end

function M.show_membership(ctx)
  store.query({})
  local m = store.is_oid(ctx.id) and store.get("memberships", ctx.id:lower())
  if not m then store.not_found("membership") end
  return send_membership(m, store.now())
end

function M.create_membership()
  local body = store.json_body()
  validate(schema.membership_create, body)
  local now = store.now()
  local m = store.stamp_new({ id = store.oid(), status = "active", points = 0, customer_ids = {} }, now)
  apply_membership(m, body)
  store.insert("memberships", m)
  customers.forget_links()
  return send_membership(m, now)
end

function M.update_membership(ctx)
  local m = store.is_oid(ctx.id) and store.get("memberships", ctx.id:lower())
  if not m then store.not_found("membership") end
  local body = store.json_body()
  validate(schema.membership_update, body)
  local now = store.now()
  apply_membership(m, body)
  store.put("memberships", store.touch(m, now))
  customers.forget_links()
  return send_membership(m, now)
end

function M.delete_membership(ctx)
  local id = ctx.id:lower()
  if not store.is_oid(id) or not store.exists("memberships", id) then store.not_found("membership") end
  store.delete("memberships", id)
  customers.forget_links()
  return common.send_json(200, { status = "ok" })
end

return M
