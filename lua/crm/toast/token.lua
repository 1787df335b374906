--[[ Toast's bearer token in the shared store (crm.store): one login per set of credentials for
everyone sharing it (every worker of an nginx, every process on a Redis), a 401 seen by any of
them invalidates it for all, and one re-login follows.

  local shared = token.new(client, store_view)   -- crm.toast does this with shared_dict/store
  shared:current() -> token | nil, err
  shared:invalidate(token)                        -- the server answered 401 to this token

Keys (under the client's namespace):
  tg        the generation: a counter, bumped (incr) when a token is found bad
  t:<g>     generation g's token, living until shortly before Toast's expiresIn runs out
  tl:<g>    the login lock of generation g (atomic add; its ttl bounds a login that died)
  tb:<g>    "generation g was found bad": the first 401 of a generation adds it and bumps tg,
            later 401s of the same generation find it there and only wait for the new token; a
            process that finds the token it saw refused still current and g marked bad (the
            reporter died before its bump) goes on to generation g + 1 itself
No value is read and then written back: the lock is an add, the generation an incr. The store
holds the bearer token (never the client secret) until it expires.

A token entry is bound to the credentials that got it: "<token> crm1 <expiry> <tag>", where
expiry is the wall-clock millisecond it runs out (whole seconds would cut a short-lived
token's life by up to one second) and tag is HMAC-SHA-256(client_secret, client_id
NUL base URL NUL token NUL expiry) in hex. The restaurant is not in it: one login serves every
restaurant of the same credentials. An entry whose tag does not match (another tenant's token
handed over by a store that mixes namespaces, an old or forged value) is ignored, logged once,
and this process logs in itself. ]]
local client = require "crm.client"
local platform = require "crm.platform"
local errors = require "crm.error"
local hash = require "crm.hash"
local stores = require "crm.store"

local M = {}

local tonumber, pcall, error, floor = tonumber, pcall, error, math.floor

local Shared = {}
Shared.__index = Shared

local FIRST_POLL, MAX_POLL = 0.005, 0.1

function M.new(c, store)
  return setmetatable({ client = c, store = store, owner = platform.guid(), gen = nil,
                        token = nil }, Shared)
end

local function can_wait(clock)
  return clock.yields == nil or clock.yields() and true or false
end

-- remember(self, token, gen): the token this process uses now; scrubbed from every error.
local function remember(self, token, gen)
  local c = self.client
  local private = client.private(c)
  if private.token ~= token then
    private.token = token
    c.engine:set_secret(2, token)
  end
  self.token, self.gen = token, gen
  return token
end

local function generation(store)
  return tonumber(store:get("tg")) or 0
end

-- The tag binding a token and its expiry to this client's credentials and base URL.
local function tag_of(self, token, expiry)
  local c = self.client
  local secret = client.private(c).client_secret
  return hash.hex(hash.hmac_sha256(secret, c.client_id .. "\0" .. c.engine.base_url .. "\0" .. token
    .. "\0" .. expiry))
end

-- entry(self, token, expiry) -> the stored form of a token
local function entry(self, token, expiry)
  return token .. " crm1 " .. expiry .. " " .. tag_of(self, token, expiry)
end

-- stored_token(self, g) -> generation g's token when the store holds one bound to these
-- credentials and not yet expired, else nil. A value that does not carry this client's tag is
-- ignored and logged (once per client).
local function stored_token(self, g)
  local v = self.store:get("t:" .. g)
  if v == nil then return nil end
  -- The entry checked last time, unchanged: its tag is not computed again on every request.
  if v == self.checked_entry and self.checked_expiry > stores.wall() then return self.checked_token end
  local token, expiry, tag
  if type(v) == "string" then token, expiry, tag = v:match("^(.+) crm1 (%d+) (%x+)$") end
  if not (token and hash.equal(tag, tag_of(self, token, expiry))) then
    if not self.logged_mismatch then
      self.logged_mismatch = true
      stores.log("the shared store holds a Toast token not bound to these credentials (its tag"
        .. " does not match); it is ignored and this process logs in itself")
    end
    return nil
  end
  local expires = tonumber(expiry) / 1000
  if expires <= stores.wall() then return nil end
  self.checked_entry, self.checked_token, self.checked_expiry = v, token, expires
  return token
end

-- login(self, g) -> token | nil, err: logs in (Toast:login) holding generation g's lock, and
-- publishes the token for everyone.
local function login(self, g, locked)
  local c, store = self.client, self.store
  local ok, token, err = pcall(c.login, c)
  if ok and token then
    local ttl = c.token_expires - c.clock.now()
    if ttl > 0 then store:set("t:" .. g, entry(self, token, floor((stores.wall() + ttl) * 1000)), ttl) end
    remember(self, token, g)
  end
  if locked and store:get("tl:" .. g) == self.owner then store:set("tl:" .. g, nil) end
  if not ok then error(token, 0) end
  return token, err
end

-- current() -> token | nil, err. The stored token when there is one; else one caller (the one
-- whose add of the lock succeeds) logs in while the others wait for its token, at most
-- login_wait seconds in all; then they take the lock (its ttl has run out) themselves.
-- Where waiting would hold an nginx worker (its log phase, init_worker), the caller logs in
-- itself; a plain process (a cron job over Redis) waits, blocking.
function Shared:current()
  local c, store = self.client, self.store
  local clock = c.clock
  local started, pause = clock.now(), FIRST_POLL
  local bound = 2 * c.login_wait
  while true do
    if c._closed then return nil, client.closed_error() end
    local g = generation(store)
    local token = stored_token(self, g)
    -- The token this process saw refused, still current: its reporter may have died (or lost the
    -- store) between the bad mark and the bump. A marked generation is over: go on to the next.
    if token and token == self.refused and store:get("tb:" .. g) ~= nil then
      g = g + 1
      token = stored_token(self, g)
    end
    if token then return remember(self, token, g) end
    if store:add("tl:" .. g, self.owner, c.login_wait) then
      -- Another caller may have published its token and let the lock go just now.
      token = stored_token(self, g)
      if token then
        store:set("tl:" .. g, nil)
        return remember(self, token, g)
      end
      return login(self, g, true)
    end
    -- Where sleeping holds the thread inside nginx, the holder may be a light thread of this very
    -- worker that cannot run meanwhile: log in. Elsewhere a blocking wait is fine: nothing else
    -- of this process runs, so the holder is another process.
    if not can_wait(clock) and platform.ngx then return login(self, g, false) end
    if clock.now() - started >= bound then
      return nil, errors.new("timeout", ("waited %gs for another worker's Toast login"):format(bound),
        { code = "login_wait", retryable = true, login = true })
    end
    clock.sleep(pause)
    if pause < MAX_POLL then pause = pause * 2 end
  end
end

-- invalidate(token): Toast answered 401 to `token`. Its generation is found bad once (add), and
-- only that first report moves everyone to the next generation (incr), so however many workers
-- saw the 401, the next current() makes one login.
function Shared:invalidate(token)
  local store = self.store
  local g = self.token == token and self.gen or nil
  if g == nil then return end
  if store:add("tb:" .. g, 1, 2 * self.client.login_wait + 60) then
    store:incr("tg", 1, 0)
  end
  local private = client.private(self.client)
  if private.token == token then private.token = nil end
  self.token, self.gen, self.refused = nil, nil, token
end

return M
