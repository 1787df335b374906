-- Runs inside the plugin's nginx (spec/openresty/test.conf.in): crm scenarios that need nginx
-- (cosockets, light threads, ngx.sleep, phases) answer JSON for spec/openresty_spec.lua, and
-- /up/... plays servers with unusual HTTP for the ngx transport to read.
local cjson = require "cjson.safe"
local crm = require "crm"
local platform = require "crm.platform"
local transports = require "crm.transport"
local ngx_transport = require "crm.transport.ngx"

local ngx = ngx -- luacheck: ignore 113 (this file only runs inside nginx)

local M = {}

local function settings(extra)
  local o = {
    base_url = os.getenv("CRM_TOAST_URL"),
    restaurant_guid = os.getenv("CRM_TOAST_RESTAURANT"),
    client_id = os.getenv("CRM_TOAST_CLIENT_ID"),
    client_secret = os.getenv("CRM_TOAST_CLIENT_SECRET"),
    timeout = 5,
    retry = { max_attempts = 4, base_delay = 0.01, max_delay = 0.05, deadline = 5 },
  }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

local function now()
  ngx.update_time()
  return ngx.now()
end

local function errinfo(e)
  if e == nil then return nil end
  return {
    kind = e.kind, code = e.code or e.name, message = tostring(e.message), sent = e.sent,
    attempts = e.attempts, status = e.status, retryable = e.retryable,
    outcome_unknown = e.outcome_unknown, field = e.field, text = tostring(e),
  }
end

local function arg(name, default)
  local v = ngx.var["arg_" .. name]
  if v == nil or v == "" then return default end
  return ngx.unescape_uri(v)
end

local function local_url(path)
  if path:find("^%a[%w+.%-]*://") then return path end
  return "http://127.0.0.1:" .. ngx.var.server_port .. path
end

local S = {}

