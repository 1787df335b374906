-- TableCheck CRM v1 request shapes, from the OpenAPI contract: the query parameters of every
-- endpoint and the body of every write, as checks that name the field and the rule. A passing
-- check returns a copy ready to send (empty arrays marked so they encode as [], integers whole).
local http = require "crm.http"
local images = require "crm.tablecheck.images"
local validate = require "crm.validate"

local M = {}

local type, pairs, ipairs, next, floor = type, pairs, ipairs, next, math.floor
local fail = validate.fail
local null, empty_array = http.null, http.empty_array

M.MAX_PER_PAGE = 1000
M.CUSTOMERS_MAX_PAGES = 10

-- Request fields that may be JSON null: duration, whose description says null reverts it to the
-- automatic value. The contract marks no other request field nullable.
local NULLABLE_FIELDS = { duration = true }

-- ---- rules: rule(value, field) -> err | nil [, replacement]; nil means "absent" ----

-- Keys 1..n and nothing else: no holes ({"a", nil, "c"} would go out as ["a",null,"c"]).
local function is_array(t)
  local n, count = #t, 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then return false end
    count = count + 1
  end
  return count == n
end

local function text(max)
  return function(v, f) return validate.string(v, f, { max = max }) end
end
-- The contract sets no maxLength; these bounds only stop a runaway value (a whole file where a
-- name belongs) before it is sent.
local STRING, LONG_TEXT = text(65536), text(1048576)
local BOOL, DATE = validate.boolean, validate.date

-- "format: date-time" is RFC 3339's date-time: a real date and time with seconds and an offset
-- (2024-03-05T00:21:40Z, 2024-03-05T00:21:40.5+09:00). RFC 3339 lets T and Z be lower case;
-- they are sent upper case, the form every parser reads.
local function TIME(v, f)
  if v == nil then return nil end
  local e = validate.datetime(v, f)
  if e then return e end
  if v:find("[tz]") then return nil, (v:gsub("^(%d%d%d%d%-%d%d%-%d%d)t", "%1T"):gsub("z$", "Z")) end
  return nil
end

-- "format: bson-id": TableCheck's ids are 24-hex ObjectIds.
local function is_object_id(v)
  return type(v) == "string" and #v == 24 and v:find("^%x+$") ~= nil
end
M.is_object_id = is_object_id

local function OBJECT_ID(v, f)
  if v == nil or is_object_id(v) then return nil end
  return fail(f, "must be a 24-character hex id")
end

-- Query lists of ids: an array, or one comma-separated string.
local function IDS(v, f)
  local e = validate.id_list(v, f)
  if e or v == nil then return e end
  if type(v) == "string" then
    local i = 0
    for part in (v .. ","):gmatch("([^,]*),") do
      i = i + 1
      if not is_object_id(part) then return fail(f .. "[" .. i .. "]", "must be a 24-character hex id") end
    end
    return nil
  end
  for i = 1, #v do
    e = OBJECT_ID(v[i], f .. "[" .. i .. "]")
    if e then return e end
  end
  return nil
end

local function int(min, max)
  return function(v, f)
    local e = validate.number(v, f, { integer = true, min = min, max = max })
    if e or v == nil then return e end
    return nil, floor(v) -- 2.0 would travel as "2.0" in a query on Lua 5.4
  end
end

local function EMAIL(v, f)
  if v == nil then return nil end
  return validate.email(v, f)
end

local function E164(v, f)
  if v == nil then return nil end
  if type(v) ~= "string" then return fail(f, "must be a string") end
  return validate.e164(v, f)
end

