-- A guest-history backfill that runs inside nginx, in the background: a timer started at
-- init_worker reads weeks of Toast orders window by window (client:backfill_orders) and writes
-- each window's orders to a JSON Lines file, keeping its checkpoint in the lua_shared_dict.
--
--   lua_shared_dict crm 1m;
--   init_worker_by_lua_block { require("crm_backfill").start { dir = "/var/lib/crm/backfill" } }
--
-- One worker only, across reloads. During `nginx -s reload` the old workers finish while the
-- new ones start, so a worker id cannot say who runs it: whoever adds the lock key to the dict
-- (an atomic add, with a ttl that a stopped holder's lock runs out by) runs the backfill; the
-- others poll. An old worker told to exit stops after the window it is on, once that window is
-- committed, and gives the lock back; a new worker takes it and resumes from the checkpoint.
--
-- A window is committed in two steps that make one: its file is written aside and renamed into
-- place (a rename is atomic), then the checkpoint moves past it. A worker that dies between the
-- two leaves the checkpoint before the window: the next one reads that window again and its
-- file, named by the window's start, replaces the one written before. So no order is lost and
-- none is written twice, whenever nginx stops. The whole range is fixed by the first checkpoint
-- (added once, atomically), so a restart never shifts the windows.
local cjson = require "cjson.safe"
local guests = require "crm.toast.guests"

local ngx = ngx -- luacheck: ignore 113 (nginx's global; this file only runs inside nginx)

local M = {}

local CHECKPOINT, LOCK = "backfill:checkpoint", "backfill:lock"

-- opts: dir (required: where the window files go), dict ("crm"), weeks (12), window_days (7),
-- spacing (5 s between ordersBulk calls, Toast's minimum), lock_ttl (300 s: longer than one
-- window takes), poll (1 s: how often the others look whether the lock is free).
local function settings(opts)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.dict = o.dict or "crm"
  o.weeks = o.weeks or 12
  o.window_days = o.window_days or 7
  o.spacing = o.spacing or 5
  o.lock_ttl = o.lock_ttl or 300
  o.poll = o.poll or 1
  return o
end

local function log(level, ...) ngx.log(level, "crm backfill: ", ...) end

-- The checkpoint of the whole run: added once (the first worker ever wins), then moved on.
local function checkpoint(dict, o)
  local now = math.floor(ngx.time())
  local first = {
    version = 1, startDate = guests.format_time(now - o.weeks * 7 * 86400),
    endDate = guests.format_time(now), windows_done = 0, orders = 0,
  }
  first.through = first.startDate
  dict:add(CHECKPOINT, cjson.encode(first))
  return cjson.decode(dict:get(CHECKPOINT))
end

local function write_window(o, info, orders)
  local name = ("%s/orders-%s.jsonl"):format(o.dir, info.startDate:gsub("[^%w]", ""))
  local tmp = name .. ".tmp." .. ngx.worker.pid()
  local f = assert(io.open(tmp, "wb"))
  for _, order in ipairs(orders) do
    f:write(cjson.encode { guid = order.guid, openedDate = order.openedDate, window = info.startDate,
                           worker = ngx.worker.pid() }, "\n")
  end
  assert(f:close())
  assert(os.rename(tmp, name))
end

local owner = nil

local function still_mine(dict, o)
  if dict:get(LOCK) ~= owner then return false end
  dict:set(LOCK, owner, o.lock_ttl)
  return true
end

local function run(dict, o)
  local cp = checkpoint(dict, o)
  if cp.through == cp.endDate then return true end
  local client, err = require("crm_webhook").client()
  if not client then return nil, err end
  local res
  res, err = client:backfill_orders {
    checkpoint = cp, window_days = o.window_days, spacing = o.spacing, allow_fast = o.spacing < 5,
    profiles = false,
    on_window = function(orders, info)
      if not still_mine(dict, o) then error("lost the backfill lock", 0) end
      write_window(o, info, orders)
    end,
    on_progress = function(info)
      dict:set(CHECKPOINT, cjson.encode(info.checkpoint))
      if ngx.worker.exiting() then error("nginx is exiting: stopping after this window", 0) end
      still_mine(dict, o)
    end,
  }
  return res, err
end

local tick
tick = function(premature, o)
  if premature or ngx.worker.exiting() then return end
  local dict = ngx.shared[o.dict]
  local cp = dict:get(CHECKPOINT)
  cp = cp and cjson.decode(cp)
  if cp and cp.through == cp.endDate then return end -- done (a reload finds it so)
  owner = owner or (ngx.worker.pid() .. ":" .. require("crm").guid())
  if dict:add(LOCK, owner, o.lock_ttl) then
    local ok, res, err = pcall(run, dict, o)
    if dict:get(LOCK) == owner then dict:set(LOCK, nil) end
    if ok and res then
      log(ngx.NOTICE, "done through ", tostring(cjson.decode(dict:get(CHECKPOINT)).through))
      return
    end
    log(ngx.WARN, "stopped: ", tostring(ok and err or res))
    if ngx.worker.exiting() then return end
  end
  local started, terr = ngx.timer.at(o.poll, tick, o)
  if not started then log(ngx.ERR, "cannot schedule: ", terr) end
end

-- start(opts): from init_worker_by_lua. Every worker schedules the timer; the lock picks one.
function M.start(opts)
  local o = settings(opts)
  if not o.dir then return end
  local ok, err = ngx.timer.at(0, tick, o)
  if not ok then log(ngx.ERR, "cannot schedule: ", err) end
end

-- status(): the checkpoint as JSON (a location for operators; keep it internal).
function M.status(opts)
  local o = settings(opts)
  ngx.header["Content-Type"] = "application/json"
  ngx.say(ngx.shared[o.dict]:get(CHECKPOINT) or "null")
end

return M
