-- --dry-run and Ctrl-C at the wire: a transport object (the clients' `transport` option) over a
-- C core handle. Under --dry-run every write is printed (secrets and PII masked) instead of
-- sent; reads, searches and the Toast login go through. After Ctrl-C nothing more is sent.
local crm = require "crm"
local core = require "crm.core"
local output = require "crm.cli.output"

local M = {}

local json = crm.json

-- Requests that change nothing, though some are POSTs: the login and the two searches.
local function is_read(method, path)
  if method == "GET" or method == "HEAD" then return true end
  if method ~= "POST" then return false end
  path = path:gsub("[?#].*$", "")
  return path:find("/authentication/v1/authentication/login$") ~= nil
    or path:find("/crm/v1/customers/search$") ~= nil
    or path:find("/customer_search$") ~= nil
end
M.is_read = is_read

local function path_of(url)
  return (url:gsub("^%a[%w+.-]*://[^/]*", ""))
end

-- Strings a dry run may show on stderr outside person fields: ids, dates and enum words.
-- Everything else may be a name, an email, a phone or a note, so it is shown as <pii> (stdout
-- carries the real body).
local function is_id(s)
  return s:find("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$") ~= nil
    or s:find("^" .. ("%x"):rep(24) .. "$") ~= nil
end
local function safe_string(s)
  return is_id(s)
    or s:find("^%d%d%d%d%-%d%d%-%d%d[%dT:%.%+%-Z]*$") ~= nil
    or s:find("^[A-Z][A-Z0-9_]*$") ~= nil
end

-- Person fields of either contract (Toast's Customer and credit transaction, TableCheck's
-- customer, reservation and membership bodies), by name: a field whose name (lower case, with
-- _ and - left out) contains one of these words, or is one of the short ones, is masked whole,
-- whatever its text looks like (upper-case names, dates of birth, cities, free-text notes).
local PII_WORDS = { "name", "email", "mail", "phone", "sms", "memo", "note", "event", "birth",
  "anniversar", "address", "street", "city", "postal", "zip", "social", "username", "company",
  "division", "gender", "allerg", "request", "answer", "card", "image", "url", "like", "title",
  "nickname", "guest", "contact", "comment", "description", "remark", "message" }
local PII_EXACT = { age = true, agerange = true, ageranges = true, sex = true, region = true,
  state = true, country = true, tag = true, tags = true, date = true, day = true, months = true,
  number = true, language = true, dob = true }
local function is_pii_key(k)
  if type(k) ~= "string" then return false end
  local n = k:lower():gsub("[^%w]", "")
  if PII_EXACT[n] then return true end
  for i = 1, #PII_WORDS do
    if n:find(PII_WORDS[i], 1, true) then return true end
  end
  return false
end
M.is_pii_key = is_pii_key

-- mask(v [, under]) -> a copy for stderr. Under a person field every string and number is
-- <pii> (an "id" inside, such as phones[1].id, stays when it has an id's shape); elsewhere
-- strings show only as ids, dates and enum words. Booleans and the shape of the body stay.
-- A loop over the tables still to copy: no depth limit, a table met twice copied once.
local function mask(v, under)
  local function leaf(x, pii, key)
    if type(x) == "string" then
      if pii then return (key == "id" and is_id(x)) and x or "<pii>" end
      return safe_string(x) and x or "<pii>"
    end
    if type(x) == "number" and pii then return "<pii>" end
    return x
  end
  if type(v) ~= "table" then return leaf(v, under) end
  local root = {}
  local todo = { { v, root, under } }
  local copies = { [v] = root }
  while #todo > 0 do
    local item = todo[#todo]
    todo[#todo] = nil
    local t, out, pii = item[1], item[2], item[3]
    for k, x in next, t do
      local sub = pii or is_pii_key(k)
      if type(x) == "table" then
        local c = copies[x]
        if not c then
          c = {}
          copies[x] = c
          todo[#todo + 1] = { x, c, sub }
        end
        out[k] = c
      else
        out[k] = leaf(x, sub, k)
      end
    end
    local mt = getmetatable(t)
    if type(mt) == "table" then setmetatable(out, mt) end
  end
  return root
end
M.mask = mask

-- The masked header lines: Authorization always, and any value holding a known secret.
local function masked_headers(headers, secrets)
  local out = {}
  for i, h in ipairs(headers or {}) do
    local name, value = h:match("^([^:]+):%s*(.*)$")
    if name then
      local hidden = name:lower() == "authorization" or name:lower():find("key") ~= nil
      for _, s in ipairs(secrets) do
        if #s >= 4 and value:find(s, 1, true) then hidden = true end
      end
      out[i] = name .. ": " .. (hidden and "<redacted>" or value)
    end
  end
  return out
end
M.masked_headers = masked_headers

-- describe(method, url, headers, body, secrets) -> the stderr text of a request not sent.
function M.describe(method, url, headers, body, secrets)
  local path = path_of(url)
  local q = path:find("?", 1, true)
  if q then path = path:sub(1, q - 1) .. "?<query masked>" end
  local lines = { "dry-run: " .. method .. " " .. path .. " (not sent)" }
  for _, h in ipairs(masked_headers(headers, secrets)) do lines[#lines + 1] = "  " .. h end
  if body and body ~= "" then
    local decoded = json.decode(body)
    local shown = decoded ~= nil and json.encode(mask(decoded)) or "<" .. #body .. " bytes>"
    lines[#lines + 1] = "  body: " .. shown
  end
  return table.concat(lines, "\n")
end

-- The answer to a write held back: nothing left the machine (sent = false), so no
-- outcome is unknown; the command recognises it (is_held) and succeeds.
local HELD = { kind = "transport", name = "crm_dry_run_held", code = 0, sent = false,
               message = "held back by --dry-run: the request was printed, not sent" }
local STOPPED = { kind = "transport", name = "interrupted", code = 0, sent = false,
                  message = "interrupted (Ctrl-C): no further requests are sent" }

-- new{timeout, connect_timeout, dry_run, secrets} -> transport, with `held` (the requests a dry
-- run kept back: {method, path, body}).
function M.new(o)
  local inner, err = core.new { timeout = o.timeout, connect_timeout = o.connect_timeout }
  if not inner then return nil, err end
  local t = { held = {}, dry_run = o.dry_run, secrets = o.secrets or {} }
  function t.request(_, method, url, headers, body, timeout, fresh)
    if core.interrupted() > 0 then return nil, STOPPED end
    if t.dry_run and not is_read(method, path_of(url)) then
      local decoded = body and body ~= "" and json.decode(body) or nil
      t.held[#t.held + 1] = { method = method, path = path_of(url), body = decoded }
      output.note(M.describe(method, url, headers, body, t.secrets))
      return nil, HELD
    end
    return inner:request(method, url, headers, body, timeout, fresh)
  end
  function t.close() return inner:close() end
  return t
end

-- Whether err is the answer to a held write. Not by code or message alone: redaction may have
-- changed them (a guest called "Dry Run" makes code "dry_run" into "<pii>_<pii>").
function M.is_held(err, t)
  return type(err) == "table" and t ~= nil and #t.held > 0 and err.kind == "transport" and err.sent == false
end

function M.is_stopped(err)
  return type(err) == "table" and err.code == "interrupted"
end

return M
