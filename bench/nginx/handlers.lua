-- make bench, inside nginx: the handlers that bench/nginx.sh measures under callgrind. Each one
-- makes one keep-alive GET of the same Toast customer from the simulator, with the same three
-- headers, decodes the answer and prints the customer's first name.
--   /crm    crm's Toast client (transport chosen by crm: the ngx transport in content_by_lua)
--   /resty  lua-resty-http 0.17 (request_uri, keep-alive) + cjson.decode
--   /bare   a bare ngx.socket.tcp request, Content-Length framing + cjson.decode
--   /noop   prints the same name without any request: the handler's own cost
-- Settings come from the environment (bench/nginx.sh): BENCH_BASE, BENCH_TOKEN, BENCH_GUID,
-- BENCH_WARMUP (see M.crm), BENCH_JIT_LOG: where the trace log goes, from the server's start.
-- It is jit.v's log, line for line, except that locations name the whole file (jit.v shortens
-- them to "ngx.lua:166", which cannot tell crm's files from others), so that the bench can find
-- the aborts in lua/crm/.
-- (LuaJIT takes one trace hook: jit.v's own could not run beside this one.)
local M = {}

local cjson = require "cjson"
local ngx = ngx

local RID = "6f1d2d0e-8f65-4d7b-9b59-0f1f0c8e0a11"
local base, guid, token, url, host, port, raw_request, warmup, gc_pause

function M.init()
  base, guid, token = os.getenv("BENCH_BASE"), os.getenv("BENCH_GUID"), os.getenv("BENCH_TOKEN")
  url = base .. "/crm/v1/customers/" .. guid
  host, port = base:match("^http://([^:/]+):(%d+)$")
  port = tonumber(port)
  raw_request = "GET /crm/v1/customers/" .. guid .. " HTTP/1.1\r\nHost: " .. host .. ":" .. port
    .. "\r\nAuthorization: Bearer " .. token .. "\r\nToast-Restaurant-External-ID: " .. RID
    .. "\r\nAccept: application/json\r\n\r\n"
  warmup = tonumber(os.getenv("BENCH_WARMUP") or "")
  gc_pause = os.getenv("BENCH_GC_PAUSE") == "1"
  local log = os.getenv("BENCH_JIT_LOG")
  if log and log ~= "" then M.trace_log(log) end
end

-- jit.v's "[TRACE ...]" lines with whole file names.
function M.trace_log(path)
  local out = assert(io.open(path, "w"))
  M.trace_out = out
  local jutil, vmdef = require "jit.util", require "jit.vmdef"
  local fmt = string.format
  local function loc(func, pc)
    local fi = jutil.funcinfo(func, pc)
    if fi.source and fi.currentline then return fi.source:sub(2) .. ":" .. fi.currentline end
    if fi.loc then return fi.loc end
    if fi.ffid then return vmdef.ffnames[fi.ffid] end
    return fi.addr and fmt("C:%x", fi.addr) or "(?)"
  end
  local start, startex
  jit.attach(function(what, tr, func, pc, otr, oex)
    if what == "start" then
      start = loc(func, pc)
      startex = otr and ("(" .. otr .. "/" .. (oex == -1 and "stitch" or oex) .. ") ") or ""
      return
    end
    if what == "abort" then
      local err = otr
      if type(err) == "number" then
        err = fmt(vmdef.traceerr[err], type(oex) == "function" and loc(oex) or oex)
      end
      local at = loc(func, pc)
      out:write(fmt("[TRACE --- %s%s -- %s%s]\n", startex, start, err, at ~= start and (" at " .. at) or ""))
    elseif what == "stop" then
      local info = jutil.traceinfo(tr)
      local link, ltype = info.link, info.linktype
      if ltype == "interpreter" then
        out:write(fmt("[TRACE %3s %s%s -- fallback to interpreter]\n", tr, startex, start))
      elseif ltype == "stitch" then
        out:write(fmt("[TRACE %3s %s%s %s %s]\n", tr, startex, start, ltype, loc(func, pc)))
      elseif link == tr or link == 0 then
        out:write(fmt("[TRACE %3s %s%s %s]\n", tr, startex, start, ltype))
      elseif ltype == "root" then
        out:write(fmt("[TRACE %3s %s%s -> %d]\n", tr, startex, start, link))
      else
        out:write(fmt("[TRACE %3s %s%s -> %d %s]\n", tr, startex, start, link, ltype))
      end
    else
      out:write(fmt("[TRACE %s]\n", what))
    end
    out:flush()
  end, "trace")
end

local function answer(name)
  if name ~= "Bench" then
    ngx.status = 500
    return ngx.print("unexpected answer")
  end
  ngx.print(name)
end

function M.noop()
  answer("Bench")
end

-- The trace log marks the end of the warm-up (BENCH_WARMUP requests, the short run's length):
-- the aborts that count come after it. BENCH_GC_PAUSE=1 (bench/nginx.sh's control run, never
-- measured) stops the collector there: no finalizer of nginx's cosocket objects can then run
-- while LuaJIT records a trace, so what the log still shows are the aborts of the code itself.
local client, served = nil, 0
function M.crm()
  served = served + 1
  if served == warmup and M.trace_out then
    M.trace_out:write("[warm-up over: ", served, " requests served]\n")
    if gc_pause then
      collectgarbage("stop")
      M.trace_out:write("[collector stopped]\n")
    end
    M.trace_out:flush()
  end
  if not client then
    client = assert(require("crm").toast { base_url = base, restaurant_guid = RID,
      client_id = "sim-client", client_secret = "sim-secret" })
  end
  local c, err = client:get_customer(guid)
  if not c then
    ngx.status = 500
    return ngx.print(tostring(err))
  end
  answer(c.firstName)
end

local headers = {}
function M.resty()
  if not headers.Authorization then
    headers.Authorization = "Bearer " .. token
    headers["Toast-Restaurant-External-ID"] = RID
    headers.Accept = "application/json"
  end
  local httpc = require("resty.http").new()
  local res, err = httpc:request_uri(url, { headers = headers, keepalive_timeout = 60000,
    keepalive_pool = 64 })
  if not res or res.status ~= 200 then
    ngx.status = 500
    return ngx.print(tostring(err or res.status))
  end
  answer(cjson.decode(res.body).firstName)
end

function M.bare()
  local sock = ngx.socket.tcp()
  sock:settimeout(10000)
  local ok, err = sock:connect(host, port)
  if ok then ok, err = sock:send(raw_request) end
  local status = ok and sock:receive("*l")
  if not status or status:sub(10, 12) ~= "200" then
    ngx.status = 500
    return ngx.print(tostring(err or status))
  end
  local len
  while true do
    local line = sock:receive("*l")
    if not line or line == "" then break end
    local n = line:match("^[Cc]ontent%-[Ll]ength:%s*(%d+)")
    if n then len = tonumber(n) end
  end
  local body = sock:receive(len)
  sock:setkeepalive(60000, 64)
  answer(cjson.decode(body).firstName)
end

return M
