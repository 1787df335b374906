--[[ Single-flight locks: keyed locks so that concurrent operations on one client (a curl batch,
nginx light threads, nginx requests of one worker sharing a client) take turns on the same key.

  local locks = flight.new { clock = client.clock, store = nil }
  local held, err = locks:acquire({ "e:ann@example.org", "p:+12065550100" }, { ttl = 60 })
  ... the work ...
  locks:release(held)

acquire takes every key or none. Keys are taken in sorted order, whatever order they are
given in, so two callers that want overlapping sets can never hold one key each and wait on
the other forever. A key is held for at most `ttl` seconds: a holder that died (an nginx
request aborted mid-way, say) stops holding the others back when its ttl runs out. A waiter
waits at most `wait` seconds (default: the ttl) and then gets a timeout error.

Waiting uses the client's clock: clock.sleep yields inside a curl batch and calls ngx.sleep in
nginx. Where clock.yields() says sleeping would hold the thread, nothing else can run while the
caller works, so there is nothing to wait for: acquire returns at once, locking nothing.

The store is where the keys live. The default is a table in this process; anything with
  store:add(key, value, ttl) -> true | false   (false: the key is present and not expired)
  store:get(key)             -> value | nil
  store:set(key, nil)        removes the key
  store:set(key, value, ttl) replaces it (extend: a holder still at work)
can take its place (an ngx.shared.DICT has these very methods), so a later version can share
the locks between nginx workers or processes. ]]
local errors = require "crm.error"

local M = {}

local type, sort, tostring = type, table.sort, tostring

-- ---- the in-process store ----

local Local = {}
Local.__index = Local

-- new_store(clock) -> a store whose entries expire by clock.now()
function M.new_store(clock)
  return setmetatable({ clock = clock, entries = {} }, Local)
end

function Local:get(key)
  local e = self.entries[key]
  if not e then return nil end
  if e.expires <= self.clock.now() then
    self.entries[key] = nil
    return nil
  end
  return e.value
end

function Local:add(key, value, ttl)
  if self:get(key) ~= nil then return false end
  self.entries[key] = { value = value, expires = self.clock.now() + ttl }
  return true
end

function Local:set(key, value, ttl)
  if value == nil then
    self.entries[key] = nil
  else
    self.entries[key] = { value = value, expires = self.clock.now() + (ttl or 1e9) }
  end
  return true
end

-- ---- locks ----

local Locks = {}
Locks.__index = Locks

M.DEFAULT_TTL = 60
local FIRST_POLL, MAX_POLL = 0.005, 0.05

-- new{clock, store, id, shared} -> locks. id makes the owner names unique among everyone
-- sharing the store (other workers, other processes): a GUID per locks object. shared: the
-- store is shared with other processes, so even where sleeping blocks there is a holder to
-- wait for (another process); acquire then waits, blocking.
function M.new(opts)
  local clock = opts.clock
  return setmetatable({ clock = clock, store = opts.store or M.new_store(clock), n = 0,
                        id = opts.id and (opts.id .. ":") or "", shared = opts.shared == true }, Locks)
end

local function can_wait(clock)
  return clock.yields == nil or clock.yields() and true or false
end

local function give_back(store, keys, owner, upto)
  for i = 1, upto do
    if store:get(keys[i]) == owner then store:set(keys[i], nil) end
  end
end

--[[ locks:acquire(keys [, {ttl, wait}]) -> held | nil, err
  keys: an array of strings (duplicates are fine). held is what release takes back; it also
  says what happened: held.waited (seconds spent waiting) and held.locked (false where the
  clock does not yield and nothing was locked). ]]
function Locks:acquire(keys, opts)
  opts = opts or {}
  local ttl = opts.ttl or M.DEFAULT_TTL
  local wait = opts.wait or ttl
  local clock, store = self.clock, self.store
  if not self.shared and not can_wait(clock) then return { keys = {}, locked = false, waited = 0 } end
  local sorted, seen = {}, {}
  for i = 1, #keys do
    local k = keys[i]
    if not seen[k] then
      seen[k] = true
      sorted[#sorted + 1] = k
    end
  end
  sort(sorted)
  self.n = self.n + 1
  local owner = self.id .. tostring(self.n) .. ":" .. tostring(clock.now())
  local started = clock.now()
  local pause = FIRST_POLL
  local got = 0
  while got < #sorted do
    if store:add(sorted[got + 1], owner, ttl) then
      got = got + 1
    else
      -- Keep what is held (later keys sort after it, so nobody can be waiting on us for a key
      -- we want) and wait for the next one to be free.
      local waited = clock.now() - started
      if waited >= wait then
        give_back(store, sorted, owner, got)
        return nil, errors.new("timeout", "waited " .. wait .. "s for another operation on the"
          .. " same key to finish", { code = "flight_wait", retryable = true })
      end
      clock.sleep(pause)
      if pause < MAX_POLL then pause = pause * 2 end
    end
  end
  return { keys = sorted, owner = owner, locked = true, waited = clock.now() - started }
end

-- locks:extend(held, ttl): the holder is still at work: its keys now expire `ttl` seconds from
-- now. Keys it no longer owns (its ttl ran out and another took them) are left alone; returns
-- false when any was lost. Lets a long operation hold its keys step by step, each step bounded.
function Locks:extend(held, ttl)
  if type(held) ~= "table" or not held.owner then return true end
  local store, ok = self.store, true
  for i = 1, #held.keys do
    local k = held.keys[i]
    if store:get(k) == held.owner then
      store:set(k, held.owner, ttl)
    else
      ok = false
    end
  end
  return ok
end

-- locks:release(held): gives the keys back (only those still held by this owner: one whose
-- ttl ran out may belong to someone else by now). Safe to call twice.
function Locks:release(held)
  if type(held) ~= "table" or not held.owner then return true end
  give_back(self.store, held.keys, held.owner, #held.keys)
  held.owner = nil
  return true
end

return M
