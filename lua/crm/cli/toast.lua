-- `crm toast ...`: customers, credit and the guest-history backfill, on crm.toast's public API.
local crm = require "crm"
local output = require "crm.cli.output"
local input = require "crm.cli.input"
local errors = require "crm.error"
local inspect = require "crm.cli.inspect"

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

-- The flags of a write that takes --input: --idempotency-key for one record, and for a file
-- --key-column (each row's key) and --concurrency.
function M.import_flags(cmd, what, number)
  cmd:option("--idempotency-key", "A key of yours (an order id, a row id): the same key always"
    .. " sends the same GUID, so a rerun adds nothing.")
  cmd:option("--input", "A CSV (header row of field names) or JSON Lines file of " .. what .. ".")
  cmd:option("--key-column", "The --input column holding each row's idempotency key (default:"
    .. " idempotency_key, when the file has it).")
  cmd:option("--concurrency", "Rows in flight with --input.", "16"):convert(number("--concurrency"))
  cmd:flag("--strict", "With --input: refuse a file with columns crm does not know (default: ignore them, warn once).")
end

-- The columns an --input row may have, per import: the API's fields (the key column is allowed
-- beside them).
local CUSTOMER_FIELDS = { guid = true, firstName = true, lastName = true, email = true, phone = true,
                          entityType = true }
local INPUT_FIELDS = {
  ["find-or-create"] = CUSTOMER_FIELDS,
  create = CUSTOMER_FIELDS,
  credit = { customerId = true, amount = true, note = true, localCreatedDate = true, date = true,
             guid = true },
}

-- A column's name is shown only when it looks like a field name (a word of letters, digits and
-- underscores): a file without its header row makes its first guest the header, and a name
-- like "Ann Lee's notes" may be data too.
local function field_shaped(k)
  return #k <= 40 and k:find("^[%a_][%w_]*$") ~= nil
end

