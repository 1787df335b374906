-- The command line's CSV reader (crm.cli.input) per RFC 4180: quoted cells that hold line
-- breaks, commas and doubled quotes; CRLF; a byte order mark; line numbers of each record.
local input = require "crm.cli.input"
local H = require "helper"

local function cells(text)
  local out = {}
  for i, rec in ipairs(input.parse_csv(text)) do out[i] = rec.cells or "unclosed" end
  return out
end

-- rows_of(text) -> input.rows of a .csv file holding text
local function rows_of(text)
  local path = os.tmpname() .. ".csv"
  H.spit(path, text)
  local rows = assert(input.rows(path))
  os.remove(path)
  return rows
end

-- One record written per RFC 4180: every cell quoted when it holds a quote, a comma, CR or LF,
-- or starts with a space or a tab (or when `all` says so).
local function encode(record, all)
  local out = {}
  for i, c in ipairs(record) do
    if all or c:find('[",\r\n]') or c:find("^[ \t]") or (#record == 1 and c == "") then
      c = '"' .. c:gsub('"', '""') .. '"'
    end
    out[i] = c
  end
  return table.concat(out, ",")
end

describe("CSV input (RFC 4180)", function()
  it("reads a quoted cell holding a line break as one cell of one record", function()
    assert.same({ { "firstName", "lastName" }, { "Maria\nJose", "Lopez" }, { "Ann", "Lee" } },
      cells('firstName,lastName\n"Maria\nJose",Lopez\nAnn,Lee\n'))
    assert.same({ { "a\r\nb", "c" } }, cells('"a\r\nb",c\r\n'))
  end)

  it("turns such a file into one row per record, with the line each record starts on", function()
    local rows = rows_of('firstName,lastName,email\r\n"Maria\r\nJose",Lopez,m@example.org\r\n'
      .. 'Ann,"Lee, ""Jr""",a@example.org\r\n')
    assert.equal(2, #rows)
    assert.same({ firstName = "Maria\r\nJose", lastName = "Lopez", email = "m@example.org" }, rows[1].row)
    assert.equal(2, rows[1].line)
    assert.same({ firstName = "Ann", lastName = 'Lee, "Jr"', email = "a@example.org" }, rows[2].row)
    assert.equal(4, rows[2].line)
    for _, r in ipairs(rows) do assert.is_nil(r.row.firstName:find('"', 1, true)) end
  end)

  it("keeps the byte order mark, doubled quotes, blank lines and empty cells working", function()
    local rows = rows_of('\239\187\191firstName,lastName,phone\n\n"Zoe ""Z""",Ng,\n , ,\nBo,,1\n')
    assert.equal(2, #rows)
    assert.same({ firstName = 'Zoe "Z"', lastName = "Ng" }, rows[1].row)
    assert.equal(3, rows[1].line)
    assert.same({ firstName = "Bo", phone = "1" }, rows[2].row)
    assert.equal(5, rows[2].line)
  end)

  it("reports a quoted cell that is never closed as an error row, naming its line", function()
    local rows = rows_of('firstName,lastName\nAnn,Lee\n"Maria,Lopez\nBo,Ng\n')
    assert.equal(2, #rows)
    assert.same({ firstName = "Ann", lastName = "Lee" }, rows[1].row)
    assert.equal(3, rows[2].line)
    assert.equal("validation", rows[2].err.kind)
    assert.matches("not closed", rows[2].err.message)
  end)

  it("reads back what an RFC 4180 writer wrote, cell for cell (seeded round trip)", function()
    math.randomseed(19)
    local alphabet = { "a", "Z", " ", ",", '"', "\n", "\r", "\r\n", "é", "\t", "x" }
    for _ = 1, 300 do
      local records = {}
      for r = 1, math.random(1, 4) do
        local rec = {}
        for c = 1, math.random(1, 4) do
          local parts = {}
          for k = 1, math.random(0, 6) do parts[k] = alphabet[math.random(#alphabet)] end
          rec[c] = table.concat(parts)
        end
        records[r] = rec
      end
      local lines = {}
      for r, rec in ipairs(records) do lines[r] = encode(rec, math.random() < 0.2) end
      local text = table.concat(lines, math.random() < 0.5 and "\n" or "\r\n")
      assert.same(records, cells(text), text)
    end
  end)
end)
