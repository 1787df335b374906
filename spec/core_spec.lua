-- The C core: GUIDs, escaping, the handle life cycle and transport errors.
local core = require "crm.core"
local H = require "helper"

describe("crm.core", function()
  -- `<close>` and __pairs are Lua 5.4; LuaJIT (5.1 ABI) has neither.
  local it_54 = _VERSION == "Lua 5.4" and it or pending

  it("makes lowercase, unique version-4 GUIDs", function()
    local seen = {}
    for _ = 1, 1000 do
      local g = core.guid()
      assert.matches("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$", g)
      assert.equal(g:lower(), g)
      assert.is_nil(seen[g])
      seen[g] = true
    end
  end)

  it("percent-encodes everything but unreserved characters", function()
    assert.equal("a-b_c.d~e", core.escape("a-b_c.d~e"))
    assert.equal("a%2Fb%3F%23%20%25%C3%A9", core.escape("a/b?# %é"))
    assert.equal("%00%0D%0A", core.escape("\0\r\n"))
  end)

  it("has a monotonic clock and a sleep", function()
    local t0 = core.now()
    core.sleep(0.01)
    assert.is_true(core.now() - t0 >= 0.009)
  end)

  it("returns status, lower-cased headers and body", function()
    local h = assert(core.new { timeout = 5 })
    local status, headers, body = h:request("GET", H.base_url .. "/__sim/stats", {})
    assert.equal(200, status)
    assert.matches("application/json", headers["content-type"])
    assert.matches('"total"', body)
    h:close()
  end)

  it("parses headers on first lookup, joining repeats", function()
    local h = assert(core.new { timeout = 5 })
    local _, headers = h:request("GET", H.base_url .. "/__sim/stats", {})
    assert.equal("keep-alive", headers.connection)
    assert.is_nil(headers["Content-Type"]) -- names are lower-case
    assert.is_nil(rawget(headers, ":raw"))
    h:close()
  end)

  it_54("iterates parsed headers with pairs", function()
    local h = assert(core.new { timeout = 5 })
    local _, headers = h:request("GET", H.base_url .. "/__sim/stats", {})
    local names = {}
    for k in pairs(headers) do names[#names + 1] = k end
    table.sort(names)
    assert.is_true(#names >= 3)
    assert.equal("connection", names[1])
    h:close()
  end)

  it("names the curl error when nothing listens", function()
    local h = assert(core.new { timeout = 2 })
    local status, err = h:request("GET", "http://127.0.0.1:1/", {})
    assert.is_nil(status)
    assert.equal("transport", err.kind)
    assert.equal("CURLE_COULDNT_CONNECT", err.name)
    assert.is_false(err.sent)
    h:close()
  end)

  it("refuses header values with CR or LF before sending", function()
    local h = assert(core.new())
    local before = H.total()
    local status, err = h:request("GET", H.base_url .. "/crm/v1/customers/x", { "X-A: b\r\nX-B: c" })
    assert.is_nil(status)
    assert.equal("validation", err.kind)
    assert.equal(before, H.total())
    h:close()
  end)

  it("closes twice safely and reports use after close", function()
    local h = assert(core.new())
    h:close()
    h:close()
    assert.is_true(h:closed())
    local status, err = h:request("GET", H.base_url .. "/__sim/stats", {})
    assert.is_nil(status)
    assert.equal("closed", err.name)
  end)

  it_54("closes on scope exit with <close>", function()
    local chunk = assert(load([[
      local core = ...
      local keep
      do
        local h <close> = core.new()
        keep = h
      end
      return keep:closed()
    ]]))
    assert.is_true(chunk(core))
  end)

  it("lets the collector free handles", function()
    local weak = setmetatable({}, { __mode = "v" })
    for i = 1, 50 do weak[i] = core.new() end
    collectgarbage()
    collectgarbage()
    assert.is_nil(next(weak))
  end)

  it("refuses responses larger than max_response_bytes", function()
    local h = assert(core.new { max_response_bytes = 16 })
    local status, err = h:request("GET", H.base_url .. "/__sim/stats", {})
    assert.is_nil(status)
    assert.equal("response_too_large", err.name)
    h:close()
  end)
end)

