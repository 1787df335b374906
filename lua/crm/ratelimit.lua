-- A client-side token bucket: `rate = { per_second = N, burst = B }` spaces requests out so a
-- script stays under an API's rate limit instead of collecting 429s.
local M = {}

local min = math.min

local Bucket = {}
Bucket.__index = Bucket

-- new(opts, clock) -> bucket | nil, field, rule
function M.new(opts, clock)
  if type(opts) ~= "table" then return nil, "rate", "must be a table" end
  for k in pairs(opts) do
    if k ~= "per_second" and k ~= "burst" then return nil, "rate." .. tostring(k), "is not a known option" end
  end
  local rate, burst = opts.per_second, opts.burst
  if type(rate) ~= "number" or rate ~= rate or rate <= 0 or rate == math.huge then
    return nil, "rate.per_second", "must be a finite number > 0"
  end
  if burst == nil then burst = math.max(1, rate) end
  if type(burst) ~= "number" or burst ~= burst or burst < 1 or burst == math.huge then
    return nil, "rate.burst", "must be a finite number >= 1"
  end
  return setmetatable({ rate = rate, burst = burst, tokens = burst, last = clock.now(),
                        clock = clock }, Bucket)
end

-- take(): waits (through the client's clock) until a token is free, then spends it.
function Bucket:take()
  local now = self.clock.now()
  local tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
  self.last = now
  if tokens >= 1 then
    self.tokens = tokens - 1
    return
  end
  local wait = (1 - tokens) / self.rate
  self.clock.sleep(wait)
  self.last = now + wait
  self.tokens = 0
end

return M
