-- Shared by the specs: the simulator's address, its control plane, and ready-made clients.
local core = require "crm.core"
local cjson = require "cjson"
local crm = require "crm"

local H = {}

H.port = tonumber(os.getenv("CRM_SIM_PORT") or "18080")
H.base_url = "http://127.0.0.1:" .. H.port
H.restaurant = "6f1d2d0e-8f65-4d7b-9b59-0f1f0c8e0a11"
H.client_id, H.client_secret = "sim-client", "sim-secret"

-- The control plane is plain HTTP through the same C core: no mocks anywhere.
local control = assert(core.new { timeout = 10 })

local function call(method, path, body)
  local status, _, raw = control:request(method, H.base_url .. path,
    { "Content-Type: application/json" }, body and cjson.encode(body) or nil)
  assert(status, "simulator control plane unreachable on port " .. H.port)
  assert(status == 200, "control " .. path .. " answered " .. tostring(status) .. ": " .. raw)
  return cjson.decode(raw)
end

function H.reset() return call("POST", "/__sim/reset", {}) end
function H.config(t) return call("POST", "/__sim/config", t) end
function H.fault(t) return call("POST", "/__sim/faults", t) end
function H.stats() return call("GET", "/__sim/stats") end
-- Any other control route, e.g. H.control("GET", "/__sim/toast/orders_calls").
function H.control(method, path, body) return call(method, path, body) end
function H.clear_faults() return call("DELETE", "/__sim/faults") end

-- Requests that reached the API (control-plane calls are not counted).
function H.total() return H.stats().total end
function H.count(key) return H.stats().requests[key] or 0 end

-- Small delays so retry specs run in milliseconds.
H.fast_retry = { max_attempts = 4, base_delay = 0.005, max_delay = 0.02, deadline = 5 }

function H.toast(extra)
  local o = {
    base_url = H.base_url, restaurant_guid = H.restaurant,
    client_id = H.client_id, client_secret = H.client_secret,
    timeout = 5, retry = H.fast_retry,
  }
  for k, v in pairs(extra or {}) do o[k] = v end
  return assert(crm.toast(o))
end

-- A unique customer each call, so specs never depend on one another's data.
local n = 0
function H.customer(extra)
  n = n + 1
  local c = { firstName = "Ada" .. n, lastName = "Lovelace", email = "ada" .. n .. "."
    .. core.guid():sub(1, 8) .. "@example.org" }
  for k, v in pairs(extra or {}) do c[k] = v end
  return c
end

-- ---- TableCheck ----

H.tablecheck_url = H.base_url .. "/api/crm/v1"
H.tablecheck_key = "sim-tablecheck-key"

-- The simulator's fixed records (the seed's franchise and shop ids among them).
H.tc = {
  franchise_id = "5ed64e249551e80639a4d995",
  shop_ids = { "5ed64e279551e80639a4da51", "5ed64e279551e80639a4da52" },
  program_ids = { "5ed64e2a9551e80639a4db01", "5ed64e2a9551e80639a4db02" },
  tier_ids = { "5ed64e2a9551e80639a4db11", "5ed64e2a9551e80639a4db12", "5ed64e2a9551e80639a4db13" },
  flag_ids = { "5ed64e2b9551e80639a4dc01", "5ed64e2b9551e80639a4dc02" },
}

function H.tablecheck(extra)
  local o = { base_url = H.tablecheck_url, api_key = H.tablecheck_key, timeout = 5,
              retry = H.fast_retry }
  for k, v in pairs(extra or {}) do o[k] = v end
  return assert(crm.tablecheck(o))
end

-- Stores n customers in the simulator without API calls (not counted in stats).
function H.tc_seed(count, prefix, fields)
  return call("POST", "/__sim/tablecheck/seed", { customers = count, prefix = prefix, fields = fields })
end

-- A unique CustomerCreateParams body each call: its own names, E.164 phone and email.
local tc_n = 0
function H.tc_customer(extra)
  tc_n = tc_n + 1
  local tag = core.guid():sub(1, 8)
  local c = { franchise_id = H.tc.franchise_id, parent_shop_id = H.tc.shop_ids[1],
              first_name = "Grace" .. tc_n, last_name = "Hopper",
              phones = { string.format("+1415%07d", tc_n) },
              emails = { "grace" .. tc_n .. "." .. tag .. "@example.org" } }
  for k, v in pairs(extra or {}) do c[k] = v end
  return c
end

-- ---- files and commands, for specs that run scripts or a second nginx ----

function H.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- Commands run from the specs leave out make check's sanitizer preload: it belongs to the Lua
-- running busted, not to nginx, redis-server or the processes a spec starts.
H.CLEAN_ENV = "env -u LD_PRELOAD "
local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- sh(cmd) -> whether it exited 0 (output discarded)
function H.sh(cmd)
  local ok = os.execute(H.CLEAN_ENV .. "sh -c " .. quote(cmd) .. " >/dev/null 2>&1")
  return ok == true or ok == 0
end

