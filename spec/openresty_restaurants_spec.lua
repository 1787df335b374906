-- Many restaurants inside nginx: a client per worker (module-level) over shared_dict "crm", each
-- request a light-thread batch across restaurant views. Two workers, several restaurants: one
-- login for all of them, and a restaurant the partner is not connected to fails alone, named.
local core = require "crm.core"
local cjson = require "cjson"
local H = require "helper"
local N = require "openresty_nginx"

if not N.available then
  describe("OpenResty restaurants", function()
    pending("nginx with lua-nginx-module is not installed (" .. N.NGINX .. ")")
  end)
  return
end

local UNKNOWN = "11111111-2222-4333-8444-555555555555"

describe("restaurant views inside nginx (2 workers, shared_dict)", function()
  it("share one login across workers and restaurants; an unknown restaurant fails alone, named", function()
    H.reset()
    H.config { toast_restaurants = 6 }
    local guids = {}
    for i, r in ipairs(H.control("GET", "/__sim/toast/restaurants").restaurants) do guids[i] = r.guid end
    local ng = N.start(H.port + 600, { workers = 2, reuseport = true })
    local url = ng.test .. "/t/restaurants?guids=" .. table.concat(guids, ",") .. "," .. UNKNOWN
    local m = assert(core.multi { size = 12, timeout = 30 })
    for i = 1, 12 do assert(m:submit("GET", url .. "&gen=" .. i, {})) end
    local done, t0 = {}, core.now()
    while #done < 12 and core.now() - t0 < 30 do
      for _, d in ipairs(m:wait(1)) do done[#done + 1] = d end
    end
    m:close()
    ng.stop()
    assert.equal(12, #done)
    for _, d in ipairs(done) do
      assert.equal(200, d.status, d.body)
      local r = cjson.decode(d.body)
      assert.equal(7, #r.results, d.body)
      for i = 1, 6 do assert.is_true(r.results[i].ok, d.body) end
      assert.is_false(r.results[7].ok)
      assert.equal(403, r.results[7].err.status)
      assert.equal(UNKNOWN, r.results[7].restaurant_guid)
    end
    -- twelve clients (one per request generation), two workers, seven restaurants: one login
    assert.equal(1, H.stats().logins)
  end)
end)
