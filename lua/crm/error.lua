--- The one error type of crm: a table with fields and a one-line, redacted `tostring`.
--
-- Every function of crm returns its result on success and `nil, err` on failure; nothing raises
-- for bad input or a bad network. `err` is an `Error` table; `crm.is_error(v)` tells one from any
-- other value, and `tostring(err)` is one line, e.g.
-- `crm http 404: Customer not found (code=404, request_id=2b1e...)` (`attempts=N` is added after
-- retries, `outcome_unknown` when the outcome is unknown).
--
-- Redaction happens twice. When an error is built (errors.new with a context), every text field
-- is scrubbed of the client's secrets and of the PII values the request sent, so the error never
-- has to carry those secrets around. When it is printed, tostring scrubs every part once more
-- with the shape rules (bearer tokens, email addresses, phone-shaped text), in case text that
-- was never seen by a context ends up in it.
-- @module crm.error
local M = {}

local tostring, type, setmetatable, getmetatable, pairs, next = tostring, type, setmetatable, getmetatable, pairs, next
local concat, find, sub, gsub = table.concat, string.find, string.sub, string.gsub

--- The values of `Error.kind`: `KINDS[err.kind]` is true for each.
-- @table KINDS
M.KINDS = {
  validation = true, -- bad input; nothing was sent
  http = true,       -- the server answered with a status we do not accept
  transport = true,  -- the request did not complete (connect, TLS, dropped, too large, closed)
  auth = true,       -- login failed or credentials were refused
  timeout = true,    -- a time limit or deadline ran out
  decode = true,     -- the server's body is not the JSON we expect
}

--- An error value: what every failed call returns as its second value (`nil, err`).
-- Only `kind`, `message` and `retryable` are always set; the others appear where they apply.
-- Every text field is redacted (see the module description): secrets become `<redacted>`, the
-- names, emails and phones the request sent `<pii>`, and email- or phone-shaped text
-- `<email>`/`<phone>`; GUIDs, ids, amounts and dates are kept.
-- @table Error
-- @tfield string kind `"validation"` (bad input, nothing sent), `"http"` (an unexpected status),
-- `"transport"` (connect, TLS, dropped, too large, client closed), `"auth"` (login failed,
-- 401/403), `"timeout"` (a time limit or deadline ran out) or `"decode"` (the body is not the
-- JSON expected); see `KINDS`
-- @tfield string message what went wrong, in words
-- @tfield[opt] number status the HTTP status, when there was a response
-- @tfield[opt] string field for `validation`: the input that broke a rule (`"firstName"`,
-- `"query.email"`, `"retry.base_delay"`, `"ops[3]"`)
-- @tfield[opt] string code the curl or transport error name (`"CURLE_COULDNT_CONNECT"`,
-- `"connect_failed"`), the server's error code, or crm's own: `"closed"`, `"cancelled"`,
-- `"response_too_large"`, `"list_limit"`, `"scroll_expired"`, `"no_scroll_id"`,
-- `"merge_would_lose_values"`, `"merge_pending"`, `"images_pending"`, `"flight_wait"`,
-- `"idempotency_mismatch"` (Toast holds another record under the GUID: `err.record`),
-- `"write_failed"`, `"no_cosockets"`, ...
-- @tfield[opt] string request_id Toast's `requestId` from the error body, for Toast support
-- @tfield boolean retryable whether another attempt could succeed (always false when
-- `outcome_unknown`, except for a write with a client GUID: replaying that GUID is safe)
-- @tfield[opt] number retry_after seconds the server asked to wait (`Retry-After`)
-- @tfield[opt] number attempts how many attempts were made, retries included
-- @tfield[opt] string guid Toast creates and credit adds: the GUID that was sent, to look the
-- record up or to send the same record again (`guid = err.guid`)
-- @tfield[opt] boolean pending Toast create or credit: the server kept answering 202 (then
-- `kind = "timeout"`)
-- @tfield[opt] boolean sent transport errors: whether any bytes reached the server (`false`
-- only when nothing left this machine)
-- @tfield[opt] boolean outcome_unknown a write failed after its bytes reached the server on some
-- attempt without a definitive refusal (a 4xx other than 408 and 429): it may have been done.
-- Look the record up before sending it again, or replay the same GUID (Toast)
-- @tfield[opt] table body the decoded error body, when there was one (its strings redacted)
-- @tfield[opt] {string,...} ids the record ids the error is about (a merge, images, a wait)
-- @tfield[opt] table partial `Pager:all`: the items read before the error (attached: off the
-- table, in no encoding of the error)
-- @tfield[opt] table checkpoint `backfill_orders`: the last finished window, to resume from
-- (see `crm.toast.Checkpoint`)
-- @tfield[opt] table window `backfill_orders`: the window that failed `{index, startDate, endDate}`
-- @tfield[opt] crm.toast.guests.Set profiles `backfill_orders`: the profile set, with the finished windows
-- folded in (attached)
-- @tfield[opt] table report `merge_customers`: the merge report (see
-- `crm.tablecheck.merge.MergeReport`); with `code = "merge_would_lose_values"` too
-- @tfield[opt] table customer `merge_customers` with `wait`: the merged customer the PUT answered
-- @tfield[opt] string stage `wait_for_merge`: `"merged_customer_ids"` or `"associated_objects"`
-- @tfield[opt] table images `wait_for_images`: the images as last read (attached)
-- @tfield[opt] string expired_by `iter_search_customers`: `"client"` (noticed before sending) or
-- `"server"` for an expired scroll
-- @tfield[opt] boolean scroll_lost `iter_search_customers`: a scroll continuation reached the
-- server and its answer was lost, so it was not sent again
-- @tfield[opt] number written `write_jsonl`: lines written before the failure
-- @tfield[opt] number position `crm.json.decode`: the 1-based byte offset where the text stops
-- being JSON (or where the number out of range begins)
local Error = {}
-- Error.__index (methods, then attached fields) is set below, with attach.

