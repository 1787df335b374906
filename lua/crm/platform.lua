-- What the process offers crm: the C core (crm.core), required everywhere, and nginx's API when
-- crm runs inside OpenResty / lua-nginx-module.
local M = {}

-- lua/crm/version.lua is the one source: the Makefile compiles the same string into the C core
-- as CRM_VERSION (a spec checks both agree). The User-Agent of the ngx transport.
M.VERSION = require "crm.version"

local ngx = rawget(_G, "ngx")
M.ngx = ngx -- nil outside nginx

-- The C core is required everywhere, inside nginx too: the operations, the answer decoding and
-- the curl transport live in it.
local loaded, core = pcall(require, "crm.core")
if not loaded then
  local where = ngx and "lua_package_cpath (nginx.conf)"
    or (_VERSION == "Lua 5.4" and "package.cpath (LUA_CPATH_5_4, else LUA_CPATH)" or "package.cpath (LUA_CPATH)")
  local path = package.searchpath and package.searchpath("crm.core", package.cpath)
  if not path then
    error("crm needs its C core, crm/core.so, on " .. where .. "; build it with make, or install the rock: "
      .. tostring(core), 0)
  end
  -- Found but not loadable: what the dynamic loader said is the cause, and the usual one is a
  -- core built for the other runtime.
  local _, why = package.loadlib(path, "luaopen_crm_core")
  why = tostring(why or core)
  local hint = ""
  if why:find("undefined symbol: lua", 1, true) then
    hint = " (a core built for another Lua: a 5.1/LuaJIT tree under Lua 5.4 lacks lua_pcall and"
      .. " lua_newuserdata, a 5.4 tree under LuaJIT lacks lua_newuserdatauv; put this runtime's tree first"
      .. " on " .. where .. ")"
  end
  error("crm found its C core at " .. path .. " but could not load it: " .. why .. hint, 0)
end
M.core = core
M.version = core.version


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

-- nginx's clock: ngx.now() is cached per event-loop turn, so refresh it first. Not a tail call:
-- ngx.now() tail-calls tonumber, and LuaJIT aborts a trace that starts here and returns from
-- two tail calls below it ("leaving loop in root trace").
local function ngx_now()
  ngx.update_time()
  local t = ngx.now()
  return t
end

M.escape = core.escape
M.guid = core.guid
M.ngx_now = ngx and ngx_now or nil

-- now(): the process clock (the C core's monotonic one).
M.now = core.now
-- The wall clock with its fraction (for "now" in Toast's millisecond date-times).
M.wall_time = core.time

-- block(seconds): a sleep that holds the thread. Only for plain Lua, a curl batch's idle wait,
-- and nginx phases where ngx.sleep is refused.
M.block = core.sleep

return M
