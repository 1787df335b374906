--- Many restaurants on one Toast client: restaurant views (`toast:use_restaurant(guid)`).
-- A partner's one set of machine credentials serves every restaurant connected to it; Toast picks
-- the restaurant by the `Toast-Restaurant-External-ID` header. A view is the client with another
-- restaurant: its calls carry that restaurant's header and share everything else with the
-- client they came from (the login and its token, the connections, the retry policy, the rate,
-- the shared store, the debug hook, `close()`). N restaurants cost one login, and the client's
-- `rate` is one budget across all of them; `rate` on a view caps that restaurant on top.
-- In the reference these methods are part of `crm.toast` (this file has the same module name).
-- @module crm.toast
local client = require "crm.client"
local errors = require "crm.error"
local pager = require "crm.pager"
local ratelimit = require "crm.ratelimit"
local stores = require "crm.store"
local validate = require "crm.validate"

local M = {}

local type, rawget, rawset, setmetatable = type, rawget, rawset, setmetatable

-- What a view keeps for itself; every other field it is given goes to the client (a login run
-- through a view renews the client's token, `_logging_in` is the client's, ...).
-- The ordersBulk spacing state (crm.toast.orders) is the view's when its spacing is per
-- restaurant, the client's when it is per partner; its call count is always the view's.
local SPACING = { _orders_bulk_turn = true, _orders_bulk_last = true, _orders_bulk_calls = true }

local PAGER = getmetatable(pager.failed(nil))

-- An error of a view's names its restaurant (a GUID: not PII); so does the error a pager of the
-- view's yields (a bad argument's included).
local function tag(guid, res, err, ...)
  if res == nil and errors.is(err) and err.restaurant_guid == nil then
    err.restaurant_guid = guid
  elseif type(res) == "table" and getmetatable(res) == PAGER and type(rawget(res, "_fetch")) == "function"
      and not rawget(res, "_restaurant_guid") then
    local fetch = res._fetch
    res._restaurant_guid = guid
    res._fetch = function(p)
      local items, e = fetch(p)
      if items == nil and errors.is(e) and e.restaurant_guid == nil then e.restaurant_guid = guid end
      return items, e
    end
  end
  return res, err, ...
end

