-- Fault injection. A fault is queued with POST /__sim/faults and applies to the
-- next `count` API requests whose method matches (when given) and whose URI
-- path starts with `path`. Each request takes at most one fault: the oldest
-- matching one that still has uses left (FIFO).
--
-- Storage (shared dict "sim"): fault:n = number of faults ever queued since the
-- last reset; fault:<i> = the spec as JSON (immutable); fault:<i>:left = uses
-- left, decremented atomically, so several workers never over-apply a fault.

local common = require("sim.common")

local M = {}

local FIELDS = {
  method = "string", path = "string", status = "number", count = "number",
  retry_after = "any", delay = "number", drop = "boolean", body = "any",
  content_type = "string", after = "boolean", partial = "boolean", drip = "number",
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
  if not spec.status and not spec.drop and not spec.delay and not spec.partial then
    return nil, "fault needs at least one of 'status', 'delay', 'drop', 'partial'"
  end
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
    spec.id = id
    out[#out + 1] = spec
  end
  return out
end

-- Pending faults (uses left > 0), oldest first.
function M.list()
  local d = common.state()
  local out = common.array()
  for id = 1, d:get("fault:n") or 0 do
    local left = d:get("fault:" .. id .. ":left")
    if left and left > 0 then
      local spec = common.get_json(d, "fault:" .. id)
      if spec then
        spec.id, spec.left = id, left
        out[#out + 1] = spec
      end
    end
  end
  return out
end

function M.clear()
  local d = common.state()
  for id = 1, d:get("fault:n") or 0 do
    d:delete("fault:" .. id .. ":left")
    d:delete("fault:" .. id)
  end
  d:delete("fault:n")
end

local function matches(spec, method, path)
  if spec.method and spec.method ~= method then return false end
  return path:sub(1, #spec.path) == spec.path
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
        if now_left and now_left >= 0 then return spec end
      end
    end
  end
  return nil
end

-- Default error body for a faulted request, by API.
local function default_body(status, path)
  if path:sub(1, 5) == "/api/" then
    -- TableCheck's error shape: {errors:[{code, message}]}
    return common.encode({ errors = common.array({ { code = "simulated_fault", message = "simulated fault" } }) })
  end
  return common.encode(common.toast_error_body(status, "simulated fault"))
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
  if not spec.status then return false end
  local headers = retry_after_headers(spec)
  local status = spec.status
  if status == 204 or status == 304 then
    common.send_empty(status, headers)
    return true
  end
  local body = spec.body
  if body == nil then body = default_body(status, path) end
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
  if spec.partial and not spec.status then
    send_partial(status, body or "", content_type, headers)
    return true
  end
  return respond(spec, pending.path)
end

return M
