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

local SUBMIT, SLEEP, CALL, FAST = {}, {}, {}, {}

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
  if co and joins(self, co) then
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
local function run_threads(fn_of, n, concurrency, opts)
  local spawn, wait = platform.ngx.thread.spawn, platform.ngx.thread.wait
  local results = { succeeded = 0, failed = 0 }
  local next_op, stopping = 1, false
  local function worker()
    while not stopping and next_op <= n do
      local index = next_op
      next_op = next_op + 1
      local ok, res, err, third = pcall(fn_of(index))
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
  local n = raw_length(ops)
  -- Each operation as a function, made when it starts. {"get_customer", id} and the other reads
  -- the client lists (client._batch_reads) are kept as their name and id: the fast lane (below)
  -- needs no function for them.
  local fns, fast_name, fast_id = {}, {}, {}
  local reads = type(client._batch_reads) == "table" and client._batch_reads or nil
  for i = 1, n do
    local op = rawget(ops, i)
    local name = type(op) == "table" and rawget(op, 1)
    if reads and reads[name] ~= nil and rawget(op, 3) == nil and rawequal(client[name], reads[name]) then
      fast_name[i], fast_id[i] = name, rawget(op, 2)
    else
      fns[i] = as_function(client, op)
      if not fns[i] then
        return nil, errors.validation("ops[" .. i .. "]",
          "must be a function(client) or {\"method_name\", args...} naming a client method")
      end
    end
  end
  local function fn_of(index)
    local f = fns[index]
    if f then return f end
    local method, id = client[fast_name[index]], fast_id[index]
    return function() return method(client, id) end
  end
  if client._closed then return nil, (require("crm.client").closed_error()) end

  -- The transport says how: "threads" (nginx light threads) or "multi" (libcurl's multi).
  local transport = client.transport
  local mode, why = "multi", nil
  if type(transport) == "table" and transport.batch_mode then mode, why = transport:batch_mode() end
  if not mode then return nil, why end
  if mode == "threads" then return run_threads(fn_of, n, concurrency, opts) end

  local multi, merr = platform.core.multi(client._transport_options(concurrency))
  if not multi then return nil, errors.new(merr.kind, merr.message, { code = merr.name }) end

  -- At most `concurrency` operations run at once. An operation runs on a worker: a coroutine
  -- that runs one operation after another (a pool: no coroutine is made per operation), whose
  -- requests go to the multi and whose sleeps go to a timer list; the loop below resumes each
  -- one when what it waits for is there. A read by id the client can hand over as it is
  -- (client:_batch_read: {"get_customer", id} with a current token) skips the worker: it goes to
  -- the multi from here, and only an answer other than success starts a worker, which carries
  -- on from that answer (the general path: retries, re-login, errors).
  local results = { succeeded = 0, failed = 0 }
  local by_slot, kind_of = {}, {} -- slot -> worker, or the index of a fast read; slot -> kind
  local fast_token, fast_spec = {}, {} -- slot -> the token and the read's spec, of a fast read
  local fast_started = {}              -- slot -> when the read was handed to the multi
  local sleepers = {} -- array of {worker, wake}
  local current = {}  -- worker -> index of the operation it runs
  local idle = {}     -- workers waiting for an operation
  local active, next_op, stopping = 0, 1, false
  local IDLE = {}
  local batch_read = type(client._batch_read) == "function" and client._batch_read or nil
  local batch_owner = client.transport -- the router whose requests go to this batch's multi

  local function done_with(index, ok, res, err, third)
    active = active - 1
    if record(results, opts, index, ok, res, err, third) then stopping = true end
  end

  local function work(index, fn)
    local co = co_running()
    while true do
      current[co] = index
      local ok, res, err, third = pcall(fn)
      done_with(index, ok, res, err, third)
      current[co] = nil
      index, fn = co_yield(IDLE)
    end
  end

  local step -- forward

  -- Runs operation `index` (the function fn) on an idle worker, or a new one.
  local function on_worker(index, fn)
    active = active + 1
    local co = idle[#idle]
    if co then
      idle[#idle] = nil
    else
      co = co_create(work)
      members[co] = batch_owner
    end
    return step(co, index, fn)
  end

  -- A worker that is gone: the operation it ran fails with `err`.
  local function lost(co, err)
    members[co] = nil
    local index = current[co]
    current[co] = nil
    if index then done_with(index, true, nil, err) end
  end

  -- Resumes a worker with the given values and files what it asks for next.
  step = function(co, ...)
    local _, what, a1, a2, a3, a4, a5, a6, a7, a8, a9 = co_resume(co, ...)
    if what == IDLE then
      idle[#idle + 1] = co
      return
    end
    if co_status(co) == "dead" then
      return lost(co, raised(opts, current[co], what))
    end
    if what == CALL then
      local slot, serr = multi:submit_call(a1, a2, a3, a4, a5, a6, a7, a8, a9)
      if not slot then return step(co, slot, serr) end
      by_slot[slot], kind_of[slot] = co, CALL
    elseif what == SUBMIT then
      local slot, serr = multi:submit(a1, a2, a3, a4, a5, a6)
      if not slot then return step(co, nil, serr) end
      by_slot[slot], kind_of[slot] = co, SUBMIT
    elseif what == SLEEP then
      sleepers[#sleepers + 1] = { co, now() + (a1 or 0) }
    else
      -- Someone yielded from inside an operation for their own reasons: not supported.
      return lost(co, errors.new("validation", "operations must not yield their own coroutines",
        { field = "ops[" .. tostring(current[co]) .. "]" }))
    end
  end

  -- Starts operation `index`: straight to the multi when the client allows, else on a worker.
  -- What the client allows is asked once per name and round of starts (`asked`): it changes
  -- only with a login or close(), which a worker does, never in between.
  local asked = {}
  local function start(index)
    local name = fast_name[index]
    if name and batch_read and not client._closed then
      local a = asked[name]
      if a == nil then
        local base, hs, cop, token, spec = batch_read(client, name, 1)
        a = base and { base, hs, cop, token, spec } or false
        asked[name] = a
      end
      if a then
        local slot = multi:submit_call(a[1], a[2], a[3], fast_id[index], nil, nil, nil, nil, false)
        if slot then
          active = active + 1
          by_slot[slot], kind_of[slot], fast_token[slot], fast_spec[slot] = index, FAST, a[4], a[5]
          fast_started[slot] = now()
          return
        end
      end
    end
    return on_worker(index, fn_of(index))
  end

  -- A fast read's answer (status, data, headers, done, decode_error; status nil: data is the
  -- transport error): the value when it succeeded, else a worker carries on from it.
  local function fast_done(index, token, spec, started, status, data, headers, ok, derr)
    if ok then return done_with(index, true, data) end
    active = active - 1
    local pre = status == nil and { err = data, token = token, started = started }
      or { status = status, data = data, headers = headers, decode_error = derr, token = token,
           started = started }
    local id = fast_id[index]
    return on_worker(index, function() return client:_read(spec, id, pre) end)
  end

  local owners, kinds, tokens, specs, starts, done = {}, {}, {}, {}, {}, {}
  while true do
    if next(asked) then asked = {} end
    while not stopping and active < concurrency and next_op <= n do
      local index = next_op
      next_op = next_op + 1
      start(index)
    end
    if active == 0 then break end

    local t = now()
    local earliest
    for i = 1, #sleepers do
      local w = sleepers[i][2]
      if not earliest or w < earliest then earliest = w end
    end
    if multi:busy() > 0 then
      local wait = earliest and math.max(0, earliest - t) or 1.0
      local count = multi:wait_into(done, math.min(wait, 1.0))
      -- Every finished slot is free again already: take all owners before resuming anyone, or
      -- an operation's next request could reuse a slot further down this list.
      for i = 1, count do
        local slot = done[6 * i - 5]
        owners[i], kinds[i], tokens[i], specs[i] = by_slot[slot], kind_of[slot], fast_token[slot],
          fast_spec[slot]
        starts[i] = fast_started[slot]
        by_slot[slot], fast_token[slot], fast_spec[slot], fast_started[slot] = nil, nil, nil, nil
      end
      for i = 1, count do
        local owner, kind = owners[i], kinds[i]
        local k = 6 * i - 5
        local status, a, b, c, d = done[k + 1], done[k + 2], done[k + 3], done[k + 4], done[k + 5]
        owners[i] = nil
        if kind == FAST then
          fast_done(owner, tokens[i], specs[i], starts[i], status, a, b, c, d)
          tokens[i], specs[i] = nil, nil
        elseif status == nil then
          step(owner, nil, a)
        elseif kind == CALL then
          step(owner, status, a, b, c, d)
        else
          step(owner, status, a, b)
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
