--- Pagers: iterators over paged endpoints.
-- Every `iter_*` method of both clients returns a `Pager`. A pager yields items (or pages); an
-- error mid-way is yielded as `false, err` once and kept in `pager.err`, so it is never
-- swallowed. Bad input to an `iter_*` method gives a pager that yields only `false, err` (the
-- validation error) before anything is sent, so one loop handles both.
-- Toast pagers stop on 204, an empty page or a short page; TableCheck list pagers on a short
-- page; the `customer_search` pager when a page comes back empty.
-- @module crm.pager
-- @usage
-- local it = toast:iter_search_customers({ lastName = "Banton" }, { pageSize = 50 })
-- for customer, err in it do
--   if customer == false then print("stopped: " .. tostring(err)) break end
--   print(customer.guid)
-- end
-- print(it.count, it.pages, it.done, it.err)
local M = {}

local setmetatable, type, tostring = setmetatable, type, tostring
local errors = require "crm.error"

-- A page's identity: the ids of its first and last records and its size (nil when the records
-- carry no guid or id).
local function signature(items)
  local n = #items
  if n == 0 then return nil end
  local a, b = items[1], items[n]
  if type(a) ~= "table" or type(b) ~= "table" then return nil end
  local ia, ib = a.guid or a.id, b.guid or b.id
  if ia == nil or ib == nil then return nil end
  return n .. "\0" .. tostring(ia) .. "\0" .. tostring(ib)
end

--- A pager: call it as an iterator, or use its methods. Its fields (read them, do not set
-- them) say how far it got.
-- @type Pager

--- Items yielded so far (a number).
-- @field count

--- Pages fetched so far, empty last pages included (a number).
-- @field pages

--- `true` once no page follows: the end, or an error.
-- @field done

--- The `Error` that stopped the pager, once it was yielded; `nil` otherwise.
-- @field err

--- TableCheck `iter_search_customers`: `pagination.total_results` (a number), once the first
-- page is in.
-- @field total

--- TableCheck `iter_customers`: `true` when it stopped at the 10-page limit of `GET /customers`
-- with the last page full (it yielded a `list_limit` error); `false` before.
-- @field truncated

--- TableCheck `iter_search_customers` with `restart_on_expiry`: how many times the search was
-- started again (a number).
-- @field restarts

--- Toast and TableCheck list pagers: the next page number to fetch (Toast from 1, TableCheck
-- lists from 0).
-- @field page

-- (The plain comment keeps LDoc from attaching the last field to the local below.)
local Pager = {}
Pager.__index = Pager

-- new(fetch, fields) -> pager (internal: the clients build their pagers with it)
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

--- The next page.
-- @treturn[1] {table,...} the items of the next page (a non-empty array)
-- @return[2] `nil` at the end (and on every call after an error was yielded)
-- @return[3] `false`
-- @treturn[3] Error the error that stopped the pager (also kept in `pager.err`)
function Pager:next_page()
  if self.err then return nil end
  if self.done then return nil end
  local items, done_or_err = self._fetch(self)
  if items == nil then
    self.err, self.done = done_or_err, true
    return false, done_or_err
  end
  -- A server that ignores the page asked for sends the same records again and again: stop
  -- with an error rather than loop (and grow all()) without end.
  local sig = signature(items)
  if sig ~= nil and sig == self._last_sig then
    local err = errors.new("decode", "the server answered page " .. (self.pages + 1) .. " with the"
      .. " same records as the page before: it ignores paging, so the pager stopped",
      { code = "page_repeated" })
    self.err, self.done = err, true
    return false, err
  end
  self._last_sig = sig
  self.pages = self.pages + 1
  if done_or_err or #items == 0 then self.done = true end
  if #items == 0 then return nil end
  return items
end

--- Item iteration: `for item, err in pager do` calls the pager for each item.
-- A pager is callable, so it is its own iterator; pages are fetched as the loop needs them.
-- @treturn[1] table the next item
-- @return[2] `nil` at the end
-- @return[3] `false`
-- @treturn[3] Error the error that stopped the pager, yielded once
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

--- Page iteration: `for page, err in pager:each_page() do` loops over the pages.
-- @treturn function an iterator that yields each page's items (see `Pager:next_page`):
-- an array, then `nil` at the end, or `false, err` once
-- @usage for page in toast:iter_search_customers(q):each_page() do print(#page) end
function Pager:each_page()
  return function() return self:next_page() end
end

--- Everything in one array.
-- @treturn[1] {table,...} every item, in order
-- @return[2] `nil`
-- @treturn[2] Error the error that stopped the pager; `err.partial` holds the items read before it
-- (attached: readable, but in no encoding of the error)
-- @usage local all, err = toast:iter_search_customers(q):all()
function Pager:all()
  local out = {}
  for item, err in self do
    if item == false then
      -- Customer data: readable as err.partial, but off the error table, so no encoding of the
      -- error writes it (crm.error.attach).
      errors.attach(err, "partial", out)
      return nil, err
    end
    out[#out + 1] = item
  end
  -- An array to crm.json, so an export of no records writes [] (see crm.json).
  return require("crm.json").array(out)
end

return M
