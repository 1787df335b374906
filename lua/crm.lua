-- require "crm": the entry point. Constructors for each API and the shared helpers.
local platform = require "crm.platform"
local errors = require "crm.error"
local http = require "crm.http"
local json = require "crm.json"

local crm = {
  _VERSION = platform.version,
  null = http.null,             -- JSON null, for request bodies that must send it
  empty_array = http.empty_array, -- encodes as [] (an empty Lua table encodes as {})
  json = json,                  -- decode/encode that round-trip [] and {} (see lua/crm/json.lua)
  guid = platform.guid,         -- a fresh lowercase UUID v4
  is_error = errors.is,
}

-- crm.toast{ base_url, restaurant_guid, client_id, client_secret | token, ... }
function crm.toast(opts)
  return require("crm.toast").new(opts)
end

-- crm.tablecheck{ api_key, base_url = "https://api.tablecheck.com/api/crm/v1", ... }
function crm.tablecheck(opts)
  return require("crm.tablecheck").new(opts)
end

-- crm.toast_time([epoch | RFC 3339 string]) -> "yyyy-MM-ddTHH:mm:ss.SSS+hhmm" | nil, err.
-- Never raises: bad input gives a validation error naming "time" (see crm.toast.format_time).
function crm.toast_time(x)
  return require("crm.toast").format_time(x)
end

-- crm.normalize_phone(s [, country_code]) -> E.164 | nil: the library's one normaliser.
crm.normalize_phone = require("crm.phone").normalize

return crm
