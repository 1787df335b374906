-- The ngx transport: a small HTTP/1.1 client over nginx cosockets (ngx.socket.tcp), so crm
-- waits for the network without blocking the nginx worker. Same interface and error shape as
-- the C core's handle:
--
--   t:request(method, url, headers, body [, timeout [, fresh]]) -> status, headers, body
--                                                     | nil, {kind, name, code, message, sent}
--
-- One socket per request (a cosocket belongs to the request that made it); connections are
-- reused through nginx's keepalive pool, except for `fresh` requests (those that must not run
-- twice), which get a new connection, closed afterwards. A pooled connection that the server
-- had closed before anything was read is replaced by another one, as libcurl does; a fresh
-- request is never re-sent. No redirects are followed. TLS verification is on
-- unless insecure_skip_verify: nginx checks the chain against lua_ssl_trusted_certificate
-- (to lua_ssl_verify_depth) and the certificate's name against the URL's host.
local platform = require "crm.platform"

local M = {}

local ngx = platform.ngx
local yieldable = platform.yieldable
local now = platform.ngx_now
local type, tonumber, tostring, setmetatable = type, tonumber, tostring, setmetatable
local concat, ceil, min = table.concat, math.ceil, math.min
local find, sub, lower, match, gsub = string.find, string.sub, string.lower, string.match, string.gsub

local DEFAULT_MAX_RESPONSE = 16 * 1024 * 1024
local READ_SIZE = 65536
local LINE_MAX = 65536        -- a status, header or chunk-size line longer than this is refused
local KEEPALIVE_IDLE_MS = 60000
local POOL_SIZE = 64
local STALE_RETRIES = 3       -- fresh connections tried after a pooled one turned out dead

local function fail(kind, name, message, sent)
  return nil, { kind = kind, name = name, code = 0, message = message, sent = sent }
end

local Transport = {}
Transport.__index = Transport

-- new{timeout, connect_timeout, insecure_skip_verify, user_agent, max_response_bytes} -> transport
function M.new(opts)
  opts = opts or {}
  return setmetatable({
    name = "ngx",
    timeout = opts.timeout or 30,
    connect_timeout = opts.connect_timeout or 10,
    verify = not opts.insecure_skip_verify,
    user_agent = opts.user_agent or ("crm/" .. platform.version),
    max_response = opts.max_response_bytes or DEFAULT_MAX_RESPONSE,
    keepalive_ms = opts.keepalive_ms or KEEPALIVE_IDLE_MS,
    pool_size = opts.pool_size or POOL_SIZE,
  }, Transport)
end

function Transport:close()
  self.closed = true
  return true
end

-- ---- the request ----

local METHOD = "^[!#$%%&'*+%-.^_`|~%w]+$"

-- url -> {tls, host (as written, IPv6 in brackets), port, authority (for Host), target} | nil, err
local function parse_url(url)
  local scheme, rest = match(url, "^(%a[%w+.%-]*)://(.*)$")
  if not scheme then return fail("validation", "bad_url", "url is not an absolute http(s) URL", false) end
  scheme = lower(scheme)
  if scheme ~= "http" and scheme ~= "https" then
    return fail("transport", "unsupported_protocol", "only http:// and https:// URLs are supported", false)
  end
  local authority, target = match(rest, "^([^/?#]*)(.*)$")
  if find(authority, "@", 1, true) then
    return fail("validation", "bad_url", "credentials in the URL are not supported", false)
  end
  local host, port
  if sub(authority, 1, 1) == "[" then
    host, port = match(authority, "^(%[[%x:.]+%])(.*)$")
  else
    host, port = match(authority, "^([^:]+)(.*)$")
  end
  if not host then return fail("validation", "bad_url", "url has no host", false) end
  local tls = scheme == "https"
  if port == "" then
    port = tls and 443 or 80
  else
    port = tonumber(match(port, "^:(%d+)$"))
    if not port or port < 1 or port > 65535 then
      return fail("validation", "bad_url", "url has a bad port", false)
    end
  end
  target = gsub(target, "#.*$", "")
  if target == "" or sub(target, 1, 1) == "?" then target = "/" .. target end
  local default_port = tls and 443 or 80
  return {
    tls = tls, host = host, port = port, target = target,
    authority = port == default_port and host or (host .. ":" .. port),
    sni = match(host, "^%[(.*)%]$") or host,
  }
