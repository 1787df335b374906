-- The command line's two streams: JSON Lines on stdout, one redacted line per error on stderr,
-- and the exit code that names an error's kind.
local crm = require "crm"
local errors = require "crm.error"

local M = {}

local json = crm.json
local concat, type, tostring = table.concat, type, tostring

-- Exit codes: 0 ok, 2 usage or validation, 3 auth, 4 http, 5 transport, 6 timeout, 7 decode,
-- 8 outcome unknown (it wins over the kind: the server may have acted), 9 the simulator
-- (`crm sim`: nginx would not start, the port is taken, ...), 130 interrupted.
M.EXIT = { ok = 0, validation = 2, auth = 3, http = 4, transport = 5, timeout = 6, decode = 7,
           outcome_unknown = 8, sim = 9, interrupted = 130 }

function M.exit_code(err)
  if type(err) ~= "table" then return 1 end
  if err.outcome_unknown then return M.EXIT.outcome_unknown end
  return M.EXIT[err.kind] or 1
end

-- The stream settings of this run: pretty (indented JSON for one object), json_errors, and the
-- progress display to clear before a line is written to stderr.
local state = { pretty = false, json_errors = false, progress = nil, out = io.stdout, err = io.stderr }

function M.configure(opts)
  for k, v in pairs(opts) do state[k] = v end
end

function M.set_progress(p) state.progress = p end

-- Indents JSON text (crm.json's output) without decoding it again, so [] stays [] and numbers
-- keep their digits.
local function indent(text)
  local out, depth, i, n = {}, 0, 1, #text
  local function newline() out[#out + 1] = "\n" .. string.rep("  ", depth) end
  while i <= n do
    local c = text:sub(i, i)
    if c == '"' then
      local j = i + 1
      while j <= n do
        local d = text:sub(j, j)
        if d == "\\" then j = j + 2
        elseif d == '"' then break
        else j = j + 1 end
      end
      out[#out + 1] = text:sub(i, j)
      i = j + 1
    elseif c == "{" or c == "[" then
      local close = c == "{" and "}" or "]"
      if text:sub(i + 1, i + 1) == close then
        out[#out + 1] = c .. close
        i = i + 2
      else
        out[#out + 1] = c
        depth = depth + 1
        newline()
        i = i + 1
      end
    elseif c == "}" or c == "]" then
      depth = depth - 1
      newline()
      out[#out + 1] = c
      i = i + 1
    elseif c == "," then
      out[#out + 1] = ","
      newline()
      i = i + 1
    elseif c == ":" then
      out[#out + 1] = ": "
      i = i + 1
    else
      local j = text:find('[",:{}%[%]]', i) or n + 1
      out[#out + 1] = text:sub(i, j - 1)
      i = j
    end
  end
  return concat(out)
end
M.indent = indent

-- line(value) -> true | nil, err: one JSON object on stdout (indented with --pretty).
function M.line(value)
  local text, err = json.encode(value)
  if not text then return nil, err end
  -- cjson writes "/" as "\/"; a slash needs no escape, and paths and URLs read better without.
  -- Only a backslash that escapes a slash goes: one preceded by an odd run of backslashes.
  text = text:gsub("(\\+)/", function(bs) if #bs % 2 == 1 then return bs:sub(2) .. "/" end end)
  if state.pretty then text = indent(text) end
  local ok, werr = state.out:write(text, "\n")
  if not ok then
    return nil, errors.new("transport", "writing to stdout failed: " .. tostring(werr), { code = "write_failed" })
  end
  return true
end

function M.flush() state.out:flush() end

-- note(text): one line on stderr (progress, summaries, dry runs); the progress bar is cleared
-- first so the line is not drawn over.
function M.note(text)
  if state.progress then state.progress:clear() end
  state.err:write(text, "\n")
  state.err:flush()
end

-- The fields of an error that --json-errors writes; every text goes through crm.error's
-- redaction once more (the shape rules: bearer tokens, emails, phone-shaped text).
local FIELDS = { "kind", "status", "code", "field", "request_id", "retryable", "outcome_unknown",
                 "attempts", "guid", "pending", "sent", "retry_after", "expired_by", "scroll_lost" }

function M.error_object(err)
  local o = { error = errors.redact(tostring(err)) }
  for _, k in ipairs(FIELDS) do
    local v = err[k]
    if type(v) == "string" then v = errors.redact(v) end
    if type(v) == "string" or type(v) == "number" or type(v) == "boolean" then o[k] = v end
  end
  if type(err.message) == "string" then o.message = errors.redact(err.message) end
  if type(err.ids) == "table" then
    local ids = {}
    for i = 1, #err.ids do ids[i] = errors.redact(tostring(err.ids[i])) end
    o.ids = json.array(ids)
  end
  o.exit = M.exit_code(err)
  return o
end

-- error(err [, prefix]): the one stderr line of a failure, tostring(err) or its JSON form.
function M.error(err, prefix)
  if state.progress then state.progress:clear() end
  local text
  if state.json_errors then
    local o = M.error_object(err)
    if prefix then o.context = errors.redact(prefix) end
    text = json.encode(o) or '{"error":"unprintable error"}'
  else
    text = (prefix and (errors.redact(prefix) .. ": ") or "") .. errors.redact(tostring(err))
  end
  state.err:write(text, "\n")
  state.err:flush()
end

-- text(v): a value for a stderr line; a whole number as an integer whatever its Lua type
-- (page=0, not page=0.0).
function M.text(v)
  if type(v) == "number" and v % 1 == 0 and v > -2 ^ 53 and v < 2 ^ 53 then return ("%d"):format(v) end
  return tostring(v)
end

-- A command-line mistake (unknown flag, bad value, unreadable input): a validation error.
function M.usage_error(message, field)
  return errors.new("validation", message, { field = field, code = "usage" })
end

return M
