-- crm inside nginx: the sample plugin (examples/openresty/) runs in a second nginx in front of the
-- simulator. It proves the ngx transport does not block the worker (20 concurrent webhooks take
-- about as long as one; with the curl transport forced they queue up), and drives transport
-- scenarios that can only run inside nginx (spec/openresty/scenarios.lua) through HTTP.
local core = require "crm.core"
local cjson = require "cjson"
local H = require "helper"

local N = require "openresty_nginx"

if not N.available then
  describe("OpenResty", function()
    pending("nginx with lua-nginx-module is not installed (" .. N.NGINX .. ")")
  end)
  return
end

-- An nginx with the sample plugin and the test server. with_core = false leaves crm/core.so out
-- of lua_package_cpath: nginx must then refuse to start (-> nil, its output).
local function start_nginx(base, with_core)
  return N.start(base, { with_core = with_core })
end

local http = assert(core.new { timeout = 60 })

local function get_json(url)
  local status, _, body = http:request("GET", url, {})
  assert(status, "no answer from " .. url)
  local ok, v = pcall(cjson.decode, body)
  assert(ok, "not JSON from " .. url .. ": " .. tostring(body))
  return v, status
end

-- Webhooks are signed as the plugin asks (X-Crm-Signature); other posts are not.
local function post_json(url, value, headers)
  local body = cjson.encode(value)
  local h = headers or { "Content-Type: application/json" }
  if not headers and url:find("/webhooks/", 1, true) then h[#h + 1] = N.sign(body) end
  local status, _, answer = http:request("POST", url, h, body)
  assert(status, "no answer from " .. url)
  return cjson.decode(answer), status
end

local function q(s) return core.escape(s) end

local function order(i)
  return { orderId = "ord-" .. i, customer = H.customer { lastName = "Webhook" } }
end

-- n webhooks at once from this process (libcurl's multi); seconds until the last answer.
local function burst(url, n)
  local m = assert(core.multi { size = n, timeout = 60 })
  local bodies = {}
  for i = 1, n do bodies[i] = cjson.encode(order(i)) end
  local t0 = core.now()
  for i = 1, n do
    assert(m:submit("POST", url, { "Content-Type: application/json", N.sign(bodies[i]) }, bodies[i]))
  end
  local done = {}
  while #done < n and core.now() - t0 < 60 do
    local got = m:wait(1)
    for i = 1, #got do done[#done + 1] = got[i] end
  end
  local elapsed = core.now() - t0
  m:close()
  return elapsed, done
end

describe("OpenResty", function()
  local ng

  setup(function()
    ng = start_nginx(H.port + 520, true)
  end)

  teardown(function()
    if ng then ng.stop() end
  end)

  before_each(function() H.reset() end)

  describe("the sample plugin", function()
    it("finds or creates the webhook's guest through the ngx transport", function()
      local o = order(1)
      local res, status = post_json(ng.plugin .. "/webhooks/order", o)
      assert.equal(200, status)
      assert.equal("created", res.how)
      assert.equal("ngx", res.transport)
      assert.equal("ord-1", res.order)
      local again = post_json(ng.plugin .. "/webhooks/order", o)
      assert.equal("found", again.how)
      assert.equal(res.guest, again.guest)
    end)

    it("refuses webhooks without a valid signature of the body, sending nothing", function()
      local before = H.total()
      local body = cjson.encode(order(1))
      local url = ng.plugin .. "/webhooks/order"
      local ct = "Content-Type: application/json"
      for _, h in ipairs {
        { ct },                                                     -- unsigned
        { ct, N.sign(body, "another-secret-0123456789") },          -- another secret
        { ct, N.sign(body .. " ") },                                -- another body
        { ct, "X-Crm-Signature: " .. N.sign(body):match("sha1=.*"):sub(1, 20) }, -- cut short
        { ct, "X-Crm-Signature: md5=" .. ("0"):rep(32) },
      } do
        local status, _, answer = http:request("POST", url, h, body)
        assert.equal(401, status)
        assert.is_string(cjson.decode(answer).error)
      end
      assert.equal(before, H.total())
      assert.equal(200, (http:request("POST", url, { ct, N.sign(body) }, body)))
    end)

    it("answers 422 with the field for a webhook crm refuses, sending nothing", function()
      local before = H.total()
      local res, status = post_json(ng.plugin .. "/webhooks/order", { customer = { firstName = "A" } })
      assert.equal(422, status)
      assert.equal("validation", res.kind)
      assert.equal("lastName", res.field)
      assert.equal(before, H.total())
    end)

    it("serves 20 concurrent webhooks in about the time of one; forced curl blocks the worker", function()
      -- Warm both module-level clients (login, pooled connection), then time the bursts.
      assert.equal("ngx", post_json(ng.plugin .. "/webhooks/order", order(0)).transport)
      assert.equal("curl", post_json(ng.test .. "/webhooks/order-curl", order(0)).transport)
      local logins = H.stats().logins

      H.fault { path = "/crm/v1/customers/search", delay = 0.3, count = 20 }
      local ngx_time, ngx_done = burst(ng.plugin .. "/webhooks/order", 20)
      H.fault { path = "/crm/v1/customers/search", delay = 0.3, count = 20 }
      local curl_time, curl_done = burst(ng.test .. "/webhooks/order-curl", 20)

      io.stderr:write(("\n[openresty] 20 concurrent webhooks, 1 nginx worker, 300 ms simulator"
        .. " delay on search: ngx transport %.2f s, curl transport %.2f s\n"):format(ngx_time, curl_time))
      for _, set in ipairs { { ngx_done, "ngx" }, { curl_done, "curl" } } do
        assert.equal(20, #set[1])
        for _, d in ipairs(set[1]) do
          assert.equal(200, d.status, d.body or tostring(d.err and d.err.message))
          local res = cjson.decode(d.body)
          assert.equal("created", res.how)
          assert.equal(set[2], res.transport)
        end
      end
      assert.is_true(ngx_time < curl_time / 3, ("ngx %.2f s vs curl %.2f s"):format(ngx_time, curl_time))
      -- The shared clients kept their tokens across requests.
      assert.equal(logins, H.stats().logins)
    end)
  end)

  describe("the ngx transport", function()
    local function raw(url, extra)
      local u = ng.test .. "/t/raw?url=" .. q(url)
      for k, v in pairs(extra or {}) do u = u .. "&" .. k .. "=" .. q(tostring(v)) end
      return get_json(u)
    end

    it("writes the request line, Host, User-Agent crm/<version>, headers and Content-Length", function()
      local r = raw("/up/echo?a=1", { method = "POST", body = '{"x":1}' })
      assert.equal(200, r.status)
      local echo = cjson.decode(r.body)
      assert.equal("POST", echo.method)
      assert.equal("/up/echo?a=1", echo.uri)
      assert.equal("127.0.0.1:" .. (H.port + 521), echo.host)
      assert.equal("crm/" .. core.version, echo.user_agent)
      assert.equal("7", echo.content_length)
      assert.equal('{"x":1}', echo.body)
      assert.equal("yes", echo.x_test)
      local own = cjson.decode(raw("/up/echo", { ua = "plugin/2" }).body)
      assert.equal("plugin/2", own.user_agent)
    end)

    it("checks every header list it is given, also one changed since the last request", function()
      local r = get_json(ng.test .. "/t/header_lists").results
      local host = "127.0.0.1:" .. (H.port + 521)
      assert.same({ x_test = "one", host = host, uri = "/up/echo" }, r[1])
      assert.same({ x_test = "two", host = host, uri = "/up/echo" }, r[2])
      for i = 3, 5 do assert.same({ err = "bad_header", sent = false }, r[i]) end
      assert.same({ x_test = "two", host = "elsewhere", uri = "/up/echo" }, r[6])
      assert.same({ x_test = "two", host = host, uri = "/up/echo?q=1" }, r[7])
      assert.same({ x_test = "two", host = host, uri = "/up/echo?only=query" }, r[8])
    end)

    it("decodes chunked bodies: extensions, split size lines, trailers; joins repeated headers", function()
      local r = raw("/up/chunked")
      assert.equal(200, r.status)
      assert.equal("hello, chunked world!", r.body)
      assert.equal("one, two", r.headers["x-rep"])
      assert.equal("chunked", r.headers["transfer-encoding"])
      local big = raw("/up/bigchunked?n=300000")
      assert.equal(300000, big.size)
      assert.equal("a, b", raw("/up/repeated").headers["x-rep"])
    end)

    it("reads bodies until close, HTTP/1.0 answers, and skips 100 Continue", function()
      assert.equal("until the server closes", raw("/up/close").body)
      local r10 = raw("/up/http10")
      assert.equal(201, r10.status)
      assert.equal("ok", r10.body)
      local c = raw("/up/continue")
      assert.equal(200, c.status)
      assert.equal("final", c.body)
      assert.equal("yes", c.headers["x-final"])
    end)

    it("keeps connections alive, and does not when the server says close or the request is fresh", function()
      local function distinct(list)
        local seen, k = {}, 0
        for _, v in ipairs(list) do
          if not seen[v] then seen[v], k = true, k + 1 end
        end
        return k
      end
      local ka = get_json(ng.test .. "/t/keepalive?n=5&path=" .. q("/up/conn"))
      assert.equal(5, #ka.conns)
      assert.equal(1, distinct(ka.conns))
      local chunked = get_json(ng.test .. "/t/keepalive?n=5&path=" .. q("/up/chunked-ka"))
      assert.equal(1, distinct(chunked.conns))
      local closing = get_json(ng.test .. "/t/keepalive?n=5&path=" .. q("/up/conn-close"))
      assert.equal(5, distinct(closing.conns))
      local fresh = get_json(ng.test .. "/t/keepalive?n=5&fresh=1&path=" .. q("/up/conn"))
      assert.equal(5, distinct(fresh.conns))
    end)

    it("reuses one pooled connection for a whole Toast session (the simulator counts them)", function()
      local r = get_json(ng.test .. "/t/toast_sequential?n=10")
      assert.equal(10, r.ok, r.err and r.err.text)
      local stats = H.stats()
      assert.equal(11, stats.total) -- the login and ten searches
      assert.equal(1, stats.connections)
    end)

    it("closes after framing it cannot trust, and reuses a hand-made keep-alive answer", function()
      local function conns(response)
        local path = "/up/send?n=3&r=" .. q(response)
        local r = get_json(ng.test .. "/t/keepalive?n=3&path=" .. q(path))
        assert.is_nil(r.err, r.err and r.err.message)
        local seen, k = {}, 0
        for _, c in ipairs(r.conns) do
          if not seen[c] then seen[c], k = true, k + 1 end
        end
        return k, r.bodies
      end
      -- The control: the same server, a plain Content-Length answer, one connection.
      assert.equal(1, (conns("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nconn=@CONN@")))
      -- Transfer-Encoding next to Content-Length: decoded as chunked, then closed.
      local k, bodies = conns("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        .. "b\r\nconn=@CONN@\r\n0\r\n\r\n")
      assert.equal(3, k)
      assert.matches("^conn=%d+$", bodies[1])
      -- HTTP/1.0 with Transfer-Encoding: closed too, whatever Connection says.
      assert.equal(3, (conns("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
        .. "b\r\nconn=@CONN@\r\n0\r\n\r\n")))
    end)

    it("refuses malformed status lines, chunk sizes and Content-Length as bad_response", function()
      for _, response in ipairs {
        "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5x\r\nhello\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nabc",
      } do
        local r = raw("/up/send?r=" .. q(response))
        assert.is_table(r.err, response)
        assert.equal("bad_response", r.err.name, response)
        assert.is_true(r.err.sent)
      end
      -- Folded and repeated headers, a reason phrase left out, a chunk extension with spaces.
      local ok = raw("/up/send?r=" .. q("HTTP/1.1 200\r\nX-Fold: a\r\n  b\r\nx-fold: c\r\n"
        .. "Transfer-Encoding: chunked\r\n\r\n2 ; x=1\r\nok\r\n0\r\n\r\n"))
      assert.equal(200, ok.status, ok.err and ok.err.message)
      assert.equal("ok", ok.body)
      assert.equal("a b, c", ok.headers["x-fold"])
    end)

    it("keeps one deadline for the whole response: slow answers and slow drips time out", function()
      local slow = raw("/up/slow?d=2", { timeout = 0.3 })
      assert.equal("timeout", slow.err.kind)
      assert.is_true(slow.err.sent)
      assert.is_true(slow.elapsed < 1, slow.elapsed)
      local drip = raw("/up/drip", { timeout = 0.5 })
      assert.equal("timeout", drip.err.kind)
      assert.is_true(drip.elapsed >= 0.45 and drip.elapsed < 1.2, drip.elapsed)
    end)

    it("reports dropped connections, cut bodies and garbage like the C core does", function()
      local drop = raw("/up/drop")
      assert.equal("transport", drop.err.kind)
      assert.equal("empty_reply", drop.err.name)
      assert.is_true(drop.err.sent)
      local part = raw("/up/partial")
      assert.equal("partial_body", part.err.name)
      assert.equal("bad_response", raw("/up/bad").err.name)
      assert.equal("bad_response", raw("/up/badchunk").err.name)
      local refused = raw("http://127.0.0.1:1/")
      assert.equal("transport", refused.err.kind)
      assert.equal("connect_failed", refused.err.name)
      assert.is_false(refused.err.sent)
      assert.equal("unsupported_protocol", raw("ftp://127.0.0.1/").err.name)
      local unresolved = raw("http://crm-test.invalid/") -- the test nginx has no `resolver`
      assert.equal("no_resolver", unresolved.err.name)
      assert.is_false(unresolved.err.sent)
    end)

    it("refuses responses over max_response_bytes, with or without Content-Length", function()
      assert.equal(1000, raw("/up/big?n=1000", { max = 1000 }).size)
      assert.equal("response_too_large", raw("/up/big?n=1001", { max = 1000 }).err.name)
      assert.equal("response_too_large", raw("/up/bigchunked?n=200000", { max = 100000 }).err.name)
      assert.equal("response_too_large", raw("/up/close", { max = 10 }).err.name)
    end)

    it("verifies TLS against lua_ssl_trusted_certificate unless insecure_skip_verify", function()
      local good = raw("https://127.0.0.1:" .. ng.tls_port .. "/")
      assert.equal(200, good.status, good.err and good.err.message)
      local bad = raw("https://127.0.0.1:" .. ng.tls_bad_port .. "/")
      assert.equal("tls_verify_failed", bad.err.name)
      assert.is_false(bad.err.sent)
      assert.equal(200, raw("https://127.0.0.1:" .. ng.tls_bad_port .. "/", { insecure = 1 }).status)
      -- Through a client: a certificate failure is final, never retried.
      local c = get_json(ng.test .. "/t/tls_client?port=" .. ng.tls_bad_port)
      assert.equal("tls_verify_failed", c.err.code)
      assert.equal(1, c.err.attempts)
      assert.is_false(c.err.retryable)
      assert.equal("tls-ok", get_json(ng.test .. "/t/tls_client?port=" .. ng.tls_port).guid)
      assert.equal("tls-bad", get_json(ng.test .. "/t/tls_client?insecure=1&port=" .. ng.tls_bad_port).guid)
    end)
  end)

  describe("crm inside nginx", function()
    it("retries through the same policy: 503s, then a dropped connection", function()
      H.fault { path = "/crm/v1/customers/search", status = 503, count = 2 }
      local r = get_json(ng.test .. "/t/retry")
      assert.is_true(r.ok, r.err and r.err.text)
      assert.equal(3, H.count("POST /crm/v1/customers/search"))
      H.reset()
      H.fault { path = "/crm/v1/customers/search", drop = true, count = 1 }
      assert.is_true(get_json(ng.test .. "/t/retry").ok)
      H.reset()
      H.fault { path = "/crm/v1/customers/search", status = 400, count = 1 }
      local final = get_json(ng.test .. "/t/retry")
      assert.is_false(final.ok)
      assert.equal("http", final.err.kind)
      assert.equal(400, final.err.status)
      assert.equal(1, final.err.attempts)
    end)

    it("runs client:batch in light threads: bounded, in input order, same result shape", function()
      H.fault { path = "/crm/v1/customers/search", delay = 0.3, count = 10 }
      local all = get_json(ng.test .. "/t/batch?n=10&c=10")
      assert.equal(10, all.succeeded)
      for i = 1, 10 do
        assert.equal(i, all.values[i])
        assert.equal("extra" .. i, all.extras[i])
      end
      assert.is_true(all.elapsed < 1.2, all.elapsed) -- ten 0.3 s searches at once
      H.fault { path = "/crm/v1/customers/search", delay = 0.3, count = 10 }
      local bounded = get_json(ng.test .. "/t/batch?n=10&c=5")
      assert.equal(10, bounded.succeeded)
      assert.is_true(bounded.elapsed >= 0.55, bounded.elapsed) -- two rounds of five
      assert.is_true(bounded.elapsed < 2, bounded.elapsed)

      local mixed = get_json(ng.test .. "/t/batch?n=6&c=2&fail=2&raise=4")
      assert.equal(4, mixed.succeeded)
      assert.equal(2, mixed.failed)
      assert.equal("validation", mixed.errs[2].kind)
      assert.matches("raised an error: .*boom 4", mixed.errs[4].message)
      local stopped = get_json(ng.test .. "/t/batch?n=6&c=1&fail=2&stop=1")
      assert.equal(1, stopped.succeeded)
      assert.equal("cancelled", stopped.errs[3].code)
      assert.equal(5, stopped.failed)
    end)

    it("sleeps with ngx.sleep: the rate limiter's waits let other light threads run", function()
      local r = get_json(ng.test .. "/t/sleeps")
      assert.is_true(r.elapsed >= 0.25, r.elapsed) -- four requests at 10 per second, burst 1
      assert.is_true(r.ticks >= 0.5 * r.elapsed / 0.01, r.ticks .. " ticks in " .. r.elapsed .. " s")
    end)

    it("find_or_create creates one customer from light threads and from shared-client requests", function()
      H.fault { method = "POST", path = "/crm/v1/customers/search", delay = 0.2, count = 100 }
      local tag = core.guid():sub(1, 8)
      local r = get_json(ng.test .. "/t/foc_threads?last=T" .. tag .. "&email=" .. q("t" .. tag .. "@example.org"))
      assert.same({ created = 1, found = 7, failed = 0 }, r)
      local gen = core.guid()
      local m = assert(core.multi { size = 8, timeout = 30 })
      for _ = 1, 8 do
        assert(m:submit("GET", ng.test .. "/t/foc_shared?gen=" .. gen .. "&last=S" .. tag .. "&email="
          .. q("s" .. tag .. "@example.org"), {}))
      end
      local done, t0 = {}, core.now()
      while #done < 8 and core.now() - t0 < 30 do
        for _, d in ipairs(m:wait(1)) do done[#done + 1] = d end
      end
      m:close()
      local hows = {}
      for _, d in ipairs(done) do
        local x = cjson.decode(d.body)
        assert.is_true(x.ok, x.err and x.err.text)
        hows[x.how] = (hows[x.how] or 0) + 1
      end
      H.clear_faults()
      local c = H.toast()
      assert.equal(1, #assert(c:search_customers { lastName = "T" .. tag }))
      assert.equal(1, #assert(c:search_customers { lastName = "S" .. tag }))
      assert.same({ created = 1, found = 7 }, hows)
    end)

    it("logs in once per worker for a module-level client shared by concurrent requests", function()
      H.fault { path = "/authentication/v1/authentication/login", delay = 0.3, count = 1 }
      local gen = core.guid()
      local m = assert(core.multi { size = 10, timeout = 30 })
      for i = 1, 10 do
        assert(m:submit("GET", ng.test .. "/t/shared?gen=" .. gen .. "&email=" .. q("s" .. i .. "@example.org"), {}))
      end
      local done, t0 = {}, core.now()
      while #done < 10 and core.now() - t0 < 30 do
        for _, d in ipairs(m:wait(1)) do done[#done + 1] = d end
      end
      m:close()
      assert.equal(10, #done)
      for _, d in ipairs(done) do
        local r = cjson.decode(d.body)
        assert.is_true(r.ok, r.err and r.err.text)
        assert.equal("ngx", r.transport)
      end
      assert.equal(1, H.stats().logins)
    end)

    it("falls back to per-worker state when the store fails, logs one WARN, fails no call", function()
      local r = get_json(ng.test .. "/t/store_fails")
      assert.equal(3, r.ok)
      assert.equal("shared_dict", r.missing.field)
      assert.matches("no lua_shared_dict", r.missing.message)
      assert.is_true(r.dict_ok)
      local log = H.slurp(ng.dir .. "/error.log")
      local n = 0
      for line in log:gmatch("[^\n]+") do
        if line:find("crm: the shared store failed", 1, true) then
          n = n + 1
          assert.matches("%[warn%]", line)
          assert.is_nil(line:find(H.client_secret, 1, true))
        end
      end
      assert.equal(1, n)
    end)

    it("takes the clock from the transport and the C functions from the core", function()
      local p = get_json(ng.test .. "/t/platform")
      assert.equal("content", p.phase)
      assert.is_true(p.core)
      assert.equal(core.version, p.version)
      assert.equal(core.escape("a/b?# %\195\169"), p.escape)
      for _, g in ipairs(p.guids) do
        assert.matches("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$", g)
      end
      assert.are_not.equal(p.guids[1], p.guids[2])
      assert.equal("ngx", p.auto_transport)
      assert.is_true(p.auto_clock_is_ngx)
      assert.is_true(p.ngx_clock_is_ngx)
      assert.is_true(p.curl_clock_is_curl)
      assert.equal("validation", p.cafile_err.kind)
      assert.equal("transport", p.cafile_err.field)
    end)

    it("uses cosockets from an ngx.timer callback too", function()
      local r = get_json(ng.test .. "/t/timer")
      assert.equal("timer", r.phase)
      assert.equal("ngx", r.transport)
      assert.is_true(r.ok, r.err and r.err.text)
    end)

    it("falls back to curl where nginx allows no cosockets, and says why ngx cannot run there", function()
      local auto = get_json(ng.test .. "/set/search")
      assert.equal("set", auto.phase)
      assert.is_true(auto.ok, auto.err and auto.err.text)
      assert.equal("curl", auto.transport)
      local forced = get_json(ng.test .. "/set/search?transport=ngx")
      assert.is_false(forced.ok)
      assert.equal("no_cosockets", forced.err.code)
      assert.equal(1, forced.err.attempts)
      assert.matches("set phase", forced.err.message)
    end)
  end)

  describe("without the C core (lua_package_cpath without crm/core.so)", function()
    it("does not start, and says where crm looked for its core", function()
      local bare, log = start_nginx(H.port + 524, false)
      if bare then bare.stop() end
      assert.is_nil(bare)
      assert.matches("crm needs its C core, crm/core.so, on lua_package_cpath", log, 1, true)
      assert.equal(0, H.stats().logins)
    end)
  end)
end)