-- One request on a bare ngx transport: status, headers, body or the transport's error.
function S.raw()
  local t = ngx_transport.new {
    timeout = tonumber(arg("timeout", "5")),
    max_response_bytes = tonumber(arg("max", nil)),
    insecure_skip_verify = arg("insecure") == "1",
  }
  local headers = { "X-Test: yes" }
  local ua = arg("ua")
  if ua then headers[#headers + 1] = "User-Agent: " .. ua end
  local started = now()
  local status, h, body = t:request(arg("method", "GET"), local_url(arg("url")), headers, arg("body"),
    nil, arg("fresh") == "1")
  local out = { elapsed = now() - started }
  if status then
    out.status, out.headers, out.body, out.size = status, h, body, #body
    if #body > 4096 then out.body = nil end
  else
    out.err = h
  end
  return out
end

-- One transport, one header list changed between requests (the transport keeps the lists it
-- checked, by their text), and URLs of one origin (it keeps what it parsed of an origin): what
-- the echo server saw each time, or the error.
function S.header_lists()
  local t = ngx_transport.new { timeout = 5 }
  local list = { "X-Test: one" }
  local out = {}
  local function send(url)
    local status, h, body = t:request("GET", url or local_url("/up/echo"), list)
    if not status then out[#out + 1] = { err = h.name, sent = h.sent } return end
    local e = cjson.decode(body)
    out[#out + 1] = { x_test = e.x_test, host = e.host, uri = e.uri }
  end
  send()
  list[1] = "X-Test: two"
  send()
  list[2] = "Bad: x\r\nInjected: yes"
  send()
  list[2] = 42
  send()
  list[2] = {}
  send()
  list[2] = "Host: elsewhere"
  send()
  list[2] = nil
  send(local_url("/up/echo?q=1#fragment"))
  send(local_url("/up/echo?only=query"))
  return { results = out }
end

-- n sequential GETs on one transport: which connection (nginx's $connection) served each.
function S.keepalive()
  local t = ngx_transport.new { timeout = 5 }
  local conns, bodies = {}, {}
  for i = 1, tonumber(arg("n", "5")) do
    local status, _, body = t:request("GET", local_url(arg("path", "/up/conn")), {}, nil, nil,
      arg("fresh") == "1")
    if not status then return { err = _ } end
    bodies[i] = body
    conns[i] = body:match("(%d+)$")
  end
  return { conns = conns, bodies = bodies }
end

-- n sequential searches with a new ngx Toast client (the sim counts the connections).
function S.toast_sequential()
  local c = assert(crm.toast(settings { transport = "ngx" }))
  local ok = 0
  for i = 1, tonumber(arg("n", "10")) do
    local res, err = c:search_customers { email = "seq" .. i .. "@example.org" }
    if not res then return { ok = ok, err = errinfo(err) } end
    ok = ok + 1
  end
  return { ok = ok }
end

-- client:batch under the ngx transport: light threads, bounded, results in input order.
function S.batch()
  local c = assert(crm.toast(settings { transport = arg("transport") }))
  assert(c:login())
  local n, fail, raise = tonumber(arg("n", "10")), tonumber(arg("fail", "0")), tonumber(arg("raise", "0"))
  local ops = {}
  for i = 1, n do
    ops[i] = function(client)
      if i == raise then error("boom " .. i) end
      local q = { email = "batch" .. i .. "@example.org" }
      if i == fail then q = { nickname = "x" } end
      local res, err = client:search_customers(q)
      if not res then return nil, err end
      return i, "extra" .. i
    end
  end
  local started = now()
  local results, err = c:batch(ops, { concurrency = tonumber(arg("c", "16")),
                                      stop_on_error = arg("stop") == "1" })
  local out = { elapsed = now() - started }
  if not results then
    out.err = errinfo(err)
    return out
  end
  out.succeeded, out.failed, out.values, out.extras, out.errs = results.succeeded, results.failed, {}, {}, {}
  for i = 1, n do
    out.values[i] = results[i].value or cjson.null
    out.extras[i] = results[i].extra or cjson.null
    out.errs[i] = results[i].err and errinfo(results[i].err) or cjson.null
  end
  return out
end

-- One search through the retry policy (the spec queues faults first).
function S.retry()
  local c = assert(crm.toast(settings { transport = "ngx" }))
  local started = now()
  local res, err = c:search_customers { email = arg("email", "retry@example.org") }
  return { ok = res ~= nil, elapsed = now() - started, err = errinfo(err) }
end

-- A client kept in a module table and shared by every request of this worker.
local shared = {}
function S.shared()
  local gen = arg("gen", "0")
  local c = shared[gen]
  if not c then
    c = assert(crm.toast(settings()))
    shared[gen] = c
  end
  local res, err = c:search_customers { email = arg("email", "shared@example.org") }
  return { ok = res ~= nil, err = errinfo(err), transport = c.transport.current_name() }
end

-- Several restaurants on one client of this worker, over shared_dict "crm": a light-thread batch
-- of one read per restaurant of ?guids= (comma separated), each through its view.
local fleet = {}
function S.restaurants()
  local gen = arg("gen", "0")
  local c = fleet[gen]
  if not c then
    c = assert(crm.toast(settings { shared_dict = "crm" }))
    fleet[gen] = c
  end
  local guids, ops = {}, {}
  for g in arg("guids", ""):gmatch("[^,]+") do
    guids[#guids + 1] = g
    ops[#ops + 1] = function(cl) return cl:use_restaurant(g):list_dining_options() end
  end
  local res, berr = c:batch(ops, { concurrency = #ops })
  if not res then return { err = errinfo(berr) } end
  local out = {}
  for i, r in ipairs(res) do
    out[i] = { guid = guids[i], ok = r.value ~= nil, err = errinfo(r.err),
               restaurant_guid = r.err and r.err.restaurant_guid }
  end
  return { results = out, worker = ngx.worker.pid() }
end

-- A store that fails (a full dict: "no memory"; a dead connection: raises) under a client that
-- makes several calls: they all succeed on per-worker state, and error.log gets one line.
-- Also: shared_dict naming no lua_shared_dict is refused at build.
function S.store_fails()
  local full = {
    get = function() return nil end,
    set = function() return false, "no memory" end,
    add = function() return false, "no memory" end,
    incr = function() error("connection refused") end,
  }
  local c = assert(crm.toast(settings { store = full, rate = { per_second = 1000 } }))
  local ok = 0
  for _ = 1, 3 do
    if c:search_customers { email = "store-fails@example.org" } then ok = ok + 1 end
  end
  local _, missing = crm.toast(settings { shared_dict = "no_such_dict" })
  local dict = assert(crm.toast(settings { shared_dict = "crm" }))
  return { ok = ok, missing = errinfo(missing), dict_ok = dict ~= nil }
end

-- find_or_create of one guest from light threads, and from requests sharing one client.
function S.foc_threads()
  local c = assert(crm.toast(settings { transport = "ngx" }))
  assert(c:login())
  local guest = { firstName = "Ngx", lastName = arg("last"), email = arg("email") }
  local ops = {}
  for i = 1, 8 do ops[i] = function(cl) return cl:find_or_create(guest) end end
  local results = assert(c:batch(ops, { concurrency = 8 }))
  local out = { created = 0, found = 0, failed = results.failed }
  for i = 1, 8 do
    local how = results[i].extra
    if how == "created" or how == "found" then out[how] = out[how] + 1 end
  end
  return out
end

local shared_foc = {}
function S.foc_shared()
  local gen = arg("gen", "0")
  local c = shared_foc[gen]
  if not c then
    c = assert(crm.toast(settings()))
    shared_foc[gen] = c
  end
  local res, err, how = c:find_or_create { firstName = "Ngx", lastName = arg("last"), email = arg("email") }
  return { ok = res ~= nil, how = res and how or cjson.null, err = not res and errinfo(err) or nil }
end

-- Sleeps (here the rate limiter's) go through ngx.sleep: a ticker light thread keeps running.
function S.sleeps()
  local c = assert(crm.toast(settings { transport = arg("transport"), rate = { per_second = 10, burst = 1 } }))
  assert(c:login())
  local done, ticks = false, 0
  local started = now()
  local worker = ngx.thread.spawn(function()
    for i = 1, 4 do assert(c:search_customers { email = "sleep" .. i .. "@example.org" }) end
    done = true
  end)
  while not done and now() - started < 5 do
    ngx.sleep(0.01)
    ticks = ticks + 1
  end
  ngx.thread.wait(worker)
  return { ticks = ticks, elapsed = now() - started }
end

-- A search from an ngx.timer callback (timer context allows cosockets).
function S.timer()
  local box = {}
  local ok, terr = ngx.timer.at(0, function()
    local c = assert(crm.toast(settings()))
    local res, err = c:search_customers { email = "timer@example.org" }
    box.ok, box.err, box.transport, box.phase = res ~= nil, errinfo(err), c.transport.current_name(), ngx.get_phase()
    box.done = true
  end)
  if not ok then return { err = tostring(terr) } end
  local started = now()
  while not box.done and now() - started < 5 do ngx.sleep(0.01) end
  return box
end

-- What crm sees in here: the C core (required inside nginx too) and the clocks.
function S.platform()
  local guids = {}
  for i = 1, 3 do guids[i] = crm.guid() end
  local auto = assert(crm.toast(settings()))
  local forced_ngx = assert(crm.toast(settings { transport = "ngx" }))
  local forced_curl, curl_err = crm.toast(settings { transport = "curl" })
  local _, cafile_err = crm.toast(settings { transport = "ngx", cafile = "/etc/ssl/certs/ca-certificates.crt" })
  return {
    phase = ngx.get_phase(),
    core = platform.core ~= nil,
    version = crm._VERSION,
    escape = platform.escape("a/b?# %\195\169"),
    guids = guids,
    crm_guid = crm.guid(),
    auto_transport = auto.transport.current_name(),
    auto_clock_is_ngx = auto.clock == transports.ngx_clock,
    ngx_clock_is_ngx = forced_ngx.clock == transports.ngx_clock,
    curl_clock_is_curl = forced_curl and forced_curl.clock == transports.curl_clock or cjson.null,
    cafile_err = errinfo(cafile_err),
    curl_without_core = curl_err and errinfo(curl_err) or cjson.null,
  }
end

-- A Toast client against one of the TLS test servers.
function S.tls_client()
  local c, cerr = crm.toast {
    base_url = "https://127.0.0.1:" .. arg("port"), restaurant_guid = os.getenv("CRM_TOAST_RESTAURANT"),
    token = "tls-token", transport = "ngx", insecure_skip_verify = arg("insecure") == "1",
    retry = { max_attempts = 3, base_delay = 0.01 },
  }
  if not c then return { err = errinfo(cerr) } end
  local res, err = c:get_customer("0b7d3f0e-1111-4a2b-9c3d-000000000001")
  return { guid = res and res.guid, err = errinfo(err) }
end

-- The fault suite's concurrent slice (spec/chaos.lua through spec/chaos_nginx.lua): POST
-- {gen, concurrency, settings, ops} runs the planned operations with client:batch, which here
-- means ngx.thread light threads over cosockets, and answers {outcomes, debug}: the same plain
-- outcomes spec/chaos_ops.lua gives in plain Lua, and every debug line the clients wrote. The
-- clients of one run (`gen`) live on across its windows, as a module-level client would.
local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local chaos_runs = {}
function S.chaos()
  ngx.req.read_body()
  local raw = ngx.req.get_body_data()
  if not raw then
    local path = ngx.req.get_body_file()
    local f = path and io.open(path, "rb")
    raw = f and f:read("*a")
    if f then f:close() end
  end
  local req = raw and cjson.decode(raw)
  if type(req) ~= "table" or type(req.ops) ~= "table" then return { error = "POST {gen, settings, ops}" } end
  package.loaded.chaos_ops = package.loaded.chaos_ops or dofile(HERE .. "/../chaos_ops.lua")
  local run = chaos_runs[req.gen]
  if not run then
    for k in pairs(chaos_runs) do chaos_runs[k] = nil end -- one run at a time
    local st = req.settings
    run = { lines = {} }
    local function hook(line) run.lines[#run.lines + 1] = line end
    local common = { transport = "ngx", timeout = st.timeout, retry = st.retry,
                     max_response_bytes = st.max_response_bytes, debug = hook }
    local t = { base_url = st.toast_url, restaurant_guid = st.restaurant, client_id = st.client_id,
                client_secret = st.client_secret }
    local c = { base_url = st.tablecheck_url, api_key = st.tablecheck_key }
    for k, v in pairs(common) do t[k], c[k] = v, v end
    local terr, cerr
    run.toast, terr = crm.toast(t)
    run.tc, cerr = crm.tablecheck(c)
    if not run.toast or not run.tc then return { error = tostring(terr or cerr) } end
    chaos_runs[req.gen] = run
  end
  local outcomes, err = package.loaded.chaos_ops.batch({ toast = run.toast, tc = run.tc }, req.ops,
    tonumber(req.concurrency) or 16)
  local lines = run.lines
  run.lines = {}
  if not outcomes then return { error = tostring(err) } end
  return { outcomes = outcomes, debug = lines, mode = run.toast.transport.batch_mode
    and run.toast.transport:batch_mode() or cjson.null }
end

function M.run()
  local name = ngx.var.uri:match("^/t/([%w_]+)$")
  local fn = name and S[name]
  if not fn then
    ngx.status = 404
    return ngx.say(cjson.encode { error = "no scenario " .. tostring(name) })
  end
  local ok, out = pcall(fn)
  if not ok then
    ngx.status = 500
    out = { error = tostring(out) }
  end
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(out))
end

-- In set_by_lua (no cosockets): one search with the transport asked for (nil: automatic).
function M.set_phase(transport)
  if transport == "" then transport = nil end
  local c, err = crm.toast(settings { transport = transport, retry = { max_attempts = 2, base_delay = 0.01 } })
  local res
  if c then res, err = c:search_customers { email = "setphase@example.org" } end
  local out = { phase = ngx.get_phase(), ok = res ~= nil, err = errinfo(err),
                transport = c and c.transport.current_name and c.transport.current_name() or cjson.null }
  if c then c:close() end
  return cjson.encode(out)
end

-- ---- test upstreams ----

local U = {}

local function raw_socket()
  local sock = assert(ngx.req.socket(true))
  sock:settimeout(10000)
  return sock
end

function U.echo()
  ngx.req.read_body()
  local h = ngx.req.get_headers()
  local out = cjson.encode {
    method = ngx.req.get_method(), uri = ngx.var.request_uri, host = h.host, user_agent = h["user-agent"],
    content_length = h["content-length"], x_test = h["x-test"], body = ngx.req.get_body_data() or "",
  }
  ngx.header["Content-Length"] = #out
  ngx.print(out)
end

-- Content-Length and the connection's number: a second request on the same connection says so.
function U.conn()
  local body = "conn=" .. ngx.var.connection
  ngx.header["Content-Type"] = "text/plain"
  ngx.header["Content-Length"] = #body
  ngx.print(body)
end

-- nginx's own chunked encoding (no Content-Length, flushed in pieces), kept alive.
function U.chunked_ka()
  ngx.header["Content-Type"] = "text/plain"
  ngx.print("conn=")
  ngx.flush(true)
  ngx.sleep(0.01)
  ngx.print(ngx.var.connection)
end

-- Hand-made chunked body: extensions, a size line split across packets, a trailer field.
function U.chunked()
  local sock = raw_socket()
  sock:send("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
    .. "X-Rep: one\r\nx-rep: two\r\n\r\n")
  ngx.sleep(0.02)
  sock:send("5;name=value\r\nhello\r\n")
  ngx.sleep(0.02)
  sock:send("1")
  ngx.sleep(0.02)
  sock:send("0\r\n, chunked world!\r\n")
  sock:send("0\r\nX-Trailer: t\r\n\r\n")
end

function U.bigchunked()
  local n = tonumber(ngx.var.arg_n) or 100000
  ngx.header["Content-Type"] = "text/plain"
  local piece = ("y"):rep(65536)
  while n > 0 do
    local k = math.min(n, #piece)
    ngx.print(piece:sub(1, k))
    ngx.flush(true)
    n = n - k
  end
end

function U.close()
  local sock = raw_socket()
  sock:send("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the server closes")
end

function U.http10()
  local sock = raw_socket()
  sock:send("HTTP/1.0 201 Created\r\nContent-Length: 2\r\n\r\nok")
end

function U.continue()
  local sock = raw_socket()
  sock:send("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Final: yes\r\n\r\nfinal")
end

function U.slow()
  ngx.sleep(tonumber(ngx.var.arg_d) or 2)
  ngx.header["Content-Length"] = 4
  ngx.print("late")
end

-- Headers at once, then one byte every 50 ms: no single read is slow, the whole is.
function U.drip()
  local sock = raw_socket()
  sock:send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
  for _ = 1, 100 do
    ngx.sleep(0.05)
    if not sock:send("x") then return end
  end
end

function U.drop()
  return ngx.exit(444)
end

function U.partial()
  local sock = raw_socket()
  sock:send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
end

function U.big()
  local n = tonumber(ngx.var.arg_n) or 100000
  ngx.header["Content-Length"] = n
  ngx.print(("x"):rep(n))
end

function U.bad()
  local sock = raw_socket()
  sock:send("HELLO THERE\r\n\r\n")
end

function U.badchunk()
  local sock = raw_socket()
  sock:send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
end

-- Sends the query argument r as the whole response, @CONN@ replaced by nginx's $connection
-- (six digits, so a Content-Length can count on it).
-- With n > 1 it is a hand-made keep-alive server: it reads the next GET on the same connection
-- and answers it the same way, n answers in all, then closes.
function U.send()
  local text = ngx.unescape_uri(ngx.var.arg_r or ""):gsub("@CONN@", ("%06d"):format(tonumber(ngx.var.connection)))
  local sock = raw_socket()
  sock:settimeout(2000)
  for i = 1, tonumber(ngx.var.arg_n) or 1 do
    if i > 1 then
      repeat
        local line = sock:receive("*l")
        if not line then return end
      until line == ""
    end
    if not sock:send(text) then return end
  end
end

function U.repeated()
  ngx.header["X-Rep"] = { "a", "b" }
  ngx.header["Content-Length"] = 2
  ngx.print("ok")
end

function M.upstream()
  local name = ngx.var.uri:match("^/up/([%w_%-]+)$")
  local fn = name and U[(name:gsub("%-", "_"))]
  if not fn then return ngx.exit(404) end
  return fn()
end

return M
