-- What a newcomer with only the README runs first: make's simulator port, and the rock built from
-- a checkout for one Lua after another (README "Two commands", "Installing as a rock").
local H = require "helper"

-- make as a user runs it: none of the make test that runs this spec leaks into it.
local MAKE = "env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u SIM_PORT -u CRM_SIM_PORT "

describe("make, as the README's newcomer runs it", function()
  it("takes the simulator port from CRM_SIM_PORT, as the README's variable table says", function()
    local r = H.capture(MAKE .. "CRM_SIM_PORT=23999 make -n --no-print-directory sim sim-stop")
    assert.equal(0, r.code, r.err)
    assert.truthy(r.out:find("scripts/sim.sh start 23999", 1, true), r.out)
    assert.truthy(r.out:find("scripts/sim.sh stop 23999", 1, true), r.out)
    assert.falsy(r.out:find("18080", 1, true), r.out)
    -- SIM_PORT on the command line still wins, and without either the port is 18080
    r = H.capture(MAKE .. "CRM_SIM_PORT=23999 make -n --no-print-directory sim SIM_PORT=23998")
    assert.truthy(r.out:find("scripts/sim.sh start 23998", 1, true), r.out)
    r = H.capture(MAKE .. "make -n --no-print-directory sim")
    assert.truthy(r.out:find("scripts/sim.sh start 18080", 1, true), r.out)
  end)

  it("rebuilds the core in a build directory that holds one built for another Lua", function()
    -- luarocks make builds every tree in build/rock: a 5.4 tree, then a 5.1 (LuaJIT) one
    local dir = H.tmpdir()
    local function build(inc)
      return H.capture(MAKE .. "make --no-print-directory all BUILD=" .. H.quote(dir) .. " LUA_INC=" .. inc)
    end
    local r = build("-I/usr/include/lua5.4")
    assert.equal(0, r.code, r.err)
    assert.truthy(H.sh_out("nm -D " .. dir .. "/crm/core.so"):find("lua_newuserdatauv", 1, true))
    r = build("-I/usr/include/luajit-2.1")
    assert.equal(0, r.code, r.err)
    local symbols = H.sh_out("nm -D " .. dir .. "/crm/core.so")
    assert.falsy(symbols:find("lua_newuserdatauv", 1, true), "the 5.4 core was left in place: " .. r.out)
    assert.truthy(symbols:find("lua_newuserdata", 1, true))
    -- and the same flags again build nothing
    r = build("-I/usr/include/luajit-2.1")
    assert.equal(0, r.code, r.err)
    assert.falsy(r.out:find("core.so", 1, true), r.out)
    -- luarocks' install step runs without the build's variables: it installs that core as it is
    r = H.capture(MAKE .. "make --no-print-directory rock-install BUILD=" .. H.quote(dir) .. " INST_LUADIR="
      .. H.quote(dir .. "/tree/share") .. " INST_LIBDIR=" .. H.quote(dir .. "/tree/lib"))
    assert.equal(0, r.code, r.err)
    assert.falsy(r.out:find("-o ", 1, true), r.out)
    symbols = H.sh_out("nm -D " .. dir .. "/tree/lib/crm/core.so")
    assert.falsy(symbols:find("lua_newuserdatauv", 1, true), "rock-install built a 5.4 core: " .. r.out)
    assert.truthy(symbols:find("lua_newuserdata", 1, true))
    os.execute("rm -rf " .. H.quote(dir))
  end)
end)

describe("crm --help, as the README's command summary shows it", function()
  it("names the options the README's synopsis gives each command", function()
    local r = H.capture(H.lua .. " bin/crm --help")
    assert.equal(0, r.code, r.err)
    local function line_of(prefix)
      for line in r.out:gmatch("[^\n]+") do
        if line:find("^%s*" .. prefix:gsub("%p", "%%%0")) then return line end
      end
      error("no line " .. prefix .. " in:\n" .. r.out)
    end
    assert.truthy(line_of("crm sim start"):find("--restaurants N", 1, true), r.out)
    assert.truthy(line_of("crm toast credit add"):find("--idempotency-key", 1, true), r.out)
    assert.truthy(line_of("crm toast credit add"):find("--input", 1, true), r.out)
    assert.truthy(line_of("crm toast customers create"):find("--idempotency-key", 1, true), r.out)
  end)
end)

describe("crm --json-errors, as the README's Errors bullet says", function()
  it("writes a usage error the parser finds as one JSON object too", function()
    local json = require "crm.json"
    for _, case in ipairs { { "--json-errors --timeout abc version", "--timeout must be a number, not 'abc'" },
                            { "--json-errors no-such-command", "no-such-command" },
                            { "toast customers get --json-errors", "missing argument 'guid'" } } do
      local r = H.capture(H.lua .. " bin/crm " .. case[1])
      assert.equal(2, r.code, r.err)
      assert.equal("", r.out)
      local line = r.err:match("^([^\n]*)\n$")
      assert.truthy(line, "not one line: " .. r.err)
      local o = assert(json.decode(line), r.err)
      assert.equal("validation", o.kind)
      assert.equal("usage", o.code)
      assert.equal(2, o.exit)
      assert.truthy(o.message:find(case[2], 1, true), o.message)
      assert.truthy(o.message:find("--help explains it", 1, true), o.message)
    end
    -- without the flag: the usage and the one line, as before
    local r = H.capture(H.lua .. " bin/crm --timeout abc version")
    assert.equal(2, r.code)
    assert.truthy(r.err:find("^Usage: crm"), r.err)
    assert.truthy(r.err:find("\ncrm: --timeout must be a number, not 'abc' (crm --help explains it)\n", 1, true), r.err)
  end)
end)
