-- `crm sim start|stop|status|reset`: the simulator (nginx + lua-nginx-module) from a checkout's
-- spec/sim or from the copy an installed rock carries in its Lua tree (crm/sim/), like
-- stripe-mock. Its state lives in $XDG_STATE_HOME/crm/sim/PORT whichever copy runs, the same
-- directory scripts/sim.sh (make sim) uses: one state directory per port, so either stops what
-- the other started. nginx starts without the caller's LUA_* variables.
local crm = require "crm"
local core = require "crm.core"
local errors = require "crm.error"
local output = require "crm.cli.output"

local M = {}

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function run(cmd)
  local ok = os.execute(cmd)
  return ok == true or ok == 0
end

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- package.searchpath, which plain Lua 5.1 (luarocks' interpreter for a 5.1 tree) lacks.
local function searchpath(name, path)
  if package.searchpath then return package.searchpath(name, path) end
  local file = name:gsub("%.", "/")
  for template in path:gmatch("[^;]+") do
    local candidate = template:gsub("%?", file)
    if exists(candidate) then return candidate end
  end
  return nil
end

-- root() -> the directory holding nginx.conf.in and lua/sim/, and whether it is a checkout's.
function M.root()
  local env = os.getenv("CRM_SIM_ROOT")
  if env and env ~= "" then return env, false end
  local here = searchpath("crm.cli", package.path)
  if here then
    local dir = here:match("^(.*)/[^/]*$") or "."
    if exists(dir .. "/crm/sim/nginx.conf.in") then return dir .. "/crm/sim", false end
    if exists(dir .. "/sim/nginx.conf.in") then return dir .. "/sim", false end
    -- a checkout: lua/crm/cli.lua -> spec/sim
    local top = dir:match("^(.*)/lua/crm$") or dir:match("^(.*)/lua$")
    if top and exists(top .. "/spec/sim/nginx.conf.in") then return top .. "/spec/sim", true end
  end
  return nil
end

local function abs(path)
  if path:sub(1, 1) == "/" then return path end
  local p = io.popen("pwd")
  local cwd = p and p:read("*l") or "."
  if p then p:close() end
  path = (cwd .. "/" .. path):gsub("/%./", "/")
  return path
end

local function uid()
  local p = io.popen("id -u")
  local u = p and p:read("*l")
  if p then p:close() end
  return u
end

-- A failure of the simulator itself (not of the command line's input): exit code 9.
local function sim_error(message, code)
  return errors.new("sim", message, { code = code or "sim" })
end

local function run_dir(port)
  local base = os.getenv("XDG_STATE_HOME")
  if not base or base == "" then base = (os.getenv("HOME") or "/tmp") .. "/.local/state" end
  return base .. "/crm/sim/" .. port
end

local function running_pid(dir)
  local pid = tonumber((slurp(dir .. "/nginx.pid") or ""):match("%d+") or "")
  if not pid then return nil end
  -- a stale pid file may name a recycled pid: only ever signal an nginx
  local cmdline = slurp("/proc/" .. pid .. "/cmdline")
  if not cmdline or not cmdline:find("nginx", 1, true) then return nil end
  return pid
end

local function alive(pid) return exists("/proc/" .. pid .. "/cmdline") end

local function control(port, method, path, body)
  local h = assert(core.new { timeout = 10 })
  local status, _, raw = h:request(method, "http://127.0.0.1:" .. port .. path,
    { "Content-Type: application/json" }, body and crm.json.encode(body) or nil)
  h:close()
  if status ~= 200 then return nil end
  return crm.json.decode(raw or "")
end

local function state(port)
  local root, checkout = M.root()
  if not root then
    return nil, sim_error("the simulator's files were not found (a checkout's spec/sim, or"
      .. " crm/sim/ in the rock's Lua tree); set CRM_SIM_ROOT to the directory holding nginx.conf.in", "no_files")
  end
  root = abs(root)
  return { root = root, checkout = checkout, port = port, dir = run_dir(port) }
end

-- armed(port) -> the number of faults still waiting for a request, or nil when unknown.
function M.armed(port)
  local ok, v = pcall(control, port, "GET", "/__sim/faults")
  if not ok or type(v) ~= "table" or type(v.faults) ~= "table" then return nil end
  return #v.faults
end

local function status_of(s)
  local pid = running_pid(s.dir)
  return { running = pid ~= nil, port = s.port, pid = pid, url = "http://127.0.0.1:" .. s.port,
           tablecheck_url = "http://127.0.0.1:" .. s.port .. "/api/crm/v1", run_dir = s.dir,
           armed_faults = pid and M.armed(s.port) or nil }
end

-- Why nginx stopped, in its own words: the first [emerg]/[alert]/[crit]/[error] entry of
-- start.err or error.log with its continuation lines (up to a stack traceback), on one line.
function M.cause(text, port)
  local out
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    if out then
      if not line:find("^%s") or line:find("stack traceback", 1, true) then break end
      out = out .. " " .. line:gsub("^%s+", "")
    else
      local msg = line:match("%[emerg%] (.*)$") or line:match("%[alert%] (.*)$")
        or line:match("%[crit%] (.*)$") or line:match("%[error%] (.*)$")
      if msg then out = msg:gsub("^%d+#%d+: ", "") end
    end
  end
  if out and out:find("Address already in use", 1, true) then
    return "port " .. port .. " is in use by another process (no simulator with its state in this"
      .. " directory; crm sim status --port " .. port .. ")", "port_in_use"
  end
  return out, "nginx_failed"
end

local function stop(s)
  local pid = running_pid(s.dir)
  if not pid then
    os.remove(s.dir .. "/nginx.pid")
    return true
  end
  for _, sig in ipairs { "QUIT", "TERM", "KILL" } do
    run("kill -" .. sig .. " " .. pid .. " 2>/dev/null")
    for _ = 1, 50 do
      if not alive(pid) then
        os.remove(s.dir .. "/nginx.pid")
        return true
      end
      core.sleep(0.1)
    end
  end
  return nil, sim_error("nginx (pid " .. pid .. ") would not exit", "would_not_exit")
end

-- Seeds n Toast restaurants, twelve weeks of orders each (the simulator's toast_restaurants).
local function seed_restaurants(port, n)
  if not control(port, "POST", "/__sim/config", { toast_restaurants = n, toast_orders_days = 84 }) then
    return nil, output.usage_error("the simulator refused to seed " .. n .. " restaurants (at most 1000)",
      "restaurants")
  end
  return true
end

-- The seeded restaurants, [{guid, orders}], or nil when there are none.
local function restaurants_of(port)
  local r = control(port, "GET", "/__sim/toast/restaurants")
  if not r or type(r.restaurants) ~= "table" or #r.restaurants == 0 then return nil end
  local out = {}
  for i, x in ipairs(r.restaurants) do out[i] = { guid = x.guid, orders = x.orders } end
  return out
end

local function start(s, seed, restaurants)
  local nginx = os.getenv("NGINX") or "/usr/sbin/nginx"
  if not exists(nginx) then
    return nil, sim_error("nginx not found at " .. nginx .. " (install nginx and libnginx-mod-http-lua)",
      "no_nginx")
  end
  for _, m in ipairs { "ndk_http_module.so", "ngx_http_lua_module.so" } do
    if not exists("/usr/lib/nginx/modules/" .. m) then
      return nil, sim_error("missing /usr/lib/nginx/modules/" .. m .. " (install libnginx-mod-http-lua)",
        "no_module")
    end
  end
  local ok, err = stop(s)
  if not ok then return nil, err end
  if not run("mkdir -p -m 700 " .. quote(s.dir .. "/tmp")) then
    return nil, sim_error("cannot create " .. s.dir, "state_dir")
  end
  local template = slurp(s.root .. "/nginx.conf.in")
  if not template then return nil, sim_error("cannot read " .. s.root .. "/nginx.conf.in", "no_files") end
  local conf = template:gsub("@PORT@", tostring(s.port)):gsub("@RUN@", s.dir):gsub("@ROOT@", s.root)
  if uid() == "0" then conf = conf:gsub("\n#user root;", "\nuser root;") end
  for _, name in ipairs { "error.log", "access.log" } do
    local f = io.open(s.dir .. "/" .. name, "w")
    if f then f:close() end
  end
  local f = assert(io.open(s.dir .. "/nginx.conf", "w"))
  f:write(conf)
  f:close()
  f = io.open(s.dir .. "/port", "w")
  if f then f:write(s.port, "\n") f:close() end
  -- Without the caller's LUA_* variables: nginx's LuaJIT reads LUA_PATH and LUA_CPATH for its
  -- default paths (the ";;" in nginx.conf), and a Lua 5.4 tree there makes it load a 5.4 cjson.so.
  if not run("for v in $(env | sed -n 's/^\\(LUA_[A-Za-z0-9_]*\\)=.*/\\1/p'); do unset \"$v\"; done; "
      .. quote(nginx) .. " -p " .. quote(s.dir .. "/") .. " -c " .. quote(s.dir .. "/nginx.conf")
      .. " 2>" .. quote(s.dir .. "/start.err")) then
    local why, code = M.cause((slurp(s.dir .. "/start.err") or "") .. "\n" .. (slurp(s.dir .. "/error.log") or ""),
      s.port)
    return nil, sim_error("nginx failed to start on 127.0.0.1:" .. s.port .. ": "
      .. (why or ("see " .. s.dir .. "/error.log")), code)
  end
  for _ = 1, 50 do
    if control(s.port, "GET", "/__sim/stats") then
      if seed and seed > 0 then
        if not control(s.port, "POST", "/__sim/tablecheck/seed", { customers = seed, prefix = "Demo" }) then
          return nil, sim_error("the simulator refused to seed " .. seed .. " customers", "seed")
        end
      end
      if restaurants and restaurants > 0 then
        local ok2, rerr = seed_restaurants(s.port, restaurants)
        if not ok2 then return nil, rerr end
      end
      return true
    end
    core.sleep(0.1)
  end
  stop(s)
  local why = M.cause(slurp(s.dir .. "/error.log") or "", s.port)
  return nil, sim_error("the simulator did not answer on 127.0.0.1:" .. s.port .. " within 5s"
    .. (why and (": " .. why) or ""), "no_answer")
end

-- reset(s): wipes the running simulator's state, configuration and faults.
local function reset(s)
  if not running_pid(s.dir) then
    return nil, sim_error("no simulator runs on port " .. s.port .. " (crm sim start --port " .. s.port .. ")",
      "not_running")
  end
  if not control(s.port, "POST", "/__sim/reset", {}) then
    return nil, sim_error("the simulator on port " .. s.port .. " refused the reset", "reset")
  end
  return true
end

-- run(action, {port, seed_customers, restaurants}) -> exit code
function M.run(action, o)
  local port = o.port
  local s, err = state(port)
  if not s then
    output.error(err)
    return output.exit_code(err)
  end
  local ok
  if action == "start" then
    ok, err = start(s, o.seed_customers, o.restaurants)
  elseif action == "stop" then
    ok, err = stop(s)
  elseif action == "reset" then
    ok, err = reset(s)
  end
  if action ~= "status" and not ok then
    output.error(err)
    return output.exit_code(err)
  end
  local st = status_of(s)
  if action == "start" and o.seed_customers then st.seeded_customers = o.seed_customers end
  -- The seeded Toast restaurants: their GUIDs and order counts.
  if st.running and action ~= "stop" then st.restaurants = restaurants_of(s.port) end
  output.line(st)
  if action == "status" and not st.running then return 1 end
  return 0
end

return M
