-- TableCheck customers: GET/POST /customers, GET/PUT/DELETE /customers/{id};
-- nested phones/emails/addresses/events/socials/shop memos, images with
-- delayed processing, merges with a delayed move of reservations,
-- memberships and images, rendering (Customer, CustomerEmbed and
-- ElasticCustomer), bulk seeding and synthetic customers.

local common = require("sim.common")
local store = require("sim.tablecheck.store")
local schema = require("sim.tablecheck.schema")

local M = {}

local null = common.null
local v, arr = store.v, store.arr
local raise = store.raise

---------------------------------------------------------------------------
-- Links: reservations and memberships per customer id, built once per
-- request (after every write the handler made) and cached in ngx.ctx.
---------------------------------------------------------------------------

local EMPTY_LINKS = { res = {}, mem = {} }

function M.links()
  local cached = ngx.ctx.tc_links
  if cached then return cached end
  local by = {}
  local function slot(cid)
    local s = by[cid]
    if not s then
      s = { res = {}, mem = {} }
      by[cid] = s
    end
    return s
  end
  for _, r in ipairs(store.all("reservations")) do
    for _, cid in ipairs(r.customer_ids or {}) do table.insert(slot(cid).res, r) end
  end
  for _, m in ipairs(store.all("memberships")) do
    for _, cid in ipairs(m.customer_ids or {}) do table.insert(slot(cid).mem, m) end
  end
  ngx.ctx.tc_links = by
  return by
end

function M.forget_links() ngx.ctx.tc_links = nil end

-- Membership programs by id (fixtures; read once per request).
function M.programs()
  local cached = ngx.ctx.tc_programs
  if cached then return cached end
  local by = {}
  for _, p in ipairs(store.all("membership_programs")) do by[p.id] = p end
  ngx.ctx.tc_programs = by
  return by
end

-- Program name and tier name for ids (nil when unknown).
function M.program_names(program_id, tier_id)
  local p = M.programs()[program_id]
  if not p then return nil, nil end
  for _, t in ipairs(p.membership_tiers or {}) do
    if t.id == tier_id then return p.name, t.name end
  end
  return p.name, nil
end

---------------------------------------------------------------------------
-- Visit statistics derived from a customer's reservations
---------------------------------------------------------------------------

local NOT_A_VISIT = { cancelled = true, noshow = true, rejected = true }

local function visit_stats(res_list, now)
  local s = { visits = 0, cancels = 0, noshows = 0, by_shop = {}, prev = nil, next = nil }
  for _, r in ipairs(res_list) do
    local st = r._s or 0
    if r.status == "cancelled" then
      s.cancels = s.cancels + 1
    elseif r.status == "noshow" then
      s.noshows = s.noshows + 1
    elseif not NOT_A_VISIT[r.status] then
      if st < now then
        s.visits = s.visits + 1
        s.by_shop[r.shop_id] = (s.by_shop[r.shop_id] or 0) + 1
        if not s.prev or st > s.prev then s.prev = st end
      elseif not s.next or st < s.next then
        s.next = st
      end
    end
  end
  return s
end
M.visit_stats = visit_stats

---------------------------------------------------------------------------
-- Images (customers and reservations share these)
---------------------------------------------------------------------------

-- The seed's list of accepted MIME types.
local ALLOWED_TYPES = { "image/jpg", "image/jpeg", "image/png", "image/gif", "image/bmp", "image/heic",
  "image/tiff", "image/webp", "image/svg+xml" }
local ALLOWED = store.set_of(ALLOWED_TYPES)

local EXT_TYPES = {
  jpg = "image/jpeg", jpeg = "image/jpeg", jpe = "image/jpeg", jfif = "image/jpeg",
  png = "image/png", gif = "image/gif", bmp = "image/bmp", heic = "image/heic",
  tif = "image/tiff", tiff = "image/tiff", webp = "image/webp", svg = "image/svg+xml",
  -- common types that are not accepted, so the refusal can name them
  heif = "image/heif", avif = "image/avif", ico = "image/x-icon", jxl = "image/jxl",
  pdf = "application/pdf", txt = "text/plain", html = "text/html", htm = "text/html",
  mp4 = "video/mp4", mov = "video/quicktime", zip = "application/zip",
}

