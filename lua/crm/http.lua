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

local co_running = coroutine.running
local in_batch = require("crm.batch").in_batch

function M.engine(opts)
  local t = opts.transport
  local e = setmetatable({
    transport = t,
    base_url = opts.base_url,
    parse_error = opts.parse_error,
    limiter = opts.limiter or false,
    debug = opts.debug or false,
    clock = opts.clock,
    -- The C handle under a curl transport (crm.batch's router): outside a batch, an operation
    -- goes to it straight (h:call), with nothing in between.
    handle = require("crm.batch").is_router(t) and t.handle or false,
  }, Engine)
  PRIVATE[e] = { secrets = {} }
  return e
end

function Engine:set_secret(slot, value)
  PRIVATE[self].secrets[slot] = value
end

-- The secrets in force, as a fresh array (for error contexts built outside the engine).
function Engine:secrets()
  local out, src = {}, PRIVATE[self].secrets
  for _, v in pairs(src) do out[#out + 1] = v end
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

local function collect_pii(v, under, out, depth)
  if depth > 8 then return end
  if type(v) == "string" then
    if under then out[#out + 1] = v end
  elseif type(v) == "table" then
    for k, x in pairs(v) do
      collect_pii(x, under or is_pii_key(k), out, depth + 1)
    end
  end
end

-- context(req) -> {secrets, pii}: what errors and debug lines about `req` are scrubbed of.
-- Other spellings a server may echo a value in: percent-encoded, and for phones the bare
-- digits, the E.164 form and (North America) the ten-digit national number.
local phones
local function add_variants(pii)
  phones = phones or require "crm.phone"
  local n = #pii
  for i = 1, n do
    local v = pii[i]
    local esc = escape(v)
    if esc ~= v then pii[#pii + 1] = esc end
    local digits = v:gsub("%D", "")
    if #digits >= 7 and #digits <= 15 and not v:find("@", 1, true) then
      pii[#pii + 1] = digits
      local e164 = phones.normalize(v, "1")
      if e164 then
        pii[#pii + 1] = e164
        pii[#pii + 1] = e164:sub(2)
        if e164:sub(1, 2) == "+1" then pii[#pii + 1] = e164:sub(3) end
      end
    end
  end
end

function Engine:context(req)
  local pii = {}
  if req then
    collect_pii(req.body, false, pii, 0)
    collect_pii(req.query, false, pii, 0)
    if req.pii then collect_pii(req.pii, true, pii, 0) end
    add_variants(pii)
  end
  return { secrets = self:secrets(), pii = pii }
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
-- rule, so the same message). `id_rule(value, field) -> err` comes with the request.
local function id_error(req, field)
  if field == "query" then
    return errors.new("validation", "query cannot be encoded: a value is not a string, number,"
      .. " boolean or list of them", { field = "query" })
  end
  if not (req.id_names and req.id_rule) then return errors.validation(field, "must be a valid id") end
  local v = field == req.id_names[2] and req.a2 or req.a1
  return req.id_rule(v, field) or errors.validation(field, "must be a valid id")
end

local function transport_error(self, req, e, ctx)
  -- libcurl says CURLE_UNSUPPORTED_PROTOCOL both for a bad URL scheme (nothing sent: final)
  -- and for an HTTP/0.9 or otherwise unreadable answer (sent: a bad answer, as the ngx
  -- transport's bad_response, which another attempt may not get).
  local final = FINAL_TRANSPORT[e.name] and not (e.sent and SPOILED_WHEN_SENT[e.name])
  return nil, errors.new(e.kind, e.message, {
    code = e.name, sent = e.sent,
    retryable = e.kind ~= "validation" and not final,
  }, ctx or self:context(req))
end

Engine.transport_error = transport_error

-- The request's body as JSON text (nil without one) | nil, validation error.
local function encode_body(req)
  if req.body == nil then return nil end
  local s, msg = M.encode(req.body)
  if not s then
    return nil, errors.new("validation", "request body cannot be encoded as JSON: " .. msg,
      { field = "body" })
  end
  return s
end

-- One attempt of an operation of the C core's table (core.ops). req = {op, a1, a2 (path ids),
-- id_names = {name1, name2}, id_rule, query (table), body (table), hs (the client's
-- core.header_set), headers (the same lines as arrays, for other transports), timeout,
-- idempotent, fresh}. Over the curl transport the C core builds, sends and decodes in one call;
-- over the others it builds (core.build) and decodes (core.decode) around the transport's
-- exchange. Returns {status, headers, data} | nil, err, as send does.
function Engine:call(req)
  local body, berr = encode_body(req)
  if berr then return nil, berr end
  local t = self.transport
  if self.handle and not self.debug and req.hs then
    if self.limiter then self.limiter:take() end
    local h = self.handle
    local _, main = co_running()
    if not (h and (main or not in_batch())) then h = t end
    local status, data, headers, done, derr = h:call(self.base_url, req.hs, req.op, req.a1,
      req.a2, req.query, body, req.timeout, req.idempotent == false or req.fresh == true)
    if done then return { status = status, headers = headers, data = data } end
    if status == false then return nil, id_error(req, data) end
    if not status then return transport_error(self, req, data) end
    return self:judge(req, status, headers, data, derr)
  end
  local method, url, fresh = build(req.op, self.base_url, req.a1, req.a2, req.query)
  if method == nil then return transport_error(self, req, url) end
  if not method then return nil, id_error(req, url) end
  -- The path for debug lines: query strings can carry PII, so they stay out.
  -- (a plain find: a pattern match costs more than the rest of the line, and LuaJIT does not
  -- compile it)
  local from = #self.base_url + 1
  req.method, req.path = method, url:sub(from, (find(url, "?", from, true) or 0) - 1)
  if fresh then req.fresh = true end
  if req.shape == nil then req.shape = select(4, core.op_info(req.op)) end
  return self:exchange(req, url, body)
end

-- One attempt. req = {method, path, query, body (table), headers (array), shape ("object",
-- "array" or nil), ok = {[status]=true}, pending_status = {[status]=true} (statuses that mean
-- "accepted, still processing": retried until the deadline, see crm.retry)}.
-- Returns {status, headers, data} | nil, err.
function Engine:send(req)
  local body, berr = encode_body(req)
  if berr then return nil, berr end
  return self:exchange(req, self.base_url .. req.path .. M.query(req.query), body)
end

-- The exchange over the transport's request(), and the answer judged.
function Engine:exchange(req, url, body)
  if self.limiter then self.limiter:take() end
  local debug, started, ctx = self.debug, nil, nil
  if debug then
    started = self.clock.now()
    ctx = self:context(req)
    -- Method and path only: query strings and bodies can carry PII.
    emit(debug, errors.redact(("-> %s %s (%d body bytes)"):format(req.method, req.path,
      body and #body or 0), ctx))
  end
  -- A request that must not run twice gets a connection of its own (see src/core.c, `fresh`).
  local status, headers, raw = self.transport:request(req.method, url, req.headers, body, req.timeout,
    req.idempotent == false or req.fresh == true)
  if debug then
    local ms = (self.clock.now() - started) * 1000
    if status then
      emit(debug, errors.redact(("<- %d %s %s in %.1f ms (%d bytes)"):format(status, req.method,
        req.path, ms, #raw), ctx))
    else
      emit(debug, errors.redact(("<- %s %s %s in %.1f ms"):format(tostring(headers.name or "error"),
        req.method, req.path, ms), ctx))
    end
  end
  if not status then return transport_error(self, req, headers, ctx) end

  local data, derr
  if raw ~= "" and status ~= 204 then
    data, derr = M.decode(raw)
    if data ~= nil or status < 200 or status >= 300 then derr = nil end
  end
  return self:judge(req, status, headers, data, derr, ctx)
end

-- judge(req, status, headers, data, decode_error [, ctx]) -> {status, headers, data} | nil, err
function Engine:judge(req, status, headers, data, derr, ctx)
  if derr then
    local ct = headers["content-type"] or "" -- read only here: headers parse on first lookup
    -- A spoiled 2xx (an HTML page from a proxy, a cut body) may not come again: requests that
    -- may run twice are retried; others end with outcome_unknown (crm.retry).
    return nil, errors.new("decode", derr .. " (status " .. status .. ", content-type "
      .. ct:gsub("%c", "") .. ")", { status = status, retryable = true, sent = true },
      ctx or self:context(req))
  end

  if (req.ok and req.ok[status]) or (not req.ok and status >= 200 and status < 300) then
    if req.shape and data ~= nil then
      local want_array = req.shape == "array"
      if type(data) ~= "table" or is_array(data) ~= want_array then
        return nil, errors.new("decode", "response body is not a JSON " .. req.shape,
          { status = status, sent = true })
      end
    end
    return { status = status, headers = headers, data = data }
  end

  local message, request_id, code, field
  if type(data) == "table" and self.parse_error then
    message, request_id, code, field = self.parse_error(data)
  end
  local kind = "http"
  if status == 401 or status == 403 then kind = "auth" end
  local pending = req.pending_status and req.pending_status[status] or nil
  local retryable = RETRYABLE_STATUS[status] or pending or false
  local retry_after
  if headers["retry-after"] then
    retry_after = retry.parse_retry_after(headers["retry-after"])
  end
  return nil, errors.new(kind, message or ("HTTP " .. status), {
    status = status, request_id = request_id, code = code, field = field,
    retryable = retryable, pending = pending, retry_after = retry_after, sent = true, body = data,
  }, ctx or self:context(req))
end

return M
