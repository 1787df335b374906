--- The backfill of many restaurants on one client (`toast:backfill_restaurants`), and the file
-- sink it writes to by default. Each restaurant is `backfill_orders` through its own view
-- (`toast:use_restaurant(guid)`): ordersBulk windows of at most a month, calls spaced at least 5 s,
-- its own checkpoint. Restaurants run side by side, up to `concurrency`, under the client's one
-- rate; a restaurant that fails is reported and skipped while the others go on.
-- In the reference these are part of `crm.toast` (this file has the same module name).
-- @module crm.toast
local errors = require "crm.error"
local json = require "crm.json"
local validate = require "crm.validate"

local M = {}

local type, ipairs, pcall, tostring = type, ipairs, pcall, tostring
local fail = validate.fail

-- -------------------------------------------------------------------------
-- The file sink: per restaurant, its orders as JSON Lines and its checkpoint as one JSON file
-- -------------------------------------------------------------------------

--- The sink `backfill_restaurants` writes to: where each restaurant's orders go and where its
-- checkpoint is kept. `crm.toast.file_sink(dir)` is the default; a database sink has the same
-- three methods. Each returns `true` (or the checkpoint) or `nil, err`; one may also raise.
-- @table Sink
-- @tfield function load_checkpoint `sink:load_checkpoint(guid)` -> the restaurant's last saved
-- `Checkpoint`, or `nil` when it has none (then it starts from the beginning). Orders written
-- after that checkpoint was saved (a run killed between the two) must be forgotten here: they
-- come again.
-- @tfield function write_orders `sink:write_orders(guid, orders, ctx)`: a finished window's
-- orders, each once; `ctx = {restaurant_guid, window, windows, startDate, endDate,
-- guest_context}` (`guest_context`: the restaurant's `GuestContext`, with `opts.guest_context`;
-- a database sink needs it to name dining options, servers and items)
-- @tfield function save_checkpoint `sink:save_checkpoint(guid, checkpoint)`: after the window's
-- orders were written

local FileSink = {}
FileSink.__index = FileSink

local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- The whole file, or nil when there is none.
local function read_all(path)
  local f = io.open(path, "rb")
  local text = f and f:read("*a")
  if f then f:close() end
  return text
end

-- write_atomic(path, text): the whole text or nothing, under its final name (rename).
local function write_atomic(path, text)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then return nil, err end
  local ok, werr = f:write(text)
  local cok, cerr = f:close()
  if not ok or not cok then
    os.remove(tmp)
    return nil, werr or cerr
  end
  local rok, rerr = os.rename(tmp, path)
  if not rok then return nil, rerr end
  return true
end

local function sink_error(what, path, why)
  return errors.new("validation", ("the file sink could not %s %s: %s"):format(what, path, tostring(why)),
    { field = "sink" })
end

