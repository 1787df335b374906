-- The fault suite: mixed Toast and TableCheck operations run CONCURRENTLY (client:batch, 16 at a
-- time by default; inside nginx light threads, see spec/chaos_spec.lua) against the simulator
-- while faults are injected, then the simulator's state is checked against what the client
-- reported, and every error text and debug line is searched for secrets and test PII.
-- Used by `make chaos` (scripts/chaos.lua) and spec/chaos_spec.lua (a short fixed-seed run).
--
-- Replayable: everything (operations, their targets, faults, fault counts) is drawn from the
-- seed before anything runs. Each fault is bound to the operation it was drawn for with the
-- simulator's `match` (a text only that operation's request carries: its email, a credit note,
-- a name, an id), so under concurrency it still hits that operation and no other. The run goes
-- in windows of `window` operations; operations that would conflict (a merge and an amend of
-- the same record, two searches for one record) are never drawn into the same window. The
-- repeated guests of find_or_create are the exception on purpose: the same guest appears
-- several times in one window, spelled differently, and its search faults match the guest's
-- email, so which of that guest's operations takes one is up to timing.
local H = require "helper"
local ops_lib = require "chaos_ops"

local M = {}

local HTML = "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway"
  .. "</h1><p>The upstream server sent an invalid response.</p></body></html>"

-- Fault kinds: name, whether the server acts first (after), weight, the fault's fields.
M.FAULTS = {
  -- before the handler: the server does nothing (or, slow, acts after the client gave up)
  { "s500", false, 2, { status = 500 } },
  { "s503", false, 2, { status = 503 } },
  { "s429", false, 1, { status = 429, retry_after = 0 } },
  { "slow", false, 2, { delay = 0.4 } },
  { "drop", false, 2, { drop = true } },
  { "truncated_json", false, 1, { status = 200, body = '{"guid": "tr' } },
  { "html_before", false, 1, { status = 200, body = HTML, content_type = "text/html" } },
  { "echo400", false, 2, { status = 400, echo = true } },
  -- after the handler acted: the answer is lost or spoiled
  { "lost_answer", true, 2, { drop = true, after = true } },
  { "cut_body", true, 2, { partial = true, after = true } },
  { "s500_after", true, 2, { status = 500, after = true } },
  { "echo500_after", true, 2, { status = 500, after = true, echo = true } },
  { "not_json", true, 2, { status = 200, after = true, body = "OK", content_type = "text/plain" } },
  { "html200", true, 2, { status = 200, after = true, body = HTML, content_type = "text/html" } },
  { "too_large", true, 2, { after = true, pad = 70000 } },
  { "cut_chunked", true, 1, { after = true, raw = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
      .. "Transfer-Encoding: chunked\r\n\r\n@HEXLEN@\r\n@HALF@" } },
  { "garbage", true, 1, { after = true, raw = "\22\3\1\0\5 SSH-2.0-OpenSSH_9.6 not http at all\r\n\r\n" } },
  { "bad_status", true, 1, { after = true, raw = "HTTP/1.1 2x0 OK\r\nContent-Type: application/json\r\n"
      .. "Content-Length: @LEN@\r\n\r\n@BODY@" } },
  { "bad_chunked", true, 1, { after = true, raw = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
      .. "Transfer-Encoding: chunked\r\n\r\nzz\r\n@BODY@\r\n0\r\n\r\n" } },
  { "http09", true, 2, { after = true, raw = "@BODY@" } },
}
local FAULT_BY_NAME = {}
for _, f in ipairs(M.FAULTS) do FAULT_BY_NAME[f[1]] = f end

M.MIX = {
  { "toast_create", 12 }, { "foc", 22 }, { "credit_add", 14 }, { "toast_search", 6 },
  { "toast_pages", 3 }, { "tc_create", 16 }, { "tc_amend", 10 }, { "tc_search", 6 }, { "tc_merge", 8 },
}

M.MAX_RESPONSE_BYTES = 65536
M.TIMEOUT = 0.25
M.RETRY = { max_attempts = 6, base_delay = 0.001, max_delay = 0.01, deadline = 5 }
M.TOKEN_TTL = 3 -- seconds: the clients log in again during a run, and login faults can hit

-- A small deterministic PRNG (Park-Miller), the same sequence under Lua 5.4 and LuaJIT.
local function prng(seed)
  local state = math.floor(seed) % 2147483647
  if state <= 0 then state = state + 2147483646 end
  return function(n)
    state = (state * 48271) % 2147483647
    if n then return state % n + 1 end
    return state / 2147483647
  end
end

M.prng = prng -- the crash chaos (spec/chaos_crash.lua) draws from the same generator

