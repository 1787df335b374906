-- The crash chaos inside `make test`: a small keyed import killed with SIGKILL at fixed-seed
-- points (some while a write is held in flight at the simulator), rerun until done: every row's
-- record exactly once. `make chaos` runs it at full size over new seeds (scripts/chaos.lua).
local crash = require "chaos_crash"

local SMALL = { customers = 6, credits = 12, guests = 6 }

local function run(extra)
  local o = { seed = 11, kills = 4, in_flight = 2 }
  for k, v in pairs(SMALL) do o[k] = v end
  for k, v in pairs(extra or {}) do o[k] = v end
  return crash.run(o)
end

-- At least `kills` kills (`in_flight` of them with a write in flight), and every row exactly once.
local function assert_exact(r, kills, in_flight)
  local text = crash.format(r)
  assert.is_true(r.kills >= kills, text)
  assert.is_true(r.kills_in_flight >= in_flight, text)
  assert.equal(0, r.lost, text)
  assert.equal(0, r.duplicated, text)
  assert.equal(0, r.mismatched, text)
  assert.equal(0, r.sanitizer, text)
end

describe("the crash chaos", function()
  it("kills a keyed import 4 times (2 with a write in flight): nothing lost, duplicated or wrong", function()
    assert_exact(run(), 4, 2)
  end)

  it("kills crm toast customers create/credit add --input with a key column: each row once", function()
    assert_exact(run { seed = 13, kills = 3, in_flight = 2, cli = true }, 3, 2)
  end)

  it("counts the duplicates of the same import without keys (the check is not blind)", function()
    local r = run { seed = 12, kills = 2, in_flight = 1, unkeyed = true }
    assert.is_true(r.duplicated > 0, crash.format(r))
  end)
end)
