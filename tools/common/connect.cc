#include "common/connect.h"

#include <cstdlib>

namespace tierkv::tools {

std::string resolve_socket_path(std::string_view flag) {
  if (!flag.empty()) return std::string(flag);
  const char* env = std::getenv("TIERKV_SOCKET");
  if (env != nullptr && env[0] != '\0') return env;
  return kDefaultSocketPath;
}

std::string socket_flag_help() {
  return std::string("daemon socket (default: $TIERKV_SOCKET, else ") + kDefaultSocketPath + ")";
}

Result<std::shared_ptr<Client>> connect_daemon(const std::string& socket_path,
                                               std::string_view client_name, bool populate) {
  ClientOptions options;
  options.socket_path = socket_path;
  options.client_name = std::string(client_name);
  options.populate = populate;
  auto client = Client::connect(options);
  if (client.ok()) return client;
  const Status& s = client.status();
  // The operator needs to know which daemon we looked for: say it unless the message already does.
  if (s.message().find(socket_path) != std::string::npos) return s;
  std::string prefix;
  switch (s.code()) {
    case StatusCode::kPermissionDenied:
      prefix = "tierkvd at " + socket_path + " refused this user";
      break;
    default:
      prefix = "cannot connect to tierkvd at " + socket_path;
  }
  return Status(s.code(), prefix + ": " + s.message());
}

}  // namespace tierkv::tools
