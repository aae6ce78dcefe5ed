#pragma once
// The whole public API of xattn.

#include "xattn/attention.h"    // IWYU pragma: export
#include "xattn/criss_cross.h"  // IWYU pragma: export
#include "xattn/error.h"        // IWYU pragma: export
#include "xattn/half.h"         // IWYU pragma: export
#include "xattn/params.h"       // IWYU pragma: export
#include "xattn/runtime.h"      // IWYU pragma: export
#include "xattn/tensor.h"       // IWYU pragma: export