-- The MIME type inferred from the URL's last path segment; no extension
-- means image/jpeg (as with the seed's https://i.pravatar.cc/300).
local function url_type(url)
  local path = url:gsub("[?#].*$", ""):gsub("^[^:]+://[^/]*", "")
  local last = path:match("([^/]*)$") or ""
  local ext = last:match("%.([^.]+)$")
  if not ext then return "image/jpeg" end
  return EXT_TYPES[ext:lower()] or "application/octet-stream"
end

-- Applies an images array (create form, or create/destroy form on update)
-- to a list of stored images; returns the new list.
function M.apply_images(images, incoming, now, label)
  local out = {}
  for _, img in ipairs(images or {}) do out[#out + 1] = img end
  for i, o in ipairs(incoming) do
    local p = label .. "[" .. (i - 1) .. "]"
    if o.id ~= nil and o.id ~= null then
      local idx
      for j, img in ipairs(out) do
        if img.id == o.id:lower() then idx = j end
      end
      if not idx then raise(422, "invalid_parameter", p .. ".id does not name an image of this record") end
      if o._destroy == true then
        table.remove(out, idx)
      elseif o.image_upload_url ~= nil then
        raise(422, "image_update_not_permitted", p .. ": an existing image cannot be changed;"
          .. " destroy it with {id, _destroy: true} and upload a new one")
      end
    else
      if o._destroy == true then raise(422, "invalid_parameter", p .. "._destroy needs the id of the image") end
      local url = o.image_upload_url
      if url == nil or url == null then raise(422, "parameter_missing", p .. ".image_upload_url is required") end
      local ct = url_type(url)
      if not ALLOWED[ct] then
        raise(422, "invalid_image", p .. ".image_upload_url: content type " .. ct
          .. " is not allowed (allowed: " .. table.concat(ALLOWED_TYPES, ", ") .. ")")
      end
      out[#out + 1] = {
        id = store.oid(), content_type = ct, fingerprint = ngx.md5(url),
        created_at = store.fmt_time(now), _t = now, _src = url,
      }
    end
  end
  return out
end

local CDN = "https://cdn.tablecheck.com"
local VARIANTS = { { "original", "original" }, { "large", "xl" }, { "medium", "lg" }, { "small", "sm" } }

-- An image as the API shows it: url null and no variants until
-- tablecheck_image_delay seconds after the upload, then url + 4 variants.
function M.render_image(img, now, delay)
  local out = {
    id = img.id, url = null, content_type = img.content_type, dimensions = null,
    fingerprint = img.fingerprint, image_variants = common.array(), tags = common.array(),
    created_at = img.created_at,
  }
  local ready_at = (img._t or 0) + delay
  if now < ready_at then return out end
  local h, ver = ngx.md5(img.id):sub(1, 8), tostring(math.floor(ready_at))
  local full = { 300, 300 }
  out.url = CDN .. "/xl/" .. h .. ".jpg?" .. ver
  out.dimensions = arr(full)
  for i, var in ipairs(VARIANTS) do
    local name, dir = var[1], var[2]
    out.image_variants[i] = {
      variant = name,
      url = CDN .. "/" .. dir .. "/" .. h .. (name == "original" and "" or ".jpg") .. "?" .. ver,
      content_type = name == "original" and img.content_type or "image/jpeg",
      dimensions = name == "small" and arr({ 256, 256 }) or arr(full),
    }
  end
  return out
end

function M.render_images(images, now)
  local delay = common.config().tablecheck_image_delay
  local out = common.array()
  for i, img in ipairs(images or {}) do out[i] = M.render_image(img, now, delay) end
  return out
end

---------------------------------------------------------------------------
-- Nested customer objects
---------------------------------------------------------------------------

-- name -> { string-form key (phones/emails only), key required on new
-- objects, fields shown in responses }
local NESTED = {
  phones = { key = "number", required = "number", fields = { "id", "number", "tag", "created_at", "updated_at" } },
  emails = { key = "email", required = "email", fields = { "id", "email", "tag", "created_at", "updated_at" } },
  socials = { required = "username", fields = { "id", "service", "username", "created_at", "updated_at" } },
  events = { fields = { "id", "tag", "date", "months", "day", "memo", "created_at", "updated_at" } },
  addresses = { fields = { "id", "tag", "street", "street2", "city", "region", "postal_code", "country",
    "created_at", "updated_at" } },
  shop_memos = { fields = { "id", "shop_id", "memo", "created_at", "updated_at" } },
}

local function same_value(name, a, b)
  if name == "emails" then return a:lower() == b:lower() end
  return a == b
end

local function new_nested(name, fields, now)
  local o = { id = store.oid(), created_at = store.fmt_time(now), updated_at = store.fmt_time(now) }
  for k, x in pairs(fields) do
    if k ~= "id" and k ~= "_destroy" and k ~= "created_at" and k ~= "updated_at" and x ~= null then o[k] = x end
  end
  if name == "phones" or name == "emails" then o.tag = o.tag or "none" end
  return o
end

-- The seed's PUT semantics. Strings (phones/emails only) are appended,
-- skipping ones already present, unless overwrite is set. Objects: {id, ...}
-- modifies, {id, _destroy: true} removes, no id adds; with overwrite, objects
-- not mentioned are dropped.
local function apply_nested(name, list, incoming, overwrite, now)
  local spec = NESTED[name]
  list = list or {}
  if type(incoming[1]) == "string" then
    local out = {}
    if not overwrite then
      for _, o in ipairs(list) do out[#out + 1] = o end
    end
    for _, s in ipairs(incoming) do
      local dup = false
      for _, o in ipairs(out) do
        if o[spec.key] and same_value(name, o[spec.key], s) then dup = true end
      end
      if not dup then out[#out + 1] = new_nested(name, { [spec.key] = s }, now) end
    end
    return out
  end
  local by_id = {}
  for _, o in ipairs(list) do by_id[o.id] = o end
  local out, listed, destroyed = {}, {}, {}
  if not overwrite then
    for _, o in ipairs(list) do out[#out + 1] = o end
  end
  for i, o in ipairs(incoming) do
    local p = name .. "[" .. (i - 1) .. "]"
    local id = o.id ~= null and o.id or nil
    if id then
      id = id:lower()
      local existing = by_id[id]
      if not existing or destroyed[id] then
        raise(422, "invalid_parameter", p .. ".id does not name one of this customer's " .. name)
      end
      if o._destroy == true then
        destroyed[id] = true
      else
        for k, x in pairs(o) do
          if k ~= "id" and k ~= "_destroy" and k ~= "created_at" and k ~= "updated_at" then
            if x == null then existing[k] = nil else existing[k] = x end
          end
        end
        if spec.required and existing[spec.required] == nil then
          raise(422, "parameter_missing", p .. "." .. spec.required .. " cannot be removed")
        end
        existing.updated_at = store.fmt_time(now)
        if overwrite and not listed[id] then out[#out + 1] = existing end
        listed[id] = true
      end
    else
      if o._destroy == true then raise(422, "invalid_parameter", p .. "._destroy needs the id of the object") end
      if spec.required and (o[spec.required] == nil or o[spec.required] == null) then
        raise(422, "parameter_missing", p .. "." .. spec.required .. " is required")
      end
      out[#out + 1] = new_nested(name, o, now)
    end
  end
  local kept = {}
  for _, o in ipairs(out) do
    if not destroyed[o.id] then kept[#kept + 1] = o end
  end
  return kept
end

local function render_nested(name, list)
  local fields = NESTED[name].fields
  local out = common.array()
  for i, o in ipairs(list or {}) do
    local r = {}
    for _, f in ipairs(fields) do r[f] = v(o[f]) end
    if name == "events" and type(o.months) == "table" then r.months = arr(o.months) end
    out[i] = r
  end
  return out
end

---------------------------------------------------------------------------
-- Applying CustomerCreateParams / CustomerUpdateParams
---------------------------------------------------------------------------

-- Request fields stored under the Customer object's names (the spec's
-- request and response schemas name several fields differently).
local SCALARS = {
  parent_shop_id = "parent_shop_id", franchise_id = "franchise_id", name_prefix = "name_prefix",
  first_name = "first_name", last_name = "last_name", company_name = "company_name",
  kanji_first_name = "alt_first_name", kanji_last_name = "alt_last_name",
  title = "company_title", division = "company_division",
  source = "source", age_range = "age_range", country = "country", memo = "memo",
  email_marketing = "allow_marketing", direct_mail = "allow_direct_mail", email_reminders = "email_reminders",
  is_incognito = "is_incognito", is_temporary = "is_temporary", allow_surveys = "allow_surveys",
  base_count_visits = "base_visits", base_count_cancels = "base_cancels", base_count_noshows = "base_noshows",
  tags = "tags", likes = "likes", dislikes = "dislikes", allerges = "allergies", allergies = "allergies",
}

local SUPPORTED_LOCALES = store.set_of(schema.LOCALES)

local function check_refs(body)
  if body.franchise_id ~= nil and body.franchise_id ~= null
    and not store.exists("franchises", body.franchise_id) then
    raise(422, "invalid_parameter", "franchise_id does not name a franchise of this account")
  end
  if body.parent_shop_id ~= nil and body.parent_shop_id ~= null
    and not store.exists("shops", body.parent_shop_id) then
    raise(422, "invalid_parameter", "parent_shop_id does not name a shop of this account")
  end
  for i, sm in ipairs(type(body.shop_memos) == "table" and body.shop_memos or {}) do
    if type(sm.shop_id) == "string" and not store.exists("shops", sm.shop_id) then
      raise(422, "invalid_parameter", "shop_memos[" .. (i - 1) .. "].shop_id does not name a shop of this account")
    end
  end
end

-- Changes rec according to a validated body. Raises a problem (and stores
-- nothing: rec is a private copy) when a reference is wrong.
function M.apply(rec, body, now)
  check_refs(body)
  for param, field in pairs(SCALARS) do
    local x = body[param]
    if x == null then
      rec[field] = nil
    elseif x ~= nil then
      if field == "franchise_id" or field == "parent_shop_id" then x = x:lower() end
      rec[field] = x
    end
  end
  if body.sex ~= nil then
    local s = tonumber(body.sex)
    rec.gender = (s == 1 and "male") or (s == 2 and "female") or nil
  end
  if body.locale ~= nil then
    rec.locale = SUPPORTED_LOCALES[body.locale] and body.locale or nil
  end
  for name in pairs(NESTED) do
    local incoming = body[name]
    if incoming == null then
      rec[name] = {}
    elseif incoming ~= nil then
      rec[name] = apply_nested(name, rec[name], incoming, body["overwrite_" .. name] == true, now)
    end
  end
  if body.images ~= nil and body.images ~= null then
    rec.images = M.apply_images(rec.images, body.images, now, "images")
  end
end

---------------------------------------------------------------------------
-- Merging
---------------------------------------------------------------------------

-- Where a merged (destroyed) customer's things go: follows merge redirects.
function M.resolve(id)
  for _ = 1, 100 do
    local nxt = store.get_value("redirect:" .. id)
    if not nxt then return id end
    id = nxt
  end
  return id
end

-- Checks merge_customer_ids; returns the distinct secondary ids.
local function merge_targets(primary_id, ids)
  local out, seen = {}, {}
  for i, id in ipairs(ids) do
    local p = "merge_customer_ids[" .. (i - 1) .. "]"
    id = id:lower()
    if id == primary_id then
      raise(422, "invalid_parameter", p .. " is the customer being updated; a customer cannot be merged into itself")
    end
    if not seen[id] then
      if not store.exists("customers", id) then
        raise(422, "invalid_parameter", p .. " does not name an existing customer")
      end
      seen[id] = true
      out[#out + 1] = id
    end
  end
  return out
end

-- Destroys the secondaries now; queues the move of their reservations,
-- memberships and images to run tablecheck_merge_delay seconds later.
local function merge(primary, secondary_ids, now)
  local merged = primary.merged_customer_ids or {}
  local have = store.set_of(merged)
  local images = {}
  for _, sid in ipairs(secondary_ids) do
    local sec = store.get("customers", sid)
    for _, id in ipairs(sec.merged_customer_ids or {}) do
      if not have[id] then merged[#merged + 1], have[id] = id, true end
    end
    if not have[sid] then merged[#merged + 1], have[sid] = sid, true end
    for _, img in ipairs(sec.images or {}) do images[#images + 1] = img end
    store.set_value("redirect:" .. sid, primary.id)
    store.delete("customers", sid)
  end
  primary.merged_customer_ids = merged
  local jid = common.incr(common.state(), "tc:jobseq")
  store.set_value("job:" .. jid, {
    primary = primary.id, secondaries = secondary_ids, images = images,
    due = now + common.config().tablecheck_merge_delay,
  })
  local pending = store.get_value("jobs") or {}
  pending[#pending + 1] = jid
  store.set_value("jobs", pending)
end

local function move_refs(coll, moved, target, now)
  for _, r in ipairs(store.all(coll)) do
    local changed, ids, seen = false, {}, {}
    for _, cid in ipairs(r.customer_ids or {}) do
      if moved[cid] then cid, changed = target, true end
      if not seen[cid] then ids[#ids + 1], seen[cid] = cid, true end
    end
    if r.primary_customer_id and moved[r.primary_customer_id] then
      r.primary_customer_id, changed = target, true
    end
    if changed then
      r.customer_ids = ids
      store.put(coll, store.touch(r, now))
    end
  end
end

local function run_job(job, now)
  local target = M.resolve(job.primary)
  local moved = store.set_of(job.secondaries)
  move_refs("reservations", moved, target, now)
  move_refs("memberships", moved, target, now)
  local c = store.get("customers", target)
  if c and #(job.images or {}) > 0 then
    c.images = c.images or {}
    for _, img in ipairs(job.images) do c.images[#c.images + 1] = img end
    store.put("customers", store.touch(c, now))
  end
end

-- Runs every queued merge job that is due. Called at the start of each
-- TableCheck request and right after a merge (so a delay of 0 is immediate).
function M.run_due_jobs(now)
  local pending = store.get_value("jobs")
  if not pending or #pending == 0 then return end
  local left, ran = {}, false
  for _, jid in ipairs(pending) do
    local job = store.get_value("job:" .. jid)
    if job and job.due <= now then
      run_job(job, now)
      store.delete_value("job:" .. jid)
      ran = true
    elseif job then
      left[#left + 1] = jid
    end
  end
  store.set_value("jobs", left)
  if ran then M.forget_links() end
end

---------------------------------------------------------------------------
-- Rendering
---------------------------------------------------------------------------

local function full_name(rec)
  local parts = {}
  if rec.first_name and rec.first_name ~= "" then parts[#parts + 1] = rec.first_name end
  if rec.last_name and rec.last_name ~= "" then parts[#parts + 1] = rec.last_name end
  if #parts == 0 then return null end
  return table.concat(parts, " ")
end

local function strings_of(list, key)
  local out = common.array()
  for i, o in ipairs(list or {}) do out[i] = o[key] end
  return out
end

local function membership_embed(m)
  local pname, tname = M.program_names(m.membership_program_id, m.membership_tier_id)
  return {
    id = m.id, code = v(m.code), membership_program_id = v(m.membership_program_id),
    membership_program_name = v(pname), membership_tier_id = v(m.membership_tier_id),
    membership_tier_name = v(tname), status = v(m.status), points = v(m.points),
  }
end

-- The Customer object. embed=true gives CustomerEmbed (no images, counts).
function M.render(rec, now, embed)
  local l = M.links()[rec.id] or EMPTY_LINKS
  local memberships = common.array()
  for i, m in ipairs(l.mem) do memberships[i] = membership_embed(m) end
  local out = {
    id = rec.id, ref = v(rec.ref), franchise_id = v(rec.franchise_id),
    created_at = rec.created_at, updated_at = rec.updated_at,
    name = full_name(rec), first_name = v(rec.first_name), last_name = v(rec.last_name),
    alt_first_name = v(rec.alt_first_name), alt_last_name = v(rec.alt_last_name),
    alpha_first_name = v(rec.alpha_first_name), alpha_last_name = v(rec.alpha_last_name),
    company_name = v(rec.company_name), company_title = v(rec.company_title),
    company_division = v(rec.company_division), gender = v(rec.gender), locale = v(rec.locale),
    source = v(rec.source), memo = v(rec.memo),
    phones = strings_of(rec.phones, "number"), phone_objects = render_nested("phones", rec.phones),
    emails = strings_of(rec.emails, "email"), email_objects = render_nested("emails", rec.emails),
    events = render_nested("events", rec.events), socials = render_nested("socials", rec.socials),
    tags = arr(rec.tags), likes = arr(rec.likes), dislikes = arr(rec.dislikes), allergies = arr(rec.allergies),
    is_temporary = rec.is_temporary == true, allow_marketing = rec.allow_marketing == true,
    allow_direct_mail = rec.allow_direct_mail == true, allow_surveys = rec.allow_surveys == true,
    is_incognito = rec.is_incognito == true,
    addresses = render_nested("addresses", rec.addresses),
    memberships = memberships,
    parent_shop_id = v(rec.parent_shop_id),
    merged_customer_ids = arr(rec.merged_customer_ids),
    -- writable through CustomerUpdateParams but missing from the Customer
    -- schema; shown so what a client writes can be read back
    name_prefix = v(rec.name_prefix), country = v(rec.country), age_range = v(rec.age_range),
    email_reminders = rec.email_reminders == true, shop_memos = render_nested("shop_memos", rec.shop_memos),
  }
  if embed then return out end
  local s = visit_stats(l.res, now)
  out.images = M.render_images(rec.images, now)
  out.visits_count = (rec.base_visits or 0) + s.visits
  out.cancels_count = (rec.base_cancels or 0) + s.cancels
  out.noshows_count = (rec.base_noshows or 0) + s.noshows
  out.visits_count_by_shop_id = s.by_shop -- {} encodes as an object
  out.previous_visit_at = s.prev and store.fmt_time(s.prev) or null
  out.next_visit_at = s.next and store.fmt_time(s.next) or null
  return out
end

-- The ElasticCustomer object returned by POST /customer_search.
function M.render_elastic(rec)
  local l = M.links()[rec.id] or EMPTY_LINKS
  local memberships = common.array()
  for i, m in ipairs(l.mem) do
    memberships[i] = {
      id = m.id, code = v(m.code), membership_program_id = v(m.membership_program_id),
      membership_tier_id = v(m.membership_tier_id),
    }
  end
  return {
    id = rec.id, created_at = rec.created_at, updated_at = rec.updated_at,
    name = full_name(rec), first_name = v(rec.first_name), last_name = v(rec.last_name),
    alt_first_name = v(rec.alt_first_name), alt_last_name = v(rec.alt_last_name),
    company_name = v(rec.company_name), company_title = v(rec.company_title),
    company_division = v(rec.company_division), gender = v(rec.gender), locale = v(rec.locale),
    phones = strings_of(rec.phones, "number"), emails = strings_of(rec.emails, "email"),
    tags = arr(rec.tags), likes = arr(rec.likes), dislikes = arr(rec.dislikes), allergies = arr(rec.allergies),
    is_temporary = rec.is_temporary == true, allow_marketing = rec.allow_marketing == true,
    allow_direct_mail = rec.allow_direct_mail == true, memo = v(rec.memo),
    addresses = render_nested("addresses", rec.addresses),
    memberships = memberships,
  }
end

---------------------------------------------------------------------------
-- Synthetic customers: tablecheck_synthetic_customers = N makes customer
-- search (and GET /customers/{id}) see N more customers computed from their
-- index, never stored, so exports of millions run in constant memory.
---------------------------------------------------------------------------

local SYN_PREFIX = "5f000000"
local SYN_BASE = 1577836800 -- 2020-01-01T00:00:00Z; customer i was created i minutes later
local SYN_FIRST = { "Jim", "Aiko", "Maria", "Kenji", "Sofia", "Liam", "Yuki", "Noah", "Emma", "Hiro",
  "Olivia", "Sora", "Lucas", "Mei", "Ethan", "Hana" }

-- Synthetic customer i (0-based) as a stored-record-shaped table.
function M.synthetic(i)
  local F = store.FIXTURES
  local hex = string.format("%016x", i)
  local t = SYN_BASE + i * 60
  local ts = store.fmt_time(t)
  local rec = {
    id = SYN_PREFIX .. hex, franchise_id = F.franchise_id, parent_shop_id = F.shop_ids[i % 2 + 1],
    first_name = SYN_FIRST[i % #SYN_FIRST + 1], last_name = string.format("Synthetic%07d", i),
    gender = (i % 2 == 0) and "male" or "female", locale = (i % 4 == 0) and "ja" or "en",
    source = "import", allow_marketing = i % 2 == 0, allow_direct_mail = i % 3 == 0,
    phones = {}, emails = {}, _c = t, _u = t, created_at = ts, updated_at = ts,
  }
  if i % 3 ~= 2 then
    rec.phones[1] = { id = "5f000001" .. hex, number = string.format("+1206%07d", i % 10000000),
      tag = "mobile", created_at = ts, updated_at = ts }
  end
  if i % 5 ~= 4 then
    rec.emails[1] = { id = "5f000002" .. hex, email = string.format("synthetic%07d@example.com", i),
      tag = "none", created_at = ts, updated_at = ts }
  end
  return rec
end

-- The synthetic customer with this id, or nil.
local function synthetic_by_id(id)
  if id:sub(1, 8) ~= SYN_PREFIX then return nil end
  local i = tonumber(id:sub(9), 16)
  if not i or i >= common.config().tablecheck_synthetic_customers then return nil end
  return M.synthetic(i)
end

---------------------------------------------------------------------------
-- Handlers
---------------------------------------------------------------------------

local LIST_PARAMS = store.params(store.PAGING, store.TIMES, store.FIELDS, { ids = "ids", shop_ids = "ids" })
local SHOW_PARAMS = store.FIELDS

local function validate(s, body)
  local errs = schema.validate(s, body, common.config().tablecheck_strict)
  if errs then store.raise_many(422, errs) end
end

local function send_customer(rec, now, q)
  local out = M.render(rec, now)
  if q then out = store.project(out, q) end
  return common.send_json(200, { customer = out })
end

function M.list()
  local q = store.query(LIST_PARAMS)
  local max_pages = common.config().tablecheck_customers_max_pages
  if q.page >= max_pages then
    raise(400, "page_limit_exceeded", "GET /customers returns at most " .. max_pages
      .. " pages (page 0 to " .. (max_pages - 1) .. ", at most 1000 per page); use POST /customer_search"
      .. " to read more customers")
  end
  local pred
  if q.ids or q.shop_ids or q.created_at_min or q.created_at_max or q.updated_at_min or q.updated_at_max then
    local ids, shops = q.ids and store.set_of(q.ids), q.shop_ids and store.set_of(q.shop_ids)
    pred = function(rec)
      return (not ids or ids[rec.id]) and (not shops or shops[rec.parent_shop_id or ""])
        and store.in_time_window(rec, q)
    end
  end
  local now = store.now()
  local out = common.array()
  for i, rec in ipairs(store.page_records("customers", pred, q)) do
    out[i] = store.project(M.render(rec, now), q)
  end
  return common.send_json(200, { customers = out, pagination = store.pagination(q) })
end

function M.show(ctx)
  local q = store.query(SHOW_PARAMS)
  local id = ctx.id:lower()
  local rec = store.get("customers", id) or synthetic_by_id(id)
  if not rec then store.not_found("customer") end
  return send_customer(rec, store.now(), q)
end

function M.create()
  local body = store.json_body()
  validate(schema.customer_create, body)
  local now = store.now()
  local rec = store.stamp_new({ id = store.oid(), source = "api" }, now)
  M.apply(rec, body, now)
  local secondaries = body.merge_customer_ids ~= nil and body.merge_customer_ids ~= null
    and merge_targets(rec.id, body.merge_customer_ids)
  store.insert("customers", rec)
  if secondaries and #secondaries > 0 then
    merge(rec, secondaries, now)
    store.put("customers", rec)
    M.run_due_jobs(now)
    rec = store.get("customers", rec.id)
  end
  return send_customer(rec, now)
end

function M.update(ctx)
  local id = ctx.id:lower()
  local rec = store.get("customers", id)
  if not rec then store.not_found("customer") end
  local body = store.json_body()
  validate(schema.customer_update, body)
  local now = store.now()
  M.apply(rec, body, now)
  local secondaries = body.merge_customer_ids ~= nil and body.merge_customer_ids ~= null
    and merge_targets(rec.id, body.merge_customer_ids)
  store.touch(rec, now)
  if secondaries and #secondaries > 0 then merge(rec, secondaries, now) end
  store.put("customers", rec)
  M.run_due_jobs(now)
  return send_customer(store.get("customers", id), now)
end

function M.delete(ctx)
  local id = ctx.id:lower()
  if not store.exists("customers", id) then store.not_found("customer") end
  store.delete("customers", id)
  return common.send_json(200, { status = "ok" })
end

---------------------------------------------------------------------------
-- Bulk seeding (POST /__sim/tablecheck/seed)
---------------------------------------------------------------------------

-- Stores n customers quickly: customer k (a running number across calls)
-- is first_name=<prefix>, last_name="Customer<k, 6 digits>",
-- ref="<prefix>-<k>", email "<prefix><k>@example.com", phone "+1206<k, 7
-- digits>", allow_marketing = k even, in the fixture franchise and first
-- shop. `fields` (CustomerCreateParams) is applied on top of each one.
-- Returns {created, first, last} or nil, message.
function M.seed(n, prefix, fields)
  store.ensure_fixtures()
  if fields ~= nil then
    local errs = schema.validate(schema.customer_update, fields, true)
    if errs then return nil, "fields: " .. errs[1].message end
    if fields.merge_customer_ids or fields.images then
      return nil, "fields: merge_customer_ids and images are not supported"
    end
  end
  local F = store.FIXTURES
  local now = store.now()
  local ts = store.fmt_time(now)
  local last = common.incr(common.state(), "tc:seedseq", n)
  local first = last - n + 1
  local lower = prefix:lower()
  local first_id, last_id
  for k = first, last do
    local rec = store.stamp_new({
      id = store.oid(), franchise_id = F.franchise_id, parent_shop_id = F.shop_ids[1],
      ref = prefix .. "-" .. k, first_name = prefix, last_name = string.format("Customer%06d", k),
      source = "import", allow_marketing = k % 2 == 0,
      phones = { { id = store.oid(), number = string.format("+1206%07d", k % 10000000), tag = "mobile",
        created_at = ts, updated_at = ts } },
      emails = { { id = store.oid(), email = string.format("%s%06d@example.com", lower, k), tag = "none",
        created_at = ts, updated_at = ts } },
    }, now)
    if fields then M.apply(rec, fields, now) end
    store.insert("customers", rec)
    first_id = first_id or rec.id
    last_id = rec.id
  end
  return { created = n, first_id = first_id, last_id = last_id, first_number = first, last_number = last }
end

return M
