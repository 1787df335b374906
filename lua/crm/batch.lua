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
local co_isyieldable = coroutine.isyieldable or function() return false end -- (none in LuaJIT 2.0)
local now, sleep = platform.now, platform.block
local type, pcall, unpack = type, pcall, table.unpack or unpack -- luacheck: ignore 143

-- Coroutines that belong to a running batch; the transport and clock look here.
local members = setmetatable({}, { __mode = "k" })
-- How many curl batches are running (in this Lua state): while none is, no call can be an
-- operation of one, and crm.http hands an operation to the client's handle without asking the
-- router. A batch that ended by an error leaves it higher: only slower, never wrong.
M.running = 0

local SUBMIT, SLEEP, CALL, DONE = {}, {}, {}, {}

-- The transport every client uses: direct libcurl outside a batch, the multi inside one.
local Router = {}
Router.__index = Router

-- router(handle, options_key): options_key says what its connections depend on (TLS, proxy,
-- timeouts, limits): crm.transport makes it from the client's options.
function M.router(handle, options_key)
  return setmetatable({ handle = handle, options_key = options_key or false }, Router)
end

-- Whether a request of router r, made from the running coroutine, goes to the batch's multi: the
-- batch's own client, or a client with the same connection options. Another client used inside
-- the batch keeps its own handle and options (TLS, proxy, timeouts), and blocks meanwhile.
local function joins(r, co)
  local owner = members[co]
  return owner == r or owner ~= nil and r.options_key ~= false and owner.options_key == r.options_key
end

-- Whether r is crm's curl router (not a transport of the caller's that has the same methods).
function M.is_router(r)
  return type(r) == "table" and getmetatable(r) == Router
end

function Router:request(method, url, headers, body, timeout, fresh)
  local co = co_running()
  if co and joins(self, co) then
    return co_yield(SUBMIT, method, url, headers, body, timeout, fresh)
  end
  return self.handle:request(method, url, headers, body, timeout, fresh)
end

-- One exchange of an operation (core.ops): built, sent and decoded by the C core, on the
-- client's handle or, inside a batch, on a slot of the batch's multi.
function Router:call(base, hs, op, a1, a2, query, body, timeout, fresh)
  local co = co_running()
  local owner = co and members[co]
  if owner == self or owner and joins(self, co) then
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
  return co ~= nil and members[co] ~= nil
end

-- The clock of a curl batch; sleeping inside a batch lets the other operations run.
M.clock = {
  now = now,
  sleep = function(s)
    local co = co_running()
    if co and members[co] then
      -- the loop adds it to the clock: never anything but a number (Lua 5.4 lets a table with
      -- an __lt through a check such as s > 0)
      if type(s) ~= "number" or s ~= s or s < 0 then s = 0 end
      return co_yield(SLEEP, s)
    end
    return sleep(s)
  end,
}

