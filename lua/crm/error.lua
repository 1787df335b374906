-- The one error type of crm: a table with fields and a one-line, redacted tostring.
local M = {}

local tostring, type, setmetatable, getmetatable = tostring, type, setmetatable, getmetatable
local concat = table.concat

M.KINDS = {
  validation = true, -- bad input; nothing was sent
  http = true,       -- the server answered with a status we do not accept
  transport = true,  -- the request did not complete (connect, TLS, dropped, too large, closed)
  auth = true,       -- login failed or credentials were refused
  timeout = true,    -- a time limit or deadline ran out
  decode = true,     -- the server's body is not the JSON we expect
}

local Error = {}
Error.__index = Error

-- Redaction: everything that reaches tostring goes through here, so a server that echoes
-- a customer's email or phone, or a token, does not leak it into logs.
local function redact(s, secrets)
  s = tostring(s)
  if secrets then
    for i = 1, #secrets do
      local secret = secrets[i]
      if type(secret) == "string" and #secret >= 4 then
        local from, to = s:find(secret, 1, true)
        while from do
          s = s:sub(1, from - 1) .. "<redacted>" .. s:sub(to + 1)
          from, to = s:find(secret, from + 10, true)
        end
      end
    end
  end
  s = s:gsub("[Bb]earer%s+[%w%-%._~%+/=]+", "Bearer <redacted>")
  s = s:gsub("[%w%.%%%+%-_]+@[%w%-%.]+%.%a%a+", "<email>")
  -- Phone-like runs: an optional +, then 7 or more digits possibly split by space, dot or dash.
  s = s:gsub("%+?%d[%d%s%.%-%(%)]*%d", function(run)
    local digits = run:gsub("%D", "")
    if #digits >= 7 and not run:find("^%d%d%d%d%-%d%d%-%d%d") then return "<phone>" end
  end)
  s = s:gsub("[%c]", " ")
  if #s > 300 then s = s:sub(1, 297) .. "..." end
  return s
end
M.redact = redact

local function plain(v)
  return (tostring(v):gsub("%c", " "):sub(1, 100))
end

function Error.__tostring(e)
  local parts = { "crm", e.kind }
  if e.status then parts[#parts + 1] = tostring(e.status) end
  local head = concat(parts, " ") .. ": " .. redact(e.message or "error", e._secrets)
  local tail = {}
  -- These are ours or ids, never PII; only control characters are taken out.
  if e.field then tail[#tail + 1] = "field=" .. plain(e.field) end
  if e.code then tail[#tail + 1] = "code=" .. plain(e.code) end
  if e.request_id then tail[#tail + 1] = "request_id=" .. plain(e.request_id) end
  if e.guid then tail[#tail + 1] = "guid=" .. plain(e.guid) end
  if type(e.ids) == "table" and #e.ids > 0 then
    local ids = {}
    for i = 1, math.min(#e.ids, 10) do ids[i] = plain(e.ids[i]) end
    if #e.ids > 10 then ids[#ids + 1] = "+" .. (#e.ids - 10) .. " more" end
    tail[#tail + 1] = "ids=" .. concat(ids, ",")
  end
  if e.attempts and e.attempts > 1 then tail[#tail + 1] = "attempts=" .. e.attempts end
  if #tail > 0 then head = head .. " (" .. concat(tail, ", ") .. ")" end
  return head
end

-- new(kind, message, fields): fields may carry status, field, code, request_id, retryable,
-- retry_after, sent, attempts, guid, ids (the record ids the error is about), body.
-- `_secrets` lists strings to scrub from tostring.
function M.new(kind, message, fields)
  local e = {}
  if fields then
    for k, v in pairs(fields) do e[k] = v end
  end
  e.kind = kind
  e.message = message
  if e.retryable == nil then e.retryable = false end
  return setmetatable(e, Error)
end

function M.is(v)
  return type(v) == "table" and getmetatable(v) == Error
end

function M.validation(field, rule)
  return M.new("validation", field .. " " .. rule, { field = field })
end

return M
