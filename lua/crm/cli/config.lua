-- The command line's settings: the README's environment variables, else a config file
-- ($XDG_CONFIG_HOME/crm/config.json) that only its owner may read or write, else --sim's
-- simulator.
-- Secrets are never flags: flags show in ps and in shell history.
local crm = require "crm"
local core = require "crm.core"
local output = require "crm.cli.output"

local M = {}

-- The names of the README's table; a config file uses the same names as keys.
M.NAMES = {
  "CRM_TOAST_URL", "CRM_TOAST_RESTAURANT", "CRM_TOAST_CLIENT_ID", "CRM_TOAST_CLIENT_SECRET",
  "CRM_TOAST_COUNTRY", "CRM_TABLECHECK_URL", "CRM_TABLECHECK_API_KEY", "CRM_SIM_PORT",
}
local KNOWN = {}
for _, n in ipairs(M.NAMES) do KNOWN[n] = true end

-- The simulator's fixed credentials (spec/sim: the same as the examples' defaults).
M.SIM = {
  restaurant = "6f1d2d0e-8f65-4d7b-9b59-0f1f0c8e0a11",
  client_id = "sim-client", client_secret = "sim-secret",
  api_key = "sim-tablecheck-key",
}

local getenv = os.getenv

function M.default_path()
  local base = getenv("XDG_CONFIG_HOME")
  if not base or base == "" then
    local home = getenv("HOME")
    if not home or home == "" then return nil end
    base = home .. "/.config"
  end
  return base .. "/crm/config.json"
end

-- Whether permission bits let the group or others read (mode & 044), without bit operators
-- (LuaJIT has none in the language).
local function readable_by_others(mode)
  local group, other = math.floor(mode / 8) % 8, mode % 8
  return group >= 4 or other >= 4
end
M.readable_by_others = readable_by_others

-- Whether they let the group or others write (mode & 022): whoever can write the file can
-- point crm at their own server and collect the secrets it sends there.
local function writable_by_others(mode)
  local group, other = math.floor(mode / 8) % 8, mode % 8
  return math.floor(group / 2) % 2 == 1 or math.floor(other / 2) % 2 == 1
end
M.writable_by_others = writable_by_others

-- read_file(path, explicit) -> table of settings | nil, err. A missing default file is no error.
function M.read_file(path, explicit)
  local mode, what, owner, euid = core.file_mode(path)
  if not mode then
    if explicit then return nil, output.usage_error("config file " .. path .. ": " .. tostring(what), "config") end
    return {}
  end
  if what ~= "file" then return nil, output.usage_error("config file " .. path .. " is not a file", "config") end
  if readable_by_others(mode) then
    return nil, output.usage_error(("config file %s is readable by group or others (mode %o): it may"
      .. " hold secrets, so it is refused; chmod 600 it"):format(path, mode), "config")
  end
  if writable_by_others(mode) then
    return nil, output.usage_error(("config file %s is writable by group or others (mode %o): they"
      .. " could change where its secrets are sent, so it is refused; chmod 600 it"):format(path, mode),
      "config")
  end
  if owner ~= euid and owner ~= 0 then
    return nil, output.usage_error(("config file %s belongs to another user (uid %d): they could"
      .. " change it, so it is refused; it must be yours (or root's)"):format(path, owner), "config")
  end
  local f, ferr = io.open(path, "rb")
  if not f then return nil, output.usage_error("config file: " .. tostring(ferr), "config") end
  local text = f:read("*a")
  f:close()
  local t = crm.json.decode(text)
  if type(t) ~= "table" or crm.json.is_array(t) then
    -- The decode error could quote the file, and the file holds secrets: say only where.
    return nil, output.usage_error("config file " .. path .. " must hold one JSON object", "config")
  end
  local out = {}
  for k, v in pairs(t) do
    if not KNOWN[k] then
      -- Named only when shaped like a setting name: a secret pasted where its name belongs (the
      -- key and the value swapped) must not be printed.
      local shown = type(k) == "string" and #k <= 64 and k:find("^[%u_][%u%d_]*$") and ("%q"):format(k)
        or "(not shown: it is not shaped like a setting name, and may be a value)"
      return nil, output.usage_error(("config file %s: unknown key %s (known: %s)"):format(path,
        shown, table.concat(M.NAMES, ", ")), "config")
    end
    if type(v) ~= "string" and type(v) ~= "number" then
      return nil, output.usage_error(("config file %s: %s must be a string"):format(path, k), "config")
    end
    out[k] = tostring(v)
  end
  return out
end

-- load{config = path, sim = bool} -> settings {get(name)} | nil, err. The environment wins over
-- the file; with --sim the simulator's address and credentials win over both.
function M.load(opts)
  local path, explicit = opts.config, opts.config ~= nil
  if not path then path = M.default_path() end
  local file = {}
  if path then
    local t, err = M.read_file(path, explicit)
    if not t then return nil, err end
    file = t
  end
  local s = { sim = opts.sim, path = path }
  function s.get(name)
    local v = getenv(name)
    if v ~= nil and v ~= "" then return v end
    return file[name]
  end
  s.sim_port = tonumber(s.get("CRM_SIM_PORT") or "18080")
  if not s.sim_port or s.sim_port < 1 or s.sim_port > 65535 or s.sim_port % 1 ~= 0 then
    return nil, output.usage_error("CRM_SIM_PORT must be a port number", "CRM_SIM_PORT")
  end
  return s
end

-- The Toast client's options (without the common ones) | nil, err.
function M.toast_options(s)
  if s.sim then
    return { base_url = "http://127.0.0.1:" .. s.sim_port, restaurant_guid = M.SIM.restaurant,
             client_id = M.SIM.client_id, client_secret = M.SIM.client_secret,
             default_country_code = s.get("CRM_TOAST_COUNTRY") }
  end
  local o = { base_url = s.get("CRM_TOAST_URL"), restaurant_guid = s.get("CRM_TOAST_RESTAURANT"),
              client_id = s.get("CRM_TOAST_CLIENT_ID"), client_secret = s.get("CRM_TOAST_CLIENT_SECRET"),
              default_country_code = s.get("CRM_TOAST_COUNTRY") }
  local missing = {}
  if not o.restaurant_guid then missing[#missing + 1] = "CRM_TOAST_RESTAURANT" end
  if not o.client_id then missing[#missing + 1] = "CRM_TOAST_CLIENT_ID" end
  if not o.client_secret then missing[#missing + 1] = "CRM_TOAST_CLIENT_SECRET" end
  if #missing > 0 then
    return nil, output.usage_error("Toast needs " .. table.concat(missing, ", ") .. " (environment or "
      .. tostring(s.path or "config file") .. "), or --sim for the local simulator", missing[1])
  end
  return o
end

-- The TableCheck client's options | nil, err.
function M.tablecheck_options(s)
  if s.sim then
    return { base_url = "http://127.0.0.1:" .. s.sim_port .. "/api/crm/v1", api_key = M.SIM.api_key }
  end
  local o = { base_url = s.get("CRM_TABLECHECK_URL"), api_key = s.get("CRM_TABLECHECK_API_KEY") }
  if not o.api_key then
    return nil, output.usage_error("TableCheck needs CRM_TABLECHECK_API_KEY (environment or "
      .. tostring(s.path or "config file") .. "), or --sim for the local simulator", "CRM_TABLECHECK_API_KEY")
  end
  return o
end

return M
