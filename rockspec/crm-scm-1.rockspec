rockspec_format = "3.0"
package = "crm"
version = "scm-1"
-- The work tree, for developers: `luarocks make rockspec/crm-scm-1.rockspec` in a checkout builds
-- and installs what is on disk (luarocks make fetches nothing). crm has no public repository
-- yet, so nothing here names one; releases are rockspec/crm-<version>-1.rockspec, packed by
-- `make dist`. The C core and crm._VERSION still report lua/crm/version.lua's version.
source = {
  url = "crm-scm.tar.gz",
  dir = "crm-scm",
}
description = {
  summary = "Toast CRM v1 and TableCheck CRM v1 clients: a libcurl C core with Lua flows",
  detailed = [[
    crm scripts the Toast CRM v1 and TableCheck CRM v1 APIs from Lua 5.4 and from LuaJIT 2.1
    (OpenResty, lua-nginx-module): customers, search, credit, merges and image uploads, with
    retries, paging iterators and one structured error convention (res, err).
    Needs libcurl >= 7.85.0 (CURLOPT_PROTOCOLS_STR) with its headers, and libuuid.
    Guest history in a database (crm.toast.db) needs LuaSQL's drivers, which rockspecs cannot
    list as optional: luasql-sqlite3 for SQLite, luasql-postgres for PostgreSQL (Debian:
    lua-sql-sqlite3, lua-sql-postgres); they are loaded only when a database is opened.
  ]],
  license = "MIT",
}
supported_platforms = { "linux" }
dependencies = {
  "lua >= 5.1",
  "lua-cjson >= 2.1.0",
  "argparse >= 0.7.0",  -- bin/crm, the command line (Debian: lua-argparse)
}
external_dependencies = {
  -- libcurl >= 7.85.0 (src/core.c stops the build with an #error when curl.h is older). Only
  -- the library is probed: Debian keeps curl.h under a multiarch include dir.
  CURL = { library = "curl" },
  UUID = { header = "uuid/uuid.h", library = "uuid" },
}
build = {
  -- The same build as rockspec/crm-<version>-1.rockspec: the project's Makefile and its flags.
  type = "make",
  build_target = "all",
  build_variables = {
    CC = "$(CC)",
    CFLAGS = "$(CFLAGS)",
    LUA_INC = "-I$(LUA_INCDIR)",
    EXTRA_INC = "-I$(CURL_INCDIR) -I$(UUID_INCDIR)",
    EXTRA_LIBDIRS = "-L$(CURL_LIBDIR) -L$(UUID_LIBDIR)",
    BUILD = "build/rock",
  },
  install_target = "rock-install",
  -- The command line; luarocks puts a wrapper in the tree's bin/ that finds the tree's modules.
  -- `make rock-install` also copies the simulator (spec/sim) into the Lua tree as crm/sim/, so
  -- `crm sim start` works from an installed rock.
  install = { bin = { crm = "bin/crm" } },
  install_variables = {
    BUILD = "build/rock",
    INST_LUADIR = "$(LUADIR)",
    INST_LIBDIR = "$(LIBDIR)",
  },
}
