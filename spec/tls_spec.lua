-- TLS: verification is on by default, a private CA works through `cafile`, and turning
-- verification off needs an option whose name says it is insecure.
local crm = require "crm"
local H = require "helper"

local function sh(cmd)
  local ok = os.execute(cmd .. " >/dev/null 2>&1")
  return ok == true or ok == 0
end

describe("TLS", function()
  local dir = os.tmpname()
  local port = H.port + 443
  local url = "https://127.0.0.1:" .. port

  setup(function()
    os.remove(dir)
    assert(sh("mkdir -p " .. dir .. "/logs"))
    -- A throw-away self-signed certificate for 127.0.0.1, made for this run only.
    assert(sh(("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1"
      .. " -addext subjectAltName=IP:127.0.0.1 -keyout %s/key.pem -out %s/cert.pem"):format(dir, dir)))
    local conf = assert(io.open(dir .. "/nginx.conf", "w"))
    conf:write(([[
daemon on;
pid %s/nginx.pid;
error_log %s/logs/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path %s/body;
  server {
    listen 127.0.0.1:%d ssl;
    ssl_certificate %s/cert.pem;
    ssl_certificate_key %s/key.pem;
    location / { default_type application/json; return 200 '{"guid":"tls-ok","firstName":"T"}'; }
  }
}
]]):format(dir, dir, dir, port, dir, dir))
    conf:close()
    local user = sh("test $(id -u) = 0") and "-g 'user root;'" or ""
    assert(sh(("nginx -p %s -c %s/nginx.conf %s"):format(dir, dir, user)))
    require("crm.core").sleep(0.2)
  end)

  teardown(function()
    sh(("nginx -p %s -c %s/nginx.conf -s stop"):format(dir, dir))
    require("crm.core").sleep(0.1)
    sh("rm -rf " .. dir)
  end)

  local function client(extra)
    local o = { base_url = url, restaurant_guid = H.restaurant, token = "tls-token", retry = { max_attempts = 3 } }
    for k, v in pairs(extra or {}) do o[k] = v end
    return assert(crm.toast(o))
  end

  it("refuses an untrusted certificate by default, without retrying", function()
    local res, err = client():get_customer("0b7d3f0e-1111-4a2b-9c3d-000000000001")
    assert.is_nil(res)
    assert.equal("transport", err.kind)
    assert.equal("CURLE_PEER_FAILED_VERIFICATION", err.code)
    assert.is_false(err.retryable)
    assert.equal(1, err.attempts)
  end)

  it("trusts the certificate given as cafile", function()
    local c = assert(client { cafile = dir .. "/cert.pem" }:get_customer("0b7d3f0e-1111-4a2b-9c3d-000000000001"))
    assert.equal("tls-ok", c.guid)
  end)

  it("skips verification only with insecure_skip_verify", function()
    local c = assert(client { insecure_skip_verify = true }:get_customer("0b7d3f0e-1111-4a2b-9c3d-000000000001"))
    assert.equal("tls-ok", c.guid)
    local bad, err = crm.toast { base_url = url, restaurant_guid = H.restaurant, token = "tls-token",
                                 ssl_verify = false }
    assert.is_nil(bad)
    assert.equal("validation", err.kind)
  end)

  it("reports a missing CA file clearly", function()
    local res, err = client { cafile = dir .. "/nope.pem" }:get_customer("0b7d3f0e-1111-4a2b-9c3d-000000000001")
    assert.is_nil(res)
    assert.equal("transport", err.kind)
    assert.matches("^CURLE_", err.code)
  end)
end)
