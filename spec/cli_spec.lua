-- bin/crm as a user runs it: a subprocess against the simulator, its stdout, stderr and exit code.
local core = require "crm.core"
local crm = require "crm"
local H = require "helper"

-- A private config and state home, so a developer's own ~/.config/crm never leaks in.
local home = os.tmpname()
os.remove(home)
assert(os.execute("mkdir -p " .. home .. "/config " .. home .. "/state"))

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- crm(args [, env]) -> {code, out, err}: bin/crm under the runtime running the specs.
local function crm_run(args, env)
  return H.capture(("CRM_SIM_PORT=%d XDG_CONFIG_HOME=%s XDG_STATE_HOME=%s %s %s bin/crm %s"):format(H.port,
    q(home .. "/config"), q(home .. "/state"), env or "", H.lua, args))
end

-- Every line of stdout decoded: JSON Lines, one object per line.
local function lines(text)
  local out = {}
  for l in text:gmatch("([^\n]*)\n") do
    local v = crm.json.decode(l)
    assert(type(v) == "table", "not a JSON object line: " .. l)
    out[#out + 1] = v
  end
  assert.equal(#out == 0 and "" or "\n", text:sub(-1) == "\n" and "\n" or text)
  return out
end

-- Every secret the simulator accepts or issued.
local function secrets()
  local s = H.control("GET", "/__sim/secrets")
  local list = { s.toast_client_secret, s.tablecheck_api_key }
  for _, t in ipairs(s.tokens or {}) do list[#list + 1] = t end
  return list
end

local function assert_no_secret(text, list)
  for _, s in ipairs(list) do
    assert.is_nil(text:find(s, 1, true), "a secret appeared in the output")
  end
end

-- What changed server side: every write the simulator counted.
local function writes()
  local n = 0
  for key, count in pairs(H.stats().requests) do
    local method, path = key:match("^(%u+) (.*)$")
    if method ~= "GET" and not path:find("/search$") and not path:find("/customer_search$")
        and not path:find("/login$") then
      n = n + count
    end
  end
  return n
end

local function tc_customer_count()
  local _, _, pagination = assert(H.tablecheck():search_customers({}))
  return pagination.total_results
end

describe("crm (the command line)", function()
  before_each(function() H.reset() end)

  it("lists every command with an example in --help, on stdout, exit 0", function()
    local r = crm_run("--help")
    assert.equal(0, r.code)
    for _, cmd in ipairs { "crm toast customers find-or-create", "crm tablecheck customers export",
                           "crm tablecheck merge", "crm sim start", "Examples:" } do
      assert.truthy(r.out:find(cmd, 1, true), cmd)
    end
    r = crm_run("tablecheck customers --help")
    assert.equal(0, r.code)
    assert.truthy(r.out:find("crm tablecheck customers export", 1, true))
  end)

  it("exports every customer as JSON Lines: one line per customer the simulator holds", function()
    H.tc_seed(450, "Cli")
    local r = crm_run("--sim tablecheck customers export")
    assert.equal(0, r.code, r.err)
    local got = lines(r.out)
    assert.equal(tc_customer_count(), #got)
    assert.equal(450, #got)
    local ids = {}
    for _, c in ipairs(got) do
      assert.is_string(c.id)
      ids[c.id] = true
    end
    local n = 0
    for _ in pairs(ids) do n = n + 1 end
    assert.equal(450, n)
    -- [] stays [] (crm.json), and the summary is on stderr, not stdout
    assert.truthy(r.out:find('"tags":[]', 1, true))
    assert.truthy(r.err:find("export: 450 customers", 1, true))
  end)

  it("finds or creates from a CSV; run twice, the second run creates nothing", function()
    local tag = core.guid():sub(1, 8)
    local csv = home .. "/guests-" .. tag .. ".csv"
    H.spit(csv, "firstName,lastName,email,phone\n"
      .. ("Ann,Cli%s,ann.%s@example.org,\n"):format(tag, tag)
      .. ("Bob,Cli%s,,+1 (206) 555-0142\n"):format(tag)
      .. ("\"Lee, Jr\",Cli%s,ANN.%s@example.org,\n"):format(tag, tag:upper()))
    local r = crm_run("--sim toast customers find-or-create --input " .. q(csv) .. " --concurrency 4")
    assert.equal(0, r.code, r.err)
    local got = lines(r.out)
    assert.equal(3, #got)
    local created = 0
    for _, l in ipairs(got) do
      assert.is_number(l.line)
      if l.status == "created" then created = created + 1 end
    end
    assert.equal(2, created)     -- the third row is Ann again, by her email in other case
    local posts = H.count("POST /crm/v1/customers")
    assert.equal(2, posts)

    r = crm_run("--sim toast customers find-or-create --input " .. q(csv))
    assert.equal(0, r.code, r.err)
    for _, l in ipairs(lines(r.out)) do assert.equal("found", l.status) end
    assert.equal(posts, H.count("POST /crm/v1/customers"))
    assert.truthy(r.err:find("0 created", 1, true))
  end)

  it("writes a failing --input row as a result line, goes on, and exits non-zero", function()
    local tag = core.guid():sub(1, 8)
    local jsonl = home .. "/guests-" .. tag .. ".jsonl"
    H.spit(jsonl, ('{"firstName":"Ok","lastName":"Row","email":"ok.%s@example.org"}\n'):format(tag)
      .. '{"firstName":"NoLast","email":"x@example.org"}\n'
      .. ('{"firstName":"Also","lastName":"Ok","email":"also.%s@example.org"}\n'):format(tag))
    local r = crm_run("--sim toast customers find-or-create --input " .. q(jsonl))
    assert.equal(2, r.code)
    local got = lines(r.out)
    assert.equal(3, #got)
    assert.same({ "created", "failed", "created" }, { got[1].status, got[2].status, got[3].status })
    assert.equal("validation", got[2].error.kind)
    assert.equal(2, got[2].line)
  end)

  describe("exit codes, with stdout left clean", function()
    local missing = "00000000-0000-4000-8000-000000000001"

    local function expect(code, r, kind)
      assert.equal(code, r.code, r.err)
      assert.equal("", r.out)
      -- one line on stderr, the error's redacted tostring
      local first = r.err:match("^[^\n]*")
      assert.truthy(first:find("^crm " .. kind), r.err)
    end

    it("2 for usage and validation", function()
      local r = crm_run("toast customers frobnicate")
      assert.equal(2, r.code)
      assert.equal("", r.out)
      expect(2, crm_run("--sim toast customers get not-a-guid"), "validation")
      expect(2, crm_run("--sim tablecheck customers create --data '{\"first_name\":'"), "validation")
    end)

    it("3 for auth", function()
      expect(3, crm_run("tablecheck customers list", ("CRM_TABLECHECK_URL=%s CRM_TABLECHECK_API_KEY=wrong-key")
        :format(H.tablecheck_url)), "auth")
    end)

    it("4 for http", function()
      expect(4, crm_run("--sim toast customers get " .. missing), "http 404")
    end)

    it("5 for transport", function()
      H.fault { path = "/api/crm/v1/shops", drop = true, count = 20 }
      expect(5, crm_run("--sim tablecheck shops list"), "transport")
    end)

    it("6 for timeout", function()
      H.fault { path = "/api/crm/v1/shops", delay = 2, count = 20 }
      expect(6, crm_run("--sim --timeout 0.3 tablecheck shops list"), "timeout")
    end)

    it("7 for decode", function()
      H.fault { path = "/api/crm/v1/shops", status = 200, body = "<html>not json</html>", count = 20 }
      expect(7, crm_run("--sim tablecheck shops list"), "decode")
    end)

    it("8 when the outcome is unknown, whatever the kind", function()
      H.fault { method = "POST", path = "/api/crm/v1/customers", status = 500, count = 5 }
      local body = crm.json.encode(H.tc_customer())
      local r = crm_run("--sim tablecheck customers create --data " .. q(body))
      expect(8, r, "http 500")
      assert.truthy(r.err:find("outcome_unknown", 1, true))
    end)

    it("--json-errors writes the error as one JSON object", function()
      local r = crm_run("--sim --json-errors toast customers get " .. missing)
      assert.equal(4, r.code)
      assert.equal("", r.out)
      local e = crm.json.decode(r.err:match("^[^\n]*"))
      assert.equal("http", e.kind)
      assert.equal(404, e.status)
      assert.equal(4, e.exit)
    end)
  end)

  it("never prints a secret: errors, --debug, --dry-run, --json-errors, echoed requests", function()
    H.tc_seed(5, "Leak")
    local outputs = {}
    local function keep(r) outputs[#outputs + 1] = r.out .. r.err end
    keep(crm_run("--sim --debug toast customers find-or-create --first-name Sec --last-name Ret"
      .. " --email sec.ret@example.org"))
    keep(crm_run("--sim --debug --dry-run tablecheck customers create --data "
      .. q(crm.json.encode(H.tc_customer()))))
    keep(crm_run("--sim --debug tablecheck customers export"))
    -- the server echoes the request and its Authorization header into its error
    H.fault { path = "/api/crm/v1/shops", status = 400, echo = true, count = 5 }
    keep(crm_run("--sim --debug tablecheck shops list"))
    keep(crm_run("--sim --json-errors tablecheck shops list"))
    H.fault { path = "/authentication/v1/authentication/login", status = 401, echo = true, count = 5 }
    keep(crm_run("--sim --json-errors --debug toast customers get 00000000-0000-4000-8000-000000000002"))
    local list = secrets()
    assert.is_true(#list >= 3)
    for _, text in ipairs(outputs) do assert_no_secret(text, list) end
    -- the debug lines were there, the secret was not
    assert.truthy(outputs[1]:find("debug: ", 1, true))
  end)

  it("keeps customer data off stderr in --debug and --dry-run", function()
    local tag = core.guid():sub(1, 8)
    local email = "pii." .. tag .. "@example.org"
    local r = crm_run("--sim --debug --dry-run toast customers create --first-name Zelda" .. tag
      .. " --last-name Pii --email " .. email)
    assert.equal(0, r.code, r.err)
    assert.is_nil(r.err:find(email, 1, true))
    assert.is_nil(r.err:find("Zelda" .. tag, 1, true))
    assert.truthy(r.err:find("dry-run: POST /crm/v1/customers", 1, true))
    -- stdout carries the request it would send, customer data included: that is the point
    local plan = lines(r.out)[1]
    assert.is_true(plan.dry_run)
    assert.equal(email, plan.body.email)
  end)

  it("--dry-run sends no write, counted by the simulator (merges read, but never PUT)", function()
    local a = H.tablecheck():create_customer(H.tc_customer { phones = { "+14155550199" } })
    local b = H.tablecheck():create_customer(H.tc_customer { phones = { "+14155550199" } })
    assert(a and b)
    local guid = H.toast():create_customer(H.customer()).guid
    local before = writes()
    local runs = {
      "toast customers create --first-name Dry --last-name Run --email dry.run@example.org",
      "toast customers find-or-create --first-name Dry --last-name Run --email dry.run2@example.org",
      "toast credit add " .. guid .. " --amount 10.00",
      "tablecheck customers create --data " .. q(crm.json.encode(H.tc_customer())),
      "tablecheck customers amend " .. a.id .. " --data '{\"first_name\":\"Changed\"}'",
      "tablecheck customers delete " .. b.id,
      "tablecheck merge " .. a.id .. " " .. b.id,
    }
    for _, args in ipairs(runs) do
      local r = crm_run("--sim --dry-run " .. args)
      assert.equal(0, r.code, args .. ": " .. r.err)
      assert.truthy(r.err:find("dry-run: ", 1, true), args)
      assert.truthy(r.err:find("Authorization: <redacted>", 1, true), args)
      local plan = lines(r.out)[1]
      assert.is_true(plan.dry_run, args)
    end
    assert.equal(before, writes())
    assert.equal(0, H.count("PUT /api/crm/v1/customers/" .. a.id))
    -- the merge's dry run read both customers
    assert.is_true(H.count("GET /api/crm/v1/customers/" .. b.id) >= 1)
    -- and without --dry-run the merge happens
    local r = crm_run("--sim tablecheck merge " .. a.id .. " " .. b.id)
    assert.equal(0, r.code, r.err)
    assert.equal(1, H.count("PUT /api/crm/v1/customers/" .. a.id))
  end)

  it("finds duplicates as JSON Lines, ready for merge", function()
    local tc = H.tablecheck()
    local one = assert(tc:create_customer(H.tc_customer { emails = { "same@example.org" } }))
    local two = assert(tc:create_customer(H.tc_customer { emails = { "SAME@example.org" } }))
    H.tc_seed(20, "Solo")
    local r = crm_run("--sim tablecheck duplicates --by email")
    assert.equal(0, r.code, r.err)
    local groups = lines(r.out)
    assert.equal(1, #groups)
    table.sort(groups[1].ids)
    local want = { one.id, two.id }
    table.sort(want)
    assert.same(want, groups[1].ids)
    assert.truthy(r.err:find("22 customers scanned, 1 groups", 1, true))
  end)

  it("draws a progress bar under a pseudo-terminal, and none without one", function()
    H.tc_seed(450, "Bar")
    local typescript = os.tmpname()
    local cmd = (H.CLEAN_ENV
      .. "CRM_SIM_PORT=%d XDG_CONFIG_HOME=%s %s bin/crm --sim tablecheck customers export >/dev/null")
      :format(H.port, q(home .. "/config"), H.lua)
    assert(os.execute(H.CLEAN_ENV .. "script -qfc " .. q(cmd) .. " /dev/null >" .. typescript .. " 2>&1 </dev/null")
      ~= nil)
    local tty = H.slurp(typescript)
    os.remove(typescript)
    assert.truthy(tty:find("\r", 1, true), "no carriage return: no bar was drawn")
    assert.truthy(tty:find("450/450", 1, true), tty)
    assert.truthy(tty:find("ETA", 1, true), tty)
    assert.truthy(tty:find("[#", 1, true), tty)

    local r = crm_run("--sim tablecheck customers export")
    assert.equal(0, r.code)
    assert.is_nil(r.err:find("\r", 1, true))
    assert.is_nil(r.err:find("ETA", 1, true))
    assert.truthy(r.err:find("export: 450 customers", 1, true))
    -- --progress=plain: lines for logs, no carriage returns
    r = crm_run("--sim --progress=plain tablecheck customers export")
    assert.equal(0, r.code)
    assert.is_nil(r.err:find("\r", 1, true))
    assert.truthy(r.err:find("/450", 1, true))
  end)

  it("resumes an interrupted backfill from its checkpoint: Ctrl-C exits 130 and prints how", function()
    local journal = home .. "/backfill-" .. core.guid():sub(1, 8) .. ".jsonl"
    local out, err, rc, pidf = os.tmpname(), os.tmpname(), os.tmpname(), os.tmpname()
    os.remove(rc)
    local cmd = (H.CLEAN_ENV .. "CRM_SIM_PORT=%d XDG_CONFIG_HOME=%s %s bin/crm --sim toast guests backfill --weeks 16"
      .. " --window-days 7 --spacing 0.3 --checkpoint %s >%s 2>%s & echo $! >%s; wait $!; echo $? >%s.tmp;"
      .. " mv %s.tmp %s"):format(H.port, q(home .. "/config"), H.lua, q(journal), out, err, pidf, rc, rc, rc)
    os.execute(H.CLEAN_ENV .. "sh -c " .. q(cmd) .. " >/dev/null 2>&1 &")
    -- wait until two windows are in the journal, then Ctrl-C
    for _ = 1, 100 do
      local j = io.open(journal)
      local n = 0
      if j then
        for l in j:lines() do if l:find('"checkpoint"', 1, true) then n = n + 1 end end
        j:close()
      end
      if n >= 2 then break end
      core.sleep(0.1)
    end
    local pid = H.slurp(pidf):match("%d+")
    assert(os.execute("kill -INT " .. pid))
    for _ = 1, 100 do
      if H.exists(rc) then break end
      core.sleep(0.1)
    end
    assert.equal("130", H.slurp(rc):match("%d+"))
    local e = H.slurp(err)
    assert.truthy(e:find("backfill interrupted", 1, true), e)
    assert.truthy(e:find("resume with: crm --sim toast guests backfill --checkpoint", 1, true), e)
    assert.equal("", H.slurp(out))
    for _, f in ipairs { out, err, rc, pidf } do os.remove(f) end

    -- resumed, the profiles are those of one uninterrupted run
    local r = crm_run("--sim toast guests backfill --window-days 7 --spacing 0.2 --checkpoint " .. q(journal))
    assert.equal(0, r.code, r.err)
    local resumed = lines(r.out)
    local fresh = crm_run("--sim toast guests backfill --weeks 16 --window-days 7")
    assert.equal(0, fresh.code, fresh.err)
    local want = lines(fresh.out)
    assert.equal(#want, #resumed)
    assert.is_true(#want > 0)
    for i = 1, #want do
      assert.equal(want[i].key, resumed[i].key)
      assert.equal(want[i].order_count, resumed[i].order_count)
    end
  end)

  it("says what a resumed backfill fetched, and that a finished one had nothing left", function()
    local journal = home .. "/backfill-" .. core.guid():sub(1, 8) .. ".jsonl"
    local cmd = "--sim toast guests backfill --weeks 3 --window-days 7 --spacing 0.05 --checkpoint " .. q(journal)
    local r = crm_run(cmd)
    assert.equal(0, r.code, r.err)
    local want = lines(r.out)
    local total = tonumber(r.err:match("backfill: (%d+) orders in 3 windows %(3 ordersBulk calls%) %->"))
    assert.is_number(total, r.err)
    -- the journal as a kill after the first window leaves it: the rerun fetches the last two
    local kept, first = {}, nil
    for l in H.slurp(journal):gmatch("[^\n]+") do
      kept[#kept + 1] = l
      local v = crm.json.decode(l)
      if v.checkpoint then
        first = v.checkpoint
        break
      end
    end
    H.spit(journal, table.concat(kept, "\n") .. "\n")
    r = crm_run(cmd)
    assert.equal(0, r.code, r.err)
    assert.equal(#want, #lines(r.out))
    assert.truthy(r.err:find(("backfill: resumed after 1 windows: %d orders in 2 windows (2 ordersBulk calls), %d in"
      .. " all -> %d guest profiles"):format(total - first.orders, total, #want), 1, true), r.err)
    -- finished: nothing left to fetch; the profiles come from the journal
    r = crm_run(cmd)
    assert.equal(0, r.code, r.err)
    assert.equal(#want, #lines(r.out))
    assert.truthy(r.err:find(("backfill: nothing left to fetch (it finished before: %d orders in 3 windows); the"
      .. " journal holds %d orders -> %d guest profiles"):format(total, total, #want), 1, true), r.err)
    os.remove(journal)
  end)

  it("refuses a config file that group or others can read, and reads one only its owner can", function()
    local dir = home .. "/config/crm"
    assert(os.execute("mkdir -p " .. q(dir)))
    local path = dir .. "/config.json"
    H.spit(path, crm.json.encode { CRM_TABLECHECK_URL = H.tablecheck_url, CRM_TABLECHECK_API_KEY = H.tablecheck_key })
    assert(os.execute("chmod 644 " .. q(path)))
    local r = crm_run("tablecheck shops list")
    assert.equal(2, r.code)
    assert.truthy(r.err:find("readable by group or others", 1, true))
    assert.is_nil(r.err:find(H.tablecheck_key, 1, true))
    assert(os.execute("chmod 600 " .. q(path)))
    r = crm_run("tablecheck shops list")
    assert.equal(0, r.code, r.err)
    assert.is_true(#lines(r.out) >= 2)
    os.remove(path)
  end)

  it("starts, reports and stops a simulator of its own", function()
    local port = H.port + 47
    local r = crm_run(("sim start --port %d --seed-customers 25"):format(port))
    assert.equal(0, r.code, r.err)
    assert.is_true(lines(r.out)[1].running)
    r = crm_run("--sim tablecheck customers export", "CRM_SIM_PORT=" .. port)
    -- (the env prefix comes after crm_run's own CRM_SIM_PORT, so it wins)
    assert.equal(0, r.code, r.err)
    assert.equal(25, #lines(r.out))
    r = crm_run(("sim stop --port %d"):format(port))
    assert.equal(0, r.code, r.err)
    r = crm_run(("sim status --port %d"):format(port))
    assert.equal(1, r.code)
    assert.is_false(lines(r.out)[1].running)
  end)
end)
