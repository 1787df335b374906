-- make bench, "decoders alone, per body": N decodes of FILE's text by one decoder, for
-- callgrind (bench/instr.sh takes the difference of two run lengths).
--   decode.lua cjson N FILE   lua-cjson's decode (Debian's 2.1.0, a fresh codec)
--   decode.lua crm N FILE     crm.core.decode (src/jdec.c), what crm.http and crm.json use
local which, n, file = arg[1], tonumber(arg[2]), arg[3]
local f = assert(io.open(file, "rb"))
local text = f:read("a")
f:close()
local decode
if which == "cjson" then
  decode = require("cjson").new().decode
elseif which == "crm" then
  require "crm.json"
  decode = require("crm.platform").core.decode
else
  error("decode.lua cjson|crm N FILE")
end
for _ = 1, n do
  if type(decode(text)) ~= "table" then error("not decoded") end
end
