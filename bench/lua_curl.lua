-- make bench: the Debian lua-curl baseline (`require "curl"`, Lua 5.1 and LuaJIT only): COUNT
-- sequential GETs of URL with one reused easy handle, crm's options and three headers, each body
-- decoded with lua-cjson. What a script doing the same HTTP work with a bare binding costs.
--   luajit bench/lua_curl.lua URL COUNT HEADER...
local curl = require "curl"
local cjson = require "cjson"

local url, count = arg[1], tonumber(arg[2])
local headers = {}
for i = 3, #arg do headers[#headers + 1] = arg[i] end

local e = curl.easy_init()
local chunks, n = {}, 0
e:setopt(curl.OPT_HTTPHEADER, headers)
e:setopt(curl.OPT_WRITEFUNCTION, function(s)
  n = n + 1
  chunks[n] = s
  return #s
end)
e:setopt(curl.OPT_NOSIGNAL, 1)
e:setopt(curl.OPT_USERAGENT, "crm/0.1.0")
e:setopt(curl.OPT_CONNECTTIMEOUT_MS, 10000)
e:setopt(curl.OPT_TIMEOUT_MS, 30000)
for _ = 1, count do
  e:setopt(curl.OPT_URL, url)
  n = 0
  assert(e:perform())
  local body = table.concat(chunks, "", 1, n)
  assert(type(cjson.decode(body)) == "table")
end
