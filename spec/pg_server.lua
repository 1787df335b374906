-- A real PostgreSQL server for the database specs: initdb and postgres (Debian's, in
-- /usr/lib/postgresql/VERSION/bin, not on PATH) in a temporary directory, on a loopback port,
-- started from the spec's setup and stopped by its pid in teardown. Both refuse to run as root,
-- so as root they run as the postgres user (runuser) on a directory that user owns.
local core = require "crm.core"
local H = require "helper"

local P = {}

local function find_bin()
  local env = os.getenv("PG_BIN")
  if env and H.exists(env .. "/postgres") then return env end
  for _, v in ipairs { "15", "16", "17", "14", "13" } do
    local dir = "/usr/lib/postgresql/" .. v .. "/bin"
    if H.exists(dir .. "/postgres") and H.exists(dir .. "/initdb") then return dir end
  end
  return nil
end

P.BIN = find_bin()

-- why_not() -> nil when a server can be started, else the reason (the specs skip with it). Only a
-- missing server binary skips: without the driver (lua-sql-postgres) the specs fail, saying so.
function P.why_not()
  if not P.BIN then
    return "the PostgreSQL server is not installed (Debian: postgresql; /usr/lib/postgresql/*/bin)"
  end
  return nil
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- start(port) -> server {port, dir, url(dbname), create(dbname), stop()}
function P.start(port)
  local dir = ("%s/crm-pg-%d"):format(os.getenv("TMPDIR") or "/tmp", port)
  local as_root = H.sh("test $(id -u) = 0")
  local run = as_root and "runuser -u postgres -- " or ""
  -- a server left behind by a killed run on this port is stopped first
  if H.exists(dir .. "/data/postmaster.pid") then
    local pid = H.slurp(dir .. "/data/postmaster.pid"):match("^(%d+)")
    if pid then H.sh("kill -INT " .. pid) end
    for _ = 1, 50 do
      if not H.exists(dir .. "/data/postmaster.pid") then break end
      core.sleep(0.1)
    end
  end
  H.sh("rm -rf " .. q(dir))
  assert(H.sh("mkdir -p " .. q(dir) .. (as_root and (" && chown postgres " .. q(dir)) or "")))
  assert(H.sh(("%s%s/initdb -D %s/data -A trust -U postgres -E UTF8 --no-sync > %s/initdb.log 2>&1"):format(
    run, P.BIN, q(dir), q(dir))), "initdb failed (see " .. dir .. "/initdb.log)")
  -- Trust for the postgres user (the specs' own connections), passwords for every other role on
  -- TCP, so a spec can prove where a password comes from.
  H.spit(dir .. "/data/pg_hba.conf", "local all all trust\nhost all postgres 127.0.0.1/32 trust\n"
    .. "host all all 127.0.0.1/32 scram-sha-256\n")
  -- -F: no fsync (a test server); -k: the socket in our directory, not /var/run/postgresql
  assert(H.sh(("%s%s/postgres -D %s/data -h 127.0.0.1 -p %d -k %s -F > %s/server.log 2>&1 &"):format(
    run, P.BIN, q(dir), port, q(dir), q(dir))))
  local s = { port = port, dir = dir }
  function s.url(dbname) return ("postgresql://postgres@127.0.0.1:%d/%s"):format(port, dbname or "postgres") end
  local luasql = require "luasql.postgres"
  local env = luasql.postgres()
  local conn
  for _ = 1, 100 do
    conn = env:connect("postgres", "postgres", nil, "127.0.0.1", tostring(port))
    if conn then break end
    core.sleep(0.1)
  end
  assert(conn, "postgres did not start on port " .. port .. " (see " .. dir .. "/server.log)")
  conn:execute("SET client_min_messages = warning")
  local n = 0
  -- create([name]) -> the URL of a new, empty database
  function s.create(name)
    n = n + 1
    name = name or ("crm_spec_" .. n)
    assert(conn:execute("DROP DATABASE IF EXISTS " .. name))
    assert(conn:execute("CREATE DATABASE " .. name))
    return s.url(name)
  end
  -- admin(sql): one statement as the postgres user
  function s.admin(sql) assert(conn:execute(sql)) end
  -- value(sql) -> the first column of the first row of one query as the postgres user
  function s.value(sql)
    local cur = assert(conn:execute(sql))
    local v = cur:fetch()
    cur:close()
    return v
  end
  function s.stop()
    if conn then
      conn:close()
      env:close()
      conn = nil
    end
    local pidfile = dir .. "/data/postmaster.pid"
    local pid = H.exists(pidfile) and H.slurp(pidfile):match("^(%d+)")
    if pid then
      H.sh("kill -INT " .. pid)
      for _ = 1, 100 do
        if not H.sh("kill -0 " .. pid) then break end
        core.sleep(0.1)
      end
    end
    H.sh("rm -rf " .. q(dir))
  end
  return s
end

return P
