-- The operations of the fault suite (spec/chaos.lua) without the planning and the checks: each
-- runs one planned operation on a Toast and a TableCheck client and returns a plain outcome
-- (numbers, strings, booleans, arrays of strings) that survives JSON. So the same code runs in
-- the suite's own process (client:batch over libcurl's multi) and inside nginx (client:batch in
-- light threads, spec/openresty/scenarios.lua), and the suite checks both the same way.
-- Needs crm and cjson only (no helper, no C core of its own).
local crm = require "crm"
local cjson = require "cjson.safe"

local M = {}

local json = cjson.new()
json.encode_sparse_array(true)

local MAX_ITEMS = 300 -- a pager that goes on longer than this is stopped (and reported)

-- Every string found in v (keys too), depth-bounded: what a program could print or log from an
-- error table when cjson cannot encode it (functions, cycles).
local function strings_of(v, out, seen, depth)
  if type(v) == "string" then
    out[#out + 1] = v
  elseif type(v) == "table" and not seen[v] and depth < 12 then
    seen[v] = true
    for k, x in pairs(v) do
      if type(k) == "string" then out[#out + 1] = k end
      strings_of(x, out, seen, depth + 1)
    end
  end
  return out
end

-- The texts an error offers a program: tostring of it and of every crm error nested in it, and
-- its table encoded as JSON (scanned for secrets only: a decoded body may carry the customer's
-- own data, which is not a leak).
local function error_texts(err, out)
  out.texts = out.texts or {}
  out.json = out.json or {}
  local seen = {}
  local function walk(v, depth)
    if type(v) ~= "table" or seen[v] or depth > 6 then return end
    seen[v] = true
    if crm.is_error(v) then
      local ok, s = pcall(tostring, v)
      out.texts[#out.texts + 1] = ok and s or ("tostring raised: " .. tostring(s))
    end
    for _, x in pairs(v) do walk(x, depth + 1) end
  end
  walk(err, 0)
  if type(err) == "table" then
    local s = json.encode(err)
    if not s then s = table.concat(strings_of(err, {}, {}, 0), "\n") end
    out.json[#out.json + 1] = s
  elseif err ~= nil then
    out.texts[#out.texts + 1] = tostring(err)
  end
end

-- Files a failure: the error's flags and texts; a failure without a crm error value is noted.
local function failed(out, err)
  out.ok = false
  if not crm.is_error(err) then
    out.not_error = true
    out.not_error_what = err == nil and "nil" or (type(err) .. ": " .. tostring(err)):sub(1, 200)
  else
    out.kind, out.status, out.code = err.kind, err.status, err.code and tostring(err.code) or nil
    out.unknown = err.outcome_unknown == true
    out.pending = err.pending == true
    out.attempts = err.attempts
  end
  error_texts(err, out)
  return out
end

local OPS = {}

-- A write that carries a client GUID: the record's GUID, from the answer or from the error.
local function guid_outcome(out, res, err)
  if res == nil then
    failed(out, err)
    out.guid = type(err) == "table" and err.guid or nil
    return out
  end
  out.ok, out.guid = true, res.guid
  return out
end

function OPS.toast_create(c, op, out)
  return guid_outcome(out, c.toast:create_customer(op.customer))
end

function OPS.foc(c, op, out)
  local res, err, how = c.toast:find_or_create(op.customer)
  if res == nil then
    failed(out, err)
    return out
  end
  out.ok, out.guid, out.how = true, res.guid, how
  return out
end

function OPS.credit_add(c, op, out)
  return guid_outcome(out, c.toast:add_credit(op.target_guid, { amount = op.amount,
    localCreatedDate = crm.toast_time(), note = op.note }))
end

function OPS.toast_search(c, op, out)
  local res, err = c.toast:search_customers({ email = op.email }, { pageSize = 10 })
  if res == nil then return failed(out, err) end
  out.ok, out.guids = true, {}
  for i, x in ipairs(res) do out.guids[i] = x.guid end
  return out
end

function OPS.toast_pages(c, op, out)
  out.guids = {}
  for x, err in c.toast:iter_search_customers({ lastName = op.last_name }, { pageSize = op.page_size }) do
    if x == false or x == nil then return failed(out, err) end
    out.guids[#out.guids + 1] = x.guid
    if #out.guids >= MAX_ITEMS then
      out.runaway = true
      break
    end
  end
  out.ok = true
  return out
end

function OPS.tc_create(c, op, out)
  local res, err = c.tc:create_customer(op.customer)
  if res == nil then return failed(out, err) end
  out.ok, out.id = true, res.id
  return out
end

function OPS.tc_amend(c, op, out)
  local res, err = c.tc:update_customer(op.target_id, { first_name = op.first_name })
  if res == nil then return failed(out, err) end
  out.ok, out.id = true, res.id
  return out
end

function OPS.tc_search(c, op, out)
  out.ids = {}
  for x, err in c.tc:iter_search_customers { email = op.email } do
    if x == false or x == nil then return failed(out, err) end
    out.ids[#out.ids + 1] = x.id
    if #out.ids >= MAX_ITEMS then
      out.runaway = true
      break
    end
  end
  out.ok = true
  return out
end

function OPS.tc_merge(c, op, out)
  local res, err = c.tc:merge_customers(op.primary_id, { op.secondary_id })
  if res == nil then return failed(out, err) end
  out.ok, out.id = true, res.id
  return out
end

M.KINDS = OPS

-- run(clients, op) -> outcome. clients = {toast = ..., tc = ...}; op is a planned operation
-- with its targets resolved (spec/chaos.lua). Never raises: a Lua error inside crm is filed
-- as outcome.crash.
function M.run(clients, op)
  local out = { i = op.i }
  if op.skip then
    out.skipped = op.skip
    return out
  end
  local fn = OPS[op.kind]
  if not fn then
    out.crash = "unknown operation kind " .. tostring(op.kind)
    return out
  end
  local ok, res = pcall(fn, clients, op, out)
  if not ok then
    out.ok = false
    out.crash = tostring(res)
    return out
  end
  return res
end

-- batch(clients, ops, concurrency) -> outcomes (in the order of ops), or nil, message.
-- All operations run in one client:batch of the Toast client: libcurl's multi in plain Lua,
-- light threads inside nginx. The TableCheck client's requests join the same batch (its
-- transport sees the batch's coroutine or runs on its own light thread's cosockets).
function M.batch(clients, ops, concurrency)
  local outcomes, fns = {}, {}
  for k, op in ipairs(ops) do
    fns[k] = function()
      outcomes[k] = M.run(clients, op)
      return true
    end
  end
  local results, err = clients.toast:batch(fns, { concurrency = concurrency })
  if not results then return nil, "client:batch refused to run: " .. tostring(err) end
  for k, op in ipairs(ops) do
    if not outcomes[k] then
      local r = results[k]
      outcomes[k] = { i = op.i, ok = false,
                      crash = "the batch did not run it: " .. tostring(r and r.err) }
    end
  end
  return outcomes
end

return M
