-- Shared helpers for the simulator: JSON in/out, shared-dict state, counters,
-- append-only lists, ids, time formatting/parsing, and the config store.
--
-- State lives in `lua_shared_dict`s only (never in module upvalues), so every
-- worker sees the same simulator.
--   sim        all API state, config, faults, connection markers
--   sim_stats  request counters only (so /__sim/stats can list its keys cheaply)

local cjson = require("cjson.safe")

local M = {}

M.null = cjson.null

local function dict(name)
  local d = ngx.shared[name]
  if not d then
    error("lua_shared_dict '" .. name .. "' is not configured", 2)
  end
  return d
end

function M.state() return dict("sim") end
function M.stats_dict() return dict("sim_stats") end

-- Loads a module if its file exists (an API module may not be written yet).
function M.optional_require(name)
  if package.searchpath(name, package.path) then return require(name) end
  return nil
end

---------------------------------------------------------------------------
-- JSON
---------------------------------------------------------------------------

-- lua-cjson 2.1.0 (Debian) has no empty_array/array_mt, so arrays are marked
-- with our own metatable and empty ones are patched to "[]" after encoding.
local ARRAY_MT = { __name = "sim.array" }
local EMPTY_ARRAY_MARK = "\0sim-empty-array\0"
local EMPTY_ARRAY_JSON = '"\\u0000sim%-empty%-array\\u0000"'

-- Marks t (or a new table) as a JSON array, so it encodes as [] when empty.
function M.array(t)
  return setmetatable(t or {}, ARRAY_MT)
end

local function prepare(v)
  if type(v) ~= "table" then return v end
  if getmetatable(v) == ARRAY_MT and next(v) == nil then
    return EMPTY_ARRAY_MARK
  end
  local out = {}
  for k, x in pairs(v) do out[k] = prepare(x) end
  return out
end

function M.encode(v)
  local s, err = cjson.encode(prepare(v))
  if not s then error("json encode failed: " .. tostring(err), 2) end
  s = s:gsub(EMPTY_ARRAY_JSON, "[]")
  -- cjson escapes every "/" as "\/"; the backslash right before a "/" is
  -- always that escape (an escaped backslash is "\\"), so undoing it is safe
  return (s:gsub("\\/", "/"))
end

-- Returns value or nil, err. JSON null decodes to M.null.
function M.decode(s)
  if type(s) ~= "string" then return nil, "not a string" end
  return cjson.decode(s)
end

function M.is_object(v)
  if type(v) ~= "table" then return false end
  -- an empty JSON object and an empty array both decode to {}; accept it
  return v[1] == nil
end

-- Absent, JSON null and "" all count as "not given".
function M.given(v)
  return v ~= nil and v ~= M.null and v ~= ""
end

---------------------------------------------------------------------------
-- Request body
---------------------------------------------------------------------------

-- Returns the raw request body ("" when there is none), or nil, err.
-- Handles bodies that nginx spilled to a temp file.
function M.read_body()
  ngx.req.read_body()
  local data = ngx.req.get_body_data()
  if data then return data end
  local path = ngx.req.get_body_file()
  if not path then return "" end
  local f, err = io.open(path, "rb")
  if not f then return nil, "cannot open spilled body: " .. tostring(err) end
  data = f:read("*a")
  f:close()
  return data or ""
end

-- Returns the decoded JSON body, or nil, message (empty body is an error).
function M.read_json()
  local raw, err = M.read_body()
  if not raw then return nil, err end
  if raw:match("^%s*$") then return nil, "request body is empty" end
  local v, derr = M.decode(raw)
  if v == nil then return nil, "request body is not valid JSON (" .. tostring(derr) .. ")" end
  return v
end

---------------------------------------------------------------------------
-- Responses
---------------------------------------------------------------------------

local function set_headers(headers)
  if headers then
    for k, v in pairs(headers) do ngx.header[k] = v end
  end
end

-- Sends raw bytes with a status; content_type nil means no Content-Type.
function M.send_raw(status, body, content_type, headers)
  body = body or ""
  if ngx.ctx.after_fault and require("sim.faults").spoil(status, body, content_type, headers) then
    return
  end
  ngx.status = status
  if content_type then ngx.header["Content-Type"] = content_type end
  set_headers(headers)
  ngx.header["Content-Length"] = #body
  if #body > 0 and ngx.req.get_method() ~= "HEAD" then
    ngx.print(body)
  else
    ngx.send_headers()
  end
  return ngx.eof()
