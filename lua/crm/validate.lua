-- Input checks shared by both APIs. Each returns nil when the value is fine, or a validation
-- error that names the field and the rule; callers stop before anything is sent.
local errors = require "crm.error"

local M = {}

local type, pairs, ipairs, tonumber, byte = type, pairs, ipairs, tonumber, string.byte
local huge = math.huge
-- JSON numbers go out with 14 significant digits (lua-cjson 2.1.0): larger integers would change.
local MAX_INT = 1e14

local function fail(field, rule)
  return errors.validation(field, rule)
end
M.fail = fail

-- Strict UTF-8 (no overlongs, no surrogates, nothing past U+10FFFF), portable to LuaJIT.
function M.is_utf8(s)
  -- Most text is ASCII: one pattern scan instead of a byte loop.
  if not s:find("[\128-\255]") then return true end
  local i, n = 1, #s
  while i <= n do
    local c = byte(s, i)
    if c < 0x80 then
      i = i + 1
    else
      local len
      local lo, hi = 0x80, 0xBF
      if c >= 0xC2 and c <= 0xDF then len = 1
      elseif c == 0xE0 then len, lo = 2, 0xA0
      elseif c >= 0xE1 and c <= 0xEC or c == 0xEE or c == 0xEF then len = 2
      elseif c == 0xED then len, hi = 2, 0x9F
      elseif c == 0xF0 then len, lo = 3, 0x90
      elseif c >= 0xF1 and c <= 0xF3 then len = 3
      elseif c == 0xF4 then len, hi = 3, 0x8F
      else return false end
      for k = 1, len do
        local cc = byte(s, i + k)
        if not cc then return false end
        if k == 1 then
          if cc < lo or cc > hi then return false end
        elseif cc < 0x80 or cc > 0xBF then
          return false
        end
      end
      i = i + len + 1
    end
  end
  return true
end

-- string(value, field, {required, max, nonempty}) : a text field of a request.
function M.string(value, field, opts)
  opts = opts or {}
  if value == nil then
    if opts.required then return fail(field, "is required") end
    return nil
  end
  if type(value) ~= "string" then return fail(field, "must be a string") end
  if (opts.required or opts.nonempty) and not value:find("%S") then
    return fail(field, "must not be empty")
  end
  local max = opts.max or 1024
  if #value > max then return fail(field, "must be at most " .. max .. " bytes") end
  if value:find("%z") then return fail(field, "must not contain NUL") end
  if not M.is_utf8(value) then return fail(field, "must be valid UTF-8") end
  return nil
end

-- A value that becomes one URL path segment: refuse anything that could change the path.
function M.id(value, field)
  -- The common case, a GUID or hex id, passes with one scan.
  if type(value) == "string" and #value <= 128 and value:find("^[%w%-_]+$") then return nil end
  if type(value) ~= "string" then return fail(field, "must be a string id") end
  if value == "" then return fail(field, "must not be empty") end
  if #value > 128 then return fail(field, "must be at most 128 bytes") end
  if value:find("[/?#%%%c%s\\]") or value:find("..", 1, true) then
    return fail(field, "must not contain '/', '?', '#', '%', '..', spaces or control characters")
  end
  -- "." is a dot segment: curl and servers remove it, so /customers/./x would reach /customers/x.
  -- ("%2e" cannot get here: '%' is refused above.)
  if value == "." then return fail(field, "must not be '.' (a dot segment, removed from the path)") end
  if not M.is_utf8(value) then return fail(field, "must be valid UTF-8") end
  return nil
end

-- header_value(value, field [, {min = bytes}]): one HTTP header value. opts.min: secrets shorter
-- than that cannot be told from ordinary text, so they could not be scrubbed from error messages.
function M.header_value(value, field, opts)
  if type(value) ~= "string" or value == "" then return fail(field, "must be a non-empty string") end
  if value:find("[%c]") then return fail(field, "must not contain CR, LF or other control characters") end
  if value:find("[\128-\255]") then
    return fail(field, "must be ASCII (HTTP header values carry no other bytes safely)")
  end
  if #value > 4096 then return fail(field, "must be at most 4096 bytes") end
  if opts and opts.min and #value < opts.min then
    return fail(field, "must be at least " .. opts.min .. " bytes")
  end
  return nil
