-- The sample plugin's nginx (examples/openresty/nginx.conf.in) for the OpenResty specs: started
-- in front of the simulator, with the test server (spec/openresty/test.conf.in) included, and
-- webhook signing as the plugin wants it.
local core = require "crm.core"
local hash = require "crm.hash"
local H = require "helper"

local N = {}

N.NGINX = os.getenv("NGINX") or "/usr/sbin/nginx"
N.MODULES = "/usr/lib/nginx/modules/"
N.available = H.exists(N.NGINX) and H.exists(N.MODULES .. "ngx_http_lua_module.so")
  and H.exists(N.MODULES .. "ndk_http_module.so")

-- The webhook secret the specs' nginx is configured with.
N.webhook_secret = "spec-webhook-secret-0123456789"

-- sign(body [, secret]) -> the X-Crm-Signature header line for body.
function N.sign(body, secret)
  return "X-Crm-Signature: sha1=" .. hash.hex(hash.hmac_sha1(secret or N.webhook_secret, body))
end

-- The repository root: spec/ is the busted ROOT, and this file lives in it.
local ROOT = (debug.getinfo(1, "S").source:match("^@(.*)/spec/[^/]+$")) or "."
if ROOT:sub(1, 1) ~= "/" then
  local pwd = io.popen("pwd"):read("*l")
  ROOT = ROOT == "." and pwd or (pwd .. "/" .. ROOT)
end
N.ROOT = ROOT

local function render(template, vars)
  return (template:gsub("@([%u_]+)@", function(k) return vars[k] end))
end

local function shell_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

--[[ start(base, opts) -> nginx {dir, plugin, test, tls_port, tls_bad_port, reload(), stop()}
  opts.with_core  false leaves crm/core.so out of lua_package_cpath (default true): nginx must
                  then refuse to start, and start returns nil, its output
  opts.workers    worker_processes (default: the template's 1)
  opts.reuseport  listen with reuseport: the kernel spreads connections over the workers
  opts.env        extra environment for nginx ({CRM_RATE = "50", ...}) ]]
function N.start(base, opts)
  opts = opts or {}
  local with_core = opts.with_core ~= false
  local exists, sh = H.exists, H.sh
  -- One directory per port: an instance left behind by a killed run is stopped here first.
  local dir = ("%s/crm-openresty-%d"):format(os.getenv("TMPDIR") or "/tmp", base)
  if exists(dir .. "/nginx.pid") then H.stop_nginx(dir) end
  sh("rm -rf " .. dir)
  assert(sh("mkdir -p " .. dir .. "/tmp"))
  for _, name in ipairs { "good", "bad" } do
    assert(sh(("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1"
      .. " -addext subjectAltName=DNS:127.0.0.1,IP:127.0.0.1 -keyout %s/%s.key -out %s/%s.pem 2>/dev/null")
      :format(dir, name, dir, name)))
  end
  local n = {
    PREFIX = dir, ROOT = ROOT, PORT = tostring(base), TEST_PORT = tostring(base + 1),
    TLS_PORT = tostring(base + 2), TLS_BAD_PORT = tostring(base + 3),
    CPATH = with_core and (ROOT .. "/build/luajit") or (dir .. "/no-core"),
    SPEC = ROOT .. "/spec/openresty", CERTS = dir,
  }
  H.spit(dir .. "/test.conf", render(H.slurp(ROOT .. "/spec/openresty/test.conf.in"), n))
  local conf = render(H.slurp(ROOT .. "/examples/openresty/nginx.conf.in"), n)
  conf = conf:gsub("}%s*$", "    include " .. dir .. "/test.conf;\n}\n")
  if opts.workers then conf = conf:gsub("\nworker_processes %d+;", "\nworker_processes " .. opts.workers .. ";") end
  if opts.reuseport then
    conf = conf:gsub("listen (127%.0%.0%.1:%d+);", "listen %1 reuseport;")
  end
  H.spit(dir .. "/nginx.conf", conf)
  local user = sh("test $(id -u) = 0") and " -g 'user root;'" or ""
  -- LUA_PATH and LUA_CPATH would leak into nginx's default search paths (";;"), and make check's
  -- sanitizer preload has no business in nginx.
  local env = ("env -u LUA_PATH -u LUA_CPATH -u LD_PRELOAD CRM_TOAST_URL=%s CRM_TOAST_RESTAURANT=%s"
    .. " CRM_TOAST_CLIENT_ID=%s CRM_TOAST_CLIENT_SECRET=%s CRM_WEBHOOK_SECRET=%s "):format(H.base_url,
    H.restaurant, H.client_id, H.client_secret, N.webhook_secret)
  for k, v in pairs(opts.env or {}) do env = env .. k .. "=" .. shell_quote(v) .. " " end
  local cmd = env .. N.NGINX .. " -p " .. dir .. " -c " .. dir .. "/nginx.conf" .. user
  local started = os.execute(cmd .. " > " .. dir .. "/start.log 2>&1")
  if not (started == true or started == 0) then
    local log = H.slurp(dir .. "/start.log") .. (exists(dir .. "/error.log") and H.slurp(dir .. "/error.log") or "")
    -- Without the core nginx must refuse to start: the caller checks why.
    if not with_core then return nil, log end
    error("the plugin's nginx did not start:\n" .. log)
  end
  local probe = assert(core.new { timeout = 1 })
  for _ = 1, 50 do
    if probe:request("GET", "http://127.0.0.1:" .. (base + 1) .. "/t/none", {}) then break end
    core.sleep(0.1)
  end
  probe:close()
  return {
    dir = dir,
    plugin = "http://127.0.0.1:" .. base,
    test = "http://127.0.0.1:" .. (base + 1),
    tls_port = base + 2, tls_bad_port = base + 3,
    -- reload(): `nginx -s reload` (HUP): new workers start, the old ones finish and exit.
    reload = function()
      assert(sh(env .. N.NGINX .. " -p " .. dir .. " -c " .. dir .. "/nginx.conf" .. user .. " -s reload"))
    end,
    stop = function()
      H.stop_nginx(dir)
      if os.getenv("CRM_KEEP_NGINX_DIR") then
        io.stderr:write("\n[openresty] kept " .. dir .. "\n")
      else
        sh("rm -rf " .. dir)
      end
    end,
  }
end

return N
