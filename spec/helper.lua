-- Shared by the specs: the simulator's address, its control plane, and ready-made clients.
local core = require "crm.core"
local cjson = require "cjson"
local crm = require "crm"

local H = {}

H.port = tonumber(os.getenv("CRM_SIM_PORT") or "18080")
H.base_url = "http://127.0.0.1:" .. H.port
H.restaurant = "6f1d2d0e-8f65-4d7b-9b59-0f1f0c8e0a11"
H.client_id, H.client_secret = "sim-client", "sim-secret"

-- The control plane is plain HTTP through the same C core: no mocks anywhere.
local control = assert(core.new { timeout = 10 })

local function call(method, path, body)
  local status, _, raw = control:request(method, H.base_url .. path,
    { "Content-Type: application/json" }, body and cjson.encode(body) or nil)
  assert(status, "simulator control plane unreachable on port " .. H.port)
  assert(status == 200, "control " .. path .. " answered " .. tostring(status) .. ": " .. raw)
  return cjson.decode(raw)
end

function H.reset() return call("POST", "/__sim/reset", {}) end
function H.config(t) return call("POST", "/__sim/config", t) end
function H.fault(t) return call("POST", "/__sim/faults", t) end
function H.stats() return call("GET", "/__sim/stats") end

-- Requests that reached the API (control-plane calls are not counted).
function H.total() return H.stats().total end
function H.count(key) return H.stats().requests[key] or 0 end

-- Small delays so retry specs run in milliseconds.
H.fast_retry = { max_attempts = 4, base_delay = 0.005, max_delay = 0.02, deadline = 5 }

function H.toast(extra)
  local o = {
    base_url = H.base_url, restaurant_guid = H.restaurant,
    client_id = H.client_id, client_secret = H.client_secret,
    timeout = 5, retry = H.fast_retry,
  }
  for k, v in pairs(extra or {}) do o[k] = v end
  return assert(crm.toast(o))
end

-- A unique customer each call, so specs never depend on one another's data.
local n = 0
function H.customer(extra)
  n = n + 1
  local c = { firstName = "Ada" .. n, lastName = "Lovelace", email = "ada" .. n .. "."
    .. core.guid():sub(1, 8) .. "@example.org" }
  for k, v in pairs(extra or {}) do c[k] = v end
  return c
end

return H
