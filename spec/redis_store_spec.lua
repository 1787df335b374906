-- examples/redis_store.lua against a real redis-server: two plain LuaJIT processes (cron jobs,
-- say) sharing it make one Toast login and hold one rate between them.
local core = require "crm.core"
local H = require "helper"

local REDIS = os.getenv("REDIS_SERVER") or "/usr/bin/redis-server"
local ROOT = (debug.getinfo(1, "S").source:match("^@(.*)/spec/[^/]+$")) or "."
if ROOT:sub(1, 1) ~= "/" then ROOT = io.popen("pwd"):read("*l") .. (ROOT == "." and "" or "/" .. ROOT) end

local function why_not()
  if not H.exists(REDIS) then return "redis-server is not installed (Debian: redis-server)" end
  if not H.sh("command -v luajit >/dev/null") then return "luajit is not installed" end
  if not H.sh("luajit -e 'require \"redis\"' 2>/dev/null") then return "lua-redis is not installed" end
  if not H.exists(ROOT .. "/build/luajit/crm/core.so") then
    return "the LuaJIT build is missing (make all LUA=luajit)"
  end
  return nil
end

local reason = why_not()
if reason then
  describe("examples/redis_store.lua", function() pending(reason) end)
  return
end

local PORT = H.port + 590
local DIR = ("%s/crm-redis-%d"):format(os.getenv("TMPDIR") or "/tmp", PORT)
local RATE, BURST = 20, 4

local SERVER = ("%s --port %d --bind 127.0.0.1 --save '' --appendonly no --daemonize yes --pidfile %s/redis.pid"
  .. " --dir %s --logfile %s/redis.log"):format(REDIS, PORT, DIR, DIR, DIR)

