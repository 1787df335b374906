-- `crm toast ...`: customers, credit and the guest-history backfill, on crm.toast's public API.
local crm = require "crm"
local output = require "crm.cli.output"
local input = require "crm.cli.input"
local errors = require "crm.error"

local M = {}

local json = crm.json

-- The customer the person flags (or --data) describe; an empty table when none is given.
local function person(ctx)
  local a = ctx.args
  local c, err = ctx:data()
  if err then return nil, err end
  c = c or {}
  if a.first_name then c.firstName = a.first_name end
  if a.last_name then c.lastName = a.last_name end
  if a.email then c.email = a.email end
  if a.phone then c.phone = a.phone end
  if a.guid then c.guid = a.guid end
  return c
end

-- Every item of a pager as a line -> exit code.
local function stream(ctx, it)
  for item, err in it do
    if item == false then
      output.flush()
      return ctx:fail(err)
    end
    local code = ctx:line(item)
    if code ~= 0 then return code end
  end
  return 0
end

local function customers_search(ctx, toast)
  local c, err = person(ctx)
  if not c then return ctx:fail(err) end
  if next(c) == nil then
    return ctx:fail(output.usage_error("search needs at least one of --email, --phone, --first-name,"
      .. " --last-name", "query"))
  end
  return stream(ctx, toast:iter_search_customers(c))
end

-- The exit code of a batch with failures: outcome unknown wins, else the first failure's kind.
local function batch_code(failures)
  local first
  for _, err in ipairs(failures) do
    if err.outcome_unknown then return output.EXIT.outcome_unknown end
    first = first or output.exit_code(err)
  end
  return first or 0
end

