--- What every API client shares: the common options, `close` and `batch`.
-- Both `crm.toast{}` and `crm.tablecheck{}` take the `Options` below besides their own, and
-- both client objects have `client:close()` and `client:batch(ops, opts)`.
--
-- Internally this module holds the option checks, the transport, the clock, the retry policy
-- and the close/__gc/__close life cycle.
-- @module crm.client
local http = require "crm.http"
local retry = require "crm.retry"
local is_policy = retry.is_policy
local validate = require "crm.validate"
local errors = require "crm.error"
local ratelimit = require "crm.ratelimit"
local transports = require "crm.transport"
local stores = require "crm.store"

local M = {}

local COMMON = {
  base_url = true, timeout = true, connect_timeout = true, cafile = true, capath = true,
  insecure_skip_verify = true, user_agent = true, max_response_bytes = true, retry = true,
  transport = true, rate = true, debug = true, proxy = true, shared_dict = true, store = true,
}
M.COMMON_OPTIONS = COMMON

--- The options every client takes (both constructors check them; unknown options are refused).
-- Construction validates and sends nothing.
-- @table Options
-- @tfield string base_url the API root: `http://` or `https://`, a host, an optional port of
-- 1-65535 and a path; no userinfo, `@`, backslash, query or fragment. Defaults:
-- `https://ws-api.toasttab.com` (Toast), `https://api.tablecheck.com/api/crm/v1` (TableCheck)
-- @tfield[opt=30] number timeout total seconds per HTTP request (at most 3600)
-- @tfield[opt=10] number connect_timeout seconds to connect (at most 600)
-- @tfield[opt] string cafile CA bundle file for TLS verification (default: the system store;
-- curl transport only)
-- @tfield[opt] string capath CA certificate directory for TLS verification (curl transport only)
-- @tfield[opt=false] boolean insecure_skip_verify turns TLS verification off; the name says what
-- it is (`verify`/`ssl_verify` are refused, so it cannot be turned off by accident)
-- @tfield[opt] string user_agent the `User-Agent` header (default `crm/VERSION`)
-- @tfield[opt=16777216] number max_response_bytes larger answers fail with
-- `code = "response_too_large"` (16 MiB by default)
-- @tfield[opt] string proxy a proxy URL (`http`, `https`, `socks4`, `socks4a`, `socks5`,
-- `socks5h`; `user:password@` allowed and scrubbed from errors). The environment's proxy
-- variables are always ignored. Not supported by the ngx transport
-- @tfield[opt] table retry the retry policy: `{max_attempts = 4, base_delay = 0.2, max_delay = 5,
-- deadline = 30, max_pending = 100}`. `max_attempts` bounds failures, `max_pending` bounds
-- "accepted, still processing" answers (Toast's 202), waits are exponential backoff with full
-- jitter capped by `max_delay`, and `deadline` (seconds) bounds the whole call, waits included
-- @tfield[opt] string|table transport `"curl"` (the C core), `"ngx"` (nginx cosockets) or an
-- object with `request()` and `close()`; default: `curl` outside nginx, chosen per request
-- inside it
-- @tfield[opt] table rate a client-side rate limit `{per_second = N, burst = B}` (burst defaults
-- to `max(1, per_second)`), shared by a batch and by nginx light threads
-- @tfield[opt] string shared_dict inside nginx: the name of a `lua_shared_dict` (e.g. `"crm"`);
-- then every worker shares the rate, Toast's token and find_or_create's locks (crm.store)
-- @tfield[opt] table store the same over any object with `get`, `set`, `add` and `incr` as
-- ngx.shared.DICT has them (a Redis adapter, say: examples/redis_store.lua); not with
-- `shared_dict`
-- @tfield[opt] function debug `function(line)`: one redacted line per request and answer
-- (method, path, status, time, sizes; never bodies, query strings, tokens or keys); an error it
-- raises is caught and dropped

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

-- What curl sends for a proxy's user:password: %XX decoded, then base64 (RFC 4648) in Basic.
local function percent_decoded(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local quad = {}
    for j = 1, 4 do
      local k = math.floor(n / 64 ^ (4 - j)) % 64
      quad[j] = B64:sub(k + 1, k + 1)
    end
    if not b then quad[3] = "=" end
    if not c then quad[4] = "=" end
    out[#out + 1] = table.concat(quad)
  end
  return table.concat(out)
end

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
-- identity(opts) -> the credentials as one string: the key of the shared store's namespace.
-- known[name] = true, or the type the option must have ("string", "number", "boolean",
-- "table"): those are checked first, before anything reads them (a credential that is a table
-- with a __tostring that raises is refused here, never passed to tostring).
function M.init(self, opts, known, parse_error, identity)
  if type(opts) ~= "table" then return nil, validate.fail("options", "must be a table") end
  for k in next, opts do
    if not COMMON[k] and not known[k] then
      local near = validate.suggest(k, COMMON, known)
      return nil, validate.fail(validate.key_name(k), "is not a known option"
        .. (near and ("; did you mean '" .. near .. "'?") or ""))
    end
  end
  local typed = {}
  for k, want in next, known do
    if want ~= true then typed[#typed + 1] = k end
  end
  table.sort(typed)
  for _, k in ipairs(typed) do
    local v = rawget(opts, k)
    if v ~= nil and type(v) ~= known[k] then return nil, validate.fail(k, "must be a " .. known[k]) end
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
  -- shared_dict / store: the rate (and, for Toast, the token and the locks) shared by everyone
  -- with the same base URL and credentials (crm.store).
  local base_url = (opts.base_url:gsub("/+$", ""))
  local shared, serr = stores.from_options(opts, base_url, identity and identity(opts) or "")
  if serr then return nil, serr end
  if shared and limiter then limiter = stores.limiter(shared, limiter, clock) end
  M.private(self).shared = shared

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
    base_url = base_url,
    parse_error = parse_error,
    limiter = limiter,
    debug = opts.debug,
    clock = clock,
  }
  -- The shared store's log line is scrubbed of the secrets in force (the engine's, tokens
  -- included). The function holds the engine, never the client (no cycle through the weak-keyed
  -- private table, which LuaJIT would not collect).
  local engine = self.engine
  if shared then shared.store.secrets_of = function() return engine:secrets() end end
  -- A proxy URL may carry credentials: scrubbed from errors, the password on its own too, both
  -- as written and as curl decodes them (%XX), and as the Proxy-Authorization header carries
  -- them (base64 of the decoded user:password), which a proxy may echo.
  local userinfo = opts.proxy and opts.proxy:match("^[^:]+://([^@/]*)@")
  if userinfo then
    local decoded = percent_decoded(userinfo)
    self.engine:set_secret("proxy_userinfo", userinfo)
    self.engine:set_secret("proxy_password", userinfo:match(":(.*)$"))
    self.engine:set_secret("proxy_userinfo_decoded", decoded)
    self.engine:set_secret("proxy_password_decoded", decoded:match(":(.*)$"))
    self.engine:set_secret("proxy_basic", base64(decoded))
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
-- The table itself, for the call path, which only reads it.
M.PRIVATE = PRIVATE

local function closed_error()
  return errors.new("transport", "the client is closed", { code = "closed", sent = false,
                                                            retryable = false })
end
M.closed_error = closed_error

--[[ The one road of every call of both clients. A public method checks its input and names its
  operation (a constant `spec`, see crm.http's Engine:call); then:

    M.call -> exchange -> client:_auth (the header lines, as an array and as the C core's
    header set: TableCheck's key, Toast's current token, logging in when there is none)
    -> engine:call (an operation of the C core: h:call, or a slot of a batch's multi) or
    engine:send (a request of Lua's own) -> the transport

  The first attempt is made straight away, and the retry policy (crm.retry) runs only when it
  did not succeed, with that failure as its first attempt and the deadline counted from before
  it; every later attempt takes the same exchange. A success allocates nothing here: no closure,
  no table. A policy of the caller's that is not crm.retry's (the orders backfill's spacing)
  sees every attempt, the first too.
  A class may define `client:_renew(err, token, state)` -> whether to send once more in the same
  attempt (Toast: a 401 drops the token and logs in again, once per call; `state` is the call's
  table, made on its first failure). `settle(err)` -> status, data | nil, err may turn an
  attempt's error into a result (TableCheck's DELETE: a 404 after an attempt that may have done
  it).
  -> status, data (the decoded answer) | nil, err ]]

-- The header lines, then the exchange. `now`: the clock's time, when the caller has it.
-- -> status, data | nil, err, the token sent (Toast's, for _renew)
local function exchange(self, spec, a1, a2, query, body, idempotent, now)
  local headers, hs, token = self:_auth(body ~= nil, spec, a1, now)
  if not headers then return nil, hs end
  local status, data
  if spec.op then
    status, data = self.engine:call(spec, a1, a2, query, body, hs, headers, idempotent)
  else
    status, data = self.engine:send(spec, idempotent, headers)
  end
  return status, data, token
end

-- The rest of an attempt whose exchange failed with `err`: the class's second chance and
-- settle. -> status, data | nil, err
local function recover(self, spec, a1, a2, query, body, idempotent, settle, state, err, token)
  local renew = self._renew
  if renew and renew(self, err, token, state) then
    local status, data = exchange(self, spec, a1, a2, query, body, idempotent)
    if status then return status, data end
    err = data
  end
  if settle then return settle(err) end
  return nil, err
end

-- One attempt, as the policy repeats it.
local function attempt(self, spec, a1, a2, query, body, idempotent, settle, state)
  -- close() from another operation of a batch stops this one at its next attempt.
  if self._closed then return nil, closed_error() end
  local status, data, token = exchange(self, spec, a1, a2, query, body, idempotent)
  if status then return status, data end
  return recover(self, spec, a1, a2, query, body, idempotent, settle, state, data, token)
end

-- The policy around the attempts, apart from M.call: a closure made in M.call itself would make
-- every return of M.call close upvalues (bytecode UCLO), which LuaJIT does not compile, and the
-- first attempt's return is the hot path inside nginx.
local function run_policy(self, policy, spec, a1, a2, query, body, idempotent, settle, state, started,
                          first)
  return policy:run(function()
    return attempt(self, spec, a1, a2, query, body, idempotent, settle, state)
  end, idempotent, started, first)
end

function M.call(self, spec, a1, a2, query, body, idempotent, policy, settle)
  if self._closed then return nil, closed_error() end
  if policy ~= nil and not is_policy(policy) then
    return run_policy(self, policy, spec, a1, a2, query, body, idempotent, settle, {})
  end
  -- The first attempt: exchange(), written out (one Lua call less on every call).
  local started = self.clock.now()
  local headers, hs, token = self:_auth(body ~= nil, spec, a1, started)
  local status, data = nil, hs
  if headers and spec.op then
    status, data = self.engine:call(spec, a1, a2, query, body, hs, headers, idempotent)
  elseif headers then
    status, data = self.engine:send(spec, idempotent, headers)
  end
  if status then return status, data end
  local state = {}
  status, data = recover(self, spec, a1, a2, query, body, idempotent, settle, state, data, token)
  if status then return status, data end
  -- Refused before sending (an id, a body that is not JSON): not an attempt to repeat.
  if data.kind == "validation" then return nil, data end
  return run_policy(self, policy or self.policy, spec, a1, a2, query, body, idempotent, settle, state,
    started, data)
end

--- Frees the client's connection (`client:close()`).
-- Safe to call twice; also runs on `__gc` and at the end of a `local c <close>` scope. Every
-- later call on the client returns a `transport` error with `code = "closed"`.
-- @param self the client
-- @treturn boolean `true`
function M.close(self)
  if not self._closed then
    self._closed = true
    if self.transport then self.transport:close() end
  end
  return true
end

--- Runs operations concurrently on one client (`client:batch(ops, opts)`).
-- Each op runs as a coroutine over the ordinary methods (inside nginx: in a light thread), so
-- retries, validation, rate limits and Toast's 202 flow apply per operation, and its sleeps
-- let the others run. Toast logins are single-flight: a batch logs in once. One failure does
-- not stop the rest unless `stop_on_error`.
-- @function batch
-- @tparam {function|table,...} ops each op is `function(client) return client:... end` or
-- `{"method_name", args...}`, up to the first nil (the list read raw if it has a metatable; an
-- op's table as written: what its metamethods raise fails that op, naming `ops[i]`)
-- @tparam[opt] table opts
-- @tparam[opt=16] number opts.concurrency operations in flight at once (1 to 1024)
-- @tparam[opt=false] boolean opts.stop_on_error on the first failure, start no further
-- operations: those not started get `err.code = "cancelled"`
-- @treturn[1] BatchResults one record per op, in input order, and the counts
-- @return[2] `nil` for bad arguments or options (an unknown option, a bad op), a closed client,
-- or a transport that cannot run a batch
-- @treturn[2] Error `validation` with `field` (`"ops[3]"`, `"concurrency"`), or `transport`
-- (`code = "closed"`, `"no_curl"`, `"no_threads"`)
-- @usage
-- local ops = {}
-- for i, id in ipairs(ids) do ops[i] = { "get_customer", id } end
-- local results = assert(toast:batch(ops, { concurrency = 16 }))
-- for i, r in ipairs(results) do
--   if r.err then print(ids[i], tostring(r.err)) else print(r.value.guid) end
-- end

--- What `batch` returns: an array with one record per op, in input order, plus two counts.
-- Each record is `{value = res, extra = third_return}` when the op returned a value (`extra`
-- is its third return value, e.g. `"found"`/`"created"` for `find_or_create`, which returns
-- `customer, nil, how`; an op of your own that returns `res, x` gets `x`), or
-- `{err = err}` when it returned `nil, err`, raised (a `validation` error naming `ops[i]`),
-- returned nothing, or was cancelled (`code = "cancelled"`).
-- @table BatchResults
-- @tfield number succeeded records with a `value`
-- @tfield number failed records with an `err`

-- Metatable entries for a client class: method lookup, close on __gc and __close.
-- client:batch(ops, {concurrency = 16, stop_on_error = false}): crm.batch.run does the work.
local function run_batch(self, ops, opts)
  return batch.run(self, ops, opts)
end

-- kind ("toast" | "tablecheck"): calling one of its 0.1.0 method names raises, naming the new
-- one (crm.renamed).
function M.class(methods, kind)
  if kind then require("crm.renamed").guard(methods, kind) end
  methods.close = M.close
  methods.batch = run_batch
  local mt = { __index = methods }
  mt.__gc = function(self) M.close(self) end
  mt.__close = mt.__gc
  return mt
end

return M