-- sh_out(cmd) -> what it wrote to stdout
function H.sh_out(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return out
end

function H.slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

function H.spit(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- stop_nginx(dir): stops the nginx whose prefix is dir (started with dir/nginx.conf), if it runs,
-- and waits up to 5 s for its pid file to go.
function H.stop_nginx(dir)
  if not H.exists(dir .. "/nginx.pid") then return end
  local nginx = os.getenv("NGINX") or "/usr/sbin/nginx"
  H.sh("env -u LD_PRELOAD " .. nginx .. " -p " .. dir .. " -c " .. dir .. "/nginx.conf -s stop")
  for _ = 1, 50 do
    if not H.exists(dir .. "/nginx.pid") then break end
    core.sleep(0.1)
  end
end

-- The interpreter running the specs; scripts it starts inherit LUA_PATH and LUA_CPATH.
H.lua = rawget(_G, "jit") and "luajit" or "lua5.4"

-- run_example(script, args) -> ok, output: examples/<script> as a user runs it, on the
-- simulator's port, with stdout and stderr together.
function H.run_example(script, args)
  local out = os.tmpname()
  local ok = os.execute(("CRM_SIM_PORT=%d %s examples/%s %s > %s 2>&1"):format(H.port, H.lua, script,
    args or "", out))
  local text = H.slurp(out)
  os.remove(out)
  return ok == true or ok == 0, text
end

-- A transport that records every request (method, url, headers, body) and passes it on to a
-- real connection: specs can see what went on the wire.
function H.recording_transport()
  local inner = assert(core.new { timeout = 5 })
  local t = { log = {} }
  function t.request(_, method, url, headers, body, timeout)
    t.log[#t.log + 1] = { method = method, url = url, headers = headers, body = body }
    return inner:request(method, url, headers, body, timeout)
  end
  function t.close() return inner:close() end
  return t
end

-- A clock whose time moves only when told (sleep advances it too, without waiting).
function H.manual_clock(start)
  local c = { t = start or 1000 }
  function c.now() return c.t end
  function c.sleep(s) c.t = c.t + s end
  function c.advance(s) c.t = c.t + s end
  return c
end

-- capture(cmd) -> {code, out, err}: a shell command (under H.CLEAN_ENV, stdin /dev/null) with its
-- stdout, stderr and exit code.
function H.capture(cmd)
  local out, err, rc = os.tmpname(), os.tmpname(), os.tmpname()
  os.execute("sh -c " .. quote(H.CLEAN_ENV .. cmd .. " >" .. out .. " 2>" .. err .. " </dev/null; echo $? >" .. rc))
  local r = { out = H.slurp(out), err = H.slurp(err), code = tonumber(H.slurp(rc):match("%d+")) }
  os.remove(out)
  os.remove(err)
  os.remove(rc)
  return r
end

H.quote = quote

-- tmpdir(sub, ...) -> a new directory (with the given sub-directories) under the system's temp.
function H.tmpdir(...)
  local dir = os.tmpname()
  os.remove(dir)
  local parts = { quote(dir) }
  for _, sub in ipairs { ... } do parts[#parts + 1] = quote(dir .. "/" .. sub) end
  assert(os.execute("mkdir -p " .. table.concat(parts, " ")))
  return dir
end

-- toast_headers() -> the header lines of a Toast API request made without crm (a fresh login
-- through the control-free API, as another integration would do it).
function H.toast_headers()
  local status, _, raw = control:request("POST", H.base_url .. "/authentication/v1/authentication/login",
    { "Content-Type: application/json" }, cjson.encode { clientId = H.client_id, clientSecret = H.client_secret,
      userAccessType = "TOAST_MACHINE_CLIENT" })
  assert(status == 200, "login answered " .. tostring(status))
  return { "Authorization: Bearer " .. cjson.decode(raw).token.accessToken,
           "Toast-Restaurant-External-ID: " .. H.restaurant, "Content-Type: application/json" }
end

-- toast_store(customer) -> the customer Toast stored, POSTed without crm (so as typed: another
-- integration's spelling).
function H.toast_store(c)
  local status, _, raw = control:request("POST", H.base_url .. "/crm/v1/customers", H.toast_headers(),
    cjson.encode(c))
  assert(status == 200 or status == 201, "create answered " .. tostring(status) .. ": " .. tostring(raw))
  return cjson.decode(raw)
end

-- The token bucket's bound on arrival times (the simulator's /__sim/times): any span of L
-- seconds holds at most rate * L + burst of them, plus a slack for arrivals that a loaded
-- machine bunched: one request, or 50 ms of scheduling delay at the rate, whichever is more.
function H.assert_rate_bound(times, rate, burst)
  table.sort(times)
  local slack = math.max(1, rate * 0.05)
  for i = 1, #times do
    for j = i, #times do
      local span = times[j] - times[i]
      assert(j - i + 1 <= rate * span + burst + slack, ("%d requests in %.3f s"):format(j - i + 1, span))
    end
  end
end


-- Every string reachable from a value (keys too), depth-bounded and cycle-safe: what a leak
-- check searches.
function H.strings_in(t, out, seen, depth)
  out, seen, depth = out or {}, seen or {}, depth or 0
  if type(t) == "string" then out[#out + 1] = t return out end
  if type(t) ~= "table" or seen[t] or depth > 12 then return out end
  seen[t] = true
  for k, v in pairs(t) do
    H.strings_in(k, out, seen, depth + 1)
    H.strings_in(v, out, seen, depth + 1)
  end
  return out
end

-- Fails naming the first needle that occurs in text (plain search).
function H.assert_absent(text, needles)
  for _, needle in ipairs(needles) do
    require("luassert").is_nil(text:find(needle, 1, true), "leaked " .. needle .. " in: " .. text)
  end
end

return H
