-- Concurrent batches. Over curl (plain Lua): each operation runs as a coroutine over the
-- ordinary client code; its HTTP requests go to libcurl's multi interface and its sleeps
-- (backoff, rate limit, 202 waits) to a timer list, so every API method works in a batch
-- unchanged. Over the ngx transport (inside nginx): operations run in ngx.thread light threads,
-- whose cosockets and ngx.sleep already let each other run.
local platform = require "crm.platform"
local errors = require "crm.error"

local M = {}
local function key_name(k) return require("crm.validate").key_name(k) end

local co_create, co_resume, co_status, co_running, co_yield =
  coroutine.create, coroutine.resume, coroutine.status, coroutine.running, coroutine.yield
local now, sleep = platform.now, platform.block
local type, pcall, unpack = type, pcall, table.unpack or unpack -- luacheck: ignore 143

-- Coroutines that belong to a running batch; the transport and clock look here.
local members = setmetatable({}, { __mode = "k" })

local SUBMIT, SLEEP, CALL = {}, {}, {}

-- The transport every client uses: direct libcurl outside a batch, the multi inside one.
local Router = {}
Router.__index = Router

function M.router(handle)
  return setmetatable({ handle = handle }, Router)
end

function Router:request(method, url, headers, body, timeout, fresh)
  local co = co_running()
  if co and members[co] then
    return co_yield(SUBMIT, method, url, headers, body, timeout, fresh)
  end
  return self.handle:request(method, url, headers, body, timeout, fresh)
end

-- One exchange of an operation (core.ops): built, sent and decoded by the C core, on the
-- client's handle or, inside a batch, on a slot of the batch's multi.
function Router:call(base, hs, op, a1, a2, query, body, timeout, fresh)
  local co = co_running()
  if co and members[co] then
    return co_yield(CALL, base, hs, op, a1, a2, query, body, timeout, fresh)
  end
  return self.handle:call(base, hs, op, a1, a2, query, body, timeout, fresh)
end

function Router:close()
  return self.handle:close()
end

-- in_batch() -> whether the running coroutine is an operation of a curl batch.
function M.in_batch()
  local co = co_running()
  return co ~= nil and members[co] == true
end

-- The clock of a curl batch; sleeping inside a batch lets the other operations run.
M.clock = {
  now = now,
  sleep = function(s)
    local co = co_running()
    if co and members[co] then return co_yield(SLEEP, s) end
    return sleep(s)
  end,
}

-- Tables are read raw (rawget, next): a metamethod of the caller's cannot raise in here.
local function raw_length(t)
  local n = 0
  while rawget(t, n + 1) ~= nil do n = n + 1 end
  return n
end

local function as_function(client, op)
  if type(op) == "function" then return function() return op(client) end end
  local name = type(op) == "table" and rawget(op, 1)
  if type(name) == "string" and type(client[name]) == "function" then
    local method, n, args = client[name], raw_length(op) - 1, {}
    for i = 1, n do args[i] = rawget(op, i + 1) end
    return function() return method(client, unpack(args, 1, n)) end
  end
  return nil
end

-- Files one operation's outcome in results[index]; returns true when the batch should stop.
local function record(results, opts, index, ok, res, err)
  if not ok then
    -- A Lua error inside an operation is a bug in the caller's function; report it as a value.
    err = errors.new("validation", "operation raised an error: " .. tostring(res), { field = "ops[" .. index .. "]" })
    res = nil
  end
  if res == nil and err == nil then
    err = errors.new("validation", "operation returned nothing", { field = "ops[" .. index .. "]" })
  end
  if res ~= nil then
    results[index] = { value = res, extra = err }
    results.succeeded = results.succeeded + 1
    return false
  end
  results[index] = { err = err }
  results.failed = results.failed + 1
  return opts.stop_on_error and true or false
end