-- "type: string, format: float": a number or a decimal string; sent as a string.
local function DECIMAL(v, f)
  if v == nil then return nil end
  if type(v) == "number" then
    local e = validate.number(v, f)
    if e then return e end
    -- A decimal string has no exponent, and %g writes one outside this range (1e+20, 1e-05).
    local a = v < 0 and -v or v
    if a >= 1e15 or (a ~= 0 and a < 1e-4) then
      return fail(f, "must be a number between 1e-4 and 1e15 in size (or 0) to be sent as a decimal;"
        .. " pass other values as a decimal string such as \"0.00001\"")
    end
    -- the shortest form that reads back as the same number (12.5, not 12.500000000000002)
    local s
    for digits = 15, 17 do
      s = string.format("%." .. digits .. "g", v)
      if tonumber(s) == v then break end
    end
    return nil, s
  end
  if type(v) ~= "string" or not (v:find("^%-?%d+%.?%d*$") or v:find("^%-?%.%d+$")) then
    return fail(f, "must be a decimal number or a string such as \"12.50\"")
  end
  return nil
end

-- customer_search's phone is a prefix ("+1206" in the guide), so only the shape is E.164's.
local function PHONE_PREFIX(v, f)
  if v == nil then return nil end
  if type(v) ~= "string" or not v:find("^%+[1-9]%d*$") or #v > 16 then
    return fail(f, "must be all or the start of an E.164 number (+ then up to 15 digits)")
  end
  return nil
end

-- An enum: the value is one of `list`. what: how the message names the set when the list is too
-- long to print.
local function enum(list, what)
  local set = {}
  for _, v in ipairs(list) do set[v] = true end
  local rule = what and ("must be " .. what) or ("must be one of " .. table.concat(list, ", "))
  return function(v, f)
    if v == nil then return nil end
    if type(v) ~= "string" then return fail(f, "must be a string") end
    if not set[v] then return fail(f, rule) end
    return nil
  end
end

-- sex: 0 unknown, 1 male, 2 female. The contract types it as a number and lists the values as
-- strings; both spellings are taken and it is always sent as the number.
local function SEX(v, f)
  if v == nil or v == 0 or v == 1 or v == 2 then return nil end
  if v == "0" or v == "1" or v == "2" then return nil, tonumber(v) end
  return fail(f, "must be 0 (unknown), 1 (male) or 2 (female)")
end

