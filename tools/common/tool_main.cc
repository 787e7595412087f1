#include "common/tool_main.h"

#include <cstdio>
#include <exception>

namespace tierkv::tools {
namespace {

void report(std::string_view tool, const char* message) {
  std::fprintf(stderr, "%.*s: %s\n", static_cast<int>(tool.size()), tool.data(), message);
}

}  // namespace

int exit_status(std::string_view tool, const Status& s) {
  if (s.ok()) return 0;
  report(tool, s.message().c_str());
  return 1;
}

int run_guarded(std::string_view tool, int (*body)(int, char**), int argc, char** argv) {
  try {
    return body(argc, argv);
  } catch (const std::exception& e) {
    report(tool, e.what());
    return 1;
  }
}

}  // namespace tierkv::tools
