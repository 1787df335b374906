-- Input checks shared by both APIs. Each returns nil when the value is fine, or a validation
-- error that names the field and the rule; callers stop before anything is sent.
local errors = require "crm.error"

local M = {}

local type, pairs, tostring, tonumber, byte = type, pairs, tostring, tonumber, string.byte
local huge = math.huge

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
  if not M.is_utf8(value) then return fail(field, "must be valid UTF-8") end
  return nil
end

function M.header_value(value, field)
  if type(value) ~= "string" or value == "" then return fail(field, "must be a non-empty string") end
  if value:find("[%c]") then return fail(field, "must not contain CR, LF or other control characters") end
  if #value > 4096 then return fail(field, "must be at most 4096 bytes") end
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

function M.email(value, field)
  local e = M.string(value, field, { nonempty = true, max = 254 })
  if e then return e end
  if value ~= nil and not value:find("^[^%s@]+@[^%s@]+%.[^%s@]+$") then
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

-- ISO-8601 date-time, e.g. 2024-03-05T00:21:40Z, 2024-03-05T00:21:40.978+09:00 or +0900.
function M.is_iso8601(s)
  if type(s) ~= "string" then return false end
  local rest = s:match("^%d%d%d%d%-[01]%d%-[0-3]%dT[0-2]%d:[0-5]%d(.*)$")
  if not rest then return s:find("^%d%d%d%d%-[01]%d%-[0-3]%d$") ~= nil end
  rest = rest:gsub("^:[0-6]%d", ""):gsub("^%.%d+", "")
  return rest == "" or rest == "Z" or rest:find("^[+-][0-2]%d:?[0-5]%d$") ~= nil
end

function M.iso8601(value, field)
  if value ~= nil and not M.is_iso8601(value) then
    return fail(field, "must be an ISO-8601 date-time (e.g. 2024-03-05T00:21:40.000+0000)")
  end
  return nil
end

-- A calendar date, YYYY-MM-DD, with a month 01-12 and a day 01-31.
function M.is_date(s)
  if type(s) ~= "string" then return false end
  local m, d = s:match("^%d%d%d%d%-(%d%d)%-(%d%d)$")
  m, d = tonumber(m), tonumber(d)
  return m ~= nil and m >= 1 and m <= 12 and d >= 1 and d <= 31
end

function M.date(value, field)
  if value ~= nil and not M.is_date(value) then
    return fail(field, "must be a date, YYYY-MM-DD (e.g. 2024-03-05)")
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

-- Unknown keys are refused, so a typo such as `firstname` is caught before sending.
function M.known_keys(t, allowed, prefix)
  for k in pairs(t) do
    if not allowed[k] then
      return fail((prefix or "") .. tostring(k), "is not a known field")
    end
  end
  return nil
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