-- The view's engine: the client's, with the restaurant named on every error it returns (the
-- pagers' included) and, with a per-restaurant cap, that cap taken before every request (the
-- client's own rate is taken by the engine itself, so it stays one budget for all).
local function view_engine(engine, guid, cap)
  local wrapped = {}
  local e = {}
  -- No straight-to-the-C-core reads for a capped view: every request goes through call/send.
  if cap then e.handle = false end
  function e.call(_, ...)
    if cap then cap:take() end
    return tag(guid, engine:call(...))
  end
  function e.send(_, ...)
    if cap then cap:take() end
    return tag(guid, engine:send(...))
  end
  return setmetatable(e, { __index = function(_, k)
    local v = engine[k]
    if type(v) ~= "function" then return v end
    local w = wrapped[k]
    if not w then
      w = function(_, ...) return v(engine, ...) end
      wrapped[k] = w
    end
    return w
  end })
end

-- The per-restaurant cap: a bucket of this process, or with shared_dict/store one slot counter
-- per restaurant in the store (the client's namespace, so every worker holds the same cap).
local function cap_for(root, guid, rate)
  local bucket, field, rule = ratelimit.new(rate, root.clock)
  if not bucket then return nil, validate.fail(field, rule) end
  local shared = client.private(root).shared
  if shared then
    local prefix = shared.ns .. ":q:" .. guid:lower() .. ":"
    bucket = stores.limiter({ view = function() return stores.view(shared.store, prefix) end },
      bucket, root.clock)
  end
  return bucket
end

local VIEW_OPTIONS = { rate = true, spacing_scope = true }

local function check_view(guid, opts)
  local e = validate.header_value(guid, "restaurant_guid")
  if not e and not validate.is_uuid(guid) then
    e = validate.fail("restaurant_guid", "must be a Toast POS GUID (8-4-4-4-12 hex digits)")
  end
  e = e or validate.table(opts, "options")
  if e or opts == nil then return e end
  return validate.known_keys(opts, VIEW_OPTIONS)
    or validate.enum(opts.spacing_scope, "spacing_scope", { "restaurant", "partner" })
end

-- Views without options are kept per client and GUID (weakly: an unused one goes away), so
-- asking again costs nothing and keeps the view's header set.
local CACHE = setmetatable({}, { __mode = "k" })

local function new_view(root, guid, opts)
  opts = opts or {}
  local cap
  if opts.rate ~= nil then
    local err
    cap, err = cap_for(root, guid, opts.rate)
    if not cap then return nil, err end
  end
  local own_spacing = opts.spacing_scope ~= "partner"
  local view = { restaurant_guid = guid, _view_of = root }
  view.engine = view_engine(root.engine, guid, cap)
  -- Public methods name the restaurant on their errors; validation errors too.
  local methods = {}
  setmetatable(view, {
    __index = function(_, k)
      local v = root[k]
      if type(v) ~= "function" or type(k) ~= "string" or k:sub(1, 1) == "_" then return v end
      local w = methods[k]
      if not w or methods[w] ~= v then
        w = function(...) return tag(guid, v(...)) end
        methods[k], methods[w] = w, v
      end
      return w
    end,
    __newindex = function(t, k, v)
      if SPACING[k] and (own_spacing or k == "_orders_bulk_calls") then rawset(t, k, v) else root[k] = v end
    end,
  })
  -- The client's private state (token, credentials, locks, shared store), seen through the view;
  -- its header lines (with this restaurant's header) and its pending creates are its own.
  local parent = client.private(root)
  setmetatable(client.private(view), { __index = parent, __newindex = parent })
  rawset(client.private(view), "headers", false)
  rawset(client.private(view), "pending_guids", {})
  return view
end

--- A view of this client for another restaurant (`toast:use_restaurant(guid)`).
-- Its calls carry `Toast-Restaurant-External-ID: guid` and share everything else with this
-- client: the login and the token (N restaurants, one login; with `shared_dict`/`store` one for
-- every worker and host), the connections, the retry policy, the client's `rate` (one budget
-- across every restaurant), the store, the debug hook. `find_or_create`'s locks and pending
-- creates are keyed by the view's restaurant. Every error a view returns carries
-- `err.restaurant_guid`. `view:close()` closes the client (and so every view of it). Views mix
-- freely in one `client:batch`: `function(c) return c:use_restaurant(g):get_customer(id) end`.
-- Asked again without options, the same view comes back.
-- @function Toast:use_restaurant
-- @tparam string guid the restaurant's Toast POS GUID
-- @tparam[opt] table opts
-- @tparam[opt] table opts.rate a cap for this restaurant alone `{per_second, burst}`, taken on
-- top of the client's `rate` (with `shared_dict`/`store`, held across workers)
-- @tparam[opt="restaurant"] string opts.spacing_scope `"restaurant"`: the view's ordersBulk calls
-- are spaced on their own; `"partner"`: spaced together with the client's and every other
-- partner-scoped view's
-- @treturn[1] Toast the view (every method of the client)
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field` (`"restaurant_guid"`, `"rate.per_second"`,
-- `"spacing_scope"`)
-- @usage local a, b = toast:use_restaurant(guid_a), toast:use_restaurant(guid_b)
-- local ca = a:get_customer(id1)   -- one login for both
function M.use_restaurant(self, guid, opts)
  local root = rawget(self, "_view_of") or self
  local e = check_view(guid, opts)
  if e then return nil, e end
  if opts ~= nil and next(opts) ~= nil then return new_view(root, guid, opts) end
  local cache = CACHE[root]
  if not cache then
    cache = setmetatable({}, { __mode = "v" })
    CACHE[root] = cache
  end
  local key = guid:lower()
  local view = cache[key]
  if not view then
    view = new_view(root, guid)
    cache[key] = view
  end
  return view
end

-- A view's close is its client's.
function M.close(self)
  local root = rawget(self, "_view_of")
  if root then return root:close() end
  return client.close(self)
end

-- Adds `use_restaurant` (and a close that knows views) to the Toast client class.
function M.mixin(class)
  class.use_restaurant = M.use_restaurant
  class.close = M.close
  return class
end

return M
