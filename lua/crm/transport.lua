-- Picks a client's HTTP transport and the clock that goes with it.
--
--   transport = "curl"  the C core (libcurl); blocks while it waits. The default outside nginx.
--   transport = "ngx"   nginx cosockets (crm.transport.ngx); never blocks the worker.
--   transport = nil     outside nginx: "curl". Inside nginx: chosen for every request, "ngx"
--                       where nginx allows cosockets (rewrite, access, content, timer, ssl_*),
--                       "curl" elsewhere (init, init_worker, set, log, header/body filters).
--   transport = object  anything with :request(method, url, headers, body, timeout) and :close();
--                       its `clock` field, if any, becomes the client's clock.
--
-- Every transport answers `status, headers, body` or `nil, {kind, name, code, message, sent}`,
-- so crm.http and the retry policy never know which one ran. A transport's `clock` is
-- {now, sleep}: retry backoff, the rate limiter and Toast's 202 waits all go through it.
-- Sleeping yields to the loop inside a curl batch, uses ngx.sleep where nginx allows it, and
-- blocks only where nothing else could run (plain Lua, nginx's init or log phases).
local platform = require "crm.platform"
local batch = require "crm.batch"
local errors = require "crm.error"

local M = {}

local ngx = platform.ngx
M.in_nginx = ngx ~= nil
local yieldable, in_batch, block = platform.yieldable, batch.in_batch, platform.block
local type = type

local function sleep(s)
  if not (s and s > 0) then s = 0 end
  if in_batch() then return batch.clock.sleep(s) end
  if ngx and yieldable() then return ngx.sleep(s) end
  if s > 0 then return block(s) end
end

-- yields() -> whether sleep() lets other work run meanwhile (a curl batch, nginx light threads
-- and requests), or holds the thread.
local function yields()
  return in_batch() or (ngx ~= nil and (yieldable()))
end

-- The curl transport's clock: the C core's monotonic time (the batch clock's).
M.curl_clock = { now = batch.clock.now, sleep = sleep, yields = yields }
-- The ngx transport's clock: nginx's time.
M.ngx_clock = ngx and { now = platform.ngx_now, sleep = sleep, yields = yields } or nil

local function core_error(e)
  return errors.new(e.kind, e.message, { code = e.name })
end

-- What a connection depends on: two clients whose options give the same key may share a
-- batch's multi (its slots are made with the owner's options).
local OPTION_KEYS = { "timeout", "connect_timeout", "cafile", "capath", "insecure_skip_verify",
                      "user_agent", "max_response_bytes", "proxy" }
local function options_key(options)
  local parts = {}
  for i, k in ipairs(OPTION_KEYS) do parts[i] = tostring(options[k]) end
  return table.concat(parts, "\0")
end

local function new_curl(options)
  local h, err = platform.core.new(options)
  if not h then return nil, core_error(err) end
  local t = batch.router(h, options_key(options))
  t.name = "curl"
  t.clock = M.curl_clock
  return t
end

-- ---- auto: the right transport for the context of each request, inside nginx ----

local Auto = { name = "auto" }
Auto.__index = Auto

-- current() -> the transport for this context | nil, error shaped like a transport's
function Auto:current()
  if yieldable() then
    if not self.ngx then self.ngx = require("crm.transport.ngx").new(self.options) end
    return self.ngx
  end
  if not self.curl then
    local h, err = platform.core.new(self.options)
    if not h then return nil, err end
    self.curl = batch.router(h)
  end
  return self.curl
end

function Auto:request(method, url, headers, body, timeout, fresh)
  local t, err = self:current()
  if not t then return nil, err end
  return t:request(method, url, headers, body, timeout, fresh)
end

-- "ngx" or "curl": what a request made now would use.
function Auto.current_name()
  return yieldable() and "ngx" or "curl"
end

-- How client:batch runs here: light threads where nginx allows them, libcurl's multi elsewhere.
function Auto.batch_mode()
  if yieldable() then return "threads" end
  return "multi"
end

function Auto:close()
  if self.curl then self.curl:close() end
  if self.ngx then self.ngx:close() end
  self.closed = true
  return true
end

local function ngx_batch_mode()
  local can, phase = yieldable()
  if can then return "threads" end
  return nil, errors.new("transport", "client:batch with the ngx transport cannot run in nginx's "
    .. tostring(phase) .. " phase (no light threads or cosockets there)", { code = "no_cosockets" })
end

-- ---- choosing ----

local function choice_error(rule)
  return nil, errors.validation("transport", rule)
end

-- check(choice) -> nil | validation error. Sends nothing, builds nothing.
function M.check(choice)
  if choice == nil or choice == "curl" then return nil end
  if choice == "ngx" then
    if not ngx then
      return errors.validation("transport", "\"ngx\" needs nginx with lua-nginx-module (OpenResty);"
        .. " outside nginx use \"curl\"")
    end
    return nil
  end
  if type(choice) == "table" or type(choice) == "userdata" then
    if type(choice.request) ~= "function" then
      return errors.validation("transport", "must have a request(method, url, headers, body, timeout) method")
    end
    return nil
  end
  return errors.validation("transport", "must be \"curl\", \"ngx\" or an object with request()")
end

-- clock_for(choice) -> {now, sleep}: the clock of the transport `choice` will make.
function M.clock_for(choice)
  if choice == "ngx" or (choice == nil and ngx) then return M.ngx_clock end
  if type(choice) == "table" and type(choice.clock) == "table"
      and type(choice.clock.now) == "function" and type(choice.clock.sleep) == "function" then
    return choice.clock
  end
  return M.curl_clock
end

-- new(choice, options) -> transport | nil, err. options: timeout, connect_timeout, cafile,
-- capath, insecure_skip_verify, user_agent, max_response_bytes.
function M.new(choice, options)
  local e = M.check(choice)
  if e then return nil, e end
  if choice == "curl" or (choice == nil and not ngx) then return new_curl(options) end
  if choice ~= nil and choice ~= "ngx" then return choice end
  if options.cafile ~= nil or options.capath ~= nil then
    -- nginx has no per-connection CA setting: its trust store is lua_ssl_trusted_certificate.
    return choice_error("the ngx transport cannot use cafile or capath: set"
      .. " lua_ssl_trusted_certificate in nginx.conf, or choose transport = \"curl\"")
  end
  if choice == "ngx" then
    local t = require("crm.transport.ngx").new(options)
    t.clock = M.ngx_clock
    t.batch_mode = ngx_batch_mode
    return t
  end
  return setmetatable({ options = options, clock = M.ngx_clock }, Auto)
end

return M