end

local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"
function M.is_uuid(s)
  return type(s) == "string" and s:find(UUID) ~= nil
end

function M.uuid(value, field)
  if not M.is_uuid(value) then return fail(field, "must be a UUID (8-4-4-4-12 hex digits)") end
  return nil
end

function M.number(value, field, opts)
  opts = opts or {}
  if value == nil then
    if opts.required then return fail(field, "is required") end
    return nil
  end
  if type(value) ~= "number" then return fail(field, "must be a number") end
  if value ~= value or value == huge or value == -huge then return fail(field, "must be finite") end
  if opts.gt and value <= opts.gt then return fail(field, "must be greater than " .. opts.gt) end
  if opts.min and value < opts.min then return fail(field, "must be at least " .. opts.min) end
  if opts.max and value > opts.max then return fail(field, "must be at most " .. opts.max) end
  if opts.integer and value % 1 ~= 0 then return fail(field, "must be an integer") end
  -- Integers past 10^14 would be sent changed (or as 1e+308): never sent.
  if opts.integer and (value > MAX_INT or value < -MAX_INT) then
    return fail(field, "must be an integer between -10^14 and 10^14")
  end
  return nil
end

function M.boolean(value, field)
  if value ~= nil and type(value) ~= "boolean" then return fail(field, "must be a boolean") end
  return nil
end

function M.enum(value, field, allowed)
  if value == nil then return nil end
  for i = 1, #allowed do
    if value == allowed[i] then return nil end
  end
  return fail(field, "must be one of " .. table.concat(allowed, ", "))
end

-- ---- email addresses (RFC 5322 addr-spec, with UTF-8 as RFC 6531 allows) ----

-- Bytes of a dot-atom (RFC 5322 atext and the dot) and of a domain label (letters, digits,
-- hyphen), both with any UTF-8 byte; is_utf8 checks the sequences as a whole.
local ATEXT = "^[%w!#%$%%&'%*%+%-/=%?%^_`{|}~\128-\255%.]+$"
local LABEL = "^[%w\128-\255%-]+$"

local function is_local_part(s)
  if s == "" or #s > 64 then return false end
  local q = s:match('^"(.*)"$')
  if q then
    -- quoted-string: printable ASCII and space, \ escapes one of them, no bare " or \
    q = q:gsub("\\[ -~]", "")
    return not q:find('["\\%c]')
  end
  return s:find(ATEXT) ~= nil and not s:find("^%.") and not s:find("%.$")
    and not s:find("..", 1, true)
end

local function is_ipv4(s)
  local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then return false end
  for _, n in ipairs { a, b, c, d } do
    if #n > 3 or tonumber(n) > 255 then return false end
  end
  return true
end

-- A host name with at least one dot (labels of 1 to 63 bytes, no hyphen at either end), or an
-- address literal: [192.0.2.1] or [IPv6:2001:db8::1].
local function is_domain(s)
  if #s > 253 then return false end
  local lit = s:match("^%[(.*)%]$")
  if lit then
    local v6 = lit:match("^[Ii][Pp][Vv]6:(.+)$")
    if v6 then return v6:find("^[%x:%.]+$") ~= nil and v6:find(":", 1, true) ~= nil end
    return is_ipv4(lit)
  end
  if not s:find(".", 1, true) then return false end
  for label in (s .. "."):gmatch("([^.]*)%.") do
    if label == "" or #label > 63 or not label:find(LABEL) or label:find("^%-") or label:find("%-$") then
      return false
    end
  end
  return true
end

-- is_email(s): local-part@domain as above, at most 254 bytes, valid UTF-8.
function M.is_email(s)
  if type(s) ~= "string" or #s > 254 or not M.is_utf8(s) then return false end
  local at = s:match("^.*()@")
  if not at then return false end
  return is_local_part(s:sub(1, at - 1)) and is_domain(s:sub(at + 1))
