-- The fault suite's OpenResty slice: starts an nginx that loads crm (spec/openresty/chaos.conf.in)
-- and gives spec/chaos.lua a runner that sends each window of planned operations there, where
-- S.chaos (spec/openresty/scenarios.lua) runs them with client:batch in ngx.thread light
-- threads over cosockets. Outcomes and debug lines come back as JSON and are checked like the
-- plain-Lua run's. Used by scripts/chaos.lua (make chaos) and spec/chaos_spec.lua.
local core = require "crm.core"
local cjson = require "cjson"
local H = require "helper"

local M = {}

local NGINX = os.getenv("NGINX") or "/usr/sbin/nginx"
local MODULES = "/usr/lib/nginx/modules/"

local exists, sh, slurp, spit = H.exists, H.sh, H.slurp, H.spit

-- The repository root: this file lives in spec/.
local function root()
  local here = debug.getinfo(1, "S").source:match("^@(.*)/spec/[^/]+$") or "."
  if here:sub(1, 1) ~= "/" then
    local p = io.popen("pwd")
    local pwd = p:read("*l")
    p:close()
    here = here == "." and pwd or (pwd .. "/" .. here)
  end
  return here
end

function M.available()
  if not (exists(NGINX) and exists(MODULES .. "ngx_http_lua_module.so")
      and exists(MODULES .. "ndk_http_module.so")) then
    return false, "nginx with lua-nginx-module is not installed (" .. NGINX .. ")"
  end
  return true
end

local stop = H.stop_nginx

-- start([port]) -> {url, runner(concurrency), stop()} | nil, why. Port: the simulator's + 530.
function M.start(port)
  local ok, why = M.available()
  if not ok then return nil, why end
  port = port or (H.port + 530)
  local ROOT = root()
  local dir = ("%s/crm-chaos-%d"):format(os.getenv("TMPDIR") or "/tmp", port)
  stop(dir) -- one left behind by a killed run
  sh("rm -rf " .. dir)
  assert(sh("mkdir -p " .. dir .. "/tmp"))
  local vars = { PREFIX = dir, PORT = tostring(port), ROOT = ROOT, CPATH = ROOT .. "/build/luajit",
                 SPEC = ROOT .. "/spec/openresty" }
  local conf = slurp(ROOT .. "/spec/openresty/chaos.conf.in"):gsub("@([%u_]+)@", vars)
  spit(dir .. "/nginx.conf", conf)
  local user = sh("test $(id -u) = 0") and " -g 'user root;'" or ""
  if not sh("env -u LUA_PATH -u LUA_CPATH -u LD_PRELOAD " .. NGINX .. " -p " .. dir .. " -c " .. dir
      .. "/nginx.conf" .. user) then
    local log = exists(dir .. "/error.log") and slurp(dir .. "/error.log") or ""
    return nil, "the chaos nginx did not start:\n" .. log
  end
  local url = "http://127.0.0.1:" .. port
  local http = assert(core.new { timeout = 120 })
  local up = false
  for _ = 1, 50 do
    if http:request("GET", url .. "/t/none", {}) then
      up = true
      break
    end
    core.sleep(0.1)
  end
  if not up then
    stop(dir)
    return nil, "the chaos nginx does not answer on " .. url
  end
  local chaos = require "chaos"
  local ng = { url = url, dir = dir }

  -- runner(concurrency) -> function(ops) -> outcomes, debug_lines | nil, nil, message
  function ng.runner(concurrency)
    local gen = core.guid()
    local settings = {
      toast_url = H.base_url, restaurant = H.restaurant, client_id = H.client_id,
      client_secret = H.client_secret, tablecheck_url = H.tablecheck_url, tablecheck_key = H.tablecheck_key,
      timeout = chaos.TIMEOUT, retry = chaos.RETRY, max_response_bytes = chaos.MAX_RESPONSE_BYTES,
    }
    return function(ops)
      local body = cjson.encode { gen = gen, concurrency = concurrency, settings = settings, ops = ops }
      local status, _, raw = http:request("POST", url .. "/t/chaos", { "Content-Type: application/json" }, body)
      if status ~= 200 then
        return nil, nil, "POST /t/chaos answered " .. tostring(status) .. ": " .. tostring(raw and
          tostring(raw):sub(1, 500) or _ and _.message)
      end
      local decoded, res = pcall(cjson.decode, raw)
      if not decoded or type(res) ~= "table" then return nil, nil, "POST /t/chaos: not JSON: " .. raw:sub(1, 300) end
      if res.error then return nil, nil, "S.chaos: " .. tostring(res.error) end
      if res.mode ~= "threads" then
        return nil, nil, "client:batch did not use light threads: " .. tostring(res.mode)
      end
      return res.outcomes, res.debug
    end
  end

  function ng.stop()
    http:close()
    stop(dir)
    if os.getenv("CRM_KEEP_NGINX_DIR") then
      io.stderr:write("\n[chaos] kept " .. dir .. "\n")
    else
      sh("rm -rf " .. dir)
    end
  end
  return ng
end

return M
