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
  local host_port = port == default_port and host or (host .. ":" .. port)
  local sni = match(host, "^%[(.*)%]$") or host
  -- The keepalive pools: one per origin (and, over TLS, per verification setting).
  local pool = (tls and "crm-https:" or "crm-http:") .. sni .. ":" .. port
  return {
    tls = tls, host = host, port = port, target = target, authority = host_port, sni = sni,
    host_line = "Host: " .. host_port .. "\r\n",
    pools = { [true] = pool .. (tls and ":verify" or ""), [false] = pool .. (tls and ":noverify" or "") },
  }
end

-- What parse_url says of an origin ("scheme://authority"), for the URLs seen lately: the URLs of
-- a client differ in their path and query only. Emptied when it holds ORIGIN_CACHE_MAX.
local ORIGIN_CACHE_MAX = 64
local origins, n_origins = {}, 0

-- url -> origin (parse_url's table), target | nil, err
local function locate(url)
  local sep = find(url, "://", 1, true)
  local slash = sep and find(url, "/", sep + 3, true)
  local key = slash and sub(url, 1, slash - 1)
  local o = key and origins[key]
  if o then
    local target = sub(url, slash)
    local hash = find(target, "#", 1, true)
    if hash then target = sub(target, 1, hash - 1) end
    return o, target
  end
  local u, err = parse_url(url)
  if not u then return nil, err end
  -- Cached only when the authority ends at that slash (no "?" or "#" before it).
  if key and not find(key, "?", sep, true) and not find(key, "#", sep, true) then
    if n_origins >= ORIGIN_CACHE_MAX then origins, n_origins = {}, 0 end
    origins[key], n_origins = u, n_origins + 1
  end
  return u, u.target
end

-- The caller's header lines, checked: {block (their lines as sent), own_host, own_ua} | nil, err.
-- Caller headers win over ours (Host, User-Agent); "Name:" with nothing after it removes a
-- header, as with curl.
local function check_headers(headers)
  local own_host, own_ua = false, false
  local extra = {}
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
  return { block = concat(extra), own_host = own_host, own_ua = own_ua }
end

-- Checked header lists by their text (lines joined by LF, which no valid line contains): a
-- client sends the same few lists again and again, and the check (a loop of pattern matches)
-- then runs once per list, not per request. Emptied when it reaches HEADER_CACHE_MAX lists.
local HEADER_CACHE_MAX = 64
local checked, n_checked = {}, 0
local NO_HEADERS = { block = "", own_host = false, own_ua = false }

local function headers_of(headers)
  if headers == nil then return NO_HEADERS end
  if type(headers) ~= "table" then
    return fail("validation", "bad_header", "headers must be an array of \"Name: value\" strings", false)
  end
  -- concat refuses tables and booleans; numbers pass, but no number is a valid line.
  local joined, key = pcall(concat, headers, "\n")
  local c = joined and checked[key]
  if c then return c end
  local err
  c, err = check_headers(headers)
  if not c then return nil, err end
  if joined then
    if n_checked >= HEADER_CACHE_MAX then checked, n_checked = {}, 0 end
    checked[key], n_checked = c, n_checked + 1
  end
  return c
end

-- The request bytes (an array for sock:send), or nil, err when a header is unusable.
local function build(self, method, u, target, headers, body)
  local c, err = headers_of(headers)
  if not c then return nil, err end
  local head = method .. " " .. target .. " HTTP/1.1\r\n"
    .. (c.own_host and "" or u.host_line) .. (c.own_ua and "" or ("User-Agent: " .. self.user_agent
    .. "\r\n")) .. c.block
  if body then
    return { head, "Content-Length: " .. #body .. "\r\n\r\n", body }
  end
  if method == "POST" or method == "PUT" or method == "PATCH" then
    return { head, "Content-Length: 0\r\n\r\n" }
  end
  return { head, "\r\n" }
end

-- ---- reading with one deadline for the whole response ----
-- Every read waits at most until the deadline and returns as soon as any bytes arrive
-- (receiveany), so a server that drips a byte at a time still runs into the deadline.

local function fill(r)
  if not r.sock then return nil, "incomplete" end -- M._read_head: the text is all there is
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

-- One header line (without its line end) into `headers`: lower-cased names, repeats joined by
-- ", ", obsolete line folding appended to the previous value (`r.last` names it).
local function header_line(r, headers, line)
  local first = sub(line, 1, 1)
  if (first == " " or first == "\t") and r.last then
    -- obsolete line folding: part of the previous value
    headers[r.last] = headers[r.last] .. " " .. match(line, "^%s*(.-)%s*$")
    return
  end
  local name, value = match(line, "^([^:]+):%s*(.-)%s*$")
  if name and not find(name, "%s") then
    name = lower(name)
    local prev = headers[name]
    headers[name] = prev and (prev .. ", " .. value) or value
    r.last = name
  end
end

-- Reads one header block into `headers`, a line at a time.
local function read_headers(r, headers, limit)
  local size = 0
  r.last = nil
  while true do
    local line, err = read_line(r)
    if not line then return nil, err end
    size = size + #line + 2
    if size > limit then return nil, "too large" end
    if line == "" then return true end
    header_line(r, headers, line)
  end
end

local function has_token(list, token)
  if not list then return false end
  for item in list:gmatch("[^,]+") do
    if lower(match(item, "^%s*(.-)%s*$")) == token then return true end
  end
  return false
end

-- The status line -> minor version, status | nil, "bad", detail
local function status_line(line)
  local v2, code, reason = match(line, "^HTTP/1%.(%d) (%d%d%d)(.*)$")
  if not v2 or (reason ~= "" and sub(reason, 1, 1) ~= " ") then
    return nil, "bad", "status line is not HTTP/1.x"
  end
  return tonumber(v2), tonumber(code)
end

-- The head of the usual answer, parsed in C (src/http1.c) from the buffer as the first read left
-- it: a whole head of CRLF lines and a final status. Anything else (1xx answers, bare LFs, folded
-- lines, a head still coming) is declined and read_head reads it, line by line; for every head
-- the C parser takes, both give the same (spec/transport_ngx_head_spec.lua). One call and no
-- loop or pattern here, so that LuaJIT compiles the whole request.
local http_head = platform.core.http_head
local url_unsafe = platform.core.url_unsafe

-- -> minor, status, headers | nil. r.length: Content-Length when one line gives it as digits.
local function quick_head(r, limit)
  local minor, status, headers, body, length = http_head(r.buf, limit)
  if not minor then return nil end
  r.pos, r.length = body, length
  return minor, status, headers
end

-- Status line and headers, the long way: any line ends, 1xx answers (100 Continue, 103 Early
-- Hints) before the real one. -> minor, status, headers | nil, err, detail
local function read_head(r, limit)
  local minor, status, headers
  repeat
    local line, err = read_line(r)
    if not line then return nil, err end
    local detail
    minor, status, detail = status_line(line)
    if not minor then return nil, status, detail end
    headers = {}
    local ok, herr = read_headers(r, headers, limit)
    if not ok then return nil, herr end
  until status >= 200 or status == 101
  return minor, status, headers
end

-- For specs (spec/transport_ngx_head_spec.lua): the line-by-line reader over a whole text, no
-- socket. -> minor, status, headers, body position | nil, err ("incomplete": it needs more bytes)
function M._read_head(text, limit)
  local r = { buf = text, pos = 1, got = #text }
  local minor, status, headers = read_head(r, limit)
  if not minor then return nil, status end
  return minor, status, headers, r.pos
end

-- Whether a connection header's list says `token` (the usual one-word values without a loop).
local function says(list, token)
  if list == nil then return false end
  local l = lower(list)
  if l == token then return true end
  if l == "close" or l == "keep-alive" then return false end
  return has_token(list, token)
end

-- Reads status, headers and body. Returns status, headers, body, reusable | nil, err-string,
-- err-detail (for bad responses).
local function read_response(r, method, limit)
  local minor, status, headers
  local ok, err = fill(r)
  if not ok then return nil, err end
  minor, status, headers = quick_head(r, limit)
  if not minor then
    minor, status, headers = read_head(r, limit)
    if not minor then return nil, status, headers end
  end

  local te = headers["transfer-encoding"]
  local reusable
  if minor >= 1 then
    reusable = not says(headers.connection, "close")
  else
    reusable = says(headers.connection, "keep-alive")
  end
  -- A switched protocol is no longer HTTP; Transfer-Encoding in HTTP/1.0 or next to a
  -- Content-Length is faulty framing (RFC 9112, 6.1 and 6.3): read the answer, then close.
  if status == 101 or (te and (minor == 0 or headers["content-length"])) then reusable = false end

  r.in_body = true
  if method == "HEAD" or status < 200 or status == 204 or status == 304 then
    return status, headers, "", reusable
  end
  local parts = {}
  if te then
    local last_coding = lower(match(te, "([^,]*)$"))
    if match(last_coding, "^%s*(.-)%s*$") ~= "chunked" then
      -- Some other coding last: the body runs until the server closes.
      local rok, rerr = read_all(r, parts, limit)
      if not rok then return nil, rerr end
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
      local rok, rerr = read_n(r, size, parts)
      if not rok then return nil, rerr end
      local crlf
      crlf, rerr = read_line(r)
      if not crlf then return nil, rerr end
      if crlf ~= "" then return nil, "bad", "chunk is longer than its size" end
    end
    -- Trailer fields are read and dropped.
    local trailers = {}
    local tok, terr = read_headers(r, trailers, limit)
    if not tok then return nil, terr end
    return status, headers, concat(parts), reusable
  end
  local cl = headers["content-length"]
  if cl then
    local n = r.length
    if not n then
      for v in cl:gmatch("[^,]+") do
        local this = tonumber(match(v, "^%s*(%d+)%s*$"))
        if not this or (n and this ~= n) then return nil, "bad", "bad Content-Length" end
        n = this
      end
      if not n then return nil, "bad", "bad Content-Length" end
    end
    if n > limit then return nil, "too large" end
    local pos = r.pos
    if #r.buf - pos + 1 >= n then
      -- The whole body is in the buffer (the usual case): no read loop.
      r.pos = pos + n
      return status, headers, sub(r.buf, pos, pos + n - 1), reusable
    end
    local rok, rerr = read_n(r, n, parts)
    if not rok then return nil, rerr end
    return status, headers, concat(parts), reusable
  end
  local rok, rerr = read_all(r, parts, limit)
  if not rok then return nil, rerr end
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

-- What exchange() answers when a pooled connection turned out dead before any answer.
local STALE = {}

-- One exchange on one connection: status, headers, body | nil, err | STALE (the server had
-- closed the pooled connection while idle, and `may_retry`: try another, as libcurl does).
-- Only requests that may run twice see STALE; fresh ones never get a pooled connection.
local function exchange(self, u, req, method, deadline, pool, fresh, may_retry)
  local sock = ngx.socket.tcp()
  local left = deadline - now()
  if left <= 0 then return fail("timeout", "connect_timeout", "timed out before connecting", false) end
  sock:settimeout(ceil(min(self.connect_timeout, left) * 1000))
  local ok, err = sock:connect(u.host, u.port, { pool = pool, pool_size = self.pool_size })
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
  local r = { sock = sock, buf = "", pos = 1, got = 0, deadline = deadline, in_body = false,
              last = nil, length = nil }
  local status, rheaders, rbody, reusable, detail
  if sent_ok then
    status, rheaders, rbody, reusable = read_response(r, method, self.max_response)
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
  if reused and r.got == 0 and stale(err) and may_retry then return STALE end
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

-- After a stale pooled connection: up to STALE_RETRIES more connections (a loop kept out of
-- the usual request's way, which has none).
local function after_stale(self, u, req, method, deadline, pool, fresh)
  for left = STALE_RETRIES - 1, 0, -1 do
    local status, headers, body = exchange(self, u, req, method, deadline, pool, fresh, left > 0)
    if status ~= STALE then return status, headers, body end
  end
end

-- The methods every client sends, known valid without a pattern match.
local KNOWN_METHOD = { GET = true, POST = true, PUT = true, PATCH = true, DELETE = true,
                       HEAD = true, OPTIONS = true }

function Transport:request(method, url, headers, body, timeout, fresh)
  if self.closed then return fail("transport", "closed", "the client is closed", false) end
  local can, phase = yieldable()
  if not can then
    return fail("transport", "no_cosockets", "the ngx transport cannot run in nginx's "
      .. tostring(phase) .. " phase: nginx allows cosockets only in rewrite, access, content,"
      .. " timer and ssl_* contexts (use transport = \"curl\" there)", false)
  end
  if not KNOWN_METHOD[method] and (type(method) ~= "string" or #method == 0 or #method > 16
                                   or not find(method, METHOD)) then
    return fail("validation", "bad_method", "method is not a valid HTTP method", false)
  end
  if type(url) ~= "string" or url_unsafe(url) then
    return fail("validation", "bad_url", "url contains a control character or space", false)
  end
  if body ~= nil and type(body) ~= "string" then
    return fail("validation", "bad_body", "body must be a string or nil", false)
  end
  local u, target = locate(url)
  if not u then return nil, target end
  local req, berr = build(self, method, u, target, headers, body)
  if not req then return nil, berr end

  local total = (type(timeout) == "number" and timeout > 0) and timeout or self.timeout
  local deadline = now() + total
  local pool = u.pools[self.verify]
  -- Nothing is ever put back into the ":fresh" pool, so a connection from it is always new.
  if fresh then pool = pool .. ":fresh" end

  local status, rheaders, rbody = exchange(self, u, req, method, deadline, pool, fresh, true)
  if status ~= STALE then return status, rheaders, rbody end
  return after_stale(self, u, req, method, deadline, pool, fresh)
end

return M
