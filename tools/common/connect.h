// How the tools find and reach tierkvd: the socket path rule and an error message an operator can
// act on ("tierkvd is not running at /run/tierkv/tierkvd.sock: connect: No such file or
// directory"). Thread safety: pure functions (connect_daemon makes one connection per call).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "tierkv/client.h"

namespace tierkv::tools {

// `flag` if given, else $TIERKV_SOCKET if set and non-empty, else kDefaultSocketPath; the same
// rule ClientOptions applies, resolved here so messages can name the path.
std::string resolve_socket_path(std::string_view flag);
// The help text of a --socket flag resolved by resolve_socket_path().
std::string socket_flag_help();

// Connects as `client_name`. On failure the Status message names the socket path and says whether
// the daemon looks absent (nothing listening) or refused us.
Result<std::shared_ptr<Client>> connect_daemon(const std::string& socket_path,
                                               std::string_view client_name, bool populate);

}  // namespace tierkv::tools
