--[[ A crm store (the `store` option) on Redis, for processes on several machines that share one
rate and one Toast login: cron jobs, workers, scripts. Uses Debian's lua-redis (redis-lua 2.0,
over LuaSocket): Lua 5.1 to 5.3 only, and it blocks, so it is for plain LuaJIT processes, not
for nginx workers (inside nginx use `shared_dict`, or an adapter of your own over a cosocket
Redis client; the four methods are all it takes).

  package.path = "examples/?.lua;" .. package.path
  local store = require("redis_store").new { host = "127.0.0.1", port = 6379 }
  local toast = assert(crm.toast { ..., store = store, rate = { per_second = 5 } })

The four methods, as ngx.shared.DICT has them (see crm.store):
  get(k)                 GET
  set(k, v, ttl)         SET k v [PX ms], or DEL k when v is nil
  add(k, v, ttl)         SET k v NX [PX ms]: atomic, false when the key exists
  incr(k, n, init, ttl)  one Lua script (EVAL runs atomically in Redis): a missing key is set
                         to init with its ttl, then INCRBY n
A Redis that cannot be reached raises; crm catches that, keeps per-process state and logs once;
the next call (crm tries again every 30 s) connects again, so a restarted Redis is used again.
What lands in Redis: keys named by a keyed hash of the credentials, counters, lock owners and
the bearer token (until it expires), never the client secret. Protect the Redis as you would
the token: requirepass / ACLs, bind to a private network. ]]
local redis = require "redis"

local M = {}

local Store = {}
Store.__index = Store

local INCR = [[
if redis.call('exists', KEYS[1]) == 0 then
  if tonumber(ARGV[3]) > 0 then
    redis.call('set', KEYS[1], ARGV[2], 'px', ARGV[3])
  else
    redis.call('set', KEYS[1], ARGV[2])
  end
end
return redis.call('incrby', KEYS[1], ARGV[1])
]]

-- new{host, port, timeout, password, prefix} -> store. prefix goes before every key (several
-- applications on one Redis). Nothing is connected here: the first call connects, so a process
-- started while Redis is down runs (crm keeps per-process state and tries again later). A call
-- that fails drops its connection and raises; the next call connects again, so a Redis that was
-- restarted is used again (before, the closed connection failed every later call).
function M.new(opts)
  opts = opts or {}
  return setmetatable({ conn = nil, prefix = opts.prefix or "", host = opts.host or "127.0.0.1",
                        port = opts.port or 6379, timeout = opts.timeout or 2,
                        password = opts.password }, Store)
end

-- call(self, method, ...) -> what the Redis command answers; raises (after dropping the
-- connection) when Redis cannot be reached. The message never carries the password.
local function call(self, method, ...)
  if not self.conn then
    local ok, conn = pcall(redis.connect, { host = self.host, port = self.port, timeout = self.timeout })
    if not ok then error("redis: cannot connect to " .. self.host .. ":" .. self.port, 0) end
    if self.password then
      if not pcall(conn.auth, conn, self.password) then
        pcall(conn.quit, conn)
        error("redis: AUTH was refused (check the password)", 0)
      end
    end
    self.conn = conn
  end
  local conn = self.conn
  local ok, a = pcall(conn[method], conn, ...)
  if not ok then
    -- closed, timed out, or refused (WRONGTYPE): the next call starts on a fresh connection
    pcall(conn.quit, conn)
    self.conn = nil
    error(a, 0)
  end
  return a
end

local function ms(ttl)
  if ttl == nil or ttl <= 0 then return nil end
  return ("%d"):format(math.max(1, math.ceil(ttl * 1000)))
end

function Store:get(key)
  return call(self, "get", self.prefix .. key)
end

function Store:set(key, value, ttl)
  key = self.prefix .. key
  if value == nil then
    call(self, "del", key)
    return true
  end
  local px = ms(ttl)
  if px then return call(self, "set", key, tostring(value), "PX", px) and true end
  return call(self, "set", key, tostring(value)) and true
end

function Store:add(key, value, ttl)
  key = self.prefix .. key
  local px = ms(ttl)
  local ok
  if px then
    ok = call(self, "set", key, tostring(value), "NX", "PX", px)
  else
    ok = call(self, "set", key, tostring(value), "NX")
  end
  if ok then return true end
  return false, "exists"
end

function Store:incr(key, n, init, init_ttl)
  return call(self, "eval", INCR, 1, self.prefix .. key, ("%d"):format(n), ("%d"):format(init or 0),
    ms(init_ttl) or "0")
end

function Store:close()
  if self.conn then pcall(self.conn.quit, self.conn) end
  self.conn = nil
end

return M