local function start_redis()
  H.sh("test -s " .. DIR .. "/redis.pid && kill $(cat " .. DIR .. "/redis.pid) 2>/dev/null")
  H.sh("rm -rf " .. DIR .. " && mkdir -p " .. DIR)
  -- A Redis already on the port (left behind, or someone else's) would be used instead of ours.
  assert(not H.sh(("luajit -e 'require(\"redis\").connect(\"127.0.0.1\", %d)' 2>/dev/null"):format(PORT)),
    "something already listens on port " .. PORT)
  assert(H.sh(SERVER))
  for _ = 1, 50 do
    if H.sh(("luajit -e 'require(\"redis\").connect(\"127.0.0.1\", %d):ping()' 2>/dev/null"):format(PORT)) then
      return
    end
    core.sleep(0.1)
  end
  error("redis-server did not start on port " .. PORT)
end

local function stop_redis()
  local pid = H.exists(DIR .. "/redis.pid") and H.slurp(DIR .. "/redis.pid"):match("%d+")
  if pid then
    H.sh("kill " .. pid)
    for _ = 1, 50 do
      if not H.sh("kill -0 " .. pid .. " 2>/dev/null") then break end
      core.sleep(0.1)
    end
  end
  H.sh("rm -rf " .. DIR)
end

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local ENV = ("env LUA_PATH='%s/lua/?.lua;%s/lua/?/init.lua;%s/examples/?.lua;%s/spec/?.lua;;'"
  .. " LUA_CPATH='%s/build/luajit/?.so;;' "):format(ROOT, ROOT, ROOT, ROOT, ROOT)

-- Two processes at once, n calls each; true when both succeeded.
local function two_processes(n, mode, email)
  local env = ENV
  local cmd = ("%s luajit %s/spec/redis_worker.lua %d %d %d %s %s"):format(env, ROOT, H.port, PORT, n, mode,
    email or "")
  return H.sh("(" .. cmd .. " > " .. DIR .. "/a.out & " .. cmd .. " > " .. DIR .. "/b.out & wait %1 && wait %2)")
end

describe("examples/redis_store.lua (two LuaJIT processes, one redis-server)", function()
  setup(start_redis)
  teardown(stop_redis)
  before_each(function()
    -- The simulator forgets its tokens on reset; so must Redis (else: a 401, then a re-login).
    assert(H.sh(("luajit -e 'require(\"redis\").connect(\"127.0.0.1\", %d):flushall()'"):format(PORT)))
    H.reset()
    H.config { record_times = true }
  end)

  it("makes one login and holds one rate for both", function()
    assert.is_true(two_processes(30, "shared"))
    assert.equal(1, H.stats().logins)
    local t = H.control("GET", "/__sim/times").times
    table.sort(t)
    assert.equal(61, #t) -- the login and 60 searches
    local worst = 0
    for i = 1, #t do
      for j = i + 1, #t do
        local over = (j - i + 1) - (RATE * (t[j] - t[i]) + BURST)
        if over > worst then worst = over end
      end
    end
    assert.is_true(worst <= 1, ("%.2f requests over rate * span + burst"):format(worst))
    -- 61 requests at 20/s with a burst of 4: nearly three seconds, whichever process sent them
    assert.is_true(t[#t] - t[1] >= (61 - BURST) / RATE - 0.1, t[#t] - t[1])
  end)

  it("find_or_create takes turns across the processes: one customer", function()
    assert.is_true(two_processes(1, "shared")) -- the token is in Redis: both start searching at once
    -- Slow searches: without the lock both processes would search at once, find nobody and
    -- create. (A slow create would not show it: the simulator stores the record before the delay,
    -- so the second search found it anyway.)
    H.fault { method = "POST", path = "/crm/v1/customers/search", delay = 0.5, count = 4 }
    local email = "flight." .. core.guid():sub(1, 8) .. "@example.org"
    assert.is_true(two_processes(1, "shared", email))
    local hows = H.slurp(DIR .. "/a.out") .. H.slurp(DIR .. "/b.out")
    assert.matches("created", hows)
    assert.matches("found", hows)
    local n = 0
    for _, c in ipairs(H.control("GET", "/__sim/toast/customers").customers) do
      if c.email == email then n = n + 1 end
    end
    assert.equal(1, n)
  end)

  it("without the store each process logs in and keeps a rate of its own", function()
    assert.is_true(two_processes(30, "alone"))
    assert.equal(2, H.stats().logins)
    local t = H.control("GET", "/__sim/times").times
    table.sort(t)
    assert.is_true(t[#t] - t[1] < (62 - BURST) / RATE - 0.5, t[#t] - t[1])
  end)

  it("a process started while Redis is down runs on its own state, and a restarted Redis is used again",
    function()
    stop_redis()
    finally(function() stop_redis(); start_redis() end)
    -- Down: the store cannot connect (before, redis_store.new raised and the process died).
    local cmd = ("%s luajit %s/spec/redis_worker.lua %d %d 3 shared"):format(ENV, ROOT, H.port, PORT)
    local out = io.popen(cmd .. " 2>&1; echo exit=$?"):read("*a")
    assert.matches("done 3 failed 0", out, 1, true)
    assert.matches("exit=0", out, 1, true)
    assert.matches("the shared store failed", out, 1, true)
    assert.not_matches("sim%-secret", out)
    -- Restarted under a live store: the first call after the restart fails (crm falls back for it),
    -- the next ones reach the new server.
    start_redis()
    local script = ([[
      local s = require("redis_store").new { port = %d }
      assert(s:set("k", "v", 60))
      assert(s:get("k") == "v")
      assert(os.execute(%q) == 0 or true)
      print("first", (pcall(s.get, s, "k")))
      print("get", tostring(s:get("k")))
      print("add", tostring(s:add("k", "w", 60)))
      print("incr", tostring(s:incr("n", 2, 5, 60)))
      s:close()
    ]]):format(PORT, "kill $(cat " .. DIR .. "/redis.pid); while kill -0 $(cat " .. DIR
      .. "/redis.pid) 2>/dev/null; do sleep 0.05; done; " .. SERVER .. "; sleep 0.5")
    out = io.popen(ENV .. " luajit -e " .. q(script) .. " 2>&1"):read("*a")
    assert.matches("get%snil%sadd%strue%sincr%s7", out)
  end)
end)
