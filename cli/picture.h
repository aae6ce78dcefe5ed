#pragma once
// An RGB picture to draw charts on: filled rectangles, text (FreeType, DejaVu Sans) and a PNG
// file (libpng), written atomically.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace xattn::cli {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
};

class Picture {
 public:
  // Throws xattn::Error when the font cannot be loaded.
  Picture(int width, int height, Rgb background);
  ~Picture();
  Picture(const Picture&) = delete;
  Picture& operator=(const Picture&) = delete;

  // The pixel size text is drawn at, from now on.
  void set_font_size(int pixels);
  // Width in pixels of `text` at the current size.
  int text_width(const std::string& text);
  // Pixels from the top of a line of text to its baseline, at the current size.
  int ascent() const;

  void fill(int x, int y, int w, int h, Rgb colour);  // clipped to the picture
  // Draws `text` with its baseline at y, starting at x; anti-aliased, clipped.
  void text(int x, int y, const std::string& text, Rgb colour);

  // Writes the picture as an 8-bit RGB PNG: `path` is replaced whole or left as it was.
  void save_png(const std::string& path) const;

 private:
  struct Font;
  int width_, height_;
  std::vector<uint8_t> rgb_;
  std::unique_ptr<Font> font_;
};

}  // namespace xattn::cli
