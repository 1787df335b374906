-- TableCheck customer images: upload on create and amend, the allowed types, destroying, the
-- refusal to change an existing image, and waiting for the asynchronous upload.
local crm = require "crm"
local images = require "crm.tablecheck.images"
local H = require "helper"

local MISSING = "0123456789abcdef01234567"

describe("TableCheck images", function()
  local c
  before_each(function()
    H.reset()
    c = H.tablecheck()
  end)

  local function with_images(urls)
    local list = {}
    for i, u in ipairs(urls) do list[i] = { image_upload_url = u } end
    return assert(c:create_customer(H.tc_customer { images = list }))
  end

  it("allows exactly the MIME types of the guide", function()
    assert.same({ "image/jpg", "image/jpeg", "image/png", "image/gif", "image/bmp", "image/heic",
                  "image/tiff", "image/webp", "image/svg+xml" }, images.MIME_TYPES)
    assert.equal("image/svg+xml", images.mime_type("https://x.test/a/logo.SVG?v=2#top"))
    assert.equal("image/tiff", images.mime_type("https://x.test/scan.tif"))
    assert.is_nil(images.mime_type("https://i.pravatar.cc/300"))
    assert.is_nil(images.mime_type("https://x.test/v1.2/photo"))
    assert.same({ false, "pdf" }, { images.mime_type("https://x.test/cv.pdf") })
  end)

  it("uploads on create and waits until every image has a url and variants", function()
    H.config { tablecheck_image_delay = 0.5 }
    -- the simulator finishes the uploads 0.5 s after it created them, which is after t0
    local t0 = require("crm.core").now()
    local cust = with_images { "https://i.pravatar.cc/300", "https://cdn.example.com/p/face.png" }
    assert.equal(2, #cust.images)
    assert.is_nil(cust.images[1].url) -- still uploading
    local done = assert(c:wait_for_images(cust.id, { timeout = 10, interval = 0.05 }))
    assert.is_true(require("crm.core").now() - t0 >= 0.45)
    assert.equal(2, #done)
    for _, img in ipairs(done) do
      assert.is_string(img.url)
      assert.equal(4, #img.image_variants)
    end
    assert.equal("image/png", done[2].content_type)
  end)

  it("times out listing the images still pending", function()
    H.config { tablecheck_image_delay = 60 }
    local cust = with_images { "https://i.pravatar.cc/300", "https://i.pravatar.cc/400" }
    local res, err = c:wait_for_images(cust.id, { timeout = 0.3, interval = 0.05 })
    assert.is_nil(res)
    assert.equal("timeout", err.kind)
    assert.equal("images_pending", err.code)
    assert.same({ cust.images[1].id, cust.images[2].id }, err.ids)
    assert.matches(cust.images[1].id, tostring(err), 1, true)
    assert.matches("2 image", tostring(err), 1, true)
  end)

  it("reads answers of an unexpected shape as decode errors or pending images, never Lua errors", function()
    local cust = assert(c:create_customer(H.tc_customer()))
    local path = "/api/crm/v1/customers/" .. cust.id
    H.fault { method = "GET", path = path, status = 200, count = 1,
              body = { customer = { id = cust.id, images = "none" } } }
    local ok, res, err = pcall(c.wait_for_images, c, cust.id, { timeout = 1 })
    assert(ok, res)
    assert.is_nil(res)
    assert.equal("decode", err.kind)
    H.fault { method = "GET", path = path, status = 200, count = 1,
              body = { customer = { id = cust.id, images = { 5, { id = "img" } } } } }
    ok, res, err = pcall(c.wait_for_images, c, cust.id, { timeout = 0 })
    assert(ok, res)
    assert.equal("images_pending", err.code)
    assert.same({ "?", "img" }, err.ids)
  end)

  it("returns at once for a customer without images, and 404 for an unknown one", function()
    local cust = assert(c:create_customer(H.tc_customer()))
    assert.same({}, assert(c:wait_for_images(cust.id)))
    local _, err = c:wait_for_images(MISSING, { timeout = 1 })
    assert.equal(404, err.status)
  end)

  it("uploads and destroys on amend in one request", function()
    local cust = with_images { "https://i.pravatar.cc/300", "https://i.pravatar.cc/400" }
    local keep, drop = cust.images[1].id, cust.images[2].id
    local updated = assert(c:update_customer(cust.id, { images = {
      { id = drop, _destroy = true },
      { image_upload_url = "https://cdn.example.com/new.webp" },
    } }))
    assert.equal(2, #updated.images)
    assert.equal(keep, updated.images[1].id)
    assert.not_equal(drop, updated.images[2].id)
    assert.equal("image/webp", updated.images[2].content_type)
  end)

  it("refuses to change an existing image, and other bad image entries, before sending", function()
    local cust = with_images { "https://i.pravatar.cc/300" }
    local id = cust.images[1].id
    local before = H.total()
    local amend_cases = {
      { { id = id, image_upload_url = "https://i.pravatar.cc/500" }, "images[1].image_upload_url",
        "cannot be changed" },
      { { id = id, url = "https://x.test/a.png" }, "images[1].url", "cannot be changed" },
      { { id = id }, "images[1]._destroy", "only be destroyed" },
      { { id = id, _destroy = false }, "images[1]._destroy" },
      { { _destroy = true }, "images[1].id", "required" },
      { { id = "img-1", _destroy = true }, "images[1].id", "hex" },
      { { image_upload_url = "https://x.test/cv.pdf" }, "images[1].image_upload_url", "not an allowed" },
      { { image_upload_url = "https://x.test/movie.MP4?x=1" }, "images[1].image_upload_url", ".mp4" },
      { { image_upload_url = "ftp://x.test/a.png" }, "images[1].image_upload_url", "http" },
      { { image_upload_url = "https://x.test/a b.png" }, "images[1].image_upload_url" },
      { {}, "images[1].image_upload_url", "required" },
      { "https://x.test/a.png", "images[1]", "object" },
    }
    for _, case in ipairs(amend_cases) do
      local res, err = c:update_customer(cust.id, { images = { case[1] } })
      assert.is_nil(res)
      assert.equal("validation", err.kind)
      assert.equal(case[2], err.field)
      if case[3] then assert.matches(case[3], err.message, 1, true) end
    end
    local res, err = c:create_customer(H.tc_customer { images = { { id = id, _destroy = true } } })
    assert.is_nil(res)
    assert.equal("images[1].id", err.field)
    assert.equal(before, H.total())
    assert.equal(1, #assert(c:get_customer(cust.id)).images)
  end)

  it("accepts every allowed extension and URLs without one", function()
    local urls = {}
    for _, ext in ipairs { "jpg", "JPEG", "jpe", "jfif", "png", "gif", "bmp", "heic", "tif", "tiff", "webp",
                          "svg" } do
      urls[#urls + 1] = "https://cdn.example.com/img/photo." .. ext .. "?size=big"
    end
    urls[#urls + 1] = "https://i.pravatar.cc/300"
    local cust = with_images(urls)
    assert.equal(#urls, #cust.images)
  end)

  it("uploads images on reservations too, with the same checks", function()
    local r = assert(c:create_reservation { shop_id = H.tc.shop_ids[1], pax = 2,
      start_at = "2030-01-01T19:00:00Z", images = { { image_upload_url = "https://x.test/menu.png" } } })
    assert.equal(1, #r.images)
    local _, err = c:update_reservation(r.id, { images = {
      { id = r.images[1].id, image_upload_url = "https://x.test/b.png" } } })
    assert.equal("images[1].image_upload_url", err.field)
    local updated = assert(c:update_reservation(r.id, { images = { { id = r.images[1].id, _destroy = true } } }))
    assert.same({}, updated.images)
  end)

  it("does not repeat an amend that uploads", function()
    local cust = assert(c:create_customer(H.tc_customer()))
    local path = "/api/crm/v1/customers/" .. cust.id
    H.fault { method = "PUT", path = path, status = 503, count = 1 }
    local _, err = c:update_customer(cust.id, { images = { { image_upload_url = "https://x.test/a.png" } } })
    assert.equal(503, err.status)
    assert.equal(1, H.count("PUT " .. path))
    assert.equal(crm.is_error(err), true)
  end)
end)
