-- Guest history in a real database (crm.toast.db), SQLite and PostgreSQL both: a hostile order
-- written and read back, a webhook delivered twice, a stale update ignored, a backfill killed with
-- SIGKILL and resumed that writes every order exactly once, and reports that match the JSON Lines
-- profiles of the same orders. PostgreSQL is a real server started here (spec/pg_server.lua).
local core = require "crm.core"
local crm = require "crm"
local guests = require "crm.toast.guests"
local H = require "helper"
local PG = require "pg_server"

local db = require "crm.toast.db"

local DAY = 86400
local NOW = 1714521600
local DATA = { toast_orders_seed = 11, toast_orders_days = 100, toast_orders_per_day = 8,
               toast_orders_end_date = "2024-05-01" }
local R = H.restaurant

-- The JSON line a command printed (its stdout), decoded.
local function json_line(out)
  for l in out:gmatch("[^\n]+") do
    if l:sub(1, 1) == "{" then return assert(crm.json.decode(l)) end
  end
  error("no JSON line in: " .. out)
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local tmp = os.tmpname()
os.remove(tmp)
assert(os.execute("mkdir -p " .. tmp .. "/config " .. tmp .. "/state"))

-- A hand-made context: one take-out and one dine-in option, a server, a menu item.
local CTX = {
  dining_options = { ["do-take"] = { guid = "do-take", name = "Take Out", behavior = "TAKE_OUT" },
                     ["do-dine"] = { guid = "do-dine", name = "Dine In", behavior = "DINE_IN" } },
  employees = { ["emp-1"] = { guid = "emp-1", name = "Ann Server" } },
  items = { ["item-1"] = { guid = "item-1", name = "Soup" } },
}

local function order(guid, o)
  o = o or {}
  local total = o.total or 21.5
  return {
    guid = guid, modifiedDate = o.modified or "2024-03-01T12:00:00.000+0000",
    openedDate = o.opened or "2024-03-01T11:00:00.000+0000", voided = o.voided or false,
    diningOption = { guid = o.dining or "do-take" }, server = { guid = "emp-1" },
    checks = crm.json.array { {
      guid = guid .. "-c1", displayNumber = "7",
      customer = o.customer or { firstName = "Ada", lastName = "Byron", email = "ada@example.org",
                                 phone = "+16175550100" },
      amount = total - 1.5, taxAmount = 1.5, totalAmount = total,
      selections = crm.json.array { { item = { guid = "item-1" }, displayName = o.item_name or "Soup",
                                      quantity = 2, price = total - 1.5 } },
      payments = crm.json.array { { type = "CREDIT", amount = total, tipAmount = 2 } },
    } },
  }
end

local function one_guest(sink, key)
  for _, row in ipairs(assert(sink:report("guests"))) do
    if row.guest_key == key then return row end
  end
  return nil
end

-- bin/crm in the background: its pid
local function crm_background(args, out)
  local cmd = ("CRM_SIM_PORT=%d XDG_CONFIG_HOME=%s XDG_STATE_HOME=%s %s%s bin/crm %s > %s 2>&1 < /dev/null & echo $!")
    :format(H.port, q(tmp .. "/config"), q(tmp .. "/state"), H.CLEAN_ENV, H.lua, args, q(out))
  return tonumber(H.sh_out("sh -c " .. q(cmd)):match("%d+"))
end

local function crm_run(args, env)
  local out = os.tmpname()
  local ok = os.execute(("CRM_SIM_PORT=%d XDG_CONFIG_HOME=%s XDG_STATE_HOME=%s %s%s %s bin/crm %s > %s 2>&1"
    .. " < /dev/null"):format(H.port, q(tmp .. "/config"), q(tmp .. "/state"), H.CLEAN_ENV, env or "", H.lua,
    args, q(out)))
  local text = H.slurp(out)
  os.remove(out)
  return ok == true or ok == 0, text
end

