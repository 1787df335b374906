-- JSON and URL helpers of crm.http, on their own.
local crm = require "crm"
local http = require "crm.http"

describe("crm.http", function()
  it("reads JSON null as nil in objects but keeps it in arrays", function()
    local v = assert(http.decode('{"a":null,"b":[1,null,3],"c":{"d":null,"e":1}}'))
    assert.is_nil(v.a)
    assert.equal(3, #v.b)
    assert.equal(crm.null, v.b[2])
    assert.is_nil(v.c.d)
    assert.equal(1, v.c.e)
  end)

  it("strips nulls in objects and keeps them in arrays, in the C core's decode", function()
    local cjson = require "cjson"
    local text = '{"a":null,"b":[null,{"c":null,"d":[1,null]}],"e":{"f":null}}'
    local v = assert(require("crm.core").decode(text))
    assert.is_nil(v.a)
    assert.equal(cjson.null, v.b[1])
    assert.is_nil(v.b[2].c)
    assert.equal(cjson.null, v.b[2].d[2])
    assert.is_nil(next(v.e))
    local kept = assert(require("crm.core").decode(text, true))
    assert.equal(cjson.null, kept.a)
  end)

  it("reports invalid JSON without raising", function()
    local v, err = http.decode('{"a":')
    assert.is_nil(v)
    assert.matches("not valid JSON", err)
  end)

  it("encodes crm.empty_array as [] and an empty table as {}", function()
    assert.equal('{"phones":[]}', http.encode { phones = crm.empty_array })
    assert.equal('{"a":{}}', http.encode { a = {} })
    local nested = http.encode { list = { { tags = crm.empty_array } } }
    assert.equal('{"list":[{"tags":[]}]}', nested)
  end)

  it("refuses values JSON cannot carry", function()
    assert.is_nil((http.encode { n = 0 / 0 }))
    assert.is_nil((http.encode { f = print }))
  end)

  it("builds query strings in a stable order, escaped", function()
    assert.equal("", http.query(nil))
    assert.equal("?a=1&b=x%20y&ids=a%2Cb", http.query { b = "x y", a = 1, ids = { "a", "b" } })
  end)
end)
