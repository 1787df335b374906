-- make chaos: the fault suite at full size. Usage: chaos.lua [OPERATIONS] [SEED]
local chaos = require "chaos"
local report = chaos.run { operations = tonumber(arg[1]) or 2000, seed = tonumber(arg[2]) or 20261121 }
print(chaos.format(report))
os.exit(report.ok and 0 or 1)