-- Replaces every occurrence of `value` in s (plain text, not a pattern) in any ASCII case: a
-- server may echo a key upper-cased. `ls` is s:lower() and `lv` value:lower() (lower() keeps
-- every byte position, so the positions found in ls cut s). -> s, ls (both updated)
local function replace_all(s, ls, lv, with)
  local from, to = find(ls, lv, 1, true)
  if not from then return s, ls end
  local out, pos = {}, 1
  while from do
    out[#out + 1] = sub(s, pos, from - 1)
    out[#out + 1] = with
    pos = to + 1
    from, to = find(ls, lv, pos, true)
  end
  out[#out + 1] = sub(s, pos)
  s = concat(out)
  return s, s:lower()
end

-- The same, but only where the value stands as a word of its own (names: "Al" in "Already" stays).
-- Whether the character that starts (or, with back, ends) at byte i is part of a word: an
-- ASCII letter or digit, or a letter of a script that uses two UTF-8 bytes (Latin, Greek,
-- Cyrillic, ...). The three- and four-byte ones (kana, kanji, Thai, full-width forms) are
-- written without spaces, so a value next to one still stands apart (09012345678は).
local function is_word_char(s, i, back)
  if back then
    -- the lead byte of the character that ends at i
    local j = i
    while j > 1 and j > i - 3 and find(sub(s, j, j), "^[\128-\191]") do j = j - 1 end
    i = j
  end
  local c = sub(s, i, i)
  if c == "" then return false end
  if find(c, "^%w") then return true end
  return find(c, "^[\194-\223]") ~= nil
end

-- Matched without regard to ASCII case (a server may echo ZELDA for Zelda); lower() keeps
-- every byte position, so the positions found in the lowered text cut the original.
-- A boundary is asked for only at an edge of the value that is a word character (an ASCII
-- letter or digit, or a letter of a two-byte script: José, Иван): a name in a script written
-- without spaces (山田 in 山田太郎様) has no word around it to stand apart from, so it is
-- replaced wherever it occurs.
local function replace_words(s, value, with)
  local ls, lv = s:lower(), value:lower()
  local from, to = find(ls, lv, 1, true)
  if not from then return s end
  local left, right = is_word_char(value, 1), is_word_char(value, #value, true)
  local out, pos = {}, 1
  while from do
    if not (left and is_word_char(s, from - 1, true))
        and not (right and is_word_char(s, to + 1)) then
      out[#out + 1] = sub(s, pos, from - 1)
      out[#out + 1] = with
      pos = to + 1
    end
    from, to = find(ls, lv, to + 1, true)
  end
  out[#out + 1] = sub(s, pos)
  return concat(out)
end

-- JSON writes "/" as "\/" in some servers' echoes; a secret is scrubbed in both spellings.
local function json_escaped(v)
  return (gsub(gsub(v, "\\", "\\\\"), "/", "\\/"))
end

-- A URL (a redirect, a link in a message) carries a secret percent-encoded: every byte but the
-- unreserved ones as %XX, in upper- and in lower-case hex.
local function percent_encoded(v, fmt)
  return (gsub(v, "[^%w%-%._~]", function(c) return fmt:format(c:byte()) end))
end

-- The spellings of a secret that are scrubbed whole.
local function spellings(v)
  local out = { v }
  local function add(x)
    for i = 1, #out do
      if out[i] == x then return end
    end
    out[#out + 1] = x
  end
  add(json_escaped(v))
  add(percent_encoded(v, "%%%02X"))
  add(percent_encoded(v, "%%%02x"))
  return out
end

-- A piece of a secret is a leak too: a server that cuts its echo, splits it across fields or
-- breaks it with a NUL or a bad byte leaves pieces no whole-value search finds. Every run of
-- FRAGMENT bytes or more that also occurs in a secret (in any of its spellings) is scrubbed, so
-- at most FRAGMENT - 1 bytes of a secret survive in one place.
-- The spellings and the windows of a list of secrets are made once per list (weak cache), not
-- once per string: a body of many strings is scrubbed with one context.
local FRAGMENT = 8
local PREPARED = setmetatable({}, { __mode = "k" })
-- Both in lower case: they are matched in any ASCII case.
local function prepared(secrets)
  local p = PREPARED[secrets]
  if p then return p end
  local forms, windows, seen = {}, {}, {}
  for i = 1, #secrets do
    local v = secrets[i]
    if type(v) == "string" and #v >= 4 then
      local list = spellings(v)
      for j = 1, #list do
        local f = list[j]:lower()
        if not seen[f] then
          seen[f] = true
          forms[#forms + 1] = f
          for k = 1, #f - FRAGMENT + 1 do windows[sub(f, k, k + FRAGMENT - 1)] = true end
        end
      end
    end
  end
  p = { forms = forms, windows = windows }
  PREPARED[secrets] = p
  return p
end

local function scrub_fragments(s, ls, windows)
  local n = #s
  if n < FRAGMENT or next(windows) == nil then return s end
  local out, pos, from, to = nil, 1, nil, 0
  for i = 1, n - FRAGMENT + 1 do
    if windows[sub(ls, i, i + FRAGMENT - 1)] then
      if from and i > to + 1 then
        out = out or {}
        out[#out + 1] = sub(s, pos, from - 1)
        out[#out + 1] = "<redacted>"
        pos, from = to + 1, nil
      end
      from = from or i
      to = i + FRAGMENT - 1
    end
  end
  if not from then return s end
  out = out or {}
  out[#out + 1] = sub(s, pos, from - 1)
  out[#out + 1] = "<redacted>"
  out[#out + 1] = sub(s, to + 1)
  return concat(out)
end

-- Email addresses as validation accepts them: any local part (non-ASCII, apostrophes, plus
-- tags), a domain with at least one dot (one-letter TLDs too).
local EMAIL = "[^%s@<>%(%)%[%],;:\"]+@[^%s@<>%(%)%[%],;:\"]+%.[^%s@<>%(%)%[%],;:\"]+"
-- The same address broken by a careless server: a line break, a tab or a space around the @ or
-- before the dot of the domain (text wrapped at a width), and @ written as an HTML entity.
local EMAIL_SPACED = "[^%s@<>%(%)%[%],;:\"]+%s*@%s*[^%s@<>%(%)%[%],;:\"]+%.[^%s@<>%(%)%[%],;:\"]+"
local EMAIL_CUT = "[^%s@<>%(%)%[%],;:\"]+@[^%s@<>%(%)%[%],;:\"]+%s+%.[^%s@<>%(%)%[%],;:\"]+"
-- An address a server cut short (its text ends inside the domain, before any dot).
local EMAIL_TAIL = "[^%s@<>%(%)%[%],;:\"]+@[^%s@<>%(%)%[%],;:\"]*$"
-- Each shape is tried only where a word starts (a frontier: a separator or the text's start
-- before it), never from every byte inside a long word: the leftmost match of a word is the one
-- from its start, so the answers are the same, and a text is read once over, not once per byte
-- (quadratic: a 20 kB word beside an @ took 39 s). The text gets a leading space for the frontier
-- at its start.
local WORD_START = "%f[^%s@<>%(%)%[%],;:\"]"
local EMAIL_SHAPES = { WORD_START .. EMAIL, WORD_START .. EMAIL_SPACED, WORD_START .. EMAIL_CUT,
                       WORD_START .. EMAIL_TAIL }
local function emails(s)
  if not find(s, "@", 1, true) and not find(s, "&", 1, true) then return s end
  s = gsub(gsub(gsub(s, "&#0*64;", "@"), "&#[xX]0*40;", "@"), "&commat;", "@")
  if not find(s, "@", 1, true) then return s end
  s = " " .. s
  for i = 1, #EMAIL_SHAPES do s = gsub(s, EMAIL_SHAPES[i], "<email>") end
  return (sub(s, 2))
end

-- Phone-shaped text: a + or separators (space, dot, dash, parentheses) among 7 to 16 digits,
-- standing on its own (not inside an id such as a0b1234567bc or a GUID), and not a date.
local GUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"
local function redact_phones(s)
  local out, pos = {}, 1
  local n = #s
  while pos <= n do
    local from, to = find(s, "[%+%(]?%d[%d%s%.%-%(%)]*%d%)?", pos)
    if not from then break end
    local run = sub(s, from, to)
    local before, after = sub(s, from - 1, from - 1), sub(s, to + 1, to + 1)
    local digits = #gsub(run, "%D", "")
    local shaped = find(run, "^%+") or find(run, "%d[%s%.%-%(%)]+%d")
    local phone = shaped and digits >= 7 and digits <= 16
      and not find(before, "^[%w%-%./\\:_]") and not find(after, "^[%w%-_/\\:]")
      and not find(run, "^%d%d%d%d%-%d%d%-%d%d") and not find(run, GUID)
      and not find(run, "^%d+%.%d+$") -- a decimal amount
    out[#out + 1] = sub(s, pos, from - 1)
    out[#out + 1] = phone and "<phone>" or run
    pos = to + 1
  end
  out[#out + 1] = sub(s, pos)
  return concat(out)
end

--[[ redact(s [, ctx]) -> s scrubbed, one line, at most 300 bytes.
  ctx.secrets  strings replaced by <redacted> wherever they occur (tokens, keys, secrets)
  ctx.pii      strings this client sent (names, emails, phones) replaced by <pii> where they
               stand as words
  Then bearer tokens, email addresses and phone-shaped text are replaced whatever ctx says.
  Kept: GUIDs, 24-hex ids, amounts, counts, dates, paths. ]]
local BASIC = "([Aa][Uu][Tt][Hh][Oo][Rr][Ii][Zz][Aa][Tt][Ii][Oo][Nn][\"']?%s*[:=]%s*[\"']?)"
  .. "[Bb][Aa][Ss][Ii][Cc]%s+[%w%+/=%-_]+"
-- Full-width digits, plus, minus and parentheses (as Japanese text writes a phone) are read as
-- their ASCII forms, so the phone rules and the phones the request sent see them.
local FULL_WIDTH = { ["\136"] = "(", ["\137"] = ")", ["\139"] = "+", ["\141"] = "-" }
for d = 0, 9 do FULL_WIDTH[string.char(144 + d)] = tostring(d) end
-- The digit strings among the values a request sent (its phones, as bare digits, E.164 and
-- national), once per list (weak cache). A run of 7 digits or more that is part of one is the
-- phone broken apart (a NUL, a colon, a line break in its middle): it is <pii>.
local DIGITS = setmetatable({}, { __mode = "k" })
local function sent_digits(pii)
  local d = DIGITS[pii]
  if d then return d end
  d = {}
  for i = 1, #pii do
    local v = pii[i]
    if type(v) == "string" and #v >= 7 and find(v, "^%d+$") then d[#d + 1] = v end
  end
  DIGITS[pii] = d
  return d
end
local function scrub_digit_runs(s, digits)
  if #digits == 0 then return s end
  return (gsub(s, "%d%d%d%d%d%d%d+", function(run)
    for i = 1, #digits do
      if find(digits[i], run, 1, true) then return "<pii>" end
    end
  end))
end

-- Percent-encoded printable ASCII (%2B, %20, %40: a phone or an email in a URL) is read
-- decoded, so the shape rules see `+1 206 555 0199` and `o.b@example.com`. Other bytes (%0A,
-- %00, %E3) stay encoded: decoding them would only make control bytes or broken UTF-8.
local function printable_decoded(h)
  local b = tonumber(h, 16)
  if b >= 32 and b <= 126 then return string.char(b) end
end
local function scrub(s, ctx)
  s = tostring(s)
  if find(s, "\239\188", 1, true) then s = gsub(s, "\239\188([\136\137\139\141\144-\153])", FULL_WIDTH) end
  if find(s, "%%%x%x") then s = gsub(s, "%%(%x%x)", printable_decoded) end
  if ctx then
    local secrets = ctx.secrets
    if secrets then
      local p = prepared(secrets)
      local forms, ls = p.forms, s:lower()
      for i = 1, #forms do s, ls = replace_all(s, ls, forms[i], "<redacted>") end
      s = scrub_fragments(s, ls, p.windows)
    end
  end
  s = gsub(s, "[Bb][Ee][Aa][Rr][Ee][Rr]%s+[%w%-%._~%+/=]+", "Bearer <redacted>")
  -- Basic credentials where an (Proxy-)Authorization line shows them: base64 of user:password.
  s = gsub(s, BASIC, "%1Basic <redacted>")
  -- Emails by shape before the sent words, so a sent name inside another address cannot break
  -- that address apart and leave its rest readable.
  s = emails(s)
  local pii = ctx and ctx.pii
  if pii then
    for i = 1, #pii do
      local v = pii[i]
      if type(v) == "string" and #v >= 2 then s = replace_words(s, v, "<pii>") end
    end
    s = scrub_digit_runs(s, sent_digits(pii))
  end
  return redact_phones(s)
end

local function redact(s, ctx)
  s = gsub(scrub(s, ctx), "%c", " ")
  if #s > 300 then s = sub(s, 1, 297) .. "..." end
  return s
end
M.redact = redact

-- Strings of a decoded error body get the same rules as the message (secrets, the PII the
-- request sent, bearer tokens, emails, phone-shaped text), without the one-line cut, so
-- logging err.body or cjson.encode(err) is as safe as tostring(err). At any depth: the walk is
-- a loop over a list of tables still to copy (no recursion, so no depth limit of any stack), and
-- a table met twice (or a cycle) is copied once.
-- ctx.pii_key(k) (optional) names the person fields of an answer (a record of another guest in
-- a 409, say): every string under one is <pii> whole, at any depth, except the ids among them
-- (a GUID, a 24-hex id), which say which record it was. ctx.secret_key(k) (optional) names the
-- credential fields (accessToken, password, api_key): everything under one is <redacted>.
local HEX_ID = "^" .. ("%x"):rep(24) .. "$"
local function scrub_body(v, ctx)
  local pii_key, secret_key = ctx and ctx.pii_key, ctx and ctx.secret_key
  local copies, todo, under = {}, {}, {}
  -- A number the request sent as text (a phone) is PII where the answer gives it as a number.
  local sent = {}
  for i = 1, ctx and ctx.pii and #ctx.pii or 0 do
    local p = ctx.pii[i]
    if type(p) == "string" and find(p, "^%d+$") and #p >= 7 then sent[p] = true end
  end
  -- mark: nil, "pii" (under a person field) or "secret" (under a credential field)
  local function copy_of(x, mark, is_key)
    if type(x) == "string" then
      if mark == "secret" then return "<redacted>" end
      if mark == "pii" and not find(x, GUID) and not find(x, HEX_ID) then return "<pii>" end
      return (scrub(x, ctx))
    end
    if type(x) == "number" and not is_key then
      if mark == "secret" then return "<redacted>" end
      if mark or (x % 1 == 0 and x > -2 ^ 53 and x < 2 ^ 53 and sent[("%d"):format(x)]) then
        return "<pii>"
      end
      return x
    end
    if type(x) ~= "table" then return x end
    local c = copies[x]
    if not c then
      c = {}
      copies[x], todo[#todo + 1], under[x] = c, x, mark
    end
    return c
  end
  local function mark_of(k, mark)
    if mark == "secret" or (secret_key ~= nil and secret_key(k)) then return "secret" end
    if mark or (pii_key ~= nil and pii_key(k)) then return "pii" end
    return nil
  end
  -- The answer itself may be a string or a number (a bare phone) as well as a table.
  local root = copy_of(v)
  while #todo > 0 do
    local t = todo[#todo]
    todo[#todo] = nil
    local out, mark = copies[t], under[t]
    -- Keys too: a server may key its complaints by the email or phone it refused.
    for k, x in next, t do
      out[copy_of(k, nil, true)] = copy_of(x, mark_of(k, mark))
    end
    local mt = getmetatable(t)
    if type(mt) == "table" then setmetatable(out, mt) end
  end
  return root
end

-- Text fields that may hold what a server said; all are scrubbed at build and at print.
local TEXT_FIELDS = { "message", "field", "code", "request_id" }

function Error.__tostring(e)
  local parts = { "crm", tostring(e.kind) }
  if e.status then parts[#parts + 1] = tostring(e.status) end
  local head = concat(parts, " ") .. ": " .. redact(e.message or "error")
  local tail = {}
  if e.field then tail[#tail + 1] = "field=" .. redact(e.field):sub(1, 100) end
  if e.code then tail[#tail + 1] = "code=" .. redact(e.code):sub(1, 100) end
  if e.request_id then tail[#tail + 1] = "request_id=" .. redact(e.request_id):sub(1, 100) end
  if e.guid then tail[#tail + 1] = "guid=" .. redact(e.guid):sub(1, 100) end
  if type(e.ids) == "table" and #e.ids > 0 then
    local ids = {}
    for i = 1, math.min(#e.ids, 10) do ids[i] = redact(e.ids[i]):sub(1, 100) end
    if #e.ids > 10 then ids[#ids + 1] = "+" .. (#e.ids - 10) .. " more" end
    tail[#tail + 1] = "ids=" .. concat(ids, ",")
  end
  if e.outcome_unknown then tail[#tail + 1] = "outcome_unknown" end
  if type(e.attempts) == "number" and e.attempts > 1 then tail[#tail + 1] = "attempts=" .. e.attempts end
  if #tail > 0 then head = head .. " (" .. concat(tail, ", ") .. ")" end
  return head
end

--[[ new(kind, message, fields [, ctx]) -> error
  fields may carry status, field, code, request_id, retryable, retry_after, sent, attempts, guid,
  ids (the record ids the error is about), body (the decoded answer), outcome_unknown.
  ctx = {secrets, pii} (see redact): message, field, code and request_id are redacted with it
  now, and the body's strings are scrubbed by the same rules. The error keeps no reference to ctx. ]]
function M.new(kind, message, fields, ctx)
  local e = {}
  if fields then
    for k, v in pairs(fields) do e[k] = v end
  end
  e.kind = kind
  e.message = message
  if ctx then
    for i = 1, #TEXT_FIELDS do
      local k = TEXT_FIELDS[i]
      if e[k] ~= nil then e[k] = redact(e[k], ctx) end
    end
    if e.body ~= nil then e.body = scrub_body(e.body, ctx) end
  end
  if e.retryable == nil then e.retryable = false end
  return setmetatable(e, Error)
end

--- Attaches a field that is readable as `e[name]` but lives outside the error table.
-- @local
-- attach(e, name, value): a field readable as e[name] that lives outside the error table, so
-- pairs(e), cjson.encode(e) and crm.json.encode(e) never write it. For what holds customer data
-- a program may need to recover (a merge's report, the customer a merge produced).
local ATTACHED = setmetatable({}, { __mode = "k" })
function M.attach(e, name, value)
  local a = ATTACHED[e]
  if not a then
    a = {}
    ATTACHED[e] = a
  end
  a[name] = value
  return e
end
Error.__index = function(e, k)
  local m = Error[k]
  if m ~= nil then return m end
  local a = ATTACHED[e]
  return a and a[k]
end

--- Whether `v` is a crm error (`crm.is_error`).
-- @param v any value
-- @treturn boolean true for a value made by crm's error constructor, false for anything else
-- @usage if crm.is_error(res) then print(tostring(res)) end
function M.is(v)
  return type(v) == "table" and getmetatable(v) == Error
end

function M.validation(field, rule)
  return M.new("validation", field .. " " .. rule, { field = field })
end

-- Marks a write whose bytes reached the server but whose answer cannot be used: the server may
-- have acted. Sending it again could make a second record, so crm never does.
-- replayable: the write carries a client id (Toast's guid), so sending it again with that id
-- is safe; it keeps its `retryable` and the message says how to replay it.
function M.mark_unknown(e, replayable)
  if not replayable then
    -- Never retryable: sending it again is exactly what could make a second record.
    e.retryable = false
  end
  if not e.outcome_unknown then
    e.outcome_unknown = true
    e.message = (e.message or "error") .. (replayable
      and "; an attempt may have reached the server, so its outcome is unknown (sending it again"
        .. " with the same guid or idempotency_key is safe)"
      or "; the request may have reached the server, so it was not retried and its outcome is"
        .. " unknown")
  end
  return e
end

return M
