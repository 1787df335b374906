-- A client-side token bucket: `rate = { per_second = N, burst = B }` spaces requests out so a
-- script stays under an API's rate limit instead of collecting 429s.
local M = {}
local function key_name(k) return require("crm.validate").key_name(k) end

local min = math.min

local Bucket = {}
Bucket.__index = Bucket

-- new(opts, clock) -> bucket | nil, field, rule
function M.new(opts, clock)
  if type(opts) ~= "table" then return nil, "rate", "must be a table" end
  for k in next, opts do
    if k ~= "per_second" and k ~= "burst" then return nil, "rate." .. key_name(k), "is not a known option" end
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

-- take(): reserves a token, then waits (through the client's clock) until it is due. The token
-- is taken before sleeping, so concurrent callers (a curl batch, nginx light threads) queue up
-- behind each other: the k-th caller past the burst waits k / rate, and the rate holds.
function Bucket:take()
  local now = self.clock.now()
  local tokens = min(self.burst, self.tokens + (now - self.last) * self.rate) - 1
  self.last = now
  self.tokens = tokens
  if tokens >= 0 then return end
  self.clock.sleep(-tokens / self.rate)
end

return M
