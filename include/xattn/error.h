#pragma once
// The one exception type every public entry point throws for bad input.

#include <stdexcept>
#include <string>

namespace xattn {

// Thrown before anything is computed or written. The message names the argument, the dimension,
// what was expected and what was given, e.g. "k: dim 3 (D) must equal q's D = 64, got 32". Also
// thrown for requests the machine cannot serve: working memory beyond its physical memory
// (before allocating), or an allocation that fails ("<entry point>: out of memory").
class Error : public std::invalid_argument {
 public:
  explicit Error(const std::string& message) : std::invalid_argument(message) {}
};

}  // namespace xattn
