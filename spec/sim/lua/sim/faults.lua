-- Fault injection. A fault is queued with POST /__sim/faults and applies to the
-- next `count` API requests whose method matches (when given), whose URI
-- path starts with `path` (a prefix; a trailing '*' is allowed, no other) and, when `match` is given, whose request URI
-- (with its query) or body contains `match` (plain text, case-insensitive).
-- Each request takes at most one fault: the oldest matching one that still
-- has uses left (FIFO). `match` binds a fault to one operation of a
-- concurrent run (an email, a note, an id only that operation sends).
--
-- What a fault does:
--   status/body/content_type  answer this instead (before the handler runs)
--   delay                     sleep first (then the rest, or the handler)
--   drop                      close the connection without an answer
--   after                     let the handler act, then spoil its answer with
--                             the rest of the fault (a lost/spoiled answer)
--   partial                   cut the body in half (Content-Length promises all)
--   drip                      send the body one byte every `drip` seconds
--   pad                       append `pad` spaces to the body (a too-large answer;
--                             with `after` the handler's own, still valid JSON)
--   raw                       bytes written on the raw downstream socket instead
--                             of an HTTP answer, then the connection is closed:
--                             garbage framing, a broken status line or chunking,
--                             an HTTP/0.9 reply. Placeholders: @BODY@ (the
--                             handler's body with `after`, else ""), @HALF@ (its
--                             first half), @LEN@ and @HEXLEN@ (its length)
--   echo                      the error body's message repeats the request body
--                             and its Authorization header (a server that echoes
--                             what it was sent: secrets and PII the client must
--                             never pass on)
--
-- Storage (shared dict "sim"): fault:n = number of faults ever queued since the
-- last reset; fault:<i> = the spec as JSON (immutable); fault:<i>:left = uses
-- left, decremented atomically, so several workers never over-apply a fault;
-- fault:<i>:hits = requests it was applied to. fault:inflight = API requests
-- being handled now (a delayed request the client gave up on still acts later;
-- a test waits for 0 before it reads the state).

local common = require("sim.common")

local M = {}

local FIELDS = {
  method = "string", path = "string", status = "number", count = "number",
  retry_after = "any", delay = "number", drop = "boolean", body = "any",
  content_type = "string", after = "boolean", partial = "boolean", drip = "number",
  match = "string", raw = "string", pad = "number", echo = "boolean",
}

-- Validates and normalises one fault spec. Returns spec or nil, message.
local function normalise(f)
  if not common.is_object(f) then return nil, "a fault must be a JSON object" end
  local spec = {}
  for k, v in pairs(f) do
    local want = FIELDS[k]
    if not want then return nil, "unknown fault field '" .. tostring(k) .. "'" end
    if v ~= common.null then
      if want ~= "any" and type(v) ~= want then
        return nil, "fault field '" .. k .. "' must be a " .. want
      end
      spec[k] = v
    end
  end
  if type(spec.path) ~= "string" or spec.path:sub(1, 1) ~= "/" then
    return nil, "fault needs a 'path' prefix starting with '/'"
  end
  -- A path is a prefix: a trailing '*' says so and is dropped; a '*' anywhere else would
  -- silently never match, so it is refused.
  if spec.path:sub(-1) == "*" then spec.path = spec.path:sub(1, -2) end
  if spec.path:find("*", 1, true) then
    return nil, "fault 'path' is a prefix: only a trailing '*' is allowed, '" .. spec.path
      .. "' has one inside (use 'match' for text anywhere in the URI)"
  end
  if spec.method then spec.method = spec.method:upper() end
  if spec.status and (spec.status ~= math.floor(spec.status) or spec.status < 200 or spec.status > 599) then
    return nil, "fault 'status' must be an HTTP status (200-599)"
  end
  spec.count = spec.count or 1
  if spec.count ~= math.floor(spec.count) or spec.count < 1 then
    return nil, "fault 'count' must be a positive integer"
  end
  if spec.delay and spec.delay < 0 then return nil, "fault 'delay' must be >= 0" end
  if spec.retry_after ~= nil and type(spec.retry_after) ~= "number" and type(spec.retry_after) ~= "string" then
    return nil, "fault 'retry_after' must be a number or a string"
  end
  if spec.body ~= nil and type(spec.body) ~= "string" then
    -- a JSON value given as body is sent re-encoded
    spec.body = common.encode(spec.body)
  end
  if spec.drip and not (spec.status and spec.body) then
    return nil, "fault 'drip' needs 'status' and 'body'"
  end
  if not spec.status and not spec.drop and not spec.delay and not spec.partial and not spec.raw
      and not spec.pad then
    return nil, "fault needs at least one of 'status', 'delay', 'drop', 'partial', 'raw', 'pad'"
  end
  if spec.match and (spec.match == "" or #spec.match > 512) then
    return nil, "fault 'match' must be 1 to 512 bytes"
  end
  if spec.match then spec.match = spec.match:lower() end
  if spec.pad and (spec.pad ~= math.floor(spec.pad) or spec.pad < 1 or spec.pad > 8 * 1024 * 1024) then
    return nil, "fault 'pad' must be an integer from 1 to 8388608"
  end
  if spec.pad and not spec.after and not spec.status then
    return nil, "fault 'pad' needs 'after', or 'status' (and 'body')"
  end
  if spec.raw and #spec.raw > 65536 then return nil, "fault 'raw' must be at most 65536 bytes" end
  if spec.partial and not spec.after and not spec.status then
    return nil, "fault 'partial' needs 'status' and 'body', or 'after'"
  end
  return spec
end

-- Queues one fault (or an array of faults). Returns the list of queued
-- faults (each with its id) or nil, message; nothing is queued on error.
function M.add(f)
  local list = f
  if type(f) ~= "table" or f[1] == nil then list = { f } end
  local specs = {}
  for i, item in ipairs(list) do
    local spec, err = normalise(item)
    if not spec then
      return nil, (#list > 1 and ("fault #" .. i .. ": ") or "") .. err
    end
    specs[i] = spec
  end
  local d = common.state()
  local out = common.array()
  for _, spec in ipairs(specs) do
    local id = common.incr(d, "fault:n")
    common.set(d, "fault:" .. id, common.encode(spec))
    common.set(d, "fault:" .. id .. ":left", spec.count)
    common.set(d, "fault:" .. id .. ":hits", 0)
    spec.id = id
    out[#out + 1] = spec
  end
  return out
end

-- Pending faults (uses left > 0), oldest first; all = true: spent ones too. Each has its
-- id, uses left and hits (requests it was applied to).
function M.list(all)
  local d = common.state()
  local out = common.array()
  for id = 1, d:get("fault:n") or 0 do
    local left = d:get("fault:" .. id .. ":left")
    if left and (left > 0 or all) then
      local spec = common.get_json(d, "fault:" .. id)
      if spec then
        spec.id, spec.left, spec.hits = id, math.max(left, 0), d:get("fault:" .. id .. ":hits") or 0
        out[#out + 1] = spec
      end
    end
  end
  return out
end

-- API requests being handled right now (see M.begin and M.finish).
function M.inflight()
  return math.max(0, common.state():get("fault:inflight") or 0)
end

function M.clear()
  local d = common.state()
  for id = 1, d:get("fault:n") or 0 do
    d:delete("fault:" .. id .. ":left")
    d:delete("fault:" .. id .. ":hits")
    d:delete("fault:" .. id)
  end
  d:delete("fault:n")
end

-- The request's URI (with query) and body, lower-cased, read once per request.
local function request_text()
  local text = ngx.ctx.fault_text
  if text then return text end
  local body = common.read_body() or ""
  text = (ngx.var.request_uri or "") .. "\n" .. body
  text = text:lower()
  ngx.ctx.fault_text = text
  return text
end

local function matches(spec, method, path)
  if spec.method and spec.method ~= method then return false end
  if path:sub(1, #spec.path) ~= spec.path then return false end
  if spec.match and not request_text():find(spec.match, 1, true) then return false end
  return true
end

-- Takes the oldest matching fault with uses left, or nil.
local function take(method, path)
  local d = common.state()
  local n = d:get("fault:n")
  if not n then return nil end
  for id = 1, n do
    local key = "fault:" .. id .. ":left"
    local left = d:get(key)
    if left and left > 0 then
      local spec = common.get_json(d, "fault:" .. id)
      if spec and matches(spec, method, path) then
        local now_left = d:incr(key, -1)
        if now_left and now_left >= 0 then
          d:incr("fault:" .. id .. ":hits", 1, 0)
          return spec
        end
      end
    end
  end
  return nil
end

-- Default error body for a faulted request, by API; `message` defaults to "simulated fault".
local function default_body(status, path, message)
  message = message or "simulated fault"
  if path:sub(1, 5) == "/api/" then
    -- TableCheck's error shape: {errors:[{code, message}]}
    return common.encode({ errors = common.array({ { code = "simulated_fault", message = message } }) })
  end
  return common.encode(common.toast_error_body(status, message))
end

-- What an echoing server says: the request's body and its credentials, repeated back.
local function echo_message()
  local auth = ngx.req.get_headers()["authorization"]
  if type(auth) == "table" then auth = auth[1] end
  return "could not process " .. ngx.req.get_method() .. " " .. (ngx.var.request_uri or "")
    .. " with body " .. (common.read_body() or "") .. " (authorization: " .. tostring(auth) .. ")"
end

-- Writes bytes that are not (or not quite) an HTTP answer on the raw downstream socket, then
-- closes the connection. Only possible before any header went out.
local function send_raw_bytes(template, body)
  body = body or ""
  local values = {
    BODY = body, HALF = body:sub(1, math.floor(#body / 2)),
    LEN = string.format("%d", #body), HEXLEN = string.format("%x", #body),
  }
  local bytes = template:gsub("@(%u+)@", function(k) return values[k] end)
  ngx.req.read_body()
  local sock, err = ngx.req.socket(true)
  if not sock then
    ngx.log(ngx.ERR, "fault 'raw': no raw request socket: ", tostring(err))
    return ngx.exit(444)
  end
  sock:settimeout(2000)
  sock:send(bytes)
  return ngx.exit(ngx.OK)
end

-- Sends status + body but cuts the body in half and closes the connection, so the client sees
-- a connection dropped mid-body (Content-Length promises more than arrives).
local function send_partial(status, body, content_type, headers)
  ngx.status = status
  ngx.header["Content-Type"] = content_type or "application/json"
  for k, v in pairs(headers or {}) do ngx.header[k] = v end
  ngx.header["Content-Length"] = #body
  ngx.print(body:sub(1, math.floor(#body / 2)))
  ngx.flush(true)
  return ngx.exit(ngx.ERROR)
end

-- Sends the body one byte every `seconds`: a slow-drip server that only a total timeout stops.
local function send_drip(status, body, content_type, seconds)
  ngx.status = status
  ngx.header["Content-Type"] = content_type or "application/json"
  ngx.header["Content-Length"] = #body
  ngx.send_headers()
  for i = 1, #body do
    ngx.print(body:sub(i, i))
    local ok = ngx.flush(true)
    if not ok then return ngx.exit(ngx.ERROR) end
    ngx.sleep(seconds)
  end
  return ngx.eof()
end

local function retry_after_headers(spec)
  local headers = {}
  if spec.retry_after ~= nil then
    local ra = spec.retry_after
    if type(ra) == "number" and ra == math.floor(ra) then ra = string.format("%d", ra) end
    headers["Retry-After"] = tostring(ra)
  end
  return headers
end

-- The answer a fault gives instead of the handler's (before) or in place of it (after).
local function respond(spec, path)
  if spec.drop then
    ngx.exit(444) -- close the connection without a response
    return true
  end
  if spec.raw then
    send_raw_bytes(spec.raw, "")
    return true
  end
  if not spec.status then return false end
  local headers = retry_after_headers(spec)
  local status = spec.status
  if status == 204 or status == 304 then
    common.send_empty(status, headers)
    return true
  end
  local body = spec.body
  if body == nil then body = default_body(status, path, spec.echo and echo_message() or nil) end
  if spec.pad then body = body .. (" "):rep(spec.pad) end
  if spec.partial then
    send_partial(status, body, spec.content_type, headers)
    return true
  end
  if spec.drip then
    send_drip(status, body, spec.content_type, spec.drip)
    return true
  end
  common.send_raw(status, body, spec.content_type or "application/json", headers)
  return true
end

-- Applies a fault to the current request, if one matches. Returns true when
-- the request has been fully answered (or dropped) and the handler must not
-- run; false when it should proceed (no fault, a delay-only fault, or an
-- `after` fault, which lets the handler do its work and then spoils the answer:
-- the server acted, the client never hears of it).
function M.apply(method, path)
  if not ngx.ctx.fault_counted then
    ngx.ctx.fault_counted = true
    common.incr(common.state(), "fault:inflight")
  end
  local spec = take(method, path)
  if not spec then return false end
  if spec.delay and spec.delay > 0 then ngx.sleep(spec.delay) end
  if spec.after then
    ngx.ctx.after_fault = { spec = spec, path = path }
    return false
  end
  if spec.drop or spec.status then ngx.req.discard_body() end
  return respond(spec, path)
end

-- Called by common.send_raw/send_empty: when an `after` fault is pending for this request,
-- answers with it instead (the handler's state changes stay). Returns true when it did.
function M.spoil(status, body, content_type, headers)
  local pending = ngx.ctx.after_fault
  if not pending then return false end
  ngx.ctx.after_fault = nil
  local spec = pending.spec
  body = body or ""
  if spec.raw then
    send_raw_bytes(spec.raw, body)
    return true
  end
  if spec.pad and not spec.status then
    -- the handler's own answer, made larger than a client may accept (spaces keep it JSON)
    body = body .. (" "):rep(spec.pad)
    if spec.partial then
      send_partial(status, body, content_type, headers)
      return true
    end
    common.send_raw(status, body, content_type, headers)
    return true
  end
  if spec.partial and not spec.status then
    send_partial(status, body, content_type, headers)
    return true
  end
  return respond(spec, pending.path)
end

-- The log phase of every API request (nginx.conf): it is no longer in flight.
function M.finish()
  if ngx.ctx.fault_counted then
    ngx.ctx.fault_counted = nil
    local d = common.state()
    if d:get("fault:inflight") then d:incr("fault:inflight", -1) end
  end
end

return M
