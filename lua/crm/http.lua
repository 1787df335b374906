-- JSON over HTTP for both APIs: builds URLs and headers, runs one request on the transport,
-- decodes the body and maps every outcome to a result or a crm error.
local json = require "crm.json"
local platform = require "crm.platform"
local errors = require "crm.error"
local retry = require "crm.retry"

local M = {}

local escape = platform.escape
local type, pairs, next, pcall, tostring = type, pairs, next, pcall, tostring
local concat, sort, find = table.concat, table.sort, string.find

-- JSON is crm.json's (see lua/crm/json.lua): every answer comes back with array_mt on its
-- arrays and without nulls in its objects; request bodies go out with [] for the empty-array
-- marker and for empty tables carrying array_mt, and integers JSON would change are refused.
M.null = json.null
M.empty_array = json.empty_array
M.array_mt = json.array_mt
require("crm.validate").keep_marker(M.empty_array)
require("crm.validate").keep_metatable(M.array_mt)

-- encode(v) -> text | nil, message
M.encode = json.encode_text

-- decode(text) -> value | nil, message. NaN, Infinity, hex numbers and numbers beyond a double
-- (1e400) are errors; JSON null becomes nil in objects and stays crm.null in arrays.
function M.decode(s)
  return json.decode_text(s, false)
end

-- Query string in a stable order; values are percent-encoded, booleans become true/false.
function M.query(params)
  if params == nil or next(params) == nil then return "" end
  local keys = {}
  for k in pairs(params) do keys[#keys + 1] = k end
  sort(keys)
  local out = {}
  for i = 1, #keys do
    local k, v = keys[i], params[keys[i]]
    if type(v) == "table" then
      local items = {}
      for j = 1, #v do items[j] = tostring(v[j]) end
      v = concat(items, ",")
    end
    if type(v) == "number" and v % 1 == 0 and v > -2 ^ 53 and v < 2 ^ 53 then
      v = string.format("%d", v)
    end
    out[#out + 1] = escape(k) .. "=" .. escape(tostring(v))
  end
  return "?" .. concat(out, "&")
end

M.escape = escape

-- Decoded arrays carry array_mt, empty ones too (crm.json): [] is not an object, {} not an array.
local function is_array(t)
  return getmetatable(t) == M.array_mt
end

--[[ Engine: what a client shares across calls.
  transport  object with :request(method, url, headers, body, timeout)
  base_url   without trailing slash
  parse_error(body_table) -> message, request_id, code, field   (API-specific)
  The client's secrets (keys, tokens, client secrets) are set with engine:set_secret(slot, v)
  and live outside the engine table, so neither the engine nor the client ever shows them
  (cjson.encode(client) and pairs() see no secret).
]]
local Engine = {}
Engine.__index = Engine

local PRIVATE = setmetatable({}, { __mode = "k" })
local batches = require "crm.batch"

function M.engine(opts)
  local t = opts.transport
  local e = setmetatable({
    transport = t,
    base_url = opts.base_url,
    parse_error = opts.parse_error,
    limiter = opts.limiter or false,
    debug = opts.debug or false,
    clock = opts.clock,
    -- The C handle under crm's curl transport (crm.batch's router): an operation goes to the
    -- router's call (h:call, or the batch's multi), built, sent and decoded in C.
    handle = batches.is_router(t) and t.handle or false,
  }, Engine)
  PRIVATE[e] = { secrets = {}, retired = {} }
  return e
end

