-- What every API client shares: option checks, the transport, the clock, the retry policy and
-- the close/__gc/__close life cycle.
local http = require "crm.http"
local retry = require "crm.retry"
local validate = require "crm.validate"
local errors = require "crm.error"
local ratelimit = require "crm.ratelimit"
local transports = require "crm.transport"

local M = {}

local COMMON = {
  base_url = true, timeout = true, connect_timeout = true, cafile = true, capath = true,
  insecure_skip_verify = true, user_agent = true, max_response_bytes = true, retry = true,
  transport = true, rate = true, debug = true,
}
M.COMMON_OPTIONS = COMMON

local batch = require "crm.batch"

-- Checks the options every client takes. Returns nil or a validation error.
local function check_common(opts)
  local e = validate.string(opts.base_url, "base_url", { required = true, max = 2048 })
  if e then return e end
  if not opts.base_url:find("^https?://[^/%s]+") or opts.base_url:find("[%s%c]") then
    return validate.fail("base_url", "must be an http:// or https:// URL")
  end
  e = validate.number(opts.timeout, "timeout", { gt = 0, max = 3600 })
    or validate.number(opts.connect_timeout, "connect_timeout", { gt = 0, max = 600 })
    or validate.number(opts.max_response_bytes, "max_response_bytes", { min = 1, integer = true })
    or validate.string(opts.cafile, "cafile", { nonempty = true, max = 4096 })
    or validate.string(opts.capath, "capath", { nonempty = true, max = 4096 })
    or validate.boolean(opts.insecure_skip_verify, "insecure_skip_verify")
  if e then return e end
  if opts.user_agent ~= nil then
    e = validate.header_value(opts.user_agent, "user_agent")
    if e then return e end
  end
  if opts.verify ~= nil or opts.ssl_verify ~= nil then
    return validate.fail("verify", "is not an option; TLS verification is always on unless"
      .. " insecure_skip_verify = true")
  end
  return nil
end

-- Builds the shared parts into `self`: engine, policy, clock. Returns self | nil, err.
function M.init(self, opts, known, parse_error)
  if type(opts) ~= "table" then return nil, validate.fail("options", "must be a table") end
  for k in pairs(opts) do
    if not COMMON[k] and not known[k] then
      return nil, validate.fail(tostring(k), "is not a known option")
    end
  end
  local e = check_common(opts) or transports.check(opts.transport)
  if e then return nil, e end
  -- The clock comes with the transport: the C core's monotonic clock for curl, nginx's for ngx.
  local clock = transports.clock_for(opts.transport)
  local policy, field, rule = retry.new(opts.retry, clock)
  if not policy then return nil, validate.fail(field, rule) end
  local limiter
  if opts.rate ~= nil then
    limiter, field, rule = ratelimit.new(opts.rate, clock)
    if not limiter then return nil, validate.fail(field, rule) end
  end
  if opts.debug ~= nil and type(opts.debug) ~= "function" then
    return nil, validate.fail("debug", "must be a function(line)")
  end

  local function transport_options(size)
    return {
      size = size,
      timeout = opts.timeout, connect_timeout = opts.connect_timeout,
      cafile = opts.cafile, capath = opts.capath,
      insecure_skip_verify = opts.insecure_skip_verify,
      user_agent = opts.user_agent, max_response_bytes = opts.max_response_bytes,
    }
  end
  self._transport_options = transport_options
  -- "curl", "ngx", nil (the right one for where this runs) or a transport object: crm.transport.
  local transport, terr = transports.new(opts.transport, transport_options())
  if not transport then return nil, terr end
  self.clock = clock
  self.policy = policy
  self.transport = transport
  self.engine = http.engine {
    transport = transport,
    base_url = (opts.base_url:gsub("/+$", "")),
    parse_error = parse_error,
    limiter = limiter,
    debug = opts.debug,
    clock = clock,
  }
  return self
end

-- private(client) -> a table only crm's code reaches: credentials, tokens and the header lines
-- that carry them live here, never on the client table (cjson.encode(client) and pairs(client)
-- show no secret). Weak-keyed: it goes away with the client.
local PRIVATE = setmetatable({}, { __mode = "k" })
function M.private(self)
  local p = PRIVATE[self]
  if not p then
    p = {}
    PRIVATE[self] = p
  end
  return p
end

function M.closed_error()
  return errors.new("transport", "the client is closed", { code = "closed" })
end

-- close(): frees the connection; safe to call twice. Later calls return a "closed" error.
function M.close(self)
  if not self._closed then
    self._closed = true
    if self.transport then self.transport:close() end
  end
  return true
end

-- Metatable entries for a client class: method lookup, close on __gc and __close.
-- client:batch(ops, {concurrency = 16, stop_on_error = false}): see crm.batch.
local function run_batch(self, ops, opts)
  return batch.run(self, ops, opts)
end

function M.class(methods)
  methods.close = M.close
  methods.batch = run_batch
  local mt = { __index = methods }
  mt.__gc = function(self) M.close(self) end
  mt.__close = mt.__gc
  return mt
end

return M
