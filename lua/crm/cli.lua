-- `crm`, the command line (bin/crm): argument parsing, settings, clients and the run of one
-- command. The commands themselves live in crm/cli/toast.lua, crm/cli/tablecheck.lua and
-- crm/cli/sim.lua; every one is built on the library's public API.
local argparse = require "argparse"
local crm = require "crm"
local core = require "crm.core"
local output = require "crm.cli.output"
local config = require "crm.cli.config"
local progress = require "crm.cli.progress"
local inspect = require "crm.cli.inspect"

local M = {}

local EXAMPLES = [[
Commands (every one prints JSON Lines on stdout; add --help to any of them):
  crm toast customers get GUID
  crm toast customers search --email E [--phone P] [--first-name F] [--last-name L]
  crm toast customers create --first-name F --last-name L (--email E | --phone P) [--idempotency-key K] | --input FILE
  crm toast customers find-or-create (same flags) | --input guests.csv|guests.jsonl [--concurrency 16]
  crm toast credit summary GUID
  crm toast credit transactions [GUID] [--start-date D --end-date D]
  crm toast credit add GUID --amount 10.00 [--note N] [--transaction-guid G] [--idempotency-key K] | --input FILE
  crm toast guests backfill [--weeks 12] [--checkpoint FILE | --db URL] [--restaurant GUID]... [--restaurants FILE]
  crm toast guests report --db URL [--report NAME]... [--lapsed-days N]
  crm toast guests drain --db URL --queue URL [--follow]
  crm tablecheck customers list|show|create|amend|delete ...
  crm tablecheck customers export [--query JSON]
  crm tablecheck duplicates [--by email,phone] [--from customers.jsonl] [--restart-on-expiry]
  crm tablecheck merge PRIMARY SECONDARY... [--dry-run]
  crm tablecheck images wait CUSTOMER_ID
  crm tablecheck shops|franchises|reservations|reservation-flags|memberships|membership-programs list|show ...
  crm sim start|stop|status|reset [--port N] [--seed-customers N] [--restaurants N]
  crm version   (crm --version: one plain line)

Examples:
  crm sim start --seed-customers 500
  crm --sim tablecheck customers export | wc -l
  crm --sim tablecheck duplicates | jq -c '{primary, secondaries}'
  crm --sim --dry-run tablecheck merge 5f0c...01 5f0c...02
  crm --sim toast customers find-or-create --input guests.csv

Settings come from the environment (CRM_TOAST_URL, CRM_TOAST_RESTAURANT, CRM_TOAST_CLIENT_ID,
CRM_TOAST_CLIENT_SECRET, CRM_TOAST_COUNTRY, CRM_TABLECHECK_URL, CRM_TABLECHECK_API_KEY,
CRM_SIM_PORT) or from $XDG_CONFIG_HOME/crm/config.json (the same names as keys; refused when
group or others can read it). Secrets are never flags.
Exit codes: 0 ok, 2 usage or validation, 3 auth, 4 http, 5 transport, 6 timeout, 7 decode,
8 outcome unknown, 9 simulator, 130 interrupted.]]

-- ---- the parser ----

-- number(name) -> a converter for argparse that names the option when the value is not a number.
local function number(name)
  return function(v)
    local n = tonumber(v)
    if n == nil then return nil, name .. " must be a number, not '" .. v .. "'" end
    return n
  end
end

local function add_data(cmd, what)
  cmd:option("--data", "The " .. (what or "body") .. " as JSON, @file.json, or - for stdin.")
end