end

function M.send_json(status, value, headers)
  return M.send_raw(status, M.encode(value), "application/json", headers)
end

-- Status with no body at all (202 without body, 204).
function M.send_empty(status, headers)
  if ngx.ctx.after_fault and require("sim.faults").spoil(status, "", nil, headers) then
    return
  end
  ngx.status = status
  set_headers(headers)
  if status ~= 204 and status ~= 304 then
    ngx.header["Content-Length"] = 0
  end
  ngx.send_headers()
  return ngx.eof()
end

---------------------------------------------------------------------------
-- Ids and randomness
---------------------------------------------------------------------------

function M.seed()
  math.randomseed(math.floor(ngx.now() * 1000) + ngx.worker.pid() * 7919)
end

local function random_bytes(n)
  local f = io.open("/dev/urandom", "rb")
  if f then
    local b = f:read(n)
    f:close()
    if b and #b == n then return b end
  end
  local t = {}
  for i = 1, n do t[i] = string.char(math.random(0, 255)) end
  return table.concat(t)
end

function M.random_hex(nbytes)
  return (random_bytes(nbytes):gsub(".", function(c)
    return string.format("%02x", c:byte())
  end))
end

-- A random version-4 UUID, lower case.
function M.uuid()
  local h = M.random_hex(16)
  local v = tonumber(h:sub(17, 17), 16) % 4 + 1
  local variant = ("89ab"):sub(v, v)
  return h:sub(1, 8) .. "-" .. h:sub(9, 12) .. "-4" .. h:sub(14, 16) .. "-"
    .. variant .. h:sub(18, 20) .. "-" .. h:sub(21, 32)
end

local HEX = "%x"
local UUID_PATTERN = "^" .. HEX:rep(8) .. "%-" .. HEX:rep(4) .. "%-" .. HEX:rep(4)
  .. "%-" .. HEX:rep(4) .. "%-" .. HEX:rep(12) .. "$"

-- True when s is an 8-4-4-4-12 hex UUID (any case).
function M.is_uuid(s)
  return type(s) == "string" and s:find(UUID_PATTERN) ~= nil
end

---------------------------------------------------------------------------
-- Counters and lists in shared dicts
---------------------------------------------------------------------------

-- Atomic increment starting from 0; returns the new value.
function M.incr(d, key, by)
  local v, err = d:incr(key, by or 1, 0)
  if not v then error("shared dict incr " .. key .. ": " .. tostring(err), 2) end
  return v
end

function M.set(d, key, value, exptime)
  local ok, err = d:set(key, value, exptime or 0)
  if not ok then error("shared dict set " .. key .. ": " .. tostring(err), 2) end
end

function M.get_json(d, key)
  local s = d:get(key)
  if s == nil then return nil end
  return (M.decode(s))
end

function M.set_json(d, key, value, exptime)
  M.set(d, key, M.encode(value), exptime)
end

-- Adds key only if absent. Returns true when added, false when it existed.
function M.add_json(d, key, value, exptime)
  local ok, err = d:add(key, M.encode(value), exptime or 0)
  if ok then return true end
  if err == "exists" then return false end
  error("shared dict add " .. key .. ": " .. tostring(err), 2)
end

-- Append-only lists: <name>#n holds the length, <name>#<i> item i (1-based).
function M.list_push(d, name, value)
  local n = M.incr(d, name .. "#n")
  M.set(d, name .. "#" .. n, value)
  return n
end

function M.list_len(d, name)
  return d:get(name .. "#n") or 0
end

function M.list_get(d, name, i)
  return d:get(name .. "#" .. i)
end