-- find-or-create --input FILE: every row through client:batch; each row's outcome is one line
-- {line, status = "found" | "created" | "failed" | "dry_run", customer | error}, and a failing
-- row does not stop the others.
local function find_or_create_input(ctx, toast)
  local rows, err = input.rows(ctx.args.input)
  if not rows then return ctx:fail(err) end
  local concurrency = ctx.args.concurrency
  if not concurrency or concurrency < 1 or concurrency > 1024 or concurrency % 1 ~= 0 then
    return ctx:fail(output.usage_error("--concurrency must be an integer from 1 to 1024", "concurrency"))
  end
  local bar = ctx:progress("find-or-create", #rows)
  local done = 0
  local ops = {}
  -- Ctrl-C: rows in flight finish, the rest are not started; their lines say so, then exit 130.
  ctx:trap_interrupt()
  for i, r in ipairs(rows) do
    ops[i] = function(client)
      local res, how
      if ctx.interrupted() then
        res, how = nil, errors.new("transport", "not started: interrupted (Ctrl-C)",
          { code = "interrupted", sent = false })
      elseif r.err then
        res, how = nil, r.err
      else
        res, how = client:find_or_create(r.row)
      end
      done = done + 1
      bar:update(done)
      return res, how
    end
  end
  local results, berr = toast:batch(ops, { concurrency = concurrency })
  if not results then return ctx:fail(berr) end
  local counts = { found = 0, created = 0, failed = 0, dry_run = 0, not_started = 0 }
  local failures = {}
  for i, res in ipairs(results) do
    local line = { line = rows[i].line }
    if res.value then
      line.status, line.customer = res.extra, res.value
    elseif ctx.dry_run and require("crm.cli.inspect").is_held(res.err, ctx.inspector) then
      line.status = "dry_run"
    elseif res.err.code == "interrupted" and ctx.interrupted() then
      line.status = "not_started"
    else
      line.status, line.error = "failed", output.error_object(res.err)
      failures[#failures + 1] = res.err
      output.error(res.err, "line " .. rows[i].line)
    end
    counts[line.status] = (counts[line.status] or 0) + 1
    local code = ctx:line(line)
    if code ~= 0 then return code end
  end
  if ctx.dry_run then
    -- The creates a dry run held, in the order they were planned.
    for _, r in ipairs(ctx.inspector.held) do
      output.line { dry_run = true, method = r.method, path = r.path, body = r.body }
    end
  end
  output.flush()
  bar:finish(("find-or-create: %d rows: %d found, %d created, %d failed%s%s in %.1fs"):format(#rows,
    counts.found, counts.created, counts.failed,
    ctx.dry_run and (", " .. counts.dry_run .. " would be created") or "",
    counts.not_started > 0 and (", " .. counts.not_started .. " not started (Ctrl-C)") or "", bar:elapsed()))
  if ctx.interrupted() then return output.EXIT.interrupted end
  return batch_code(failures)
end

local function customers(ctx, toast)
  local a = ctx.args
  if a.verb == "get" then return ctx:result(toast:get_customer(a.guid)) end
  if a.verb == "search" then return customers_search(ctx, toast) end
  if a.verb == "create" then
    local c, err = person(ctx)
    if not c then return ctx:fail(err) end
    return ctx:result(toast:create_customer(c))
  end
  -- find-or-create
  if a.input then
    if a.data or a.first_name or a.last_name or a.email or a.phone then
      return ctx:fail(output.usage_error("--input reads the customers from a file: no person flags"
        .. " or --data with it", "input"))
    end
    return find_or_create_input(ctx, toast)
  end
  local c, err = person(ctx)
  if not c then return ctx:fail(err) end
  local res, how = toast:find_or_create(c)
  if not res then return ctx:result(nil, how) end
  return ctx:line { status = how, customer = res }
end

local function credit(ctx, toast)
  local a = ctx.args
  if a.verb == "summary" then return ctx:result(toast:get_credit_summary(a.guid)) end
  if a.verb == "transactions" then
    if a.guid then
      if a.start_date or a.end_date then
        return ctx:fail(output.usage_error("--start-date and --end-date select from all transactions:"
          .. " leave out the GUID", "guid"))
      end
      return stream(ctx, toast:iter_customer_credit_transactions(a.guid))
    end
    return stream(ctx, toast:iter_credit_transactions { startDate = a.start_date, endDate = a.end_date })
  end
  -- add
  local amount = tonumber(a.amount)
  if not amount then return ctx:fail(output.usage_error("--amount must be a number, e.g. 10.00", "amount")) end
  local when, terr = crm.toast_time(a.date)
  if not when then return ctx:fail(terr) end
  return ctx:result(toast:add_credit(a.guid, { amount = amount, note = a.note, guid = a.txn_guid,
                                               localCreatedDate = when }))
end

-- ---- guests backfill: a journal of finished windows, so Ctrl-C and crashes resume ----

local function state_dir()
  local base = os.getenv("XDG_STATE_HOME")
  if not base or base == "" then base = (os.getenv("HOME") or "/tmp") .. "/.local/state" end
  return base .. "/crm"
end

-- The journal: JSON Lines of {"orders": [...]} (a finished window's orders) and
-- {"checkpoint": {...}} (after it). Reading it back folds the orders (fold is idempotent by
-- order GUID) and resumes from the last checkpoint; a cut last line is ignored.
local function read_journal(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local orders, checkpoint, n = {}, nil, 0
  for l in f:lines() do
    local v = json.decode(l)
    if type(v) == "table" then
      if type(v.orders) == "table" then
        for _, o in ipairs(v.orders) do orders[#orders + 1] = o end
      end
      if type(v.checkpoint) == "table" then checkpoint = v.checkpoint end
      n = n + 1
    end
  end
  f:close()
  return { orders = orders, checkpoint = checkpoint, lines = n }
end

local function append(path, value)
  local f, err = io.open(path, "ab")
  if not f then return nil, err end
  local text = assert(json.encode(value))
  local ok, werr = f:write(text, "\n")
  f:close()
  if not ok then return nil, werr end
  return true
end

local function resume_command(ctx, path)
  local parts = { "crm" }
  if ctx.args.sim then parts[#parts + 1] = "--sim" end
  parts[#parts + 1] = "toast guests backfill --checkpoint '" .. path:gsub("'", "'\\''") .. "'"
  if ctx.args.spacing then parts[#parts + 1] = "--spacing " .. ctx.args.spacing end
  if ctx.args.window_days then parts[#parts + 1] = "--window-days " .. ctx.args.window_days end
  return table.concat(parts, " ")
end

local function backfill(ctx, toast)
  local a = ctx.args
  local path, temporary = a.checkpoint, false
  if not path then
    local dir = state_dir()
    os.execute("mkdir -p -m 700 '" .. dir:gsub("'", "'\\''") .. "'")
    path, temporary = dir .. "/backfill-" .. crm.guid():sub(1, 8) .. ".jsonl", true
  end
  local journal = read_journal(path)
  local set, serr = toast:new_profile_set()
  if not set then return ctx:fail(serr) end
  if journal then
    for _, o in ipairs(journal.orders) do set:fold(o) end
  end
  local spacing, allow_fast = a.spacing, nil
  if ctx.settings.sim then
    spacing, allow_fast = spacing or 0.2, true
  elseif spacing and spacing < 5 then
    allow_fast = true
  end
  local bar = ctx:progress("backfill windows")
  ctx:trap_interrupt()
  local werr
  local res, err = toast:backfill_orders {
    weeks = a.weeks, spacing = spacing, allow_fast = allow_fast, window_days = a.window_days,
    checkpoint = journal and journal.checkpoint or nil, profiles = set,
    on_window = function(orders)
      local ok, e = append(path, { orders = json.array(orders) })
      if not ok then
        werr = e
        error("the journal could not be written", 0)
      end
      if ctx.interrupted() then error("interrupted", 0) end
    end,
    on_progress = function(p)
      local ok, e = append(path, { checkpoint = p.checkpoint })
      if not ok then
        werr = e
        error("the journal could not be written", 0)
      end
      bar:update(p.window, p.windows)
      if ctx.interrupted() then error("interrupted", 0) end
    end,
  }
  if not res then
    if err.checkpoint then append(path, { checkpoint = err.checkpoint }) end
    output.flush()
    if werr then
      return ctx:fail(output.usage_error("the journal " .. path .. " could not be written: "
        .. tostring(werr), "checkpoint"))
    end
    local interrupted = ctx.interrupted()
    if interrupted then
      bar:finish(("backfill interrupted: %d windows done; checkpoint in %s"):format(
        err.checkpoint and err.checkpoint.windows_done or 0, path))
    else
      output.error(err)
    end
    output.note("resume with: " .. resume_command(ctx, path))
    if interrupted then return output.EXIT.interrupted end
    return output.exit_code(err)
  end
  local n, jerr = set:write_jsonl(io.stdout)
  output.flush()
  if not n then return ctx:fail(jerr) end
  bar:finish(("backfill: %d orders in %d windows (%d ordersBulk calls) -> %d guest profiles"):format(
    res.orders, res.windows, res.calls, n))
  if temporary then os.remove(path) end
  return 0
end

function M.run(ctx)
  local a = ctx.args
  -- the database commands need no Toast login
  if a.resource == "guests" and (a.verb == "report" or a.verb == "drain") then
    return require("crm.cli.guests_db")[a.verb](ctx)
  end
  -- the backfill's transport stops sending after Ctrl-C
  local toast, err = ctx:toast(a.resource == "guests")
  if not toast then return ctx:fail(err) end
  local code
  if a.resource == "customers" then
    code = customers(ctx, toast)
  elseif a.resource == "credit" then
    code = credit(ctx, toast)
  elseif a.db then
    code = require("crm.cli.guests_db").backfill(ctx, toast)
  else
    code = backfill(ctx, toast)
  end
  toast:close()
  return code
end

return M
