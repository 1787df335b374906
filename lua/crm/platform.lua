-- What the process offers crm: the C core (crm.core) when it loads, and nginx's API when crm
-- runs inside OpenResty / lua-nginx-module. Outside nginx the C core is required, as always.
-- Inside nginx it is optional: only the curl transport needs it, so GUIDs, percent-encoding and
-- the clock have stand-ins here.
local M = {}

-- lua/crm/version.lua is the one source: the Makefile compiles the same string into the C core
-- as CRM_VERSION (a spec checks both agree). The User-Agent of the ngx transport.
M.VERSION = require "crm.version"

local ngx = rawget(_G, "ngx")
M.ngx = ngx -- nil outside nginx

local loaded, core = pcall(require, "crm.core")
if not loaded then
  if not ngx then error(core, 0) end
  M.core_error = tostring(core)
  core = nil
end
M.core = core -- nil inside nginx when lua_package_cpath does not reach crm/core.so
M.version = core and core.version or M.VERSION

local byte, char, format, concat = string.byte, string.char, string.format, table.concat
local random = math.random

-- Phases in which nginx allows cosockets and ngx.sleep (light threads too). Elsewhere (init,
-- init_worker, set, header_filter, body_filter, log, balancer, exit_worker) they raise.
local YIELDABLE = {
  rewrite = true, server_rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true,
}
M.YIELDABLE_PHASES = YIELDABLE

-- yieldable() -> true | false, phase: whether nginx lets this code use cosockets and ngx.sleep.
function M.yieldable()
  if not ngx then return false, nil end
  local phase = ngx.get_phase()
  return YIELDABLE[phase] == true, phase
end

-- ---- stand-ins for the C functions ----

-- RFC 3986 unreserved characters stay, everything else becomes %XX (upper-case), like the C.
local function escape_byte(c) return format("%%%02X", byte(c)) end
function M.lua_escape(s)
  return (tostring(s):gsub("[^A-Za-z0-9%-%._~]", escape_byte))
end

-- A lowercase version-4 UUID from /dev/urandom. The file is opened for every call: a handle
-- buffered in nginx's master process would hand every forked worker the same bytes.
function M.lua_guid()
  local raw
  local f = io.open("/dev/urandom", "rb")
  if f then
    raw = f:read(16)
    f:close()
  end
  if type(raw) ~= "string" or #raw ~= 16 then
    local t = {}
    for i = 1, 16 do t[i] = char(random(0, 255)) end
    raw = concat(t)
  end
  local b = { byte(raw, 1, 16) }
  b[7] = b[7] % 16 + 0x40 -- version 4
  b[9] = b[9] % 64 + 0x80 -- variant 10xx
  local hex = format(("%02x"):rep(16), b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9],
    b[10], b[11], b[12], b[13], b[14], b[15], b[16])
  return hex:sub(1, 8) .. "-" .. hex:sub(9, 12) .. "-" .. hex:sub(13, 16) .. "-"
    .. hex:sub(17, 20) .. "-" .. hex:sub(21, 32)
end

-- nginx's clock: ngx.now() is cached per event-loop turn, so refresh it first.
local function ngx_now()
  ngx.update_time()
  return ngx.now()
end

-- JSON null (cjson.null, a NULL light userdata) removed from object fields, kept in arrays.
local cjson_null = require("cjson").null
local function lua_strip_nulls(v)
  for k, x in next, v do
    if x == cjson_null then
      if type(k) == "string" then v[k] = nil end
    elseif type(x) == "table" then
      lua_strip_nulls(x)
    end
  end
  return v
end
M.lua_strip_nulls = lua_strip_nulls

M.strip_nulls = core and core.strip_nulls or lua_strip_nulls

-- Whether a JSON text may hold a number too large for a double (1e400): a digit, then an
-- exponent of 3 or more digits. One byte scan in C; a pattern inside nginx without the core.
local function lua_has_long_exponent(s)
  return s:find("%d[eE][%+%-]?%d%d%d") ~= nil
end
M.lua_has_long_exponent = lua_has_long_exponent
M.has_long_exponent = core and core.has_long_exponent or lua_has_long_exponent
M.escape = core and core.escape or M.lua_escape
M.guid = core and core.guid or M.lua_guid
M.ngx_now = ngx and ngx_now or nil

-- now(): the process clock (monotonic from the C core; nginx's otherwise).
M.now = core and core.now or ngx_now
-- The wall clock with its fraction (for "now" in Toast's millisecond date-times): the C core's,
-- nginx's, or whole seconds where neither is there.
M.wall_time = core and core.time or (ngx and function() ngx.update_time() return ngx.now() end) or os.time

-- block(seconds): a sleep that holds the thread. Only for plain Lua, a curl batch's idle wait,
-- and nginx phases where ngx.sleep is refused.
if core then
  M.block = core.sleep
else
  M.block = function(s)
    -- Only reached in nginx phases without ngx.sleep and without the C core (init, log, ...),
    -- where nothing else can run anyway.
    local till = ngx_now() + s
    while ngx_now() < till do end -- luacheck: ignore 563
  end
end

return M