-- A value a slot held before (a token a new login replaced) is still scrubbed: an answer to a
-- request sent with it (a concurrent one, or one the server is slow to refuse) may echo it
-- after the new one is in force. The last RETIRED of them are kept.
local RETIRED = 8
function Engine:set_secret(slot, value)
  local p = PRIVATE[self]
  local old = p.secrets[slot]
  if old ~= nil and old ~= value then
    local r = p.retired
    r[#r + 1] = old
    if #r > RETIRED then table.remove(r, 1) end
  end
  p.secrets[slot] = value
end

-- The secrets in force and the retired ones, as a fresh array (for error contexts built
-- outside the engine).
function Engine:secrets()
  local out, p = {}, PRIVATE[self]
  for _, v in pairs(p.secrets) do out[#out + 1] = v end
  for i = 1, #p.retired do out[#out + 1] = p.retired[i] end
  return out
end

-- PII a request carries: the strings under keys that name a person or a contact (first_name,
-- lastName, emails, phones, phone_objects[].number, ...), in the body and the query.
local function is_pii_key(k)
  if type(k) ~= "string" then return false end
  k = k:lower()
  -- The contract's [PII] fields too: addresses, birthdays and event dates, memos and notes.
  return find(k, "name", 1, true) ~= nil or find(k, "mail", 1, true) ~= nil
    or find(k, "phone", 1, true) ~= nil or k == "number" or k == "kana"
    or find(k, "street", 1, true) ~= nil or k == "city" or k == "region"
    or find(k, "postal", 1, true) ~= nil or find(k, "address", 1, true) ~= nil
    or find(k, "birth", 1, true) ~= nil or find(k, "anniversar", 1, true) ~= nil or k == "date"
    or find(k, "memo", 1, true) ~= nil or k == "note" or k == "notes"
end

local function collect_pii(v, under, out, depth, key_rule)
  if depth > 8 then return end
  if type(v) == "string" then
    if under then out[#out + 1] = v end
  elseif type(v) == "table" then
    key_rule = key_rule or is_pii_key
    for k, x in pairs(v) do
      collect_pii(x, under or key_rule(k), out, depth + 1, key_rule)
    end
  end
end

-- context_of(body, query, pii) -> {secrets, pii}: what errors and debug lines about a request
-- with that body and query (tables; pii: values to scrub whatever their keys) are scrubbed of.
-- Other spellings a server may echo a value in: percent-encoded, and for phones the bare
-- digits, the E.164 form and (North America) the ten-digit national number.
local phones
local function add_variants(pii, from)
  phones = phones or require "crm.phone"
  local n = #pii
  for i = from or 1, n do
    local v = pii[i]
    local esc = escape(v)
    if esc ~= v then pii[#pii + 1] = esc end
    -- An email's local part on its own: a server that breaks the address (a line break at the
    -- @) leaves it readable, and it often is the guest's name.
    local user = v:match("^([^@%s]+)@[^@]+$")
    if user and #user >= 3 then pii[#pii + 1] = user end
    local digits = v:gsub("%D", "")
    if #digits >= 7 and #digits <= 15 and not v:find("@", 1, true) then
      pii[#pii + 1] = digits
      local e164 = phones.normalize(v, "1")
      if e164 then
        pii[#pii + 1] = e164
        pii[#pii + 1] = e164:sub(2)
        if e164:sub(1, 2) == "+1" then
          pii[#pii + 1] = e164:sub(3)
        else
          -- The national forms elsewhere: the number after the country code (1 to 3 digits;
          -- each split is tried), with and without the trunk 0 (+819012345678: 09012345678).
          for k = 1, 3 do
            local rest = e164:sub(2 + k)
            if #rest >= 6 then pii[#pii + 1] = "0" .. rest end
            if #rest >= 7 then pii[#pii + 1] = rest end
          end
        end
      end
    end
  end
end

function Engine:context_of(body, query, pii_values)
  local pii = {}
  collect_pii(body, false, pii, 0)
  collect_pii(query, false, pii, 0)
  if pii_values then collect_pii(pii_values, true, pii, 0) end
  add_variants(pii)
  return { secrets = self:secrets(), pii = pii }
end

-- An error answer may carry another guest's record (a 409 naming who holds the phone): its
-- person fields are <pii> in err.body (ctx.pii_key) and their values are scrubbed from the
-- message wherever it repeats them; its credential fields likewise (ctx.secret_key). The keys
-- that name the field a complaint is about (fieldName, field) hold field names, not people.
local function is_answer_pii_key(k)
  return is_pii_key(k) and not find(k:lower(), "field", 1, true)
end
-- A credential's name (accessToken, refresh_token, clientSecret, password, api_key,
-- Authorization): what an answer holds under one is a secret, known to this client or not
-- (a token a failed login was answered with, a key of another tenant).
local SECRET_WORDS = { "token", "secret", "password", "passwd", "apikey", "accesskey", "privatekey",
                       "authorization", "credential", "cookie" }
local function is_secret_key(k)
  if type(k) ~= "string" then return false end
  k = k:lower():gsub("[^%w]", "")
  for i = 1, #SECRET_WORDS do
    if find(k, SECRET_WORDS[i], 1, true) then return true end
  end
  return false
end
local function answer_context(ctx, data)
  if type(data) ~= "table" then return ctx end
  local pii, secrets = {}, {}
  for i = 1, #ctx.pii do pii[i] = ctx.pii[i] end
  for i = 1, #ctx.secrets do secrets[i] = ctx.secrets[i] end
  local n = #pii
  collect_pii(data, false, pii, 0, is_answer_pii_key)
  if #pii > n then add_variants(pii, n + 1) end
  -- and its credentials, so the message is scrubbed of them too
  collect_pii(data, false, secrets, 0, is_secret_key)
  return { secrets = secrets, pii = pii, pii_key = is_answer_pii_key, secret_key = is_secret_key }
end

-- A debug hook that raises must not break the call it reports on: its errors are dropped.
local function emit(debug, line)
  pcall(debug, line)
end

local RETRYABLE_STATUS = { [408] = true, [429] = true, [500] = true, [502] = true,
                           [503] = true, [504] = true }
M.RETRYABLE_STATUS = RETRYABLE_STATUS

-- Transport failures that another attempt cannot fix: TLS trust, bad URLs, our own limits.
local FINAL_TRANSPORT = {
  closed = true, response_too_large = true,
  CURLE_URL_MALFORMAT = true, CURLE_UNSUPPORTED_PROTOCOL = true,
  CURLE_PEER_FAILED_VERIFICATION = true, CURLE_SSL_CONNECT_ERROR = true,
  CURLE_SSL_CERTPROBLEM = true, CURLE_SSL_CACERT_BADFILE = true,
  -- the ngx transport's (crm.transport.ngx) and the transport chooser's
  unsupported_protocol = true, tls_verify_failed = true, tls_failed = true, no_resolver = true,
  no_cosockets = true, no_transport = true,
}

local SPOILED_WHEN_SENT = { CURLE_UNSUPPORTED_PROTOCOL = true }

local core = platform.core
local build = core and core.build
local OPS = core and core.ops or {}
M.OPS = OPS

-- An op's id argument refused by the C core: the Lua rule for that id says why (the same
-- rule, so the same message). `spec.id_rule(value, field) -> err` comes with the operation.
local function id_error(spec, a1, a2, field)
  if field == "query" then
    return errors.new("validation", "query cannot be encoded: a value is not a string, number,"
      .. " boolean or list of them", { field = "query" })
  end
  if not (spec.id_names and spec.id_rule) then return errors.validation(field, "must be a valid id") end
  local v = field == spec.id_names[2] and a2 or a1
  return spec.id_rule(v, field) or errors.validation(field, "must be a valid id")
end

-- transport_error(e, ctx) -> nil, err: a transport's failure {kind, name, message, sent} as a
-- crm error.
local function transport_error(e, ctx)
  -- libcurl says CURLE_UNSUPPORTED_PROTOCOL both for a bad URL scheme (nothing sent: final)
  -- and for an HTTP/0.9 or otherwise unreadable answer (sent: a bad answer, as the ngx
  -- transport's bad_response, which another attempt may not get).
  local final = FINAL_TRANSPORT[e.name] and not (e.sent and SPOILED_WHEN_SENT[e.name])
  return nil, errors.new(e.kind, e.message, {
    code = e.name, sent = e.sent,
    retryable = e.kind ~= "validation" and not final,
  }, ctx)
end

-- A request body as JSON text | nil, validation error.
local function encode_body(body)
  local s, msg = M.encode(body)
  if not s then
    return nil, errors.new("validation", "request body cannot be encoded as JSON: " .. msg,
      { field = "body" })
  end
  return s
end

local exchange -- below

--[[ One attempt of an operation of the C core's table (core.ops), the one exchange of every
  call of both clients (crm.client.call runs it):
    spec        the operation's constant description: {op, shape, id_names, id_rule, ok,
                pending_status, fresh, pii}, made once per operation by the client modules
    a1, a2      the path ids; query (table), body (table): nil when none
    hs          the client's header lists (core.header_set); headers, the same lines as an
                array, for the other transports
    idempotent  false: the request gets a connection of its own and is never re-sent by libcurl
  Over crm's curl transport the C core builds, sends, decodes and judges in one call (h:call; in
  a batch the router hands it to the multi); over the others it builds (core.build) and decodes
  (core.decode) around the transport's exchange. Nothing is allocated on success.
  -> status, data (the decoded answer; nil for 204) | nil, err ]]
function Engine:call(spec, a1, a2, query, body, hs, headers, idempotent)
  local text
  if body ~= nil then
    local berr
    text, berr = encode_body(body)
    if not text then return nil, berr end
  end
  local fresh = idempotent == false or spec.fresh == true
  local h = self.handle
  if h and hs and not self.debug then
    if self.limiter then self.limiter:take() end
    -- While a curl batch runs, the router says whether this call is one of its operations (a
    -- slot of the multi) or not (this handle).
    if batches.running > 0 then h = self.transport end
    local status, data, rheaders, done, derr = h:call(self.base_url, hs, spec.op, a1, a2, query,
      text, nil, fresh)
    if done then return status, data end
    if status == false then return nil, id_error(spec, a1, a2, data) end
    if not status then return transport_error(data, self:context_of(body, query, spec.pii)) end
    return self:judge(spec, status, rheaders, data, derr, nil, body, query)
  end
  local method, url, op_fresh = build(spec.op, self.base_url, a1, a2, query)
  -- nil, err: the operation or the base URL is bad (core.build refuses, nothing is sent)
  if method == nil then return transport_error(url, self:context_of(body, query, spec.pii)) end
  if not method then return nil, id_error(spec, a1, a2, url) end
  return exchange(self, spec, method, url, headers, text, fresh or op_fresh == true, body, query)
end

-- One attempt of a request of Lua's own (req = {method, path, query, body (table), headers
-- (array), shape ("object", "array" or nil), ok = {[status]=true}, pending_status =
-- {[status]=true} (statuses that mean "accepted, still processing": retried until the
-- deadline, see crm.retry), fresh}): the login, orders. `headers` (optional) replaces
-- req.headers. -> status, data | nil, err
function Engine:send(req, idempotent, headers)
  local text
  if req.body ~= nil then
    local berr
    text, berr = encode_body(req.body)
    if not text then return nil, berr end
  end
  return exchange(self, req, req.method, self.base_url .. req.path .. M.query(req.query),
    headers or req.headers, text, idempotent == false or req.fresh == true, req.body, req.query)
end

-- The exchange over the transport's request(), and the answer judged. spec: the operation or
-- request (shape, ok, pending_status, pii); body and query (tables): what errors are scrubbed of.
exchange = function(self, spec, method, url, headers, text, fresh, body, query)
  if self.limiter then self.limiter:take() end
  local debug, started, ctx, path = self.debug, nil, nil, nil
  if debug then
    started = self.clock.now()
    ctx = self:context_of(body, query, spec.pii)
    -- Method and path only: query strings and bodies can carry PII.
    path = url:sub(#self.base_url + 1):match("^[^?]*")
    emit(debug, errors.redact(("-> %s %s (%d body bytes)"):format(method, path,
      text and #text or 0), ctx))
  end
  -- A request that must not run twice gets a connection of its own (see src/core.c, `fresh`).
  local status, rheaders, raw = self.transport:request(method, url, headers, text, nil, fresh)
  if debug then
    local ms = (self.clock.now() - started) * 1000
    if status then
      emit(debug, errors.redact(("<- %d %s %s in %.1f ms (%d bytes)"):format(status, method,
        path, ms, #raw), ctx))
    else
      emit(debug, errors.redact(("<- %s %s %s in %.1f ms"):format(tostring(rheaders.name or "error"),
        method, path, ms), ctx))
    end
  end
  if not status then return transport_error(rheaders, ctx or self:context_of(body, query, spec.pii)) end

  local data, derr
  if raw ~= "" and status ~= 204 then
    data, derr = M.decode(raw)
    if data ~= nil or status < 200 or status >= 300 then derr = nil end
  end
  return self:judge(spec, status, rheaders, data, derr, ctx, body, query)
end

-- judge(spec, status, headers, data, decode_error, ctx, body, query) -> status, data | nil, err.
-- spec: the operation or request (ok, shape, pending_status, pii); errors are scrubbed with ctx,
-- or with the context of body and query when ctx is nil (made only when an error is).
function Engine:judge(spec, status, headers, data, derr, ctx, body, query)
  if derr then
    local ct = headers["content-type"] or "" -- read only here: headers parse on first lookup
    -- A spoiled 2xx (an HTML page from a proxy, a cut body) may not come again: requests that
    -- may run twice are retried; others end with outcome_unknown (crm.retry).
    return nil, errors.new("decode", derr .. " (status " .. status .. ", content-type "
      .. ct:gsub("%c", "") .. ")", { status = status, retryable = true, sent = true },
      ctx or self:context_of(body, query, spec.pii))
  end

  local ok = spec.ok
  if (ok and ok[status]) or (not ok and status >= 200 and status < 300) then
    local shape = spec.shape
    if shape and data ~= nil then
      if type(data) ~= "table" or is_array(data) ~= (shape == "array") then
        return nil, errors.new("decode", "response body is not a JSON " .. shape,
          { status = status, sent = true })
      end
    end
    return status, data
  end

  local message, request_id, code, field
  if type(data) == "table" and self.parse_error then
    message, request_id, code, field = self.parse_error(data)
  end
  local kind = "http"
  if status == 401 or status == 403 then kind = "auth" end
  local pending = spec.pending_status and spec.pending_status[status] or nil
  local retryable = RETRYABLE_STATUS[status] or pending or false
  local retry_after
  if headers["retry-after"] then
    retry_after = retry.parse_retry_after(headers["retry-after"])
  end
  return nil, errors.new(kind, message or ("HTTP " .. status), {
    status = status, request_id = request_id, code = code, field = field,
    retryable = retryable, pending = pending, retry_after = retry_after, sent = true, body = data,
  }, answer_context(ctx or self:context_of(body, query, spec.pii), data))
end

return M
