-- The installed rock, under one runtime, against the simulator (run by scripts/rock-test.sh).
--   LUA rock_smoke.lua TREE PORT VERSION
-- package.path and package.cpath reach TREE and the system's modules (lua-cjson), never the
-- checkout: every crm module must come from TREE.
local tree, port, version = arg[1], arg[2], arg[3]
assert(tree and port and version, "usage: rock_smoke.lua TREE PORT VERSION")

local function from_tree(name, path)
  local file = package.searchpath(name, path)
  assert(file, name .. " is not in the tree " .. tree)
  assert(file:sub(1, #tree + 1) == tree .. "/", name .. " was found at " .. file .. ", not in " .. tree)
  return file
end
local lua_file = from_tree("crm", package.path)
local so_file = from_tree("crm.core", package.cpath)

local crm = require "crm"
local core = require "crm.core"
assert(crm._VERSION == version, "crm._VERSION is " .. tostring(crm._VERSION) .. ", not " .. version)
assert(core.version == version, "crm.core.version is " .. tostring(core.version))

local base = "http://127.0.0.1:" .. port
local toast = assert(crm.toast {
  base_url = base, restaurant_guid = "6f1d2d0e-8f65-4d7b-9b59-0f1f0c8e0a11",
  client_id = "sim-client", client_secret = "sim-secret", timeout = 5,
})
local email = "rock-" .. crm.guid():sub(1, 8) .. "@example.org"
local made, err = toast:create_customer { firstName = "Rock", lastName = "Smoke", email = email }
assert(made, "create_customer: " .. tostring(err))
local got
got, err = toast:get_customer(made.guid)
assert(got, "get_customer: " .. tostring(err))
assert(got.guid == made.guid and got.email == email, "get_customer read back another record")

-- Two reads at once: libcurl's multi interface through the batch.
local results = toast:batch({ { "get_customer", made.guid }, { "get_customer", made.guid } },
  { concurrency = 2 })
assert(results.succeeded == 2, "batch: " .. tostring(results[1].err or results[2].err))

local tc = assert(crm.tablecheck { base_url = base .. "/api/crm/v1", api_key = "sim-tablecheck-key",
  timeout = 5 })
local shops
shops, err = tc:list_shops()
assert(shops, "list_shops: " .. tostring(err))

print(string.format("rock-test: %s crm %s (%s, %s): toast create/get/batch, tablecheck list_shops ok",
  _VERSION .. (jit and " / " .. jit.version or ""), crm._VERSION, lua_file, so_file))
