-- The error value and the retry policy, on their own.
local errors = require "crm.error"
local retry = require "crm.retry"

describe("crm.error", function()
  it("is a table with fields and a one-line tostring", function()
    local e = errors.new("http", "bad thing\nhappened", { status = 400, request_id = "r-1",
                                                         field = "email" })
    assert.equal("http", e.kind)
    assert.equal(400, e.status)
    assert.is_false(e.retryable)
    local s = tostring(e)
    assert.not_matches("\n", s)
    assert.matches("^crm http 400: bad thing happened", s)
    assert.matches("request_id=r%-1", s)
    assert.matches("field=email", s)
    assert.is_true(errors.is(e))
    assert.is_false(errors.is({ kind = "http" }))
  end)

  it("redacts emails, phone numbers, bearer tokens and registered secrets", function()
    local e = errors.new("http", "customer jane.doe+x@example.org / +1 (206) 555-0100 rejected;"
      .. " Authorization: Bearer abc.def-123 with s3cr3t-value", nil, { secrets = { "s3cr3t-value" } })
    local s = tostring(e)
    assert.not_matches("jane", s)
    assert.not_matches("555", s)
    assert.not_matches("abc%.def", s)
    assert.not_matches("s3cr3t", s)
    assert.matches("<email>", s)
    assert.matches("<phone>", s)
  end)

  it("keeps dates readable while redacting phone-shaped text and the phones it sent", function()
    local s = errors.redact("at 2018-06-16T15:01:14.000+0000 call 206-555-0100 or 2065550199",
      { pii = { "2065550199" } })
    assert.matches("2018%-06%-16T15:01:14%.000%+0000", s)
    assert.not_matches("555", s)
    assert.equal("at 2018-06-16T15:01:14.000+0000 call <phone> or <pii>", s)
  end)
end)

describe("crm.retry", function()
  it("says 'gave up' once, even when runs are nested around the same error", function()
    local clock = { t = 0 }
    function clock.now() return clock.t end
    function clock.sleep(x) clock.t = clock.t + x end
    local p = assert(retry.new({ deadline = 0, base_delay = 1, max_delay = 1 }, clock))
    local e = errors.new("transport", "boom", { retryable = true, sent = false })
    local _, err = p:run(function() return p:run(function() return nil, e end, true) end, true)
    local _, n = err.message:gsub("gave up", "")
    assert.equal(1, n)
  end)

  local function fake_clock()
    local c = { t = 0, slept = {} }
    c.now = function() return c.t end
    c.sleep = function(s)
      c.slept[#c.slept + 1] = s
      c.t = c.t + s
    end
    return c
  end

  it("parses Retry-After as seconds and as an HTTP date", function()
    assert.equal(7, retry.parse_retry_after("7"))
    -- 1445412480 is Wed, 21 Oct 2015 07:28:00 GMT
    assert.equal(30, retry.parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", 1445412480))
    assert.equal(0, retry.parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", 1445412480))
    assert.is_nil(retry.parse_retry_after("soon"))
  end)

  it("validates its options", function()
    assert.is_nil((retry.new { max_attempts = 0 }))
    assert.is_nil((retry.new { base_delay = 0 / 0 }))
    assert.is_nil((retry.new { bogus = 1 }))
    assert.is_nil((retry.new "fast"))
  end)

  it("backs off with full jitter capped by max_delay", function()
    local p = retry.new { base_delay = 1, max_delay = 4 }
    for attempt = 1, 10 do
      local d = p:backoff(attempt)
      assert.is_true(d >= 0 and d <= math.min(4, 2 ^ (attempt - 1)))
    end
  end)

  it("retries retryable errors up to max_attempts and records attempts", function()
    local clock = fake_clock()
    local p = retry.new({ max_attempts = 3, base_delay = 0.1, deadline = 100 }, clock)
    local calls = 0
    local res, err = p:run(function()
      calls = calls + 1
      return nil, errors.new("http", "busy", { status = 503, retryable = true })
    end, true)
    assert.is_nil(res)
    assert.equal(3, calls)
    assert.equal(3, err.attempts)
    assert.equal(2, #clock.slept)
  end)

  it("never retries a final error", function()
    local p = retry.new({}, fake_clock())
    local calls = 0
    local _, err = p:run(function()
      calls = calls + 1
      return nil, errors.new("http", "bad", { status = 400 })
    end, true)
    assert.equal(1, calls)
    assert.equal(400, err.status)
  end)

  it("waits at least Retry-After, and gives up at once when it passes the deadline", function()
    local clock = fake_clock()
    local p = retry.new({ deadline = 10 }, clock)
    local calls = 0
    local res = p:run(function()
      calls = calls + 1
      if calls == 1 then
        return nil, errors.new("http", "slow down", { status = 429, retryable = true, retry_after = 3 })
      end
      return "ok"
    end, true)
    assert.equal("ok", res)
    assert.is_true(clock.slept[1] >= 3)

    clock = fake_clock()
    p = retry.new({ deadline = 10 }, clock)
    local _, err = p:run(function()
      return nil, errors.new("http", "slow down", { status = 429, retryable = true, retry_after = 60 })
    end, true)
    assert.equal(1, err.attempts)
    assert.equal(0, #clock.slept)
    assert.matches("beyond the remaining deadline", err.message)
  end)

  it("retries a non-idempotent request only when it never left the machine", function()
    local p = retry.new({ base_delay = 0 }, fake_clock())
    local calls = 0
    local _, err = p:run(function()
      calls = calls + 1
      return nil, errors.new("transport", "reset", { retryable = true, sent = true })
    end, false)
    assert.equal(1, calls)
    assert.is_true(err.outcome_unknown)
    assert.matches("outcome is unknown", err.message)

    calls = 0
    p:run(function()
      calls = calls + 1
      return nil, errors.new("transport", "refused", { retryable = true, sent = false })
    end, false)
    assert.equal(4, calls)
  end)

  it("waits out pending answers until the deadline without counting them as failures", function()
    local clock = fake_clock()
    local p = retry.new({ max_attempts = 2, base_delay = 0.5, max_delay = 0.5, deadline = 100 }, clock)
    local calls = 0
    local res = p:run(function()
      calls = calls + 1
      if calls < 6 then
        return nil, errors.new("http", "accepted", { status = 202, retryable = true, pending = true })
      end
      return "done"
    end, true)
    assert.equal("done", res)
    assert.equal(6, calls)
  end)
end)