local function backends(body)
  describe("SQLite", function()
    local n = 0
    body(function()
      n = n + 1
      local path = ("%s/guests-%d.db"):format(tmp, n)
      os.remove(path)
      return "sqlite:" .. path
    end)
  end)
  describe("PostgreSQL", function()
    local why = PG.why_not()
    if why then
      pending(why)
      return
    end
    local server
    setup(function() server = PG.start(H.port + 700) end)
    teardown(function() if server then server.stop() end end)
    body(function() return server.create() end)

    -- The sink's connections to the database of `url` are ended by the server (as a restart or a
    -- failover ends them); returns once none is left.
    local function drop_connections(url)
      local name = url:match("/([^/]+)$")
      server.admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '" .. name .. "'")
      for _ = 1, 100 do
        if server.value("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = '" .. name .. "'") == "0" then
          return
        end
        core.sleep(0.05)
      end
      error("the connections to " .. name .. " did not end")
    end

    it("connects again when the server dropped the connection (a restart, a failover)", function()
      local url = server.create()
      local sink = assert(db.open(url))
      finally(function() sink:close() end)
      assert.equal(1, assert(sink:write_orders(R, { order("ord-before") }, CTX)))
      drop_connections(url)
      -- before: "no connection to the server" for this and every later call of the sink
      assert.equal(1, assert(sink:write_orders(R, { order("ord-after") })))
      drop_connections(url)
      assert.is_true(assert(sink:save_checkpoint(R, { windows_done = 3 })))
      drop_connections(url)
      assert.same({ windows_done = 3 }, assert(sink:load_checkpoint(R)))
      drop_connections(url)
      assert.equal(2, assert(sink:order_count(R)))
      assert.equal(1, #assert(sink:report("guests")))
    end)

    it("writes the order again when its connection is ended in the middle of its transaction", function()
      local url = server.create()
      local name = url:match("/([^/]+)$")
      local sink = assert(db.open(url))
      finally(function() sink:close() end)
      assert.equal(1, assert(sink:write_orders(R, { order("ord-mid", { modified = "2024-03-01T12:00:00.000+0000" }) },
        CTX)))
      -- Another session holds the order's row; once the sink's write waits for it (inside its
      -- transaction), that session ends the sink's connection, then lets the row go.
      local sql = ([[BEGIN;
        SELECT 1 FROM orders FOR UPDATE;
        DO $$ BEGIN
          FOR i IN 1..600 LOOP
            EXIT WHEN EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = '%s' AND wait_event_type = 'Lock');
            PERFORM pg_sleep(0.05);
          END LOOP;
        END $$;
        SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s' AND wait_event_type = 'Lock';
        COMMIT;]]):format(name, name)
      local out = tmp .. "/psql-mid.out"
      assert(H.sh(("%s/psql -h 127.0.0.1 -p %d -U postgres -d %s -c %s > %s 2>&1 &"):format(PG.BIN, server.port,
        name, q(sql), q(out))))
      for _ = 1, 100 do
        if server.value("SELECT COUNT(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE a.datname = '"
            .. name .. "' AND l.locktype = 'transactionid' AND l.granted") ~= "0" then break end
        core.sleep(0.05)
      end
      assert.equal(1, assert(sink:write_orders(R, { order("ord-mid", { modified = "2024-03-02T12:00:00.000+0000" }) })))
      local rows = assert(sink:orders(R))
      assert.equal(2, rows[1].revision)
      assert.equal("2024-03-02T12:00:00.000+0000", rows[1].modified_date)
      assert.matches("pg_terminate_backend%s+%-+%s+t", H.slurp(out)) -- it did end the waiting write
    end)

    it("a server that stays down is a db_connect error, and the sink works once it is back", function()
      local url = server.create()
      local sink = assert(db.open(url))
      finally(function() sink:close() end)
      local name = url:match("/([^/]+)$")
      -- no new connections to this database, then the sink's own ended: the server is "down" for it
      server.admin("ALTER DATABASE " .. name .. " ALLOW_CONNECTIONS false")
      drop_connections(url)
      local n, err = sink:write_orders(R, { order("ord-down") }, CTX)
      assert.is_nil(n)
      assert.equal("transport", err.kind)
      assert.equal("db_connect", err.code)
      assert.equal(0, err.written)
      server.admin("ALTER DATABASE " .. name .. " ALLOW_CONNECTIONS true")
      assert.equal(1, assert(sink:write_orders(R, { order("ord-down") }, CTX)))
    end)

    it("takes the password from PGPASSWORD (or ~/.pgpass), never from the URL", function()
      server.admin("DROP DATABASE IF EXISTS crm_pw_db")
      server.admin("DROP ROLE IF EXISTS crm_pw")
      server.admin("CREATE ROLE crm_pw LOGIN PASSWORD 'pw-for-this-spec-only'")
      server.admin("CREATE DATABASE crm_pw_db OWNER crm_pw")
      local url = q(("postgresql://crm_pw@127.0.0.1:%d/crm_pw_db"):format(server.port))
      local none = "-u PGPASSWORD PGPASSFILE=/nonexistent"
      local ok, out = crm_run("toast guests report --db " .. url, none)
      assert.is_false(ok)
      assert.matches("db_connect", out)
      ok, out = crm_run("--json-errors toast guests report --db " .. url, "PGPASSWORD=not-the-password")
      assert.is_false(ok)
      assert.matches('"exit":5', out)
      assert.is_nil(out:find("not-the-password", 1, true))
      ok, out = crm_run("toast guests report --db " .. url, "PGPASSWORD=pw-for-this-spec-only")
      assert.is_true(ok, out)
      local pgpass = tmp .. "/pgpass"
      H.spit(pgpass, ("127.0.0.1:%d:crm_pw_db:crm_pw:pw-for-this-spec-only\n"):format(server.port))
      assert(os.execute("chmod 600 " .. q(pgpass)))
      ok, out = crm_run("toast guests report --db " .. url, "-u PGPASSWORD PGPASSFILE=" .. q(pgpass))
      assert.is_true(ok, out)
    end)
  end)
