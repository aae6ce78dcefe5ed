#pragma once
// Option values arrive as text and are parsed here, so every command refuses a bad value with a
// message in one style that names the option ("--scale: expected a finite number, got 'x'").

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace xattn::cli {

// More threads than this is a typo, and OpenMP would try to start them all.
inline constexpr int64_t kMaxThreads = 1024;

// `s` without leading and trailing blanks.
std::string trim(std::string_view s);

// The whole of `text` (blanks around it allowed) as a decimal integer; false if it is not one.
bool to_int(const std::string& text, int64_t& out);

// The value of a command's --threads: an integer from 1 (or 0, meaning the default, where
// zero_is_default) to kMaxThreads. Throws xattn::Error "--threads: expected an integer from ...".
int parse_threads(const std::string& text, bool zero_is_default = false);

// "3,4,5" -> {3, 4, 5}. Throws xattn::Error "<option>: expected comma-separated integers, ...".
std::vector<int64_t> parse_int_list(const std::string& option, const std::string& text);

// A finite float or double. Throws xattn::Error "<option>: expected a finite number, got ...".
template <class T>
T parse_finite(const std::string& option, const std::string& text);

}  // namespace xattn::cli
