-- Iterators over paged endpoints. A pager yields items (or pages); an error mid-way is yielded
-- as `false, err` once and kept in `pager.err`, so it is never swallowed.
local M = {}

local setmetatable = setmetatable

local Pager = {}
Pager.__index = Pager

-- fetch(pager) -> items, done | nil, err.  `items` is an array; `done` says no page follows.
-- The fetch function keeps its own cursor (page number, scroll id) in the pager table.
function M.new(fetch, fields)
  local p = fields or {}
  p._fetch = fetch
  p._items, p._i = nil, 0
  p.done, p.err = false, nil
  p.count, p.pages = 0, 0
  return setmetatable(p, Pager)
end

-- A pager that yields only `false, err`: what iterator constructors return for bad input,
-- so a caller's loop sees the validation error the same way as a mid-way failure.
function M.failed(err)
  return M.new(function() return nil, err end)
end

-- Next page: items | nil at the end | false, err.
function Pager:next_page()
  if self.err then return nil end
  if self.done then return nil end
  local items, done_or_err = self._fetch(self)
  if items == nil then
    self.err, self.done = done_or_err, true
    return false, done_or_err
  end
  self.pages = self.pages + 1
  if done_or_err or #items == 0 then self.done = true end
  if #items == 0 then return nil end
  return items
end

-- Item iteration: `for item, err in pager do ... end`.
function Pager:__call()
  local items = self._items
  if items then
    local i = self._i + 1
    if i <= #items then
      self._i = i
      self.count = self.count + 1
      return items[i]
    end
  end
  local page, err = self:next_page()
  if page == false then return false, err end
  if page == nil then return nil end
  self._items, self._i = page, 1
  self.count = self.count + 1
  return page[1]
end

-- Page iteration: `for page, err in pager:each_page() do ... end`.
function Pager:each_page()
  return function() return self:next_page() end
end

-- Everything in one array: items | nil, err (with the items read so far in err.partial).
function Pager:all()
  local out = {}
  for item, err in self do
    if item == false then
      err.partial = out
      return nil, err
    end
    out[#out + 1] = item
  end
  return out
end

return M