end

-- The request bytes, or nil, err when a header is unusable. Caller headers win over ours
-- (Host, User-Agent); "Name:" with nothing after it removes a header, as with curl.
local function build(self, method, u, headers, body)
  local out = { method, " ", u.target, " HTTP/1.1\r\n" }
  local own_host, own_ua = false, false
  local extra = {}
  if headers ~= nil then
    if type(headers) ~= "table" then
      return fail("validation", "bad_header", "headers must be an array of \"Name: value\" strings", false)
    end
    for i = 1, #headers do
      local h = headers[i]
      if type(h) ~= "string" or find(h, "[\r\n%z]") then
        return fail("validation", "bad_header", "header contains CR, LF or NUL, or is not a string", false)
      end
      local name, value = match(h, "^([^:%s]+):%s*(.-)%s*$")
      if not name then
        return fail("validation", "bad_header", "header is not \"Name: value\"", false)
      end
      local lname = lower(name)
      if lname == "host" then own_host = true end
      if lname == "user-agent" then own_ua = true end
      if value ~= "" and lname ~= "content-length" and lname ~= "transfer-encoding" then
        extra[#extra + 1] = name .. ": " .. value .. "\r\n"
      end
    end
  end
  if not own_host then out[#out + 1] = "Host: " .. u.authority .. "\r\n" end
  if not own_ua then out[#out + 1] = "User-Agent: " .. self.user_agent .. "\r\n" end
  for i = 1, #extra do out[#out + 1] = extra[i] end
  if body then
    out[#out + 1] = "Content-Length: " .. #body .. "\r\n\r\n"
    out[#out + 1] = body
  else
    if method == "POST" or method == "PUT" or method == "PATCH" then
      out[#out + 1] = "Content-Length: 0\r\n"
    end
    out[#out + 1] = "\r\n"
  end
  return out
end

-- ---- reading with one deadline for the whole response ----
-- Every read waits at most until the deadline and returns as soon as any bytes arrive
-- (receiveany), so a server that drips a byte at a time still runs into the deadline.

local function fill(r)
  local left = r.deadline - now()
  if left <= 0 then return nil, "timeout" end
  r.sock:settimeout(ceil(left * 1000))
  local data, err = r.sock:receiveany(READ_SIZE)
  if not data then return nil, err end
  r.got = r.got + #data
  if r.pos > #r.buf then
    r.buf, r.pos = data, 1
  else
    r.buf, r.pos = sub(r.buf, r.pos) .. data, 1
  end
  return true
end

-- One line without its CRLF (a bare LF also ends it).
local function read_line(r)
  while true do
    local lf = find(r.buf, "\n", r.pos, true)
    if lf then
      local line = sub(r.buf, r.pos, lf - 1)
      r.pos = lf + 1
      if sub(line, -1) == "\r" then line = sub(line, 1, -2) end
      return line
    end
    if #r.buf - r.pos + 1 > LINE_MAX then return nil, "line too long" end
    local ok, err = fill(r)
    if not ok then return nil, err end
  end
end

-- Exactly n bytes, appended to the array `parts`.
local function read_n(r, n, parts)
  while n > 0 do
    local have = #r.buf - r.pos + 1
    if have > 0 then
      local take = min(have, n)
      parts[#parts + 1] = sub(r.buf, r.pos, r.pos + take - 1)
      r.pos = r.pos + take
      n = n - take
    end
    if n > 0 then
      local ok, err = fill(r)
      if not ok then return nil, err end
    end
  end
  return true
end

-- Everything until the server closes, at most `limit` bytes.
local function read_all(r, parts, limit)
  local total = 0
  while true do
    local have = #r.buf - r.pos + 1
    if have > 0 then
      total = total + have
      if total > limit then return nil, "too large" end
      parts[#parts + 1] = sub(r.buf, r.pos)
      r.pos = #r.buf + 1
    end
    local ok, err = fill(r)
    if not ok then
      if err == "closed" then return true end
      return nil, err
    end
  end
end

-- ---- the response ----

-- A read or send failure -> the crm error shape.
local function io_error(err, what, sent)
  if err == "timeout" then
    return fail("timeout", "timeout", "timed out " .. what, sent)
  end
  if err == "too large" then
    return fail("transport", "response_too_large", "response exceeds max_response_bytes", sent)
  end
  if err == "line too long" then
    return fail("transport", "bad_response", "response line longer than " .. LINE_MAX .. " bytes", sent)
  end
  if err == "closed" then
    return fail("transport", "recv_failed", "the server closed the connection " .. what, sent)
  end
  return fail("transport", "recv_failed", what .. ": " .. tostring(err), sent)
end

-- Reads one header block into `headers` (lower-cased names, repeats joined by ", ").
local function read_headers(r, headers, limit)
  local size, last = 0, nil
  while true do
    local line, err = read_line(r)
    if not line then return nil, err end
    size = size + #line + 2
    if size > limit then return nil, "too large" end
    if line == "" then return true end
    local first = sub(line, 1, 1)
    if (first == " " or first == "\t") and last then
      -- obsolete line folding: part of the previous value
      headers[last] = headers[last] .. " " .. match(line, "^%s*(.-)%s*$")
    else
      local name, value = match(line, "^([^:]+):%s*(.-)%s*$")
      if name and not find(name, "%s") then
        name = lower(name)
        local prev = headers[name]
        headers[name] = prev and (prev .. ", " .. value) or value
        last = name
      end
    end
  end
end

local function has_token(list, token)
  if not list then return false end
  for item in list:gmatch("[^,]+") do
    if lower(match(item, "^%s*(.-)%s*$")) == token then return true end
  end
  return false
end

-- Reads status, headers and body. Returns status, headers, body, reusable | nil, err-string,
-- err-detail (for bad responses).
local function read_response(r, method, limit)
  local line, err, status, minor
  local headers
  repeat
    line, err = read_line(r)
    if not line then return nil, err end
    local v2, code, reason = match(line, "^HTTP/1%.(%d) (%d%d%d)(.*)$")
    if not v2 or (reason ~= "" and sub(reason, 1, 1) ~= " ") then
      return nil, "bad", "status line is not HTTP/1.x"
    end
    minor, status = tonumber(v2), tonumber(code)
    headers = {}
    local ok, herr = read_headers(r, headers, limit)
    if not ok then return nil, herr end
    -- 1xx answers (100 Continue, 103 Early Hints) come before the real one.
  until status >= 200 or status == 101

  local te = headers["transfer-encoding"]
  local reusable
  if minor >= 1 then
    reusable = not has_token(headers.connection, "close")
  else
    reusable = has_token(headers.connection, "keep-alive")
  end
  -- A switched protocol is no longer HTTP; Transfer-Encoding in HTTP/1.0 or next to a
  -- Content-Length is faulty framing (RFC 9112, 6.1 and 6.3): read the answer, then close.
  if status == 101 or (te and (minor == 0 or headers["content-length"])) then reusable = false end

  r.in_body = true
  local parts = {}
  if method == "HEAD" or status < 200 or status == 204 or status == 304 then
    return status, headers, "", reusable
  end
  if te then
    local last_coding = lower(match(te, "([^,]*)$"))
    if match(last_coding, "^%s*(.-)%s*$") ~= "chunked" then
      -- Some other coding last: the body runs until the server closes.
      local ok, rerr = read_all(r, parts, limit)
      if not ok then return nil, rerr end
      return status, headers, concat(parts), false
    end
    local total = 0
    while true do
      local size_line, lerr = read_line(r)
      if not size_line then return nil, lerr end
      local hex, ext = match(size_line, "^%s*(%x+)%s*(.*)$")
      if not hex or #hex > 15 or (ext ~= "" and sub(ext, 1, 1) ~= ";") then
        return nil, "bad", "bad chunk size line"
      end
      local size = tonumber(hex, 16)
      if size == 0 then break end
      total = total + size
      if total > limit then return nil, "too large" end
      local ok, rerr = read_n(r, size, parts)
      if not ok then return nil, rerr end
      local crlf
      crlf, rerr = read_line(r)
      if not crlf then return nil, rerr end
      if crlf ~= "" then return nil, "bad", "chunk is longer than its size" end
    end
    -- Trailer fields are read and dropped.
    local trailers = {}
    local ok, terr = read_headers(r, trailers, limit)
    if not ok then return nil, terr end
    return status, headers, concat(parts), reusable
  end
  local cl = headers["content-length"]
  if cl then
    local n
    for v in cl:gmatch("[^,]+") do
      local this = tonumber(match(v, "^%s*(%d+)%s*$"))
      if not this or (n and this ~= n) then return nil, "bad", "bad Content-Length" end
      n = this
    end
    if not n then return nil, "bad", "bad Content-Length" end
    if n > limit then return nil, "too large" end
    local ok, rerr = read_n(r, n, parts)
    if not ok then return nil, rerr end
    return status, headers, concat(parts), reusable
  end
  local ok, rerr = read_all(r, parts, limit)
  if not ok then return nil, rerr end
  return status, headers, concat(parts), false
end

local function connect_error(u, err)
  err = tostring(err)
  if err == "timeout" then
    return fail("timeout", "connect_timeout", "timed out connecting to " .. u.authority, false)
  end
  if find(err, "no resolver defined", 1, true) then
    return fail("transport", "no_resolver", "cannot resolve " .. u.sni .. ": nginx has no"
      .. " `resolver` directive (needed for host names)", false)
  end
  if find(err, "resolve", 1, true) then
    return fail("transport", "resolve_failed", "could not resolve " .. u.sni .. ": " .. err, false)
  end
  return fail("transport", "connect_failed", "could not connect to " .. u.authority .. ": " .. err, false)
end

local function tls_error(u, err)
  err = tostring(err)
  if err == "timeout" then
    return fail("timeout", "connect_timeout", "timed out in the TLS handshake with " .. u.authority, false)
  end
  -- nginx reports a failed verification as "<n>: <reason>" or mentions the certificate.
  if find(err, "^%d+: ") or find(err, "certificate", 1, true) or find(err, "verify", 1, true) then
    return fail("transport", "tls_verify_failed", "TLS certificate of " .. u.authority
      .. " not trusted: " .. err .. " (nginx trusts lua_ssl_trusted_certificate)", false)
  end
  return fail("transport", "tls_failed", "TLS handshake with " .. u.authority .. " failed: " .. err, false)
end

-- Errors that mean a pooled connection had been closed by the server before we used it.
local function stale(err)
  return err == "closed" or err == "broken pipe" or err == "connection reset by peer"
end

function Transport:request(method, url, headers, body, timeout, fresh)
  if self.closed then return fail("transport", "closed", "the client is closed", false) end
  local can, phase = yieldable()
  if not can then
    return fail("transport", "no_cosockets", "the ngx transport cannot run in nginx's "
      .. tostring(phase) .. " phase: nginx allows cosockets only in rewrite, access, content,"
      .. " timer and ssl_* contexts (use transport = \"curl\" there)", false)
  end
  if type(method) ~= "string" or #method == 0 or #method > 16 or not find(method, METHOD) then
    return fail("validation", "bad_method", "method is not a valid HTTP method", false)
  end
  if type(url) ~= "string" or find(url, "[%c ]") then
    return fail("validation", "bad_url", "url contains a control character or space", false)
  end
  if body ~= nil and type(body) ~= "string" then
    return fail("validation", "bad_body", "body must be a string or nil", false)
  end
  local u, uerr = parse_url(url)
  if not u then return nil, uerr end
  local req, berr = build(self, method, u, headers, body)
  if not req then return nil, berr end

  local total = (type(timeout) == "number" and timeout > 0) and timeout or self.timeout
  local deadline = now() + total
  local pool = (u.tls and "crm-https:" or "crm-http:") .. u.sni .. ":" .. u.port
    .. (u.tls and (self.verify and ":verify" or ":noverify") or "")
  -- Nothing is ever put back into the ":fresh" pool, so a connection from it is always new.
  if fresh then pool = pool .. ":fresh" end
  local limit = self.max_response

  local stale_left = STALE_RETRIES
  while true do
    local sock = ngx.socket.tcp()
    local left = deadline - now()
    if left <= 0 then return fail("timeout", "connect_timeout", "timed out before connecting", false) end
    sock:settimeout(ceil(min(self.connect_timeout, left) * 1000))
    local ok, err = sock:connect(u.host, u.port,
      { pool = pool, pool_size = self.pool_size })
    if not ok then return connect_error(u, err) end
    local reused = (sock:getreusedtimes() or 0) > 0

    if u.tls and not reused then
      left = deadline - now()
      if left <= 0 then
        sock:close()
        return fail("timeout", "connect_timeout", "timed out before the TLS handshake", false)
      end
      sock:settimeout(ceil(min(self.connect_timeout, left) * 1000))
      local session
      session, err = sock:sslhandshake(nil, u.sni, self.verify)
      if not session then
        sock:close()
        return tls_error(u, err)
      end
    end

    left = deadline - now()
    local sent_ok
    if left <= 0 then
      sent_ok, err = nil, "timeout"
    else
      sock:settimeout(ceil(left * 1000))
      sent_ok, err = sock:send(req)
    end
    local r = { sock = sock, buf = "", pos = 1, got = 0, deadline = deadline }
    local status, rheaders, rbody, reusable, detail
    if sent_ok then
      status, rheaders, rbody, reusable = read_response(r, method, limit)
      if not status then err, detail = rheaders, rbody end
    end

    if status then
      -- Back to the pool only when the answer was read exactly to its end and the server
      -- keeps the connection open; nginx refuses (and we close) a socket with unread data.
      if not (reusable and not fresh and r.pos > #r.buf
              and sock:setkeepalive(self.keepalive_ms, self.pool_size)) then
        sock:close()
      end
      return status, rheaders, rbody
    end
    sock:close()
    -- A pooled connection that died before any answer (the server had closed it while idle):
    -- try another, as libcurl does. Only requests that may run twice come here; fresh ones
    -- never get a pooled connection.
    if reused and r.got == 0 and stale(err) and stale_left > 0 then
      stale_left = stale_left - 1
    else
      if not sent_ok then
        if err == "timeout" then return fail("timeout", "timeout", "timed out sending the request", true) end
        return fail("transport", "send_failed", "sending the request failed: " .. tostring(err), true)
      end
      if err == "bad" then
        return fail("transport", "bad_response", "bad response from " .. u.authority .. ": " .. detail, true)
      end
      if err == "closed" and r.in_body then
        return fail("transport", "partial_body", "the connection closed before the whole body arrived", true)
      end
      if err == "closed" and r.got == 0 then
        return fail("transport", "empty_reply", "the server closed the connection without answering", true)
      end
      return io_error(err, "reading the response", true)
    end
  end
end

return M
