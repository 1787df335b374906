rockspec_format = "3.0"
package = "crm"
version = "0.2.0-1"
-- crm has no published release archive yet, so there is no URL to fetch: `make dist` writes
-- crm-0.2.0.tar.gz (the checkout's files under crm-0.2.0/) and zips it with this file into
-- build/dist/crm-0.2.0-1.src.rock, which `luarocks build --deps-mode=none` installs offline.
-- Once a release archive is published, its URL (and md5) replace the bare name below, and
-- `luarocks pack` / `luarocks install` work from it too. The version is lua/crm/version.lua's
-- (make version-check holds this file's name and version field to it).
source = {
  url = "crm-0.2.0.tar.gz",
  dir = "crm-0.2.0",
}
description = {
  summary = "Toast CRM v1 and TableCheck CRM v1 clients: a libcurl C core with Lua flows",
  detailed = [[
    crm scripts the Toast CRM v1 and TableCheck CRM v1 APIs from Lua 5.4 and from LuaJIT 2.1
    (OpenResty, lua-nginx-module): customers, search, credit, merges and image uploads, with
    retries, paging iterators and one structured error convention (res, err).
    Needs libcurl >= 7.85.0 (CURLOPT_PROTOCOLS_STR) with its headers, and libuuid. A rock built
    for Lua 5.4 runs only under Lua 5.4; for LuaJIT and OpenResty install into a 5.1 tree
    (luarocks --lua-version 5.1, against LuaJIT's headers).
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
  -- libcurl >= 7.85.0: luarocks cannot test a library's version, so src/core.c stops the build
  -- with an #error when curl.h is older. Only the library is probed: Debian keeps curl.h under
  -- a multiarch include dir that the compiler searches but luarocks does not.
  CURL = { library = "curl" },
  UUID = { header = "uuid/uuid.h", library = "uuid" },
}
build = {
  -- The project's Makefile, so the rock gets exactly make's flags: -std=c11 -Wall -Wextra
  -- -Werror -fPIC, -DCRM_VERSION from lua/crm/version.lua, -shared -Wl,-z,nodelete.
  -- `make all` builds build/rock/crm/core.so; `make rock-install` copies it and every module
  -- under lua/ into the rock.
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
