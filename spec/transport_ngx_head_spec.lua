-- The ngx transport reads the usual answer head with one C call (core.http_head, src/http1.c)
-- and declines to it anything unusual, which its Lua reader then reads line by line. Both must
-- give the same status and headers for every head the C parser takes: checked here on hand-made
-- heads and on heads put together at random from the pieces that make the cases differ.
local core = require "crm.core"
local ngx_transport = require "crm.transport.ngx"

local http_head, read_head = core.http_head, ngx_transport._read_head
local LIMIT = 16 * 1024 * 1024

local function same(text, limit)
  limit = limit or LIMIT
  local minor, status, headers, pos, length = http_head(text, limit)
  if minor == nil then return false end
  local lminor, lstatus, lheaders, lpos = read_head(text, limit)
  assert.equal(lminor, minor, text)
  assert.equal(lstatus, status, text)
  assert.same(lheaders, headers, text)
  assert.equal(lpos, pos, text)
  -- The Content-Length it gives: that header, when it is 1 to 15 digits.
  local cl = lheaders["content-length"]
  if cl and cl:find("^%d+$") and #cl <= 15 then
    assert.equal(tonumber(cl), length, text)
  else
    assert.is_nil(length, text)
  end
  return true
end

describe("the ngx transport's answer head in C", function()
  it("takes the usual head: status, lower-cased names, trimmed values, repeats joined", function()
    local text = "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type:  application/json \r\n"
      .. "X-Rep: a\r\nx-rep:\tb\r\nContent-Length: 2\r\n\r\n{}"
    local minor, status, headers, pos = http_head(text, LIMIT)
    assert.equal(1, minor)
    assert.equal(200, status)
    assert.same({ server = "nginx", ["content-type"] = "application/json", ["x-rep"] = "a, b",
                  ["content-length"] = "2" }, headers)
    assert.equal("{}", text:sub(pos))
    assert.equal(2, select(5, http_head(text, LIMIT)))
    assert.is_true(same(text))
    assert.is_true(same("HTTP/1.0 404\r\n\r\n"))
    assert.is_true(same("HTTP/1.1 204 No Content\r\nNoColon\r\n: empty name\r\nSp ace: x\r\nA:\r\n\r\n"))
  end)

  it("declines what the Lua reader must read: 1xx, folded lines, bare LFs, controls, a cut head", function()
    local declined = {
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
      "HTTP/1.1 101 Switching Protocols\r\n\r\n",
      "HTTP/1.1 200 OK\r\nA: b\r\n  folded\r\n\r\n",
      "HTTP/1.1 200 OK\nA: b\n\n",
      "HTTP/1.1 200 OK\r\nA: b\n\r\n",
      "HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n",
      "HTTP/1.1 200 OK\r\nA: b\0c\r\n\r\n",
      "HTTP/1.1 200 OK\r\nA: b\r\n",
      "HTTP/1.1 200OK\r\n\r\n",
      "HTTP/2 200\r\n\r\n",
      "HTTP/1.1 200 OK\r\n" .. ("n"):rep(300) .. ": v\r\n\r\n",
    }
    for _, text in ipairs(declined) do
      assert.is_nil(http_head(text, LIMIT), text)
    end
    -- The Lua reader still reads the first four.
    assert.equal(200, select(2, read_head(declined[1], LIMIT)))
    assert.equal("b folded", select(3, read_head(declined[3], LIMIT)).a)
    assert.equal("b", select(3, read_head(declined[4], LIMIT)).a)
  end)

  it("declines a head over the limit, which the Lua reader refuses as too large", function()
    local text = "HTTP/1.1 200 OK\r\nA: 12345\r\n\r\n"
    -- 10 bytes of header line and 2 of blank line
    assert.is_nil(http_head(text, 11))
    assert.same({ nil, "too large" }, { read_head(text, 11) })
    assert.is_true(same(text, 12))
  end)

  it("gives what the Lua reader gives on 20000 heads made at random", function()
    local pieces = { "A", "b", "X-Rep", "content-length", "Content-Length: 12", ":", ": ", " ", "\t",
                     "\r", "\n", "\r\n", "v", "1", "\0", "\1", "\127", "\200", "\255", ",", "Host", "\r\n ", "\r\n\t" }
    local statuses = { "HTTP/1.1 200 OK", "HTTP/1.0 301", "HTTP/1.1 404 Not\tFound", "HTTP/1.1 100 Go",
                       "HTTP/1.1 101", "HTTP/1.1 2000", "HTTP/1.x 200", "HTTP/1.1 200 O\rK" }
    local seed = 12345
    local function rnd(n) -- a Park-Miller generator: the same heads under every runtime
      seed = (seed * 48271) % 2147483647
      return seed % n + 1
    end
    local taken = 0
    for _ = 1, 20000 do
      local out = { statuses[rnd(#statuses)], "\r\n" }
      for _ = 1, rnd(6) - 1 do
        for _ = 1, rnd(8) do out[#out + 1] = pieces[rnd(#pieces)] end
        out[#out + 1] = "\r\n"
      end
      out[#out + 1] = "\r\nbody"
      local text = table.concat(out)
      if same(text, rnd(3) == 1 and rnd(60) or LIMIT) then taken = taken + 1 end
    end
    -- Both kinds came up: heads the C parser took, and heads it left to Lua.
    assert.is_true(taken > 1000 and taken < 19000, tostring(taken))
  end)

  it("finds the bytes a URL may not hold, as the pattern [%c ] does", function()
    for b = 0, 255 do
      local s = "http://h/" .. string.char(b) .. "x"
      assert.equal(s:find("[%c ]") ~= nil, core.url_unsafe(s), tostring(b))
    end
  end)
end)
