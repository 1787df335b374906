-- make chaos: the fault suite at full size, concurrently. Usage: chaos.lua [OPERATIONS] [SEED]
-- Environment: CHAOS_SEED (else the second argument, else a new random seed, printed),
-- CHAOS_CONCURRENCY (16), CHAOS_RATE (fault rate, 0.3), CHAOS_WINDOW (operations drawn per
-- concurrent window, 64), CHAOS_OPENRESTY_OPS (operations of the slice run inside nginx light
-- threads afterwards; 0 skips it), CHAOS_VERBOSE=1 (the failures by operation and error too).
-- CHAOS_MODE: "faults" (the fault suite), "crash" (the crash chaos, spec/chaos_crash.lua: a
-- keyed import killed with SIGKILL CHAOS_CRASH_KILLS times, 8, and rerun until done, over
-- CHAOS_CRASH_SEEDS seeds from the seed, 1; in Lua and through `crm --input`) or "all" (both;
-- the default).
local chaos = require "chaos"

local function env_number(name)
  local v = os.getenv(name)
  if v == nil or v == "" then return nil end
  return assert(tonumber(v), name .. " must be a number")
end

local seed = env_number("CHAOS_SEED") or tonumber(arg[2] or "") or chaos.random_seed()
local opts = {
  operations = tonumber(arg[1] or "") or 2000, seed = seed,
  concurrency = env_number("CHAOS_CONCURRENCY") or 16,
  fault_rate = env_number("CHAOS_RATE") or 0.3,
  window = env_number("CHAOS_WINDOW") or 64,
}
local mode = os.getenv("CHAOS_MODE")
if mode == nil or mode == "" then mode = "all" end
assert(mode == "faults" or mode == "crash" or mode == "all", "CHAOS_MODE must be faults, crash or all")
local ok = true

local function fault_suite()
  print(("chaos: seed %d, %d operations, concurrency %d (replay with CHAOS_SEED=%d)"):format(seed,
    opts.operations, opts.concurrency, seed))
  io.stdout:flush()
  local report = chaos.run(opts)
  print(chaos.format(report))
  if os.getenv("CHAOS_VERBOSE") == "1" then print(chaos.format_failures(report)) end
  ok = report.ok

  local slice = env_number("CHAOS_OPENRESTY_OPS") or 300
  if slice > 0 then
    local nginx = require "chaos_nginx"
    local ng, why = nginx.start()
    if not ng then
      print("chaos: OpenResty slice skipped: " .. tostring(why))
    else
      local rok, r = pcall(chaos.run, { operations = slice, seed = seed, concurrency = opts.concurrency,
        fault_rate = opts.fault_rate, window = opts.window, runner = ng.runner(opts.concurrency),
        runner_name = "nginx light threads" })
      ng.stop()
      if not rok then error(r, 0) end
      print(chaos.format(r))
      if os.getenv("CHAOS_VERBOSE") == "1" then print(chaos.format_failures(r)) end
      ok = ok and r.ok
    end
  end
end

-- The crash chaos: every seed's lost, duplicated and mismatched counts must be 0.
local function crash_chaos()
  local crash = require "chaos_crash"
  local kills = env_number("CHAOS_CRASH_KILLS") or 8
  for s = seed, seed + (env_number("CHAOS_CRASH_SEEDS") or 1) - 1 do
    -- the import in Lua, then through `crm ... --input` files with a key column
    for _, cli in ipairs { false, true } do
      local r = crash.run { seed = s, kills = kills, cli = cli }
      print(crash.format(r))
      io.stdout:flush()
      ok = ok and r.ok
    end
  end
end

if mode ~= "crash" then fault_suite() end
if mode ~= "faults" then crash_chaos() end
os.exit(ok and 0 or 1)