-- Checks every operation before anything runs: a function(client), or {"method_name", args...}
-- naming a method of the client. The operations end at the first nil. ops is read raw when it
-- has a metatable (plain == false: its __index could make the list endless); an operation's
-- own table is read as the caller made it, and check_ops runs protected (M.run), with at[1]
-- the index being read should a metamethod of the caller's raise.
-- -> methods (name -> the client's method, looked up once per batch), n | nil, index of the
-- first bad one. Nothing is made per operation: a worker reads its operation again when it
-- starts it (call_op).
local function check_ops(client, ops, plain, at)
  local methods, i = {}, 1
  while true do
    local op
    if plain then op = ops[i] else op = rawget(ops, i) end
    if op == nil then return methods, i - 1 end
    local t = type(op)
    if t ~= "function" then
      at[1] = i
      local name = t == "table" and op[1]
      local method = methods[name]
      if method == nil then
        method = type(name) == "string" and client[name]
        if type(method) ~= "function" then return nil, i end
        methods[name] = method
      end
    end
    i = i + 1
  end
end

local function bad_op(i)
  return errors.validation("ops[" .. i .. "]",
    "must be a function(client) or {\"method_name\", args...} naming a client method")
end

-- Runs operation i on the client (under pcall: what a metamethod of the caller's or the
-- operation raises is the operation's error) -> value, extra | nil, error. The arguments end at
-- the first nil; the first three (no method takes more) are read as written, so an __index may
-- supply them, and make no table; any further ones are read raw, so that an __index answering
-- for ever cannot make them endless. An operation that the caller changed since the batch
-- checked it is checked again here.
local function call_op(client, ops, methods, i, plain)
  local op
  if plain then op = ops[i] else op = rawget(ops, i) end
  local t = type(op)
  if t == "function" then return op(client) end
  local f = t == "table" and methods[op[1]]
  if not f then return nil, bad_op(i) end
  local a1 = op[2]
  if a1 == nil then return f(client) end
  local a2 = op[3]
  if a2 == nil then return f(client, a1) end
  local a3 = op[4]
  if a3 == nil then return f(client, a1, a2) end
  local args, k = { a1, a2, a3 }, 3
  while rawget(op, k + 2) ~= nil do
    k = k + 1
    args[k] = rawget(op, k + 1)
  end
  return f(client, unpack(args, 1, k))
end

-- What an operation raised, as a validation error naming ops[index]. A Lua error inside an
-- operation is a bug in the caller's function; it is reported as a value, redacted with the
-- client's secrets in force now (the token a login of this batch got too): the text may be
-- anything the caller's code put in it. tostring may raise as well (a __tostring that fails).
local function raised(opts, index, what)
  local shown, text = pcall(tostring, what)
  if not shown or type(text) ~= "string" then text = "(an error value that cannot be shown)" end
  local engine = opts.client and opts.client.engine
  local ctx = { secrets = engine and engine:secrets() or {} }
  return errors.new("validation", "operation raised an error: " .. text,
    { field = "ops[" .. tostring(index) .. "]" }, ctx)
end

-- Files one operation's outcome in results[index]; returns true when the batch should stop.
local function record(results, opts, index, ok, res, err, third)
  if not ok then
    err, res = raised(opts, index, res), nil
  end
  if res == nil and err == nil then
    err = errors.new("validation", "operation returned nothing", { field = "ops[" .. index .. "]" })
  end
  if res ~= nil then
    -- extra: the op's third value (res, nil, extra: the library's convention), or a second
    -- value an op of the caller's own still returns on success
    results[index] = { value = res, extra = err ~= nil and err or third }
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
local function run_threads(client, ops, plain, methods, n, concurrency, opts)
  local spawn, wait = platform.ngx.thread.spawn, platform.ngx.thread.wait
  local results = { succeeded = 0, failed = 0 }
  local next_op, stopping = 1, false
  local function worker()
    while not stopping and next_op <= n do
      local index = next_op
      next_op = next_op + 1
      local ok, res, err, third = pcall(call_op, client, ops, methods, index, plain)
      if record(results, opts, index, ok, res, err, third) then stopping = true end
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
-- Returns results in input order: results[i] = {value = res, extra = third return} or
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
  opts.client = client -- for the redaction of what an operation raises
  local plain = getmetatable(ops) == nil
  local at = { 1 }
  local checked, methods, n = pcall(check_ops, client, ops, plain, at)
  if not checked then
    return nil, errors.validation("ops[" .. at[1] .. "]", "could not be read: a metamethod raised an error")
  end
  if not methods then return nil, bad_op(n) end
  if client._closed then return nil, (require("crm.client").closed_error()) end

  -- The transport says how: "threads" (nginx light threads) or "multi" (libcurl's multi).
  local transport = client.transport
  local mode, why = "multi", nil
  if type(transport) == "table" and transport.batch_mode then mode, why = transport:batch_mode() end
  if not mode then return nil, why end
  if mode == "threads" then return run_threads(client, ops, plain, methods, n, concurrency, opts) end

  local multi, merr = platform.core.multi(client._transport_options(concurrency))
  if not multi then return nil, errors.new(merr.kind, merr.message, { code = merr.name }) end

  -- At most `concurrency` workers: coroutines that each take the next operation when their
  -- last one is done and run it as a sequential call runs (the same methods, crm.client.call,
  -- the retry policy). Their requests go to the multi (the router yields CALL or SUBMIT) and
  -- their sleeps to a timer list (SLEEP); the loop below resumes each one when what it waits
  -- for is there. A worker is {coroutine, index of the operation it runs}.
  local results = { succeeded = 0, failed = 0 }
  local by_slot = {} -- slot -> the worker whose transfer it runs (m:wait_into hands it back)
  local sleepers = {} -- array of {worker, wake}
  local workers, next_op, stopping, succeeded = 0, 1, false, 0
  local in_flight = 0 -- transfers on the multi
  local batch_owner = client.transport -- the router whose requests go to this batch's multi

  local function work(w)
    while not stopping and next_op <= n do
      local index = next_op
      next_op = index + 1
      w[2] = index
      local ok, res, err, third = pcall(call_op, client, ops, methods, index, plain)
      if ok and res ~= nil then
        -- extra: the op's third value (res, nil, extra: the library's convention), or a
        -- second value an op of the caller's own still returns on success
        results[index] = { value = res, extra = err ~= nil and err or third }
        succeeded = succeeded + 1
      elseif record(results, opts, index, ok, res, err, third) then
        stopping = true
      end
      -- only now: what the op raised is shown inside record, and a __tostring that yields
      -- there (LuaJIT's tostring lets it) loses the worker while the op is still its own
      w[2] = nil
    end
    return DONE
  end

  -- A worker that is gone: the operation it ran fails with `err`.
  local function lost(w, err)
    members[w[1]] = nil
    workers = workers - 1
    local index = w[2]
    w[2] = nil
    if index and record(results, opts, index, true, nil, err) then stopping = true end
  end

  -- Resumes a worker with the given values (what its request or sleep returns: up to five) and
  -- files what it asks for next.
  local function step(w, v1, v2, v3, v4, v5)
    local co = w[1]
    local _, what, a1, a2, a3, a4, a5, a6, a7, a8, a9 = co_resume(co, v1, v2, v3, v4, v5)
    if what == CALL then
      local slot, serr = multi:submit_call(a1, a2, a3, a4, a5, a6, a7, a8, a9)
      if not slot then return step(w, slot, serr) end
      by_slot[slot] = w
      in_flight = in_flight + 1
    elseif what == DONE then
      members[co] = nil
      workers = workers - 1
    elseif co_status(co) == "dead" then
      return lost(w, raised(opts, w[2], what))
    elseif what == SUBMIT then
      local slot, serr = multi:submit(a1, a2, a3, a4, a5, a6)
      if not slot then return step(w, nil, serr) end
      by_slot[slot] = w
      in_flight = in_flight + 1
    elseif what == SLEEP then
      sleepers[#sleepers + 1] = { w, now() + (a1 or 0) }
    else
      -- Someone yielded from inside an operation for their own reasons: not supported.
      return lost(w, errors.new("validation", "operations must not yield their own coroutines",
        { field = "ops[" .. tostring(w[2]) .. "]" }))
    end
  end

  local done = {}
  -- Inside an operation of another curl batch (its worker, where it can yield), this loop must
  -- not hold the thread: the outer batch's transfers would stand still (timing out unread) and
  -- what an operation here waits for (a login under way there, a find_or_create lock) would
  -- never come. It polls its multi instead and waits through the outer batch's clock (a SLEEP
  -- of the outer worker), the polls spaced from 1 ms up to 16 ms while nothing finishes.
  local caller = co_running()
  local nested, poll = caller ~= nil and members[caller] ~= nil and co_isyieldable(), 0.001
  M.running = M.running + 1
  while true do
    -- One more worker a round while fewer run than allowed: the round's wait (0 then) sends its
    -- first request at once, so a request leaves when it is made, not after the other workers'
    -- first steps (a rate limit's spacing would bunch at the server otherwise).
    local starting = not stopping and workers < concurrency and next_op <= n
    if starting then
      local co = co_create(work)
      members[co] = batch_owner
      workers = workers + 1
      local w = { co }
      step(w, w)
      starting = not stopping and workers < concurrency and next_op <= n
    end
    -- (a worker lost at its start, its operation having yielded, leaves the rest to a new one)
    if workers == 0 and not starting then break end

    local earliest
    for i = 1, #sleepers do
      local t = sleepers[i][2]
      if not earliest or t < earliest then earliest = t end
    end
    if in_flight > 0 then
      local wait = starting and 0 or earliest and math.max(0, earliest - now()) or 1.0
      -- Every finished slot is free again, and its owner taken out of by_slot, before anyone is
      -- resumed: an operation's next request may reuse a slot further down this list.
      -- done[k .. k + 5] = worker, status, a, b, c, d (nil, err: a transport error; a request's
      -- status, headers, body, or a call's status, data, headers, done, decode_error).
      local count = multi:wait_into(done, nested and 0 or math.min(wait, 1.0), by_slot)
      in_flight = in_flight - count
      for k = 1, 6 * count, 6 do
        step(done[k], done[k + 1], done[k + 2], done[k + 3], done[k + 4], done[k + 5])
      end
      if nested then
        if count > 0 then
          poll = 0.001
        elseif wait > 0 then
          M.clock.sleep(wait < poll and wait or poll)
          if poll < 0.016 then poll = poll * 2 end
        end
      end
    elseif earliest and not starting then
      local t = now()
      if earliest > t then
        if nested then M.clock.sleep(earliest - t) else sleep(earliest - t) end
      end
    end

    if #sleepers > 0 then
      local t = now()
      local still = {}
      local due = {}
      for i = 1, #sleepers do
        local sl = sleepers[i]
        if sl[2] <= t then due[#due + 1] = sl else still[#still + 1] = sl end
      end
      sleepers = still
      for i = 1, #due do step(due[i][1]) end
    end
  end
  results.succeeded = results.succeeded + succeeded
  M.running = M.running - 1
  multi:close()
  return cancel_rest(results, n)
end

return M
