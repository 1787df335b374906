-- Simulated TableCheck CRM v1 (contract: tablecheck-crm-v1.openapi.yml, plus
-- the behaviour the TableCheck seed documents). Everything lives under
-- /api/crm/v1:
--
--   GET    /customers                  ids, shop_ids, created_at_min/max, updated_at_min/max,
--                                      page, per_page, include_fields, exclude_fields
--   POST   /customers                  CustomerCreateParams             -> {customer}
--   GET    /customers/{id}             include_fields, exclude_fields   -> {customer}
--   PUT    /customers/{id}             CustomerUpdateParams             -> {customer}
--   DELETE /customers/{id}                                              -> {status:"ok"}
--   POST   /customer_search            CustomerSearchParams | {scroll_id}
--                                      -> {customers, pagination:{scroll_id,total_results}}
--   GET    /shops, /shops/{id|slug}
--   GET    /franchises, /franchises/{id|slug}
--   GET    /reservations               + start_at_min/max, customer_ids, sort, sort_order
--   POST   /reservations               ReservationCreateParams -> {reservation, reservation_flags}
--   GET    /reservations/{id|ref}
--   PUT    /reservations/{id|ref}      ReservationUpdateParams
--   GET    /reservation_flags, /reservation_flags/{id}
--   GET    /memberships, POST /memberships, GET|PUT|DELETE /memberships/{id}
--   GET    /membership_programs, /membership_programs/{id}
--
-- Lists answer {<plural>: [...], pagination: {page, per_page}}; `page` is
-- zero-based, per_page 1..1000 (default 100), and a short page is the last.
-- GET /customers serves at most tablecheck_customers_max_pages (10) pages:
-- page >= 10 answers 400 page_limit_exceeded.
--
-- Where the spec wraps a single object under a wrong key (Shop, Franchise,
-- ReservationFlag and Membership under "reservation", memberships under
-- "reservations") tablecheck_envelope decides: "both" (default) sends the
-- spec's key and the natural one (shop, franchise, reservation_flag,
-- membership / memberships), "spec" or "natural" only one of them.
--
-- Auth: the Authorization header must equal tablecheck_api_key exactly (no
-- "Bearer"); otherwise 401 (code unauthorized when missing, api_key_invalid
-- when wrong).
--
-- Errors are always {errors:[{code, message}]}, and messages never echo
-- emails or phone numbers:
--   400 invalid_json | parameter_missing   body missing, not JSON, not an object
--   400 invalid_parameter | unknown_parameter  bad / unknown query parameter
--   400 page_limit_exceeded                GET /customers page >= 10
--   401 unauthorized | api_key_invalid
--   404 not_found                          no such record or route
--   404 scroll_expired                     a scroll_id this server issued, but older
--                                          than tablecheck_scroll_ttl since its last use
--   404 invalid_scroll_id                  a scroll_id this server never issued
--   405 method_not_allowed                 (with an Allow header)
--   422 invalid_parameter | parameter_missing | unknown_parameter   body breaks the schema
--                                          or names records that do not exist
--   422 invalid_image                      image type not allowed (inferred from the URL)
--   422 image_update_not_permitted         changing an existing image
--
-- Settings (POST /__sim/config):
--   tablecheck_api_key              "sim-tablecheck-key"
--   tablecheck_scroll_ttl           300    seconds a scroll_id stays valid after issue/use
--   tablecheck_search_page_size     200    customers per customer_search page
--   tablecheck_merge_delay          0      seconds until a merge moves reservations,
--                                          memberships and images to the primary
--   tablecheck_image_delay          0      seconds until an uploaded image has url + variants
--   tablecheck_synthetic_customers  0      customers customer_search (and GET
--                                          /customers/{id}) see beyond the stored ones,
--                                          computed from their index, never stored
--   tablecheck_customers_max_pages  10     pages GET /customers serves
--   tablecheck_strict               true   refuse unknown body fields / query parameters
--   tablecheck_envelope             "both" see above
--
-- Control (JSON in/out, not counted in stats):
--   POST /__sim/tablecheck/seed     {customers = N, prefix? = "Seed", fields? = {...}}
--                                   stores N customers (see customers.seed)
--                                   (N <= 50000 and what fits in the shared dict)
--                                   -> {ok, created, first_id, last_id, first_number, last_number,
--                                       free_bytes}
--   GET  /__sim/tablecheck/fixtures the fixed franchise, shop, program, tier and flag ids
--
-- Fixtures (created on the first TableCheck request after start or reset):
-- franchise 5ed64e249551e80639a4d995 (the seed's example franchise_id),
-- shops 5ed64e279551e80639a4da51 (the seed's parent_shop_id, slug
-- sim-paris-cafe) and ...da52 (sim-seattle-grill), two membership programs
-- and two reservation flags (see sim.tablecheck.store).

local common = require("sim.common")
local store = require("sim.tablecheck.store")
local customers = require("sim.tablecheck.customers")
local search = require("sim.tablecheck.search")
local res = require("sim.tablecheck.resources")

local M = {}

common.register_config({
  tablecheck_api_key = "sim-tablecheck-key",
  tablecheck_scroll_ttl = 300,
  tablecheck_search_page_size = 200,
  tablecheck_merge_delay = 0,
  tablecheck_image_delay = 0,
  tablecheck_synthetic_customers = 0,
  tablecheck_customers_max_pages = 10,
  tablecheck_strict = true,
  tablecheck_envelope = "both",
}, {
  tablecheck_scroll_ttl = function(v) return v > 0, "must be > 0" end,
  tablecheck_search_page_size = function(v)
    return v >= 1 and v == math.floor(v), "must be a positive integer"
  end,
  tablecheck_merge_delay = function(v) return v >= 0, "must be >= 0" end,
  tablecheck_image_delay = function(v) return v >= 0, "must be >= 0" end,
  tablecheck_synthetic_customers = function(v)
    return v >= 0 and v == math.floor(v) and v < 2 ^ 48, "must be a non-negative integer"
  end,
  tablecheck_customers_max_pages = function(v)
    return v >= 1 and v == math.floor(v), "must be a positive integer"
  end,
  tablecheck_envelope = function(v)
    return v == "both" or v == "spec" or v == "natural", "must be \"both\", \"spec\" or \"natural\""
  end,
})

-- pattern (relative to /api/crm/v1), handlers by method
local ROUTES = {
  { "^/customers$", { GET = customers.list, POST = customers.create } },
  { "^/customers/([^/]+)$", { GET = customers.show, PUT = customers.update, DELETE = customers.delete } },
  { "^/customer_search$", { POST = search.search } },
  { "^/shops$", { GET = res.list_shops } },
  { "^/shops/([^/]+)$", { GET = res.show_shop } },
  { "^/franchises$", { GET = res.list_franchises } },
  { "^/franchises/([^/]+)$", { GET = res.show_franchise } },
  { "^/reservations$", { GET = res.list_reservations, POST = res.create_reservation } },
  { "^/reservations/([^/]+)$", { GET = res.show_reservation, PUT = res.update_reservation } },
  { "^/reservation_flags$", { GET = res.list_flags } },
  { "^/reservation_flags/([^/]+)$", { GET = res.show_flag } },
  { "^/memberships$", { GET = res.list_memberships, POST = res.create_membership } },
  { "^/memberships/([^/]+)$", { GET = res.show_membership, PUT = res.update_membership,
    DELETE = res.delete_membership } },
  { "^/membership_programs$", { GET = res.list_programs } },
  { "^/membership_programs/([^/]+)$", { GET = res.show_program } },
}

local function route(method, rel)
  local allowed, seen = {}, false
  for _, r in ipairs(ROUTES) do
    local id = rel:match(r[1])
    if id then
      seen = true
      local h = r[2][method]
      if h then
        if id == rel then id = nil end -- no capture: match returns the whole string
        return h, id
      end
      for name in pairs(r[2]) do allowed[#allowed + 1] = name end
    end
  end
  if seen then
    table.sort(allowed)
    return nil, nil, allowed
  end
  return nil
end

local function authorized()
  local h = ngx.req.get_headers()["authorization"]
  if type(h) == "table" then h = h[1] end
  if h == nil or h == "" then
    return false, "unauthorized", "the Authorization header with your API key is missing"
  end
  if h ~= common.config().tablecheck_api_key then
    return false, "api_key_invalid", "the API key in the Authorization header is invalid"
  end
  return true
end

local function traceback(e)
  if store.is_problem(e) then return e end
  return debug.traceback(tostring(e), 2)
end

function M.handle(method, path)
  local base = store.BASE
  if path:sub(1, #base + 1) ~= base .. "/" then
    return store.fail(404, "not_found", "no such endpoint")
  end
  local rel = path:sub(#base + 1):gsub("/+$", "")
  local handler, id, allowed = route(method, rel)
  if not handler then
    if allowed then
      return store.fail(405, "method_not_allowed", method .. " is not allowed here",
        { Allow = table.concat(allowed, ", ") })
    end
    return store.fail(404, "not_found", "no such endpoint")
  end
  local ok, code, message = authorized()
  if not ok then return store.fail(401, code, message) end
  local done, e = xpcall(function()
    store.ensure_fixtures()
    customers.run_due_jobs(store.now())
    return handler({ method = method, path = path, id = id })
  end, traceback)
  if done then return end
  if store.is_problem(e) then return store.send_errors(e.status, e.errors) end
  ngx.log(ngx.ERR, "tablecheck simulator: ", e)
  return store.fail(500, "internal_error", "simulator error (see error.log in the run directory: crm sim status)")
end

---------------------------------------------------------------------------
-- Control routes (merged into /__sim/ by sim.control)
---------------------------------------------------------------------------

local SEED_MAX = 50000
-- generous per-customer estimate (record + list entry + dict overhead); a
-- shared dict that runs out of room silently evicts old keys, config included
local SEED_BYTES_EACH = 1536

local function control_fail(status, message)
  return common.send_json(status, { error = message })
end

local function seed()
  local body = common.read_json()
  if type(body) ~= "table" or not common.is_object(body) then
    return control_fail(400, "body must be a JSON object like {\"customers\": 500}")
  end
  local n, prefix = body.customers, body.prefix or "Seed"
  if type(n) ~= "number" or n ~= math.floor(n) or n < 1 or n > SEED_MAX then
    return control_fail(400, "customers must be an integer from 1 to " .. SEED_MAX)
  end
  if type(prefix) ~= "string" or not prefix:find("^[%w_%-]+$") or #prefix > 40 then
    return control_fail(400, "prefix must be 1-40 letters, digits, '_' or '-'")
  end
  if body.fields ~= nil and not common.is_object(body.fields) then
    return control_fail(400, "fields must be an object of CustomerCreateParams")
  end
  for k in pairs(body) do
    if k ~= "customers" and k ~= "prefix" and k ~= "fields" then
      return control_fail(400, "unknown seed option '" .. tostring(k) .. "'")
    end
  end
  local free = common.state():free_space()
  if free < n * SEED_BYTES_EACH then
    return control_fail(400, "not enough simulator memory for " .. n .. " more customers (about "
      .. math.floor(free / SEED_BYTES_EACH) .. " fit); use tablecheck_synthetic_customers for large populations")
  end
  local ok, result, err = pcall(customers.seed, n, prefix, body.fields)
  if not ok then
    if store.is_problem(result) then return control_fail(400, "fields: " .. result.errors[1].message) end
    error(result, 0)
  end
  if not result then return control_fail(400, err) end
  result.ok = true
  result.free_bytes = common.state():free_space()
  return common.send_json(200, result)
end

local function fixtures()
  store.ensure_fixtures()
  return common.send_json(200, store.FIXTURES)
end

M.control_routes = {
  ["/__sim/tablecheck/seed"] = { POST = seed },
  ["/__sim/tablecheck/fixtures"] = { GET = fixtures },
}

return M