-- unknown_columns(rows, known, column) -> the sorted names of the columns that are no field
-- and look like field names, how many others there are, and whether any column is known.
local function unknown_columns(rows, known, column)
  local seen, list, hidden, any_known = {}, {}, 0, false
  for _, r in ipairs(rows) do
    for k in pairs(r.row or {}) do
      k = tostring(k)
      if known[k] or k == column then
        any_known = true
      elseif not seen[k] then
        seen[k] = true
        if field_shaped(k) then list[#list + 1] = k else hidden = hidden + 1 end
      end
    end
  end
  table.sort(list)
  return list, hidden, any_known
end

-- Unknown columns are dropped with one warning naming them; --strict refuses the file instead.
-- A file none of whose columns is known has no header row: its first record, a guest, was read
-- as the header, so nothing of it is named and the file is refused.
local function drop_unknown_columns(ctx, rows, known, column)
  local unknown, hidden, any_known = unknown_columns(rows, known, column)
  if #unknown + hidden == 0 then return true end
  local names_known = {}
  for k in pairs(known) do names_known[#names_known + 1] = k end
  table.sort(names_known)
  if not any_known then
    return nil, output.usage_error("--input names none of the fields crm knows in its first line: is"
      .. " the header row missing? (the known ones: " .. table.concat(names_known, ", ") .. ")", "input")
  end
  local names = table.concat(unknown, ", ")
  if hidden > 0 then
    names = names .. (#unknown > 0 and " and " or "") .. hidden .. (#unknown > 0 and " more" or "")
      .. " not shown (not shaped like a field name)"
  end
  if ctx.args.strict then
    return nil, output.usage_error("--input has columns crm does not know: " .. names .. " (the known ones: "
      .. table.concat(names_known, ", ") .. "; without --strict they are ignored)", "input")
  end
  output.note("crm: warning: --input: ignoring the columns crm does not know: " .. names
    .. " (--strict refuses them)")
  for _, r in ipairs(rows) do
    for k in pairs(r.row or {}) do
      if not known[k] and k ~= column then r.row[k] = nil end
    end
  end
  return true
end

-- A row's error on stderr once per distinct text; repeats are counted and summed up at the end.
local function error_summary()
  local by_text, order = {}, {}
  local s = {}
  function s.add(err, line)
    local text = tostring(err)
    local seen = by_text[text]
    if not seen then
      by_text[text] = { n = 0, lines = {} }
      order[#order + 1] = text
      output.error(err, "line " .. line)
    else
      seen.n = seen.n + 1
      if #seen.lines < 10 then seen.lines[#seen.lines + 1] = line end
    end
  end
  function s.finish()
    for _, text in ipairs(order) do
      local seen = by_text[text]
      if seen.n > 0 then
        output.note(("crm: the same error on %d more row%s (lines %s%s): %s"):format(seen.n,
          seen.n == 1 and "" or "s", table.concat(seen.lines, ", "), seen.n > #seen.lines and ", ..." or "",
          errors.redact(text)))
      end
    end
  end
  return s
end

-- The write options of one command: {idempotency_key} from --idempotency-key, or nil.
local function key_opts(ctx)
  local key = ctx.args.idempotency_key
  return key and { idempotency_key = key } or nil
end

-- The column of --input that holds each row's idempotency key: --key-column, else
-- "idempotency_key" when any row has it, else nil.
local function key_column(ctx, rows)
  if ctx.args.key_column then return ctx.args.key_column end
  for _, r in ipairs(rows) do
    if r.row and r.row.idempotency_key ~= nil then return "idempotency_key" end
  end
  return nil
end

-- One row's key (taken out of the row: it is not a field of the API) -> opts | nil, err
local function row_key(row, column)
  if not column then return nil end
  local key = row[column]
  row[column] = nil
  if type(key) == "number" and key == math.floor(key) and math.abs(key) < 2 ^ 53 then
    key = string.format("%d", key)
  end
  if type(key) ~= "string" or key == "" then
    return nil, output.usage_error("the key column " .. column .. " is empty or not text on this"
      .. " row: every row needs its key", column)
  end
  return { idempotency_key = key }
end

-- A credit row: {customerId, amount, note, localCreatedDate (or date), guid} -> txn | nil, err
local function credit_row(row)
  local amount = tonumber(row.amount)
  if not amount then return nil, output.usage_error("amount must be a number, e.g. 10.00", "amount") end
  local when, terr = crm.toast_time(row.localCreatedDate or row.date)
  if not when then return nil, terr end
  return { amount = amount, note = row.note, guid = row.guid, localCreatedDate = when }
end

-- A write whose GUID is known before sending (the key's, else the row's guid) may be one an
-- earlier run did: the GUID is read first, so a rerun says "found", not "created" or "added".
-- Then the write is sent all the same: a replay that does not match (another amount, another
-- guest) fails. lookup: the client's method that reads the record; done: the status of a row
-- not found; write() -> value | nil, err. -> value, "found" | done | nil, err (a failed read
-- sends nothing)
local function write_once(client, operation, lookup, guid, opts, done, write)
  if opts then guid = client:get_idempotency_guid(operation, opts.idempotency_key) end
  local found = false
  if type(guid) == "string" then
    local stored, err = client[lookup](client, guid)
    found = stored ~= nil
    -- not there, or not a GUID (the write refuses it with its own error)
    if not stored and err and err.status ~= 404 and err.kind ~= "validation" then return nil, err end
  end
  local res, err = write()
  if not res then return nil, err end
  return res, found and "found" or done
end

-- One record's keyed write (write_once's answer): the record on stdout as without a key, and on
-- stderr whether an earlier run had written it already (a rerun adds nothing).
local function keyed_result(ctx, label, res, how)
  if res == nil then return ctx:result(nil, how) end
  if how == "found" then
    output.note(label .. ": already done by an earlier run (found by its GUID): nothing written again")
  end
  return ctx:result(res)
end

-- What each --input import does with one row -> value, how | nil, err; and the result's field.
local IMPORTS = {
  ["find-or-create"] = { field = "customer", label = "find-or-create",
                         run = function(client, row, opts)
                           local c, e, how = client:find_or_create(row, opts)
                           if c then return c, how end
                           return nil, e
                         end },
  create = { field = "customer", label = "create",
             run = function(client, row, opts)
               return write_once(client, "create_customer", "get_customer", row.guid, opts, "created",
                 function() return client:create_customer(row, opts) end)
             end },
  credit = { field = "transaction", label = "credit add",
             run = function(client, row, opts)
               local txn, err = credit_row(row)
               if not txn then return nil, err end
               return write_once(client, "add_credit", "get_credit_transaction", txn.guid, opts, "added",
                 function() return client:add_credit(row.customerId, txn, opts) end)
             end },
}

-- One row's op for client:batch.
local function row_op(ctx, imp, r, column, progress)
  return function(client)
    local res, how
    if ctx.interrupted() then
      res, how = nil, errors.new("transport", "not started: interrupted (Ctrl-C)",
        { code = "interrupted", sent = false })
    elseif r.err then
      res, how = nil, r.err
    else
      local opts, kerr = row_key(r.row, column)
      if kerr then
        res, how = nil, kerr
      else
        res, how = imp.run(client, r.row, opts)
      end
    end
    progress()
    return res, how
  end
end

-- --input FILE: every row through client:batch; each row's outcome is one line
-- {line, status = "found" | "created" | "added" | "failed" | "dry_run", customer | transaction | error}
-- (a credit or customer an earlier run wrote is "found"), and a failing row does not stop the
-- others. Rows take their idempotency key from the key column (--key-column, default
-- idempotency_key when present), so a rerun adds nothing.
local function import_input(ctx, toast, kind)
  local imp = IMPORTS[kind]
  if ctx.args.idempotency_key then
    return ctx:fail(output.usage_error("--idempotency-key is for one record: with --input each row"
      .. " takes its key from the key column (--key-column)", "idempotency_key"))
  end
  local rows, err = input.rows(ctx.args.input)
  if not rows then return ctx:fail(err) end
  local concurrency = ctx.args.concurrency
  if not concurrency or concurrency < 1 or concurrency > 1024 or concurrency % 1 ~= 0 then
    return ctx:fail(output.usage_error("--concurrency must be an integer from 1 to 1024", "concurrency"))
  end
  local column = key_column(ctx, rows)
  local ok, uerr = drop_unknown_columns(ctx, rows, INPUT_FIELDS[kind], column)
  if not ok then return ctx:fail(uerr) end
  if not column and kind == "credit" then
    output.note("note: the input has no idempotency_key column (see --key-column): a rerun of this"
      .. " import would add every credit again")
  end
  local bar = ctx:progress(imp.label, #rows)
  local done = 0
  local function progress()
    done = done + 1
    bar:update(done)
  end
  local ops = {}
  -- Ctrl-C: rows in flight finish, the rest are not started; their lines say so, then exit 130.
  ctx:trap_interrupt()
  for i, r in ipairs(rows) do ops[i] = row_op(ctx, imp, r, column, progress) end
  local results, berr = toast:batch(ops, { concurrency = concurrency })
  if not results then return ctx:fail(berr) end
  local counts = { found = 0, created = 0, added = 0, failed = 0, dry_run = 0, not_started = 0 }
  local failures = {}
  local summary = error_summary()
  for i, res in ipairs(results) do
    local line = { line = rows[i].line }
    if res.value then
      line.status, line[imp.field] = res.extra, res.value
    elseif ctx.dry_run and require("crm.cli.inspect").is_held(res.err, ctx.inspector) then
      line.status = "dry_run"
    elseif res.err.code == "interrupted" and ctx.interrupted() then
      line.status = "not_started"
    else
      line.status, line.error = "failed", output.error_object(res.err)
      failures[#failures + 1] = res.err
      summary.add(res.err, rows[i].line)
    end
    counts[line.status] = (counts[line.status] or 0) + 1
    local code = ctx:line(line)
    if code ~= 0 then return code end
  end
  if ctx.dry_run then
    -- The writes a dry run held, in the order they were planned.
    for _, r in ipairs(ctx.inspector.held) do
      output.line { dry_run = true, method = r.method, path = r.path, body = r.body }
    end
  end
  output.flush()
  summary.finish()
  local done_text = kind == "credit" and ("%d added, %d already added (found)"):format(counts.added,
      counts.found)
    or kind == "create" and ("%d created, %d already created (found)"):format(counts.created, counts.found)
    or ("%d found, %d created"):format(counts.found, counts.created)
  bar:finish(("%s: %d rows: %s, %d failed%s%s in %.1fs"):format(imp.label, #rows, done_text,
    counts.failed, ctx.dry_run and (", " .. counts.dry_run .. " would be written") or "",
    counts.not_started > 0 and (", " .. counts.not_started .. " not started (Ctrl-C)") or "", bar:elapsed()))
  if ctx.interrupted() then return output.EXIT.interrupted end
  return batch_code(failures)
end

local function customers(ctx, toast)
  local a = ctx.args
  if a.verb == "get" then return ctx:result(toast:get_customer(a.guid)) end
  if a.verb == "search" then return customers_search(ctx, toast) end
  if a.input then
    if a.data or a.first_name or a.last_name or a.email or a.phone or a.guid then
      return ctx:fail(output.usage_error("--input reads the customers from a file: no person flags"
        .. " or --data with it", "input"))
    end
    return import_input(ctx, toast, a.verb)
  end
  if a.verb == "create" then
    local c, err = person(ctx)
    if not c then return ctx:fail(err) end
    local opts = key_opts(ctx)
    return keyed_result(ctx, "customers create", write_once(toast, "create_customer", "get_customer", c.guid,
      opts, "created", function() return toast:create_customer(c, opts) end))
  end
  -- find-or-create
  local c, err = person(ctx)
  if not c then return ctx:fail(err) end
  local res, err2, how = toast:find_or_create(c, key_opts(ctx))
  if not res then return ctx:result(nil, err2) end
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
  if a.old_txn_guid then
    return ctx:fail(output.usage_error("credit add: --guid is now --transaction-guid (the transaction's"
      .. " GUID; the customer's GUID is the argument)", "transaction-guid"))
  end
  if a.input then
    if a.guid or a.amount or a.note or a.txn_guid or a.date then
      return ctx:fail(output.usage_error("--input reads the credits from a file (customerId, amount,"
        .. " note, localCreatedDate): no GUID or other flags with it", "input"))
    end
    return import_input(ctx, toast, "credit")
  end
  if not a.guid then return ctx:fail(output.usage_error("credit add needs the customer's GUID", "guid")) end
  local amount = tonumber(a.amount)
  if not amount then return ctx:fail(output.usage_error("--amount must be a number, e.g. 10.00", "amount")) end
  local when, terr = crm.toast_time(a.date)
  if not when then return ctx:fail(terr) end
  local opts = key_opts(ctx)
  return keyed_result(ctx, "credit add", write_once(toast, "add_credit", "get_credit_transaction", a.txn_guid,
    opts, "added", function()
      return toast:add_credit(a.guid, { amount = amount, note = a.note, guid = a.txn_guid,
                                        localCreatedDate = when }, opts)
    end))
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

-- A word for sh, quoted.
local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function resume_command(ctx, path)
  local parts = { "crm" }
  if ctx.args.sim then parts[#parts + 1] = "--sim" end
  parts[#parts + 1] = "toast guests backfill --checkpoint " .. shell_quote(path)
  if ctx.args.spacing then parts[#parts + 1] = "--spacing " .. ctx.args.spacing end
  if ctx.args.window_days then parts[#parts + 1] = "--window-days " .. ctx.args.window_days end
  -- the restaurant it ran for, when --restaurant or --restaurants named it
  for _, g in ipairs(type(ctx.args.restaurant) == "table" and ctx.args.restaurant or {}) do
    parts[#parts + 1] = "--restaurant " .. g
  end
  if ctx.args.restaurants then parts[#parts + 1] = "--restaurants " .. shell_quote(ctx.args.restaurants) end
  return table.concat(parts, " ")
end

-- --spacing: 0.2 s with --sim unless given; below Toast's 5 s only when asked for.
local function spacing_of(ctx)
  local spacing = ctx.args.spacing
  if ctx.settings.sim then return spacing or 0.2, true end
  if spacing and spacing < 5 then return spacing, true end
  return spacing, nil
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
  local spacing, allow_fast = spacing_of(ctx)
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
  local text, nothing_left = require("crm.cli.guests_db").backfill_summary(res, journal and journal.checkpoint)
  bar:finish(("%s%s -> %d guest profiles"):format(text,
    nothing_left and ("; the journal holds %d orders"):format(#journal.orders) or "", n))
  if temporary then os.remove(path) end
  return 0
end

-- ---- guests backfill of several restaurants (--restaurant, repeated, or --restaurants FILE) ----

-- The GUIDs --restaurant (repeatable) and --restaurants FILE (one a line; blank lines and # comments
-- skipped) name, in order | nil when neither is given | nil, err
local function restaurant_list(a)
  local list = {}
  for _, g in ipairs(type(a.restaurant) == "table" and a.restaurant or { a.restaurant }) do
    list[#list + 1] = g
  end
  if a.restaurants then
    local f, ferr = io.open(a.restaurants, "rb")
    if not f then
      return nil, output.usage_error("--restaurants: cannot read " .. a.restaurants .. ": " .. tostring(ferr),
        "restaurants")
    end
    for l in f:lines() do
      l = l:gsub("#.*$", ""):match("^%s*(.-)%s*$")
      if l ~= "" then list[#list + 1] = l end
    end
    f:close()
    if #list == 0 then
      return nil, output.usage_error("--restaurants: " .. a.restaurants .. " names no GUID", "restaurants")
    end
  end
  if #list == 0 then return nil end
  return list
end

-- Each finished restaurant's orders (from the sink) folded into its profiles, one restaurant at a
-- time, written as JSON Lines with restaurant_guid. -> profiles written | nil, err
local function write_profiles(toast, sink, guid)
  local view = assert(toast:use_restaurant(guid))
  local set, err = view:new_profile_set()
  if not set then return nil, err end
  for o in sink:each_order(guid) do set:fold(o) end
  local profiles = set:profiles()
  for _, p in ipairs(profiles) do p.restaurant_guid = guid end
  return require("crm.toast").guests.write_jsonl(profiles, io.stdout)
end

local function restaurants_backfill(ctx, toast, guids)
  local a = ctx.args
  local dir, temporary = a.checkpoint, false
  local sink, serr
  if a.db then
    -- the database keeps every restaurant's orders, guests and checkpoint
    if dir then
      return ctx:fail(output.usage_error("--db keeps the checkpoints in the database: leave out --checkpoint",
        "checkpoint"))
    end
    sink, serr = require("crm.cli.guests_db").open(ctx, toast.default_country_code)
  else
    if not dir then
      dir, temporary = state_dir() .. "/backfill-" .. crm.guid():sub(1, 8), true
    end
    sink, serr = require("crm.toast").file_sink(dir)
  end
  if not sink then return ctx:fail(serr) end
  local spacing, allow_fast = spacing_of(ctx)
  local bar = ctx:progress("backfill windows")
  ctx:trap_interrupt()
  local res, err = toast:backfill_restaurants(guids, {
    sink = sink, weeks = a.weeks, spacing = spacing, allow_fast = allow_fast, window_days = a.window_days,
    concurrency = a.concurrency, spacing_scope = a.spacing_scope, stop = ctx.interrupted,
    guest_context = a.db ~= nil,
    on_progress = function(p)
      bar.label = ("backfill %d/%d restaurants (%d failed), windows"):format(p.done + p.failed, p.restaurants,
        p.failed)
      bar:update(p.windows_done, p.windows)
    end,
  })
  if a.db then sink:close() end
  if not res then return ctx:fail(err) end
  local failures, profiles = {}, 0
  local interrupted = ctx.interrupted()
  for _, r in ipairs(res.restaurants) do
    -- Requests refused after Ctrl-C stopped that restaurant; it was not its failure.
    if r.status == "failed" and interrupted and inspect.is_stopped(r.err) then r.status = "stopped" end
    -- Interrupted, nothing is printed: the resumed run prints every restaurant's profiles.
    -- With --db the guests are in the database (crm toast guests report): one line per
    -- restaurant says what it read, as a single restaurant's backfill --db does.
    if r.status == "done" and a.db then
      local code = ctx:line { restaurant = r.restaurant_guid, windows = r.windows_done, orders = r.orders,
                              checkpoint = r.checkpoint }
      if code ~= 0 then return code end
    elseif r.status == "done" and not interrupted then
      local n, werr = write_profiles(toast, sink, r.restaurant_guid)
      if not n then
        r.status, r.err = "failed", werr
      else
        profiles = profiles + n
      end
    end
    if r.status == "failed" then
      failures[#failures + 1] = r.err
      output.error(r.err, "restaurant " .. r.restaurant_guid)
    end
  end
  output.flush()
  local unfinished = #res.restaurants - res.done
  bar:finish(("%s: %d restaurants: %d done, %d failed, %d stopped; %d orders (%d ordersBulk calls)"
    .. " -> %s in %.1fs"):format(interrupted and "backfill interrupted" or "backfill",
    #res.restaurants, res.done, #failures,
    unfinished - #failures, res.orders, res.calls,
    a.db and "the database (crm toast guests report)" or (profiles .. " guest profiles"), bar:elapsed()))
  if unfinished > 0 then
    local parts = { "crm" }
    if a.sim then parts[#parts + 1] = "--sim" end
    parts[#parts + 1] = "toast guests backfill " .. (a.db and "--db " .. shell_quote(a.db)
      or "--checkpoint " .. shell_quote(dir))
    for _, g in ipairs(guids) do parts[#parts + 1] = "--restaurant " .. g end
    output.note("resume with: " .. table.concat(parts, " "))
  elseif temporary then
    for _, g in ipairs(guids) do
      os.remove(sink:orders_path(g))
      os.remove(sink:checkpoint_path(g))
    end
    os.remove(dir)
  end
  if interrupted then return output.EXIT.interrupted end
  return batch_code(failures)
end

function M.run(ctx)
  local a = ctx.args
  -- the database commands need no Toast login
  if a.resource == "guests" and (a.verb == "report" or a.verb == "drain") then
    return require("crm.cli.guests_db")[a.verb](ctx)
  end
  local guids
  if a.resource == "guests" then
    local lerr
    guids, lerr = restaurant_list(a)
    if lerr then return ctx:fail(lerr) end
    -- --restaurant overrides CRM_TOAST_RESTAURANT: the client is made for the first one.
    if guids and not ctx.settings.sim then
      local get = ctx.settings.get
      ctx.settings.get = function(name)
        if name == "CRM_TOAST_RESTAURANT" then return guids[1] end
        return get(name)
      end
    end
  end
  -- the backfill's transport stops sending after Ctrl-C
  local toast, err = ctx:toast(a.resource == "guests")
  if not toast then return ctx:fail(err) end
  local code
  if a.resource == "customers" then
    code = customers(ctx, toast)
  elseif a.resource == "credit" then
    code = credit(ctx, toast)
  elseif guids and #guids > 1 then
    code = restaurants_backfill(ctx, toast, guids)
  elseif guids or a.db then
    -- one restaurant: the backfill of before, on that restaurant's view (or the client's own)
    local view, verr = toast, nil
    if guids then view, verr = toast:use_restaurant(guids[1]) end
    if not view then return ctx:fail(verr) end
    if a.db then
      code = require("crm.cli.guests_db").backfill(ctx, view)
    else
      code = backfill(ctx, view)
    end
  else
    code = backfill(ctx, toast)
  end
  toast:close()
  return code
end

return M
