-- make bench, inside nginx: the handlers that bench/nginx.sh measures under callgrind. Each one
-- makes one keep-alive GET of the same Toast customer from the simulator, with the same three
-- headers, decodes the answer and prints the customer's first name.
--   /crm    crm's Toast client (transport chosen by crm: the ngx transport in content_by_lua)
--   /resty  lua-resty-http 0.17 (request_uri, keep-alive) + cjson.decode
--   /bare   a bare ngx.socket.tcp request, Content-Length framing + cjson.decode
--   /noop   prints the same name without any request: the handler's own cost
-- Settings come from the environment (bench/nginx.sh): BENCH_BASE, BENCH_TOKEN, BENCH_GUID,
-- BENCH_JIT_LOG (where jit.v writes, from the server's start; jit.v shortens file names, so the
-- trace aborts whose start or abort location is a file under lua/crm/ are also written, with
-- the full file names, to BENCH_JIT_LOG .. ".crm").
local M = {}

local cjson = require "cjson"
local ngx = ngx

local RID = "6f1d2d0e-8f65-4d7b-9b59-0f1f0c8e0a11"
local base, guid, token, url, host, port, raw_request

function M.init()
  base, guid, token = os.getenv("BENCH_BASE"), os.getenv("BENCH_GUID"), os.getenv("BENCH_TOKEN")
  url = base .. "/crm/v1/customers/" .. guid
  host, port = base:match("^http://([^:/]+):(%d+)$")
  port = tonumber(port)
  raw_request = "GET /crm/v1/customers/" .. guid .. " HTTP/1.1\r\nHost: " .. host .. ":" .. port
    .. "\r\nAuthorization: Bearer " .. token .. "\r\nToast-Restaurant-External-ID: " .. RID
    .. "\r\nAccept: application/json\r\n\r\n"
  local log = os.getenv("BENCH_JIT_LOG")
  if log and log ~= "" then
    require("jit.v").on(log)
    M.watch_aborts(log .. ".crm")
  end
end

-- Trace aborts that start or end in crm's own files, one line each: "start -- error at where".
function M.watch_aborts(path)
  local out = assert(io.open(path, "w"))
  local funcinfo, traceerr = require("jit.util").funcinfo, require("jit.vmdef").traceerr
  local start
  local function loc(func, pc)
    local fi = funcinfo(func, pc)
    return fi.source and (fi.source:sub(2) .. ":" .. tostring(fi.currentline)) or tostring(fi.ffid or "C")
  end
  jit.attach(function(what, _, func, pc, err, info)
    if what == "start" then
      start = loc(func, pc)
    elseif what == "abort" then
      local at = loc(func, pc)
      if (start .. at):find("/lua/crm/", 1, true) then
        if type(err) == "number" then
          err = traceerr[err]:format(type(info) == "function" and loc(info) or tostring(info))
        end
        out:write(start, " -- ", tostring(err), " at ", at, "\n")
        out:flush()
      end
    end
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

local client
function M.crm()
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
