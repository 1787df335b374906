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
  transport = true, rate = true, debug = true, proxy = true,
}
M.COMMON_OPTIONS = COMMON

local batch = require "crm.batch"

-- url_error(url, field, {schemes, userinfo}) -> nil | validation error. An absolute URL whose
-- authority is exactly host[:port]: no userinfo (user:pw@ or other @ tricks), no backslashes
-- (which some parsers read as /), no query or fragment, a port of 1-65535 when one is written.
local function url_error(url, field, allow)
  local e = validate.string(url, field, { required = true, max = 2048 })
  if e then return e end
  local function bad(rule) return validate.fail(field, rule) end
  if url:find("[%s%c\128-\255]") then return bad("must not contain spaces, control characters or non-ASCII bytes") end
  if url:find("\\", 1, true) then return bad("must not contain a backslash") end
  local scheme, rest = url:match("^(%a[%w+.%-]*)://(.*)$")
  if not scheme or not allow.schemes[scheme:lower()] then
    return bad("must be a " .. allow.names .. " URL")
  end
  local authority, path = rest:match("^([^/?#]*)(.*)$")
  if path:find("[?#]") then return bad("must not have a query or a fragment") end
  local userinfo, hostport = authority:match("^(.*)@(.*)$")
  if userinfo and not allow.userinfo then
    return bad("must not contain credentials or '@' (user:password@host)")
  end
  hostport = hostport or authority
  if hostport:find("@", 1, true) then return bad("must not contain '@' in its host") end
  local host, port
  if hostport:sub(1, 1) == "[" then
    host, port = hostport:match("^(%[[%x:.]+%])(.*)$")
  else
    host, port = hostport:match("^([%w%-%.%_~!$&'()*+,;=]+)(.*)$")
  end
  if not host then return bad("must have a host") end
  if port ~= "" then
    local n = tonumber(port:match("^:(%d%d?%d?%d?%d?)$"))
    if not n or n < 1 or n > 65535 then return bad("must have a port between 1 and 65535") end
  end
  return nil
end

local BASE_URL = { schemes = { http = true, https = true }, names = "http:// or https://" }
local PROXY_URL = { schemes = { http = true, https = true, socks4 = true, socks4a = true,
                                socks5 = true, socks5h = true },
                    names = "http://, https://, socks4://, socks4a://, socks5:// or socks5h://",
                    userinfo = true }

-- Checks the options every client takes. Returns nil or a validation error.
local function check_common(opts)
  local e = url_error(opts.base_url, "base_url", BASE_URL)
  if e then return e end
  if opts.proxy ~= nil then
    e = url_error(opts.proxy, "proxy", PROXY_URL)
    if e then return e end
    if opts.transport == "ngx" or (opts.transport == nil and transports.in_nginx) then
      return validate.fail("proxy", "is not supported by the ngx transport (nginx cosockets);"
        .. " use transport = \"curl\"")
    end
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
  for k in next, opts do
    if not COMMON[k] and not known[k] then
      return nil, validate.fail(validate.key_name(k), "is not a known option")
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
      proxy = opts.proxy,
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
  -- A proxy URL may carry credentials: scrubbed from errors, the password on its own too.
  local userinfo = opts.proxy and opts.proxy:match("^[^:]+://([^@/]*)@")
  if userinfo then
    self.engine:set_secret("proxy_userinfo", userinfo)
    self.engine:set_secret("proxy_password", userinfo:match(":(.*)$"))
  end
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
