--- `require "crm"`: the entry point. Constructors for each API and the shared helpers.
-- `crm.toast{}` builds a `crm.toast.Toast` client, `crm.tablecheck{}` a
-- `crm.tablecheck.TableCheck` client. Every function returns its result on success and
-- `nil, err` on failure (`err` is a `crm.error.Error`); nothing raises for bad input or a bad
-- network. On success the second value is always `nil`: what else a call has to say comes third
-- (`items, nil, pagination`; `customer, nil, "found"`).
-- @module crm
-- @usage
-- local crm = require "crm"
-- local toast = assert(crm.toast { restaurant_guid = "...", client_id = "...", client_secret = "..." })
-- local guest, err, how = toast:find_or_create { firstName = "Josephine", lastName = "Banton",
--                                                email = "jbanton@example.org" }
-- Loading crm loads the C core and these few lines; everything else (the clients, crm.json,
-- errors, phones, TableCheck's schemas, Toast's orders and guests) loads on first use.
local platform = require "crm.platform"
local marks = require "crm.marks"

local crm = {
  _VERSION = platform.version,
  null = marks.null,             -- JSON null, for request bodies that must send it
  empty_array = marks.empty_array, -- encodes as [] (an empty Lua table encodes as {})
  guid = platform.guid,          -- a fresh lowercase UUID v4
  core = platform.core,          -- the C core (require "crm.core")
}

-- crm.json (decode/encode that round-trip [] and {}, lua/crm/json.lua) is loaded when first read.
setmetatable(crm, { __index = function(t, k)
  if k == "json" then
    local json = require "crm.json"
    rawset(t, "json", json)
    return json
  end
end })

function crm.is_error(v)
  return require("crm.error").is(v)
end

--- The library's version, e.g. `"0.2.0"` (the C core's when it is loaded).
-- @field _VERSION

--- JSON null (`cjson.null`), for request bodies that must send it.
-- In answers, JSON null reads as `nil` in objects and stays `crm.null` inside arrays, so no
-- element silently disappears. TableCheck bodies refuse it (its contract marks no request field
-- nullable); in a Toast customer `email = crm.null` means "not given".
-- @field null

--- A marker that always encodes as `[]` (an empty Lua table encodes as `{}`).
-- Use it in a request body for a list that must be sent empty.
-- @field empty_array

--- The C core, `crm/core.so` (the same table as `require "crm.core"`): `core.ops` (each
-- operation of both APIs as a row of data), `core.version`, `core.curl_version()`, `core.guid()`,
-- `core.new{}` (a libcurl handle). Clients never need it; it is there for transports of your own
-- (`core.build`, `core.decode`) and for bug reports (`core.version`, `core.curl_version()`).
-- @field core

--- JSON that round-trips `[]` and `{}`: `crm.json.decode` and `crm.json.encode` (see `crm.json`).
-- @field json

--- A fresh lowercase UUID v4 (libuuid, through the C core).
-- @function guid
-- @treturn string e.g. `"3f2b8a1e-5c4d-4e6f-9a7b-0c1d2e3f4a5b"`

--- Whether `v` is a crm error.
-- @function is_error
-- @param v any value
-- @treturn boolean
-- @see crm.error.is

--- Builds a Toast CRM v1 client: `crm.toast{ base_url, restaurant_guid, client_id,
-- client_secret | token, ... }`. Validates and sends nothing.
-- @tparam crm.toast.Options opts the Toast options and the common `crm.client.Options`
-- @treturn[1] crm.toast.Toast the client
-- @return[2] `nil`
-- @treturn[2] crm.error.Error `validation`, with `field` naming the option
-- @see crm.toast.new
function crm.toast(opts)
  return require("crm.toast").new(opts)
end

--- Builds a TableCheck CRM v1 client: `crm.tablecheck{ api_key, base_url =
-- "https://api.tablecheck.com/api/crm/v1", ... }`. Validates and sends nothing.
-- @tparam crm.tablecheck.Options opts the TableCheck options and the common `crm.client.Options`
-- @treturn[1] crm.tablecheck.TableCheck the client
-- @return[2] `nil`
-- @treturn[2] crm.error.Error `validation`, with `field` naming the option
-- @see crm.tablecheck.new
function crm.tablecheck(opts)
  return require("crm.tablecheck").new(opts)
end

--- A time in Toast's form: `crm.toast_time([epoch | RFC 3339 string])`.
-- Never raises: bad input gives a validation error naming "time" (see crm.toast.format_time).
-- An epoch is written in UTC; a date-time text keeps its own local time and offset.
-- @tparam[opt] number|string x epoch seconds or an RFC 3339 date-time; default: now
-- @treturn[1] string `"yyyy-MM-ddTHH:mm:ss.SSS+hhmm"`
-- @return[2] `nil`
-- @treturn[2] crm.error.Error `validation` with `field = "time"`
-- @usage toast:add_credit(id, { amount = 10, localCreatedDate = crm.toast_time() })
-- @see crm.toast.format_time
function crm.toast_time(x)
  return require("crm.toast").format_time(x)
end

--- A phone number in E.164: `crm.normalize_phone(s [, country_code])`, the library's one
-- normaliser. Without a country code a national number (no `+` or `00`) gives `nil`, since it
-- cannot be placed.
-- @function normalize_phone
-- @tparam string s the text, e.g. `"+1 (206) 555-0100"`
-- @tparam[opt] string country_code the country calling code of national numbers (`"1"`, `"44"`)
-- @treturn[1] string e.g. `"+12065550100"`
-- @return[2] `nil` when it is not a phone number that places in E.164
-- @see crm.phone.normalize

-- (Documented above with @function: LDoc cannot read a name from this assignment.)
function crm.normalize_phone(number, default_country_code)
  return require("crm.phone").normalize(number, default_country_code)
end

return crm
