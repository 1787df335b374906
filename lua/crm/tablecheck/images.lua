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
  return nil, errors.new("timeout", #pending.ids .. " image(s) still uploading after " .. timeout
    .. "s (no url or image_variants yet)", { code = "images_pending", ids = pending.ids,
    images = pending.images })
end

return M
