-- `crm toast guests backfill --db URL`, `crm toast guests report` and `crm toast guests drain`:
-- guest history in a database (crm.toast.db), on the library's public API.
local crm = require "crm"
local core = require "crm.core"
local errors = require "crm.error"
local output = require "crm.cli.output"

local M = {}

-- open(ctx, country_code) -> the sink of --db | nil, err
local function open(ctx, country_code)
  local db = require "crm.toast.db"
  local sink, err = db.open(ctx.args.db, { country_code = country_code })
  if not sink then return nil, err end
  return sink
end

M.open = open

-- The start of the last line of one restaurant's backfill, true to what this run did: a run that
-- resumed counts its own windows and orders (and says how many there are in all), and a rerun of
-- a finished backfill says that nothing was left to fetch. `cp` is the checkpoint it started
-- from (nil: a fresh backfill). -> text, whether nothing was left
function M.backfill_summary(res, cp)
  if not cp then
    return ("backfill: %d orders in %d windows (%d ordersBulk calls)"):format(res.orders, res.windows,
      res.calls), false
  end
  local before, windows_before = cp.orders or 0, cp.windows_done or 0
  if res.windows == 0 then
    return ("backfill: nothing left to fetch (it finished before: %d orders in %d windows)"):format(before,
      windows_before), true
  end
  return ("backfill: resumed after %d windows: %d orders in %d windows (%d ordersBulk calls), %d in all")
    :format(windows_before, res.orders - before, res.windows, res.calls, res.orders), false
end

