-- Request-body schemas of TableCheck CRM v1, written by hand from
-- tablecheck-crm-v1.openapi.yml (nginx has no YAML parser), and the small
-- validator that checks a decoded body against them.
--
-- Rules: types, enums, formats and required fields as in the spec. JSON null
-- is accepted for optional fields and means "unset". Unknown fields are
-- refused (code unknown_parameter) while tablecheck_strict is true, so a
-- client typo surfaces here instead of being silently dropped. Where we
-- accept more than the spec says, a comment says why. Messages name the field
-- (0-based JSON indexes) and the rule, never the value.

local common = require("sim.common")

local M = {}

local null = common.null

---------------------------------------------------------------------------
-- Formats
---------------------------------------------------------------------------

local function is_date(s)
  return s:find("^%d%d%d%d%-%d%d%-%d%d$") ~= nil and common.parse_iso8601(s) ~= nil
end

local FORMATS = {
  ["bson-id"] = { "a 24-character hex id", function(s) return #s == 24 and s:find("^%x+$") ~= nil end },
  ["date-time"] = { "an ISO 8601 date-time such as 2020-01-29T19:15:00Z",
    function(s) return s:find("T") ~= nil and common.parse_iso8601(s) ~= nil end },
  date = { "a date such as 2020-01-29", is_date },
  email = { "an email address", function(s) return s:find("^[^%s@]+@[^%s@]+%.[^%s@]+$") ~= nil end },
  -- E.164: "+", a non-zero country-code digit, 7 to 15 digits in all
  ["phone-e164"] = { "an E.164 phone number such as +14155550123",
    function(s) return s:find("^%+[1-9]%d+$") ~= nil and #s >= 8 and #s <= 16 end },
  -- customer_search "phone": E.164 digits but "can be a partial match" (+1206)
  ["phone-prefix"] = { "an E.164 phone number or its leading part such as +1206",
    function(s) return s:find("^%+[1-9]%d*$") ~= nil and #s <= 16 end },
  url = { "an http(s) URL", function(s) return s:find("^[hH][tT][tT][pP][sS]?://[^%s/?#]+[^%s]*$") ~= nil end },
  float = { "a decimal number as a string such as \"12.50\"",
    function(s) return s:find("^%-?%d+$") ~= nil or s:find("^%-?%d*%.%d+$") ~= nil end },
  country = { "an ISO 3166-1 alpha-2 country code such as JP", function(s) return s:find("^%u%u$") ~= nil end },
}

---------------------------------------------------------------------------
-- Schema constructors
---------------------------------------------------------------------------

local function str(format) return { t = "string", format = format } end
local function enum(values, what) return { t = "string", enum = values, what = what } end
local function arr(items) return { t = "array", items = items } end
local function obj(props, required) return { t = "object", props = props, required = required or {} } end
local BOOL = { t = "boolean" }
local INT = { t = "integer" }
local NUM = { t = "number" }
local STR = str()
local ID = str("bson-id")
local TIME = str("date-time")
local DATE = str("date")
local FLOAT = str("float")
local STRS = arr(STR)
local IDS = arr(ID)

-- phones/emails: oneOf(array of objects, array of strings); never mixed
local function strings_or_objects(string_schema, object_schema)
  return { t = "strings_or_objects", strings = string_schema, objects = object_schema }
end

-- Copies props and adds/overrides entries.
local function extend(props, extra)
  local out = {}
  for k, v in pairs(props) do out[k] = v end
  for k, v in pairs(extra or {}) do out[k] = v end
  return out
end

---------------------------------------------------------------------------
-- Enums from the spec
---------------------------------------------------------------------------

local LOCALES = { "en", "ja", "ko", "zh-CN", "zh-TW", "de", "es", "fr", "nl", "it", "pt", "tr", "ru", "id",
  "ms", "tl", "th", "lo", "km", "vi", "ar", "he", "hi" }
M.LOCALES = LOCALES
local CUSTOMER_SOURCES = { "manual", "tablecheck_guest", "tablecheck_user", "ota", "ivr", "pms", "import",
  "api", "edm_subscribe" }
local AGE_RANGES = { "none", "20s", "30s", "40s", "50s", "60s" }
local COUNTRIES = {
  "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ", "BA", "BB",
  "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS", "BT", "BV", "BW", "BY",
  "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN", "CO", "CR", "CU", "CV", "CW", "CX",
  "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE", "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK",
  "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF", "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS",
  "GT", "GU", "GW", "GY", "HK", "HM", "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR",
  "IS", "IT", "JE", "JM", "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA",
  "LB", "LC", "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
  "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA", "NC", "NE",
  "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG", "PH", "PK", "PL", "PM",
  "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW", "SA", "SB", "SC", "SD", "SE", "SG",
  "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS", "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF",
  "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO", "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY",
  "UZ", "VA", "VC", "VE", "VG", "VI", "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW" }
local RESERVATION_STATUSES = { "tentative", "pending", "request", "accepted", "confirmed", "delay",
  "call_absent", "call_message", "call_wrong", "cancelled", "noshow", "rejected", "arrived", "arrived_part",
  "waiting", "waitlist_called", "seated", "seated_part", "service_drink", "service_main", "service_dessert",
  "check_req", "paid", "turnover", "turned_over" }
local RESERVATION_SOURCES = { "phone", "ivrs", "sms", "web", "email", "in_person", "walk_in", "app", "other" }
local SEAT_TYPES = { "open", "counter", "outside", "curtain", "private", "tatami" }
local CANCEL_REASONS = { "mistake", "shop", "travel", "deal", "delay", "personal", "covid", "other" }
local MEMBERSHIP_STATUSES = { "active", "pre_enrollment", "cancelled" }

---------------------------------------------------------------------------
-- Nested customer objects. `_destroy` is not in the spec's property lists;
-- the seed documents it for every nested object ("Use the _destroy: true
-- attribute to delete a nested object"). Required fields (number, email,
-- username) apply to new objects only and are checked when applying.
---------------------------------------------------------------------------

local PHONE = obj({
  id = ID, number = str("phone-e164"),
  tag = enum({ "none", "home", "work", "mobile", "assistant", "fax", "other" }),
  created_at = TIME, updated_at = TIME, _destroy = BOOL,
})
local EMAIL = obj({
  id = ID, email = str("email"), tag = enum({ "none", "home", "work", "mobile", "other" }),
  created_at = TIME, updated_at = TIME, _destroy = BOOL,
})
local SOCIAL = obj({
  id = ID, username = STR, created_at = TIME, updated_at = TIME, _destroy = BOOL,
  service = enum({ "facebook", "google", "twitter", "line", "kakao", "naver", "yahoo", "mixi", "ameblo",
    "linkedin", "skype", "wechat", "weibo", "qq" }),
})
local EVENT = obj({
  id = ID, date = DATE, months = arr(INT), day = INT, memo = STR, created_at = TIME, updated_at = TIME,
  tag = enum({ "anniversary", "birthday", "single", "1_month", "2_month", "3_month", "6_month", "1_year" }),
  _destroy = BOOL,
})
local ADDRESS = obj({
  id = ID, tag = enum({ "none", "home", "work", "other" }), street = STR, street2 = STR, city = STR,
  region = STR, postal_code = STR, country = str("country"), created_at = TIME, updated_at = TIME,
  _destroy = BOOL,
})
-- The spec's CustomerShopMemo is itself an array, which would make shop_memos
-- an array of arrays; we take an array of the memo objects.
local SHOP_MEMO = obj({ id = ID, shop_id = STR, memo = STR, _destroy = BOOL })

local IMAGE_CREATE = obj({ image_upload_url = str("url") })
-- oneOf(ImageEmbedCreate, ImageEmbedDestroy). An item with an id and
-- anything but _destroy: true is an attempt to change an existing image,
-- which the seed says is a user error.
local IMAGE_CREATE_OR_DESTROY = {
  t = "image_item", object = obj({ image_upload_url = str("url"), id = ID, _destroy = BOOL }),
}

---------------------------------------------------------------------------
-- Customers
---------------------------------------------------------------------------

local CUSTOMER_UPDATE_PROPS = {
  parent_shop_id = ID, name_prefix = STR, first_name = STR, last_name = STR, company_name = STR,
  phones = strings_or_objects(str("phone-e164"), PHONE), overwrite_phones = BOOL,
  emails = strings_or_objects(str("email"), EMAIL), overwrite_emails = BOOL,
  socials = arr(SOCIAL), overwrite_socials = BOOL,
  images = arr(IMAGE_CREATE_OR_DESTROY),
  events = arr(EVENT), overwrite_events = BOOL,
  addresses = arr(ADDRESS), overwrite_addresses = BOOL,
  kanji_first_name = STR, kanji_last_name = STR, title = STR,
  -- spec: "type: number" with enum '0','1','2' (strings); both forms accepted
  sex = { t = "sex" },
  division = STR,
  source = enum(CUSTOMER_SOURCES),
  age_range = enum(AGE_RANGES),
  tags = STRS, likes = STRS, dislikes = STRS,
  allerges = STRS,
  -- not in CustomerUpdateParams (which spells it "allerges"), but it is the
  -- name the Customer object uses; accepted as a synonym
  allergies = STRS,
  -- the enum is in the spec, but its description says an unsupported locale
  -- is stored as null without failing the update; so any string passes here
  locale = STR,
  country = enum(COUNTRIES, "an ISO 3166-1 alpha-2 country code such as JP"),
  base_count_visits = INT, base_count_cancels = INT, base_count_noshows = INT,
  email_marketing = BOOL, email_reminders = BOOL, direct_mail = BOOL,
  is_incognito = BOOL, is_temporary = BOOL, memo = STR,
  shop_memos = arr(SHOP_MEMO),
  allow_surveys = BOOL,
  merge_customer_ids = IDS,
}

-- The spec marks last_name required on CustomerUpdateParams, but the seed's
-- own PUT examples ({first_name: 'New Name'}, {merge_customer_ids: [...]})
-- omit it: PUT is a partial update here and requires nothing.
M.customer_update = obj(CUSTOMER_UPDATE_PROPS)
M.customer_create = obj(extend(CUSTOMER_UPDATE_PROPS, {
  franchise_id = ID,
  images = arr(IMAGE_CREATE),
}), { "franchise_id" })

M.customer_search = obj({
  scroll_id = STR, franchise_id = ID,
  first_name = STR, last_name = STR, alt_first_name = STR, alt_last_name = STR,
  company_name = STR, company_division = STR, company_title = STR,
  has_phone = BOOL, phone = str("phone-prefix"), has_email = BOOL, email = STR,
  memo = STR, shop_memos_memo = STR, shop_memos_shop_ids = IDS,
  gender = enum({ "male", "female" }),
  allow_marketing = BOOL, direct_mail = BOOL, is_temporary = BOOL,
  tags = STRS, likes = STRS, dislikes = STRS, allergies = STRS,
  age_ranges = arr(enum(AGE_RANGES)),
  sales_rep_ids = STRS, assigned_staff_ids = STRS,
  parent_shop_ids = IDS,
  locales = arr(enum(LOCALES)),
  social_username = STR,
  event_date_min = DATE, event_date_max = DATE, event_tags = STRS, event_months = STRS,
  created_at_min = TIME, created_at_max = TIME, updated_at_min = TIME, updated_at_max = TIME,
  address_postal_code = STR, address_country = str("country"), address_region = STR, address_city = STR,
  reservation_stages = arr(enum({ "past", "future", "cancelled", "rejected" })),
  reservation_start_date_min = DATE, reservation_start_date_max = DATE,
  reservation_created_date_min = DATE, reservation_created_date_max = DATE,
  reservation_updated_date_min = DATE, reservation_updated_date_max = DATE,
  reservation_pax_min = INT, reservation_pax_max = INT,
  reservation_count_visits_min = INT, reservation_count_visits_max = INT,
  reservation_shop_visits_min = INT, reservation_shop_visits_max = INT,
  reservation_shop_cancels_min = INT, reservation_shop_cancels_max = INT,
  reservation_shop_noshows_min = INT, reservation_shop_noshows_max = INT,
  reservation_memo = STR, reservation_ref = STR, reservation_party_name = STR, reservation_room_name = STR,
  reservation_flag_ids = IDS, reservation_statuses = STRS, reservation_status_ids = IDS,
  reservation_objectives = STRS, reservation_shop_ids = IDS, reservation_sources = STRS,
  reservation_channels = STRS, reservation_providers = STRS,
  membership_program_id = STR, membership_tier_id = STR, membership_code = STR,
  membership_points_min = STR, membership_points_max = STR,
  membership_start_date_min = DATE, membership_start_date_max = DATE,
  membership_expiry_date_min = DATE, membership_expiry_date_max = DATE,
  payment_currency = enum({ "local", "USD" }),
  payment_average_amt_min = FLOAT, payment_average_amt_max = FLOAT,
  payment_lifetime_amt_min = FLOAT, payment_lifetime_amt_max = FLOAT,
  payment_last_amt_min = FLOAT, payment_last_amt_max = FLOAT,
  payment_avg_spend_per_pax_min = FLOAT, payment_avg_spend_per_pax_max = FLOAT,
  pos_menu_condition = STR, pos_currency = STR,
  pos_average_amt_min = FLOAT, pos_average_amt_max = FLOAT,
  pos_lifetime_amt_min = FLOAT, pos_lifetime_amt_max = FLOAT,
  pos_last_amt_min = FLOAT, pos_last_amt_max = FLOAT,
  pos_avg_spend_per_pax_min = FLOAT, pos_avg_spend_per_pax_max = FLOAT,
  pos_menu_category_name = STR, pos_menu_item_name = STR,
  pos_price_min = FLOAT, pos_price_max = FLOAT, pos_qty_min = INT, pos_qty_max = INT,
  pos_total_min = FLOAT, pos_total_max = FLOAT, pos_shop_ids = IDS,
  order_currency = STR, order_menu_category_name = STR, order_menu_item_name = STR,
  order_menu_category_id = ID, order_menu_item_id = ID,
  order_price_min = FLOAT, order_price_max = FLOAT, order_qty_min = INT, order_qty_max = INT,
  order_total_min = FLOAT, order_total_max = FLOAT,
})

---------------------------------------------------------------------------
-- Reservations
---------------------------------------------------------------------------

local RESERVATION_UPDATE_PROPS = {
  customer_ref = STR, customer_id = STR, ref = STR,
  pax = INT, pax_adult = INT, pax_senior = INT, pax_child = INT, pax_baby = INT,
  start_at = TIME,
  duration = NUM, -- null reverts to the automatic duration
  source = enum(RESERVATION_SOURCES), channel = STR,
  special_request = STR, memo = STR, memo2 = STR,
  seat_types = arr(enum(SEAT_TYPES)),
  smoking = enum({ "none", "true", "false" }),
  status = enum(RESERVATION_STATUSES),
  points = INT, party_name = STR, room_name = STR,
  cancel_reason_type = enum(CANCEL_REASONS), cancel_reason = STR,
  cancelled_by_customer = BOOL, send_emails = BOOL, send_texts = BOOL,
  email = str("email"), phone = str("phone-e164"),
  reservation_flag_ids = STRS,
  images = arr(IMAGE_CREATE_OR_DESTROY),
}

M.reservation_update = obj(RESERVATION_UPDATE_PROPS)
M.reservation_create = obj(extend(RESERVATION_UPDATE_PROPS, {
  shop_id = ID,
  images = arr(IMAGE_CREATE),
}), { "shop_id", "pax", "start_at" })

---------------------------------------------------------------------------
-- Memberships
---------------------------------------------------------------------------

local MEMBERSHIP_UPDATE_PROPS = {
  code = STR, customer_ids = IDS, membership_program_id = ID, membership_tier_id = ID,
  points = INT, status = enum(MEMBERSHIP_STATUSES), start_date = DATE, expiry_date = DATE,
}

M.membership_update = obj(MEMBERSHIP_UPDATE_PROPS)
M.membership_create = obj(MEMBERSHIP_UPDATE_PROPS, { "membership_program_id", "code" })

---------------------------------------------------------------------------
-- Validator
---------------------------------------------------------------------------

local function add(errs, code, path, problem)
  if #errs >= 20 then return end
  local where = path == "" and "request body" or path
  errs[#errs + 1] = { code = code, message = where .. " " .. problem }
end

local function is_array(v)
  if type(v) ~= "table" then return false end
  if next(v) == nil then return true end
  local n = #v
  if n == 0 then return false end
  local count = 0
  for _ in pairs(v) do count = count + 1 end
  return count == n
end
M.is_array = is_array

local function join(path, key)
  if path == "" then return key end
  return path .. "." .. key
end

local check

local function check_string(s, v, path, errs)
  if type(v) ~= "string" then return add(errs, "invalid_parameter", path, "must be a string") end
  if s.enum then
    for _, x in ipairs(s.enum) do
      if x == v then return end
    end
    return add(errs, "invalid_parameter", path, "must be " .. (s.what or ("one of: " .. table.concat(s.enum, ", "))))
  end
  local f = s.format and FORMATS[s.format]
  if f and not f[2](v) then add(errs, "invalid_parameter", path, "must be " .. f[1]) end
end

local function check_object(s, v, path, errs, strict)
  if type(v) ~= "table" or not common.is_object(v) then
    return add(errs, "invalid_parameter", path, "must be an object")
  end
  for _, name in ipairs(s.required) do
    if v[name] == nil or v[name] == null then
      add(errs, "parameter_missing", join(path, name), "is required")
    end
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = tostring(k) end
  table.sort(keys) -- errors in a stable order
  for _, k in ipairs(keys) do
    local sub = s.props[k]
    if sub then
      check(sub, v[k], join(path, k), errs, strict)
    elseif strict then
      add(errs, "unknown_parameter", join(path, k), "is not a known field")
    end
  end
end

function check(s, v, path, errs, strict)
  if v == null then return end -- optional fields may be null (required ones are checked by the parent)
  local t = s.t
  if t == "string" then
    check_string(s, v, path, errs)
  elseif t == "boolean" then
    if type(v) ~= "boolean" then add(errs, "invalid_parameter", path, "must be true or false") end
  elseif t == "integer" then
    if type(v) ~= "number" or v ~= math.floor(v) or v ~= v or v == math.huge or v == -math.huge then
      add(errs, "invalid_parameter", path, "must be an integer")
    end
  elseif t == "number" then
    if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then
      add(errs, "invalid_parameter", path, "must be a number")
    end
  elseif t == "sex" then
    if not (v == 0 or v == 1 or v == 2 or v == "0" or v == "1" or v == "2") then
      add(errs, "invalid_parameter", path, "must be 0 (unknown), 1 (male) or 2 (female)")
    end
  elseif t == "array" then
    if not is_array(v) then return add(errs, "invalid_parameter", path, "must be an array") end
    for i, x in ipairs(v) do check(s.items, x, path .. "[" .. (i - 1) .. "]", errs, strict) end
  elseif t == "strings_or_objects" then
    if not is_array(v) then return add(errs, "invalid_parameter", path, "must be an array") end
    local want = type(v[1]) == "string" and "string" or "table"
    for i, x in ipairs(v) do
      local p = path .. "[" .. (i - 1) .. "]"
      if type(x) ~= want then
        add(errs, "invalid_parameter", p, "must be a " .. (want == "string" and "string" or "object")
          .. " (" .. path .. " is either an array of strings or an array of objects)")
      else
        check(want == "string" and s.strings or s.objects, x, p, errs, strict)
      end
    end
  elseif t == "object" then
    check_object(s, v, path, errs, strict)
  elseif t == "image_item" then
    if type(v) == "table" and common.is_object(v) and v.id ~= nil and v.id ~= null and v._destroy ~= true then
      local other = false
      for k in pairs(v) do
        if k ~= "id" and k ~= "_destroy" then other = true end
      end
      if other then
        return add(errs, "image_update_not_permitted", path, "is an existing image, which cannot be changed;"
          .. " destroy it with {id, _destroy: true} and upload a new one")
      end
    end
    check_object(s.object, v, path, errs, strict)
  else
    error("unknown schema type " .. tostring(t))
  end
end

-- Validates a decoded body. Returns nil when it conforms, else a list of
-- {code, message} (at most 20).
function M.validate(schema, body, strict)
  local errs = {}
  check(schema, body, "", errs, strict)
  if #errs == 0 then return nil end
  return errs
end

-- Exposed for query-level and semantic checks elsewhere.
function M.format_ok(format, s)
  return type(s) == "string" and FORMATS[format][2](s)
end

return M
