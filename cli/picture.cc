#include "picture.h"

#include <ft2build.h>
#include FT_FREETYPE_H
#include <png.h>

#include <algorithm>

#include "io/file_io.h"
#include "xattn/error.h"

namespace xattn::cli {

// One FreeType library and face, released together.
struct Picture::Font {
  FT_Library library = nullptr;
  FT_Face face = nullptr;
  ~Font() {
    if (face) FT_Done_Face(face);
    if (library) FT_Done_FreeType(library);
  }
};

Picture::Picture(int width, int height, Rgb background)
    : width_(width), height_(height), font_(std::make_unique<Font>()) {
  if (width < 1 || height < 1 || width > 16384 || height > 16384) {
    throw Error("picture: size must be 1 to 16384 pixels a side, got " + std::to_string(width) +
                " x " + std::to_string(height));
  }
  rgb_.resize(static_cast<size_t>(width) * height * 3);
  fill(0, 0, width, height, background);
  if (FT_Init_FreeType(&font_->library) != 0) throw Error("picture: FreeType failed to start");
  if (FT_New_Face(font_->library, XATTN_FONT, 0, &font_->face) != 0) {
    throw Error(std::string("picture: cannot load the font ") + XATTN_FONT +
                " (Debian's fonts-dejavu-core; scripts/setup installs it)");
  }
  set_font_size(14);
}

Picture::~Picture() = default;

void Picture::set_font_size(int pixels) { FT_Set_Pixel_Sizes(font_->face, 0, pixels); }

int Picture::ascent() const { return static_cast<int>(font_->face->size->metrics.ascender >> 6); }

int Picture::text_width(const std::string& text) {
  int w = 0;
  for (const unsigned char c : text) {
    if (FT_Load_Char(font_->face, c, FT_LOAD_DEFAULT) == 0) {
      w += static_cast<int>(font_->face->glyph->advance.x >> 6);
    }
  }
  return w;
}

void Picture::fill(int x, int y, int w, int h, Rgb colour) {
  const int x0 = std::max(0, x), x1 = std::min(width_, x + w);
  const int y0 = std::max(0, y), y1 = std::min(height_, y + h);
  for (int row = y0; row < y1; ++row) {
    for (int col = x0; col < x1; ++col) {
      uint8_t* p = &rgb_[(static_cast<size_t>(row) * width_ + col) * 3];
      p[0] = colour.r, p[1] = colour.g, p[2] = colour.b;
    }
  }
}

void Picture::text(int x, int y, const std::string& text, Rgb colour) {
  FT_Face face = font_->face;
  const uint8_t ink[3] = {colour.r, colour.g, colour.b};
  for (const unsigned char c : text) {
    if (FT_Load_Char(face, c, FT_LOAD_RENDER) != 0) continue;
    const FT_Bitmap& glyph = face->glyph->bitmap;
    const int left = x + face->glyph->bitmap_left, top = y - face->glyph->bitmap_top;
    for (unsigned row = 0; row < glyph.rows; ++row) {
      for (unsigned col = 0; col < glyph.width; ++col) {
        const int px = left + static_cast<int>(col), py = top + static_cast<int>(row);
        if (px < 0 || py < 0 || px >= width_ || py >= height_) continue;
        // The glyph's grey level is its coverage: blend the colour over what is there.
        const int alpha = glyph.buffer[row * glyph.pitch + col];
        uint8_t* p = &rgb_[(static_cast<size_t>(py) * width_ + px) * 3];
        for (int k = 0; k < 3; ++k) p[k] = static_cast<uint8_t>((ink[k] * alpha + p[k] * (255 - alpha)) / 255);
      }
    }
    x += static_cast<int>(face->glyph->advance.x >> 6);
  }
}

void Picture::save_png(const std::string& path) const {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(width_);
  image.height = static_cast<png_uint_32>(height_);
  image.format = PNG_FORMAT_RGB;
  png_alloc_size_t bytes = 0;  // first call: the size the encoded picture needs
  if (!png_image_write_to_memory(&image, nullptr, &bytes, 0, rgb_.data(), 0, nullptr)) {
    throw Error(path + ": cannot encode the PNG: " + image.message);
  }
  std::vector<uint8_t> encoded(bytes);
  if (!png_image_write_to_memory(&image, encoded.data(), &bytes, 0, rgb_.data(), 0, nullptr)) {
    throw Error(path + ": cannot encode the PNG: " + image.message);
  }
  io::write_atomically(path, [&](int fd) { io::write_fully(fd, encoded.data(), bytes, path); });
}

}  // namespace xattn::cli
