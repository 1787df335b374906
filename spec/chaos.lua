-- The fault suite: mixed Toast and TableCheck operations against the simulator while faults are
-- injected at random under a fixed seed, then the simulator's state is checked against what the
-- client reported. Used by `make chaos` (2,000+ operations) and spec/chaos_spec.lua (a few hundred).
local crm = require "crm"
local H = require "helper"

local M = {}

-- Fault kinds, each a function(path, method) -> fault spec for /__sim/faults.
local FAULTS = {
  s500 = function(p, m) return { path = p, method = m, status = 500 } end,
  s502 = function(p, m) return { path = p, method = m, status = 502 } end,
  s503 = function(p, m) return { path = p, method = m, status = 503 } end,
  s429 = function(p, m) return { path = p, method = m, status = 429, retry_after = 0 } end,
  slow = function(p, m) return { path = p, method = m, delay = 0.4 } end,
  drop = function(p, m) return { path = p, method = m, drop = true } end,
  lost_answer = function(p, m) return { path = p, method = m, drop = true, after = true } end,
  cut_body = function(p, m) return { path = p, method = m, partial = true, after = true } end,
  truncated_json = function(p, m) return { path = p, method = m, status = 200, body = '{"guid": "tr' } end,
}
local FAULT_NAMES = { "s500", "s502", "s503", "s429", "slow", "drop", "lost_answer", "cut_body",
                      "truncated_json" }