end

function M.email(value, field)
  local e = M.string(value, field, { nonempty = true, max = 254 })
  if e then return e end
  if value ~= nil and not M.is_email(value) then
    return fail(field, "must be an email address (name@domain)")
  end
  return nil
end

-- E.164: a +, a non-zero country digit, at most 15 digits in all.
function M.is_e164(s)
  return type(s) == "string" and s:find("^%+[1-9]%d%d%d%d%d%d?%d?%d?%d?%d?%d?%d?%d?%d?$") ~= nil
end

function M.e164(value, field)
  if value ~= nil and not M.is_e164(value) then
    return fail(field, "must be an E.164 phone number (+ then 7 to 15 digits)")
  end
  return nil
end

-- ---- dates and times: real calendar values only ----

local function is_leap(y) return y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0) end
local MONTH_DAYS = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }

-- is_real_date(2024, 2, 29) -> true; (2023, 2, 29) -> false; month 1-12, day within the month.
function M.is_real_date(y, m, d)
  if not (y and m and d) or m < 1 or m > 12 or d < 1 then return false end
  local last = MONTH_DAYS[m]
  if m == 2 and is_leap(y) then last = 29 end
  return d <= last
end

--[[ parse_datetime(s [, opts]) -> t | nil, reason
  RFC 3339 date-time: YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM), real values only (month
  01-12, a day of that month, hour 00-23, minute 00-59, second 00-60, offset at most 23:59).
  opts.compact_offset  also accept +HHMM (Toast's yyyy-MM-ddTHH:mm:ss.SSS+hhmm)
  opts.seconds_optional  HH:MM without seconds is accepted (second = 0)
  opts.offset_optional   no zone at all is accepted (offset = nil)
  t = {year, month, day, hour, min, sec, frac = "digits" | "", offset = minutes east | nil}. ]]
function M.parse_datetime(s, opts)
  if type(s) ~= "string" then return nil, "is not a string" end
  opts = opts or {}
  local y, mo, d, h, mi, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt](%d%d):(%d%d)(.*)$")
  if not y then return nil, "is not YYYY-MM-DDTHH:MM:SS" end
  y, mo, d, h, mi = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi)
  local sec, frac = 0, ""
  local ss, r2 = rest:match("^:(%d%d)(.*)$")
  if ss then
    sec, rest = tonumber(ss), r2
    local f, r3 = rest:match("^%.(%d+)(.*)$")
    if f then frac, rest = f, r3 end
  elseif not opts.seconds_optional then
    return nil, "has no seconds"
  end
  if not M.is_real_date(y, mo, d) then return nil, "is not a real calendar date" end
  if h > 23 or mi > 59 or sec > 60 then return nil, "is not a real time of day" end
  local offset
  if rest == "Z" or rest == "z" then
    offset = 0
  elseif rest == "" then
    if not opts.offset_optional then return nil, "has no time zone offset (Z or +HH:MM)" end
  else
    local sign, oh, om = rest:match("^([+-])(%d%d):(%d%d)$")
    if not sign and opts.compact_offset then sign, oh, om = rest:match("^([+-])(%d%d)(%d%d)$") end
    if not sign then return nil, "has a malformed time zone offset" end
    oh, om = tonumber(oh), tonumber(om)
    if oh > 23 or om > 59 then return nil, "has an impossible time zone offset" end
    offset = (oh * 60 + om) * (sign == "-" and -1 or 1)
  end
  return { year = y, month = mo, day = d, hour = h, min = mi, sec = sec, frac = frac,
           offset = offset }
end

-- A calendar date, YYYY-MM-DD, that names a real day.
function M.is_date(s)
  if type(s) ~= "string" then return false end
  local y, m, d = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)$")
  return y ~= nil and M.is_real_date(tonumber(y), tonumber(m), tonumber(d))
end

