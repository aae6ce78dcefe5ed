#pragma once
// Allocation failures at the public entry points become xattn::Error, so that callers catch one
// exception type for every request the library cannot serve. Requests far beyond the machine's
// memory are refused earlier, before anything is allocated (core::check_memory); this catches the
// rest: an address-space limit (RLIMIT_AS), memory held by other processes.

#include <new>
#include <stdexcept>
#include <string>
#include <utility>

#include "xattn/error.h"

namespace xattn::core {

// f(), with std::bad_alloc (and std::length_error, a container asked for more than it can ever
// hold) rethrown as xattn::Error naming `what`. Outputs may then be partly written.
template <class F>
decltype(auto) translate_allocation_failure(const char* what, F&& f) {
  try {
    return std::forward<F>(f)();
  } catch (const std::bad_alloc&) {
    throw Error(std::string(what) + ": out of memory");
  } catch (const std::length_error&) {
    throw Error(std::string(what) + ": out of memory (a buffer larger than the address space)");
  }
}

}  // namespace xattn::core
