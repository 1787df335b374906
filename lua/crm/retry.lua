-- The one retry policy of crm: what is retried, how long to wait, and when to give up.
local errors = require "crm.error"

local M = {}
local function key_name(k) return require("crm.validate").key_name(k) end

local floor, min, max = math.floor, math.min, math.max
local tonumber, type, os_time = tonumber, type, os.time

-- max_attempts bounds failures; max_pending bounds "accepted, still processing" answers (Toast's
-- 202), which are waited out until the deadline rather than counted as failures.
local DEFAULTS = { max_attempts = 4, base_delay = 0.2, max_delay = 5, deadline = 30,
                   max_pending = 100 }

local Policy = {}
Policy.__index = Policy

-- Validates a user's `retry = {...}` table; returns policy | nil, err-message-parts.
function M.new(opts, clock)
  local p = setmetatable({ clock = clock }, Policy)
  for k, v in pairs(DEFAULTS) do p[k] = v end
  if opts ~= nil then
    if type(opts) ~= "table" then return nil, "retry", "must be a table" end
    for k, v in next, opts do
      if DEFAULTS[k] == nil then return nil, "retry." .. key_name(k), "is not a known option" end
      if type(v) ~= "number" or v ~= v or v < 0 or v == math.huge and k ~= "deadline" then
        return nil, "retry." .. k, "must be a finite number >= 0"
      end
      p[k] = v
    end
    if p.max_attempts < 1 then return nil, "retry.max_attempts", "must be at least 1" end
  end
  return p
end

-- A copy with some settings replaced (e.g. a longer deadline for Toast's 202 confirmation).
function Policy:with(overrides)
  local p = setmetatable({}, Policy)
  for k, v in pairs(self) do p[k] = v end
  for k, v in pairs(overrides) do p[k] = v end
  return p
end

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6,
                 Jul = 7, Aug = 8, Sep = 9, Oct = 10, Nov = 11, Dec = 12 }

-- Days since 1970-01-01 for a proleptic Gregorian date (no dependence on the local time zone).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end
M.days_from_civil = days_from_civil

local WEEKDAYS = { Mon = true, Tue = true, Wed = true, Thu = true, Fri = true, Sat = true, Sun = true,
                   Monday = true, Tuesday = true, Wednesday = true, Thursday = true, Friday = true,
                   Saturday = true, Sunday = true }

local function epoch_of(y, mon, d, hh, mm, ss)
  y, d, hh, mm, ss = tonumber(y), tonumber(d), tonumber(hh), tonumber(mm), tonumber(ss)
  mon = MONTHS[mon]
  if not mon or d < 1 or d > 31 or hh > 23 or mm > 59 or ss > 60 then return nil end
  return days_from_civil(y, mon, d) * 86400 + hh * 3600 + mm * 60 + ss
end

