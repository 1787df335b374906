--[[ The shared store: where a client keeps the state that several nginx workers (or several
processes on several hosts) share, so that they log in once and hold one rate between them.

Options (both clients, crm.client):
  shared_dict = "crm"   the name of a `lua_shared_dict` in nginx.conf (inside nginx only)
  store = object        anything with the four methods below (a Redis adapter, say)

The interface is ngx.shared.DICT's, so a dict is a store as it is:
  store:get(key)                     -> value | nil [, err]     (nil, err: the store failed)
  store:set(key, value, ttl)         -> true | nil/false, err   (value nil: remove the key)
  store:add(key, value, ttl)         -> true | false, "exists" | nil/false, err
                                        atomic: only one caller adds a key that is absent
  store:incr(key, n, init, init_ttl) -> new value | nil, err
                                        atomic: a missing key starts at `init` (living
                                        `init_ttl` seconds), then n is added
Keys are strings of at most 100 bytes; values are strings or numbers (a store may hand numbers
back as strings). ttl is in seconds, fractions allowed; nil or 0 means no expiry.

What crm keeps there, under "crm:" .. an HMAC-SHA-256 of the base URL keyed by the
credentials (crm.hash; never the secret, and nothing a reader could turn back into it):
  <ns>:tg, <ns>:t:<gen>, <ns>:tl:<gen>, <ns>:tb:<gen>  Toast's bearer token (crm.toast.token)
  <ns>:r:<epoch>                                       the rate (M.limiter below)
  <ns>:f:<hmac of the key>                             find_or_create's locks (crm.flight);
                                                       guests' emails and phones are hashed too

Failures: a store that raises, answers with an error (a dict that is full: "no memory") or
answers garbage (a get that returns a table, a boolean or a function), never fails a request.
The client falls back to state of its own process (what it does without a store), logs that
once (ngx.log WARN inside nginx, stderr elsewhere), and tries the store again after RECHECK
seconds. ]]
local hash = require "crm.hash"
local platform = require "crm.platform"
local validate = require "crm.validate"

local M = {}

local type, tostring, tonumber, pcall, floor = type, tostring, tonumber, pcall, math.floor
local fail = validate.fail

M.METHODS = { "get", "set", "add", "incr" }
M.RECHECK = 30 -- seconds on per-process state after a store failure, before trying it again

local ngx = platform.ngx

-- The wall clock, shared by every process of a host: rate epochs and the local store's expiry.
-- (The client's own clock may be a process's monotonic one, which other processes cannot read.)
local function wall() return platform.wall_time() end
M.wall = wall

-- ---- a store in this process (the fallback, and the default for tests) ----

local Local = {}
Local.__index = Local

-- new_local([now]) -> a store of this process, with incr; entries expire by now() (the wall
-- clock by default).
function M.new_local(now)
  return setmetatable({ now = now or wall, entries = {} }, Local)
end

local function expiry(self, ttl)
  if ttl == nil or ttl == 0 then return math.huge end
  return self.now() + ttl
end

function Local:get(key)
  local e = self.entries[key]
  if not e then return nil end
  if e.expires <= self.now() then
    self.entries[key] = nil
    return nil
  end
  return e.value
end

function Local:set(key, value, ttl)
  if value == nil then
    self.entries[key] = nil
  else
    self.entries[key] = { value = value, expires = expiry(self, ttl) }
  end
  return true
end

function Local:add(key, value, ttl)
  if self:get(key) ~= nil then return false, "exists" end
  self.entries[key] = { value = value, expires = expiry(self, ttl) }
  return true
end

function Local:incr(key, n, init, init_ttl)
  local v = self:get(key)
  if v == nil then
    if init == nil then return nil, "not found" end
    self.entries[key] = { value = init + n, expires = expiry(self, init_ttl) }
    return init + n
  end
  v = tonumber(v)
  if not v then return nil, "not a number" end
  self.entries[key].value = v + n
  return v + n
end

-- ---- checks ----

-- check(store, field) -> nil | validation error naming the missing method
function M.check(store, field)
  local t = type(store)
  if t ~= "table" and t ~= "userdata" then
    return fail(field, "must be an object with get, set, add and incr (an ngx.shared.DICT, say)")
  end
  for _, m in ipairs(M.METHODS) do
    local ok, f = pcall(function() return store[m] end)
    if not ok or (type(f) ~= "function" and not (type(f) == "table" and getmetatable(f)
        and getmetatable(f).__call)) then
      return fail(field .. "." .. m, "must be a method (store:" .. m .. "(...), as ngx.shared.DICT has)")
    end
  end
  return nil
end

-- dict(name) -> ngx.shared[name] | nil, validation error
function M.dict(name)
  local e = validate.string(name, "shared_dict", { nonempty = true, max = 256 })
  if e then return nil, e end
  if not ngx or type(ngx.shared) ~= "table" and type(ngx.shared) ~= "userdata" then
    return nil, fail("shared_dict", "needs nginx (lua_shared_dict); outside nginx pass `store`")
  end
  local d = ngx.shared[name]
  if d == nil then
    return nil, fail("shared_dict", "names no lua_shared_dict in nginx.conf (add `lua_shared_dict "
      .. name .. " 1m;` to the http block)")
  end
  return d
