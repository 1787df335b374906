-- `crm sim` and scripts/sim.sh (make sim) as a newcomer meets them: a shell full of Lua paths,
-- a port already taken, a start that fails, faults left armed, one state directory for both.
local crm = require "crm"
local core = require "crm.core"
local H = require "helper"

local q = H.quote
local tmp = H.tmpdir("state", "poison/cjson")
-- A module only the simulator's nginx requires: if nginx inherits LUA_PATH, it loads this.
do
  local f = assert(io.open(tmp .. "/poison/cjson/safe.lua", "w"))
  f:write('error("poisoned: nginx read the caller\'s LUA_PATH")\n')
  f:close()
end

-- A port of this spec's own, away from the suite's simulator.
local PORT = H.port + 53

-- sh(cmd [, env]) -> {code, out, err}, with the spec's state home.
local function sh(cmd, env)
  return H.capture(("XDG_STATE_HOME=%s %s %s"):format(q(tmp .. "/state"), env or "", cmd))
end

local function crm_cli(args, env) return sh(H.lua .. " bin/crm " .. args, env) end

local function status(port)
  local r = crm_cli("sim status --port " .. (port or PORT))
  return crm.json.decode(r.out:match("^[^\n]*")), r
end

local function control(method, path, body)
  local h = assert(core.new { timeout = 5 })
  local st, _, raw = h:request(method, "http://127.0.0.1:" .. PORT .. path, { "Content-Type: application/json" },
    body and crm.json.encode(body) or nil)
  h:close()
  return st, raw and crm.json.decode(raw)
end

describe("crm sim and make sim", function()
  after_each(function()
    crm_cli("sim stop --port " .. PORT)
  end)

  it("start without the caller's Lua paths (a LUA_PATH for another Lua does not reach nginx)", function()
    local env = "LUA_PATH=" .. q(tmp .. "/poison/?.lua;;") .. " LUA_CPATH_5_4='/nonexistent/?.so;;'"
      .. " LUA_PATH_5_4=" .. q(tmp .. "/poison/?.lua;;")
    local r = crm_cli("sim start --port " .. PORT, env)
    assert.equal(0, r.code, r.err)
    assert.is_true(status().running)
    -- the same through scripts/sim.sh (make sim)
    r = sh("bash scripts/sim.sh start " .. PORT, env)
    assert.equal(0, r.code, r.err)
    assert.is_true(status().running)
  end)

  it("one state directory: make sim-stop stops what crm sim started, and the other way round", function()
    local r = crm_cli("sim start --port " .. PORT)
    assert.equal(0, r.code, r.err)
    assert.equal(tmp .. "/state/crm/sim/" .. PORT, status().run_dir)
    r = sh("bash scripts/sim.sh stop " .. PORT)
    assert.equal(0, r.code, r.err)
    assert.is_false(status().running)
    assert.is_nil(control("GET", "/__sim/stats"))
    r = sh("bash scripts/sim.sh start " .. PORT)
    assert.equal(0, r.code, r.err)
    assert.is_true(status().running)
    r = crm_cli("sim stop --port " .. PORT)
    assert.equal(0, r.code, r.err)
    assert.is_nil(control("GET", "/__sim/stats"))
  end)

  it("a failed start names nginx's own cause, with the simulator's exit code (9)", function()
    local root = tmp .. "/broken-sim"
    assert(os.execute(("mkdir -p %s && cp -r spec/sim/lua %s/ && sed 's/require(\"sim.control\")/"
      .. "require(\"sim.control\"); require(\"sim.not_there\")/' spec/sim/nginx.conf.in > %s/nginx.conf.in")
      :format(q(root), q(root), q(root))))
    local r = crm_cli("sim start --port " .. PORT, "CRM_SIM_ROOT=" .. q(root))
    assert.equal(9, r.code, r.err)
    assert.truthy(r.err:find("^crm sim: nginx failed to start"), r.err)
    assert.truthy(r.err:find("module 'sim.not_there' not found", 1, true), r.err)
    assert.is_nil(r.err:find("validation", 1, true))
  end)

  it("a port taken by another process is named as such", function()
    -- a simulator whose state lives elsewhere holds the port
    local other = tmp .. "/other-state"
    local r = sh(H.lua .. " bin/crm sim start --port " .. PORT, "XDG_STATE_HOME=" .. q(other))
    assert.equal(0, r.code, r.err)
    finally(function() sh(H.lua .. " bin/crm sim stop --port " .. PORT, "XDG_STATE_HOME=" .. q(other)) end)
    r = crm_cli("sim start --port " .. PORT)
    assert.equal(9, r.code, r.err)
    assert.truthy(r.err:find("port " .. PORT .. " is in use by another process", 1, true), r.err)
    assert.truthy(r.err:find("code=port_in_use", 1, true), r.err)
    r = sh("bash scripts/sim.sh start " .. PORT)
    assert.truthy(r.err:find("port " .. PORT .. " is in use by another process", 1, true), r.err)
  end)

  it("reports armed faults, says so after a --sim run, and crm sim reset / make sim clear them", function()
    assert.equal(0, crm_cli("sim start --port " .. PORT).code)
    assert.equal(200, (control("POST", "/__sim/faults", { path = "/api/crm/v1/nothing", status = 500, count = 3 })))
    assert.equal(1, status().armed_faults)
    local r = crm_cli("--sim tablecheck shops list", "CRM_SIM_PORT=" .. PORT)
    assert.equal(0, r.code, r.err)
    assert.truthy(r.err:find("1 fault is still armed on the simulator (port " .. PORT .. "); crm sim reset", 1, true),
      r.err)
    r = crm_cli("sim reset --port " .. PORT)
    assert.equal(0, r.code, r.err)
    assert.equal(0, status().armed_faults)
    r = crm_cli("--sim tablecheck shops list", "CRM_SIM_PORT=" .. PORT)
    assert.equal(0, r.code, r.err)
    assert.is_nil(r.err:find("fault", 1, true))
    -- make sim (re)starts clean
    control("POST", "/__sim/faults", { path = "/api/crm/v1/nothing", status = 500 })
    assert.equal(1, status().armed_faults)
    assert.equal(0, sh("bash scripts/sim.sh start " .. PORT).code)
    assert.equal(0, status().armed_faults)
  end)

  it("crm sim reset without a simulator is the simulator's error", function()
    local r = crm_cli("sim reset --port " .. PORT)
    assert.equal(9, r.code)
    assert.truthy(r.err:find("no simulator runs on port " .. PORT, 1, true), r.err)
  end)
end)

describe("simulator fault paths", function()
  before_each(function() H.reset() end)
  after_each(function() H.clear_faults() end)

  it("a trailing * is a prefix", function()
    H.fault { path = "/api/crm/v1/sho*", status = 503, count = 1 }
    local tc = H.tablecheck { retry = { max_attempts = 1 } }
    local items, err = tc:list_shops()
    assert.is_nil(items)
    assert.equal(503, err.status)
    assert.equal(0, #H.control("GET", "/__sim/faults").faults)
  end)

  it("a * anywhere else is refused, and the message says only prefixes match", function()
    local h = assert(core.new { timeout = 5 })
    local st, _, raw = h:request("POST", H.base_url .. "/__sim/faults", { "Content-Type: application/json" },
      crm.json.encode { path = "/api/crm/v1/customers/*/images", status = 500 })
    h:close()
    assert.equal(400, st)
    assert.truthy(raw:find("only a trailing '*'", 1, true), raw)
    assert.equal(0, #H.control("GET", "/__sim/faults").faults)
  end)
end)
