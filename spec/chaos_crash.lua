-- The crash chaos: "nothing lost, nothing twice" across process deaths. A keyed import of Toast
-- customers and credits and TableCheck guests runs in a child process (spec/chaos_crash_child.lua)
-- that is killed with SIGKILL several times, at random points and while a write is in flight
-- (the simulator's delay fault holds a write of the child's, then the child dies and the server
-- acts anyway), and run again until one run finishes. Then the simulator is checked: every row's
-- record exactly once, with the right amount.
-- Used by `make chaos` (scripts/chaos.lua, CHAOS_MODE=crash or all) and spec/chaos_crash_spec.lua.
--
-- Replayable: the rows, the kill points and which kills wait for a write in flight come from the
-- seed. A rerun starts once the simulator has finished the requests it was handling (as a cron
-- rerun comes long after a server's request timeout): TableCheck has no client id, so a create
-- that is still being handled when the rerun searches cannot be found yet (README: "a search
-- index may lag behind a create").
local core = require "crm.core"
local crm = require "crm"
local H = require "helper"

local M = {}

local prng = require("chaos").prng

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- plan{seed, customers, credits, guests} -> the rows (what the child imports)
function M.plan(o)
  local rng = prng(o.seed)
  local tag = "s" .. o.seed
  local rows = {}
  local custs = {}
  for i = 1, o.customers do
    local r = { kind = "toast_customer", key = "cust-" .. tag .. "-" .. i, firstName = "Kc" .. i,
                lastName = "Crash" .. tag, email = ("kc%d.%s@example.org"):format(i, tag) }
    rows[#rows + 1] = r
    custs[#custs + 1] = r
  end
  for i = 1, o.credits do
    local c = custs[rng(#custs)]
    rows[#rows + 1] = { kind = "credit", key = "cr-" .. tag .. "-" .. i, customer_key = c.key,
                        amount = rng(400) / 4, note = "crash-" .. tag .. "-n" .. i }
  end
  for i = 1, o.guests do
    rows[#rows + 1] = { kind = "tc_customer", firstName = "Kg" .. i, lastName = "Crash" .. tag,
                        email = ("kg%d.%s@example.org"):format(i, tag) }
  end
  return rows, rng
end

-- The fault that holds one row's write at the server (the write is in flight while it waits).
local function hold_fault(row, delay)
  if row.kind == "toast_customer" then
    return { method = "POST", path = "/crm/v1/customers", match = row.email, delay = delay, count = 1 }
  elseif row.kind == "credit" then
    return { method = "POST", path = "/crm/v1/customers/", match = row.note, delay = delay, count = 1 }
  end
  return { method = "POST", path = "/api/crm/v1/customers", match = row.email, delay = delay, count = 1 }
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- Whether the child still runs: its /proc entry, unless it is a zombie (the child is orphaned
-- at once, and whoever adopts it may reap it late).
local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat", "rb")
  if not f then return false end
  local stat = f:read("a") or ""
  f:close()
  local state = stat:match("^%d+ %b() (%a)")
  return state ~= nil and state ~= "Z" and state ~= "X"
end

-- Starts the child in the background -> its pid (the shell execs Lua, so the pid is the child's).
-- The child is a Lua process like the one running the specs: it keeps make check's sanitizer
-- preload (the C core it loads is that build).
-- It leads a process group of its own (setsid): a kill takes the crm processes it runs too.
local function spawn(plan_path, done_path, log_path)
  local p = assert(io.popen("sh -c " .. q("exec setsid " .. H.lua .. " spec/chaos_crash_child.lua "
    .. q(plan_path) .. " " .. q(done_path) .. " >>" .. q(log_path) .. " 2>&1 </dev/null & echo $!")))
  local pid = tonumber(p:read("a"):match("%d+"))
  p:close()
  return assert(pid, "the child did not start")
end

local function fault_hits(id)
  for _, f in ipairs(H.control("GET", "/__sim/faults?all=1").faults) do
    if f.id == id then return f.hits end
  end
  return 0
end

-- Waits until the simulator handles no request (the dead child's held write has been done).
local function drain()
  for _ = 1, 2000 do
    if H.control("GET", "/__sim/faults").inflight == 0 then return end
    core.sleep(0.01)
  end
  error("the simulator never finished its requests")
end

-- One run of the child: killed when `kill` says so -> "done" | "killed" | "failed"
local function run_once(paths, kill, rng)
  os.remove(paths.done)
  local fault_id
  if kill and kill.row then
    fault_id = H.fault(hold_fault(kill.row, 1.0)).faults[1].id
  end
  local pid = spawn(paths.plan, paths.done, paths.log)
  local started = core.now()
  local killed = false
  while alive(pid) do
    local now = core.now()
    -- A child that wrote its done file has finished its work: it is left to exit.
    if kill and not killed and not exists(paths.done) then
      local due
      if fault_id then
        due = fault_hits(fault_id) > 0
      else
        due = now - started >= kill.at
      end
      if due then
        os.execute("kill -9 -- -" .. pid .. " 2>/dev/null")
        killed = true
      end
    end
    if now - started > 60 then
      os.execute("kill -9 -- -" .. pid .. " 2>/dev/null")
      error("the child ran for more than 60 s")
    end
    core.sleep(0.002 + rng() * 0.003)
  end
  local elapsed = core.now() - started
  H.clear_faults()
  drain()
  if exists(paths.done) and not killed then return "done", false, elapsed end
  return killed and "killed" or "failed", killed, elapsed
end

-- What the simulator holds for the rows -> report {lost, duplicated, mismatched}
local function check(rows, report)
  local toast = H.toast()
  local tc = H.tablecheck()
  local by_email = {}
  for _, c in ipairs(H.control("GET", "/__sim/toast/customers").customers) do
    if type(c.email) == "string" then
      by_email[c.email] = by_email[c.email] or {}
      table.insert(by_email[c.email], c)
    end
  end
  local by_note = {}
  for t, err in toast:iter_credit_transactions() do
    assert(t, tostring(err))
    if type(t.note) == "string" then
      by_note[t.note] = by_note[t.note] or {}
      table.insert(by_note[t.note], t)
    end
  end
  local function count(list, ok)
    local n = list and #list or 0
    if n == 0 then report.lost = report.lost + 1
    elseif n > 1 then report.duplicated = report.duplicated + n - 1
    elseif not ok(list[1]) then report.mismatched = report.mismatched + 1 end
  end
  for _, r in ipairs(rows) do
    if r.kind == "toast_customer" then
      local guid = toast:get_idempotency_guid("create_customer", r.key)
      count(by_email[r.email], function(c) return c.guid == guid and c.firstName == r.firstName end)
    elseif r.kind == "credit" then
      local cust = toast:get_idempotency_guid("create_customer", r.customer_key)
      count(by_note[r.note], function(t)
        return t.amount == r.amount and t.customer.guid == cust
          and t.guid == toast:get_idempotency_guid("add_credit", r.key)
      end)
    else
      local found = {}
      for c, err in tc:iter_search_customers { email = r.email } do
        assert(c, tostring(err))
        for _, e in ipairs(c.emails or {}) do
          if e == r.email then found[#found + 1] = c end
        end
      end
      count(found, function(c) return c.first_name == r.firstName end)
    end
  end
  toast:close()
  tc:close()
end

--[[ run{seed, kills, in_flight, customers, credits, guests, unkeyed, cli} -> report
  kills: how many times the child is killed (at least); in_flight: how many of those wait for a
  write held at the server; unkeyed: the child imports without keys (the counts' self-check);
  cli: the Toast rows go through `crm ... --input` files with a key column. ]]
function M.run(o)
  local seed = o.seed or 1
  local rows, rng = M.plan { seed = seed, customers = o.customers or 12, credits = o.credits or 30,
                             guests = o.guests or 12 }
  H.reset()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. q(dir)))
  local paths = { plan = dir .. "/plan.json", done = dir .. "/done", log = dir .. "/child.log" }
  local cli
  if o.cli then
    cli = { lua = "XDG_CONFIG_HOME=" .. q(dir) .. " " .. H.lua, customers = dir .. "/customers.csv",
            credits = dir .. "/credits.csv" }
    local toast = H.toast()
    local cf, tf = assert(io.open(cli.customers, "wb")), assert(io.open(cli.credits, "wb"))
    cf:write("firstName,lastName,email,idempotency_key\n")
    tf:write("customerId,amount,note,localCreatedDate,idempotency_key\n")
    for _, r in ipairs(rows) do
      if r.kind == "toast_customer" then
        cf:write(table.concat({ r.firstName, r.lastName, r.email, r.key }, ","), "\n")
      elseif r.kind == "credit" then
        tf:write(table.concat({ toast:get_idempotency_guid("create_customer", r.customer_key),
          string.format("%.2f", r.amount), r.note, "2024-03-05T09:21:40.000+0900", r.key }, ","), "\n")
      end
    end
    cf:close()
    tf:close()
    toast:close()
  end
  local f = assert(io.open(paths.plan, "wb"))
  f:write(assert(crm.json.encode {
    cli = cli,
    base_url = H.base_url, restaurant = H.restaurant, client_id = H.client_id,
    client_secret = H.client_secret, tablecheck_url = H.tablecheck_url, tablecheck_key = H.tablecheck_key,
    franchise_id = H.tc.franchise_id, date = "2024-03-05T09:21:40.000+0900", rows = crm.json.array(rows),
    unkeyed = o.unkeyed == true,
  }))
  f:close()
  local kills = o.kills or 8
  local in_flight = o.in_flight or math.ceil(kills / 2)
  local report = { seed = seed, rows = #rows, runs = 0, kills = 0, kills_in_flight = 0, lost = 0,
                   duplicated = 0, mismatched = 0, child = o.cli and "crm --input" or "Lua" }
  -- Which kills wait for a write in flight, and where the others fall (seconds after the start).
  local planned = {}
  for i = 1, kills do
    if i <= in_flight then
      planned[i] = { row = rows[rng(#rows)] }
    else
      planned[i] = { at = 0.01 + rng() * (o.window or 0.25) }
    end
  end
  for i = #planned, 2, -1 do
    local j = rng(i)
    planned[i], planned[j] = planned[j], planned[i]
  end
  local i = 0
  while true do
    i = i + 1
    assert(i <= kills * 5 + 20, "the import never finished (runs: " .. tostring(report.trace)
      .. "): see " .. paths.log)
    local kill = planned[report.kills + 1]
    local status, killed, elapsed = run_once(paths, kill, rng)
    report.runs = report.runs + 1
    -- d(one), k(illed), f(ailed); h(eld write), t(imed kill), - (no kill)
    report.trace = (report.trace or "") .. status:sub(1, 1) .. (kill and (kill.row and "h" or "t") or "-") .. " "
    if killed then
      report.kills = report.kills + 1
      if kill.row then report.kills_in_flight = report.kills_in_flight + 1 end
    elseif kill and kill.at then
      -- the run ended before the kill point: the next run takes the next point, inside the time
      -- this run took (a rerun of a finished import can be over in a few tens of milliseconds)
      report.kills_missed = (report.kills_missed or 0) + 1
      table.remove(planned, report.kills + 1)
      planned[#planned + 1] = { at = 0.005 + rng() * math.min(0.1, math.max(0.01, elapsed * 0.8)) }
    elseif kill then
      -- the held row's write was not sent in this run (done before): hold another row
      table.remove(planned, report.kills + 1)
      planned[#planned + 1] = { row = rows[rng(#rows)] }
    end
    if status == "done" and report.kills >= kills then break end
  end
  check(rows, report)
  -- Under make check the children run with the sanitizers too: any report of theirs counts.
  local text = H.slurp(paths.log)
  local _, asan = text:gsub("Sanitizer", "")
  local _, ubsan = text:gsub("runtime error", "")
  local reports = asan + ubsan
  report.sanitizer = reports
  report.ok = report.lost == 0 and report.duplicated == 0 and report.mismatched == 0 and reports == 0
  report.log = paths.log
  if report.ok then
    if cli then
      os.remove(cli.customers)
      os.remove(cli.credits)
    end
    os.remove(paths.plan)
    os.remove(paths.log)
    os.remove(paths.done)
    os.remove(dir)
  end
  return report
end

function M.format(r)
  return ("crash chaos (%s): seed %d, %d rows, %d runs, %d kills (%d with a write in flight): %d lost,"
    .. " %d duplicated, %d mismatched%s"):format(r.child, r.seed, r.rows, r.runs, r.kills, r.kills_in_flight,
    r.lost, r.duplicated, r.mismatched,
    r.sanitizer > 0 and (", " .. r.sanitizer .. " sanitizer reports in " .. r.log) or "")
end

return M
