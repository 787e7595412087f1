// The outermost frame of the tools' main(): how a failure becomes a line on stderr and an exit
// status, the same in tierkvctl, tierkv-bench and tierkv-demo.
// Thread safety: call from the main thread.
#pragma once

#include <string_view>

#include "tierkv/status.h"

namespace tierkv::tools {

// 0 when `s` is Ok; otherwise prints "<tool>: <message>" on stderr and returns 1.
int exit_status(std::string_view tool, const Status& s);

// Returns body(argc, argv). Nothing in the tools throws on purpose (errors are Status values);
// this catches what the standard library may (bad_alloc), so that it is reported as
// "<tool>: <what>" with exit status 1 rather than aborting.
int run_guarded(std::string_view tool, int (*body)(int, char**), int argc, char** argv);

}  // namespace tierkv::tools
