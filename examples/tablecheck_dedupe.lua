-- Finds TableCheck customers that share an email address or phone number and merges each group
-- into its oldest record. Every merge is planned first (dry_run) and the plan printed; with
-- --dry-run nothing is merged.
--   lua examples/tablecheck_dedupe.lua [--dry-run]
-- Runs against the local simulator unless CRM_TABLECHECK_URL and CRM_TABLECHECK_API_KEY say
-- otherwise. Prints ids and field names only, never the customers' emails or phones.
local crm = require "crm"

local dry_run = arg[1] == "--dry-run"
local port = os.getenv("CRM_SIM_PORT") or "18080"
local client = assert(crm.tablecheck {
  base_url = os.getenv("CRM_TABLECHECK_URL") or ("http://127.0.0.1:" .. port .. "/api/crm/v1"),
  api_key = os.getenv("CRM_TABLECHECK_API_KEY") or "sim-tablecheck-key",
})

local groups, err, stats = client:find_duplicates()
if not groups then
  io.stderr:write("search failed: ", tostring(err), "\n")
  os.exit(1)
end
print(("scanned %d customers: %d group(s) of duplicates"):format(stats.scanned, #groups))

local failed = 0
for i, g in ipairs(groups) do
  local shared = {}
  for _, r in ipairs(g.reasons) do shared[#shared + 1] = r.by end
  print(("group %d: keep %s, merge %s (shared: %s)"):format(i, g.primary,
    table.concat(g.secondaries, ", "), table.concat(shared, ", ")))

  local plan, perr, report = client:merge_customers(g.primary, g.secondaries, { dry_run = true })
  if not plan then
    io.stderr:write("  cannot plan: ", tostring(perr), "\n")
    failed = failed + 1
  else
    local fields = {}
    for name, from in pairs(report.fields) do
      fields[#fields + 1] = name .. (from == g.primary and "" or (" <- " .. from))
    end
    table.sort(fields)
    print("  plan: " .. plan.method .. " " .. plan.path .. ": " .. table.concat(fields, ", "))
    for _, conflict in ipairs(report.conflicts) do
      print(("  conflict on %s: kept the value of %s over %d other(s)"):format(conflict.field,
        conflict.kept, #conflict.others))
    end
    if not dry_run then
      local merged, merr = client:merge_customers(g.primary, g.secondaries, { wait = { timeout = 120 } })
      if merged then
        print(("  merged: %s now has %d merged customer(s)"):format(merged.id,
          #(merged.merged_customer_ids or {})))
      else
        io.stderr:write("  merge failed: ", tostring(merr), "\n")
        failed = failed + 1
      end
    end
  end
end
client:close()
if failed > 0 then os.exit(1) end