local function weighted(rng, list, wi)
  local total = 0
  for _, x in ipairs(list) do total = total + x[wi] end
  local r = rng(total)
  for _, x in ipairs(list) do
    if r <= x[wi] then return x end
    r = r - x[wi]
  end
  return list[#list]
end

-- A seed for a run nobody gave one: differs on every call.
function M.random_seed()
  local g = require("crm.core").guid()
  -- libuuid's randomness alone decides; the clock only breaks ties.
  return (tonumber(g:sub(1, 7), 16) * 8 + os.time() % 8) % 2000000000 + 1
end

-- ---- the plan ----

local function mixed_case(s)
  return (s:gsub("(%f[%w])(%w)", function(_, c) return c:upper() end))
end

local EMAIL_SPELLINGS = {
  function(e) return e end,
  function(e) return " " .. mixed_case(e) .. " " end,
  function(e) return e:upper() end,
  function(e) return mixed_case(e) end,
}
local PHONE_SPELLINGS = {
  function(a, n) return ("+1 (%s) 555-%s"):format(a, n) end,
  function(a, n) return ("%s.555.%s"):format(a, n) end,
  function(a, n) return ("+1%s555%s"):format(a, n) end,
  function(a, n) return ("(%s) 555-%s"):format(a, n) end,
  function(a, n) return ("%s-555-%s"):format(a, n) end,
  function(a, n) return ("1 %s 555 %s"):format(a, n) end,
}

-- plan{operations, seed, fault_rate, window} -> {ops, windows, guests, pii}
function M.plan(opts)
  local seed = opts.seed
  local rng = prng(seed)
  local n_ops, rate, wsize = opts.operations, opts.fault_rate, opts.window
  local ops, windows, guests = {}, {}, {}
  local toast_made, tc_pool = {}, {} -- op indices from earlier windows
  local pii = { phones = {} }        -- phone spellings (names and emails carry the seed tag)

  local function tag(prefix, i) return ("%s-s%d-o%dx"):format(prefix, seed, i) end
  local function email(prefix, i) return ("%s-s%d-o%d@example.org"):format(prefix, seed, i) end
  local function phone_forms(area, num)
    for _, f in ipairs(PHONE_SPELLINGS) do pii.phones[#pii.phones + 1] = f(area, num) end
    pii.phones[#pii.phones + 1] = area .. "555" .. num
    pii.phones[#pii.phones + 1] = area .. ") 555-" .. num
    pii.phones[#pii.phones + 1] = area .. " 555 " .. num
  end

  local function draw_fault(op)
    if rng() >= rate then return end
    local f = weighted(rng, M.FAULTS, 3)
    op.fault = { kind = f[1], count = rng(2) }
  end

  local function pick_unclaimed(list, claimed)
    local free = {}
    for _, x in ipairs(list) do
      if not claimed[x] then free[#free + 1] = x end
    end
    if #free == 0 then return nil end
    return free[rng(#free)]
  end

  while #ops < n_ops do
    local w = #windows + 1
    local win = { index = w, ops = {} }
    windows[w] = win
    local claimed, made_toast, made_tc, guests_here = {}, {}, {}, {}
    if rng() < 0.25 then
      local f = weighted(rng, M.FAULTS, 3)
      win.login_fault = { kind = f[1], count = 1 }
    end
    local function add(op)
      op.i = #ops + 1
      op.w = w
      ops[op.i] = op
      win.ops[#win.ops + 1] = op
      return op
    end
    local function toast_create()
      local i = #ops + 1
      local c = { firstName = tag("Tf", i), lastName = ("Tl-s%d-g%dx"):format(seed, rng(4)),
                  email = email("te", i) }
      if rng(2) == 1 then
        local num = ("%04d"):format(i % 10000)
        c.phone = ("425-555-%s"):format(num)
        phone_forms("425", num)
      end
      local op = add { kind = "toast_create", customer = c }
      draw_fault(op)
      made_toast[#made_toast + 1] = op.i
    end
    local function tc_create()
      local i = #ops + 1
      local num = ("%04d"):format(i % 10000)
      phone_forms("503", num)
      local op = add { kind = "tc_create", email = email("ce", i), customer = {
        franchise_id = H.tc.franchise_id, first_name = tag("Cf", i),
        last_name = ("Cl-s%d-g%dx"):format(seed, rng(4)), emails = { email("ce", i) },
        phones = { "+1503555" .. num } } }
      draw_fault(op)
      made_tc[#made_tc + 1] = op.i
    end

    while #win.ops < wsize and #ops < n_ops do
      local kind = weighted(rng, M.MIX, 2)[1]
      if kind == "toast_create" then
        toast_create()
      elseif kind == "tc_create" then
        tc_create()
      elseif kind == "foc" then
        -- a guest seen before (not yet in this window) or a new one, 2 to 4 times at once
        local guest
        if #guests > 0 and rng() < 0.35 then
          guest = guests[rng(#guests)]
          if guests_here[guest.k] then guest = nil end
        end
        if not guest then
          local k = #guests + 1
          local class = rng(5) -- 1-3: email and phone, 4: email only, 5: phone only
          guest = { k = k, last = ("Gl-s%d-k%dx"):format(seed, k) }
          if class <= 4 then guest.email = ("ge-s%d-k%d@example.org"):format(seed, k) end
          if class ~= 4 then
            guest.area, guest.num = "206", ("%04d"):format(k % 10000)
            phone_forms("206", guest.num)
          end
          guests[k] = guest
        end
        guests_here[guest.k] = true
        for _ = 1, 1 + rng(3) do
          if #ops >= n_ops then break end
          local i = #ops + 1
          local c = { firstName = tag("Gf", i), lastName = guest.last }
          if guest.email then c.email = EMAIL_SPELLINGS[rng(#EMAIL_SPELLINGS)](guest.email) end
          if guest.area then c.phone = PHONE_SPELLINGS[rng(#PHONE_SPELLINGS)](guest.area, guest.num) end
          local op = add { kind = "foc", guest = guest.k, customer = c }
          draw_fault(op)
          if op.fault then
            op.fault.on = (guest.email and rng(2) == 1) and "search" or "create"
          end
        end
      elseif kind == "credit_add" then
        if #toast_made == 0 then
          toast_create()
        else
          local i = #ops + 1
          local op = add { kind = "credit_add", target = toast_made[rng(#toast_made)], amount = rng(50),
                           note = ("credit %d n%d."):format(seed, i) }
          draw_fault(op)
        end
      elseif kind == "toast_search" then
        local t = pick_unclaimed(toast_made, claimed)
        if not t then
          toast_create()
        else
          claimed[t] = true
          local op = add { kind = "toast_search", target = t, email = ops[t].customer.email }
          draw_fault(op)
        end
      elseif kind == "toast_pages" then
        local g = rng(4)
        if claimed["pages" .. g] then
          toast_create()
        else
          claimed["pages" .. g] = true
          local op = add { kind = "toast_pages", last_name = ("Tl-s%d-g%dx"):format(seed, g),
                           page_size = 1 + rng(5) }
          draw_fault(op)
        end
      elseif kind == "tc_amend" then
        local t = pick_unclaimed(tc_pool, claimed)
        if not t then
          tc_create()
        else
          claimed[t] = true
          local op = add { kind = "tc_amend", target = t, first_name = tag("Ca", #ops + 1) }
          draw_fault(op)
        end
      elseif kind == "tc_search" then
        local t = pick_unclaimed(tc_pool, claimed)
        if not t then
          tc_create()
        else
          claimed[t] = true
          local op = add { kind = "tc_search", target = t, email = ops[t].email }
          draw_fault(op)
        end
      elseif kind == "tc_merge" then
        local p = pick_unclaimed(tc_pool, claimed)
        if p then claimed[p] = true end
        local s = p and pick_unclaimed(tc_pool, claimed)
        if not s then
          if p then claimed[p] = nil end
          tc_create()
        else
          claimed[s] = true
          -- the secondary is gone afterwards whatever this merge reports: never drawn again
          for j = #tc_pool, 1, -1 do
            if tc_pool[j] == s then table.remove(tc_pool, j) end
          end
          local op = add { kind = "tc_merge", primary = p, secondary = s }
          draw_fault(op)
        end
      end
    end
    for _, i in ipairs(made_toast) do toast_made[#toast_made + 1] = i end
    for _, i in ipairs(made_tc) do tc_pool[#tc_pool + 1] = i end
  end
  return { ops = ops, windows = windows, guests = guests, pii = pii, seed = seed }
end

-- Where an operation's fault goes: path prefix, method, and the text binding it to the operation.
local function fault_target(op)
  local k = op.kind
  if k == "toast_create" then return "/crm/v1/customers", "POST", op.customer.email end
  if k == "foc" then
    if op.fault.on == "search" then
      return "/crm/v1/customers/search", "POST", op.customer.email:match("^%s*(.-@)"):lower()
    end
    return "/crm/v1/customers", "POST", op.customer.firstName
  end
  if k == "credit_add" then return "/crm/v1/customers/", "POST", op.note end
  if k == "toast_search" then return "/crm/v1/customers/search", "POST", op.email end
  if k == "toast_pages" then return "/crm/v1/customers/search", "POST", op.last_name end
  if k == "tc_create" then return "/api/crm/v1/customers", "POST", op.email end
  if k == "tc_amend" then return "/api/crm/v1/customers/", "PUT", op.first_name end
  if k == "tc_search" then return "/api/crm/v1/customer_search", "POST", op.email end
  if k == "tc_merge" then return "/api/crm/v1/customers/", "PUT", op.secondary_id end
  error("no fault target for " .. tostring(k))
end

local function fault_spec(kind, count, path, method, match)
  local f = assert(FAULT_BY_NAME[kind], kind)
  local spec = { path = path, method = method, match = match, count = count }
  for k, v in pairs(f[4]) do spec[k] = v end
  return spec
end

-- A copy of op with its runtime targets resolved from earlier outcomes (op.skip when missing).
local function resolve(op, outcomes)
  local r = {}
  for k, v in pairs(op) do r[k] = v end
  local function from(i, field)
    local o = outcomes[i]
    return o and o[field]
  end
  if op.kind == "credit_add" then
    r.target_guid = from(op.target, "guid")
    if not r.target_guid then r.skip = "the customer to credit has no guid" end
  elseif op.kind == "tc_amend" then
    r.target_id = from(op.target, "id")
    if not r.target_id then r.skip = "the customer to amend was not created" end
  elseif op.kind == "tc_merge" then
    r.primary_id, r.secondary_id = from(op.primary, "id"), from(op.secondary, "id")
    if not (r.primary_id and r.secondary_id) then r.skip = "a customer to merge was not created" end
  end
  return r
end

-- ---- leak scanning ----

local function new_scanner(plan, secrets)
  local seed_marker = "%-s" .. plan.seed .. "%-"
  local phones = plan.pii.phones
  local named = {
    { secrets.toast_client_secret, "client_secret" },
    { secrets.tablecheck_api_key, "tablecheck_key" },
  }
  for _, t in ipairs(secrets.tokens or {}) do named[#named + 1] = { t, "token" } end
  local kind_of_tag = { te = "email", ge = "email", ce = "email", tf = "name", gf = "name",
                        cf = "name", ca = "name", tl = "name", gl = "name", cl = "name" }
  -- scan(text, pii) -> {kind = true, ...} for every secret (and, when pii, test PII) in text
  return function(text, with_pii)
    local found = {}
    for _, s in ipairs(named) do
      if type(s[1]) == "string" and #s[1] >= 4 and text:find(s[1], 1, true) then found[s[2]] = true end
    end
    local lower = text:lower()
    if lower:find("sim%.%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x") then found.token = true end
    if with_pii then
      local pos = 1
      for _ = 1, 100 do
        local from, to = lower:find(seed_marker, pos)
        if not from then break end
        found[kind_of_tag[lower:sub(from - 2, from - 1)] or "name"] = true
        pos = to + 1
      end
      if lower:find("555", 1, true) then
        for _, p in ipairs(phones) do
          if lower:find(p, 1, true) then
            found.phone = true
            break
          end
        end
      end
    end
    return found
  end
end

M.scanner = new_scanner

-- ---- the run ----

local function count(t, k, by) t[k] = (t[k] or 0) + (by or 1) end

-- A status or code for a report line: 200, not 200.0 (outcomes from nginx arrive as JSON).
local function code_of(o)
  local v = o.code or o.status
  if type(v) == "number" and v % 1 == 0 then return ("%d"):format(v) end
  return tostring(v)
end

-- A runner in this process: client:batch of two clients over libcurl's multi.
function M.local_runner(concurrency)
  local lines = {}
  local function debug(line) lines[#lines + 1] = line end
  local o = { timeout = M.TIMEOUT, retry = M.RETRY, max_response_bytes = M.MAX_RESPONSE_BYTES, debug = debug }
  local clients = { toast = H.toast(o), tc = H.tablecheck(o) }
  return function(ops)
    local outcomes, err = ops_lib.batch(clients, ops, concurrency)
    local got = lines
    lines = {}
    return outcomes, got, err
  end, "curl multi"
end

--[[ run{operations = 2000, seed, concurrency = 16, fault_rate = 0.3, window = 64, runner, quiet}
  runner(resolved_ops) -> outcomes, debug_lines [, error]: where the operations run
  (default: M.local_runner(concurrency)). Returns the report (see M.format). ]]
function M.run(opts)
  opts = opts or {}
  local seed = opts.seed or M.random_seed()
  local concurrency = opts.concurrency or 16
  local plan = M.plan { operations = opts.operations or 2000, seed = seed,
                        fault_rate = opts.fault_rate or 0.3, window = opts.window or 64 }
  H.reset()
  H.config { toast_token_ttl = M.TOKEN_TTL }
  local runner, how = opts.runner, opts.runner_name
  if not runner then runner, how = M.local_runner(concurrency) end

  local report = {
    seed = seed, concurrency = concurrency, runner = how or "custom", operations = #plan.ops,
    windows = #plan.windows, skipped = 0, faults = 0, faults_fired = 0, after_faults = 0,
    succeeded = 0, failed = 0, crashed = 0, not_error_values = 0, lost = 0, duplicated = 0,
    leaked = 0, unflagged = 0, wrong = 0, by_fault = {}, fired_by_fault = {}, by_op = {},
    fail_kinds = {}, leaks = {}, defects = {}, login_faults = 0, login_faults_fired = 0,
  }
  local function defect(class, op, detail)
    report.defects[class] = report.defects[class] or {}
    local list = report.defects[class]
    if #list < 6 then
      list[#list + 1] = ("op %d %s%s: %s"):format(op and op.i or 0, op and op.kind or "-",
        op and op.fault and (" [" .. op.fault.kind .. (op.fault.fired and "" or ", not fired") .. "]")
          or " [no fault]", detail)
    end
  end

  local outcomes = {}
  local debug_lines = {}
  local merges, merge_tried = {}, {}
  local verify_tc = H.tablecheck()
  local core = require "crm.core"
  local started = core.now()

  for _, win in ipairs(plan.windows) do
    local resolved, specs, owners = {}, {}, {}
    for k, op in ipairs(win.ops) do
      local r = resolve(op, outcomes)
      resolved[k] = r
      if r.fault and not r.skip then
        local path, method, match = fault_target(r)
        specs[#specs + 1] = fault_spec(r.fault.kind, r.fault.count, path, method, match)
        owners[#specs] = op
      end
    end
    if win.login_fault then
      specs[#specs + 1] = fault_spec(win.login_fault.kind, 1, "/authentication/v1/authentication/login",
        "POST", "toast_machine_client")
      owners[#specs] = "login"
      report.login_faults = report.login_faults + 1
    end
    local ids = {}
    if #specs > 0 then
      for j, f in ipairs(H.fault(specs).faults) do ids[j] = f.id end
    end

    local outs, lines, rerr = runner(resolved)
    if not outs then error("chaos runner failed: " .. tostring(rerr)) end
    for _, l in ipairs(lines or {}) do debug_lines[#debug_lines + 1] = l end

    -- Wait for requests the simulator still sits on (a slow fault acts after the client gave up).
    for _ = 1, 100 do
      local st = H.control("GET", "/__sim/faults?all=1")
      if (st.inflight or 0) == 0 then
        local hits = {}
        for _, f in ipairs(st.faults) do hits[f.id] = f.hits end
        for j, id in ipairs(ids) do
          local owner = owners[j]
          if (hits[id] or 0) > 0 then
            if owner == "login" then
              report.login_faults_fired = report.login_faults_fired + 1
            else
              owner.fault.fired = true
            end
          end
        end
        break
      end
      core.sleep(0.05)
    end
    H.clear_faults()

    for k, op in ipairs(win.ops) do
      local o = outs[k] or { i = op.i, crash = "no outcome" }
      o.resolved = resolved[k]
      outcomes[op.i] = o
      count(report.by_op, op.kind)
      if op.fault and not o.skipped then
        report.faults = report.faults + 1
        count(report.by_fault, op.fault.kind)
        if op.fault.fired then
          report.faults_fired = report.faults_fired + 1
          count(report.fired_by_fault, op.fault.kind)
          if FAULT_BY_NAME[op.fault.kind][2] then report.after_faults = report.after_faults + 1 end
        end
      end
      if o.skipped then
        report.skipped = report.skipped + 1
      elseif o.crash then
        report.crashed = report.crashed + 1
        defect("crashed", op, o.crash)
      elseif o.ok then
        report.succeeded = report.succeeded + 1
      else
        report.failed = report.failed + 1
        count(report.fail_kinds, ("%s:%s:%s"):format(op.kind, tostring(o.kind), code_of(o)))
        if o.not_error then
          report.not_error_values = report.not_error_values + 1
          defect("not_error_value", op, "failed without a crm error value: " .. tostring(o.not_error_what))
        end
      end
      if op.kind == "tc_merge" and not o.skipped then
        local r = resolved[k]
        merge_tried[r.primary_id] = true
        merge_tried[r.secondary_id] = true
        if o.ok then
          merges[#merges + 1] = { primary = r.primary_id, secondary = r.secondary_id, op = op }
        elseif not o.crash then
          -- Did the server merge although the client heard otherwise? The secondary is gone.
          local p = verify_tc:get_customer(r.primary_id)
          local s = verify_tc:get_customer(r.secondary_id)
          if p and not s then
            merges[#merges + 1] = { primary = r.primary_id, secondary = r.secondary_id, op = op,
                                    inferred = tostring(o.kind) .. " " .. code_of(o) }
            if not o.unknown then
              report.unflagged = report.unflagged + 1
              defect("unflagged", op, ("the server merged, the error (%s %s) does not say"
                .. " outcome_unknown"):format(tostring(o.kind), code_of(o)))
            end
          end
        end
      end
    end
    if opts.progress then opts.progress(win.index, #plan.windows) end
  end
  report.elapsed = core.now() - started

  -- ---- compare the simulator's state with what the client reported ----
  local function lost(op, what) report.lost = report.lost + 1; defect("lost", op, what) end
  local function dup(op, n, what) report.duplicated = report.duplicated + n; defect("duplicated", op, what) end
  local function wrong(op, what) report.wrong = report.wrong + 1; defect("wrong", op, what) end

  local function norm_email(e) return type(e) == "string" and e:match("^%s*(.-)%s*$"):lower() or nil end
  local function phone10(p)
    if type(p) ~= "string" then return nil end
    local d = p:gsub("%D", "")
    if #d == 11 and d:sub(1, 1) == "1" then d = d:sub(2) end
    return d ~= "" and d or nil
  end
  local by_email, by_phone, stored_guid = {}, {}, {}
  for _, c in ipairs(H.control("GET", "/__sim/toast/customers").customers) do
    stored_guid[c.guid] = true
    local e, p = norm_email(c.email), phone10(c.phone)
    if e then by_email[e] = by_email[e] or {}; table.insert(by_email[e], c) end
    if p then by_phone[p] = by_phone[p] or {}; table.insert(by_phone[p], c) end
  end

  -- Toast creates: one record per create, the one reported.
  local credits = {} -- customer guid -> {txn guid -> {ok, op}}
  for _, op in ipairs(plan.ops) do
    local o = outcomes[op.i]
    if op.kind == "toast_create" and not o.skipped then
      local stored = by_email[op.customer.email] or {}
      if o.ok and (#stored == 0 or stored[1].guid ~= o.guid) then
        lost(op, ("reported created (%s) but %d stored"):format(tostring(o.guid), #stored))
      end
      if #stored > 1 then dup(op, #stored - 1, "customer stored " .. #stored .. " times") end
      if o.guid then credits[o.guid] = credits[o.guid] or {} end
    end
  end
  -- find_or_create: exactly one customer per guest, whatever the spelling and the concurrency.
  local guest_ops = {}
  for _, op in ipairs(plan.ops) do
    if op.kind == "foc" then
      guest_ops[op.guest] = guest_ops[op.guest] or {}
      table.insert(guest_ops[op.guest], op)
    end
  end
  for k, g in ipairs(plan.guests) do
    local stored, seen = {}, {}
    local function take(list)
      for _, c in ipairs(list or {}) do
        if not seen[c.guid] then seen[c.guid], stored[#stored + 1] = true, c end
      end
    end
    if g.email then take(by_email[g.email]) end
    if g.area then take(by_phone[g.area .. "555" .. g.num]) end
    local gops = guest_ops[k] or {}
    if #stored > 1 then
      local spell = {}
      for _, op in ipairs(gops) do
        local o = outcomes[op.i]
        spell[#spell + 1] = ("%q/%q->%s"):format(op.customer.email or "", op.customer.phone or "",
          o.ok and tostring(o.how) or ("error " .. tostring(o.kind) .. " " .. code_of(o)))
      end
      dup(gops[1], #stored - 1, ("guest %d stored %d times (%d find_or_create: %s)"):format(k, #stored, #gops,
        table.concat(spell, "; ")))
    end
    for _, op in ipairs(gops) do
      local o = outcomes[op.i]
      if o.ok and not seen[o.guid] then
        lost(op, ("find_or_create answered %s %s, which is not stored for the guest"):format(tostring(o.how),
          tostring(o.guid)))
      end
    end
  end
  -- Toast searches answer exactly what is stored.
  for _, op in ipairs(plan.ops) do
    local o = outcomes[op.i]
    if op.kind == "toast_search" and o.ok then
      local stored = by_email[op.email] or {}
      local want = {}
      for _, c in ipairs(stored) do want[c.guid] = true end
      local n = 0
      for _, g in ipairs(o.guids or {}) do
        if not want[g] then wrong(op, "search answered a customer that does not match") end
        n = n + 1
      end
      if n ~= #stored then
        wrong(op, ("search answered %d customers, %d are stored"):format(n, #stored))
      end
    elseif op.kind == "toast_pages" and o.ok then
      local seen = {}
      for _, g in ipairs(o.guids or {}) do
        if seen[g] then wrong(op, "the pager yielded a customer twice") break end
        seen[g] = true
      end
      if o.runaway then wrong(op, "the pager did not stop") end
    end
  end
  -- Credit: every transaction stored once, none nobody sent, none reported and missing.
  for _, op in ipairs(plan.ops) do
    local o = outcomes[op.i]
    if op.kind == "credit_add" and not o.skipped then
      local cust = o.resolved.target_guid
      credits[cust] = credits[cust] or {}
      if o.guid then credits[cust][o.guid] = { ok = o.ok, op = op } end
    end
  end
  local verify_toast = H.toast()
  for cust, txns in pairs(credits) do
    local seen, sum = {}, 0
    if next(txns) ~= nil and not stored_guid[cust] then
      for _, t in pairs(txns) do
        if t.ok then lost(t.op, "credit reported added to a customer that is not stored") end
      end
    elseif next(txns) ~= nil then
      for t, err in verify_toast:iter_customer_credit_transactions(cust) do
        assert(t, "credit listing failed during verification: " .. tostring(err))
        local mine = txns[t.guid]
        if seen[t.guid] then dup(mine and mine.op, 1, "credit transaction listed twice") end
        seen[t.guid] = true
        sum = sum + t.amount
        if not mine then dup(nil, 1, "a credit transaction nobody sent on " .. cust) end
      end
      for guid, t in pairs(txns) do
        if t.ok and not seen[guid] then lost(t.op, "credit reported added but missing") end
      end
      local summary = verify_toast:get_credit_summary(cust)
      if summary and math.abs(summary.amount - sum) > 1e-9 then
        dup(nil, 1, ("credit summary %s is not the sum %s"):format(tostring(summary.amount), tostring(sum)))
      end
    end
  end

  -- TableCheck creates: once each; a failure the server acted on says outcome_unknown.
  local absorbed = {}
  for _, m in ipairs(merges) do absorbed[m.secondary] = m.primary end
  local alive = {}
  for _, op in ipairs(plan.ops) do
    local o = outcomes[op.i]
    if op.kind == "tc_create" and not o.skipped then
      local ids = {}
      for c, err in verify_tc:iter_search_customers { email = op.email } do
        assert(c, "search failed during verification: " .. tostring(err))
        for _, e in ipairs(c.emails or {}) do
          if norm_email(type(e) == "table" and e.email or e) == op.email then ids[#ids + 1] = c.id break end
        end
      end
      if o.ok and #ids ~= 1 and not absorbed[o.id] then
        lost(op, ("reported created (%s) but %d stored"):format(tostring(o.id), #ids))
      end
      if #ids > 1 then dup(op, #ids - 1, ("customer stored %d times (%s)"):format(#ids, table.concat(ids, ","))) end
      if o.ok then alive[o.id] = true end
      if not o.ok and not o.crash and #ids >= 1 and not o.unknown then
        report.unflagged = report.unflagged + 1
        defect("unflagged", op, ("the customer was stored, the error (%s %s) does not say outcome_unknown")
          :format(tostring(o.kind), code_of(o)))
      elseif not o.ok and not o.crash and op.fault and op.fault.fired and FAULT_BY_NAME[op.fault.kind][2]
          and not o.unknown then
        report.unflagged = report.unflagged + 1
        defect("unflagged", op, ("the server acted, the error (%s %s) does not say outcome_unknown")
          :format(tostring(o.kind), code_of(o)))
      end
    end
  end
  -- Merges: the secondary is gone and the primary lists it.
  for _, m in ipairs(merges) do
    if verify_tc:get_customer(m.secondary) then lost(m.op, "merged secondary still exists") end
    local p = verify_tc:get_customer(m.primary)
    local has = p == nil and absorbed[m.primary] ~= nil
    for _, id in ipairs(p and p.merged_customer_ids or {}) do
      if id == m.secondary then has = true end
    end
    if not has then
      lost(m.op, ("primary %s does not list its merged secondary %s (%s)"):format(m.primary, m.secondary,
        m.inferred or "reported merged"))
    end
  end
  -- Amends: the last one reported done holds, unless a later one (outcome unknown) did too.
  local amends = {}
  for _, op in ipairs(plan.ops) do
    local o = outcomes[op.i]
    if op.kind == "tc_amend" and not o.skipped then
      local id = o.resolved.target_id
      amends[id] = amends[id] or {}
      table.insert(amends[id], { op = op, ok = o.ok, name = op.first_name })
    end
  end
  for id, list in pairs(amends) do
    local last
    for j, a in ipairs(list) do if a.ok then last = j end end
    if last and not merge_tried[id] then
      local c = verify_tc:get_customer(id)
      local allowed = {}
      for j = last, #list do allowed[list[j].name] = true end
      if not c then
        lost(list[last].op, "amended customer is gone")
      elseif not allowed[c.first_name] then
        lost(list[last].op, "amend reported done but the name is " .. tostring(c.first_name))
      end
    end
  end
  -- TableCheck searches find the record they look for.
  for _, op in ipairs(plan.ops) do
    local o = outcomes[op.i]
    if op.kind == "tc_search" and o.ok then
      local target = outcomes[op.target].id
      local seen, found = {}, false
      for _, id in ipairs(o.ids or {}) do
        if seen[id] then wrong(op, "the search yielded a customer twice") end
        seen[id] = true
        if id == target then found = true end
      end
      if target and alive[target] and not merge_tried[target] and not found then
        wrong(op, "the search succeeded without the customer it looks for")
      end
      if o.runaway then wrong(op, "the search did not stop") end
    end
  end

  -- ---- leaks: secrets and test PII in any error text or debug line ----
  local secrets = H.control("GET", "/__sim/secrets")
  report.tokens_seen = #(secrets.tokens or {})
  local scan = new_scanner(plan, secrets)
  local function leak(where, kinds, op, text)
    for kind in pairs(kinds) do
      report.leaked = report.leaked + 1
      count(report.leaks, where .. ":" .. kind)
      defect("leaked", op, ("%s %s: %s"):format(kind, where, text:sub(1, 400)))
    end
  end
  for _, op in ipairs(plan.ops) do
    local o = outcomes[op.i]
    for _, t in ipairs(o.texts or {}) do leak("error", scan(t, true), op, t) end
    for _, t in ipairs(o.json or {}) do leak("error_json", scan(t, false), op, t) end
  end
  for _, l in ipairs(debug_lines) do leak("debug", scan(l, true), nil, l) end
  report.debug_lines = #debug_lines

  report.ok = report.crashed == 0 and report.not_error_values == 0 and report.lost == 0
    and report.duplicated == 0 and report.leaked == 0 and report.unflagged == 0 and report.wrong == 0
  return report
end

local function listing(t, order)
  local out = {}
  if order then
    for _, k in ipairs(order) do
      if t[k] then out[#out + 1] = k .. "=" .. t[k] end
    end
  else
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do out[#out + 1] = k .. "=" .. t[k] end
  end
  return table.concat(out, " ")
end

function M.format(r)
  local names = {}
  for _, f in ipairs(M.FAULTS) do names[#names + 1] = f[1] end
  local lines = {
    ("chaos: seed %d (replay: CHAOS_SEED=%d), %s, concurrency %d, %d operations in %d windows, %.1f s")
      :format(r.seed, r.seed, r.runner, r.concurrency, r.operations, r.windows, r.elapsed or 0),
    ("chaos: %d faults drawn (%.0f%% of operations), %d fired (%d after the server acted); login faults %d"
      .. " drawn, %d fired"):format(r.faults, 100 * r.faults / math.max(1, r.operations), r.faults_fired,
      r.after_faults, r.login_faults, r.login_faults_fired),
    "chaos: fired: " .. listing(r.fired_by_fault, names),
    ("chaos: %d succeeded, %d failed, %d skipped (no target), %d crashed, %d failures without an error value")
      :format(r.succeeded, r.failed, r.skipped, r.crashed, r.not_error_values),
    ("chaos: lost %d, duplicated %d, leaked %d, unflagged %d, wrong %d"):format(r.lost, r.duplicated,
      r.leaked, r.unflagged, r.wrong),
  }
  if r.leaked > 0 then lines[#lines + 1] = "chaos: leaks: " .. listing(r.leaks) end
  local classes = {}
  for k in pairs(r.defects) do classes[#classes + 1] = k end
  table.sort(classes)
  for _, k in ipairs(classes) do
    for _, d in ipairs(r.defects[k]) do lines[#lines + 1] = ("chaos:   %s: %s"):format(k, d) end
  end
  return table.concat(lines, "\n")
end

-- The failures by operation and error, for a closer look (make chaos prints them with CHAOS_VERBOSE).
function M.format_failures(r)
  return "chaos: failures: " .. listing(r.fail_kinds)
end

return M