-- include_fields / exclude_fields: an array or a comma-separated string of (dotted) field names.
local function FIELD_LIST(v, f)
  if v == nil then return nil end
  local items = v
  if type(v) == "string" then
    items = {}
    for part in (v .. ","):gmatch("([^,]*),") do items[#items + 1] = part end
  elseif type(v) ~= "table" or not is_array(v) then
    return fail(f, "must be an array of field names or a comma-separated string")
  end
  if #items == 0 then return fail(f, "must not be empty") end
  for i = 1, #items do
    local name = items[i]
    if type(name) ~= "string" or name == "" or ("." .. name):gsub("%.[%a_][%w_]*", "") ~= "" then
      return fail(f .. "[" .. i .. "]", "must be a field name (letters, digits, _ and dots)")
    end
  end
  return nil
end

local function array_of(rule, opts)
  opts = opts or {}
  return function(v, f)
    if v == nil then return nil end
    if v == empty_array then
      if opts.nonempty then return fail(f, "must not be empty") end
      return nil
    end
    if type(v) ~= "table" or not is_array(v) then
      return fail(f, "must be an array (keys 1..n, no holes)")
    end
    if #v == 0 then
      if opts.nonempty then return fail(f, "must not be empty") end
      return nil, empty_array
    end
    local out
    for i = 1, #v do
      local e, r = rule(v[i], f .. "[" .. i .. "]")
      if e then return e end
      if r ~= nil then
        if not out then
          out = {}
          for j = 1, #v do out[j] = v[j] end
        end
        out[i] = r
      end
    end
    return nil, out
  end
end

local STRINGS = array_of(STRING)

-- A query list of free text (slugs, names), sent comma-joined: an array, or one comma-separated
-- string. The server splits on commas, so an item cannot contain one, and none may be empty.
local function TEXT_LIST(v, f)
  if v == nil then return nil end
  if type(v) == "string" then
    local e = STRING(v, f)
    if e then return e end
    local i = 0
    for part in (v .. ","):gmatch("([^,]*),") do
      i = i + 1
      if part == "" then return fail(f .. "[" .. i .. "]", "must not be empty") end
    end
    return nil
  end
  local e = STRINGS(v, f)
  if e then return e end
  if #v == 0 then return fail(f, "must not be empty") end
  for i = 1, #v do
    if v[i] == "" then return fail(f .. "[" .. i .. "]", "must not be empty") end
    if v[i]:find(",", 1, true) then
      return fail(f .. "[" .. i .. "]", "must not contain ',' (the list is sent comma-separated)")
    end
  end
  return nil
end

-- An object with known fields. opts: required = {names}, check = function(copy, field) for rules
-- across fields, hints = {name = "is not a known field (...)"} for likely mistakes.
local function object(fields, opts)
  opts = opts or {}
  return function(v, f)
    if v == nil then return nil end
    if type(v) ~= "table" or v == empty_array or v[1] ~= nil then
      return fail(f or "body", "must be an object (a table with named fields)")
    end
    local prefix = f and (f .. ".") or ""
    for k in pairs(v) do
      if type(k) ~= "string" or not fields[k] then
        local hint = opts.hints and opts.hints[k]
        return fail(prefix .. validate.key_name(k), hint or "is not a known field")
      end
    end
    for _, k in ipairs(opts.required or {}) do
      if v[k] == nil or v[k] == null then return fail(prefix .. k, "is required") end
    end
    local out = {}
    for k, x in pairs(v) do
      -- The contract marks no request field nullable: a null would be a request it forbids.
      if x == null and not NULLABLE_FIELDS[k] then
        return fail(prefix .. k, "must not be null (the contract allows no null here; leave the"
          .. " field out instead)")
      end
      out[k] = x
      if x ~= null then
        local e, r = fields[k](x, prefix .. k)
        if e then return e end
        if r ~= nil then out[k] = r end
      end
    end
    if opts.check then
      local e = opts.check(out, f)
      if e then return e end
    end
    return nil, out
  end
end

-- ---- enums from the contract ----

local LOCALES = { "en", "ja", "ko", "zh-CN", "zh-TW", "de", "es", "fr", "nl", "it", "pt", "tr", "ru",
                  "id", "ms", "tl", "th", "lo", "km", "vi", "ar", "he", "hi" }
local CUSTOMER_SOURCES = { "manual", "tablecheck_guest", "tablecheck_user", "ota", "ivr", "pms",
                           "import", "api", "edm_subscribe" }
local AGE_RANGES = { "none", "20s", "30s", "40s", "50s", "60s" }
local PHONE_TAGS = { "none", "home", "work", "mobile", "assistant", "fax", "other" }
local EMAIL_TAGS = { "none", "home", "work", "mobile", "other" }
local ADDRESS_TAGS = { "none", "home", "work", "other" }
local SOCIAL_SERVICES = { "facebook", "google", "twitter", "line", "kakao", "naver", "yahoo", "mixi",
                          "ameblo", "linkedin", "skype", "wechat", "weibo", "qq" }
local EVENT_TAGS = { "anniversary", "birthday", "single", "1_month", "2_month", "3_month", "6_month",
                     "1_year" }
local RESERVATION_SOURCES = { "phone", "ivrs", "sms", "web", "email", "in_person", "walk_in", "app",
                              "other" }
local SEAT_TYPES = { "open", "counter", "outside", "curtain", "private", "tatami" }
local SMOKING = { "none", "true", "false" }
local RESERVATION_STATUSES = { "tentative", "pending", "request", "accepted", "confirmed", "delay",
  "call_absent", "call_message", "call_wrong", "cancelled", "noshow", "rejected", "arrived",
  "arrived_part", "waiting", "waitlist_called", "seated", "seated_part", "service_drink",
  "service_main", "service_dessert", "check_req", "paid", "turnover", "turned_over" }
local CANCEL_REASONS = { "mistake", "shop", "travel", "deal", "delay", "personal", "covid", "other" }
local MEMBERSHIP_STATUSES = { "active", "pre_enrollment", "cancelled" }

-- ISO 3166-1 alpha-2 as the contract enumerates it (CustomerCreateParams/CustomerUpdateParams
-- country); Address.country (iso-country) and customer_search's address_country (country) name
-- the same codes.
M.COUNTRIES = {
  "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
  "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
  "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
  "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
  "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
  "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
  "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
  "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
  "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
  "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
  "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
  "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
  "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
  "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
  "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
  "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW"
}
local COUNTRY = enum(M.COUNTRIES, "an ISO 3166-1 alpha-2 country code in upper case, as the"
  .. " contract lists them (e.g. JP, US, GB)")

-- ---- nested objects: phones, emails, images, addresses, socials, events, shop memos ----

local STAMPS = { created_at = TIME, updated_at = TIME }
local function with_stamps(fields)
  for k, r in pairs(STAMPS) do fields[k] = r end
  return fields
end

-- A nested object referenced by id may be changed or destroyed; one without id is new.
local function nested_rules(value_key)
  return function(o, f)
    if o._destroy == true and o.id == nil then
      return fail(f .. ".id", "is required with _destroy (only existing objects can be destroyed)")
    end
    if value_key and o.id == nil and o[value_key] == nil then
      return fail(f .. "." .. value_key, "is required for a new entry")
    end
    return nil
  end
end

local PHONE_OBJECT = object(with_stamps { id = OBJECT_ID, number = E164, tag = enum(PHONE_TAGS),
                                          _destroy = BOOL }, { check = nested_rules("number") })
local EMAIL_OBJECT = object(with_stamps { id = OBJECT_ID, email = EMAIL, tag = enum(EMAIL_TAGS),
                                          _destroy = BOOL }, { check = nested_rules("email") })

-- phones: E.164 strings (appended unless overwrite_phones) or Phone objects (by id).
local function PHONE_ITEM(v, f)
  if type(v) == "string" then return E164(v, f) end
  if type(v) ~= "table" then return fail(f, "must be an E.164 string or a phone object") end
  return PHONE_OBJECT(v, f)
end
local function EMAIL_ITEM(v, f)
  if type(v) == "string" then return EMAIL(v, f) end
  if type(v) ~= "table" then return fail(f, "must be an email string or an email object") end
  return EMAIL_OBJECT(v, f)
end
-- oneOf(objects, strings): one request uses one form.
local function one_form(rule)
  local list = array_of(rule)
  return function(v, f)
    local e, r = list(v, f)
    if e or type(v) ~= "table" then return e, r end
    for i = 2, #v do
      if type(v[i]) ~= type(v[1]) then
        return fail(f .. "[" .. i .. "]", "must have the form of " .. f .. "[1]: a list is either all"
          .. " strings or all objects")
      end
    end
    return nil, r
  end
end
M.PHONES, M.EMAILS = one_form(PHONE_ITEM), one_form(EMAIL_ITEM)

local ADDRESS = object(with_stamps { id = OBJECT_ID, tag = enum(ADDRESS_TAGS), street = STRING,
  street2 = STRING, city = STRING, region = STRING, postal_code = STRING, country = COUNTRY,
  _destroy = BOOL }, { check = nested_rules() })
-- Social requires username (the contract's only required field there), changed or new; only a
-- destroy by id may leave it out (see "Where the OpenAPI spec and the seed disagree", 3).
local SOCIAL = object(with_stamps { id = OBJECT_ID, service = enum(SOCIAL_SERVICES), username = STRING,
  _destroy = BOOL }, { check = function(o, f)
    local e = nested_rules("username")(o, f)
    if e then return e end
    if o._destroy ~= true and o.username == nil then
      return fail(f .. ".username", "is required (the contract's Social requires it)")
    end
    return nil
  end })
local EVENT = object(with_stamps { id = OBJECT_ID, tag = enum(EVENT_TAGS), date = DATE,
  months = array_of(int(1, 12)), day = int(1, 31), memo = LONG_TEXT, _destroy = BOOL },
  { check = nested_rules() })
-- shop_id here, customer_id and reservation_flag_ids of a reservation are plain strings in the
-- contract; they travel in the JSON body, so path-safety rules do not apply to them.
local SHOP_MEMO = object { id = OBJECT_ID, shop_id = STRING, memo = LONG_TEXT, _destroy = BOOL }

-- New images carry only image_upload_url; an existing image (by id) can only be destroyed.
local function image_item(allow_destroy)
  return function(v, f)
    if type(v) ~= "table" or v[1] ~= nil then return fail(f, "must be an object") end
    if v.id ~= nil then
      if not allow_destroy then
        return fail(f .. ".id", "is not accepted here: new images take only image_upload_url")
      end
      local e = OBJECT_ID(v.id, f .. ".id")
      if e then return e end
      for k in pairs(v) do
        if k ~= "id" and k ~= "_destroy" then
          return fail(f .. "." .. validate.key_name(k), "cannot be changed on an existing image; destroy it"
            .. " ({id = ..., _destroy = true}) and upload a new one")
        end
      end
      if v._destroy ~= true then
        return fail(f .. "._destroy", "must be true: an existing image can only be destroyed")
      end
      return nil
    end
    for k in pairs(v) do
      if k == "_destroy" then return fail(f .. ".id", "is required to destroy an image") end
      if k ~= "image_upload_url" then
        return fail(f .. "." .. validate.key_name(k), "is not a known field (a new image takes only"
          .. " image_upload_url)")
      end
    end
    return images.check_upload_url(v.image_upload_url, f .. ".image_upload_url")
  end
end
local IMAGES_CREATE, IMAGES_UPDATE = array_of(image_item(false)), array_of(image_item(true))

-- ---- request bodies ----

local function merge_fields(...)
  local out = {}
  for _, t in ipairs { ... } do
    for k, v in pairs(t) do out[k] = v end
  end
  return out
end

-- merge_customer_ids: each id once.
local function distinct_merge_ids(o)
  local ids = o.merge_customer_ids
  if type(ids) ~= "table" then return nil end
  local seen = {}
  for i = 1, #ids do
    if seen[ids[i]] then
      return fail("merge_customer_ids[" .. i .. "]", "repeats merge_customer_ids[" .. seen[ids[i]] .. "]")
    end
    seen[ids[i]] = i
  end
  return nil
end

local CUSTOMER_UPDATE = {
  parent_shop_id = OBJECT_ID, name_prefix = STRING, first_name = STRING, last_name = STRING,
  company_name = STRING,
  phones = M.PHONES, overwrite_phones = BOOL, emails = M.EMAILS, overwrite_emails = BOOL,
  socials = array_of(SOCIAL), overwrite_socials = BOOL,
  images = IMAGES_UPDATE,
  events = array_of(EVENT), overwrite_events = BOOL,
  addresses = array_of(ADDRESS), overwrite_addresses = BOOL,
  kanji_first_name = STRING, kanji_last_name = STRING, title = STRING, sex = SEX, division = STRING,
  source = enum(CUSTOMER_SOURCES), age_range = enum(AGE_RANGES),
  tags = STRINGS, likes = STRINGS, allerges = STRINGS, dislikes = STRINGS,
  -- The contract's enum: an unsupported locale would be stored as null, so it is refused here.
  locale = enum(LOCALES), country = COUNTRY,
  base_count_visits = int(0), base_count_cancels = int(0), base_count_noshows = int(0),
  email_marketing = BOOL, email_reminders = BOOL, direct_mail = BOOL, is_incognito = BOOL,
  is_temporary = BOOL, memo = LONG_TEXT, shop_memos = array_of(SHOP_MEMO), allow_surveys = BOOL,
  merge_customer_ids = array_of(OBJECT_ID, { nonempty = true }),
}

-- Names a reader of the Customer object is likely to send; the write side spells them otherwise.
local CUSTOMER_HINTS = {
  allergies = "is not a known field (the API's write field is spelled allerges)",
  gender = "is not a known field (write sex: 0 unknown, 1 male, 2 female)",
  alt_first_name = "is not a known field (write kanji_first_name)",
  alt_last_name = "is not a known field (write kanji_last_name)",
  company_title = "is not a known field (write title)",
  company_division = "is not a known field (write division)",
  phone_objects = "is not a known field (send phone objects in phones)",
  email_objects = "is not a known field (send email objects in emails)",
  id = "is not a known field (the customer id goes in the path)",
}

local function SECONDS(v, f) return validate.number(v, f, { min = 0 }) end

local RESERVATION_UPDATE = {
  customer_ref = STRING, customer_id = STRING, ref = STRING,
  pax = int(0), pax_adult = int(0), pax_senior = int(0), pax_child = int(0), pax_baby = int(0),
  start_at = TIME, duration = SECONDS, source = enum(RESERVATION_SOURCES), channel = STRING,
  special_request = LONG_TEXT, memo = LONG_TEXT, memo2 = LONG_TEXT,
  seat_types = array_of(enum(SEAT_TYPES)), smoking = enum(SMOKING),
  status = enum(RESERVATION_STATUSES), points = int(), party_name = STRING, room_name = STRING,
  cancel_reason_type = enum(CANCEL_REASONS), cancel_reason = LONG_TEXT,
  cancelled_by_customer = BOOL, send_emails = BOOL, send_texts = BOOL,
  email = EMAIL, phone = E164, reservation_flag_ids = array_of(STRING),
  images = IMAGES_UPDATE,
}

local MEMBERSHIP_UPDATE = {
  code = STRING, customer_ids = array_of(OBJECT_ID), membership_program_id = OBJECT_ID,
  membership_tier_id = OBJECT_ID, points = int(), status = enum(MEMBERSHIP_STATUSES),
  start_date = DATE, expiry_date = DATE,
}

local function not_empty(o)
  if next(o) == nil then return fail("body", "must set at least one field") end
  return nil
end

local SEARCH_STRINGS = {
  "first_name", "last_name", "alt_first_name", "alt_last_name", "company_name", "company_division",
  "company_title", "email", "memo", "shop_memos_memo", "social_username", "address_postal_code",
  "address_region", "address_city", "reservation_memo", "reservation_ref", "reservation_party_name",
  "reservation_room_name", "membership_program_id", "membership_tier_id", "membership_code",
  "membership_points_min", "membership_points_max", "pos_menu_condition", "pos_currency",
  "pos_menu_category_name", "pos_menu_item_name", "order_currency", "order_menu_category_name",
  "order_menu_item_name",
}
local SEARCH_STRING_LISTS = { "tags", "likes", "dislikes", "allergies", "sales_rep_ids",
  "assigned_staff_ids", "event_tags", "event_months", "reservation_statuses",
  "reservation_objectives", "reservation_sources", "reservation_channels", "reservation_providers" }
local SEARCH_ID_LISTS = { "shop_memos_shop_ids", "parent_shop_ids", "reservation_flag_ids",
  "reservation_status_ids", "reservation_shop_ids", "pos_shop_ids" }
local SEARCH_BOOLS = { "has_phone", "has_email", "allow_marketing", "direct_mail", "is_temporary" }
local SEARCH_DATES = { "event_date_min", "event_date_max", "reservation_start_date_min",
  "reservation_start_date_max", "reservation_created_date_min", "reservation_created_date_max",
  "reservation_updated_date_min", "reservation_updated_date_max", "membership_start_date_min",
  "membership_start_date_max", "membership_expiry_date_min", "membership_expiry_date_max" }
local SEARCH_TIMES = { "created_at_min", "created_at_max", "updated_at_min", "updated_at_max" }
local SEARCH_INTS = { "reservation_pax_min", "reservation_pax_max", "reservation_count_visits_min",
  "reservation_count_visits_max", "reservation_shop_visits_min", "reservation_shop_visits_max",
  "reservation_shop_cancels_min", "reservation_shop_cancels_max", "reservation_shop_noshows_min",
  "reservation_shop_noshows_max", "pos_qty_min", "pos_qty_max", "order_qty_min", "order_qty_max" }
local SEARCH_DECIMALS = { "payment_average_amt_min", "payment_average_amt_max",
  "payment_lifetime_amt_min", "payment_lifetime_amt_max", "payment_last_amt_min",
  "payment_last_amt_max", "payment_avg_spend_per_pax_min", "payment_avg_spend_per_pax_max",
  "pos_average_amt_min", "pos_average_amt_max", "pos_lifetime_amt_min", "pos_lifetime_amt_max",
  "pos_last_amt_min", "pos_last_amt_max", "pos_avg_spend_per_pax_min", "pos_avg_spend_per_pax_max",
  "pos_price_min", "pos_price_max", "pos_total_min", "pos_total_max", "order_price_min",
  "order_price_max", "order_total_min", "order_total_max" }

local function fields_of(names, rule, into)
  into = into or {}
  for _, n in ipairs(names) do into[n] = rule end
  return into
end

local CUSTOMER_SEARCH = fields_of(SEARCH_STRINGS, STRING)
fields_of(SEARCH_STRING_LISTS, STRINGS, CUSTOMER_SEARCH)
fields_of(SEARCH_ID_LISTS, array_of(OBJECT_ID), CUSTOMER_SEARCH)
fields_of(SEARCH_BOOLS, BOOL, CUSTOMER_SEARCH)
fields_of(SEARCH_DATES, DATE, CUSTOMER_SEARCH)
fields_of(SEARCH_TIMES, TIME, CUSTOMER_SEARCH)
fields_of(SEARCH_INTS, int(), CUSTOMER_SEARCH)
fields_of(SEARCH_DECIMALS, DECIMAL, CUSTOMER_SEARCH)
CUSTOMER_SEARCH.franchise_id = OBJECT_ID
CUSTOMER_SEARCH.order_menu_category_id = OBJECT_ID
CUSTOMER_SEARCH.order_menu_item_id = OBJECT_ID
CUSTOMER_SEARCH.phone = PHONE_PREFIX
CUSTOMER_SEARCH.gender = enum { "male", "female" }
CUSTOMER_SEARCH.age_ranges = array_of(enum(AGE_RANGES))
CUSTOMER_SEARCH.locales = array_of(enum(LOCALES))
CUSTOMER_SEARCH.address_country = COUNTRY
CUSTOMER_SEARCH.reservation_stages = array_of(enum { "past", "future", "cancelled", "rejected" })
CUSTOMER_SEARCH.payment_currency = enum { "local", "USD" }

local BODIES = {
  customer_create = object(merge_fields(CUSTOMER_UPDATE, { franchise_id = OBJECT_ID,
    images = IMAGES_CREATE }),
    { required = { "franchise_id" }, hints = CUSTOMER_HINTS, check = distinct_merge_ids }),
  customer_update = object(CUSTOMER_UPDATE, { hints = CUSTOMER_HINTS, check = function(o)
    return not_empty(o) or distinct_merge_ids(o)
  end }),
  customer_search = object(CUSTOMER_SEARCH, { hints = {
    scroll_id = "is managed by the iterator (it follows pagination.scroll_id itself); to continue"
      .. " a scroll by hand, call search_customers{scroll_id = id} with no other field",
  } }),
  reservation_create = object(merge_fields(RESERVATION_UPDATE, { shop_id = OBJECT_ID,
    images = IMAGES_CREATE }),
    { required = { "shop_id", "pax", "start_at" } }),
  reservation_update = object(RESERVATION_UPDATE, { check = not_empty }),
  membership_create = object(MEMBERSHIP_UPDATE, { required = { "membership_program_id", "code" } }),
  membership_update = object(MEMBERSHIP_UPDATE, { check = not_empty }),
}

-- body(name, value [, opts]) -> copy | nil, err
-- New images must name a public host (images.check_public_host) unless
-- opts.allow_private_image_urls (the client option of that name).
function M.body(name, value, opts)
  if value == nil then return nil, fail("body", "is required") end
  -- Checked and sent from one raw copy: what __index inherits or __pairs invents is not data.
  local copy, cerr = validate.plain(value, "body")
  if not copy then return nil, cerr end
  value = copy
  local e, out = BODIES[name](value, nil)
  if e then return nil, e end
  local list = type(out) == "table" and out.images
  if type(list) == "table" and not (opts and opts.allow_private_image_urls) then
    for i, img in ipairs(list) do
      e = type(img) == "table" and images.check_public_host(img.image_upload_url,
        "images[" .. i .. "].image_upload_url")
      if e then return nil, e end
    end
  end
  return out
end

-- ---- query parameters ----

local PAGING = { page = int(0), per_page = int(1, M.MAX_PER_PAGE) }
local FIELDS = { include_fields = FIELD_LIST, exclude_fields = FIELD_LIST }
local STAMPED = { created_at_min = TIME, created_at_max = TIME, updated_at_min = TIME,
                  updated_at_max = TIME }

local PAGE = PAGING.page
local function customers_page(v, f)
  local e, r = PAGE(v, f)
  if e then return e end
  if v ~= nil and v >= M.CUSTOMERS_MAX_PAGES then
    return fail(f, "must be at most " .. (M.CUSTOMERS_MAX_PAGES - 1) .. ": GET /customers serves only "
      .. M.CUSTOMERS_MAX_PAGES .. " pages (zero-based); use iter_search_customers to read every customer")
  end
  return nil, r
end

local QUERIES = {
  customers = merge_fields({ ids = IDS, shop_ids = IDS }, STAMPED, PAGING, FIELDS,
    { page = customers_page }),
  customers_show = FIELDS,
  shops = merge_fields({ ids = IDS, slugs = TEXT_LIST, franchise_ids = IDS }, PAGING, FIELDS),
  franchises = merge_fields({ ids = IDS, names = TEXT_LIST, slugs = TEXT_LIST }, PAGING, FIELDS),
  reservations = merge_fields({ ids = IDS, customer_ids = IDS, start_at_min = TIME,
    start_at_max = TIME, sort = enum { "start_at", "created_at", "updated_at" },
    sort_order = enum { "asc", "desc" } }, STAMPED, PAGING, FIELDS),
  reservations_show = FIELDS,
  reservation_flags = merge_fields({ ids = IDS, shop_ids = IDS }, STAMPED, PAGING),
  memberships = merge_fields({ ids = IDS, customer_ids = IDS, code = STRING,
    membership_program_id = OBJECT_ID }, STAMPED, PAGING, FIELDS),
  membership_programs = merge_fields({ ids = IDS, membership_ids = IDS }, STAMPED, PAGING, FIELDS),
}

-- query(name, params) -> copy | nil, err. Values stay scalars or lists (sent comma-separated).
function M.query(name, params)
  if params == nil then return {} end
  local copy, cerr = validate.plain(params, "params")
  if not copy then return nil, cerr end
  params = copy
  local rules = QUERIES[name] or {}
  if type(params) ~= "table" or params[1] ~= nil then
    return nil, fail("params", "must be a table of query parameters")
  end
  local out = {}
  for k, v in pairs(params) do
    local rule = type(k) == "string" and rules[k]
    if not rule then return nil, fail(validate.key_name(k), "is not a query parameter of this endpoint") end
    local e, r = rule(v, k)
    if e then return nil, e end
    if r == empty_array then return nil, fail(k, "must not be empty") end
    if r ~= nil then v = r end
    out[k] = v
  end
  return out
end

-- Nested lists of customer and reservation writes; overwrite_<name> exists for the first five.
local NESTED_LISTS = { "phones", "emails", "addresses", "socials", "events", "shop_memos", "images" }

-- Whether a checked write may be sent twice with the same result (the retry policy resends
-- only those once they may have reached the server). Not when it merges customers or when a
-- nested entry is
--   new (a string, or an object without id) and the list is not overwritten: appended again;
--     image uploads are always new;
--   a destroy ({id, _destroy = true}): the second finds nothing and fails, hiding that the
--     first one worked.
function M.write_is_repeatable(body)
  if body.merge_customer_ids ~= nil then return false end
  for _, kind in ipairs(NESTED_LISTS) do
    local list = body[kind]
    if type(list) == "table" then
      local overwrite = body["overwrite_" .. kind] == true
      for _, item in ipairs(list) do
        local obj = type(item) == "table"
        if obj and item._destroy == true then return false end
        if not overwrite and not (obj and item.id ~= nil) then return false end
      end
    end
  end
  return true
end

return M
