--- Toast guest history from orders: the orders, configuration, labor and menus endpoints the CRM &
-- guest-engagement guide names, the twelve-week backfill with its one-month windows and 5-second
-- spacing, and the sync of guest profiles to Toast CRM customers. The functions are mixed into the
-- Toast client class (crm.toast), so they share its transport, OAuth, restaurant header, retry
-- policy and error model. In the reference they are part of `crm.toast` (this file has the same
-- module name and config.ld merges the two).
-- @module crm.toast
local errors = require "crm.error"
local guests = require "crm.toast.guests"
local pager = require "crm.pager"
local validate = require "crm.validate"

local M = {}
local Orders = {}

local type, pairs, ipairs, tostring, pcall = type, pairs, ipairs, tostring, pcall
local floor, min = math.floor, math.min
local fail = validate.fail

local ORDERS_BULK = "/orders/v2/ordersBulk"
local DINING_OPTIONS = "/config/v2/diningOptions"
local EMPLOYEES = "/labor/v1/employees"
local MENUS = "/menus/v2/menus"

M.MAX_PAGE_SIZE = 100       -- ordersBulk pageSize limit
M.MAX_WINDOW_DAYS = 31      -- "must not exceed intervals greater than one month"
M.DEFAULT_WINDOW_DAYS = 28  -- never longer than any calendar month; 12 weeks = 3 windows
M.MIN_SPACING = 5           -- "calls spaced at least 5-10 seconds apart"
M.DEFAULT_WEEKS = 12        -- Toast support's recommendation for a first connection
M.CHECKPOINT_VERSION = 1
M.guests = guests

-- -------------------------------------------------------------------------
-- Input checks
-- -------------------------------------------------------------------------

local function check_spacing(spacing, allow_fast)
  local e = validate.number(spacing, "spacing", { min = 0, max = 3600 })
    or validate.boolean(allow_fast, "allow_fast")
  if e then return e end
  if spacing ~= nil and spacing < M.MIN_SPACING and allow_fast ~= true then
    return fail("spacing", "must be at least " .. M.MIN_SPACING .. " seconds (Toast asks for 5-10 s"
      .. " between ordersBulk calls); pass allow_fast = true to go faster, e.g. against a simulator")
  end
  return nil
end

-- A time given as epoch seconds or an ISO-8601 string -> epoch | nil, err
local function epoch_of(v, field)
  if type(v) == "number" then
    local e = validate.number(v, field, { min = 0 })
    if e then return nil, e end
    return v
  end
  local t = type(v) == "string" and validate.is_iso8601(v) and guests.parse_time(v)
  if not t then
    return nil, fail(field, "must be epoch seconds or an ISO-8601 date-time (e.g. 2024-03-05T00:00:00.000+0000)")
  end
  return t
end

local function check_bulk(opts)
  local e = validate.table(opts, "options", true)
  if e then return nil, e end
  e = validate.known_keys(opts, { startDate = true, endDate = true, businessDate = true, page = true,
                                  pageSize = true, spacing = true, allow_fast = true })
    or validate.number(opts.page, "page", { min = 1, integer = true })
    or validate.number(opts.pageSize, "pageSize", { min = 1, max = M.MAX_PAGE_SIZE, integer = true })
    or check_spacing(opts.spacing, opts.allow_fast)
  if e then return nil, e end
  local q = {}
  if opts.businessDate ~= nil then
    local bd = tostring(opts.businessDate)
    if not bd:find("^%d%d%d%d[01]%d[0-3]%d$") then return nil, fail("businessDate", "must be yyyyMMdd") end
    if opts.startDate ~= nil or opts.endDate ~= nil then
      return nil, fail("businessDate", "cannot be combined with startDate/endDate")
    end
    q.businessDate = bd
    return q
  end
  local s, serr = epoch_of(opts.startDate, "startDate")
  if not s then return nil, serr end
  local f, ferr = epoch_of(opts.endDate, "endDate")
  if not f then return nil, ferr end
  if f < s then return nil, fail("endDate", "must not be before startDate") end
  if f - s > M.MAX_WINDOW_DAYS * 86400 then
    return nil, fail("endDate", "must be at most " .. M.MAX_WINDOW_DAYS .. " days after startDate (Toast"
      .. " allows at most one month per ordersBulk request; backfill_orders splits longer ranges)")
  end
  q.startDate = type(opts.startDate) == "string" and opts.startDate or guests.format_time(s)
  q.endDate = type(opts.endDate) == "string" and opts.endDate or guests.format_time(f)
  return q
