package = "crm"
version = "scm-1"
source = {
  url = "git+https://example.invalid/crm.git",
}
description = {
  summary = "Toast CRM v1 and TableCheck CRM v1 clients: a libcurl C core with Lua flows",
  detailed = [[
    crm scripts the Toast CRM v1 and TableCheck CRM v1 APIs from Lua 5.4 and OpenResty:
    customers, search, credit, merges and image uploads, with retries, paging iterators and
    one structured error convention (res, err).
  ]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.1",
  "lua-cjson >= 2.1.0",
}
external_dependencies = {
  -- Only the library is probed: Debian keeps curl.h under a multiarch include dir that the
  -- compiler searches but luarocks does not.
  CURL = { library = "curl" },
  UUID = { header = "uuid/uuid.h", library = "uuid" },
}
build = {
  type = "builtin",
  modules = {
    ["crm.core"] = {
      sources = { "src/core.c", "src/wire.c" },
      libraries = { "curl", "uuid" },
      incdirs = { "src", "$(CURL_INCDIR)", "$(UUID_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)", "$(UUID_LIBDIR)" },
    },
    ["crm"] = "lua/crm.lua",
    ["crm.batch"] = "lua/crm/batch.lua",
    ["crm.client"] = "lua/crm/client.lua",
    ["crm.error"] = "lua/crm/error.lua",
    ["crm.http"] = "lua/crm/http.lua",
    ["crm.pager"] = "lua/crm/pager.lua",
    ["crm.platform"] = "lua/crm/platform.lua",
    ["crm.ratelimit"] = "lua/crm/ratelimit.lua",
    ["crm.retry"] = "lua/crm/retry.lua",
    ["crm.tablecheck"] = "lua/crm/tablecheck.lua",
    ["crm.tablecheck.contacts"] = "lua/crm/tablecheck/contacts.lua",
    ["crm.tablecheck.images"] = "lua/crm/tablecheck/images.lua",
    ["crm.tablecheck.merge"] = "lua/crm/tablecheck/merge.lua",
    ["crm.tablecheck.schema"] = "lua/crm/tablecheck/schema.lua",
    ["crm.toast"] = "lua/crm/toast.lua",
    ["crm.toast.guests"] = "lua/crm/toast/guests.lua",
    ["crm.toast.orders"] = "lua/crm/toast/orders.lua",
    ["crm.transport"] = "lua/crm/transport.lua",
    ["crm.transport.ngx"] = "lua/crm/transport/ngx.lua",
    ["crm.validate"] = "lua/crm/validate.lua",
  },
}