local function cancel_rest(results, n)
  for i = 1, n do
    if results[i] == nil then
      results[i] = { err = errors.new("transport", "not run: the batch stopped after an earlier failure",
        { code = "cancelled" }) }
      results.failed = results.failed + 1
    end
  end
  return results
end

-- Inside nginx: `concurrency` light threads take the operations in turn. Cosockets and ngx.sleep
-- yield to nginx, so the threads (and other requests) run while each one waits.
local function run_threads(fns, n, concurrency, opts)
  local spawn, wait = platform.ngx.thread.spawn, platform.ngx.thread.wait
  local results = { succeeded = 0, failed = 0 }
  local next_op, stopping = 1, false
  local function worker()
    while not stopping and next_op <= n do
      local index = next_op
      next_op = next_op + 1
      local ok, res, err = pcall(fns[index])
      if record(results, opts, index, ok, res, err) then stopping = true end
    end
  end
  local threads = {}
  for i = 1, math.min(concurrency, n) do
    local th, serr = spawn(worker)
    if not th then
      stopping = true
      for j = 1, #threads do wait(threads[j]) end
      return nil, errors.new("transport", "could not start a light thread: " .. tostring(serr),
        { code = "no_threads" })
    end
    threads[i] = th
  end
  for i = 1, #threads do wait(threads[i]) end
  return cancel_rest(results, n)
end

