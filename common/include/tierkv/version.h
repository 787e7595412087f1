// The tierkv release, shown by every binary's --version and exchanged in the handshake.
#pragma once

namespace tierkv {
inline constexpr const char* kVersion = "0.1.0";
}  // namespace tierkv
