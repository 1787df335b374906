--- The one phone normaliser of crm: E.164 ("+" then the country code and the national number,
-- 7 to 15 digits in all). Toast (search keys, guest profiles, sync_to_crm) and TableCheck
-- (contact lists, merges) all compare phones through this module. `crm.normalize_phone` is
-- `normalize`.
-- @module crm.phone
local validate = require "crm.validate"

local M = {}

local type = type

-- Country codes whose national numbers keep their leading 0 (Italy, San Marino, the Vatican):
-- there the 0 is part of the number, not a trunk prefix.
local KEEPS_ZERO = { ["39"] = true, ["378"] = true, ["379"] = true }

--- Whether `s` is a country calling code: one to three digits, not starting with 0.
-- @tparam string s e.g. `"44"`
-- @treturn boolean
function M.is_country_code(s)
  return type(s) == "string" and s:find("^[1-9]%d?%d?$") ~= nil
end

-- check_country_code(v, field) -> nil | validation error
function M.check_country_code(v, field)
  if v ~= nil and not M.is_country_code(v) then
    return validate.fail(field, "must be a country calling code: 1 to 3 digits, e.g. \"1\" or \"44\"")
  end
  return nil
end

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

--- A phone number in E.164 (`crm.normalize_phone`).
-- Separators (spaces, dots, dashes, parentheses) are dropped. An international number is one
-- that starts with +, or with the 00 international prefix (011 where the country is 1); a
-- "(0)" after its country code ("+44 (0)20 ...") is the trunk prefix and goes too.
-- A national number needs `country_code` (digits, e.g. "1" or "44"); without one it gives nil.
-- With country code 1 (North America) it must have 10 digits, or 11 starting with 1. Elsewhere
-- one leading trunk 0 is dropped ("020 7946 0958" with "44" -> "+442079460958"; Italy keeps
-- its 0), and a number that already starts with the country code is taken as international
-- without its +. nil when the result is not 7 to 15 digits, or the text has anything but
-- digits, separators and a leading +. Never raises (any value may be passed).
-- @tparam string s the text
-- @tparam[opt] string country_code the country calling code of national numbers
-- @treturn[1] string `"+"` and 7 to 15 digits
-- @return[2] `nil` when it cannot be placed (no error value: nothing was wrong with the call)
-- @usage crm.normalize_phone("+1 (206) 555-0100")      --> "+12065550100"
-- crm.normalize_phone("020 7946 0958", "44")   --> "+442079460958"
-- crm.normalize_phone("206.555.0100")          --> nil (national, no country)
function M.normalize(s, country_code)
  if type(s) ~= "string" then return nil end
  s = trim(s)
  if s == "" or #s > 64 or not s:find("^%+?[%d%s%.%-%(%)]+$") then return nil end
  local intl = s:sub(1, 1) == "+"
  if intl then s = s:sub(2):gsub("^[%s%.%-]+", "") end
  -- "+44 (0)20 ..." and "0044 (0)20 ...": the bracketed 0 is a trunk prefix, never dialled.
  local cc_marked, rest = s:match("^([%d%s%.%-]-%d)%s*%(0%)(.*)$")
  if cc_marked and (intl or cc_marked:find("^00")) then s = cc_marked .. rest end
  local digits = s:gsub("%D", "")
  local out
  if intl then
    out = "+" .. digits
  elseif digits:sub(1, 2) == "00" then
    out = "+" .. digits:sub(3)
  elseif country_code == "1" and digits:sub(1, 3) == "011" then
    out = "+" .. digits:sub(4)
  elseif not M.is_country_code(country_code) then
    return nil
  elseif country_code == "1" then
    if #digits == 10 then
      out = "+1" .. digits
    elseif #digits == 11 and digits:sub(1, 1) == "1" then
      out = "+" .. digits
    else
      return nil
    end
  elseif digits:sub(1, 1) == "0" and not KEEPS_ZERO[country_code] then
    out = "+" .. country_code .. digits:sub(2)
  elseif digits:sub(1, #country_code) == country_code and #digits > #country_code + 6 then
    out = "+" .. digits
  else
    out = "+" .. country_code .. digits
  end
  if validate.is_e164(out) then return out end
  return nil
end

return M