local function pick(rng, list) return list[rng(#list)] end

-- A small deterministic PRNG (LCG), so runs repeat exactly under both Lua 5.4 and LuaJIT.
local function prng(seed)
  local state = seed % 2147483647
  if state <= 0 then state = state + 2147483646 end
  return function(n)
    state = (state * 48271) % 2147483647
    if n then return state % n + 1 end
    return state / 2147483647
  end
end

function M.run(opts)
  opts = opts or {}
  local n_ops = opts.operations or 2000
  local rate = opts.fault_rate or 0.25
  local rng = prng(opts.seed or 20261121)
  H.reset()
  local retry = { max_attempts = 6, base_delay = 0.001, max_delay = 0.01, deadline = 5 }
  local toast = H.toast { timeout = 0.25, retry = retry }
  local tc = H.tablecheck { timeout = 0.25, retry = retry }

  local report = { operations = 0, faults = 0, succeeded = 0, failed = 0, crashed = 0,
                   not_error_values = 0, lost = 0, duplicated = 0, by_fault = {}, by_op = {} }
  local toast_customers = {} -- {guid, email, ok}
  local credits = {}         -- customer guid -> {guid -> {amount, ok}}
  local tc_customers = {}    -- {id?, email, ok}
  local tc_live = {}         -- ids known to exist and not merged away
  local merges = {}          -- {primary, secondaries}
  local uid = 0

  local function unique(prefix)
    uid = uid + 1
    return ("%s%d.%d@example.org"):format(prefix, opts.seed or 0, uid)
  end

  local function inject(path, method, allowed)
    if rng() >= rate then return nil end
    local kind = pick(rng, allowed or FAULT_NAMES)
    local f = FAULTS[kind](path, method)
    f.count = rng(2)
    H.fault(f)
    report.faults = report.faults + 1
    report.by_fault[kind] = (report.by_fault[kind] or 0) + 1
    return kind
  end

  local ops = {}

  function ops.toast_create()
    local email = unique("t")
    inject("/crm/v1/customers", "POST")
    if rng() < 0.1 then H.fault { path = "/crm/v1/customers", method = "POST", status = 202, count = 2 } end
    local c, err = toast:create_customer { firstName = "Chaos", lastName = "Toast", email = email }
    local rec = { email = email, ok = c ~= nil, guid = c and c.guid or (err and err.guid) }
    toast_customers[#toast_customers + 1] = rec
    if c then credits[c.guid] = credits[c.guid] or {} end
    return c, err
  end

  function ops.credit_add()
    local list = {}
    for g in pairs(credits) do list[#list + 1] = g end
    table.sort(list)
    if #list == 0 then return ops.toast_create() end
    local cust = pick(rng, list)
    local amount = rng(50)
    inject("/crm/v1/customers/" .. cust .. "/creditTransactions", "POST")
    local t, err = toast:add_credit(cust, { amount = amount, localCreatedDate = crm.toast_time() })
    local guid = t and t.guid or (err and err.guid)
    credits[cust][guid] = { amount = amount, ok = t ~= nil }
    return t, err
  end

  function ops.toast_search()
    inject("/crm/v1/customers/search", "POST")
    return toast:search_customers({ lastName = "Toast" }, { pageSize = 10 })
  end

  function ops.toast_pages()
    inject("/crm/v1/customers/search", "POST")
    local items, n = 0, 0
    for c, err in toast:search_iter({ lastName = "Toast" }, { pageSize = 50 }) do
      if c == false then return nil, err end
      items = items + 1
      n = n + 1
      if n >= 120 then break end
    end
    return items
  end

  function ops.tc_create()
    local email = unique("tc")
    -- TableCheck creates carry no client id: only failures before sending may be retried.
    inject("/api/crm/v1/customers", "POST")
    local c, err = tc:customers_create { franchise_id = H.tc.franchise_id, first_name = "Chaos",
                                        last_name = "Table", emails = { email } }
    tc_customers[#tc_customers + 1] = { email = email, ok = c ~= nil, id = c and c.id }
    if c then tc_live[#tc_live + 1] = c.id end
    return c, err
  end

  function ops.tc_amend()
    if #tc_live == 0 then return ops.tc_create() end
    local id = pick(rng, tc_live)
    inject("/api/crm/v1/customers/" .. id, "PUT")
    return tc:customers_amend(id, { first_name = "Amended" .. rng(1000) })
  end

  function ops.tc_search()
    inject("/api/crm/v1/customer_search", "POST")
    local n = 0
    for c, err in tc:customers_search { last_name = "Table" } do
      if c == false then return nil, err end
      n = n + 1
    end
    return n
  end

  function ops.tc_merge()
    if #tc_live < 3 then return ops.tc_create() end
    local i = rng(#tc_live)
    local primary = table.remove(tc_live, i)
    local j = rng(#tc_live)
    local secondary = table.remove(tc_live, j)
    inject("/api/crm/v1/customers/" .. primary, "PUT")
    local merged, err = tc:merge(primary, { secondary })
    if merged then
      merges[#merges + 1] = { primary = primary, secondary = secondary }
      tc_live[#tc_live + 1] = primary
    else
      -- Outcome may be unknown: find out from the server which side survived, after any
      -- request the server is still sitting on (a `slow` fault) has been processed.
      require("crm.core").sleep(0.45)
      local p = tc:customers_show(primary)
      local s = tc:customers_show(secondary)
      if p then tc_live[#tc_live + 1] = primary end
      if s then tc_live[#tc_live + 1] = secondary end
      -- The server merged although the answer was lost: hold it to the same checks.
      if p and not s and err.status ~= 404 and err.kind ~= "validation" then
        merges[#merges + 1] = { primary = primary, secondary = secondary, inferred = tostring(err) }
      end
    end
    return merged, err
  end

  local MIX = {
    { "toast_create", 22 }, { "credit_add", 20 }, { "toast_search", 8 }, { "toast_pages", 4 },
    { "tc_create", 18 }, { "tc_amend", 12 }, { "tc_search", 8 }, { "tc_merge", 8 },
  }
  local total_weight = 0
  for _, m in ipairs(MIX) do total_weight = total_weight + m[2] end

  for _ = 1, n_ops do
    local r, name = rng(total_weight), nil
    for _, m in ipairs(MIX) do
      if r <= m[2] then name = m[1] break end
      r = r - m[2]
    end
    report.operations = report.operations + 1
    report.by_op[name] = (report.by_op[name] or 0) + 1
    local ok, res, err = pcall(ops[name])
    if not ok then
      report.crashed = report.crashed + 1
      report.crash_message = report.crash_message or tostring(res)
    elseif res ~= nil then
      report.succeeded = report.succeeded + 1
    else
      report.failed = report.failed + 1
      report.fail_kinds = report.fail_kinds or {}
      local key = name .. ":" .. tostring(err and err.kind) .. ":" .. tostring(err and (err.code or err.status))
      report.fail_kinds[key] = (report.fail_kinds[key] or 0) + 1
      if not crm.is_error(err) then report.not_error_values = report.not_error_values + 1 end
    end
    -- A fault that found no request stays queued: clear it so it hits only its own operation.
    H.clear_faults()
  end

  -- ---- compare the simulator's state with what the client reported ----
  report.problems = {}
  local function problem(what)
    if #report.problems < 20 then report.problems[#report.problems + 1] = what end
  end
  local verify_toast = H.toast()
  for _, rec in ipairs(toast_customers) do
    local found = assert(verify_toast:search_customers({ email = rec.email }, { pageSize = 50 }))
    if rec.ok and (#found ~= 1 or found[1].guid ~= rec.guid) then
      report.lost = report.lost + 1
      problem("toast customer reported created but found " .. #found)
    end
    if #found > 1 then
      report.duplicated = report.duplicated + 1
      problem("toast customer stored " .. #found .. " times")
    end
  end
  for cust, txns in pairs(credits) do
    local seen, sum = {}, 0
    for t in verify_toast:customer_credit_transactions_iter(cust) do
      assert(t, "credit listing failed")
      if seen[t.guid] then
        report.duplicated = report.duplicated + 1
        problem("credit transaction listed twice")
      end
      seen[t.guid] = true
      sum = sum + t.amount
      if not txns[t.guid] then -- value nobody asked for
        report.duplicated = report.duplicated + 1
        problem("credit transaction nobody sent")
      end
    end
    for guid, t in pairs(txns) do
      if t.ok and not seen[guid] then
        report.lost = report.lost + 1
        problem("credit reported added but missing")
      end
    end
    local summary = assert(verify_toast:credit_summary(cust))
    if math.abs(summary.amount - sum) > 1e-9 then
      report.duplicated = report.duplicated + 1
      problem("credit summary " .. summary.amount .. " is not the sum " .. sum)
    end
  end
  local verify_tc = H.tablecheck()
  for _, rec in ipairs(tc_customers) do
    local n, ids = 0, {}
    for c in verify_tc:customers_search { email = rec.email } do
      assert(c, "search failed during verification")
      n = n + 1
      ids[#ids + 1] = c.id .. "(" .. table.concat(c.emails or {}, "|") .. ")"
    end
    local merged_away = false
    for _, m in ipairs(merges) do
      if m.secondary == rec.id then merged_away = true end
    end
    if rec.ok and n ~= 1 and not merged_away then
      report.lost = report.lost + 1
      problem("tablecheck customer reported created but found " .. n)
    end
    if n > 1 then
      report.duplicated = report.duplicated + 1
      problem("tablecheck customer stored " .. n .. " times: " .. rec.email .. " " .. table.concat(ids, " "))
    end
  end
  local absorbed = {} -- id -> the primary that took it in
  for _, m in ipairs(merges) do absorbed[m.secondary] = m.primary end
  for _, m in ipairs(merges) do
    if verify_tc:customers_show(m.secondary) then
      report.lost = report.lost + 1
      problem("merged secondary still exists")
    end
    local p = verify_tc:customers_show(m.primary)
    -- A primary merged away later is checked through its own merge instead.
    local has = p == nil and absorbed[m.primary] ~= nil
    for _, id in ipairs(p and p.merged_customer_ids or {}) do
      if id == m.secondary then has = true end
    end
    if not has then
      report.lost = report.lost + 1
      problem(("primary %s does not list its merged secondary %s (%s; lists %s)"):format(m.primary,
        m.secondary, m.inferred or "reported merged",
        table.concat(p and p.merged_customer_ids or { "primary gone" }, ",")))
    end
  end
  report.ok = report.crashed == 0 and report.not_error_values == 0 and report.lost == 0
    and report.duplicated == 0
  return report
end

function M.format(r)
  local faults = {}
  for _, k in ipairs(FAULT_NAMES) do
    if r.by_fault[k] then faults[#faults + 1] = k .. "=" .. r.by_fault[k] end
  end
  return table.concat({
    ("chaos: %d operations, %d faults injected (%.0f%%): %s"):format(r.operations, r.faults,
      100 * r.faults / math.max(1, r.operations), table.concat(faults, " ")),
    ("chaos: %d succeeded, %d failed (all error values: %s), %d crashed"):format(r.succeeded,
      r.failed, tostring(r.not_error_values == 0), r.crashed),
    ("chaos: lost %d, duplicated %d%s"):format(r.lost, r.duplicated,
      r.crash_message and (" (first crash: " .. r.crash_message .. ")") or ""),
  }, "\n")
end

return M
