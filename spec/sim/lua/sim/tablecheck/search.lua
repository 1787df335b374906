-- POST /customer_search: filters (CustomerSearchParams) and scroll paging.
--
-- The first request carries the filters and answers the first page plus
-- pagination {scroll_id, total_results}; each later request sends only
-- {scroll_id} and gets the next page and a NEW scroll_id. An empty
-- `customers` array marks the end. A page holds tablecheck_search_page_size
-- (200) customers. A scroll_id is a cursor: re-sending one repeats the page it
-- leads to (so a retried request is harmless), and it lives
-- tablecheck_scroll_ttl seconds after it was issued or last used.
--
-- The cursor walks the stored customers (the ids that existed when the
-- search started, skipping ones deleted since) and then the synthetic ones,
-- so its state is a few numbers whatever the population.
--
-- Text filters are case-insensitive substring matches ("can be a partial
-- match"), `phone` matches any part of a number (so "+1206" is a prefix),
-- list filters (tags, locales, ...) match when any value matches. The
-- simulator stores no payments, POS journals, orders, sales reps, staff,
-- reservation statuses-by-id or objectives: a filter on any of those matches
-- no customer (the *_currency selectors are accepted and ignored).

local common = require("sim.common")
local store = require("sim.tablecheck.store")
local schema = require("sim.tablecheck.schema")
local customers = require("sim.tablecheck.customers")

local M = {}

local null = common.null
local raise = store.raise

---------------------------------------------------------------------------
-- Filters
---------------------------------------------------------------------------

local function has_sub(hay, needle)
  return type(hay) == "string" and hay:lower():find(needle, 1, true) ~= nil
end

local function any_sub(list, key, needle)
  for _, o in ipairs(list or {}) do
    if has_sub(o[key], needle) then return true end
  end
  return false
end

local function any_in(values, want)
  for _, x in ipairs(values or {}) do
    if want[x] then return true end
  end
  return false
end

local function in_range(x, lo, hi)
  if lo ~= nil and (x == nil or x < lo) then return false end
  if hi ~= nil and (x == nil or x > hi) then return false end
  return true
end

local TEXT_FIELDS = { "first_name", "last_name", "alt_first_name", "alt_last_name", "company_name",
  "company_division", "company_title", "memo" }
local LIST_FIELDS = { "tags", "likes", "dislikes", "allergies" }
local BOOL_FIELDS = { allow_marketing = "allow_marketing", direct_mail = "allow_direct_mail",
  is_temporary = "is_temporary" }
-- filters over data the simulator never holds
local NO_DATA = { "sales_rep_ids", "assigned_staff_ids", "reservation_status_ids", "reservation_objectives",
  "pos_menu_condition", "pos_menu_category_name", "pos_menu_item_name", "pos_shop_ids",
  "order_menu_category_name", "order_menu_item_name", "order_menu_category_id", "order_menu_item_id" }
local NO_DATA_PREFIXES = { "payment_", "pos_", "order_" }
local CURRENCY = { payment_currency = true, pos_currency = true, order_currency = true }

local function date_part(ts) return type(ts) == "string" and ts:sub(1, 10) or nil end

-- One reservation against the reservation_* filters of q.
local function reservation_matches(r, q, now)
  local st = r._s or 0
  if q.reservation_stages and #q.reservation_stages > 0 then
    local stage_ok = false
    for _, stage in ipairs(q.reservation_stages) do
      local live = r.status ~= "cancelled" and r.status ~= "rejected"
      if (stage == "past" and live and st < now) or (stage == "future" and live and st >= now)
        or (stage == "cancelled" and r.status == "cancelled") or (stage == "rejected" and r.status == "rejected") then
        stage_ok = true
      end
    end
    if not stage_ok then return false end
  end
  for _, f in ipairs({ "start", "created", "updated" }) do
    local lo, hi = q["reservation_" .. f .. "_date_min"], q["reservation_" .. f .. "_date_max"]
    if not in_range(date_part(r[f .. "_at"]), lo, hi) then return false end
  end
  if not in_range(r.pax, q.reservation_pax_min, q.reservation_pax_max) then return false end
  if q.reservation_memo then
    local needle = q.reservation_memo:lower()
    if not (has_sub(r.memo, needle) or has_sub(r.memo2, needle)) then return false end
  end
  if q.reservation_ref and r.ref ~= q.reservation_ref then return false end
  if q.reservation_party_name and not has_sub(r.party_name, q.reservation_party_name:lower()) then return false end
  if q.reservation_room_name and not has_sub(r.room_name, q.reservation_room_name:lower()) then return false end
  local function one_of(list, value)
    return not list or #list == 0 or store.contains(list, value)
  end
  if not one_of(q.reservation_statuses, r.status) or not one_of(q.reservation_shop_ids, r.shop_id)
    or not one_of(q.reservation_sources, r.source) or not one_of(q.reservation_channels, r.channel)
    or not one_of(q.reservation_providers, r.provider) then
    return false
  end
  if q.reservation_flag_ids and #q.reservation_flag_ids > 0
    and not any_in(r.reservation_flag_ids, store.set_of(q.reservation_flag_ids)) then
    return false
  end
  return true
end

local RES_FILTERS = { "reservation_stages", "reservation_start_date_min", "reservation_start_date_max",
  "reservation_created_date_min", "reservation_created_date_max", "reservation_updated_date_min",
  "reservation_updated_date_max", "reservation_pax_min", "reservation_pax_max", "reservation_memo",
  "reservation_ref", "reservation_party_name", "reservation_room_name", "reservation_statuses",
  "reservation_shop_ids", "reservation_sources", "reservation_channels", "reservation_providers",
  "reservation_flag_ids" }
local SHOP_COUNT_FILTERS = { "reservation_shop_visits_min", "reservation_shop_visits_max",
  "reservation_shop_cancels_min", "reservation_shop_cancels_max", "reservation_shop_noshows_min",
  "reservation_shop_noshows_max" }
local MEMBERSHIP_FILTERS = { "membership_program_id", "membership_tier_id", "membership_code",
  "membership_points_min", "membership_points_max", "membership_start_date_min", "membership_start_date_max",
  "membership_expiry_date_min", "membership_expiry_date_max" }
local EVENT_FILTERS = { "event_date_min", "event_date_max", "event_tags", "event_months" }

local function any_given(q, names)
  for _, n in ipairs(names) do
    if q[n] ~= nil then return true end
  end
  return false
end

-- Per-shop visit/cancel/no-show counts of a customer's reservations.
local function shop_counts(res_list, now, only)
  local by = {}
  for _, r in ipairs(res_list) do
    if not only or only[r.shop_id] then
      local s = by[r.shop_id] or { visits = 0, cancels = 0, noshows = 0 }
      by[r.shop_id] = s
      if r.status == "cancelled" then
        s.cancels = s.cancels + 1
      elseif r.status == "noshow" then
        s.noshows = s.noshows + 1
      elseif r.status ~= "rejected" and (r._s or 0) < now then
        s.visits = s.visits + 1
      end
    end
  end
  return by
end

-- Compiles validated search params into a predicate over customer records,
-- or nil when nothing filters.
local function compile(q, now)
  local preds = {}
  local function add(f) preds[#preds + 1] = f end
  for k, x in pairs(q) do
    if x == null then q[k] = nil end
  end
  for _, f in ipairs(TEXT_FIELDS) do
    if q[f] then
      local needle = q[f]:lower()
      add(function(c) return has_sub(c[f], needle) end)
    end
  end
  if q.franchise_id then
    local id = q.franchise_id:lower()
    add(function(c) return c.franchise_id == id end)
  end
  if q.has_phone ~= nil then add(function(c) return (#(c.phones or {}) > 0) == q.has_phone end) end
  if q.has_email ~= nil then add(function(c) return (#(c.emails or {}) > 0) == q.has_email end) end
  if q.phone then add(function(c) return any_sub(c.phones, "number", q.phone) end) end
  if q.email then
    local needle = q.email:lower()
    add(function(c) return any_sub(c.emails, "email", needle) end)
  end
  if q.shop_memos_memo or q.shop_memos_shop_ids then
    local needle = q.shop_memos_memo and q.shop_memos_memo:lower()
    local shops = q.shop_memos_shop_ids and #q.shop_memos_shop_ids > 0 and store.set_of(q.shop_memos_shop_ids)
    add(function(c)
      for _, sm in ipairs(c.shop_memos or {}) do
        if (not shops or shops[sm.shop_id]) and (not needle or has_sub(sm.memo, needle)) then return true end
      end
      return false
    end)
  end
  if q.gender then add(function(c) return c.gender == q.gender end) end
  for param, field in pairs(BOOL_FIELDS) do
    if q[param] ~= nil then add(function(c) return (c[field] == true) == q[param] end) end
  end
  for _, f in ipairs(LIST_FIELDS) do
    if q[f] and #q[f] > 0 then
      local want = store.set_of(q[f])
      add(function(c) return any_in(c[f], want) end)
    end
  end
  if q.age_ranges and #q.age_ranges > 0 then
    local want = store.set_of(q.age_ranges)
    add(function(c) return want[c.age_range or "none"] == true end)
  end
  if q.parent_shop_ids and #q.parent_shop_ids > 0 then
    local want = store.set_of(q.parent_shop_ids)
    add(function(c) return want[c.parent_shop_id or ""] == true end)
  end
  if q.locales and #q.locales > 0 then
    local want = store.set_of(q.locales)
    add(function(c) return want[c.locale or ""] == true end)
  end
  if q.social_username then
    local needle = q.social_username:lower()
    add(function(c) return any_sub(c.socials, "username", needle) end)
  end
  if any_given(q, EVENT_FILTERS) then
    local tags = q.event_tags and #q.event_tags > 0 and store.set_of(q.event_tags)
    local months = q.event_months and #q.event_months > 0 and store.set_of(q.event_months)
    add(function(c)
      for _, e in ipairs(c.events or {}) do
        local ok = in_range(e.date, q.event_date_min, q.event_date_max) and (not tags or tags[e.tag or ""])
        if ok and months then
          ok = false
          for _, m in ipairs(e.months or {}) do
            if months[tostring(m)] then ok = true end
          end
          if e.date and months[tostring(tonumber(e.date:sub(6, 7)))] then ok = true end
        end
        if ok then return true end
      end
      return false
    end)
  end
  for _, f in ipairs({ "created_at", "updated_at" }) do
    local lo = q[f .. "_min"] and common.parse_iso8601(q[f .. "_min"])
    local hi = q[f .. "_max"] and common.parse_iso8601(q[f .. "_max"])
    local field = f == "created_at" and "_c" or "_u"
    if lo or hi then add(function(c) return in_range(c[field] or 0, lo or nil, hi or nil) end) end
  end
  if q.address_country then
    local want = q.address_country:upper()
    add(function(c)
      for _, a in ipairs(c.addresses or {}) do
        if type(a.country) == "string" and a.country:upper() == want then return true end
      end
      return false
    end)
  end
  for _, f in ipairs({ "postal_code", "region", "city" }) do
    local x = q["address_" .. f]
    if x then
      local needle = x:lower()
      add(function(c) return any_sub(c.addresses, f, needle) end)
    end
  end
  if any_given(q, MEMBERSHIP_FILTERS) then
    local pmin, pmax = tonumber(q.membership_points_min or ""), tonumber(q.membership_points_max or "")
    if (q.membership_points_min and not pmin) or (q.membership_points_max and not pmax) then
      raise(422, "invalid_parameter", "membership_points_min/max must be numbers written as strings")
    end
    add(function(c)
      local l = customers.links()[c.id]
      for _, m in ipairs(l and l.mem or {}) do
        if (not q.membership_program_id or m.membership_program_id == q.membership_program_id)
          and (not q.membership_tier_id or m.membership_tier_id == q.membership_tier_id)
          and (not q.membership_code or m.code == q.membership_code)
          and in_range(m.points or 0, pmin, pmax)
          and in_range(m.start_date, q.membership_start_date_min, q.membership_start_date_max)
          and in_range(m.expiry_date, q.membership_expiry_date_min, q.membership_expiry_date_max) then
          return true
        end
      end
      return false
    end)
  end
  if any_given(q, RES_FILTERS) then
    add(function(c)
      local l = customers.links()[c.id]
      for _, r in ipairs(l and l.res or {}) do
        if reservation_matches(r, q, now) then return true end
      end
      return false
    end)
  end
  if q.reservation_count_visits_min or q.reservation_count_visits_max then
    add(function(c)
      local l = customers.links()[c.id]
      local visits = (c.base_visits or 0) + customers.visit_stats(l and l.res or {}, now).visits
      return in_range(visits, q.reservation_count_visits_min, q.reservation_count_visits_max)
    end)
  end
  if any_given(q, SHOP_COUNT_FILTERS) then
    local only = q.reservation_shop_ids and #q.reservation_shop_ids > 0 and store.set_of(q.reservation_shop_ids)
    add(function(c)
      local l = customers.links()[c.id]
      for _, s in pairs(shop_counts(l and l.res or {}, now, only or nil)) do
        if in_range(s.visits, q.reservation_shop_visits_min, q.reservation_shop_visits_max)
          and in_range(s.cancels, q.reservation_shop_cancels_min, q.reservation_shop_cancels_max)
          and in_range(s.noshows, q.reservation_shop_noshows_min, q.reservation_shop_noshows_max) then
          return true
        end
      end
      return false
    end)
  end
  local nothing = false
  for _, f in ipairs(NO_DATA) do
    if q[f] ~= nil and not (type(q[f]) == "table" and #q[f] == 0) then nothing = true end
  end
  for k in pairs(q) do
    for _, prefix in ipairs(NO_DATA_PREFIXES) do
      if k:sub(1, #prefix) == prefix and not CURRENCY[k] then nothing = true end
    end
  end
  if nothing then add(function() return false end) end
  if #preds == 0 then return nil end
  return function(c)
    for _, p in ipairs(preds) do
      if not p(c) then return false end
    end
    return true
  end
end

---------------------------------------------------------------------------
-- Scroll cursors
---------------------------------------------------------------------------

local SCROLL_MARK = "tcsim:"

local function scroll_key(sid) return "scroll:" .. sid end

local function issue(state, ttl)
  local sid = ngx.encode_base64(SCROLL_MARK .. common.random_hex(12) .. ":" .. math.floor(common.now()))
  store.set_value(scroll_key(sid), state, ttl)
  return sid
end

-- The cursor state for a scroll_id; raises 404 scroll_expired (ours, but no
-- longer stored) or 404 invalid_scroll_id (never issued here).
local function lookup(sid, ttl)
  local state = store.get_value(scroll_key(sid))
  if state then
    store.set_value(scroll_key(sid), state, ttl) -- using it restarts its clock
    return state
  end
  local raw = sid ~= "" and ngx.decode_base64(sid)
  if raw and raw:find("^" .. SCROLL_MARK .. "%x+:%d+$") then
    raise(404, "scroll_expired", "scroll_id has expired (a scroll_id must be used within "
      .. ttl .. (ttl == 1 and " second" or " seconds") .. " of the response that returned it); start a new search")
  end
  raise(404, "invalid_scroll_id", "scroll_id is not one this server issued; start a new search without scroll_id")
end

-- Fills one page, advancing the cursor state in place.
local function next_page(state, size, match)
  local out = common.array()
  while #out < size and state.sp <= state.ls do
    local id = store.list_id("customers", state.sp)
    state.sp = state.sp + 1
    local rec = id and store.get("customers", id)
    if rec and (not match or match(rec)) then out[#out + 1] = customers.render_elastic(rec) end
  end
  while #out < size and state.yp < state.yn do
    local rec = customers.synthetic(state.yp)
    state.yp = state.yp + 1
    if not match or match(rec) then out[#out + 1] = customers.render_elastic(rec) end
  end
  return out
end

local function count(state, match)
  local n = 0
  for i = 1, state.ls do
    local id = store.list_id("customers", i)
    if match then
      local rec = id and store.get("customers", id)
      if rec and match(rec) then n = n + 1 end
    elseif id and store.exists("customers", id) then
      n = n + 1
    end
  end
  if not match then return n + state.yn end
  for i = 0, state.yn - 1 do
    if match(customers.synthetic(i)) then n = n + 1 end
  end
  return n
end

function M.search()
  local body = store.json_body()
  local cfg = common.config()
  local errs = schema.validate(schema.customer_search, body, cfg.tablecheck_strict)
  if errs then store.raise_many(422, errs) end
  local ttl, size = cfg.tablecheck_scroll_ttl, cfg.tablecheck_search_page_size
  local now = store.now()
  local state
  if body.scroll_id ~= nil and body.scroll_id ~= null then
    state = lookup(body.scroll_id, ttl)
  else
    body.scroll_id = nil
    local q = next(body) ~= nil and body or nil
    state = { q = q, sp = 1, ls = store.list_len("customers"), yp = 0, yn = cfg.tablecheck_synthetic_customers }
    state.total = count(state, q and compile(store.copy(q), now))
  end
  local match = state.q and compile(store.copy(state.q), now)
  local page = next_page(state, size, match)
  return common.send_json(200, {
    customers = page,
    pagination = { scroll_id = issue(state, ttl), total_results = state.total },
  })
end

return M
