-- make chaos: the fault suite at full size, concurrently. Usage: chaos.lua [OPERATIONS] [SEED]
-- Environment: CHAOS_SEED (else the second argument, else a new random seed, printed),
-- CHAOS_CONCURRENCY (16), CHAOS_RATE (fault rate, 0.3), CHAOS_WINDOW (operations drawn per
-- concurrent window, 64), CHAOS_OPENRESTY_OPS (operations of the slice run inside nginx light
-- threads afterwards; 0 skips it), CHAOS_VERBOSE=1 (the failures by operation and error too).
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
print(("chaos: seed %d, %d operations, concurrency %d (replay with CHAOS_SEED=%d)"):format(seed,
  opts.operations, opts.concurrency, seed))
io.stdout:flush()
local report = chaos.run(opts)
print(chaos.format(report))
if os.getenv("CHAOS_VERBOSE") == "1" then print(chaos.format_failures(report)) end
local ok = report.ok

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
os.exit(ok and 0 or 1)
