-- backfill_restaurants into a database sink (crm.toast.db, SQLite): every restaurant's orders
-- land once, with its guest context (dining options, servers and items named), and the
-- database keeps each restaurant's checkpoint, so a second run writes nothing.
local H = require "helper"

local NOW = 1714521600 -- 2024-05-01T00:00:00Z, as in toast_restaurants_spec

local function seed(n)
  H.reset()
  H.config { toast_restaurants = n, toast_orders_seed = 5, toast_orders_days = 84, toast_orders_per_day = 2,
             toast_orders_end_date = "2024-05-01" }
  return H.control("GET", "/__sim/toast/restaurants").restaurants
end

local function has_driver()
  return (pcall(require, "luasql.sqlite3"))
end

describe("backfill_restaurants into a database", function()
  it("writes every restaurant's orders once, with its guest context, and resumes from the database", function()
    if not has_driver() then
      pending("lua-sql-sqlite3 is not installed (scripts/deps.sh installs it)")
      return
    end
    local db = require "crm.toast.db"
    local list = seed(3)
    local guids = {}
    for i, r in ipairs(list) do guids[i] = r.guid end
    local dir = H.tmpdir()
    local sink = assert(db.open("sqlite:" .. dir .. "/guests.db"))
    local toast = H.toast()
    local res = assert(toast:backfill_restaurants(guids, { sink = sink, guest_context = true, now = NOW,
                                                          spacing = 0, allow_fast = true }))
    assert.equal(3, res.done)
    for _, g in ipairs(guids) do
      local truth = H.control("GET", "/__sim/toast/orders_truth?restaurant=" .. g)
      local stored = sink:orders(g)
      assert.equal(#truth.orders, #stored)
      local seen = {}
      for _, o in ipairs(stored) do
        assert.is_nil(seen[o.guid], "order " .. o.guid .. " stored twice")
        seen[o.guid] = true
        assert.equal(1, o.revision)
      end
      -- the guest context reached the sink: servers are named in the report
      assert.is_true(#truth.orders > 0)
    end
    local servers = assert(sink:report("servers"))
    assert.is_true(#servers > 0)
    for _, row in ipairs(servers) do assert.is_string(row.server_name) end
    -- a second run: every checkpoint is in the database, nothing is written again
    local again = assert(toast:backfill_restaurants(guids, { sink = sink, guest_context = true, now = NOW,
                                                            spacing = 0, allow_fast = true }))
    assert.equal(0, again.orders)
    for _, g in ipairs(guids) do
      for _, o in ipairs(sink:orders(g)) do assert.equal(1, o.revision) end
    end
    sink:close()
    toast:close()
    H.sh("rm -rf " .. H.quote(dir))
  end)

  it("guests backfill --db URL --restaurants FILE: a line per restaurant; a rerun reads nothing", function()
    if not has_driver() then
      pending("lua-sql-sqlite3 is not installed (scripts/deps.sh installs it)")
      return
    end
    local list = seed(3)
    H.config { toast_orders_end_date = "" } -- the command line reads back from today
    local dir = H.tmpdir("state", "config")
    local file = dir .. "/restaurants.txt"
    local f = assert(io.open(file, "w"))
    for _, r in ipairs(list) do f:write(r.guid, "\n") end
    f:close()
    local cmd = ("CRM_SIM_PORT=%d XDG_STATE_HOME=%s XDG_CONFIG_HOME=%s %s bin/crm --sim toast guests backfill"
      .. " --weeks 4 --spacing 0.05 --db sqlite:%s/guests.db --restaurants %s"):format(H.port,
      H.quote(dir .. "/state"), H.quote(dir .. "/config"), H.lua, dir, file)
    local function lines(r)
      local out = {}
      for l in r.out:gmatch("[^\n]+") do out[#out + 1] = require("crm").json.decode(l) end
      return out
    end
    local r = H.capture(cmd)
    assert.equal(0, r.code, r.err)
    local first = lines(r)
    assert.equal(3, #first)
    for _, l in ipairs(first) do assert.is_true(l.orders > 0, r.out) end
    assert.truthy(r.err:find("-> the database", 1, true), r.err)
    r = H.capture(cmd)
    assert.equal(0, r.code, r.err)
    for _, l in ipairs(lines(r)) do assert.equal(0, l.orders, r.out) end
    H.sh("rm -rf " .. H.quote(dir))
  end)
end)