-- run(client, ops, {concurrency = 16, stop_on_error = false}): client:batch (documented for the
-- reference in lua/crm/client.lua: `batch` and `BatchResults`; keep the two in step).
-- ops[i] is function(client) -> res, err, or {"method_name", args...}.
-- Returns results in input order: results[i] = {value = res, extra = second return} or
-- {err = err}, plus results.succeeded and results.failed counts; or nil, err for bad arguments.
function M.run(client, ops, opts)
  opts = opts or {}
  if type(ops) ~= "table" then return nil, errors.validation("ops", "must be an array") end
  if type(opts) ~= "table" then return nil, errors.validation("options", "must be a table") end
  local raw = {}
  for k, v in next, opts do
    if k ~= "concurrency" and k ~= "stop_on_error" then
      return nil, errors.validation(key_name(k), "is not a known option (concurrency, stop_on_error)")
    end
    raw[k] = v
  end
  opts = raw
  if opts.stop_on_error ~= nil and type(opts.stop_on_error) ~= "boolean" then
    return nil, errors.validation("stop_on_error", "must be a boolean")
  end
  local concurrency = opts.concurrency or 16
  if type(concurrency) ~= "number" or concurrency < 1 or concurrency > 1024 or concurrency % 1 ~= 0 then
    return nil, errors.validation("concurrency", "must be an integer from 1 to 1024")
  end
  local n = raw_length(ops)
  local fns = {}
  for i = 1, n do
    fns[i] = as_function(client, rawget(ops, i))
    if not fns[i] then
      return nil, errors.validation("ops[" .. i .. "]",
        "must be a function(client) or {\"method_name\", args...} naming a client method")
    end
  end
  if client._closed then return nil, (require("crm.client").closed_error()) end

  -- The transport says how: "threads" (nginx light threads) or "multi" (libcurl's multi).
  local transport = client.transport
  local mode, why = "multi", nil
  if type(transport) == "table" and transport.batch_mode then mode, why = transport:batch_mode() end
  if not mode then return nil, why end
  if mode == "threads" then return run_threads(fns, n, concurrency, opts) end

  local multi, merr = platform.core.multi(client._transport_options(concurrency))
  if not multi then return nil, errors.new(merr.kind, merr.message, { code = merr.name }) end

  -- `concurrency` workers, each a coroutine that runs operations one after another (a pool: no
  -- coroutine is made per operation). Their requests go to the multi, their sleeps to a timer
  -- list; the loop below resumes each one when what it waits for is there.
  local results = { succeeded = 0, failed = 0 }
  local by_slot, call_slot = {}, {} -- slot -> worker; slot -> made by submit_call
  local sleepers = {} -- array of {worker, wake}
  local current = {}  -- worker -> index of the operation it runs
  local workers, next_op, stopping = 0, 1, false

  local function work()
    local co = co_running()
    while not stopping and next_op <= n do
      local index = next_op
      next_op = next_op + 1
      current[co] = index
      local ok, res, err = pcall(fns[index])
      current[co] = nil
      if record(results, opts, index, ok, res, err) then stopping = true end
    end
  end

  local step -- forward

  local function spawn()
    local co = co_create(work)
    members[co] = true
    workers = workers + 1
    return step(co)
  end

  -- A worker that is gone: the operation it ran (if any) fails with `err`, and another worker
  -- takes its place while operations are left.
  local function lost(co, err)
    members[co] = nil
    workers = workers - 1
    local index = current[co]
    current[co] = nil
    if index then
      if record(results, opts, index, true, nil, err) then stopping = true end
      if not stopping and next_op <= n then return spawn() end
    end
  end

  -- Resumes a worker with the given values and files what it asks for next.
  step = function(co, ...)
    local ok, what, a1, a2, a3, a4, a5, a6, a7, a8, a9 = co_resume(co, ...)
    if co_status(co) == "dead" then
      if ok then
        members[co] = nil
        workers = workers - 1
        return
      end
      return lost(co, errors.new("validation", "operation raised an error: " .. tostring(what),
        { field = "ops[" .. tostring(current[co]) .. "]" }))
    end
    if what == CALL then
      local slot, serr = multi:submit_call(a1, a2, a3, a4, a5, a6, a7, a8, a9)
      if not slot then return step(co, slot, serr) end
      by_slot[slot], call_slot[slot] = co, true
    elseif what == SUBMIT then
      local slot, serr = multi:submit(a1, a2, a3, a4, a5, a6)
      if not slot then return step(co, nil, serr) end
      by_slot[slot], call_slot[slot] = co, false
    elseif what == SLEEP then
      sleepers[#sleepers + 1] = { co, now() + (a1 or 0) }
    else
      -- Someone yielded from inside an operation for their own reasons: not supported.
      return lost(co, errors.new("validation", "operations must not yield their own coroutines",
        { field = "ops[" .. tostring(current[co]) .. "]" }))
    end
  end

  for _ = 1, math.min(concurrency, n) do
    if stopping or next_op > n then break end
    spawn()
  end
  local owners, calls = {}, {}
  while workers > 0 do
    local t = now()
    local earliest
    for i = 1, #sleepers do
      local w = sleepers[i][2]
      if not earliest or w < earliest then earliest = w end
    end
    if multi:busy() > 0 then
      local wait = earliest and math.max(0, earliest - t) or 1.0
      local done = multi:wait(math.min(wait, 1.0))
      -- Every finished slot is free again already: take all owners before resuming anyone, or
      -- an operation's next request could reuse a slot further down this list.
      local count = #done
      for i = 1, count do
        local slot = done[i].slot
        owners[i], calls[i] = by_slot[slot], call_slot[slot]
        by_slot[slot] = nil
      end
      for i = 1, count do
        local d, owner = done[i], owners[i]
        owners[i] = nil
        if d.err then
          step(owner, nil, d.err)
        elseif calls[i] then
          step(owner, d.status, d.data, d.headers, d.done, d.decode_error)
        else
          step(owner, d.status, d.headers, d.body)
        end
      end
    elseif earliest and earliest > t then
      sleep(earliest - t)
    end

    if #sleepers > 0 then
      t = now()
      local still = {}
      local due = {}
      for i = 1, #sleepers do
        local s = sleepers[i]
        if s[2] <= t then due[#due + 1] = s else still[#still + 1] = s end
      end
      sleepers = still
      for i = 1, #due do step(due[i][1]) end
    end
  end
  multi:close()
  return cancel_rest(results, n)
end

return M