-- An HTTP-date in any of the three forms RFC 9110 (5.6.7) asks recipients to parse -> epoch | nil:
--   IMF-fixdate  Sun, 06 Nov 1994 08:49:37 GMT
--   RFC 850      Sunday, 06-Nov-94 08:49:37 GMT   (two-digit years: 70-99 -> 19xx, else 20xx)
--   asctime      Sun Nov  6 08:49:37 1994
function M.parse_http_date(v)
  local wd, d, mon, y, hh, mm, ss = v:match("^(%a+), (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  if not wd then
    wd, d, mon, y, hh, mm, ss = v:match("^(%a+), (%d%d)%-(%a%a%a)%-(%d%d) (%d%d):(%d%d):(%d%d) GMT$")
    if y then
      y = tonumber(y)
      y = y >= 70 and 1900 + y or 2000 + y
    end
  end
  if not wd then
    wd, mon, d, hh, mm, ss, y = v:match("^(%a%a%a) (%a%a%a) +(%d%d?) (%d%d):(%d%d):(%d%d) (%d%d%d%d)$")
  end
  if not wd or not WEEKDAYS[wd] then return nil end
  return epoch_of(y, mon, d, hh, mm, ss)
end

--[[ parse_retry_after(value [, now_epoch]) -> seconds | nil
  delta-seconds: a non-negative integer. A fraction ("1.5") is read as that many seconds; a
  negative number ("-3") means "now" (0). An HTTP-date in the past also means 0. Anything else
  is ignored (nil): the usual backoff applies. ]]
function M.parse_retry_after(v, now_epoch)
  if type(v) ~= "string" then return nil end
  v = v:match("^%s*(.-)%s*$")
  if v:find("^%-?%d+%.?%d*$") or v:find("^%-?%.%d+$") then
    local secs = tonumber(v)
    if not secs or secs ~= secs then return nil end
    return max(0, secs)
  end
  local epoch = M.parse_http_date(v)
  if not epoch then return nil end
  return max(0, epoch - (now_epoch or os_time()))
end

-- Backoff jitter comes from crm's own generator, seeded once per process from libuuid's (or
-- /dev/urandom's) randomness and the process id, on first use: processes (nginx workers forked
-- after loading crm among them) never retry in lockstep, and math.random's seed, which is the
-- user's, is left alone.
local rng_state
local function seed()
  local platform = require "crm.platform"
  local g = platform.guid():gsub("%-", "")
  local s = tonumber(g:sub(1, 7), 16) + tonumber(g:sub(8, 14), 16)
  local ngx = platform.ngx
  local pid = ngx and ngx.worker and ngx.worker.pid and ngx.worker.pid() or 0
  s = (s + pid * 7919) % 2147483647
  if s <= 0 then s = 1 end
  return s
end

-- A Park-Miller generator: exact in doubles, so the same under Lua 5.4 and LuaJIT. -> [0, 1)
function M.random()
  if not rng_state then rng_state = seed() end
  rng_state = (rng_state * 48271) % 2147483647
  return (rng_state - 1) / 2147483646
end

-- The generator's state is reseeded on the next call (specs, and a process that forks).
function M.reseed() rng_state = nil end

-- Full jitter: a random wait in [0, min(max_delay, base * 2^(attempt-1))].
function Policy:backoff(attempt)
  local cap = min(self.max_delay, self.base_delay * 2 ^ (attempt - 1))
  return cap * M.random()
end

-- Whether `err` may be retried for a request. A request that is not idempotent is retried
-- only when it never left this machine, so the server cannot have acted on it.
local function may_retry(err, idempotent)
  if not err.retryable then return false end
  if idempotent then return true end
  return err.sent == false
end
M.may_retry = may_retry

-- Whether an error is the server's own word that it did not act: a 4xx it answered in full
-- (other than 408 and 429, which say "not now"), or anything that never left this machine.
-- Everything else after the bytes went out (5xx, lost or cut answers, bodies that are not the
-- JSON asked for, garbage framing, HTTP/0.9, oversized answers, timeouts) leaves the outcome of
-- a write unknown.
function M.is_definitive(err)
  if err.sent == false or err.kind == "validation" then return true end
  local s = err.status
  return (err.kind == "http" or err.kind == "auth") and s ~= nil and s >= 400 and s < 500
    and s ~= 408 and s ~= 429
end

-- settle(err, idempotent [, reached]): marks a failed write whose outcome is unknown: a
-- non-idempotent one whose last attempt had no definitive answer, and any write (`reached`,
-- from Policy:run with `write = true`) whose bytes reached the server on some attempt without
-- a definitive refusal for that attempt. A write with a client id (idempotent) stays
-- replayable: sending it again with the same id is safe.
function M.settle(err, idempotent, reached)
  if reached or (not idempotent and not M.is_definitive(err)) then
    errors.mark_unknown(err, idempotent)
  end
  return err
end

-- Whether one attempt's error leaves a write's outcome open: its bytes may have reached the
-- server and no definitive refusal came back. A login that failed before the write was sent
-- (err.login) did not send it.
local function reached(err)
  return not err.login and not M.is_definitive(err)
end

-- run(fn, idempotent [, started [, first]]): calls fn(attempt) -> res, err until success (res
-- not nil: res and its second value are returned), a final error, the attempt limit or the
-- deadline (counted from `started`, default now). `first`: the error of an attempt already made
-- before the policy ran (crm.client.call makes the first attempt itself), which counts as
-- attempt 1; the deadline then counts from before it (`started`). The returned error records
-- `attempts`.
function Policy:run(fn, idempotent, started, first)
  local clock = self.clock
  started = started or clock.now()
  local attempt, failures, pending = 0, 0, 0
  -- A write (`self.write`, a policy made with `with { write = true }`) remembers whether any
  -- attempt may have acted: then its final error says the outcome is unknown, whatever the
  -- last attempt got.
  local write, acted = self.write, false
  while true do
    attempt = attempt + 1
    local res, err
    if first then
      err, first = first, nil
    else
      res, err = fn(attempt)
      if res ~= nil or err == nil then return res, err end
    end
    err.attempts = attempt
    if write and not acted then acted = reached(err) end
    if err.pending then pending = pending + 1 else failures = failures + 1 end
    if not may_retry(err, idempotent) then return nil, M.settle(err, idempotent, acted) end
    if failures >= self.max_attempts or pending >= self.max_pending then
      return nil, M.settle(err, idempotent, acted)
    end
    local wait = self:backoff(err.pending and pending or failures)
    local remaining = self.deadline - (clock.now() - started)
    if err.retry_after then
      if err.retry_after > remaining then
        if not err.message:find("beyond the remaining deadline", 1, true) then
          err.message = err.message .. "; the server asked to retry after " .. err.retry_after
            .. "s, beyond the remaining deadline"
        end
        return nil, M.settle(err, idempotent, acted)
      end
      wait = max(wait, err.retry_after)
    end
    if wait >= remaining then
      if not err.message:find("; gave up: retry deadline reached", 1, true) then
        err.message = err.message .. "; gave up: retry deadline reached"
      end
      return nil, M.settle(err, idempotent, acted)
    end
    clock.sleep(wait)
  end
end

-- Whether p is a policy of this module (not a caller's object with its own run).
function M.is_policy(p)
  return getmetatable(p) == Policy
end

-- poll(clock, {timeout, interval, max_interval}, probe): for flows that wait on the server
-- (merges, image uploads). probe() -> value when done | nil, err to stop | nil, nil, state when
-- not yet. Waits start at `interval` and double up to `max_interval`, never past the deadline;
-- the last probe runs at the deadline. Returns value | nil, err | nil, nil, last state (timed out).
function M.poll(clock, opts, probe)
  local deadline = clock.now() + opts.timeout
  local wait = opts.interval or 0.25
  local cap = opts.max_interval or 5
  while true do
    local value, err, state = probe()
    if value ~= nil then return value end
    if err ~= nil then return nil, err end
    local remaining = deadline - clock.now()
    if remaining <= 0 then return nil, nil, state end
    clock.sleep(min(wait, remaining))
    wait = min(wait * 2, cap)
  end
end

return M
