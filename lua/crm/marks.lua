-- The JSON markers, apart from the codec so that `require "crm"` can hand them out without
-- loading it: JSON null (lua-cjson's, the same value every cjson instance uses), the metatable
-- of decoded arrays, and the shared empty-array marker. crm.json is built on these.
local cjson = require "cjson"

return {
  null = cjson.null,
  -- No __index, __newindex or __len: a decoded array behaves as a plain table (t[1], #t, next,
  -- ipairs); only crm.json.encode and getmetatable see the difference.
  array_mt = { __name = "crm.json.array" },
  empty_array = setmetatable({}, { __name = "crm.empty_array" }),
}