-- Iterates list items in order (reverse=true: newest first); skips holes.
function M.list_items(d, name, reverse)
  local n = M.list_len(d, name)
  local out = {}
  local from, to, step = 1, n, 1
  if reverse then from, to, step = n, 1, -1 end
  for i = from, to, step do
    local v = d:get(name .. "#" .. i)
    if v ~= nil then out[#out + 1] = v end
  end
  return out
end

---------------------------------------------------------------------------
-- Stats
---------------------------------------------------------------------------

function M.stat(name, by)
  return M.incr(M.stats_dict(), name, by)
end

-- Counts one API request (not control-plane ones) and the connection it came
-- on: `connections` is the number of distinct TCP connections that carried at
-- least one API request since the last reset.
function M.count_request(method, path)
  local s = M.stats_dict()
  M.incr(s, "total")
  M.incr(s, "req:" .. method .. " " .. path)
  local conn = ngx.var.connection
  if conn and M.state():add("conn:" .. conn, true, 86400) then
    M.incr(s, "connections")
  end
  -- record_times: every API request's arrival time, for GET /__sim/times (rate-limit proofs)
  if M.config().record_times then M.list_push(s, "times", M.now()) end
  -- record_headers: every API request's method, path and header names (lower case, sorted),
  -- for GET /__sim/headers (what a client sends, e.g. no Expect: without a body)
  if M.config().record_headers then
    local names = {}
    for k in pairs(ngx.req.get_headers(100)) do names[#names + 1] = k:lower() end
    table.sort(names)
    M.list_push(s, "headers", method .. " " .. path .. " " .. table.concat(names, ","))
  end
end

-- Requests recorded with record_headers: "METHOD /path name,name,...", in order.
function M.headers_seen()
  return M.list_items(M.stats_dict(), "headers")
end

-- Arrival times recorded with record_times (epoch seconds, microsecond precision), in order.
function M.times()
  return M.list_items(M.stats_dict(), "times")
end

function M.stats()
  local s = M.stats_dict()
  local requests = {}
  for _, k in ipairs(s:get_keys(0)) do
    local name = k:match("^req:(.*)$")
    if name then requests[name] = s:get(k) or 0 end
  end
  return {
    total = s:get("total") or 0,
    requests = requests, -- encodes as {} when empty
    logins = s:get("logins") or 0,
    connections = s:get("connections") or 0,
  }
end

---------------------------------------------------------------------------
-- Config
---------------------------------------------------------------------------

-- Every accepted setting with its default. Other simulated APIs add theirs
-- with M.register_config{...} when their module loads (modules are preloaded
-- in init_by_lua, so all workers agree).
M.config_defaults = {
  toast_accept_202 = 0,            -- first N POST /crm/v1/customers per guid answer 202
  toast_token_ttl = 3600,          -- seconds a login token lives
  toast_replay = "first",          -- a POST with a GUID already stored: "first" answers 200 with
                                   -- the first record, unchanged; "conflict" answers 409 naming it
  toast_client_id = "sim-client",
  toast_client_secret = "sim-secret",
  record_times = false,            -- record each API request's arrival time (GET /__sim/times)
  record_headers = false,          -- record each API request's header names (GET /__sim/headers)
}

-- Optional extra checks: key -> function(value) returning true or false, message.
M.config_checks = {
  toast_accept_202 = function(v)
    return v >= 0 and v == math.floor(v), "must be a non-negative integer"
  end,
  toast_token_ttl = function(v) return v >= 0, "must be >= 0" end,
  toast_replay = function(v) return v == "first" or v == "conflict", "must be first or conflict" end,
}

function M.register_config(defaults, checks)
  for k, v in pairs(defaults) do M.config_defaults[k] = v end
  for k, f in pairs(checks or {}) do M.config_checks[k] = f end
end

-- The effective config: defaults overlaid with whatever /__sim/config set.
function M.config()
  local cfg = {}
  for k, v in pairs(M.config_defaults) do cfg[k] = v end
  local over = M.get_json(M.state(), "config")
  if type(over) == "table" then
    for k, v in pairs(over) do cfg[k] = v end
  end
  return cfg
end

-- Merges a table of settings. JSON null resets a key to its default.
-- Returns the effective config, or nil, message (nothing is changed then).
function M.config_merge(patch)
  local over = M.get_json(M.state(), "config") or {}
  for k, v in pairs(patch) do
    local default = M.config_defaults[k]
    if default == nil then
      local known = {}
      for name in pairs(M.config_defaults) do known[#known + 1] = name end
      table.sort(known)
      return nil, "unknown setting '" .. tostring(k) .. "' (known: " .. table.concat(known, ", ") .. ")"
    end
    if v == M.null then
      over[k] = nil
    else
      if type(v) ~= type(default) then
        return nil, "setting '" .. k .. "' must be a " .. type(default)
      end
      local check = M.config_checks[k]
      if check then
        local ok, msg = check(v)
        if not ok then return nil, "setting '" .. k .. "' " .. (msg or "is invalid") end
      end
      over[k] = v
    end
  end
  M.set_json(M.state(), "config", over)
  return M.config()
end

---------------------------------------------------------------------------
-- Time
---------------------------------------------------------------------------

function M.now()
  ngx.update_time()
  return ngx.now()
end

-- Epoch seconds (float, ms precision) -> "yyyy-MM-ddTHH:mm:ss.SSS+0000" (UTC).
function M.format_time(t)
  local sec = math.floor(t)
  local ms = math.floor((t - sec) * 1000 + 0.5)
  if ms >= 1000 then sec, ms = sec + 1, ms - 1000 end
  return os.date("!%Y-%m-%dT%H:%M:%S", sec) .. string.format(".%03d+0000", ms)
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function days_in_month(y, m)
  if m == 2 then
    local leap = (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0
    return leap and 29 or 28
  end
  return ({ 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 })[m]
end

-- Parses an ISO-8601 date or date-time to epoch seconds (float). Accepts
--   yyyy-MM-dd
--   yyyy-MM-ddTHH:mm[:ss[.fraction]][zone]   zone: Z | +hh | +hh:mm | +hhmm (or -)
-- A missing zone means UTC. Returns nil for anything else.
function M.parse_iso8601(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not y then return nil end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo < 1 or mo > 12 or d < 1 or d > days_in_month(y, mo) then return nil end
  local h, mi, sec, frac, off = 0, 0, 0, 0, 0
  if rest ~= "" then
    local hh, mm, tail = rest:match("^T(%d%d):(%d%d)(.*)$")
    if not hh then return nil end
    h, mi = tonumber(hh), tonumber(mm)
    local ss, tail2 = tail:match("^:(%d%d)(.*)$")
    if ss then
      sec, tail = tonumber(ss), tail2
      local f, tail3 = tail:match("^[.,](%d+)(.*)$")
      if f then frac, tail = tonumber("0." .. f), tail3 end
    end
    if tail == "Z" then
      off = 0
    elseif tail ~= "" then
      local sign, oh, om = tail:match("^([%+%-])(%d%d):?(%d%d)$")
      if not sign then
        sign, oh = tail:match("^([%+%-])(%d%d)$")
        om = "00"
      end
      if not sign then return nil end
      oh, om = tonumber(oh), tonumber(om)
      if oh > 23 or om > 59 then return nil end
      off = (oh * 3600 + om * 60) * (sign == "-" and -1 or 1)
    end
    if h > 23 or mi > 59 or sec > 60 then return nil end
  end
  return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec + frac - off
end

---------------------------------------------------------------------------
-- Paging
---------------------------------------------------------------------------

-- Reads ?page=&pageSize= (page is a 1-based page number).
-- Returns page, size or nil, message, field.
function M.page_params(args, default_size, max_size)
  local function int_arg(name, default)
    local v = args[name]
    if v == nil or v == "" then return default end
    if type(v) ~= "string" or not v:match("^%d+$") then return nil end
    return tonumber(v)
  end
  local page = int_arg("page", 1)
  if not page or page < 1 then
    return nil, "page must be a positive integer", "page"
  end
  local size = int_arg("pageSize", default_size)
  if not size or size < 1 then
    return nil, "pageSize must be a positive integer", "pageSize"
  end
  if size > max_size then
    return nil, "pageSize must be at most " .. max_size, "pageSize"
  end
  return page, size
end

-- The slice of items for a 1-based page; a new (possibly empty) array.
function M.page_slice(items, page, size)
  local out = M.array()
  local first = (page - 1) * size + 1
  for i = first, math.min(#items, first + size - 1) do
    out[#out + 1] = items[i]
  end
  return out
end

---------------------------------------------------------------------------
-- Error bodies
---------------------------------------------------------------------------

-- The Toast error shape. Every call gets a fresh requestId.
function M.toast_error_body(status, message, field, code)
  return {
    status = status,
    code = code or status,
    message = message,
    messageKey = M.null,
    fieldName = field or M.null,
    link = M.null,
    requestId = M.uuid(),
    developerMessage = M.null,
    errors = M.array(),
    canRetry = M.null,
  }
end

function M.toast_error(status, message, field, headers)
  return M.send_json(status, M.toast_error_body(status, message, field), headers)
end

return M