-- One restaurant's backfill into an open sink -> exit code, after its line
-- {restaurant, windows, orders, written, windows_done, checkpoint}. `client` is the Toast client or a view of
-- it for one restaurant (anything with restaurant_guid, get_guest_context and backfill_orders):
-- each window's orders go to the database, then the checkpoint, which the database keeps.
function M.backfill_restaurant(ctx, client, sink)
  local a = ctx.args
  local r = client.restaurant_guid
  local cp, err = sink:load_checkpoint(r)
  if err then return ctx:fail(err) end
  local gctx
  gctx, err = client:get_guest_context()
  if not gctx then return ctx:fail(err) end
  local spacing, allow_fast = a.spacing, nil
  if ctx.settings.sim then
    spacing, allow_fast = spacing or 0.2, true
  elseif spacing and spacing < 5 then
    allow_fast = true
  end
  local bar = ctx:progress("backfill windows")
  ctx:trap_interrupt()
  local written, serr = 0, nil
  -- a callback that raises stops the backfill; the reason is kept here
  local function stop(e, why)
    serr = e
    error(why, 0)
  end
  local res
  res, err = client:backfill_orders {
    weeks = a.weeks, spacing = spacing, allow_fast = allow_fast, window_days = a.window_days,
    checkpoint = cp, profiles = false,
    on_window = function(orders)
      local n, werr = sink:write_orders(r, orders, gctx)
      if not n then stop(werr, "the database write failed") end
      written = written + n
      if ctx.interrupted() then error("interrupted", 0) end
    end,
    on_progress = function(p)
      local ok, werr = sink:save_checkpoint(r, p.checkpoint)
      if not ok then stop(werr, "the checkpoint could not be saved") end
      bar:update(p.window, p.windows)
      if ctx.interrupted() then error("interrupted", 0) end
    end,
  }
  if not res then
    output.flush()
    if serr then return ctx:fail(serr) end
    if ctx.interrupted() then
      bar:finish(("backfill interrupted: %d windows done; the database keeps the checkpoint"):format(
        err.checkpoint and err.checkpoint.windows_done or 0))
      output.note("resume with the same command")
      return output.EXIT.interrupted
    end
    output.error(err)
    output.note("resume with the same command (the database keeps the checkpoint)")
    return output.exit_code(err)
  end
  local text, nothing_left = M.backfill_summary(res, cp)
  if nothing_left then
    -- what the database holds of this restaurant (the earlier runs', webhooks' and drains' orders)
    local stored = sink:order_count(r)
    text = text .. (stored and ("; the database holds %d orders of this restaurant"):format(stored) or "")
  else
    text = text .. (", %d written to the database"):format(written)
  end
  bar:finish(text)
  -- windows and written: this run's; orders and windows_done: the whole backfill's, every run
  return ctx:line { restaurant = r, windows = res.windows, orders = res.orders, written = written,
                    windows_done = res.checkpoint and res.checkpoint.windows_done or res.windows,
                    checkpoint = res.checkpoint }
end

-- backfill --db URL: the client's restaurant into the database; the same command again resumes
-- (a finished one does nothing).
function M.backfill(ctx, toast)
  if ctx.args.checkpoint then
    return ctx:fail(output.usage_error("--db keeps the checkpoint in the database: leave out --checkpoint",
      "checkpoint"))
  end
  local sink, err = open(ctx, toast.default_country_code)
  if not sink then return ctx:fail(err) end
  local code = M.backfill_restaurant(ctx, toast, sink)
  sink:close()
  return code
end

-- report --db URL: every row of the reports asked for, as JSON Lines with `report` = its name.
function M.report(ctx)
  local a = ctx.args
  local names = a.report and #a.report > 0 and a.report or nil
  if not names then
    names = {}
    for i, n in ipairs(require("crm.toast.db").DEFAULT_REPORTS) do names[i] = n end
    if a.lapsed_days then names[#names + 1] = "lapsed" end
  end
  local sink, err = open(ctx)
  if not sink then return ctx:fail(err) end
  for _, name in ipairs(names) do
    local rows, rerr = sink:report(name, { days = a.lapsed_days, limit = a.limit })
    if not rows then
      sink:close()
      return ctx:fail(rerr)
    end
    for _, row in ipairs(rows) do
      row.report = name
      local code = ctx:line(row)
      if code ~= 0 then
        sink:close()
        return code
      end
    end
  end
  sink:close()
  output.flush()
  return 0
end

-- ---- drain: the OpenResty sample's queue into the database ----

local function queue_call(http, method, url)
  local status, headers, body = http:request(method, url, { "Accept: application/json" },
    method == "POST" and "" or nil)
  if not status then
    local why = type(headers) == "table" and headers.message or "no answer"
    return nil, errors.new("transport", "queue: " .. tostring(why), { code = "queue" })
  end
  if status ~= 200 then
    return nil, errors.new("http", "queue: " .. method .. " answered " .. status, { status = status, code = "queue" })
  end
  local v, derr = crm.json.decode(body)
  if type(v) ~= "table" then return nil, derr or errors.new("decode", "queue: the answer is not an object") end
  return v
end

-- One round: read up to max orders, write them (grouped by restaurant, in queue order), then
-- acknowledge them. A crash before the acknowledgement reads them again: the writes are
-- idempotent. -> orders read, orders written | nil, err
local function drain_round(http, sink, queue, max)
  local page, err = queue_call(http, "GET", queue .. "?max=" .. max)
  if not page then return nil, err end
  local items = type(page.items) == "table" and page.items or {}
  local by, order = {}, {}
  for _, it in ipairs(items) do
    if type(it) == "table" and type(it.restaurant) == "string" and type(it.order) == "table" then
      if not by[it.restaurant] then
        by[it.restaurant] = {}
        order[#order + 1] = it.restaurant
      end
      local list = by[it.restaurant]
      list[#list + 1] = it.order
    end
  end
  local written = 0
  for _, r in ipairs(order) do
    local n, werr = sink:write_orders(r, by[r])
    if not n then return nil, werr end
    written = written + n
  end
  if type(page.through) == "number" then
    local _, aerr = queue_call(http, "POST", queue .. "/ack?through=" .. string.format("%.0f", page.through))
    if aerr then return nil, aerr end
  end
  return #items, written
end

function M.drain(ctx)
  local a = ctx.args
  if not a.queue:find("^https?://") then
    return ctx:fail(output.usage_error("--queue must be the sample's http(s) URL of /orders/queue", "queue"))
  end
  if not a.max or a.max < 1 or a.max > 10000 or a.max % 1 ~= 0 then
    return ctx:fail(output.usage_error("--max must be an integer from 1 to 10000", "max"))
  end
  local sink, err = open(ctx, ctx.settings.get and ctx.settings.get("CRM_TOAST_COUNTRY") or nil)
  if not sink then return ctx:fail(err) end
  local http = assert(core.new { timeout = a.timeout or 30 })
  local queue = a.queue:gsub("/$", "")
  local total, written = 0, 0
  ctx:trap_interrupt()
  while not ctx.interrupted() do
    local n, w = drain_round(http, sink, queue, a.max)
    if not n then
      http:close()
      sink:close()
      output.flush()
      return ctx:fail(w)
    end
    total, written = total + n, written + w
    if n == 0 then
      if not a.follow then break end
      core.sleep(a.poll or 2)
    end
  end
  http:close()
  sink:close()
  local code = ctx:line { drained = total, written = written }
  if ctx.interrupted() then return output.EXIT.interrupted end
  return code
end

return M