--- A sink that keeps each restaurant in two files of `dir` (made when missing, mode 700):
-- `GUID.orders.jsonl` (its orders, one JSON object a line, each once) and `GUID.checkpoint.json`
-- (its checkpoint and the length of the orders file it covers, replaced atomically by a
-- rename). Loading a checkpoint cuts the orders file back to that length, so the orders of a
-- window written by a run killed before its checkpoint are not kept twice.
-- `crm.toast.file_sink(dir)`.
-- @tparam string dir the directory
-- @treturn[1] Sink the sink, with `sink:orders_path(guid)` and `sink:each_order(guid)` (an
-- iterator over the restaurant's orders) besides the three methods
-- @return[2] `nil`
-- @treturn[2] Error `validation` (`field = "dir"`) when the directory cannot be made
function M.file_sink(dir)
  local e = validate.string(dir, "dir", { required = true, nonempty = true, max = 4096 })
  if e then return nil, e end
  dir = dir:gsub("/+$", "")
  if dir == "" then dir = "/" end
  os.execute("mkdir -p -m 700 " .. quote(dir) .. " 2>/dev/null")
  local probe = dir .. "/.crm-sink-probe"
  local f = io.open(probe, "wb")
  if not f then return nil, fail("dir", "must be a directory crm can write to (" .. dir .. ")") end
  f:close()
  os.remove(probe)
  return setmetatable({ dir = dir, sizes = {} }, FileSink)
end

local function name_of(guid) return tostring(guid):lower() end

function FileSink:orders_path(guid) return self.dir .. "/" .. name_of(guid) .. ".orders.jsonl" end
function FileSink:checkpoint_path(guid) return self.dir .. "/" .. name_of(guid) .. ".checkpoint.json" end

function FileSink:load_checkpoint(guid)
  local path, orders = self:checkpoint_path(guid), self:orders_path(guid)
  local text = read_all(path)
  local saved = text and json.decode(text)
  local cp = type(saved) == "table" and type(saved.checkpoint) == "table" and saved.checkpoint or nil
  local keep = cp and type(saved.bytes) == "number" and saved.bytes or 0
  -- What follows the checkpoint's length was written by a run that stopped before saving it.
  local body = read_all(orders)
  if body and #body > keep then
    local ok, err = write_atomic(orders, body:sub(1, keep))
    if not ok then return nil, sink_error("cut back", orders, err) end
  end
  self.sizes[name_of(guid)] = keep
  return cp
end

function FileSink:write_orders(guid, orders)
  local path = self:orders_path(guid)
  local lines = {}
  for i, o in ipairs(orders) do
    local s, err = json.encode(o)
    if not s then return nil, err end
    lines[i] = s .. "\n"
  end
  local f, err = io.open(path, "ab")
  if not f then return nil, sink_error("open", path, err) end
  local ok, werr = f:write(table.concat(lines))
  local size = f:seek("end")
  local cok, cerr = f:close()
  if not ok or not cok or not size then return nil, sink_error("write", path, werr or cerr) end
  self.sizes[name_of(guid)] = size
  return true
end

function FileSink:save_checkpoint(guid, cp)
  local path = self:checkpoint_path(guid)
  local size = self.sizes[name_of(guid)]
  if not size then
    local body = read_all(self:orders_path(guid))
    size = body and #body or 0
  end
  local text, err = json.encode({ restaurant_guid = name_of(guid), checkpoint = cp, bytes = size })
  if not text then return nil, err end
  local ok, werr = write_atomic(path, text .. "\n")
  if not ok then return nil, sink_error("write", path, werr) end
  return true
end

-- each_order(guid) -> iterator over the restaurant's orders (decoded), in the order written.
function FileSink:each_order(guid)
  local f = io.open(self:orders_path(guid), "rb")
  if not f then return function() return nil end end
  return function()
    while true do
      local line = f:read("*l")
      if not line then
        f:close()
        return nil
      end
      local o = json.decode(line)
      if type(o) == "table" then return o end
    end
  end
end

-- -------------------------------------------------------------------------
-- backfill_restaurants
-- -------------------------------------------------------------------------

local KEYS = {
  weeks = true, now = true, spacing = true, allow_fast = true, window_days = true, page_size = true,
  spacing_scope = true, concurrency = true, sink = true, dir = true, rate = true, on_progress = true,
  stop = true, guest_context = true,
}
-- Passed through to each restaurant's backfill_orders.
local PASS = { "weeks", "spacing", "allow_fast", "window_days", "page_size" }

local function check_sink(sink)
  if type(sink) ~= "table" and type(sink) ~= "userdata" then
    return fail("sink", "must be an object with load_checkpoint, save_checkpoint and write_orders")
  end
  for _, m in ipairs { "load_checkpoint", "save_checkpoint", "write_orders" } do
    local ok, f = pcall(function() return sink[m] end)
    if not ok or type(f) ~= "function" then return fail("sink." .. m, "must be a method") end
  end
  return nil
end

local function check_guids(guids)
  local e = validate.table(guids, "restaurants", true)
  if e then return nil, e end
  local out, seen = {}, {}
  for i, g in ipairs(guids) do
    local field = "restaurants[" .. i .. "]"
    e = validate.header_value(g, field)
    if not e and not validate.is_uuid(g) then e = fail(field, "must be a Toast POS GUID (8-4-4-4-12 hex digits)") end
    if e then return nil, e end
    local k = g:lower()
    if not seen[k] then
      seen[k] = true
      out[#out + 1] = g
    end
  end
  if #out == 0 then return nil, fail("restaurants", "must name at least one restaurant GUID") end
  return out
end

-- A failure no other restaurant can get past: the login itself refused, the client closed, the
-- sink failing. The run starts no further restaurant then.
local function fatal(err)
  if type(err) ~= "table" then return false end
  if err.code == "closed" or err.field == "sink" then return true end
  return err.kind == "auth" and type(err.message) == "string" and err.message:find("^login failed") ~= nil
end

local function call(sink, method, ...)
  local ok, res, err = pcall(sink[method], sink, ...)
  if not ok then return nil, errors.new("validation", "sink:" .. method .. " raised an error: "
    .. tostring(res), { field = "sink" }) end
  if res == nil and err ~= nil then
    if type(err) == "table" and errors.is(err) then
      if err.field == nil then err.field = "sink" end
      return nil, err
    end
    return nil, errors.new("validation", "sink:" .. method .. " failed: " .. tostring(err), { field = "sink" })
  end
  return res == nil and true or res
end

--- What `backfill_restaurants` returns.
-- @table FleetResult
-- @tfield {RestaurantResult,...} restaurants one per restaurant, in the order given
-- @tfield number done restaurants whose backfill finished
-- @tfield number failed restaurants that failed (reported, skipped)
-- @tfield number not_started restaurants not started after a failure that stops everyone (the
-- login refused, the sink failing, the client closed) or after `stop`
-- @tfield number stopped restaurants stopped part-way by `stop` (their checkpoints resume them)
-- @tfield number orders orders written in this run
-- @tfield number calls ordersBulk calls made in this run

--- One restaurant's outcome (in `FleetResult.restaurants`, and in progress as it goes).
-- @table RestaurantResult
-- @tfield string restaurant_guid
-- @tfield string status `"pending"`, `"running"`, `"done"`, `"failed"`, `"stopped"` or
-- `"not_started"`
-- @tfield number orders orders written in this run
-- @tfield number windows_done windows finished (resumes included)
-- @tfield number windows windows of its whole backfill (resumes included; known once started)
-- @tfield number calls ordersBulk calls in this run
-- @tfield[opt] Checkpoint checkpoint its last checkpoint
-- @tfield[opt] Error err why it failed (`err.restaurant_guid` names it)

--- What `on_progress` of `backfill_restaurants` receives after each restaurant's window, and
-- when a restaurant starts, finishes or fails.
-- @table FleetProgress
-- @tfield string event `"start"`, `"window"`, `"done"`, `"failed"` or `"stopped"`
-- @tfield RestaurantResult restaurant that restaurant, so far
-- @tfield number restaurants how many restaurants the run has
-- @tfield number done finished so far
-- @tfield number failed failed so far
-- @tfield number windows_done windows finished across all restaurants (resumes included)
-- @tfield number windows windows across the restaurants started so far
-- @tfield number orders orders written in this run, all restaurants

--- Backfills many restaurants on this client: each restaurant's `backfill_orders` through its
-- view (`use_restaurant(guid)`), its orders written to `sink` window by window, its checkpoint saved
-- after each window. Restaurants run side by side, up to `concurrency`, in `client:batch`
-- (inside nginx: light threads); they share the one login and the client's `rate`.
-- Toast's rules hold for each restaurant: windows of at most a month, ordersBulk calls spaced
-- `spacing` seconds (at least 5 unless `allow_fast`). With `spacing_scope = "restaurant"` (the
-- default) each restaurant is spaced on its own, so the run takes about as long as its slowest
-- restaurant; with `"partner"` every ordersBulk call of the run is spaced from the previous one,
-- whoever's, and the run takes the sum.
-- A killed or reloaded run, started again with the same sink, resumes each restaurant from its
-- checkpoint and writes no order twice. A restaurant that fails (403, a 401 that persists after
-- the fresh login, 5xx past the retry policy, ...) is reported with its error and skipped; the
-- others go on, and the shared token is never dropped for them.
-- @function Toast:backfill_restaurants
-- @tparam {string,...} guids the restaurants' GUIDs (repeats are dropped)
-- @tparam table opts
-- @tparam[opt] Sink opts.sink where orders and checkpoints go; or
-- @tparam[opt] string opts.dir a directory for `file_sink(dir)` (one of `sink` and `dir` is required)
-- @tparam[opt=4] number opts.concurrency restaurants at once (1 to 1024)
-- @tparam[opt="restaurant"] string opts.spacing_scope `"restaurant"` or `"partner"`
-- @tparam[opt] table opts.rate a cap per restaurant `{per_second, burst}` (the client's own
-- `rate` is the budget across all of them)
-- @tparam[opt] function opts.on_progress `function(info)` with a `FleetProgress` (an error it
-- raises is dropped)
-- @tparam[opt] boolean opts.guest_context read each restaurant's `GuestContext` before its
-- windows and hand it to the sink (`crm.toast.db` needs it)
-- @tparam[opt] function opts.stop `function() -> true` to stop (Ctrl-C, say): asked before each
-- restaurant starts and after each window; restaurants stop after their current window
-- @tparam[opt] number opts.weeks as for `backfill_orders`, and so are `now`, `spacing`,
-- `allow_fast`, `window_days` and `page_size`
-- @treturn[1] FleetResult `{restaurants, done, failed, not_started, orders, calls}`
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` for bad arguments (nothing sent), or the batch's
-- own error (`transport`, `code = "closed"`)
-- @usage local res = assert(toast:backfill_restaurants(guids, { dir = "backfill" }))
-- for _, r in ipairs(res.restaurants) do print(r.restaurant_guid, r.status, r.orders) end
function M.backfill(self, guids, opts)
  local list, e = check_guids(guids)
  if not list then return nil, e end
  e = validate.table(opts, "options", true)
    or validate.known_keys(opts, KEYS)
    or validate.number(opts.concurrency, "concurrency", { min = 1, max = 1024, integer = true })
    or validate.enum(opts.spacing_scope, "spacing_scope", { "restaurant", "partner" })
  if e then return nil, e end
  -- What each restaurant's backfill_orders would refuse, refused here before anything is sent.
  local orders_mod = require "crm.toast.orders"
  e = validate.number(opts.weeks, "weeks", { gt = 0, max = 520 })
    or validate.number(opts.spacing, "spacing", { min = 0, max = 3600 })
    or validate.boolean(opts.allow_fast, "allow_fast")
    or validate.boolean(opts.guest_context, "guest_context")
    or validate.number(opts.window_days, "window_days", { gt = 0, max = orders_mod.MAX_WINDOW_DAYS })
    or validate.number(opts.page_size, "page_size", { min = 1, max = orders_mod.MAX_PAGE_SIZE, integer = true })
    or (opts.now ~= nil and type(opts.now) ~= "number" and type(opts.now) ~= "string"
        and fail("now", "must be epoch seconds or an ISO-8601 date-time"))
  if e then return nil, e end
  if opts.spacing ~= nil and opts.spacing < orders_mod.MIN_SPACING and opts.allow_fast ~= true then
    return nil, fail("spacing", "must be at least " .. orders_mod.MIN_SPACING .. " seconds (Toast asks for"
      .. " 5-10 s between ordersBulk calls); pass allow_fast = true to go faster, e.g. against a simulator")
  end
  for _, k in ipairs { "on_progress", "stop" } do
    if opts[k] ~= nil and type(opts[k]) ~= "function" then return nil, fail(k, "must be a function") end
  end
  -- (a stop function that raises asks for nothing)
  local function stop_asked()
    if opts.stop == nil then return false end
    local ok, yes = pcall(opts.stop)
    return ok and yes == true
  end
  if opts.sink ~= nil and opts.dir ~= nil then return nil, fail("sink", "cannot be combined with dir") end
  local sink = opts.sink
  if sink == nil then
    if opts.dir == nil then return nil, fail("sink", "or dir is required (where orders and checkpoints go)") end
    sink, e = M.file_sink(opts.dir)
    if not sink then return nil, e end
  end
  e = check_sink(sink)
  if e then return nil, e end
  local view_opts = { spacing_scope = opts.spacing_scope, rate = opts.rate }
  -- Every view is checked (and made) before anything is sent: a bad `rate` fails here.
  local views = {}
  for i, g in ipairs(list) do
    local v, verr = self:use_restaurant(g, view_opts)
    if not v then return nil, verr end
    views[i] = v
  end
  -- One end for the whole run, so every restaurant covers the same weeks.
  local now = opts.now
  if now == nil then now = math.floor(os.time()) end
  local guests = orders_mod.guests
  local days = opts.window_days or orders_mod.DEFAULT_WINDOW_DAYS

  local n = #list
  local states, run = {}, { restaurants = n, done = 0, failed = 0, windows_done = 0, windows = 0,
                            orders = 0 }
  for i, g in ipairs(list) do
    states[i] = { restaurant_guid = g, status = "pending", orders = 0, windows_done = 0, windows = 0,
                  calls = 0 }
  end
  local stopping = false
  local function report(event, st)
    if not opts.on_progress then return end
    pcall(opts.on_progress, { event = event, restaurant = st, restaurants = n, done = run.done,
                              failed = run.failed, windows_done = run.windows_done,
                              windows = run.windows, orders = run.orders })
  end
  local function failed(st, err)
    st.status, st.err = "failed", err
    if type(err) == "table" and errors.is(err) and err.restaurant_guid == nil then
      err.restaurant_guid = st.restaurant_guid
    end
    run.failed = run.failed + 1
    if fatal(err) then stopping = true end
    report("failed", st)
    return nil, err
  end

  local function one(i)
    local st, view, guid = states[i], views[i], list[i]
    if stopping or self._closed or stop_asked() then
      st.status = "not_started"
      return true
    end
    st.status = "running"
    local cp, lerr = call(sink, "load_checkpoint", guid)
    if lerr then return failed(st, lerr) end
    if cp == true then cp = nil end
    local o = { profiles = false, now = now, checkpoint = cp }
    for _, k in ipairs(PASS) do o[k] = opts[k] end
    if cp then
      o.weeks = nil
      st.checkpoint, st.windows_done = cp, cp.windows_done or 0
    end
    -- The windows of this restaurant's whole backfill, for the overall progress.
    local first = cp and guests.parse_time(cp.through)
      or (type(now) == "number" and now or guests.parse_time(now) or 0)
        - (opts.weeks or orders_mod.DEFAULT_WEEKS) * 7 * 86400
    local finish = type(now) == "number" and now or guests.parse_time(now) or first
    st.windows = st.windows_done + #orders_mod.windows(first, finish, days)
    run.windows = run.windows + st.windows
    run.windows_done = run.windows_done + st.windows_done
    local gctx
    if opts.guest_context then
      local gerr
      gctx, gerr = view:get_guest_context()
      if not gctx then return failed(st, gerr) end
    end
    report("start", st)
    local werr, stopped
    o.on_window = function(orders, info)
      local ok, err = call(sink, "write_orders", guid, orders, {
        restaurant_guid = guid, window = info.window, windows = info.windows,
        startDate = info.startDate, endDate = info.endDate, guest_context = gctx })
      if not ok then
        werr = err
        error("the sink failed", 0)
      end
    end
    o.on_progress = function(info)
      local ok, err = call(sink, "save_checkpoint", guid, info.checkpoint)
      if not ok then
        werr = err
        error("the sink failed", 0)
      end
      st.checkpoint, st.windows_done = info.checkpoint, info.checkpoint.windows_done
      st.orders, st.calls = st.orders + info.orders, info.calls
      run.windows_done, run.orders = run.windows_done + 1, run.orders + info.orders
      report("window", st)
      if stop_asked() then
        stopped = true
        error("stopped", 0)
      end
    end
    local res, err = view:backfill_orders(o)
    if not res and stopped then
      st.status = "stopped"
      report("stopped", st)
      return true
    end
    if not res then return failed(st, werr or err) end
    st.status, st.calls, st.checkpoint = "done", res.calls, res.checkpoint
    run.done = run.done + 1
    report("done", st)
    return true
  end

  local fns = {}
  for i = 1, n do fns[i] = function() return one(i) end end
  local concurrency = math.min(opts.concurrency or 4, n)
  -- A clock that schedules its own sleepers (a virtual clock: crm.transport) runs them itself.
  local clock = self.clock
  if type(clock.run) == "function" then
    clock.run(fns, concurrency)
  else
    local _, berr = self:batch(fns, { concurrency = concurrency })
    if berr then return nil, berr end
  end
  local out = { restaurants = states, done = run.done, failed = run.failed, not_started = 0, stopped = 0,
                orders = run.orders, calls = 0 }
  for _, st in ipairs(states) do
    if st.status == "stopped" then
      out.stopped = out.stopped + 1
    elseif st.status == "not_started" or st.status == "pending" or st.status == "running" then
      st.status = "not_started"
      out.not_started = out.not_started + 1
    end
    out.calls = out.calls + st.calls
  end
  return out
end

return M