local function build_parser()
  local p = argparse("crm", "The command line for Toast CRM v1 and TableCheck CRM v1: JSON Lines on"
    .. " stdout, one redacted line per error on stderr.")
  p:epilog(EXAMPLES)
  p:command_target("api")
  p:flag("--sim", "Point every client at the local simulator on $CRM_SIM_PORT (18080), with its credentials.")
  p:option("--config", "The config file (default $XDG_CONFIG_HOME/crm/config.json).")
  p:flag("--pretty", "Indented JSON (for a single object).")
  p:flag("--json-errors", "Errors on stderr as one JSON object each.")
  p:flag("--debug", "The library's debug lines (redacted: method, path, status, time) on stderr.")
  p:flag("--dry-run", "Print every write (method, path, masked headers, body) instead of sending it.")
  p:flag("--progress", "A progress bar on stderr even without a terminal; --progress=plain for log lines.")
  p:option("--timeout", "Seconds per HTTP request."):convert(number("--timeout"))
  p:flag("--version", "Print crm's version (and the C core's, Lua's, libcurl's) and exit.")
  p:command("version", "crm's version, the C core's, Lua's and libcurl's, as one JSON line.")

  -- Toast
  local toast = p:command("toast", "Toast CRM v1 (and its orders, for guest history).")
  toast:command_target("resource")
  toast:epilog([[
Examples:
  crm --sim toast customers find-or-create --first-name Ann --last-name Lee --email ann@example.org
  crm --sim toast customers search --last-name Lee
  crm --sim toast credit add 3f2b8a1e-5c4d-4e6f-9a7b-0c1d2e3f4a5b --amount 10.00 --note welcome
  crm --sim toast guests backfill --weeks 12 --checkpoint backfill.jsonl > guests.jsonl]])
  local customers = toast:command("customers", "Toast customers.")
  customers:command_target("verb")
  customers:epilog([[
Examples:
  crm toast customers get 3f2b8a1e-5c4d-4e6f-9a7b-0c1d2e3f4a5b
  crm toast customers search --email ann@example.org
  crm toast customers create --first-name Ann --last-name Lee --email ann@example.org
  crm toast customers find-or-create --input guests.csv --concurrency 16
    (CSV header: firstName,lastName,email,phone; or JSON Lines, one customer per line)]])
  local get = customers:command("get", "One customer by GUID.")
  get:argument("guid", "The customer's GUID.")
  local function person_flags(cmd)
    cmd:option("--first-name", "firstName.")
    cmd:option("--last-name", "lastName.")
    cmd:option("--email", "email.")
    cmd:option("--phone", "phone.")
  end
  local search = customers:command("search", "Every customer matching the query (all pages).")
  person_flags(search)
  local create = customers:command("create", "Create a customer (a client GUID makes retries safe).")
  person_flags(create)
  create:option("--guid", "The GUID to create it with (e.g. err.guid of a failed try).")
  add_data(create, "Customer")
  require("crm.cli.toast").import_flags(create, "customers", number)
  local foc = customers:command("find-or-create", "Search, and create only when nobody matches.")
  person_flags(foc)
  add_data(foc, "Customer")
  require("crm.cli.toast").import_flags(foc, "customers", number)

  local credit = toast:command("credit", "Toast customer credit.")
  credit:command_target("verb")
  credit:epilog([[
Examples:
  crm toast credit summary 3f2b8a1e-5c4d-4e6f-9a7b-0c1d2e3f4a5b
  crm toast credit transactions --start-date 2024-01-01 --end-date 2024-02-01
  crm toast credit add 3f2b8a1e-5c4d-4e6f-9a7b-0c1d2e3f4a5b --amount 10.00 --note "welcome back"]])
  local summary = credit:command("summary", "A customer's credit summary.")
  summary:argument("guid", "The customer's GUID.")
  local txns = credit:command("transactions", "Credit transactions: one customer's, or all in a date range.")
  txns:argument("guid", "The customer's GUID."):args("?")
  txns:option("--start-date", "ISO-8601 date or date-time.")
  txns:option("--end-date", "ISO-8601 date or date-time.")
  local add = credit:command("add", "Add credit (the transaction GUID makes retries safe).")
  add:argument("guid", "The customer's GUID (none with --input)."):args("?")
  add:option("--amount", "The amount, e.g. 10.00.")
  add:option("--note", "A note.")
  add:option("--transaction-guid", "The transaction's GUID (to replay one that failed: err.guid)."):target("txn_guid")
  -- the 0.1 name, which read like the customer's GUID: refused with the new name
  add:option("--guid"):target("old_txn_guid"):hidden(true)
  add:option("--date", "localCreatedDate, RFC 3339 (default now).")
  require("crm.cli.toast").import_flags(add, "credits", number)

  local guests = toast:command("guests", "Guest history from Toast orders.")
  guests:command_target("verb")
  guests:epilog([[
Examples:
  crm toast guests backfill --weeks 12 > guests.jsonl
  crm toast guests backfill --checkpoint backfill.jsonl > guests.jsonl   (Ctrl-C, then the same again resumes)
  crm toast guests backfill --restaurants restaurants.txt --checkpoint backfill.d > guests.jsonl
  crm toast guests backfill --db sqlite:guests.db     (the database keeps the checkpoint: run it again to resume)
  crm toast guests report --db sqlite:guests.db --lapsed-days 60
  crm toast guests drain --db postgresql://crm@db.internal/crm --queue http://127.0.0.1:8080/orders/queue]])
  local backfill = guests:command("backfill", "Weeks of orders into guest profiles (JSON Lines).")
  backfill:option("--weeks", "How far back.", "12"):convert(number("--weeks"))
  backfill:option("--checkpoint", "A journal to resume from and to write to (orders and checkpoints).")
  backfill:option("--spacing", "Seconds between ordersBulk calls (default 5; 0.2 with --sim).")
    :convert(number("--spacing"))
  backfill:option("--window-days", "Days per window (at most 31)."):convert(number("--window-days"))
  backfill:option("--restaurant", "A restaurant's GUID (repeatable; overrides CRM_TOAST_RESTAURANT)."):count("*")
  backfill:option("--restaurants", "A file of restaurant GUIDs, one a line (# comments allowed).")
  backfill:option("--concurrency", "Restaurants at once, with several.", "4"):convert(number("--concurrency"))
  backfill:option("--spacing-scope", "restaurant (default) or partner: what ordersBulk spacing is per.")
    :choices { "restaurant", "partner" }
  backfill:option("--db", "Write orders and guests to a database instead (sqlite:PATH or"
    .. " postgresql://user@host:port/dbname; the password from PGPASSWORD or ~/.pgpass); it keeps the"
    .. " checkpoint, so the same command again resumes.")
  local report = guests:command("report", "The database's guest reports as JSON Lines (crm.toast.db).")
  report:option("--db", "The database (sqlite:PATH or postgresql://user@host:port/dbname)."):count(1)
  report:option("--report", "Only these reports: guests, last_orders, lapsed, favourite_items, servers.")
    :count("*")
  report:option("--lapsed-days", "Also the guests whose last order is older than N days (report lapsed).")
    :convert(number("--lapsed-days"))
  report:option("--limit", "Favourite items per guest.", "10"):convert(number("--limit"))
  local drain = guests:command("drain", "Orders queued by the OpenResty sample's webhook into the database.")
  drain:option("--db", "The database (sqlite:PATH or postgresql://user@host:port/dbname)."):count(1)
  drain:option("--queue", "The sample's queue, e.g. http://127.0.0.1:8080/orders/queue."):count(1)
  drain:option("--max", "Orders per round trip.", "200"):convert(number("--max"))
  drain:flag("--follow", "Keep polling (a systemd service) instead of stopping once the queue is empty (cron).")
  drain:option("--poll", "Seconds between polls with --follow.", "2"):convert(number("--poll"))

  -- TableCheck
  local tc = p:command("tablecheck", "TableCheck CRM v1.")
  tc:command_target("resource")
  tc:epilog([[
Examples:
  crm --sim tablecheck customers export > customers.jsonl
  crm --sim tablecheck customers show 5ed64e249551e80639a4d9a0
  crm --sim tablecheck duplicates --by email
  crm --sim tablecheck merge PRIMARY SECONDARY --dry-run
  crm --sim tablecheck shops list]])
  local tcc = tc:command("customers", "TableCheck customers.")
  tcc:command_target("verb")
  tcc:epilog([[
Examples:
  crm tablecheck customers list --per-page 100
  crm tablecheck customers show 5ed64e249551e80639a4d9a0
  crm tablecheck customers create --data \
    '{"franchise_id":"5ed64e249551e80639a4d995","first_name":"Ann","last_name":"Lee"}'
  crm tablecheck customers amend 5ed64e249551e80639a4d9a0 --data @changes.json
  crm tablecheck customers delete 5ed64e249551e80639a4d9a0
  crm tablecheck customers export --query '{"has_email":true}' > customers.jsonl]])
  local function list_flags(cmd)
    cmd:option("--page", "The page (from 0)."):convert(number("--page"))
    cmd:option("--per-page", "Items per page (1 to 1000)."):convert(number("--per-page"))
    cmd:option("--params", "The query as JSON, e.g. '{\"ids\":[\"...\"]}'.")
    cmd:flag("--all", "Every page, not just one.")
  end
  list_flags(tcc:command("list", "A page of customers (--all: every page)."))
  local show = tcc:command("show", "One customer.")
  show:argument("id", "The customer's id.")
  show:option("--params", "include_fields / exclude_fields as JSON.")
  add_data(tcc:command("create", "Create a customer (--data)."), "CustomerCreateParams")
  local amend = tcc:command("amend", "Update a customer (--data).")
  amend:argument("id", "The customer's id.")
  add_data(amend, "CustomerUpdateParams")
  tcc:command("delete", "Delete a customer."):argument("id", "The customer's id.")
  local export = tcc:command("export", "Every customer (customer_search, 200 a page), as JSON Lines.")
  export:option("--query", "CustomerSearchParams as JSON (default: everyone).")

  local dups = tc:command("duplicates", "Groups of customers sharing an email or phone.")
  dups:option("--by", "What links customers: email, phone or email,phone.", "email,phone")
  dups:option("--query", "CustomerSearchParams as JSON (default: everyone).")
  dups:option("--from", "Read the customers from a JSON Lines file (an export) instead of searching.")
  dups:flag("--restart-on-expiry", "Start the search over when its scroll expires (5 minutes between pages).")
  dups:epilog("Example:\n  crm --sim tablecheck duplicates --by email"
    .. " | jq -r '[.primary] + .secondaries | join(\" \")'")

  local merge = tc:command("merge", "Merge SECONDARY customers into PRIMARY (one PUT).")
  merge:argument("primary", "The customer that stays.")
  merge:argument("secondaries", "The customers merged into it."):args("+")
  merge:option("--wait", "Seconds to wait for the asynchronous move to finish."):convert(number("--wait"))
  merge:epilog("With --dry-run it reads the customers and plans, and prints the PUT it would send.\n"
    .. "Example:\n  crm --sim tablecheck merge 5f0c0000000000000000aa01 5f0c0000000000000000aa02 --dry-run")

  local images = tc:command("images", "Customer images.")
  images:command_target("verb")
  local wait = images:command("wait", "Wait until a customer's image uploads are processed.")
  wait:argument("customer_id", "The customer's id.")
  wait:option("--max-wait", "Seconds to wait.", "60"):convert(number("--max-wait"))
  images:epilog("Example:\n  crm tablecheck images wait 5ed64e249551e80639a4d9a0 --max-wait 120")

  for _, r in ipairs(require("crm.cli.tablecheck").RESOURCES) do
    local cmd = tc:command(r.command, r.title)
    cmd:command_target("verb")
    list_flags(cmd:command("list", "A page of " .. r.command .. " (--all: every page)."))
    local s = cmd:command("show", "One of them by id.")
    s:argument("id", "The id.")
    if r.params_on_show then s:option("--params", "include_fields / exclude_fields as JSON.") end
    if r.create then add_data(cmd:command("create", "Create one (--data)."), r.create_schema) end
    if r.update then
      local a = cmd:command("amend", "Update one (--data).")
      a:argument("id", "The id.")
      add_data(a, r.update_schema)
    end
    if r.delete then cmd:command("delete", "Delete one."):argument("id", "The id.") end
    cmd:epilog("Examples:\n  crm tablecheck " .. r.command .. " list --per-page 50\n  crm tablecheck "
      .. r.command .. " show " .. r.example)
  end

  -- the simulator
  local sim = p:command("sim", "The local simulator (nginx + lua-nginx-module), shipped with the rock.")
  sim:command_target("verb")
  sim:epilog("Examples:\n  crm sim start --seed-customers 500\n  crm sim status\n  crm sim reset\n  crm sim stop\n"
    .. "State (pid, logs) in $XDG_STATE_HOME/crm/sim/PORT, shared with make sim / make sim-stop.")
  for _, verb in ipairs { "start", "stop", "status", "reset" } do
    local c = sim:command(verb, ({ start = "(Re)start it (clean: no data, no faults).", stop = "Stop it.",
      status = "Is it running? (and how many faults are still armed)",
      reset = "Wipe its data, settings and armed faults." })[verb])
    c:option("--port", "The port (default $CRM_SIM_PORT, then 18080)."):convert(number("--port"))
    if verb == "start" then
      c:option("--seed-customers", "Fill TableCheck with N synthetic customers.")
        :convert(number("--seed-customers"))
      c:option("--restaurants", "Seed N Toast restaurants with twelve weeks of orders each.")
        :convert(number("--restaurants"))
    end
  end
  return p
end
M.build_parser = build_parser

-- --progress and --progress=MODE are taken out before argparse, which cannot tell an optional
-- value from the command that follows.
local function take_progress(argv)
  local rest, mode = {}, nil
  for i = 1, #argv do
    local a = argv[i]
    if a == "--" then
      for j = i, #argv do rest[#rest + 1] = argv[j] end
      break
    end
    local m = a:match("^%-%-progress=(.*)$")
    if a == "--progress" then mode = true
    elseif m then mode = m
    else rest[#rest + 1] = a end
  end
  return rest, mode
end

-- parse(parser, argv) -> true, args | false, message, the (sub)command whose usage to print.
-- argparse's pparse keeps only the message; its _parse hands the failing command's own parser to
-- the error handler, so the usage printed is the sub-command's.
local function parse(parser, argv)
  if type(parser._parse) ~= "function" then
    local ok, args = parser:pparse(argv)
    return ok, args, parser
  end
  local failed, message
  local ok, res = pcall(parser._parse, parser, argv, function(p, msg)
    failed, message = p, msg
    error(msg, 0)
  end)
  if ok then return true, res end
  if not failed then error(res, 0) end
  return false, message, failed
end

-- ---- the context a command runs in ----

local Ctx = {}
Ctx.__index = Ctx

function Ctx.fail(_, err, prefix)
  output.error(err, prefix)
  return output.exit_code(err)
end

function Ctx:line(v)
  local ok, err = output.line(v)
  if not ok then return self:fail(err) end
  return 0
end

-- progress(label, unit) -> a progress display as the flags ask (off unless stderr is a terminal
-- or --progress).
function Ctx:progress(label, total)
  local p = progress.new { mode = self.progress_mode, label = label, total = total }
  output.set_progress(p)
  return p
end

-- Ctrl-C from here on is noticed between items: what was read is flushed, then exit 130.
function Ctx.trap_interrupt() core.interrupted("trap") end
function Ctx.interrupted() return core.interrupted() > 0 end

local function common_options(self, o, secrets, need_inspect)
  o.timeout = self.args.timeout
  if self.args.debug then
    o.debug = function(line) output.note("debug: " .. line) end
  end
  if self.dry_run or need_inspect then
    local t, err = inspect.new { timeout = self.args.timeout, dry_run = self.dry_run, secrets = secrets }
    if not t then return nil, err end
    o.transport = t
    self.inspector = t
    -- A held write answers "not sent": one attempt, so it is printed once.
    if self.dry_run then o.retry = { max_attempts = 1 } end
  end
  return o
end

-- toast([need_inspect]) -> a Toast client | nil, err
function Ctx:toast(need_inspect)
  local o, err = config.toast_options(self.settings)
  if not o then return nil, err end
  o, err = common_options(self, o, { o.client_secret }, need_inspect)
  if not o then return nil, err end
  return crm.toast(o)
end

function Ctx:tablecheck(need_inspect)
  local o, err = config.tablecheck_options(self.settings)
  if not o then return nil, err end
  o, err = common_options(self, o, { o.api_key }, need_inspect)
  if not o then return nil, err end
  return crm.tablecheck(o)
end

-- held(err) -> exit code when err is a write a dry run kept back (its request is written to
-- stdout as {dry_run, method, path, body}), else nil.
function Ctx:held(err)
  if not (self.dry_run and inspect.is_held(err, self.inspector)) then return nil end
  for _, r in ipairs(self.inspector.held) do
    local ok, werr = output.line { dry_run = true, method = r.method, path = r.path, body = r.body }
    if not ok then return self:fail(werr) end
  end
  self.inspector.held = {}
  return 0
end

-- result(res, err) -> exit code: the value as one line, or the error (a dry run's held write
-- counts as done).
function Ctx:result(res, err)
  if res == nil then
    local code = self:held(err)
    if code then return code end
    return self:fail(err)
  end
  return self:line(res)
end

-- data(name) -> the --data object, or nil when not given | nil, err
function Ctx:data()
  if not self.args.data then return nil end
  return require("crm.cli.input").data(self.args.data)
end

-- ---- main ----

-- The versions a bug report needs: crm's, the C core's (they must agree), Lua's, libcurl's.
local function versions()
  local ok, curl = pcall(core.curl_version)
  return { crm = crm._VERSION, core = core.version, lua = rawget(_G, "jit") and rawget(_G, "jit").version or _VERSION,
           curl = ok and type(curl) == "string" and (curl:match("^libcurl/(%S+)") or curl) or nil }
end

local function dispatch(ctx)
  local a = ctx.args
  if a.api == "version" then return ctx:line(versions()) end
  if a.api == "sim" then
    return require("crm.cli.sim").run(a.verb, { port = a.port or ctx.settings.sim_port,
      seed_customers = a.seed_customers, restaurants = a.restaurants })
  end
  if a.api == "toast" then return require("crm.cli.toast").run(ctx) end
  return require("crm.cli.tablecheck").run(ctx)
end

-- main(argv) -> exit code. Nothing raises to the caller: a bug is one line on stderr, exit 1.
function M.main(argv)
  argv = argv or {}
  local rest, progress_flag = take_progress(argv)
  local json_errors = false
  for _, a in ipairs(rest) do
    if a == "--" then break end
    if a == "--version" then
      local v = versions()
      io.stdout:write(("crm %s (C core %s, %s, libcurl %s)\n"):format(v.crm, v.core, v.lua, tostring(v.curl)))
      return 0
    end
    if a == "--json-errors" then json_errors = true end
  end
  local parser = build_parser()
  local ok, args, where = parse(parser, rest)
  if not ok then
    local cmd = where:get_usage():match("^Usage: (%S+.-) %[%-h%]") or "crm"
    -- The parser quotes what was typed (an unknown command, a value that is no number): a
    -- guest's email or phone typed in the wrong place is scrubbed by its shape. The message
    -- may span lines ("Did you mean"), so it is redacted line by line.
    local said = tostring(args):gsub("[^\n]+", function(l) return require("crm.error").redact(l) end)
    local message = said .. " (" .. cmd .. " --help explains it)"
    if json_errors then
      -- the parser stopped before it read the flag: still one JSON object, as every other error
      output.configure { json_errors = true }
      output.error(output.usage_error(message))
    else
      io.stderr:write(where:get_usage(), "\n\ncrm: ", message, "\n")
    end
    return output.EXIT.validation
  end
  output.configure { pretty = args.pretty, json_errors = args.json_errors }
  io.stdout:setvbuf("full")
  local ctx = setmetatable({ args = args, dry_run = args.dry_run, progress_mode = progress.mode(progress_flag) },
    Ctx)
  if progress_flag ~= nil and progress_flag ~= true and ctx.progress_mode ~= "plain"
      and progress_flag ~= "bar" and progress_flag ~= "off" then
    return ctx:fail(output.usage_error("--progress takes bar, plain or off", "progress"))
  end
  local settings, err = config.load { config = args.config, sim = args.sim }
  if not settings then return ctx:fail(err) end
  ctx.settings = settings
  -- (a closure: Lua 5.1's xpcall passes no arguments)
  local pok, code = xpcall(function() return dispatch(ctx) end, function(msg)
    if tostring(msg):find("interrupted", 1, true) then return "interrupted" end
    return debug.traceback(msg, 2)
  end)
  io.stdout:flush()
  if settings.sim and args.api ~= "sim" then
    -- Faults outlive the run that armed them: say so, or they spoil the next one unannounced.
    local armed = require("crm.cli.sim").armed(settings.sim_port)
    if armed and armed > 0 then
      output.note(("crm: note: %d fault%s still armed on the simulator (port %s); crm sim reset clears them")
        :format(armed, armed == 1 and " is" or "s are", tostring(settings.sim_port)))
    end
  end
  if not pok then
    if code == "interrupted" then return output.EXIT.interrupted end
    io.stderr:write("crm: internal error: ", (tostring(code):gsub("\n.*", "")), "\n")
    return 1
  end
  return code or 0
end

return M