end

describe("guest history in a database", function()
  it("refuses a password in a PostgreSQL URL without repeating it", function()
    local sink, err = db.open("postgresql://crm:s3cret-pass@127.0.0.1:5432/crm")
    assert.is_nil(sink)
    assert.equal("validation", err.kind)
    assert.equal("url", err.field)
    assert.is_nil(tostring(err):find("s3cret", 1, true))
    assert.matches("PGPASSWORD", tostring(err))
    local _, e2 = db.open("postgresql://crm@127.0.0.1/crm?password=s3cret-pass")
    assert.equal("url", e2.field)
    local _, e3 = db.open("mysql://crm@127.0.0.1/crm")
    assert.equal("url", e3.field)
    assert.same({ kind = "postgresql", user = "crm", host = "/run/postgresql", dbname = "crm" },
      db.parse_url("postgresql://crm@/crm?host=%2Frun%2Fpostgresql"))
  end)

  it("loads a database driver only when a database is opened", function()
    -- this checkout's plain build of the C core (make check points LUA_CPATH at a sanitizer one)
    local lua = "LUA_CPATH='./build/" .. H.lua .. "/?.so;;' " .. H.lua
    local code = "require 'crm'; require 'crm.toast.db'; assert(not package.loaded['luasql.sqlite3']"
      .. " and not package.loaded['luasql.postgres'])"
    assert.is_true(H.sh(lua .. " -e " .. q(code)))
    -- without the driver: an error that names the package, not a raise
    code = "local db = require 'crm.toast.db'; require 'crm.json'; package.cpath = ''"
      .. "; local s, e = db.open('sqlite:" .. tmp .. "/nodriver.db'); assert(s == nil and e.kind == 'transport'"
      .. " and e.code == 'db_driver' and tostring(e):find('lua-sql-sqlite3', 1, true))"
    assert.is_true(H.sh(lua .. " -e " .. q(code)))
  end)

  backends(function(new_url)
    it("writes a hostile order (quotes, NUL, '; DROP TABLE) and reads it back intact", function()
      local url = new_url()
      local sink = assert(db.open(url))
      local evil = "O'Brien\"; DROP TABLE orders; --"
      local o = order("ord-'; DROP TABLE guests; --", {
        customer = { firstName = evil, lastName = "Nul\0Byte\\'", email = "o'brien'--@example.org",
                     phone = "+16175550111" },
        item_name = "Soup'); DELETE FROM selections; --",
      })
      o.checks[1].selections[1].item = { guid = "not-on-the-menu'" }
      o.note = "tab\tnul\0quote'dq\"backslash\\ utf8 é"
      assert.equal(1, sink:write_orders(R, { o }, CTX))
      local back = assert(sink:get_order(R, o.guid))
      assert.same(crm.json.decode(crm.json.encode(o)), back)
      assert.equal(o.note, back.note)
      assert.equal("Nul\0Byte\\'", back.checks[1].customer.lastName)
      local g = assert(one_guest(sink, "o'brien'--@example.org"))
      assert.equal(evil, g.first_name)
      -- text columns cannot hold NUL: it is U+FFFD there (the document keeps it)
      assert.equal("Nul\239\191\189Byte\\'", g.last_name)
      assert.equal(1, g.order_count)
      local items = assert(sink:report("favourite_items"))
      assert.equal("Soup'); DELETE FROM selections; --", items[1].name)
      assert.equal(1, #assert(sink:orders(R)))
      -- values that spell the columns' names stay values
      assert.equal(1, sink:write_orders(R, { order("ord-names", { customer = { firstName = "scope",
        lastName = "guest_key", email = "scope.guest_key@example.org" } }) }))
      local named = assert(one_guest(sink, "scope.guest_key@example.org"))
      assert.equal("scope", named.first_name)
      assert.equal("guest_key", named.last_name)
      sink:close()
      -- nothing was dropped: the tables are all there on a fresh open
      local again = assert(db.open(url))
      assert.equal(2, #assert(again:orders(R)))
      -- counted in the database, the same number; another restaurant has none; a bad GUID is refused
      assert.equal(2, again:order_count(R))
      assert.equal(0, again:order_count("00000000-0000-4000-8000-000000000000"))
      local _, cerr = again:order_count("")
      assert.equal("validation", cerr.kind)
      assert.equal(2, #assert(again:report("guests")))
      again:close()
    end)

    it("writes orders with absurd amounts and quantities on both databases, counted as none", function()
      local sink = assert(db.open(new_url()))
      finally(function() sink:close() end)
      -- before: PostgreSQL refused it ("bigint out of range"), so a backfill stopped there and a
      -- drain read the same queued order again and again; SQLite kept 1e19 cents
      local o = order("ord-absurd", { total = 1e17 })
      o.checks[1].payments[1] = { type = "CASH", amount = -1e300, tipAmount = 1e17 }
      -- two orders of 1e308 soups: PostgreSQL's SUM overflowed, and favourite_items failed for good
      o.checks[1].selections[1].quantity = 1e308
      local o2 = order("ord-absurd-2")
      o2.checks[1].selections[1].quantity = 1e308
      assert.equal(3, assert(sink:write_orders(R, { o, o2, order("ord-next", { total = 10 }) }, CTX)))
      local g = assert(one_guest(sink, "ada@example.org"))
      assert.equal(3, g.order_count)
      assert.equal(2150 + 1000, g.total_cents)
      local items = assert(sink:report("favourite_items"))
      assert.equal(1 + 1 + 2, items[1].quantity)
      -- the profile set counts the same
      local set = assert(guests.new(CTX))
      set:fold(o)
      assert.equal(0, set:get("ada@example.org").total_spend)
    end)

    it("refuses a bad restaurant GUID or order GUID before querying, naming it", function()
      local sink = assert(db.open(new_url()))
      for _, bad in ipairs { {}, 42, false } do
        local res, err = sink:get_order(R, bad)
        assert.is_nil(res)
        assert.equal("validation", err.kind)
        assert.equal("guid", err.field)
      end
      local res, err = sink:get_order(42, "ord-1")
      assert.is_nil(res)
      assert.equal("restaurant_guid", err.field)
      for _, call in ipairs { "orders", "order_count", "load_checkpoint" } do
        local r2, e2 = sink[call](sink, { R })
        assert.is_nil(r2)
        assert.equal("restaurant_guid", e2.field)
      end
      sink:close()
      local r3, e3 = sink:get_order(R, "ord-1")
      assert.is_nil(r3)
      assert.equal("closed", e3.code)
    end)

    it("takes a restaurant GUID in any case as the same restaurant (a backfill and a webhook agree)", function()
      local sink = assert(db.open(new_url()))
      finally(function() sink:close() end)
      local upper = R:upper()
      assert.not_equal(R, upper)
      -- before: two restaurants, the order stored twice and its guest counted twice
      assert.equal(1, assert(sink:write_orders(upper, { order("ord-case") }, CTX)))
      assert.equal(0, assert(sink:write_orders(R, { order("ord-case") }, CTX)))
      assert.equal(1, sink:order_count(R))
      assert.equal(1, sink:order_count(upper))
      assert.equal(1, one_guest(sink, "ada@example.org").order_count)
      assert.is_true(sink:save_checkpoint(upper, { windows_done = 2 }))
      assert.same({ windows_done = 2 }, sink:load_checkpoint(R))
      assert.same(sink:get_order(R, "ord-case"), sink:get_order(upper, "ord-case"))
      -- a restaurant that is not a GUID is kept as it is
      assert.equal(1, assert(sink:write_orders("Not-A-Guid", { order("ord-x") }, CTX)))
      assert.equal(0, sink:order_count("not-a-guid"))
    end)

    it("changes nothing when a webhook is delivered twice", function()
      local sink = assert(db.open(new_url()))
      local event = { eventType = "ORDER_UPDATED", details = { order = order("ord-twice") } }
      assert.equal(1, sink:write_orders(R, { event }, CTX))
      local before = one_guest(sink, "ada@example.org")
      assert.equal(0, sink:write_orders(R, { event }))     -- the stored context is used
      assert.equal(0, sink:write_orders(R, { event.details.order }, CTX))
      assert.same(before, one_guest(sink, "ada@example.org"))
      local rows = assert(sink:orders(R))
      assert.equal(1, #rows)
      assert.equal(1, rows[1].revision)
      assert.equal(21.5, before.total_spend)
      assert.equal(1, before.order_count)
      sink:close()
    end)

    it("ignores a stale update, replaces with a newer one, and takes back a voided order", function()
      local sink = assert(db.open(new_url()))
      local v1 = order("ord-v", { modified = "2024-03-01T12:00:00.000+0000", total = 10 })
      local v2 = order("ord-v", { modified = "2024-03-01T13:00:00.000+0000", total = 30 })
      assert.equal(1, sink:write_orders(R, { v2 }, CTX))
      assert.equal(0, sink:write_orders(R, { v1 }, CTX))
      local g = one_guest(sink, "ada@example.org")
      assert.equal(30, g.total_spend)
      assert.equal(1, g.order_count)
      assert.equal(30 * 100, g.total_cents)
      local v3 = order("ord-v", { modified = "2024-03-01T14:00:00.000+0000", voided = true })
      assert.equal(1, sink:write_orders(R, { v3 }, CTX))
      assert.is_nil(one_guest(sink, "ada@example.org"))
      local rows = assert(sink:orders(R))
      assert.equal(2, rows[1].revision)
      assert.is_false(rows[1].counted)
      assert.equal("voided", rows[1].reason)
      -- the same rule as the profile set
      local set = assert(guests.new(CTX))
      set:fold(v2)
      assert.equal("stale", set:fold(v1).reason)
      sink:close()
    end)

    it("keys guests per restaurant, or per group when restaurants are grouped", function()
      local url = new_url()
      local other = "0b6f8a64-1d8e-4c55-a0de-6c4b9a2f7e01"
      local sink = assert(db.open(url))
      assert.equal(1, sink:write_orders(R, { order("ord-a") }, CTX))
      assert.equal(1, sink:write_orders(other, { order("ord-b") }, CTX))
      local rows = assert(sink:report("guests"))
      assert.equal(2, #rows)
      assert.equal(1, rows[1].order_count)
      sink:close()
      local grouped = assert(db.open(url, { groups = { [R] = "group-1", [other] = "group-1" } }))
      assert.equal(1, grouped:write_orders(R, { order("ord-c") }, CTX))
      assert.equal(1, grouped:write_orders(other, { order("ord-d") }, CTX))
      local g
      for _, row in ipairs(assert(grouped:report("guests"))) do
        if row.scope == "group-1" then g = row end
      end
      assert.equal(2, g.order_count)
      assert.equal(2, g.restaurants)
      grouped:close()
    end)

    it("keeps checkpoints per restaurant", function()
      local url = new_url()
      local sink = assert(db.open(url))
      assert.equal(url:match("^(%a+):"), sink:kind())
      assert.is_nil(sink:load_checkpoint(R))
      local cp = { version = 1, startDate = "2024-02-07T00:00:00.000+0000", endDate = "2024-05-01T00:00:00.000+0000",
                   through = "2024-03-06T00:00:00.000+0000", windows_done = 1, orders = 224 }
      assert.is_true(sink:save_checkpoint(R, cp))
      assert.same(cp, sink:load_checkpoint(R))
      assert.is_nil(sink:load_checkpoint("another-restaurant"))
      sink:close()
      assert.is_true(sink:close())
      local _, err = sink:load_checkpoint(R)
      assert.equal("closed", err.code)
    end)

    it("gives reports that match the JSON Lines profiles of the same orders", function()
      H.reset()
      H.config(DATA)
      local sink = assert(db.open(new_url()))
      local c = H.toast()
      local set = assert(c:new_profile_set())
      local res = assert(c:backfill_orders { now = NOW, spacing = 0, allow_fast = true, profiles = set,
        on_window = function(orders) assert(sink:write_orders(R, orders, set.context)) end })
      assert.equal(res.orders, #assert(sink:orders(R)))
      local path = tmp .. "/profiles.jsonl"
      local fh = assert(io.open(path, "w"))
      assert(set:write_jsonl(fh))
      fh:close()
      local profiles = {}
      for line in io.lines(path) do
        local p = crm.json.decode(line)
        profiles[p.key] = p
      end
      local rows = assert(sink:report("guests"))
      assert.equal(set:count(), #rows)
      assert.is_true(#rows > 10)
      for i, row in ipairs(rows) do
        local p = assert(profiles[row.guest_key], "no profile for a reported guest")
        assert.equal(p.order_count, row.order_count)
        assert.equal(p.check_count, row.check_count)
        assert.near(p.total_spend, row.total_spend, 0.001)
        assert.near(p.tips, row.tips, 0.001)
        assert.equal(p.last_order, row.last_order)
        assert.equal(p.first_order, row.first_order)
        assert.equal(p.last_order_guid, row.last_order_guid)
        assert.equal(p.firstName, row.first_name)
        assert.equal(p.lastName, row.last_name)
        assert.equal(p.email, row.email)
        assert.equal(p.phone, row.phone)
        if i > 1 then assert.is_true(rows[i - 1].total_cents >= row.total_cents, "by spend") end
      end
      local fav = {}
      for _, row in ipairs(assert(sink:report("favourite_items", { limit = 3 }))) do
        fav[row.guest_key] = fav[row.guest_key] or {}
        fav[row.guest_key][row.rank] = row
      end
      local servers = {}
      for _, row in ipairs(assert(sink:report("servers"))) do
        servers[row.guest_key] = servers[row.guest_key] or {}
        servers[row.guest_key][row.server_guid] = row
      end
      for key, p in pairs(profiles) do
        for rank = 1, math.min(3, #p.favourite_items) do
          local want, got = p.favourite_items[rank], fav[key][rank]
          assert.equal(want.quantity, got.quantity)
          assert.equal(want.orders, got.orders)
          assert.equal(want.guid, got.item_guid)
        end
        for _, s in ipairs(p.servers) do
          assert.equal(s.orders, servers[key][s.guid].orders)
          assert.equal(s.name, servers[key][s.guid].server_name)
        end
      end
      -- lapsed: no order in the last 30 days before NOW, as the profiles say
      local lapsed = {}
      for _, row in ipairs(assert(sink:report("lapsed", { days = 30, now = NOW }))) do lapsed[row.guest_key] = true end
      local n = 0
      for key, p in pairs(profiles) do
        local is_lapsed = guests.parse_time(p.last_order) < NOW - 30 * DAY
        assert.equal(is_lapsed, lapsed[key] == true)
        if is_lapsed then n = n + 1 end
      end
      assert.is_true(n > 0)
      sink:close()
    end)

    it("resumes a backfill killed with SIGKILL and writes every order exactly once", function()
      H.reset()
      H.config { toast_orders_per_day = 20, toast_orders_days = 90 }
      local url = new_url()
      local log = tmp .. "/killed.log"
      local pid = crm_background("--sim toast guests backfill --db " .. q(url) .. " --window-days 7", log)
      assert.is_number(pid)
      local watch, at_kill
      for _ = 1, 600 do
        watch = watch or db.open(url)
        local rows = watch and watch:orders(R)
        if rows and #rows > 0 then
          assert(H.sh("kill -KILL " .. pid))
          at_kill = #rows
          break
        end
        core.sleep(0.05)
      end
      assert.is_number(at_kill, "the backfill wrote nothing in 30 s: " .. H.slurp(log))
      for _ = 1, 100 do
        if not H.sh("kill -0 " .. pid) then break end
        core.sleep(0.05)
      end
      local cp = watch:load_checkpoint(R)
      local stored = assert(watch:orders(R))
      -- a kill never leaves half an order: each stored order has all its guests' rows
      for _, row in ipairs(stored) do assert.equal(row.counted, row.guests > 0) end
      local ok, out = crm_run("--sim toast guests backfill --db " .. q(url) .. " --window-days 7")
      assert.is_true(ok, out)
      local final = assert(watch:load_checkpoint(R))
      assert.equal(final.endDate, final.through)
      if cp then assert.equal(cp.startDate, final.startDate) end
      local t = H.control("GET", "/__sim/toast/orders_truth?startDate=" .. core.escape(final.startDate)
        .. "&endDate=" .. core.escape(final.endDate))
      local rows = assert(watch:orders(R))
      assert.is_true(at_kill < #t.orders, "the kill came after the backfill had finished")
      assert.equal(#t.orders, #rows)
      local want = {}
      for _, o in ipairs(t.orders) do want[o.guid] = true end
      for _, row in ipairs(rows) do
        assert.is_true(want[row.guid], "an order that is not in the range")
        assert.equal(1, row.revision, "an order written twice")
      end
      -- the same command again changes nothing
      ok, out = crm_run("--sim toast guests backfill --db " .. q(url) .. " --window-days 7")
      assert.is_true(ok, out)
      assert.matches('"written":0', out)
      -- the line: this run's windows and writes, the whole backfill's orders and windows
      local line = json_line(out)
      assert.same({ 0, final.windows_done, #rows }, { line.windows, line.windows_done, line.orders })
      watch:close()
    end)

    it("says what a resumed backfill fetched, and that a finished one had nothing left", function()
      H.reset()
      H.config { toast_orders_per_day = 5, toast_orders_days = 40 }
      local url = new_url()
      -- two windows in this process, then stopped as a kill stops it: the database keeps the checkpoint
      local toast = H.toast()
      local sink = assert(db.open(url))
      local gctx = assert(toast:get_guest_context())
      local n = 0
      local res = toast:backfill_orders { weeks = 4, window_days = 7, spacing = 0, allow_fast = true,
                                          profiles = false,
                                          on_window = function(orders) assert(sink:write_orders(R, orders, gctx)) end,
                                          on_progress = function(p)
                                            assert(sink:save_checkpoint(R, p.checkpoint))
                                            n = n + 1
                                            if n == 2 then error("stopped", 0) end
                                          end }
      toast:close()
      assert.is_nil(res)
      local cp = assert(sink:load_checkpoint(R))
      assert.equal(2, cp.windows_done)
      local ok, out = crm_run("--sim toast guests backfill --db " .. q(url) .. " --window-days 7")
      assert.is_true(ok, out)
      local final = assert(sink:load_checkpoint(R))
      local total = #assert(sink:orders(R))
      assert.equal(final.orders, total)
      assert.is_true(total > cp.orders)
      -- this run's windows and orders, and the total apart
      assert.truthy(out:find(("backfill: resumed after 2 windows: %d orders in %d windows (%d ordersBulk calls),"
        .. " %d in all, %d written to the database"):format(total - cp.orders, final.windows_done - 2,
        final.windows_done - 2, total, total - cp.orders), 1, true), out)
      -- again: nothing left, said as such (not "N orders in 0 windows")
      ok, out = crm_run("--sim toast guests backfill --db " .. q(url) .. " --window-days 7")
      assert.is_true(ok, out)
      assert.matches('"written":0', out)
      -- the line: this run's windows and writes, the whole backfill's orders and windows
      local line = json_line(out)
      assert.same({ 0, final.windows_done, total }, { line.windows, line.windows_done, line.orders })
      assert.truthy(out:find(("backfill: nothing left to fetch (it finished before: %d orders in %d windows);"
        .. " the database holds %d orders of this restaurant"):format(total, final.windows_done, total), 1, true), out)
      assert.is_nil(out:find("in 0 windows", 1, true), out)
      sink:close()
    end)

    it("lets two processes write the same orders at once: each stored once, no error", function()
      H.reset()
      local url = new_url()
      assert(db.open(url)):close() -- the schema first: the race here is the orders'
      local logs = { tmp .. "/twin-1.log", tmp .. "/twin-2.log" }
      local pids = {}
      for i = 1, 2 do pids[i] = crm_background("--sim toast guests backfill --db " .. q(url), logs[i]) end
      for _, pid in ipairs(pids) do
        for _ = 1, 600 do
          if not H.sh("kill -0 " .. pid) then break end
          core.sleep(0.05)
        end
      end
      local written = 0
      for i = 1, 2 do
        local summary = crm.json.decode(H.slurp(logs[i]):match("{[^\n]*\"written\"[^\n]*}") or "null")
        assert.is_table(summary, H.slurp(logs[i]))
        written = written + summary.written
      end
      local sink = assert(db.open(url))
      local rows = assert(sink:orders(R))
      assert.is_true(#rows > 100)
      assert.equal(#rows, written) -- each order written by exactly one of the two
      for _, row in ipairs(rows) do assert.equal(1, row.revision) end
      sink:close()
    end)

    it("refuses a database whose schema is newer than this crm", function()
      local url = new_url()
      local sink = assert(db.open(url))
      sink:close()
      assert(db.open(url)):close() -- migrations already applied: nothing to do
      local luasql = url:find("^sqlite:") and require("luasql.sqlite3").sqlite3()
        or require("luasql.postgres").postgres()
      local cfg = db.parse_url(url)
      local conn = cfg.path and luasql:connect(cfg.path)
        or luasql:connect(cfg.dbname, cfg.user, nil, cfg.host, tostring(cfg.port))
      assert(conn:execute("INSERT INTO schema_version (version, applied_at) VALUES (99, 0)"))
      conn:close()
      luasql:close()
      local again, err = db.open(url)
      assert.is_nil(again)
      assert.equal("transport", err.kind)
      assert.equal("db_schema", err.code)
      assert.matches("99", err.message)
    end)

    it("prints the reports as JSON Lines from the command line", function()
      local url = new_url()
      local sink = assert(db.open(url))
      assert.equal(2, sink:write_orders(R, { order("ord-1"), order("ord-2", {
        opened = "2024-03-05T11:00:00.000+0000", customer = { firstName = "Bo", email = "bo@example.org" } }) }, CTX))
      sink:close()
      local ok, out = crm_run("toast guests report --db " .. q(url) .. " --lapsed-days 1")
      assert.is_true(ok, out)
      local by = {}
      for line in out:gmatch("[^\n]+") do
        local v = assert(crm.json.decode(line))
        by[v.report] = (by[v.report] or 0) + 1
      end
      assert.same({ guests = 2, last_orders = 2, favourite_items = 2, servers = 2, lapsed = 2 }, by)
      ok, out = crm_run("toast guests report --db " .. q(url) .. " --report servers")
      assert.is_true(ok, out)
      assert.equal(2, select(2, out:gsub('"report":"servers"', "")))
      -- the database keeps the backfill's checkpoint: a journal as well is a usage error
      ok, out = crm_run("--sim toast guests backfill --db " .. q(url) .. " --checkpoint x.jsonl")
      assert.is_false(ok)
      assert.matches("leave out %-%-checkpoint", out)
    end)
  end)
end)

-- The OpenResty sample's folding: the webhook handler queues orders in its dict; `crm toast
-- guests drain` writes them to the database outside nginx.
describe("OpenResty order queue drained into a database", function()
  local N = require "openresty_nginx"
  if not N.available then
    pending("nginx with lua-nginx-module is not installed (" .. N.NGINX .. ")")
    return
  end
  local ng, http
  setup(function()
    ng = N.start(H.port + 720)
    http = assert(core.new { timeout = 10 })
  end)
  teardown(function()
    if ng then ng.stop() end
    if http then http:close() end
  end)

  local function post(value, headers)
    local body = crm.json.encode(value)
    local h = { "Content-Type: application/json", N.sign(body) }
    for _, x in ipairs(headers or {}) do h[#h + 1] = x end
    local status, _, answer = http:request("POST", ng.plugin .. "/webhooks/orders", h, body)
    return status, answer
  end

  it("queues each delivery and drains them so that a webhook delivered twice counts once", function()
    local url = "sqlite:" .. tmp .. "/drain.db"
    local sink = assert(db.open(url))
    assert.equal(0, sink:write_orders(R, {}, CTX)) -- the context a backfill would have stored
    sink:close()
    local other = "0b6f8a64-1d8e-4c55-a0de-6c4b9a2f7e01"
    local event = { eventType = "ORDER_UPDATED", details = { order = order("ord-hook-1") } }
    assert.equal(202, (post(event)))
    assert.equal(202, (post(event)))                       -- delivered twice
    assert.equal(202, (post(order("ord-hook-2"), { "Toast-Restaurant-External-ID: " .. other })))
    local unsigned = http:request("POST", ng.plugin .. "/webhooks/orders", { "Content-Type: application/json" },
      crm.json.encode(order("ord-forged")))
    assert.equal(401, unsigned)
    local queue = ng.plugin .. "/orders/queue"
    local ok, out = crm_run("toast guests drain --db " .. q(url) .. " --queue " .. q(queue) .. " --max 2")
    assert.is_true(ok, out)
    local summary = crm.json.decode(out:match("[^\n]*drained[^\n]*"))
    assert.equal(3, summary.drained)
    assert.equal(2, summary.written)
    sink = assert(db.open(url))
    local rows = assert(sink:orders(R))
    assert.equal(1, #rows)
    assert.equal(1, rows[1].revision)
    assert.is_true(rows[1].counted)
    assert.equal(1, #assert(sink:orders(other)))
    assert.equal(1, one_guest(sink, "ada@example.org").order_count)
    sink:close()
    -- acknowledged: a second drain finds nothing
    ok, out = crm_run("toast guests drain --db " .. q(url) .. " --queue " .. q(queue))
    assert.is_true(ok, out)
    assert.matches('"drained":0', out)
    -- a drain that read an order and died before its ack: the next one reads it again
    assert.equal(202, (post(order("ord-hook-3"))))
    local status, _, body = http:request("GET", queue .. "?max=10", {})
    assert.equal(200, status)
    assert.equal(1, #crm.json.decode(body).items)
    ok, out = crm_run("toast guests drain --db " .. q(url) .. " --queue " .. q(queue))
    assert.is_true(ok, out)
    assert.matches('"drained":1', out)
    assert.matches('"written":1', out)
  end)

  it("refuses at the door what the database would refuse, so no queued order blocks the drain", function()
    local url = "sqlite:" .. tmp .. "/drain-poison.db"
    local sink = assert(db.open(url))
    assert.equal(0, sink:write_orders(R, {}, CTX))
    sink:close()
    -- before: both were queued (202), and every drain stopped at them for good (the sink refuses
    -- a GUID longer than 255 bytes, so the queue was never acknowledged past them)
    local long = order(("g"):rep(300))
    assert.equal(400, (post(long)))
    assert.equal(400, (post(order("ord-long-restaurant"), { "Toast-Restaurant-External-ID: " .. ("a"):rep(300) })))
    assert.equal(202, (post(order("ord-after-poison"))))
    local queue = ng.plugin .. "/orders/queue"
    local ok, out = crm_run("toast guests drain --db " .. q(url) .. " --queue " .. q(queue))
    assert.is_true(ok, out)
    assert.matches('"written":1', out)
  end)
end)