-- ISO-8601 as Toast's query parameters take it: a real date, or a real date-time whose seconds
-- and zone may be left out (2024-03-05, 2024-03-05T00:21, 2024-03-05T00:21:40.978+0900).
function M.is_iso8601(s)
  if M.is_date(s) then return true end
  return M.parse_datetime(s, { compact_offset = true, seconds_optional = true,
                               offset_optional = true }) ~= nil
end

function M.iso8601(value, field)
  if value ~= nil and not M.is_iso8601(value) then
    return fail(field, "must be a real ISO-8601 date or date-time (e.g. 2024-03-05T00:21:40.000+0000)")
  end
  return nil
end

-- A full RFC 3339 date-time (the OpenAPI `date-time` format): seconds and an offset required.
function M.datetime(value, field)
  if value == nil then return nil end
  local t, why = M.parse_datetime(value)
  if not t then
    return fail(field, "must be an RFC 3339 date-time with seconds and an offset"
      .. " (e.g. 2024-03-05T00:21:40+09:00); it " .. why)
  end
  return nil
end

function M.date(value, field)
  if value ~= nil and not M.is_date(value) then
    return fail(field, "must be a real calendar date, YYYY-MM-DD (e.g. 2024-03-05)")
  end
  return nil
end

-- A list of ids for a query parameter: an array of ids, or one comma-separated string. Each id
-- must also be free of commas, which would split it on the wire.
function M.id_list(value, field)
  if value == nil then return nil end
  local items = value
  if type(value) == "string" then
    items = {}
    for part in (value .. ","):gmatch("([^,]*),") do items[#items + 1] = part end
  elseif type(value) ~= "table" then
    return fail(field, "must be an array of ids or a comma-separated string")
  end
  if #items == 0 then return fail(field, "must not be empty") end
  for k in pairs(items) do
    if type(k) ~= "number" or k % 1 ~= 0 or k < 1 or k > #items then
      return fail(field, "must be an array (keys 1..n)")
    end
  end
  for i = 1, #items do
    local f = field .. "[" .. i .. "]"
    local e = M.id(items[i], f)
    if e then return e end
    if items[i]:find(",", 1, true) then return fail(f, "must not contain ','") end
  end
  return nil
end

-- An absolute http:// or https:// URL with a host and no spaces or control characters.
function M.http_url(value, field)
  local e = M.string(value, field, { required = true, max = 2048 })
  if e then return e end
  if not value:find("^[Hh][Tt][Tt][Pp][Ss]?://[^/%s?#]+") or value:find("[%s%c]") then
    return fail(field, "must be an http:// or https:// URL")
  end
  return nil
end

-- A printable name for a table key, whatever it is (a key's own __tostring may raise).
-- The name an error gives a key it refuses. Only a key shaped like a field name (letters, digits,
-- underscores, at most 64 bytes) or a small integer (an array index) is shown: a table keyed by
-- guests (their names, emails, phones) passed where a record belongs must not put a guest in
-- the error.
local function key_name(k)
  if type(k) == "string" then
    if #k <= 64 and k:find("^[%a_][%w_]*$") then return k end
    return "<key not shaped like a field name>"
  end
  if type(k) == "number" and k % 1 == 0 then
    if k >= 0 and k < 100000 then return ("%d"):format(k) end
    return "<key not shaped like a field name>"
  end
  return "<" .. type(k) .. " key>"
end
M.key_name = key_name

-- Edit distance (Levenshtein) between two short strings.
local function distance(a, b)
  local prev, cur = {}, {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    cur[0] = i
    for j = 1, #b do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev, cur = cur, prev
  end
  return prev[#b]
end

-- suggest(name, set, ...) -> the known name nearest to an unknown one (the keys of the sets), or
-- nil when none is close: the same letters in another case or with(out) underscores
-- (restaurantGuid, restaurant_guid), else at most a third of its letters off.
function M.suggest(name, ...)
  if type(name) ~= "string" then return nil end
  local function squash(s) return (s:lower():gsub("[_%-]", "")) end
  local want, best, best_d = squash(name), nil, math.max(1, math.floor(#name / 3)) + 1
  for i = 1, select("#", ...) do
    for k in pairs((select(i, ...))) do
      if type(k) == "string" then
        local d = squash(k) == want and 0 or distance(name, k)
        if d < best_d or (d == best_d and best and k < best) then best, best_d = k, d end
      end
    end
  end
  return best
end

-- Unknown keys are refused, so a typo such as `firstname` is caught before sending.
function M.known_keys(t, allowed, prefix)
  for k in next, t do
    if not allowed[k] then
      return fail((prefix or "") .. key_name(k), "is not a known field")
    end
  end
  return nil
end

--[[ plain(v, field) -> a raw deep copy of v | nil, err
  Input tables are read raw (next, no __index or __pairs), so what is checked is exactly what is
  sent: a field inherited through a metatable is not there, and a metamethod that raises cannot
  escape. crm's own markers (crm.null, crm.empty_array) are kept as they are; other metatables
  are dropped. Cycles and nesting deeper than 32 are refused, naming the top-level field they
  are under (`firstName`, not `customer`). ]]
local KEEP, KEEP_MT = {}, {}
function M.keep_marker(v) KEEP[v] = true end
-- A metatable that copies keep (crm.json's array marker: a decoded [] stays [] when sent back).
function M.keep_metatable(mt) KEEP_MT[mt] = true end
-- A table used in several places is copied once (st.done), so a value shared many times over
-- costs what its distinct tables cost; st.path holds the tables being copied (a cycle), and
-- st.left bounds the number of entries in all.
local MAX_ENTRIES = 1000000
local function plain(v, field, depth, st)
  if type(v) ~= "table" or KEEP[v] then return v end
  local done = st.done[v]
  if done then return done end
  if depth > 32 then return nil, fail(field, "is nested too deeply (more than 32 levels)") end
  if st.path[v] then return nil, fail(field, "must not contain itself (a cycle)") end
  st.path[v] = true
  local out = {}
  for k, x in next, v do
    st.left = st.left - 1
    if st.left < 0 then return nil, fail(field, "has more than " .. MAX_ENTRIES .. " entries") end
    -- Below the top, the field that broke the rule is the top-level key it sits under.
    local c, e = plain(x, depth == 0 and type(k) == "string" and k or field, depth + 1, st)
    if e then return nil, e end
    out[k] = c
  end
  st.path[v] = nil
  local mt = getmetatable(v)
  if mt ~= nil and KEEP_MT[mt] then setmetatable(out, mt) end
  st.done[v] = out
  return out
end
function M.plain(v, field)
  if type(v) ~= "table" or KEEP[v] then return v end
  -- A flat table (no table inside: a query, options), the usual input, is copied in one pass
  -- without the bookkeeping of nested ones.
  local out, n = {}, 0
  for k, x in next, v do
    if type(x) == "table" and not KEEP[x] then
      return plain(v, field, 0, { done = {}, path = {}, left = MAX_ENTRIES })
    end
    n = n + 1
    out[k] = x
  end
  if n > MAX_ENTRIES then return nil, fail(field, "has more than " .. MAX_ENTRIES .. " entries") end
  local mt = getmetatable(v)
  if mt ~= nil and KEEP_MT[mt] then setmetatable(out, mt) end
  return out
end

-- Options of the polling waits (merge, images): {timeout, interval, max_interval}, all optional.
local WAIT_OPTIONS = { timeout = true, interval = true, max_interval = true }
function M.wait_options(w, field)
  local e = M.table(w, field)
  if e or w == nil then return e end
  return M.known_keys(w, WAIT_OPTIONS, field .. ".")
    or M.number(w.timeout, field .. ".timeout", { min = 0, max = 86400 })
    or M.number(w.interval, field .. ".interval", { gt = 0, max = 3600 })
    or M.number(w.max_interval, field .. ".max_interval", { gt = 0, max = 3600 })
end

function M.table(value, field, required)
  if value == nil then
    if required then return fail(field, "is required") end
    return nil
  end
  if type(value) ~= "table" then return fail(field, "must be a table") end
  return nil
end

return M