end

-- -------------------------------------------------------------------------
-- Spacing: every ordersBulk attempt through this client waits until `spacing` seconds after the
-- previous one finished. Measured from the end of the previous call, so arrivals at the server
-- are at least `spacing` apart whatever the latency; sleeps use the client's clock.
-- Calls from concurrent operations on one client (a batch, nginx light threads) take turns:
-- one call is in flight at a time, so two can never wait out the same gap and send together.
-- A turn held longer than STALE_TURN (an operation abandoned mid-call) is taken over.
-- -------------------------------------------------------------------------

local STALE_TURN = 300

--- What `get_guest_context` returns, and what a profile set maps orders with.
-- @table GuestContext
-- @tfield table dining_options `{[guid] = {guid, name, behavior}}` from `/config/v2/diningOptions`
-- @tfield table employees `{[guid] = {guid, firstName, lastName, name}}` from `/labor/v1/employees`
-- @tfield table items `{[guid] = {guid, name, price, menu, group}}` from `/menus/v2/menus`
-- (nested menu groups walked; an item on several menus keeps its first place)

--- A backfill checkpoint: plain JSON, safe to store and pass back as `checkpoint`.
-- In `BackfillResult.checkpoint`, `ProgressInfo.checkpoint` and, after a failure, in
-- `err.checkpoint` (the last finished window).
-- @table Checkpoint
-- @tfield number version `1`
-- @tfield string startDate where the whole backfill starts (Toast's date-time, UTC)
-- @tfield string endDate where it ends (exclusive)
-- @tfield string through everything before this has been handed out; a resume starts here
-- @tfield number windows_done windows finished, resumes included
-- @tfield number orders orders handed out so far, resumes included

--- What `on_progress` receives after each finished window (`on_window` gets the first five).
-- @table ProgressInfo
-- @tfield number window this window's number, from 1
-- @tfield number windows how many windows this run has
-- @tfield string startDate the window's start (inclusive)
-- @tfield string endDate the window's end (exclusive)
-- @tfield number orders orders in this window (each once)
-- @tfield number total_orders orders so far, resumes included
-- @tfield number calls ordersBulk calls so far in this run (pages and retries)
-- @tfield[opt] number profiles profiles in the set so far (nil with `profiles = false`)
-- @tfield Checkpoint checkpoint the checkpoint after this window

--- What `backfill_orders` returns.
-- @table BackfillResult
-- @tfield[opt] crm.toast.guests.Set profiles the set the orders were folded into (nil with
-- `profiles = false`)
-- @tfield Checkpoint checkpoint the final checkpoint (`through` = `endDate`)
-- @tfield number windows windows read in this run
-- @tfield number orders orders handed out, resumes included
-- @tfield number calls ordersBulk calls made in this run
-- @tfield string startDate where this run started (a resume: the checkpoint's `through`)
-- @tfield string endDate where it ended

--- What `sync_to_crm` returns.
-- @table SyncReport
-- @tfield number total profiles given
-- @tfield number created customers created
-- @tfield number found customers that already existed
-- @tfield number failed profiles whose `find_or_create` failed
-- @tfield number skipped profiles without a first or last name, or without a usable email or phone
-- @tfield {table,...} results one per profile, in order: `{key, status, guid, reason, err}`;
-- `status` is `"created"`, `"found"`, `"failed"` or `"skipped"`; `guid` the Toast customer's
-- GUID; `reason` why it was skipped (`"firstName missing"`, `"no usable email or phone"`) or
-- the failure in one line; `err` the `Error` of a failure

--- Guest history from orders.
-- Orders, dining options, employees, menus, the backfill and the sync to CRM: methods of the
-- `Toast` client, from lua/crm/toast/orders.lua.
-- Every ordersBulk attempt (pages and retries included) waits until `spacing` seconds (default
-- 5; Toast asks for 5-10) after the previous one through this client finished; concurrent
-- operations take turns. The resend after a 401 and a new login happens straight away.
-- @section guest_history

local function spaced_policy(self, spacing)
  local clock = self.clock
  return {
    run = function(_, fn, idempotent)
      return self.policy:run(function(attempt)
        while self._orders_bulk_turn and clock.now() - self._orders_bulk_turn < STALE_TURN do
          clock.sleep(0.01)
        end
        self._orders_bulk_turn = clock.now()
        local last = self._orders_bulk_last
        if last and spacing > 0 then
          local wait = last + spacing - clock.now()
          if wait > 0 then clock.sleep(wait) end
        end
        local ok, res, err = pcall(fn, attempt)
        self._orders_bulk_last = clock.now()
        self._orders_bulk_calls = (self._orders_bulk_calls or 0) + 1
        self._orders_bulk_turn = nil
        if not ok then error(res, 0) end
        return res, err
      end, idempotent)
    end,
  }
end

local function bulk_request(q, page, size)
  local query = { page = page, pageSize = size }
  for k, v in pairs(q) do query[k] = v end
  return { method = "GET", path = ORDERS_BULK, query = query, shape = "array" }
end

local function bulk_page(self, q, page, size, spacing)
  local status, data = self:_call(bulk_request(q, page, size), true, spaced_policy(self, spacing))
  if not status then return nil, data end
  return data or {}
end

local function bulk_pager(self, q, first_page, size, spacing)
  return pager.new(function(p)
    local items, err = bulk_page(self, q, p.page, size, spacing)
    if not items then return nil, err end
    p.page = p.page + 1
    return items, #items < size
  end, { page = first_page, page_size = size })
end

-- -------------------------------------------------------------------------
-- Endpoints
-- -------------------------------------------------------------------------

--- One page of orders (`GET /orders/v2/ordersBulk`).
-- Give either `startDate` and `endDate` or `businessDate`.
-- @function Toast:list_orders
-- @tparam table opts
-- @tparam[opt] number|string opts.startDate epoch seconds or ISO-8601 (inclusive)
-- @tparam[opt] number|string opts.endDate the same, no earlier and at most 31 days after
-- `startDate` (Toast: at most one month per request)
-- @tparam[opt] string|number opts.businessDate `yyyyMMdd`, instead of the range
-- @tparam[opt=1] number opts.page page number, from 1
-- @tparam[opt=100] number opts.pageSize 1 to 100
-- @tparam[opt=5] number opts.spacing seconds between ordersBulk calls (at least 5 unless
-- `allow_fast`)
-- @tparam[opt] boolean opts.allow_fast allow `spacing` below 5 s (a simulator)
-- @treturn[1] {table,...} that page: Toast Orders as the API answers them
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` (`"endDate"`, `"businessDate"`, `"spacing"`), or
-- `http`, `auth`, `transport`, `timeout`, `decode`
function Orders:list_orders(opts)
  local q, e = check_bulk(opts)
  if not q then return nil, e end
  return bulk_page(self, q, opts.page or 1, opts.pageSize or M.MAX_PAGE_SIZE, opts.spacing or M.MIN_SPACING)
end

--- Every order of the range, page after page, as a pager (`GET /orders/v2/ordersBulk`).
-- @function Toast:iter_orders
-- @tparam table opts as for `list_orders` (`page` is the first page)
-- @treturn crm.pager.Pager yields each Order; bad input is yielded as `false, err` before
-- anything is sent
function Orders:iter_orders(opts)
  local q, e = check_bulk(opts)
  if not q then return pager.failed(e) end
  return bulk_pager(self, q, opts.page or 1, opts.pageSize or M.MAX_PAGE_SIZE, opts.spacing or M.MIN_SPACING)
end

-- A GET of a whole document: its decoded JSON (an empty table for an empty body) | nil, err
local function get(self, path, shape)
  local status, data = self:_call({ method = "GET", path = path, shape = shape }, true)
  if not status then return nil, data end
  return data or {}
end

--- The restaurant's dining options (`GET /config/v2/diningOptions`).
-- @function Toast:list_dining_options
-- @treturn[1] {table,...} DiningOptions `{guid, name, behavior, ...}` (`behavior`: `TAKE_OUT`,
-- `DELIVERY`, `DINE_IN`, ...)
-- @return[2] `nil`
-- @treturn[2] Error `http`, `auth`, `transport`, `timeout`, `decode`
function Orders:list_dining_options() return get(self, DINING_OPTIONS, "array") end

--- The restaurant's employees (`GET /labor/v1/employees`).
-- @function Toast:list_employees
-- @treturn[1] {table,...} Employees `{guid, firstName, lastName, ...}`
-- @return[2] `nil`
-- @treturn[2] Error `http`, `auth`, `transport`, `timeout`, `decode`
function Orders:list_employees() return get(self, EMPLOYEES, "array") end

--- The menus document (`GET /menus/v2/menus`).
-- @function Toast:get_menus
-- @treturn[1] table `{menus = {{name, menuGroups = {{name, menuItems, menuGroups}}}}, ...}`
-- @return[2] `nil`
-- @treturn[2] Error `http`, `auth`, `transport`, `timeout`, `decode`
function Orders:get_menus() return get(self, MENUS, "object") end

--- Every menu item, by GUID (`GET /menus/v2/menus`, nested groups walked).
-- @function Toast:list_menu_items
-- @treturn[1] table `{[guid] = {guid, name, price, menu, group}}`
-- @return[2] `nil`
-- @treturn[2] Error as for `get_menus`
function Orders:list_menu_items()
  local doc, err = self:get_menus()
  if not doc then return nil, err end
  return guests.menu_items(doc)
end

--- Dining options, employees and menu items, each indexed by GUID (three GETs).
-- @function Toast:get_guest_context
-- @treturn[1] GuestContext `{dining_options, employees, items}`
-- @return[2] `nil`
-- @treturn[2] Error the first failure of the three calls
function Orders:get_guest_context()
  local options, err = self:list_dining_options()
  if not options then return nil, err end
  local staff
  staff, err = self:list_employees()
  if not staff then return nil, err end
  local items
  items, err = self:list_menu_items()
  if not items then return nil, err end
  return { dining_options = guests.index_dining_options(options), employees = guests.index_employees(staff),
           items = items }
end

--- An empty profile set with a fresh context (`get_guest_context`).
-- country_code defaults to the client's default_country_code.
-- @function Toast:new_profile_set
-- @tparam[opt] table opts
-- @tparam[opt=10] number opts.max_items how many `favourite_items` a profile keeps
-- @tparam[opt] string opts.country_code for national phone numbers (default: the client's
-- `default_country_code`)
-- @treturn[1] crm.toast.guests.Set the set
-- @return[2] `nil`
-- @treturn[2] Error `validation` (`field = "max_items"`, `"country_code"`), or a failure of
-- `get_guest_context`
function Orders:new_profile_set(opts)
  local e = validate.table(opts, "options")
  if e then return nil, e end
  local o = { country_code = self.default_country_code }
  for k, v in pairs(opts or {}) do o[k] = v end
  local set
  set, e = guests.new({ dining_options = {}, employees = {}, items = {} }, o)
  if not set then return nil, e end
  local ctx, err = self:get_guest_context()
  if not ctx then return nil, err end
  set.context = ctx
  return set
end

-- -------------------------------------------------------------------------
-- Backfill
-- -------------------------------------------------------------------------

local BACKFILL_KEYS = {
  weeks = true, spacing = true, allow_fast = true, on_progress = true, on_window = true,
  checkpoint = true, now = true, window_days = true, page_size = true, profiles = true,
}

local function check_callback(v, field)
  if v ~= nil and type(v) ~= "function" then return fail(field, "must be a function") end
  return nil
end

local function check_checkpoint(cp)
  if cp == nil then return nil end
  if type(cp) ~= "table" then
    return fail("checkpoint", "must be a table (from a progress callback or err.checkpoint)")
  end
  local s = guests.parse_time(cp.startDate)
  local t = guests.parse_time(cp.through)
  local f = guests.parse_time(cp.endDate)
  if not (s and t and f) then
    return fail("checkpoint", "must have startDate, through and endDate date-times")
  end
  if not (s <= t and t <= f) then return fail("checkpoint", "must have startDate <= through <= endDate") end
  return validate.number(cp.windows_done, "checkpoint.windows_done", { min = 0, integer = true })
    or validate.number(cp.orders, "checkpoint.orders", { min = 0, integer = true })
end

-- Splits [start, finish) into windows of at most `days` days.
function M.windows(start, finish, days)
  local out, s = {}, start
  while s < finish do
    local e = min(s + days * 86400, finish)
    out[#out + 1] = { s, e }
    s = e
  end
  return out
end

local function call_back(fn, field, ...)
  if not fn then return true end
  local ok, msg = pcall(fn, ...)
  if not ok then
    return nil, errors.new("validation", field .. " raised an error: " .. tostring(msg), { field = field })
  end
  return true
end

--- Reads weeks of orders, window by window (`GET /orders/v2/ordersBulk`, spaced), into profiles.
-- Reads `weeks` of orders before `now` (epoch seconds or ISO-8601; default the current time) window
-- by window, folds them into `profiles` (a profile set; a new one with a fresh context when absent;
-- false to skip aggregation) and reports each finished window. After a failure err.checkpoint holds
-- the last finished window (and err.profiles the set); passing it back as `checkpoint` resumes from
-- there up to the checkpoint's endDate (or `now`, when given). Windows are `[startDate, endDate)`
-- and touch end to start; a window's orders are handed out only once all its pages are read, and
-- no order is left out or handed out twice (a resume after a crash included).
-- @function Toast:backfill_orders
-- @tparam[opt] table opts
-- @tparam[opt=12] number opts.weeks how far back from `now` (at most 520)
-- @tparam[opt] number|string opts.now the end, epoch seconds or ISO-8601 (default: the current time)
-- @tparam[opt=5] number opts.spacing seconds between ordersBulk calls (at least 5 unless `allow_fast`)
-- @tparam[opt] boolean opts.allow_fast allow `spacing` below 5 s
-- @tparam[opt=28] number opts.window_days window length (at most 31: never longer than a month)
-- @tparam[opt=100] number opts.page_size ordersBulk `pageSize` (1 to 100)
-- @tparam[opt] crm.toast.guests.Set|boolean opts.profiles a set to fold into (default: a new
-- one from `new_profile_set()`); `false` for none
-- @tparam[opt] function opts.on_window `function(orders, info)`: each finished window's orders,
-- once each, before the checkpoint moves (`info`: the first five fields of `ProgressInfo`)
-- @tparam[opt] function opts.on_progress `function(info)` with a `ProgressInfo`
-- @tparam[opt] Checkpoint opts.checkpoint resume: from its `through` to its `endDate` (or `now`)
-- @treturn[1] BackfillResult `{profiles, checkpoint, windows, orders, calls, startDate, endDate}`
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` for bad options (nothing sent) or a callback that
-- raised (`field = "on_window"`/`"on_progress"`); `http`, `auth`, `transport`, `timeout`,
-- `decode` from ordersBulk. Once windows are being read the error also has `err.checkpoint`
-- (the last finished window: pass it back as `checkpoint`), `err.window` (`{index,
-- startDate, endDate}` of the failed one) and `err.profiles` (the set)
-- @usage local res, err = toast:backfill_orders { weeks = 12,
--   on_progress = function(p) print(p.window, p.windows) end }
-- if not res then save(err.checkpoint) error(tostring(err)) end
-- res.profiles:write_jsonl(assert(io.open("guests.jsonl", "w")))
function Orders:backfill_orders(opts)
  opts = opts or {}
  local e = validate.table(opts, "options")
  if e then return nil, e end
  e = validate.known_keys(opts, BACKFILL_KEYS)
    or validate.number(opts.weeks, "weeks", { gt = 0, max = 520 })
    or check_spacing(opts.spacing, opts.allow_fast)
    or validate.number(opts.window_days, "window_days", { gt = 0, max = M.MAX_WINDOW_DAYS })
    or validate.number(opts.page_size, "page_size", { min = 1, max = M.MAX_PAGE_SIZE, integer = true })
    or check_callback(opts.on_progress, "on_progress")
    or check_callback(opts.on_window, "on_window")
    or check_checkpoint(opts.checkpoint)
  if e then return nil, e end
  if opts.profiles ~= nil and opts.profiles ~= false and not guests.is_set(opts.profiles) then
    return nil, fail("profiles", "must be a profile set (client:new_profile_set()) or false")
  end
  local now
  if opts.now ~= nil then
    now, e = epoch_of(opts.now, "now")
    if not now then return nil, e end
  end
  local spacing = opts.spacing or M.MIN_SPACING
  local size = opts.page_size or M.MAX_PAGE_SIZE
  local days = opts.window_days or M.DEFAULT_WINDOW_DAYS

  local cp = opts.checkpoint
  local first, start, finish
  if cp then
    first, start = guests.parse_time(cp.startDate), guests.parse_time(cp.through)
    finish = now or guests.parse_time(cp.endDate)
  else
    finish = floor(now or os.time())
    first = finish - (opts.weeks or M.DEFAULT_WEEKS) * 7 * 86400
    start = first
  end
  if finish < start then return nil, fail("now", "must not be before the checkpoint's through") end

  local set = opts.profiles
  if set == nil then
    local serr
    set, serr = self:new_profile_set()
    if not set then return nil, serr end
  end

  local fmt = guests.format_time
  local windows = M.windows(start, finish, days)
  local done_before = cp and cp.windows_done or 0
  local total = cp and cp.orders or 0
  local checkpoint = { version = M.CHECKPOINT_VERSION, startDate = fmt(first), endDate = fmt(finish),
                       through = fmt(start), windows_done = done_before, orders = total }
  local calls_before = self._orders_bulk_calls or 0
  local function failed(err, index, w)
    err.checkpoint = checkpoint
    -- The guests' profiles: readable as err.profiles, but off the error table (no encoding of
    -- the error writes them).
    if set then errors.attach(err, "profiles", set) end
    err.window = { index = index, startDate = fmt(w[1]), endDate = fmt(w[2]) }
    return nil, err
  end

  -- GUIDs of the previous window's orders: should a server count an order on the boundary in
  -- both windows, it is still handed out once.
  local previous = {}
  for i, w in ipairs(windows) do
    local q = { startDate = fmt(w[1]), endDate = fmt(w[2]) }
    local orders, seen = {}, {}
    local pages = bulk_pager(self, q, 1, size, spacing)
    for page, err in pages:each_page() do
      if not page then return failed(err, i, w) end
      for k, order in ipairs(page) do
        local g = type(order) == "table" and order.guid
        if type(g) ~= "string" or g == "" then
          return failed(errors.new("decode", ("ordersBulk answered an order that is not an object with"
            .. " a guid (item %d of page %d)"):format(k, pages.page - 1)), i, w)
        end
        -- a page boundary moving under us can repeat an order: keep it once
        if not seen[g] and not previous[g] then
          seen[g] = true
          orders[#orders + 1] = order
        end
      end
    end
    previous = seen
    if set then
      for _, order in ipairs(orders) do set:fold(order) end
    end
    local info = { window = i, windows = #windows, startDate = q.startDate, endDate = q.endDate,
                   orders = #orders }
    local ok, cerr = call_back(opts.on_window, "on_window", orders, info)
    if not ok then return failed(cerr, i, w) end
    total = total + #orders
    checkpoint = { version = M.CHECKPOINT_VERSION, startDate = fmt(first), endDate = fmt(finish),
                   through = q.endDate, windows_done = done_before + i, orders = total }
    info.total_orders, info.checkpoint = total, checkpoint
    info.calls = (self._orders_bulk_calls or 0) - calls_before
    info.profiles = set and set:count() or nil
    ok, cerr = call_back(opts.on_progress, "on_progress", info)
    if not ok then return failed(cerr, i, w) end
  end
  return { profiles = set or nil, checkpoint = checkpoint, windows = #windows, orders = total,
           calls = (self._orders_bulk_calls or 0) - calls_before,
           startDate = fmt(start), endDate = fmt(finish) }
end

-- -------------------------------------------------------------------------
-- Sync to Toast CRM
-- -------------------------------------------------------------------------

-- The Customer to find or create for a profile, or nil and why not.
local function customer_for(p)
  if type(p) ~= "table" then return nil, "not a profile" end
  local function nonempty(v) return type(v) == "string" and v:find("%S") and v or nil end
  local first, last = nonempty(p.firstName), nonempty(p.lastName)
  if not first then return nil, "firstName missing" end
  if not last then return nil, "lastName missing" end
  local email = nonempty(p.email)
  if email and validate.email(email, "email") then email = nil end
  local phone = nonempty(p.phone)
  if phone and (not phone:find("^[%d%+%-%s%.%(%)]+$") or #phone > 32) then phone = nil end
  if not email and not phone then return nil, "no usable email or phone" end
  return { firstName = first, lastName = last, email = email, phone = phone }
end

--- Makes sure every guest exists as a Toast CRM customer (`find_or_create` in `client:batch`).
-- Makes sure every guest exists as a Toast CRM customer: find_or_create for each profile, run
-- through client:batch. report = {total, created, found, failed, skipped, results = [{key, status
-- = "created"|"found"|"failed"|"skipped", guid, reason, err}]}. With a profile set, each synced
-- profile records crm_customer_guid. Profiles that share a normalised email or phone run in one
-- operation, one after the other, so they can never both miss and both create. A second run
-- finds everyone.
-- @function Toast:sync_to_crm
-- @tparam crm.toast.guests.Set|table profiles a profile set, or an array of profiles
-- @tparam[opt] table opts
-- @tparam[opt=8] number opts.concurrency operations in flight (1 to 1024)
-- @treturn[1] SyncReport `{total, created, found, failed, skipped, results}`; a profile's own
-- failure is in its result (`status = "failed"`, `err`) and does not stop the others
-- @return[2] `nil`
-- @treturn[2] Error `validation` (`field = "profiles"`, `"concurrency"`), or the batch's own
-- error (`transport`, `code = "closed"`)
function Orders:sync_to_crm(profiles, opts)
  local e = validate.table(opts, "options")
  if e then return nil, e end
  opts = opts or {}
  e = validate.known_keys(opts, { concurrency = true })
    or validate.number(opts.concurrency, "concurrency", { min = 1, max = 1024, integer = true })
  if e then return nil, e end
  local set
  if guests.is_set(profiles) then
    set, profiles = profiles, profiles:profiles()
  elseif type(profiles) ~= "table" then
    return nil, fail("profiles", "must be a profile set or an array of profiles")
  end
  local report = { total = #profiles, created = 0, found = 0, failed = 0, skipped = 0, results = {} }
  -- Profiles that share an email or a phone are one guest to Toast's search: they go into the
  -- same operation and run one after another, so two concurrent find_or_creates can never both
  -- miss and both create.
  local groups, group_of_key = {}, {}
  local function root(g) while g.into do g = g.into end return g end
  for i, p in ipairs(profiles) do
    local key = type(p) == "table" and p.key or nil
    local c, why = customer_for(p)
    if c then
      report.results[i] = { key = key }
      -- The keys find_or_create locks on: the same normal forms (crm.phone for phones).
      local ids = { c.email and ("e:" .. (guests.normalize_email(c.email) or c.email:lower())),
                    c.phone and ("p:" .. (guests.normalize_phone(c.phone, self.default_country_code)
                      or c.phone:gsub("%D", ""))) }
      local g
      for _, id in pairs(ids) do
        local other = group_of_key[id] and root(group_of_key[id])
        if other and g and other ~= g then
          for _, m in ipairs(other.members) do g.members[#g.members + 1] = m end
          other.members, other.into = {}, g
        elseif other then
          g = other
        end
      end
      if not g then
        g = { members = {} }
        groups[#groups + 1] = g
      end
      for _, id in pairs(ids) do group_of_key[id] = g end
      g.members[#g.members + 1] = { index = i, customer = c }
    else
      report.results[i] = { key = key, status = "skipped", reason = why }
      report.skipped = report.skipped + 1
    end
  end
  local ops, op_groups = {}, {}
  for _, g in ipairs(groups) do
    if not g.into and #g.members > 0 then
      local members = g.members
      ops[#ops + 1] = function(client)
        local out = {}
        for k, m in ipairs(members) do
          local value, err, how = client:find_or_create(m.customer)
          out[k] = { value = value, how = value and how or err }
        end
        return out
      end
      op_groups[#ops] = members
    end
  end
  if #ops > 0 then
    local results, err = self:batch(ops, { concurrency = opts.concurrency or 8 })
    if not results then return nil, err end
    for j, r in ipairs(results) do
      for k, m in ipairs(op_groups[j]) do
        local out = report.results[m.index]
        local one = r.value and r.value[k]
        if one and one.value then
          out.status, out.guid = one.how, one.value.guid
          report[one.how] = report[one.how] + 1
          if set and out.key then set:link(out.key, one.value.guid) end
        else
          local e2 = one and one.how or r.err
          out.status, out.err, out.reason = "failed", e2, tostring(e2)
          report.failed = report.failed + 1
        end
      end
    end
  end
  return report
end

-- Adds the functions above to the Toast client class.
function M.mixin(class)
  for name, fn in pairs(Orders) do
    if class[name] == nil then class[name] = fn end
  end
  return class
end

return M
