#include "text_values.h"

#include <charconv>
#include <cmath>

#include "xattn/error.h"

namespace xattn::cli {

std::string trim(std::string_view s) {
  const size_t b = s.find_first_not_of(" \t");
  if (b == std::string_view::npos) return {};
  return std::string(s.substr(b, s.find_last_not_of(" \t") - b + 1));
}

bool to_int(const std::string& text, int64_t& out) {
  const std::string t = trim(text);
  const char* end = t.data() + t.size();
  const auto r = std::from_chars(t.data(), end, out);
  return !t.empty() && r.ec == std::errc() && r.ptr == end;
}

std::vector<int64_t> parse_int_list(const std::string& option, const std::string& text) {
  std::vector<int64_t> values;
  size_t start = 0;
  while (true) {
    const size_t comma = text.find(',', start);
    int64_t v = 0;
    if (!to_int(text.substr(start, comma - start), v)) {
      throw Error(option + ": expected comma-separated integers, got '" + text + "'");
    }
    values.push_back(v);
    if (comma == std::string::npos) return values;
    start = comma + 1;
  }
}

template <class T>
T parse_finite(const std::string& option, const std::string& text) {
  const std::string t = trim(text);
  T value{};
  const auto r = std::from_chars(t.data(), t.data() + t.size(), value);
  if (t.empty() || r.ec != std::errc() || r.ptr != t.data() + t.size() || !std::isfinite(value)) {
    throw Error(option + ": expected a finite number, got '" + text + "'");
  }
  return value;
}

template float parse_finite<float>(const std::string&, const std::string&);
template double parse_finite<double>(const std::string&, const std::string&);

int parse_threads(const std::string& text, bool zero_is_default) {
  int64_t n = 0;
  const int64_t least = zero_is_default ? 0 : 1;
  if (!to_int(text, n) || n < least || n > kMaxThreads)
    throw Error("--threads: expected an integer from " +
                std::string(zero_is_default ? "0 (default)" : "1") + " to " +
                std::to_string(kMaxThreads) + ", got '" + text + "'");
  return static_cast<int>(n);
}

}  // namespace xattn::cli
