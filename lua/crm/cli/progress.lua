-- Progress on stderr for long work (export, backfill, --input batches, duplicates): a bar redrawn
-- in place on a terminal, or an occasional plain line for logs. Counts only: never a record.
local core = require "crm.core"

local M = {}

local floor, max, min, rep, format = math.floor, math.max, math.min, string.rep, string.format

local function clock_text(s)
  if not s or s ~= s or s == math.huge or s < 0 then return "?" end
  s = floor(s + 0.5)
  if s >= 3600 then return format("%d:%02d:%02d", floor(s / 3600), floor(s / 60) % 60, s % 60) end
  return format("%d:%02d", floor(s / 60), s % 60)
end

local Progress = {}
Progress.__index = Progress

-- new{mode = "bar" | "plain" | "off", label, total, unit, out, now, every} -> progress
function M.new(o)
  local p = setmetatable({
    mode = o.mode or "off", label = o.label or "", total = o.total, unit = o.unit or "",
    out = o.out or io.stderr, now = o.now or core.now, count = 0, drawn = false,
    width = 28, every = o.every or (o.mode == "plain" and 5 or 0.1),
  }, Progress)
  p.started = p.now()
  p.last = -math.huge
  return p
end

-- The mode the flags ask for: --progress=plain, --progress (a bar even without a terminal), or a
-- bar exactly when stderr is a terminal.
function M.mode(flag)
  if flag == "plain" then return "plain" end
  if flag == "off" or flag == "none" then return "off" end
  if flag == "bar" or flag == true then return "bar" end
  return core.isatty(2) and "bar" or "off"
end

function Progress:text()
  local elapsed = max(self.now() - self.started, 1e-6)
  local rate = self.count / elapsed
  local total = self.total
  local parts = { self.label }
  if total and total > 0 then
    local frac = min(self.count / total, 1)
    if self.mode == "bar" then
      local full = floor(frac * self.width + 0.5)
      parts[#parts + 1] = "[" .. rep("#", full) .. rep(".", self.width - full) .. "]"
    end
    parts[#parts + 1] = format("%d/%d%s %3d%%", self.count, total, self.unit, floor(frac * 100))
  else
    parts[#parts + 1] = format("%d%s", self.count, self.unit)
  end
  parts[#parts + 1] = format("%.0f/s", rate)
  if total and total > 0 and rate > 0 then
    parts[#parts + 1] = "ETA " .. clock_text((total - self.count) / rate)
  else
    parts[#parts + 1] = "elapsed " .. clock_text(elapsed)
  end
  return table.concat(parts, " ")
end

function Progress:draw(force)
  if self.mode == "off" then return end
  local t = self.now()
  if not force and t - self.last < self.every then return end
  self.last = t
  if self.mode == "bar" then
    self.out:write("\r", self:text(), "\27[K")
    self.drawn = true
  else
    self.out:write(self:text(), "\n")
  end
  self.out:flush()
end

-- update(count [, total]): the work done so far (and the total, once known).
function Progress:update(count, total)
  self.count = count or self.count
  if total then self.total = total end
  self:draw(false)
end

-- clear(): removes the bar so another stderr line starts on a clean line.
function Progress:clear()
  if self.drawn then
    self.out:write("\r\27[K")
    self.out:flush()
    self.drawn = false
    self.last = -math.huge
  end
end

-- finish(summary): the final state of the bar, then the summary line (always written).
function Progress:finish(summary)
  if self.mode == "bar" then
    self:draw(true)
    self.out:write("\n")
    self.drawn = false
  end
  if summary then self.out:write(summary, "\n") end
  self.out:flush()
end

function Progress:elapsed() return self.now() - self.started end

return M
