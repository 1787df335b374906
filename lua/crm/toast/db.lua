--- Guest history in a SQL database: Toast orders and the guests on them, written idempotently by
-- order GUID, read back as SQL views (the reports). SQLite is the embedded default (a file,
-- nothing to start); PostgreSQL serves several hosts (backfills and webhook drains side by side).
--
-- The drivers are Debian's LuaSQL (`lua-sql-sqlite3`, `lua-sql-postgres`), loaded only when a
-- database of that kind is opened. LuaSQL has no placeholders: every text value goes through the
-- connection's `escape`, every number is formatted here, and nothing else reaches the SQL. The
-- guide lists no columns for its tables (orders, checks, selections, payments), so the columns
-- are crm's choice (README "Guest history in a database").
--
-- A database call blocks: never use a sink inside an nginx request handler (see the OpenResty
-- sample's queue and `crm toast guests drain`).
-- @module crm.toast.db
-- @usage
-- local db = require "crm.toast.db"
-- local sink = assert(db.open("sqlite:/var/lib/crm/guests.db"))
-- local ctx = assert(toast:get_guest_context())
-- local res, err = toast:backfill_orders { profiles = false,
--   checkpoint = sink:load_checkpoint(toast.restaurant_guid),
--   on_window = function(orders) assert(sink:write_orders(toast.restaurant_guid, orders, ctx)) end,
--   on_progress = function(p) assert(sink:save_checkpoint(toast.restaurant_guid, p.checkpoint)) end }
-- for _, row in ipairs(assert(sink:report("guests"))) do print(row.guest_key, row.total_spend) end
-- sink:close()
local errors = require "crm.error"
local guests = require "crm.toast.guests"
local json = require "crm.json"
local phones = require "crm.phone"
local validate = require "crm.validate"

local M = {}

local type, pairs, ipairs, tostring, tonumber, pcall = type, pairs, ipairs, tostring, tonumber, pcall
local floor, format, concat, sort = math.floor, string.format, table.concat, table.sort
local fail = validate.fail

--- The schema version this crm writes (the highest migration; `schema_version` holds it).
M.SCHEMA_VERSION = 1

-- -------------------------------------------------------------------------
-- The schema: versioned migrations, applied in order on open, in one transaction
-- -------------------------------------------------------------------------

-- Portable SQL (SQLite 3.25+ and PostgreSQL 11+): TEXT, BIGINT, DOUBLE PRECISION, INTEGER.
-- Money is kept in cents (integers); times as the text Toast sent and as epoch seconds.
local MIGRATIONS = {
  [1] = {
    [[CREATE TABLE restaurants (
        guid TEXT PRIMARY KEY,
        scope TEXT NOT NULL,
        checkpoint TEXT,
        context TEXT,
        updated_at BIGINT NOT NULL)]],
    [[CREATE TABLE orders (
        restaurant_guid TEXT NOT NULL,
        guid TEXT NOT NULL,
        scope TEXT NOT NULL,
        modified_date TEXT,
        modified_ms BIGINT,
        opened_date TEXT,
        closed_date TEXT,
        business_date TEXT,
        order_date TEXT,
        order_at DOUBLE PRECISION NOT NULL,
        source TEXT,
        dining_option_guid TEXT,
        dining_behavior TEXT,
        server_guid TEXT,
        voided INTEGER NOT NULL,
        counted INTEGER NOT NULL,
        reason TEXT,
        revision INTEGER NOT NULL,
        written_at BIGINT NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (restaurant_guid, guid))]],
    [[CREATE TABLE order_guests (
        restaurant_guid TEXT NOT NULL,
        order_guid TEXT NOT NULL,
        scope TEXT NOT NULL,
        guest_key TEXT NOT NULL,
        first_name TEXT,
        last_name TEXT,
        email TEXT,
        phone TEXT,
        order_date TEXT,
        order_at DOUBLE PRECISION NOT NULL,
        dining_behavior TEXT,
        server_guid TEXT,
        server_name TEXT,
        check_count INTEGER NOT NULL,
        amount_cents BIGINT NOT NULL,
        total_cents BIGINT NOT NULL,
        tips_cents BIGINT NOT NULL,
        PRIMARY KEY (restaurant_guid, order_guid, guest_key))]],
    "CREATE INDEX order_guests_by_guest ON order_guests (scope, guest_key, order_at)",
    [[CREATE TABLE checks (
        restaurant_guid TEXT NOT NULL,
        order_guid TEXT NOT NULL,
        check_no INTEGER NOT NULL,
        guid TEXT,
        scope TEXT NOT NULL,
        guest_key TEXT NOT NULL,
        display_number TEXT,
        amount_cents BIGINT NOT NULL,
        tax_cents BIGINT NOT NULL,
        total_cents BIGINT NOT NULL,
        tips_cents BIGINT NOT NULL,
        PRIMARY KEY (restaurant_guid, order_guid, check_no))]],
    [[CREATE TABLE selections (
        restaurant_guid TEXT NOT NULL,
        order_guid TEXT NOT NULL,
        check_no INTEGER NOT NULL,
        line_no INTEGER NOT NULL,
        scope TEXT NOT NULL,
        guest_key TEXT NOT NULL,
        item_key TEXT NOT NULL,
        item_guid TEXT,
        name TEXT,
        quantity DOUBLE PRECISION NOT NULL,
        price_cents BIGINT NOT NULL,
        PRIMARY KEY (restaurant_guid, order_guid, check_no, line_no))]],
    "CREATE INDEX selections_by_guest ON selections (scope, guest_key)",
    [[CREATE TABLE payments (
        restaurant_guid TEXT NOT NULL,
        order_guid TEXT NOT NULL,
        check_no INTEGER NOT NULL,
        line_no INTEGER NOT NULL,
        type TEXT,
        amount_cents BIGINT NOT NULL,
        tip_cents BIGINT NOT NULL,
        PRIMARY KEY (restaurant_guid, order_guid, check_no, line_no))]],
    [[CREATE TABLE guests (
        scope TEXT NOT NULL,
        guest_key TEXT NOT NULL,
        first_name TEXT,
        last_name TEXT,
        email TEXT,
        phone TEXT,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (scope, guest_key))]],
    -- One row per guest and order, numbered from each end: the first and the last order.
    [[CREATE VIEW guest_orders_ranked AS
      SELECT og.*,
        ROW_NUMBER() OVER (PARTITION BY scope, guest_key ORDER BY order_at, order_guid) AS n_first,
        ROW_NUMBER() OVER (PARTITION BY scope, guest_key ORDER BY order_at DESC, order_guid DESC) AS n_last
      FROM order_guests og]],
    [[CREATE VIEW guest_last_order AS
      SELECT scope, guest_key, restaurant_guid, order_guid, order_date, order_at
      FROM guest_orders_ranked WHERE n_last = 1]],
    [[CREATE VIEW guest_summary AS
      SELECT g.scope, g.guest_key, g.first_name, g.last_name, g.email, g.phone,
        a.order_count, a.check_count, a.restaurants,
        a.total_cents, CAST(a.total_cents AS DOUBLE PRECISION) / 100 AS total_spend,
        CAST(a.amount_cents AS DOUBLE PRECISION) / 100 AS subtotal,
        CAST(a.tips_cents AS DOUBLE PRECISION) / 100 AS tips,
        a.first_order, a.first_order_at, a.last_order, a.last_order_at, a.last_order_guid
      FROM guests g JOIN (
        SELECT scope, guest_key, COUNT(*) AS order_count, SUM(check_count) AS check_count,
          COUNT(DISTINCT restaurant_guid) AS restaurants,
          SUM(total_cents) AS total_cents, SUM(amount_cents) AS amount_cents, SUM(tips_cents) AS tips_cents,
          MAX(CASE WHEN n_first = 1 THEN order_date END) AS first_order,
          MIN(order_at) AS first_order_at,
          MAX(CASE WHEN n_last = 1 THEN order_date END) AS last_order,
          MAX(order_at) AS last_order_at,
          MAX(CASE WHEN n_last = 1 THEN order_guid END) AS last_order_guid
        FROM guest_orders_ranked GROUP BY scope, guest_key
      ) a ON a.scope = g.scope AND a.guest_key = g.guest_key]],
    [[CREATE VIEW guest_favourite_items AS
      SELECT scope, guest_key, item_key, item_guid, name, quantity, orders,
        ROW_NUMBER() OVER (PARTITION BY scope, guest_key
                           ORDER BY quantity DESC, orders DESC, sort_key) AS rank
      FROM (
        SELECT scope, guest_key, item_key, MAX(item_guid) AS item_guid, MAX(name) AS name,
          SUM(quantity) AS quantity, COUNT(DISTINCT restaurant_guid || '/' || order_guid) AS orders,
          MIN(COALESCE(item_guid, name, '')) AS sort_key
        FROM selections GROUP BY scope, guest_key, item_key
      ) s]],
    [[CREATE VIEW guest_servers AS
      SELECT scope, guest_key, server_guid, MAX(server_name) AS server_name, COUNT(*) AS orders
      FROM order_guests WHERE server_guid IS NOT NULL
      GROUP BY scope, guest_key, server_guid]],
  },
}

--- The reports: each a view, read with one documented query (`sink:report(name)`).
-- `guests` by spend (then visits, then the last visit); `last_orders`, each guest's latest order;
-- `lapsed`, guests whose last order is older than `days` (default 90); `favourite_items`, the top
-- `limit` (default 10) items per guest; `servers`, who served each guest, most orders first.
-- @table REPORTS
M.REPORTS = {
  guests = "SELECT * FROM guest_summary ORDER BY total_cents DESC, order_count DESC, last_order_at DESC,"
    .. " scope, guest_key",
  last_orders = "SELECT * FROM guest_last_order ORDER BY order_at DESC, scope, guest_key",
  lapsed = "SELECT * FROM guest_last_order WHERE order_at < %s ORDER BY order_at, scope, guest_key",
  favourite_items = "SELECT * FROM guest_favourite_items WHERE rank <= %s ORDER BY scope, guest_key, rank",
  servers = "SELECT * FROM guest_servers ORDER BY scope, guest_key, orders DESC, server_guid",
}
--- The reports `crm toast guests report` prints when none is named (lapsed needs `--lapsed-days`).
M.DEFAULT_REPORTS = { "guests", "last_orders", "favourite_items", "servers" }

-- -------------------------------------------------------------------------
-- Values into SQL text
-- -------------------------------------------------------------------------

local REPLACEMENT = "\239\191\189" -- U+FFFD

-- Invalid UTF-8 bytes become U+FFFD (PostgreSQL refuses them in text); valid text is unchanged.
local function repair_utf8(s)
  if validate.is_utf8(s) then return s end
  local out, i, n, byte = {}, 1, #s, string.byte
  while i <= n do
    local c, len = byte(s, i), nil
    if c < 0x80 then len = 0
    elseif c >= 0xC2 and c <= 0xDF then len = 1
    elseif c >= 0xE0 and c <= 0xEF then len = 2
    elseif c >= 0xF0 and c <= 0xF4 then len = 3 end
    local piece = len and s:sub(i, i + len)
    if piece and #piece == len + 1 and validate.is_utf8(piece) then
      out[#out + 1] = piece
      i = i + len + 1
    else
      out[#out + 1] = REPLACEMENT
      i = i + 1
    end
  end
  return concat(out)
end
M.repair_utf8 = repair_utf8

-- Text as a column holds it: neither database keeps a NUL byte in text, so it becomes U+FFFD
-- (the order's JSON document keeps it, as \u0000).
local function clean(s)
  if s:find("\0", 1, true) then s = s:gsub("%z", REPLACEMENT) end
  return repair_utf8(s)
end

local function number_sql(v)
  if v ~= v or v == math.huge or v == -math.huge then return "NULL" end
  if v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then return format("%.0f", v) end
  return format("%.17g", v)
end

-- -------------------------------------------------------------------------
-- The connection: LuaSQL behind exec/rows, errors as crm errors
-- -------------------------------------------------------------------------

local Conn = {}
Conn.__index = Conn

-- PostgreSQL's primary message only (its DETAIL lines can quote row values), redacted with the
-- names, emails and phones of the order being written.
local function db_error(code, message, pii)
  local first = tostring(message or "database error"):gsub("\n.*", "")
  return errors.new("transport", "database: " .. first, { code = code }, { pii = pii or {} })
end

-- lit(v) -> the SQL literal of a Lua value: NULL, a formatted number, an escaped string.
function Conn:lit(v)
  local t = type(v)
  if v == nil or v == json.null then return "NULL" end
  if t == "number" then return number_sql(v) end
  if t == "boolean" then return v and "1" or "0" end
  return "'" .. self.conn:escape(clean(tostring(v))) .. "'"
end

-- The messages of a PostgreSQL connection that is gone (the server restarted, failed over, or
-- ended it): the connection is opened again, once per call, and the call tried again.
local LOST = { "no connection to the server", "terminating connection", "server closed the connection",
               "could not send data to server", "could not receive data from server", "connection to server was lost" }

local function lost(self, msg)
  if not self.pg or self.in_tx then return false end
  msg = tostring(msg)
  for _, l in ipairs(LOST) do
    if msg:find(l, 1, true) then return true end
  end
  return false
end

local connect

-- reconnect(self) -> true | nil, err (db_connect): a new connection in place of the lost one.
local function reconnect(self)
  if self.conn then
    pcall(self.conn.close, self.conn)
    pcall(self.env.close, self.env)
  end
  local fresh, err = connect(self.cfg)
  if not fresh then
    self.conn, self.env = nil, nil
    return nil, err
  end
  self.conn, self.env = fresh.conn, fresh.env
  return true
end

-- ensure() -> true | nil, err (db_connect): a connection to send on (a lost one that could not
-- be opened again is tried again here, at the start of the sink's next call).
function Conn:ensure()
  if self.conn then return true end
  return reconnect(self)
end

-- execute(self, sql) -> LuaSQL's answer | nil, err: a lost connection is opened again, and the
-- statement sent again once (outside a transaction: every statement crm sends alone is
-- idempotent, an upsert or a read).
local function execute(self, sql)
  local ok, err = self:ensure()
  if not ok then return nil, nil, err end
  local res, msg = self.conn:execute(sql)
  if res == nil and lost(self, msg) then
    ok, err = reconnect(self)
    if not ok then return nil, nil, err end
    res, msg = self.conn:execute(sql)
  end
  return res, msg
end

-- exec(sql) -> rows affected | nil, err
function Conn:exec(sql)
  local res, msg, cerr = execute(self, sql)
  if cerr then return nil, cerr end
  if res == nil then return nil, db_error("db_query", msg, self.pii) end
  if type(res) ~= "number" then
    res:close()
    return 0
  end
  return res
end

local PG_NUMBERS = { int2 = true, int4 = true, int8 = true, numeric = true, float4 = true, float8 = true,
                     oid = true }

-- rows(sql) -> array of rows keyed by column name | nil, err. PostgreSQL answers text: numbers
-- and booleans are converted by their column types, so both databases give the same values.
function Conn:rows(sql)
  local cur, msg, cerr = execute(self, sql)
  if cerr then return nil, cerr end
  if cur == nil then return nil, db_error("db_query", msg, self.pii) end
  if type(cur) == "number" then return {} end
  local names, types = cur:getcolnames(), self.pg and cur:getcoltypes() or nil
  local out = {}
  while true do
    local ok, row = pcall(cur.fetch, cur, {}, "a")
    if not ok then
      cur:close()
      return nil, db_error("db_query", row, self.pii)
    end
    if not row then break end
    if types then
      for i, name in ipairs(names) do
        local v = row[name]
        if v ~= nil then
          if PG_NUMBERS[types[i]] then row[name] = tonumber(v)
          elseif types[i] == "bool" then row[name] = v == "t" end
        end
      end
    end
    out[#out + 1] = row
  end
  cur:close()
  return out
end

-- exec_all(list) -> true | nil, err: statements that return nothing; PostgreSQL gets them in one
-- round trip (LuaSQL's SQLite driver runs one statement per call).
function Conn:exec_all(list)
  if #list == 0 then return true end
  if self.pg then return self:exec(concat(list, ";\n")) end
  for _, sql in ipairs(list) do
    local ok, err = self:exec(sql)
    if not ok then return nil, err end
  end
  return true
end

function Conn:begin() return self:exec(self.pg and "BEGIN" or "BEGIN IMMEDIATE") end

function Conn:rollback() if self.conn then self.conn:execute("ROLLBACK") end end

-- transaction(fn) -> fn's results | nil, err: BEGIN, fn(), COMMIT; ROLLBACK on any failure (a
-- raise included). PostgreSQL's deadlocks and unique races between hosts are tried again, and so
-- is a transaction whose connection was lost (on a new connection: the server rolled it back,
-- or committed it when only the answer to COMMIT was lost; crm's transactions are idempotent).
function Conn:transaction(fn)
  local err
  for _ = 1, 4 do
    local ok, berr = self:begin()
    if not ok then return nil, berr end
    self.in_tx = true
    local pok, a, b = pcall(fn)
    if pok and a ~= nil then
      local cok, cerr = self:exec("COMMIT")
      self.in_tx = false
      if cok then return a, b end
      err = cerr
    else
      self.in_tx = false
      err = pok and b or db_error("db_query", a, self.pii)
    end
    local m = tostring(err and err.message or "")
    if lost(self, m) then
      local rok, rerr = reconnect(self)
      if not rok then return nil, rerr end
    else
      self:rollback()
      if not (self.pg and (m:find("deadlock", 1, true) or m:find("duplicate key", 1, true)
          or m:find("could not serialize", 1, true))) then
        break
      end
    end
  end
  return nil, err
end

function Conn:close()
  if self.conn then
    self.conn:close()
    self.env:close()
    self.conn, self.env = nil, nil
  end
end

-- -------------------------------------------------------------------------
-- Opening: the URL, the driver, the migrations
-- -------------------------------------------------------------------------

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- Reads a database URL (`sqlite:PATH`, `postgresql://[user@][host][:port]/dbname[?host=DIR]`).
-- A password in the URL is refused: use `PGPASSWORD` or `~/.pgpass` (libpq reads both).
-- @tparam string url the URL
-- @treturn[1] table `{kind = "sqlite", path}` or `{kind = "postgresql", user, host, port, dbname}`
-- @return[2] `nil`
-- @treturn[2] Error `validation` with `field = "url"` (the message never repeats the URL)
function M.parse_url(url)
  if type(url) ~= "string" or url == "" then
    return nil, fail("url", "must be sqlite:PATH or postgresql://user@host:port/dbname")
  end
  local path = url:match("^sqlite:(.+)$") or url:match("^sqlite3:(.+)$")
  if path then
    path = path:gsub("^//", "")
    if path == "" then return nil, fail("url", "sqlite: needs a file path (sqlite:guests.db)") end
    return { kind = "sqlite", path = path }
  end
  local rest = url:match("^postgresql://(.*)$") or url:match("^postgres://(.*)$")
  if not rest then
    return nil, fail("url", "must start with sqlite: or postgresql:// (no other database is supported)")
  end
  local authority, tail = rest:match("^([^/?]*)(.*)$")
  local userinfo, hostport = authority:match("^(.*)@([^@]*)$")
  if not userinfo then hostport = authority end
  if userinfo and userinfo:find(":", 1, true) then
    return nil, fail("url", "must not carry a password: use PGPASSWORD or ~/.pgpass")
  end
  local host, port = hostport:match("^(.-):(%d+)$")
  if not host then host = hostport end
  local dbname, query = tail:match("^/([^?]*)%??(.*)$")
  if not dbname then dbname, query = "", tail:match("^%?(.*)$") or "" end
  local cfg = { kind = "postgresql", user = userinfo and unescape(userinfo) or nil,
                host = host ~= "" and unescape(host) or nil, port = port and tonumber(port) or nil,
                dbname = dbname ~= "" and unescape(dbname) or nil }
  for k, v in (query or ""):gmatch("([^&=]+)=([^&]*)") do
    if k == "password" then return nil, fail("url", "must not carry a password: use PGPASSWORD or ~/.pgpass") end
    if k == "host" then cfg.host = unescape(v)
    elseif k == "port" then cfg.port = tonumber(v)
    elseif k == "user" then cfg.user = unescape(v)
    else return nil, fail("url", "has an unknown parameter (host, port and user are known)") end
  end
  if cfg.port and (cfg.port < 1 or cfg.port > 65535) then return nil, fail("url", "port must be 1 to 65535") end
  if not cfg.dbname then return nil, fail("url", "postgresql:// needs a database name (.../dbname)") end
  return cfg
end

local DRIVERS = { sqlite = { "luasql.sqlite3", "sqlite3", "lua-sql-sqlite3" },
                  postgresql = { "luasql.postgres", "postgres", "lua-sql-postgres" } }

function connect(cfg)
  local d = DRIVERS[cfg.kind]
  local ok, driver = pcall(require, d[1])
  if not ok then
    return nil, errors.new("transport", ("database: the %s driver %s is not installed (Debian: %s)"):format(
      cfg.kind, d[1], d[3]), { code = "db_driver" })
  end
  local env = driver[d[2]]()
  local conn, msg
  if cfg.kind == "sqlite" then
    conn, msg = env:connect(cfg.path)
  else
    -- no password argument: libpq takes it from PGPASSWORD or ~/.pgpass
    conn, msg = env:connect(cfg.dbname, cfg.user, nil, cfg.host, cfg.port and tostring(cfg.port) or nil)
  end
  if not conn then
    env:close()
    return nil, db_error("db_connect", msg)
  end
  local c = setmetatable({ env = env, conn = conn, pg = cfg.kind == "postgresql", kind = cfg.kind, cfg = cfg },
    Conn)
  local setup = c.pg and {
    "SET client_min_messages = warning",
    -- A commit need not wait for the disk: the log keeps commits in order, so a crash loses at
    -- most the last ones, never half of one, and a checkpoint never survives the orders before it.
    "SET synchronous_commit = off",
  } or {
    "PRAGMA busy_timeout = 30000",
    "PRAGMA journal_mode = WAL",
    -- WAL with synchronous = NORMAL: commits are atomic and in order; the last ones may be lost
    -- on a power cut (a rerun writes them again), never half of one.
    "PRAGMA synchronous = NORMAL",
  }
  for _, sql in ipairs(setup) do
    local r, err = c:exec(sql)
    if not r then
      c:close()
      return nil, err
    end
  end
  return c
end

local function migrate(c)
  return c:transaction(function()
    if c.pg then assert(c:exec("SELECT pg_advisory_xact_lock(74117205)")) end
    local ok, err = c:exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
      .. " applied_at BIGINT NOT NULL)")
    if not ok then return nil, err end
    local rows
    rows, err = c:rows("SELECT MAX(version) AS v FROM schema_version")
    if not rows then return nil, err end
    local have = rows[1] and rows[1].v or 0
    if have > M.SCHEMA_VERSION then
      return nil, errors.new("transport", ("database: schema version %d is newer than this crm's (%d):"
        .. " upgrade crm"):format(have, M.SCHEMA_VERSION), { code = "db_schema" })
    end
    for v = have + 1, M.SCHEMA_VERSION do
      for _, sql in ipairs(MIGRATIONS[v]) do
        ok, err = c:exec(sql)
        if not ok then return nil, err end
      end
      ok, err = c:exec(("INSERT INTO schema_version (version, applied_at) VALUES (%d, %s)"):format(v,
        number_sql(os.time())))
      if not ok then return nil, err end
    end
    return true
  end)
end

-- -------------------------------------------------------------------------
-- The sink
-- -------------------------------------------------------------------------

-- The restaurant's key: a GUID in lower case (GUIDs have no case: a backfill configured with
-- "6F1D..." and a webhook whose header says "6f1d..." are one restaurant), anything else as given.
local function restaurant_key(guid)
  if validate.is_uuid(guid) then return guid:lower() end
  return guid
end

--- A database sink: orders in, reports out (`db.open`).
-- @type Sink
local Sink = {}
Sink.__index = Sink

--- Opens (and migrates) a database.
-- The driver is loaded here, on first use. Migrations run in one transaction under a lock
-- (PostgreSQL's advisory lock, SQLite's write lock), so hosts opening one database at once
-- apply each once.
-- @tparam string url `sqlite:PATH` or `postgresql://user@host:port/dbname` (no password: use
-- `PGPASSWORD` or `~/.pgpass`; `?host=/run/postgresql` for a socket directory)
-- @tparam[opt] table opts
-- @tparam[opt] table opts.groups `{[restaurant_guid] = group_id}`: guests of the restaurants of
-- one group are one guest (keyed per group); others are keyed per restaurant
-- @tparam[opt="1"] string opts.country_code for national phone numbers
-- @treturn[1] Sink the sink
-- @return[2] `nil`
-- @treturn[2] Error `validation` (`field = "url"`, `"groups"`, `"country_code"`), or
-- `transport` with `code = "db_driver"` (the LuaSQL driver is not installed), `"db_connect"`,
-- `"db_query"` or `"db_schema"` (the database is newer than this crm)
function M.open(url, opts)
  local cfg, e = M.parse_url(url)
  if not cfg then return nil, e end
  e = validate.table(opts, "options")
  if e then return nil, e end
  opts = opts or {}
  e = validate.known_keys(opts, { groups = true, country_code = true })
    or validate.table(opts.groups, "groups")
    or phones.check_country_code(opts.country_code, "country_code")
  if e then return nil, e end
  for k, v in pairs(opts.groups or {}) do
    if type(k) ~= "string" or type(v) ~= "string" or v == "" then
      return nil, fail("groups", "must map restaurant GUIDs to non-empty group ids (strings)")
    end
  end
  local c, err = connect(cfg)
  if not c then return nil, err end
  local ok
  ok, err = migrate(c)
  if not ok then
    c:close()
    return nil, err
  end
  local groups = {}
  for k, v in pairs(opts.groups or {}) do groups[restaurant_key(k)] = v end
  return setmetatable({ c = c, db_kind = cfg.kind, groups = groups, country_code = opts.country_code or "1",
                        contexts = {}, known = {} }, Sink)
end

local function check_restaurant(guid)
  if type(guid) ~= "string" or guid == "" or #guid > 255 then
    return fail("restaurant_guid", "must be a non-empty string (the restaurant's GUID)")
  end
  return nil
end

local function closed_error()
  return errors.new("transport", "database: the sink is closed", { code = "closed" })
end

-- The start of every call about one restaurant: an open sink, a good GUID and no error in
-- `other` (a check of another argument, made by the caller) -> the GUID as stored (lower case)
-- | nil, err
local function restaurant_of(self, restaurant_guid, other)
  if not self.c then return nil, closed_error() end
  local e = check_restaurant(restaurant_guid) or other
  if e then return nil, e end
  return restaurant_key(restaurant_guid)
end

-- restaurant_of, then a connection (opened again if the server ended it)
local function connected(self, restaurant_guid, other)
  local key, err = restaurant_of(self, restaurant_guid, other)
  if not key then return nil, err end
  local ready, cerr = self.c:ensure()
  if not ready then return nil, cerr end
  return key
end

function Sink:scope(restaurant_guid)
  restaurant_guid = restaurant_key(restaurant_guid)
  return self.groups[restaurant_guid] or restaurant_guid
end

local function now_ms() return floor(os.time() * 1000) end

-- The restaurant's row, made once per sink.
local function ensure_restaurant(self, r)
  if self.known[r] then return true end
  local c = self.c
  local ok, err = c:exec(("INSERT INTO restaurants (guid, scope, updated_at) VALUES (%s, %s, %s)"
    .. " ON CONFLICT (guid) DO NOTHING"):format(c:lit(r), c:lit(self:scope(r)), number_sql(now_ms())))
  if not ok then return nil, err end
  self.known[r] = true
  return true
end

-- The context orders are mapped with: the one given (stored for later calls without one), else
-- the one stored for the restaurant, else an empty one (orders are kept, none counts).
local function context_for(self, r, ctx)
  local c = self.c
  if ctx ~= nil then
    if self.contexts[r] ~= ctx then
      local text, err = json.encode(ctx)
      if not text then return nil, err end
      local ok
      ok, err = c:exec(("UPDATE restaurants SET context = %s, updated_at = %s WHERE guid = %s"):format(
        c:lit(repair_utf8(text)), number_sql(now_ms()), c:lit(r)))
      if not ok then return nil, err end
      self.contexts[r] = ctx
    end
    return ctx
  end
  if self.contexts[r] then return self.contexts[r] end
  local rows, err = c:rows("SELECT context FROM restaurants WHERE guid = " .. c:lit(r))
  if not rows then return nil, err end
  local stored = rows[1] and rows[1].context and json.decode(rows[1].context)
  if type(stored) ~= "table" then stored = { dining_options = {}, employees = {}, items = {} } end
  self.contexts[r] = stored
  return stored
end

local function cents(v)
  if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then return 0 end
  return floor(v * 100 + 0.5)
end

-- INSERT INTO tbl (cols) VALUES (...), (...): one statement per table and order, added to `out`.
local function insert_rows(c, out, tbl, cols, rows)
  if #rows == 0 then return end
  local values = {}
  for i, row in ipairs(rows) do
    local lits = {}
    for j = 1, #cols do lits[j] = c:lit(row[j]) end
    values[i] = "(" .. concat(lits, ", ") .. ")"
  end
  out[#out + 1] = "INSERT INTO " .. tbl .. " (" .. concat(cols, ", ") .. ") VALUES " .. concat(values, ", ")
end

local OG_COLS = { "restaurant_guid", "order_guid", "scope", "guest_key", "first_name", "last_name", "email",
                  "phone", "order_date", "order_at", "dining_behavior", "server_guid", "server_name",
                  "check_count", "amount_cents", "total_cents", "tips_cents" }
local CHECK_COLS = { "restaurant_guid", "order_guid", "check_no", "guid", "scope", "guest_key", "display_number",
                     "amount_cents", "tax_cents", "total_cents", "tips_cents" }
local SEL_COLS = { "restaurant_guid", "order_guid", "check_no", "line_no", "scope", "guest_key", "item_key",
                   "item_guid", "name", "quantity", "price_cents" }
local PAY_COLS = { "restaurant_guid", "order_guid", "check_no", "line_no", "type", "amount_cents", "tip_cents" }
local ORDER_COLS = { "restaurant_guid", "guid", "scope", "modified_date", "modified_ms", "opened_date",
                     "closed_date", "business_date", "order_date", "order_at", "source", "dining_option_guid",
                     "dining_behavior", "server_guid", "voided", "counted", "reason", "revision", "written_at",
                     "doc" }
local CHILD_TABLES = { "selections", "payments", "checks", "order_guests" }

local function str(v) return type(v) == "string" and v or (type(v) == "number" and number_sql(v)) or nil end

-- The rows of one order: {order = {...}, guests = {...}, checks, selections, payments}, and the
-- guest keys it counts for.
local function order_rows(self, r, order, ctx, doc)
  local scope = self:scope(r)
  local contributions, reason = guests.extract(order, ctx, { country_code = self.country_code })
  local modified = guests.parse_time(order.modifiedDate)
  local rows = { guests = {}, checks = {}, selections = {}, payments = {}, keys = {} }
  local first = contributions[1]
  local dg = type(order.diningOption) == "table" and order.diningOption.guid or nil
  local option = type(dg) == "string" and ctx.dining_options[dg] or nil
  local sg = type(order.server) == "table" and order.server.guid or nil
  rows.order = { r, order.guid, scope, str(order.modifiedDate), modified and floor(modified * 1000 + 0.5),
    str(order.openedDate), str(order.closedDate), str(order.businessDate),
    str(order.openedDate or order.closedDate or order.businessDate),
    first and first.t or (guests.parse_time(order.openedDate) or guests.parse_time(order.closedDate) or 0),
    str(order.source), str(dg), option and str(option.behavior), str(sg),
    order.voided == true or order.deleted == true, #contributions > 0, reason, 1, now_ms(), doc }
  local check_no = 0
  for _, g in ipairs(contributions) do
    local fact, id = g.fact, g.identity
    rows.keys[#rows.keys + 1] = g.key
    rows.guests[#rows.guests + 1] = { r, order.guid, scope, g.key, id.firstName, id.lastName, id.email, id.phone,
      str(fact.openedDate or fact.closedDate or fact.businessDate), g.t, fact.diningOption.behavior,
      fact.server and fact.server.guid, fact.server and fact.server.name, #fact.checks,
      g.cents.amount, g.cents.total, g.cents.tips }
    for _, ch in ipairs(fact.checks) do
      check_no = check_no + 1
      local tips = 0
      for k, p in ipairs(ch.payments) do
        tips = tips + cents(p.tipAmount)
        rows.payments[#rows.payments + 1] = { r, order.guid, check_no, k, str(p.type), cents(p.amount),
                                              cents(p.tipAmount) }
      end
      rows.checks[#rows.checks + 1] = { r, order.guid, check_no, str(ch.guid), scope, g.key,
        str(ch.displayNumber), cents(ch.amount), cents(ch.taxAmount), cents(ch.totalAmount), tips }
      for k, s in ipairs(ch.selections) do
        local qty = type(s.quantity) == "number" and s.quantity or 1
        rows.selections[#rows.selections + 1] = { r, order.guid, check_no, k, scope, g.key,
          s.item or ("name:" .. tostring(s.name)), s.item, str(s.name), qty, cents(s.price) }
      end
    end
  end
  return rows
end

-- The names, emails and phones of an order's customers: an error while writing it never shows them.
local function order_pii(order)
  local out = {}
  for _, ch in ipairs(type(order.checks) == "table" and order.checks or {}) do
    local cu = type(ch) == "table" and ch.customer
    if type(cu) == "table" then
      for _, k in ipairs { "firstName", "lastName", "email", "phone" } do
        if type(cu[k]) == "string" then out[#out + 1] = cu[k] end
      end
    end
  end
  return out
end

-- A guest's row from their orders (statements added to `out`): the latest non-empty value of
-- each identity field, as a profile has it (orders by time, then GUID); no orders left -> no row.
-- The upsert comes first and takes the row's lock, so two writers of one guest take turns.
local function refresh_guest(c, out, scope, key, stamp)
  local s, k = c:lit(scope), c:lit(key)
  local where = " WHERE scope = " .. s .. " AND guest_key = " .. k
  out[#out + 1] = ("INSERT INTO guests (scope, guest_key, updated_at) VALUES (%s, %s, %s)"
    .. " ON CONFLICT (scope, guest_key) DO UPDATE SET updated_at = excluded.updated_at"):format(s, k, stamp)
  local sets = {}
  for i, f in ipairs { "first_name", "last_name", "email", "phone" } do
    sets[i] = f .. " = (SELECT og." .. f .. " FROM order_guests og WHERE og.scope = " .. s
      .. " AND og.guest_key = " .. k .. " AND og." .. f .. " IS NOT NULL"
      .. " ORDER BY og.order_at DESC, og.order_guid DESC, og.restaurant_guid DESC LIMIT 1)"
  end
  out[#out + 1] = "UPDATE guests SET " .. concat(sets, ", ") .. where
  out[#out + 1] = "DELETE FROM guests" .. where .. " AND NOT EXISTS (SELECT 1 FROM order_guests og"
    .. " WHERE og.scope = guests.scope AND og.guest_key = guests.guest_key)"
end

-- Writes one order in one transaction -> true (written) | false (stale or the same version) | nil, err
local function write_one(self, r, order, ctx)
  local c = self.c
  local text, jerr = json.encode(order)
  if not text then
    return nil, errors.new("validation", "order " .. tostring(order.guid) .. " cannot be stored as JSON: "
      .. tostring(jerr and jerr.message), { field = "orders" })
  end
  local rows = order_rows(self, r, order, ctx, repair_utf8(text))
  local modified = rows.order[5]
  local where = " WHERE restaurant_guid = " .. c:lit(r) .. " AND order_guid = " .. c:lit(order.guid)
  c.pii = order_pii(order)
  local res, err = c:transaction(function()
    local cur, e = c:rows("SELECT modified_ms, revision FROM orders WHERE restaurant_guid = " .. c:lit(r)
      .. " AND guid = " .. c:lit(order.guid) .. (c.pg and " FOR UPDATE" or ""))
    if not cur then return nil, e end
    local old = cur[1]
    -- the rule of Set:fold, with an equal modifiedDate ignored too: a rerun changes nothing
    if old and old.modified_ms and modified and modified <= old.modified_ms then return false end
    local keys, seen = {}, {}
    local function add_key(scope, key)
      local k = scope .. "\0" .. key
      if not seen[k] then
        seen[k] = true
        keys[#keys + 1] = { scope, key, k }
      end
    end
    local out = {}
    if old then
      local prev
      prev, e = c:rows("SELECT scope, guest_key FROM order_guests" .. where)
      if not prev then return nil, e end
      for _, p in ipairs(prev) do add_key(p.scope, p.guest_key) end
      for _, t in ipairs(CHILD_TABLES) do out[#out + 1] = "DELETE FROM " .. t .. where end
      rows.order[18] = old.revision + 1
      local sets = {}
      for i = 3, #ORDER_COLS do sets[#sets + 1] = ORDER_COLS[i] .. " = " .. c:lit(rows.order[i]) end
      out[#out + 1] = "UPDATE orders SET " .. concat(sets, ", ") .. " WHERE restaurant_guid = " .. c:lit(r)
        .. " AND guid = " .. c:lit(order.guid)
    else
      insert_rows(c, out, "orders", ORDER_COLS, { rows.order })
    end
    insert_rows(c, out, "order_guests", OG_COLS, rows.guests)
    insert_rows(c, out, "checks", CHECK_COLS, rows.checks)
    insert_rows(c, out, "selections", SEL_COLS, rows.selections)
    insert_rows(c, out, "payments", PAY_COLS, rows.payments)
    local scope = self:scope(r)
    for _, key in ipairs(rows.keys) do add_key(scope, key) end
    -- one order, lock order by key: two writers never wait on each other in a circle
    sort(keys, function(a, b) return a[3] < b[3] end)
    local stamp = number_sql(now_ms())
    for _, k in ipairs(keys) do refresh_guest(c, out, k[1], k[2], stamp) end
    local ok
    ok, e = c:exec_all(out)
    if not ok then return nil, e end
    return true
  end)
  c.pii = nil
  return res, err
end

-- Accepts an Order or an orders webhook event ({eventType, details = {order = Order}}).
local function unwrap(v)
  if type(v) == "table" and type(v.details) == "table" and type(v.details.order) == "table" then
    return v.details.order
  end
  return v
end

--- Writes orders, each in its own transaction (a kill never leaves half an order).
-- Idempotent by (restaurant, order GUID), the rule of `Set:fold`: a newer `modifiedDate`
-- replaces the order's rows (and its guests' shares), an older or equal one is ignored, so a
-- rerun, a resumed backfill or a webhook delivered twice changes nothing. An order without a
-- `modifiedDate` (or stored without one) replaces the stored version. Orders that do not count
-- (voided, not TAKE_OUT/DELIVERY, no Customer) are kept in `orders` with `counted = 0` and the
-- reason, and take back what an earlier version gave their guests.
-- @tparam string restaurant_guid the restaurant the orders belong to
-- @tparam {table,...} orders Toast Orders (or orders webhook events `{details = {order = Order}}`)
-- @tparam[opt] crm.toast.GuestContext ctx dining options, employees and menu items
-- (`client:get_guest_context()`); stored for the restaurant, so later calls may leave it out
-- @treturn[1] number how many orders were written (new or newer); the others were stale or the same
-- @return[2] `nil`
-- @treturn[2] Error `validation` (`field = "restaurant_guid"`, `"orders"`, `"orders[i].guid"`,
-- `"context..."`; nothing written), or `transport` (`code = "db_query"`, `"closed"`) with
-- `err.written`: orders written before the failure
function Sink:write_orders(restaurant_guid, orders, ctx)
  local rerr
  restaurant_guid, rerr = restaurant_of(self, restaurant_guid)
  if not restaurant_guid then return nil, rerr end
  if type(orders) ~= "table" then return nil, fail("orders", "must be an array of Orders") end
  local list = {}
  for i, v in ipairs(orders) do
    local o = unwrap(v)
    if type(o) ~= "table" then return nil, fail("orders[" .. i .. "]", "must be a table (an Order)") end
    if type(o.guid) ~= "string" or o.guid == "" or #o.guid > 255 then
      return nil, fail("orders[" .. i .. "].guid", "must be a non-empty string")
    end
    list[i] = o
  end
  -- backfill_restaurants hands its window info, with the context in guest_context when asked
  if type(ctx) == "table" and ctx.window ~= nil and ctx.dining_options == nil then ctx = ctx.guest_context end
  if ctx ~= nil then
    if type(ctx) ~= "table" then return nil, fail("context", "must be a table") end
    for _, k in ipairs { "dining_options", "employees", "items" } do
      if type(ctx[k]) ~= "table" then return nil, fail("context." .. k, "must be a table indexed by GUID") end
    end
  end
  local ok, err = self.c:ensure()
  if ok then ok, err = ensure_restaurant(self, restaurant_guid) end
  if ok then ctx, err = context_for(self, restaurant_guid, ctx) end
  if not ok or not ctx then
    if type(err) == "table" and err.kind == "transport" then err.written = 0 end
    return nil, err
  end
  local n = 0
  for _, o in ipairs(list) do
    local res, werr = write_one(self, restaurant_guid, o, ctx)
    if res == nil then
      werr.written = n
      return nil, werr
    end
    if res then n = n + 1 end
  end
  return n
end

--- The stored backfill checkpoint of a restaurant (`crm.toast.Checkpoint`, plain JSON).
-- @tparam string restaurant_guid
-- @treturn[1] ?table the checkpoint, or `nil` when none was saved
-- @return[2] `nil`
-- @treturn[2] Error `validation` or `transport`
function Sink:load_checkpoint(restaurant_guid)
  local rerr
  restaurant_guid, rerr = connected(self, restaurant_guid)
  if not restaurant_guid then return nil, rerr end
  local rows, err = self.c:rows("SELECT checkpoint FROM restaurants WHERE guid = " .. self.c:lit(restaurant_guid))
  if not rows then return nil, err end
  local text = rows[1] and rows[1].checkpoint
  if not text then return nil end
  local cp = json.decode(text)
  return type(cp) == "table" and cp or nil
end

--- Saves a restaurant's backfill checkpoint (after its window's orders were written).
-- @tparam string restaurant_guid
-- @tparam table checkpoint a `crm.toast.Checkpoint`
-- @treturn[1] boolean `true`
-- @return[2] `nil`
-- @treturn[2] Error `validation` or `transport`
function Sink:save_checkpoint(restaurant_guid, checkpoint)
  local rerr
  restaurant_guid, rerr = connected(self, restaurant_guid)
  if not restaurant_guid then return nil, rerr end
  if type(checkpoint) ~= "table" then return nil, fail("checkpoint", "must be a table (a Checkpoint)") end
  local text, err = json.encode(checkpoint)
  if not text then return nil, err end
  local c = self.c
  local ok
  ok, err = c:exec(("INSERT INTO restaurants (guid, scope, checkpoint, updated_at) VALUES (%s, %s, %s, %s)"
    .. " ON CONFLICT (guid) DO UPDATE SET checkpoint = excluded.checkpoint, updated_at = excluded.updated_at"):format(
    c:lit(restaurant_guid), c:lit(self:scope(restaurant_guid)), c:lit(repair_utf8(text)), number_sql(now_ms())))
  if not ok then return nil, err end
  self.known[restaurant_guid] = true
  return true
end

--- One stored order, as it was written (its JSON document decoded).
-- @tparam string restaurant_guid
-- @tparam string guid the order's GUID
-- @treturn[1] ?table the Order, or `nil` when it is not stored
-- @return[2] `nil`
-- @treturn[2] Error `validation`, `transport` or `decode`
function Sink:get_order(restaurant_guid, guid)
  local rerr
  restaurant_guid, rerr = connected(self, restaurant_guid,
    type(guid) ~= "string" and fail("guid", "must be a string (the order's GUID)") or nil)
  if not restaurant_guid then return nil, rerr end
  local c = self.c
  local rows, err = c:rows("SELECT doc FROM orders WHERE restaurant_guid = " .. c:lit(restaurant_guid)
    .. " AND guid = " .. c:lit(guid))
  if not rows then return nil, err end
  if not rows[1] then return nil end
  return json.decode(rows[1].doc)
end

--- The orders stored for a restaurant, without their documents.
-- @tparam string restaurant_guid
-- @treturn[1] {table,...} `{guid, modified_date, counted, reason, revision, guests}` by GUID;
-- `revision` is 1 for an order written once and grows by one each time a newer version replaced
-- it; `guests` is how many guests it counts for (0 when `counted` is false)
-- @return[2] `nil`
-- @treturn[2] Error `validation` or `transport`
function Sink:orders(restaurant_guid)
  local rerr
  restaurant_guid, rerr = connected(self, restaurant_guid)
  if not restaurant_guid then return nil, rerr end
  local rows, err = self.c:rows("SELECT o.guid, o.modified_date, o.counted, o.reason, o.revision,"
    .. " (SELECT COUNT(*) FROM order_guests og WHERE og.restaurant_guid = o.restaurant_guid"
    .. " AND og.order_guid = o.guid) AS guests FROM orders o WHERE o.restaurant_guid = "
    .. self.c:lit(restaurant_guid) .. " ORDER BY o.guid")
  if not rows then return nil, err end
  for _, row in ipairs(rows) do row.counted = row.counted == 1 end
  return rows
end

--- How many orders are stored for a restaurant (one `COUNT`, nothing read row by row).
-- @tparam string restaurant_guid
-- @treturn[1] number
-- @return[2] `nil`
-- @treturn[2] Error `validation` or `transport`
function Sink:order_count(restaurant_guid)
  local rerr
  restaurant_guid, rerr = connected(self, restaurant_guid)
  if not restaurant_guid then return nil, rerr end
  local rows, err = self.c:rows("SELECT COUNT(*) AS n FROM orders WHERE restaurant_guid = "
    .. self.c:lit(restaurant_guid))
  if not rows then return nil, err end
  return math.tointeger and math.tointeger(tonumber(rows[1].n)) or tonumber(rows[1].n)
end

--- Runs one report (`REPORTS`): its rows, as the view gives them.
-- @tparam string name `"guests"`, `"last_orders"`, `"lapsed"`, `"favourite_items"` or `"servers"`
-- @tparam[opt] table opts
-- @tparam[opt=90] number opts.days `lapsed`: no order in this many days
-- @tparam[opt] number opts.now `lapsed`: epoch seconds (default the current time)
-- @tparam[opt=10] number opts.limit `favourite_items`: items per guest
-- @treturn[1] {table,...} rows keyed by column name (see the README for the columns)
-- @return[2] `nil`
-- @treturn[2] Error `validation` (`field = "report"`, `"days"`, `"limit"`, `"now"`) or `transport`
function Sink:report(name, opts)
  if not self.c then return nil, closed_error() end
  local sql = type(name) == "string" and M.REPORTS[name]
  if not sql then
    return nil, fail("report", "must be one of guests, last_orders, lapsed, favourite_items, servers")
  end
  opts = opts or {}
  local e = validate.table(opts, "options")
    or validate.number(opts.days, "days", { min = 0 })
    or validate.number(opts.limit, "limit", { min = 1, integer = true })
    or validate.number(opts.now, "now", { min = 0 })
  if e then return nil, e end
  if name == "lapsed" then
    sql = sql:format(number_sql((opts.now or os.time()) - (opts.days or 90) * 86400))
  elseif name == "favourite_items" then
    sql = sql:format(number_sql(opts.limit or 10))
  end
  return self.c:rows(sql)
end

--- The database kind: `"sqlite"` or `"postgresql"`.
-- @treturn string
function Sink:kind() return self.db_kind end

--- Closes the connection. Safe to call more than once; a closed sink answers
-- `transport`/`"closed"`.
-- @treturn boolean `true`
function Sink:close()
  if self.c then
    self.c:close()
    self.c = nil
  end
  return true
end
Sink.__gc = Sink.close
Sink.__close = Sink.close

--- @type end

return M
