-- crm.json: decode then encode gives the text back, [] as [] and {} as {}, over every answer
-- shape the simulator serves (raw bodies through the C core, no client in between), and the
-- objects the clients return re-encode faithfully.
local H = require "helper"
local core = require "crm.core"
local cjson = require "cjson"
local crm = require "crm"
local json = crm.json

---------------------------------------------------------------------------
-- A reference reading of JSON, independent of cjson and crm: arrays and objects stay apart, so
-- canonical(text) is the same for two texts exactly when they mean the same JSON.
---------------------------------------------------------------------------
local canonical
do
  local function skip(s, i) return (s:find("[^ \t\r\n]", i)) or #s + 1 end
  local ESC = { b = "\b", f = "\f", n = "\n", r = "\r", t = "\t", ['"'] = '"', ["\\"] = "\\", ["/"] = "/" }
  local function str(s, i) -- s:sub(i, i) == '"'
    local out, j = {}, i + 1
    while true do
      local c = s:sub(j, j)
      assert(c ~= "", "unterminated string")
      if c == '"' then return table.concat(out), j + 1 end
      if c == "\\" then
        local e = s:sub(j + 1, j + 1)
        if e == "u" then
          out[#out + 1] = "\\u" .. s:sub(j + 2, j + 5):lower()
          j = j + 6
        else
          out[#out + 1] = assert(ESC[e], "bad escape")
          j = j + 2
        end
      else
        out[#out + 1] = c
        j = j + 1
      end
    end
  end
  local value
  function value(s, i)
    i = skip(s, i)
    local c = s:sub(i, i)
    if c == "{" then
      local parts = {}
      i = skip(s, i + 1)
      if s:sub(i, i) == "}" then return "{}", i + 1 end
      while true do
        local k, v
        k, i = str(s, skip(s, i))
        i = skip(s, i)
        assert(s:sub(i, i) == ":", "colon expected")
        v, i = value(s, i + 1)
        parts[#parts + 1] = string.format("%q", k) .. ":" .. v
        i = skip(s, i)
        local d = s:sub(i, i)
        i = i + 1
        if d == "}" then break end
        assert(d == ",", "comma expected")
      end
      table.sort(parts)
      return "{" .. table.concat(parts, ",") .. "}", i
    elseif c == "[" then
      local parts = {}
      i = skip(s, i + 1)
      if s:sub(i, i) == "]" then return "[]", i + 1 end
      while true do
        local v
        v, i = value(s, i)
        parts[#parts + 1] = v
        i = skip(s, i)
        local d = s:sub(i, i)
        i = i + 1
        if d == "]" then break end
        assert(d == ",", "comma expected")
      end
      return "[" .. table.concat(parts, ",") .. "]", i
    elseif c == '"' then
      local v
      v, i = str(s, i)
      return string.format("%q", v), i
    end
    local lit = s:match("^[%w%.%+%-]+", i)
    assert(lit, "value expected at " .. i)
    local n = tonumber(lit)
    if n then return string.format("%.14g", n), i + #lit end
    assert(lit == "true" or lit == "false" or lit == "null", "bad literal " .. lit)
    return lit, i + #lit
  end
  function canonical(s)
    local v, i = value(s, 1)
    assert(skip(s, i) == #s + 1, "trailing text")
    return v
  end
end

-- Count of empty arrays and empty objects written in a text (outside strings: the reference
-- reading above produces them only from structure).
local function empties(s)
  local c = canonical(s)
  local _, a = c:gsub("%[%]", "")
  local _, o = c:gsub("{}", "")
  return a, o
end

-- The canonical text with every null member of an object left out (what default decode drops).
local function without_object_nulls(s)
  local v = canonical(s)
  local prev
  repeat
    prev = v
    v = v:gsub('"[^"]*":null,', ""):gsub(',"[^"]*":null}', "}"):gsub('{"[^"]*":null}', "{}")
  until v == prev
  return v
end

-- The round trip for one raw answer, in both null modes, plus the cjson deep comparison.
local function round_trips(name, raw)
  local exact = assert(json.encode(assert(json.decode(raw, { keep_nulls = true }))))
  assert.same(cjson.decode(raw), cjson.decode(exact), name)
  assert.equal(canonical(raw), canonical(exact), name)
  local ra, ro = empties(raw)
  local ea, eo = empties(exact)
  assert.equal(ra, ea, name .. ": every [] stays []")
  assert.equal(ro, eo, name .. ": every {} stays {}")
  -- default: nulls in objects are dropped (documented), everything else is kept
  local default = assert(json.encode(assert(json.decode(raw))))
  assert.equal(without_object_nulls(raw), canonical(default), name .. " (nulls dropped)")
end

---------------------------------------------------------------------------
-- raw answers from the simulator, through the C core
---------------------------------------------------------------------------
local http = assert(core.new { timeout = 5 })

local function raw_request(method, url, headers, body, want)
  local status, _, raw = http:request(method, url, headers, body and assert(json.encode(body)) or nil)
  assert(status, "simulator unreachable")
  assert(status == (want or 200), method .. " " .. url .. " answered " .. tostring(status) .. ": " .. raw)
  return raw
end

local toast_headers = H.toast_headers

local TC_HEADERS = { "Authorization: " .. H.tablecheck_key, "Content-Type: application/json" }
local function tc(method, path, body, want)
  return raw_request(method, H.tablecheck_url .. path, TC_HEADERS, body, want)
end

-- Calls a client method under its new name or its old one (a rename is under way).
local function call(client, names, ...)
  for _, n in ipairs(names) do
    if client[n] then return client[n](client, ...) end
  end
  error("no method " .. table.concat(names, "/"))
end

describe("crm.json", function()
  before_each(function() H.reset() end)

  describe("on its own", function()
    it("gives [] and {} back as they were, nested too", function()
      for _, text in ipairs {
        "[]", "{}", '{"a":[],"b":{}}', '[[],{},[[]],[{}],{"x":[]}]', '{"a":{"b":{"c":[]}},"d":[{"e":{}}]}',
        '{"s":"a [] b {} c","t":[]}', '{"s":"[]","t":{}}', '[true]', '{"f":[true],"g":[]}', '[ ]',
        '{ "a" : [ ] , "b" : { } }', '[[true],[]]', '"[]"', '{"a":"\\"[]\\"","b":[]}', "[1,[2,[3,[]]]]",
        '{"a":[null],"b":[null,[]],"c":null}', '[false,[],{}]',
      } do
        round_trips(text, text)
      end
    end)

    it("marks every decoded array with crm.json.array_mt, and no object", function()
      local v = assert(json.decode('{"a":[],"b":{},"c":[1,{"d":[]}],"e":[[]]}'))
      assert.equal(json.array_mt, getmetatable(v.a))
      assert.equal(json.array_mt, getmetatable(v.c))
      assert.equal(json.array_mt, getmetatable(v.c[2].d))
      assert.equal(json.array_mt, getmetatable(v.e))
      assert.equal(json.array_mt, getmetatable(v.e[1]))
      assert.is_nil(getmetatable(v))
      assert.is_nil(getmetatable(v.b))
      assert.is_nil(getmetatable(v.c[2]))
      assert.is_true(json.is_array(v.a))
      assert.is_false(json.is_array(v.b))
      assert.is_true(json.is_array(json.empty_array))
    end)

    it("leaves decoded arrays plain: #, [1], next and ipairs as without the marker", function()
      local v = assert(json.decode('{"empty":[],"three":[1,null,3]}'))
      assert.equal(0, #v.empty)
      assert.is_nil(v.empty[1])
      assert.is_nil(next(v.empty))
      assert.equal(3, #v.three)
      assert.equal(json.null, v.three[2])
      local n = 0
      for _ in ipairs(v.three) do n = n + 1 end
      assert.equal(3, n)
      assert.is_nil(rawget(json.array_mt, "__index"))
      assert.is_nil(rawget(json.array_mt, "__len"))
      assert.is_nil(rawget(json.array_mt, "__newindex"))
      v.empty[1] = "x" -- filled in, it encodes as any array
      assert.equal('["x"]', json.encode(v.empty))
    end)

    it("drops null in objects, keeps it in arrays; keep_nulls keeps both", function()
      local text = '{"a":null,"b":[null,1],"c":{"d":null}}'
      local v = assert(json.decode(text))
      assert.is_nil(v.a)
      assert.equal(json.null, v.b[1])
      assert.is_nil(next(v.c))
      -- lossy by design: {"d":null} came back as {}
      assert.equal(canonical('{"b":[null,1],"c":{}}'), canonical(assert(json.encode(v))))
      local kept = assert(json.decode(text, { keep_nulls = true }))
      assert.equal(json.null, kept.a)
      assert.equal(canonical(text), canonical(json.encode(kept)))
      assert.equal(crm.null, json.null)
    end)

    it("encodes array_mt tables, array() and empty_array as [], plain empty tables as {}", function()
      assert.equal(canonical('{"a":[],"b":{},"c":[],"d":[]}'), canonical(assert(
        json.encode { a = json.array(), b = {}, c = json.empty_array, d = setmetatable({}, json.array_mt) })))
      local shared = json.array()
      local body = { x = { shared }, y = { shared } } -- one table in two places
      assert.equal(canonical('{"x":[[]],"y":[[]]}'), canonical(assert(json.encode(body))))
      assert.is_nil(next(shared))
    end)

    it("does not change the caller's tables", function()
      local v = assert(json.decode('{"tags":[],"o":{"list":[]}}'))
      local tags, list = v.tags, v.o.list
      assert(json.encode(v))
      assert.equal(tags, v.tags)
      assert.equal(list, v.o.list)
      assert.is_nil(next(v.tags))
    end)

    it("keeps the refusals: NaN, Infinity, hex, 1e400 in, inexact integers out", function()
      for _, text in ipairs { '{"a":NaN}', '{"a":Infinity}', '[-Infinity]', '{"a":0x10}', '{"a":1e400}',
                              '[[],1e400]', '{"a":', "", "[]]" } do
        local v, err = json.decode(text)
        assert.is_nil(v, text)
        assert.equal("decode", err.kind)
      end
      local s, err = json.encode { n = 2 ^ 53 }
      assert.is_nil(s)
      assert.equal("validation", err.kind)
      assert.is_nil((json.encode { n = 0 / 0 }))
      assert.is_nil((json.encode { f = print }))
      assert.equal('{"a":0.3}', json.encode { a = 0.1 + 0.2 })
    end)

    it("reads deep nesting up to cjson's limit", function()
      local text = string.rep('{"a":[', 400) .. "[]" .. string.rep("]}", 400)
      assert.equal(text, json.encode(assert(json.decode(text))))
    end)
  end)

  describe("decoding (src/jdec.c)", function()
    local is54 = math.type ~= nil

    it("gives integers under Lua 5.4 for numbers without fraction or exponent that fit 64 bits", function()
      local v = assert(json.decode(
        '{"total_results":3,"page":0,"neg":-7,"max":9223372036854775807,"min":-9223372036854775808,'
        .. '"big":9223372036854775808,"frac":2.5,"point":2.0,"exp":1e2,"zero":-0,'
        .. '"huge":1' .. string.rep("0", 25) .. '}'))
      assert.equal(3, v.total_results)
      if is54 then
        for _, k in ipairs { "total_results", "page", "neg", "max", "min" } do
          assert.equal("integer", math.type(v[k]), k)
        end
        assert.equal(math.maxinteger, v.max)
        assert.equal(math.mininteger, v.min)
        assert.equal("0", tostring(v.page))
        for _, k in ipairs { "big", "frac", "point", "exp", "zero", "huge" } do
          assert.equal("float", math.type(v[k]), k)
        end
      end
      assert.equal(2 ^ 63, v.big) -- past 2^63: the nearest double, no error
      assert.equal(1e25, v.huge)
      assert.equal(2.5, v.frac)
      assert.equal(100, v.exp)
      assert.equal(-math.huge, 1 / v.zero) -- -0 keeps its sign
      -- past 2^53 a double rounds (LuaJIT, and floats under 5.4); an integer keeps every digit
      local w = assert(json.decode("[9007199254740993, 9007199254740993.0]"))
      assert.equal(9007199254740992, w[2])
      if is54 then assert.equal("9007199254740993", tostring(w[1])) end
    end)

    it("gives back the digits of every integer encode accepts, 10^14 and more too", function()
      for _, text in ipairs { "[0]", "[-1]", "[99999999999999]", "[100000000000000]", "[-123456789012340]",
                              "[1000000000000000000]", '{"n":42000000000000}' } do
        assert.equal(text, json.encode(assert(json.decode(text))))
      end
      -- more than 14 significant digits are refused as before (under LuaJIT they are doubles,
      -- and the APIs may read them as doubles too)
      local s, err = json.encode(assert(json.decode("[12345678901234567]")))
      assert.is_nil(s)
      assert.matches("the number 1234567890123456%d cannot be sent exactly", err.message)
      assert.is_nil((json.encode { "\0crm:int5\0" }))
    end)

    it("says where the text goes wrong: err.position, the 1-based byte offset", function()
      local cases = {
        { '{"a": [1, 2,, 3]}', 13 }, { "[1] x", 5 }, { "", 1 }, { '{"a":', 6 }, { '"open', 6 },
        { "[01]", 2 }, { '{"a":1e400}', 6 }, { '["\\x"]', 3 }, { "[1]\0", 4 }, { "  nul", 3 },
      }
      for _, c in ipairs(cases) do
        local v, err = json.decode(c[1])
        assert.is_nil(v, c[1])
        assert.equal("decode", err.kind)
        assert.equal(c[2], err.position, c[1])
        local v2, msg, pos = core.decode(c[1])
        assert.is_nil(v2)
        assert.is_string(msg)
        assert.equal(c[2], pos, c[1])
      end
      local _, err = json.decode('{"a":1e400}')
      assert.equal("the text has a number out of range (beyond a double)", err.message)
      -- not JSON at all wins over a number out of range before it, as with cjson
      local _, msg = core.decode('[1e400, ]')
      assert.equal("response body is not valid JSON", msg)
    end)

    it("refuses nesting beyond 1000 levels as an error, without recursion (100,000 deep)", function()
      local ok = assert(json.decode(string.rep("[", 1000) .. string.rep("]", 1000)))
      assert.equal(json.array_mt, getmetatable(ok))
      local cases = { -- the text, and where the 1001st level opens
        { string.rep("[", 1001) .. string.rep("]", 1001), 1001 }, { string.rep("[", 100000), 1001 },
        { string.rep('{"a":', 100000) .. "1" .. string.rep("}", 100000), 5001 },
        { string.rep("[", 100000) .. string.rep("]", 100000), 1001 },
      }
      for _, c in ipairs(cases) do
        local v, err = json.decode(c[1])
        assert.is_nil(v)
        assert.equal("decode", err.kind)
        assert.equal(c[2], err.position)
      end
    end)

    it("reads 1000 levels that are each wide (members wait on the stack within LuaJIT's bound)", function()
      local members = {}
      for i = 1, 125 do members[i] = '"k' .. i .. '":' .. i .. "," end
      local open, close = {}, {}
      for d = 1, 1000 do
        open[d] = d % 2 == 1 and "[" .. string.rep("1,", 250) or "{" .. table.concat(members) .. '"z":'
        close[1001 - d] = d % 2 == 1 and "]" or "}"
      end
      local v = assert(json.decode(table.concat(open) .. "0" .. table.concat(close)))
      local levels = 0
      while type(v) == "table" do
        levels = levels + 1
        if levels % 2 == 1 then
          assert.equal(json.array_mt, getmetatable(v))
          assert.equal(251, #v)
          v = v[251]
        else
          assert.equal(125, v.k125)
          v = v.z
        end
      end
      assert.equal(1000, levels)
      assert.equal(0, v)
      local big = assert(json.decode("[" .. string.rep("7,", 100000) .. "8]"))
      assert.equal(100001, #big)
      assert.equal(8, big[100001])
    end)

    it("reads escaped and repeated keys, NUL and surrogate pairs as before; [] apart from {}", function()
      local v = assert(json.decode('{"a\\u0062":1,"k":1,"k":2,"n":[1],"n":{"x":true},"s":"a\\u0000b",'
        .. '"e":"\\ud83d\\ude00","arr":[],"obj":{},"d":1,"d":null}'))
      assert.equal(1, v.ab)
      assert.equal(2, v.k) -- the last wins
      assert.is_nil(getmetatable(v.n))
      assert.is_true(v.n.x)
      assert.equal("a\0b", v.s)
      assert.equal("\240\159\152\128", v.e)
      assert.equal(json.array_mt, getmetatable(v.arr))
      assert.is_nil(next(v.arr))
      assert.is_nil(getmetatable(v.obj))
      assert.is_nil(v.d) -- a null after a value takes the key away, as cjson plus the walk did
      assert.equal("[[],{}]", json.encode { v.arr, v.obj })
      for _, bad in ipairs { '"\\ud83d"', '"\\ude00"', '"\\ud83dx"', '"\\uD800\\u0041"', '"\\u12"', '"\\x"' } do
        assert.is_nil(json.decode(bad), bad)
      end
      -- bytes of a string are kept as they are (no UTF-8 check), as lua-cjson kept them
      assert.equal("\255", json.decode('"\255"'))
    end)
  end)

  describe("over every answer shape of the simulator", function()
    it("Toast: customers, search (and the empty 204), credit summary and transactions", function()
      local hd = toast_headers()
      local base = H.base_url .. "/crm/v1"
      local c = H.customer { guid = core.guid(), phone = "+14155550100" }
      local bodies = {}
      bodies.create = raw_request("POST", base .. "/customers", hd, c)
      local no_phone = H.customer { guid = core.guid() } -- phone: null
      bodies.create_null_phone = raw_request("POST", base .. "/customers", hd, no_phone)
      bodies.get = raw_request("GET", base .. "/customers/" .. c.guid, hd)
      bodies.search = raw_request("POST", base .. "/customers/search", hd, { query = { email = c.email } })
      local none = raw_request("POST", base .. "/customers/search", hd,
        { query = { email = "nobody@example.org" } }, 204)
      assert.equal("", none)
      bodies.summary_empty = raw_request("GET", base .. "/customers/" .. c.guid .. "/creditSummary", hd)
      bodies.add_credit = raw_request("POST", base .. "/customers/" .. c.guid .. "/creditTransactions", hd,
        { guid = core.guid(), amount = 12.5, transactionType = "ADD_VALUE",
          localCreatedDate = "2024-06-16T15:01:14.000+0000", note = "welcome" })
      bodies.summary = raw_request("GET", base .. "/customers/" .. c.guid .. "/creditSummary", hd)
      bodies.customer_transactions = raw_request("GET", base .. "/customers/" .. c.guid .. "/creditTransactions", hd)
      bodies.transactions = raw_request("GET", base .. "/creditTransactions", hd)
      local tx = cjson.decode(bodies.add_credit)
      bodies.transaction = raw_request("GET", base .. "/creditTransactions/" .. tx.guid, hd)
      local n = 0
      for name, raw in pairs(bodies) do
        round_trips("toast " .. name, raw)
        n = n + 1
      end
      assert.equal(10, n)
    end)

    it("TableCheck: customers, search, shops, franchises, reservations, flags, memberships, programs", function()
      local seeded = H.tc_seed(3, "JsonSeed")
      local cust = cjson.decode(tc("POST", "/customers", H.tc_customer {
        tags = json.empty_array, likes = { "tea" },
      })).customer
      local bare = cjson.decode(tc("POST", "/customers", {
        franchise_id = H.tc.franchise_id, parent_shop_id = H.tc.shop_ids[1], first_name = "Bare",
        last_name = "Empty", emails = { "bare@example.org" }, tags = json.empty_array,
        phones = json.empty_array,
      })).customer
      assert.equal(0, #bare.phones)
      local r_raw = tc("POST", "/reservations", {
        shop_id = H.tc.shop_ids[1], pax = 2, start_at = "2030-01-29T19:15:00Z", customer_id = cust.id,
        reservation_flag_ids = { H.tc.flag_ids[1] }, ref = "JSON-1",
      })
      local r = cjson.decode(r_raw)
      local rid = (r.reservation or r).id
      local m_raw = tc("POST", "/memberships", {
        membership_program_id = H.tc.program_ids[1], membership_tier_id = H.tc.tier_ids[2],
        code = "JSON-1", customer_ids = { cust.id }, points = 10, start_date = "2024-01-01",
      })
      local m = cjson.decode(m_raw)
      local mid = (m.membership or (m.memberships and m.memberships[1]) or m).id
      assert.truthy(mid)

      local bodies = {
        reservations_empty = tc("GET", "/reservations?customer_ids=" .. bare.id),
        memberships_empty = tc("GET", "/memberships?customer_ids=" .. bare.id),
        reservation_create = r_raw,
        membership_create = m_raw,
      }
      bodies.customers = tc("GET", "/customers")
      bodies.customers_page = tc("GET", "/customers?per_page=2&page=1")
      bodies.customer = tc("GET", "/customers/" .. cust.id)
      bodies.customer_seeded = tc("GET", "/customers/" .. seeded.first_id)
      bodies.customer_bare = tc("GET", "/customers/" .. bare.id)
      bodies.customer_update = tc("PUT", "/customers/" .. cust.id, { tags = json.empty_array, memo = "x" })
      bodies.search = tc("POST", "/customer_search", { last_name = "Customer" })
      local scroll = cjson.decode(bodies.search).pagination.scroll_id
      bodies.search_end = tc("POST", "/customer_search", { scroll_id = scroll })
      bodies.search_none = tc("POST", "/customer_search", { first_name = "NoSuchPerson" })
      bodies.shops = tc("GET", "/shops")
      bodies.shop = tc("GET", "/shops/" .. H.tc.shop_ids[2])
      bodies.franchises = tc("GET", "/franchises")
      bodies.franchise = tc("GET", "/franchises/" .. H.tc.franchise_id)
      bodies.reservations = tc("GET", "/reservations")
      bodies.reservation = tc("GET", "/reservations/" .. rid)
      bodies.reservation_flags = tc("GET", "/reservation_flags")
      bodies.reservation_flag = tc("GET", "/reservation_flags/" .. H.tc.flag_ids[2])
      bodies.memberships = tc("GET", "/memberships")
      bodies.membership = tc("GET", "/memberships/" .. mid)
      bodies.membership_programs = tc("GET", "/membership_programs")
      bodies.membership_program = tc("GET", "/membership_programs/" .. H.tc.program_ids[1])
      bodies.not_found = tc("GET", "/customers/000000000000000000000000", nil, 404)
      local n, empty_arrays, empty_objects = 0, 0, 0
      for name, raw in pairs(bodies) do
        round_trips("tablecheck " .. name, raw)
        local a, o = empties(raw)
        empty_arrays, empty_objects = empty_arrays + a, empty_objects + o
        n = n + 1
      end
      assert.equal(26, n)
      -- the shapes the issue is about were there to test
      assert.is_true(empty_arrays > 50)
      assert.is_true(empty_objects > 0)
      assert.matches('"tags":[]', bodies.customer_bare, 1, true)
      assert.matches('"phones":[]', bodies.customer_bare, 1, true)
      assert.matches('"images":[]', bodies.customer_bare, 1, true)
      assert.matches('"visits_count_by_shop_id":{}', bodies.customer_bare, 1, true)
    end)
  end)

  describe("answers the clients return", function()
    it("a TableCheck customer with tags = [] re-encodes with \"tags\":[]", function()
      local c = H.tablecheck()
      local created = assert(call(c, { "create_customer", "customers_create" }, H.tc_customer { tags = {} }))
      assert.equal(json.array_mt, getmetatable(created.tags))
      local got = assert(call(c, { "get_customer", "customers_show" }, created.id))
      local s = assert(json.encode(got))
      assert.matches('"tags":[]', s, 1, true)
      assert.matches('"images":[]', s, 1, true)
      assert.matches('"visits_count_by_shop_id":{}', s, 1, true)
      -- faithful: the answer's text, less the nulls of its objects
      local hd = { "Authorization: " .. H.tablecheck_key }
      local raw = raw_request("GET", H.tablecheck_url .. "/customers/" .. created.id, hd)
      local inner = assert(json.decode(raw, { keep_nulls = true })).customer
      assert.equal(without_object_nulls(json.encode(inner)), canonical(s))
      -- what plain cjson makes of it (the reason for crm.json)
      assert.matches('"tags":{}', cjson.encode(got), 1, true)
      -- numbers as the text wrote them: integers under Lua 5.4 (the C core's h:call decodes)
      assert.equal(0, got.visits_count)
      if math.type then assert.equal("integer", math.type(got.visits_count)) end
    end)

    it("customers from a list and a pager re-encode faithfully, and pagers still page", function()
      H.tc_seed(5, "Pager")
      local c = H.tablecheck()
      local list = assert(call(c, { "list_customers", "customers_list" }, { per_page = 2 }))
      assert.equal(2, #list)
      assert.is_not_nil(list[1])
      for _, cust in ipairs(list) do
        local s = assert(json.encode(cust))
        assert.matches('"tags":[]', s, 1, true)
        assert.matches('"shop_memos":[]', s, 1, true)
      end
      local seen = 0
      for cust, err in call(c, { "iter_customers", "customers_iter" }, { per_page = 2 }) do
        assert(cust, tostring(err))
        seen = seen + 1
        assert.matches('"allergies":[]', assert(json.encode(cust)), 1, true)
      end
      assert.equal(5, seen)
      local shops = assert(call(c, { "list_shops", "shops_list" }))
      assert.matches('"service_categories":[]', assert(json.encode(shops)), 1, true)
    end)

    it("a Toast customer and an empty search re-encode as the API wrote them", function()
      local c = H.toast()
      local cust = assert(call(c, { "create_customer" }, H.customer()))
      local s = assert(json.encode(cust))
      assert.same(cjson.decode(s), cjson.decode(json.encode(cust)))
      assert.is_nil(s:find("null", 1, true)) -- nulls in objects read as nil
      local none = assert(call(c, { "search_customers" }, { email = "nobody@example.org" }))
      assert.equal(0, #none)
    end)
  end)
end)

describe("raw input copies", function()
  it("keep the array marker, so a decoded [] sent back is still []", function()
    local validate = require "crm.validate"
    local v = assert(crm.json.decode('{"a":[],"b":{},"c":[[]]}'))
    local copy = assert(validate.plain(v, "body"))
    local again = assert(crm.json.decode(assert(crm.json.encode(copy))))
    assert.is_true(crm.json.is_array(again.a) and next(again.a) == nil)
    assert.is_true(crm.json.is_array(again.c) and crm.json.is_array(again.c[1]))
    assert.is_true(crm.json.is_array(copy.a))
    assert.is_false(crm.json.is_array(copy.b))
  end)
end)