end

-- ---- logging, once ----

local logged = setmetatable({}, { __mode = "k" })

-- log(msg): one warning line (no secret or PII goes in: callers pass crm's own words and a
-- store's error text, redacted).
function M.log(msg)
  if ngx and ngx.log then
    ngx.log(ngx.WARN, "crm: ", msg)
  else
    io.stderr:write("crm: ", msg, "\n")
  end
end

-- ---- the guarded store: never raises, never fails ----

local Guarded = {}
Guarded.__index = Guarded

-- guard(store [, {name, log}]) -> a store over `store` whose calls never raise and never fail:
-- on a failure of `store` it serves from a store of this process and logs once.
-- opts.secrets: strings scrubbed from the logged error text (the credentials).
function M.guard(store, opts)
  opts = opts or {}
  return setmetatable({ backend = store, name = opts.name or "store", log = opts.log or M.log,
                        secrets = opts.secrets or {}, fallback = M.new_local(), down_until = nil,
                        failures = 0 }, Guarded)
end

-- The store's error text, scrubbed of the credentials, of the value that was being written
-- (a token) and each of its words (a token entry is "<token> crm1 <expiry> <tag>": an error
-- quoting only its first word quotes the token), and of whatever looks like a token, an email or
-- a phone; then cut. The client's secrets in force (its tokens among them) come from secrets_of,
-- a function the client sets (crm.client), and a Toast token entry is scrubbed by its shape too:
-- it may hold a token another worker got, which this process never saw.
local function redacted(self, err, value)
  local secrets = {}
  if type(value) == "string" then
    secrets[1] = value
    for word in value:gmatch("%S+") do secrets[#secrets + 1] = word end
  end
  for i = 1, #self.secrets do secrets[#secrets + 1] = self.secrets[i] end
  if self.secrets_of then
    local ok, more = pcall(self.secrets_of)
    if ok and type(more) == "table" then
      for i = 1, #more do secrets[#secrets + 1] = more[i] end
    end
  end
  -- The store's own error value may be anything, a table whose __tostring raises included.
  local shown, text = pcall(tostring, err)
  if not shown or type(text) ~= "string" then text = "(an error value that cannot be shown)" end
  -- Looked for only where a word starts (a frontier; a leading space makes one at the start):
  -- from every byte, a long word was read once per byte.
  text = (" " .. text):gsub("%f[%S]%S+ crm1 %d+ %x+", "<redacted token entry>"):sub(2)
  local s = require("crm.error").redact(text, { secrets = secrets })
  if #s > 160 then s = s:sub(1, 160) .. "..." end
  return s
end

-- use(self) -> the store to talk to now: the backend, or the fallback while it is down.
local function backend_up(self)
  if not self.down_until then return true end
  if wall() < self.down_until then return false end
  self.down_until = nil
  return true
end

local function went_down(self, op, err, value)
  self.failures = self.failures + 1
  self.down_until = wall() + M.RECHECK
  if not logged[self] then
    logged[self] = true
    self.log(("the %s failed (%s: %s); this process keeps its own token, rate and locks"
      .. " (per worker) and tries the store again every %g s"):format(self.name, op,
      redacted(self, err, value), M.RECHECK))
  end
end

-- Values are strings or numbers (the interface); a get that answers anything else (a table, a
-- boolean, a function: a broken adapter) is a failing store like one that raises.
local VALUE_TYPES = { string = true, number = true }

function Guarded:get(key)
  if backend_up(self) then
    local ok, v, err = pcall(self.backend.get, self.backend, key)
    if ok and VALUE_TYPES[type(v)] then return v end
    if ok and v == nil and err == nil then return nil end
    if ok and v ~= nil then err = "it answered a " .. type(v) .. ", not a string or a number" end
    went_down(self, "get", ok and err or v)
  end
  return self.fallback:get(key)
end

function Guarded:set(key, value, ttl)
  if backend_up(self) then
    local ok, done, err = pcall(self.backend.set, self.backend, key, value, ttl)
    if ok and done then return true end
    went_down(self, "set", ok and (err or "refused") or done, value)
  end
  return self.fallback:set(key, value, ttl)
end

function Guarded:add(key, value, ttl)
  if backend_up(self) then
    local ok, done, err = pcall(self.backend.add, self.backend, key, value, ttl)
    if ok and done then return true end
    if ok and done == false and (err == nil or err == "exists") then return false end
    went_down(self, "add", ok and (err or "refused") or done, value)
  end
  return (self.fallback:add(key, value, ttl))
end

function Guarded:incr(key, n, init, init_ttl)
  if backend_up(self) then
    local ok, v, err = pcall(self.backend.incr, self.backend, key, n, init, init_ttl)
    v = ok and tonumber(v) or v
    if ok and type(v) == "number" then return v end
    went_down(self, "incr", ok and (err or "not a number") or v)
  end
  return (self.fallback:incr(key, n, init, init_ttl))
end

-- is_down() -> whether calls go to the fallback right now (for tests and status pages).
function Guarded:is_down() return not backend_up(self) end

-- ---- views: a prefix, keys hashed ----

local View = {}
View.__index = View

-- view(store, prefix [, key_secret]) -> a store whose keys are prefix .. key, or with
-- key_secret, prefix .. the first 32 hex digits of HMAC-SHA-256(key_secret, key).
function M.view(store, prefix, key_secret)
  return setmetatable({ store = store, prefix = prefix, key_secret = key_secret }, View)
end

local function name(self, key)
  if self.key_secret then return self.prefix .. hash.hex(hash.hmac_sha256(self.key_secret, key)):sub(1, 32) end
  return self.prefix .. key
end

function View:get(key) return self.store:get(name(self, key)) end
function View:set(key, value, ttl) return self.store:set(name(self, key), value, ttl) end
function View:add(key, value, ttl) return self.store:add(name(self, key), value, ttl) end
function View:incr(key, n, init, ttl) return self.store:incr(name(self, key), n, init, ttl) end

-- ---- the namespace ----

-- namespace(base_url, identity) -> ns, lock_secret
-- ns: "crm:" .. 32 hex digits of HMAC-SHA-256(identity, "crm-store-1\0" .. base_url): the
-- same in every process with the same base URL and credentials, different for any other.
-- identity is the credentials (the secret among them) and is used only as the HMAC key, so the
-- namespace reveals nothing about it. lock_secret keys find_or_create's lock names and is never
-- stored.
function M.namespace(base_url, identity)
  local ns = "crm:" .. hash.hex(hash.hmac_sha256(identity, "crm-store-1\0" .. base_url)):sub(1, 32)
  return ns, hash.hmac_sha256(identity, "crm-locks-1\0" .. base_url)
end

-- from_options(opts, base_url, identity) -> shared | nil (no store asked for) | nil, err
-- shared = {store (guarded), ns, lock_secret, view(suffix[, hashed])}
function M.from_options(opts, base_url, identity)
  local raw, e
  if opts.shared_dict ~= nil and opts.store ~= nil then
    return nil, fail("store", "cannot be combined with shared_dict (give one of them)")
  end
  if opts.shared_dict ~= nil then
    raw, e = M.dict(opts.shared_dict)
    if not raw then return nil, e end
  elseif opts.store ~= nil then
    e = M.check(opts.store, "store")
    if e then return nil, e end
    raw = opts.store
  else
    return nil
  end
  local secrets = {}
  for part in (identity .. "\0"):gmatch("([^%z]*)%z") do secrets[#secrets + 1] = part end
  local guarded = M.guard(raw, { name = opts.shared_dict and ("lua_shared_dict " .. opts.shared_dict)
                                   or "shared store", secrets = secrets })
  local ns, lock_secret = M.namespace(base_url, identity)
  return {
    store = guarded, ns = ns, lock_secret = lock_secret,
    view = function(suffix, hashed)
      return M.view(guarded, ns .. ":" .. suffix, hashed and lock_secret or nil)
    end,
  }
end

-- ---- the rate, shared ----

local Limiter = {}
Limiter.__index = Limiter

--[[ limiter(shared, bucket, clock) -> an object with take(), like crm.ratelimit's bucket, whose
rate holds for everyone sharing the store: `bucket.rate` per second, bursts of `bucket.burst`.

Time is cut into epochs of burst / rate seconds, each with `burst` slots 1 / rate apart. A
request takes the next slot of the current epoch with one atomic incr (the counter of that
epoch, starting at 0); when the epoch is full it takes a slot of the next epoch, and so on, and
then sleeps until its slot's time (a slot already past goes at once: that is the burst). No
value is read and then written back, so concurrent takers in any number of processes never get
the same slot. A request sent at t holds a slot s with s/rate <= t < s/rate + burst/rate, so
any span of L seconds carries at most rate * L + burst requests: the token bucket's bound.
The epochs are named by the wall clock, which every process of a host shares (several hosts:
keep them in NTP sync). ]]
function M.limiter(shared, bucket, clock)
  local burst = math.max(1, floor(bucket.burst))
  return setmetatable({ store = shared.view("r:"), rate = bucket.rate, burst = burst,
                        epoch = burst / bucket.rate, clock = clock }, Limiter)
end

function Limiter:take()
  local rate, burst, epoch = self.rate, self.burst, self.epoch
  local now = wall()
  local e = floor(now / epoch)
  for _ = 1, 100000 do
    local n = self.store:incr(("%d"):format(e), 1, 0, math.max(1, (e + 1) * epoch - now) + 60)
    if n <= burst then
      local wait = e * epoch + (n - 1) / rate - wall()
      if wait > 0 then self.clock.sleep(wait) end
      return
    end
    e = e + 1
  end
end

return M
