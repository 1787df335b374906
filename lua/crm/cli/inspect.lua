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

-- Strings a dry run may show on stderr: ids, dates and enum words. Everything else may be a
-- name, an email, a phone or a note, so it is shown as <pii> (stdout carries the real body).
local function safe_string(s)
  return s:find("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$") ~= nil
    or s:find("^" .. ("%x"):rep(24) .. "$") ~= nil
    or s:find("^%d%d%d%d%-%d%d%-%d%d[%dT:%.%+%-Z]*$") ~= nil
    or s:find("^[A-Z][A-Z0-9_]*$") ~= nil
end

local function mask(v, depth)
  if type(v) == "string" then return safe_string(v) and v or "<pii>" end
  if type(v) ~= "table" or depth > 20 then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = mask(x, depth + 1) end
  return setmetatable(out, getmetatable(v))
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
    local shown = decoded ~= nil and json.encode(mask(decoded, 0)) or "<" .. #body .. " bytes>"
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
