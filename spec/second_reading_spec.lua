-- A second reading of the day's changes to the library: each case here failed before its fix.
local errors = require "crm.error"

describe("a second reading", function()
  -- The email shapes (whole, spaced, cut at the dot, cut at the end) are found from where a word
  -- starts, not from every byte of a long word: on a 20 kB word beside an @, four shapes took
  -- 39 s (one shape took 8 s before), growing with the square of the length. A 400 kB word
  -- would not finish in hours; found from word starts, it is read once.
  it("finds the email shapes in a long text once over, with the same answers", function()
    local word = ("a"):rep(400000)
    local body = errors.new("http", word .. " @ x " .. ("ab.cd"):rep(80000) .. "@example")
    assert.equal("crm http: " .. ("a"):rep(297) .. "...", tostring(body))
    local copy = errors.new("http", "x", { body = { detail = word .. " wrote to o.b @ example.org and "
      .. ("q"):rep(300000) .. "@exa" } }, {}).body.detail
    assert.equal(word .. " wrote to <email> and <email>", copy)
    -- the shapes as before, at the start of a text, after a separator and inside other text
    for text, want in pairs {
      ["o.b@example.org"] = "<email>",
      ["(o.b@example.org)"] = "(<email>)",
      ["mail:o.b @\nexample.org."] = "mail:<email>",
      ["o.b@example .org ok"] = "<email> ok",
      ["to o.brewster@exa"] = "to <email>",
      ["o.b&#64;example.org"] = "<email>",
      ["a@b@c.d"] = "a@<email>",
      ["no at sign here"] = "no at sign here",
    } do
      assert.equal(want, errors.redact(text), text)
    end
  end)

  -- The store's log line looks for Toast token entries ("<token> crm1 <expiry> <tag>") by shape
  -- from where a word starts: from every byte, an adapter's error text of one 30 kB word took
  -- 7 s (quadratic), inside the call that found the store down.
  it("scrubs a failing store's long error text once over", function()
    local stores = require "crm.store"
    local said
    local failing = {}
    for _, m in ipairs(stores.METHODS) do
      failing[m] = function() error(("x"):rep(300000) .. " tok3n-of-another crm1 1700000000000 abc123", 0) end
    end
    local g = stores.guard(failing, { log = function(msg) said = msg end })
    assert.is_true(g:add("k", 1, 60))
    assert.is_string(said)
    assert.is_nil(said:find("tok3n", 1, true))
    assert.truthy(said:find("xxxxxxxx", 1, true))
    -- and an entry at the very start of the text
    for _, m in ipairs(stores.METHODS) do
      failing[m] = function() error("tok3n-of-another crm1 1700000000000 abc123 refused", 0) end
    end
    said = nil
    g = stores.guard(failing, { log = function(msg) said = msg end })
    assert.is_true(g:add("k", 1, 60))
    assert.is_nil(said:find("tok3n", 1, true))
    assert.truthy(said:find("<redacted token entry> refused", 1, true))
  end)

  -- A sent name whose first or last letter is one of a script written with spaces (Latin with
  -- accents, Greek, Cyrillic: two UTF-8 bytes) stands apart as a word there, as an ASCII letter
  -- does; only an edge in a script without spaces (kana, kanji) is replaced inside other text.
  -- The day's change had dropped the word rule at every non-ASCII edge: José blanked the start of
  -- Joséphine, Иван that of Иванова.
  it("keeps the word rule at a sent name's accented or Cyrillic edge", function()
    assert.equal("Joséphine and <pii> called", errors.redact("Joséphine and José called",
      { pii = { "José" } }))
    assert.equal("Иванова и <pii>", errors.redact("Иванова и Иван", { pii = { "Иван" } }))
    assert.equal("Élodie, <pii>!", errors.redact("Élodie, Élo!", { pii = { "Élo" } }))
    -- as before: a name in kanji or kana inside a sentence, a name next to kana
    assert.equal("<pii>太郎様は", errors.redact("山田太郎様は", { pii = { "山田" } }))
    assert.equal("<pii>は来店", errors.redact("Joséは来店", { pii = { "José" } }))
    assert.equal("<pii> (<pii>)", errors.redact("André (ANDRé)", { pii = { "André" } }))
  end)
end)
