--- TableCheck customer images: which upload URLs may be sent (the MIME types the API accepts, read
-- from the URL's extension), and waiting until the asynchronous uploads have finished.
-- `TableCheck:wait_for_images` calls `wait`. Also `require("crm.tablecheck").images`.
-- @module crm.tablecheck.images
local errors = require "crm.error"
local retry = require "crm.retry"
local validate = require "crm.validate"

local M = {}

local type, concat = type, table.concat

--- Exactly the types the TableCheck guide allows for image_upload_url.
-- @table MIME_TYPES
M.MIME_TYPES = { "image/jpg", "image/jpeg", "image/png", "image/gif", "image/bmp", "image/heic",
                 "image/tiff", "image/webp", "image/svg+xml" }

--- File extensions that name one of those types: `{[ext] = mime}`.
-- @table EXTENSIONS
M.EXTENSIONS = {
  jpg = "image/jpg", jpeg = "image/jpeg", jpe = "image/jpeg", jfif = "image/jpeg",
  png = "image/png", gif = "image/gif", bmp = "image/bmp",
  heic = "image/heic", tif = "image/tiff", tiff = "image/tiff", webp = "image/webp",
  svg = "image/svg+xml",
}

--- The extension of a URL's last path segment, lower-cased.
-- ("https://i.pravatar.cc/300" has none; query and fragment are ignored).
-- @tparam string url
-- @treturn ?string the extension, or `nil` when it has none
function M.extension(url)
  local path = url:match("^%a[%w+.%-]*://[^/?#]*([^?#]*)") or ""
  local last = path:match("([^/]*)$")
  local ext = last:match("^[^.].*%.([^.]*)$")
  if ext == nil or ext == "" then return nil end
  return ext:lower()
end

--- The MIME type a URL's extension names.
-- @tparam string url
-- @treturn[1] string the MIME type
-- @return[2] `nil` when the URL has no extension
-- @return[3] `false`
-- @treturn[3] string the extension, which is not an allowed type
function M.mime_type(url)
  local ext = M.extension(url)
  if ext == nil then return nil end
  local mime = M.EXTENSIONS[ext]
  if mime then return mime end
  return false, ext
end

--- Checks one image_upload_url: an http(s) URL whose extension, if any, is an allowed type.
-- @tparam string url
-- @tparam string field the name for the error (e.g. `"images[1].image_upload_url"`)
-- @treturn ?Error `nil` when it may be sent, else a `validation` error naming `field`
function M.check_upload_url(url, field)
  local e = validate.http_url(url, field)
  if e then return e end
  local ok, ext = M.mime_type(url)
  if ok == false then
    local shown = #ext <= 10 and ext:find("^[%w%+%-]+$") and ("." .. ext .. " ") or ""
    return validate.fail(field, "has an extension " .. shown .. "that is not an allowed image type"
      .. " (allowed: " .. concat(M.MIME_TYPES, ", ") .. "; a URL without an extension is accepted)")
  end
  return nil
end

-- ---- the public host rule ----

local floor, tonumber = math.floor, tonumber

-- One label of an IPv4 address as inet_aton and URL parsers read it: decimal, 0x hex (a bare
-- "0x" is 0) or 0-led octal. nil when the label is not a number in any of those spellings.
local function ipv4_part(label)
  if label:find("^0[xX]%x*$") then return #label == 2 and 0 or tonumber(label:sub(3), 16) end
  if label:find("^0%d+$") then
    if label:find("[89]") then return nil end
    return tonumber(label, 8)
  end
  if label:find("^%d+$") then return tonumber(label) end
  return nil
end

-- ipv4(host) -> the address as a number 0..2^32-1 | false (it ends in a number but is not a
-- valid address: refused) | nil (a name). 127.1, 0x7f.0.0.1, 2130706433 and 017700000001 are
-- all 127.0.0.1, as resolvers and browsers read them.
local function ipv4(host)
  local labels = {}
  for l in (host .. "."):gmatch("([^.]*)%.") do labels[#labels + 1] = l end
  if labels[#labels] == "" and #labels > 1 then labels[#labels] = nil end
  if not ipv4_part(labels[#labels]) and not labels[#labels]:find("^0[xX]") then return nil end
  if #labels > 4 then return false end
  local n, value = #labels, 0
  for i = 1, n do
    local part = ipv4_part(labels[i])
    if part == nil then return false end
    if i < n then
      if part > 255 then return false end
      value = value * 256 + part
    else
      local room = 256 ^ (5 - n)
      if part >= room then return false end
      value = value * room + part
    end
  end
  return value
end

-- The IPv4 ranges no public image lives in: {first octets as a number, prefix length}.
local V4_BLOCKED = {
  { 0, 8, "unspecified (0.0.0.0/8)" }, { 10 * 2 ^ 24, 8, "private (10/8)" },
  { 100 * 2 ^ 24 + 64 * 2 ^ 16, 10, "CGNAT (100.64/10)" }, { 127 * 2 ^ 24, 8, "loopback (127/8)" },
  { 169 * 2 ^ 24 + 254 * 2 ^ 16, 16, "link-local (169.254/16)" },
  { 172 * 2 ^ 24 + 16 * 2 ^ 16, 12, "private (172.16/12)" }, { 192 * 2 ^ 24, 24, "reserved (192.0.0/24)" },
  { 192 * 2 ^ 24 + 0 * 2 ^ 16 + 2 * 2 ^ 8, 24, "documentation (192.0.2/24)" },
  { 192 * 2 ^ 24 + 168 * 2 ^ 16, 16, "private (192.168/16)" },
  { 198 * 2 ^ 24 + 18 * 2 ^ 16, 15, "benchmarking (198.18/15)" },
  { 198 * 2 ^ 24 + 51 * 2 ^ 16 + 100 * 2 ^ 8, 24, "documentation (198.51.100/24)" },
  { 203 * 2 ^ 24 + 113 * 2 ^ 8, 24, "documentation (203.0.113/24)" },
  { 224 * 2 ^ 24, 4, "multicast (224/4)" }, { 240 * 2 ^ 24, 4, "reserved (240/4)" },
}

-- Why an IPv4 address (a number) is not public, or nil.
local function v4_blocked(a)
  for _, b in ipairs(V4_BLOCKED) do
    local size = 2 ^ (32 - b[2])
    if floor(a / size) == floor(b[1] / size) then return b[3] end
  end
  return nil
end

-- ipv6(text) -> {8 groups} | nil: the text between the brackets, "::" and a dotted IPv4 tail
-- allowed, no zone.
local function ipv6(text)
  if text:find("[^%x:.]") then return nil end
  local head, tail = text, nil
  local dc = text:find("::", 1, true)
  if dc then
    head, tail = text:sub(1, dc - 1), text:sub(dc + 2)
    if tail:find("::", 1, true) then return nil end
  end
  local function groups(part, out)
    if part == "" then return out end
    for g in (part .. ":"):gmatch("([^:]*):") do
      if g:find("%.") then
        local v4 = g:find("^%d+%.%d+%.%d+%.%d+$") and ipv4(g)
        if not v4 then return nil end
        out[#out + 1], out[#out + 2] = floor(v4 / 65536), v4 % 65536
      elseif g:find("^%x%x?%x?%x?$") then
        out[#out + 1] = tonumber(g, 16)
      else
        return nil
      end
    end
    return out
  end
  local h = groups(head, {})
  local t = tail and groups(tail, {})
  if not h or (tail and not t) then return nil end
  local out = {}
  for i = 1, #h do out[i] = h[i] end
  if tail then
    if #h + #t > 7 then return nil end
    for _ = 1, 8 - #h - #t do out[#out + 1] = 0 end
    for i = 1, #t do out[#out + 1] = t[i] end
  end
  if #out ~= 8 then return nil end
  return out
end

-- Why an IPv6 address (8 groups) is not public, or nil. Addresses that carry an IPv4 one
-- (mapped ::ffff:0:0/96, compatible ::/96, NAT64 64:ff9b::/96, 6to4 2002::/16) are judged by it.
local function v6_blocked(g)
  local zeros5 = g[1] == 0 and g[2] == 0 and g[3] == 0 and g[4] == 0 and g[5] == 0
  if zeros5 and (g[6] == 0 or g[6] == 0xffff) then
    if g[6] == 0 and g[7] == 0 and (g[8] == 0 or g[8] == 1) then
      return g[8] == 0 and "unspecified (::)" or "loopback (::1)"
    end
    return v4_blocked(g[7] * 65536 + g[8])
  end
  if g[1] == 0x64 and g[2] == 0xff9b and g[3] == 0 and g[4] == 0 and g[5] == 0 and g[6] == 0 then
    return v4_blocked(g[7] * 65536 + g[8])
  end
  if g[1] == 0x2002 then return v4_blocked(g[2] * 65536 + g[3]) end
  local first = g[1]
  if floor(first / 64) == floor(0xfe80 / 64) then return "link-local (fe80::/10)" end
  if floor(first / 64) == floor(0xfec0 / 64) then return "site-local (fec0::/10)" end
  if floor(first / 512) == floor(0xfc00 / 512) then return "unique local (fc00::/7)" end
  if floor(first / 256) == 0xff then return "multicast (ff00::/8)" end
  if first == 0x2001 and g[2] == 0x0db8 then return "documentation (2001:db8::/32)" end
  if first == 0x100 and g[2] == 0 and g[3] == 0 and g[4] == 0 then return "discard (100::/64)" end
  return nil
end

-- host_problem(url) -> why the URL's host is not a public one | nil.
local function host_problem(url)
  local authority = url:match("^%a[%w+.%-]*://([^/?#]*)") or ""
  local host = authority:match("^.*@(.*)$") or authority
  if host:sub(1, 1) == "[" then
    local inside = host:match("^%[([^%]]*)%]")
    if not inside then return "its IPv6 address is not closed by ]" end
    if inside:find("%", 1, true) then return "it is a link-local IPv6 address with a zone" end
    local g = ipv6(inside)
    if not g then return "it is not a valid IPv6 address" end
    local why = v6_blocked(g)
    return why and ("it is a " .. why .. " address") or nil
  end
  host = (host:match("^([^:]*)") or ""):lower()
  if host:find("[^%w%-%._]") then return "it holds characters a host name does not have" end
  local v4 = ipv4(host)
  if v4 == false then return "it ends in a number but is not a valid IPv4 address" end
  if v4 then
    local why = v4_blocked(v4)
    return why and ("it is a " .. why .. " address") or nil
  end
  local name = host:gsub("%.$", "")
  if name == "localhost" or name:find("%.localhost$") then return "localhost names this machine" end
  if name == "" or not name:find(".", 1, true) or name:find("^%.") or name:find("%.%.") then
    return "a single-label host is not a public name"
  end
  return nil
end

--- Checks that an image_upload_url names a public host: TableCheck fetches the image from it
-- ("the publicly accessible URL of the image"). Refused: loopback, private, link-local, CGNAT,
-- unspecified (and multicast, reserved, documentation) IPv4 and IPv6 literals in every
-- spelling (`127.1`, `0x7f.0.0.1`, `2130706433`, `017700000001`, `[::ffff:127.0.0.1]`, `[::1]`,
-- `[fe80::1]`, `[fc00::1]`), `localhost`, `localhost.`, `*.localhost` and single-label hosts.
-- The client option `allow_private_image_urls = true` skips this check (tests against a local
-- server).
-- @tparam string url an http(s) URL (already checked by `check_upload_url`)
-- @tparam string field the name for the error
-- @treturn ?Error `nil` when the host is public, else a `validation` error naming `field`
function M.check_public_host(url, field)
  if type(url) ~= "string" then return nil end
  local why = host_problem(url)
  if why == nil then return nil end
  return validate.fail(field, "must name a public host (" .. why .. "); TableCheck fetches the image"
    .. " from there. A test against a local server can pass allow_private_image_urls = true")
end

--- Whether an image is uploaded: it has a url and at least one variant.
-- @tparam table image an entry of a customer's `images`
-- @treturn boolean
function M.is_ready(image)
  return type(image) == "table" and type(image.url) == "string" and image.url ~= ""
    and type(image.image_variants) == "table" and #image.image_variants > 0
end

--- The ids of the images that are still uploading.
-- @tparam {table,...} list a customer's `images`
-- @treturn {string,...} the ids (`"?"` for an entry without one)
function M.pending_ids(list)
  local out = {}
  for i = 1, #list do
    local img = list[i]
    if not M.is_ready(img) then out[#out + 1] = tostring(type(img) == "table" and img.id or "?") end
  end
  return out
end

--- `TableCheck:wait_for_images`, as a function of the client.
-- Polls the customer until every image has url and image_variants.
-- @tparam crm.tablecheck.TableCheck client the client
-- @tparam string customer_id
-- @tparam[opt] table opts `{timeout = 60, interval = 0.25, max_interval = 5}`
-- @treturn[1] {table,...} the images
-- @return[2] `nil`
-- @treturn[2] Error as for `TableCheck:wait_for_images` (`code = "images_pending"`, `ids`, `images`)
function M.wait(client, customer_id, opts)
  local e = validate.id(customer_id, "customer_id") or validate.wait_options(opts, "options")
  if e then return nil, e end
  opts = opts or {}
  local timeout = opts.timeout or 60
  local images, err, pending = retry.poll(client.clock,
    { timeout = timeout, interval = opts.interval, max_interval = opts.max_interval },
    function()
      local customer, cerr = client:get_customer(customer_id)
      if not customer then return nil, cerr end
      local list = customer.images or {}
      if type(list) ~= "table" then
        return nil, errors.new("decode", "response has a customer whose images is not an array")
      end
      local ids = M.pending_ids(list)
      if #ids == 0 then return list end
      return nil, nil, { ids = ids, images = list }
    end)
  if images then return images end
  if err then return nil, err end
  -- The images (a guest's photos, by URL) are readable as err.images but off the error table.
  return nil, errors.attach(errors.new("timeout", #pending.ids .. " image(s) still uploading after "
    .. timeout .. "s (no url or image_variants yet)", { code = "images_pending", ids = pending.ids }),
    "images", pending.images)
end

return M
