// DaemonConfig: every option of tierkvd, read from a TOML file.
//
// The embedded default configuration (default_config_toml()) is the one place each option is
// documented: it is what `tierkvd --print-default-config` prints and what the README renders.
// Parsing rejects unknown keys and bad values with a message naming the key, the value and the
// line. Thread safety: plain values.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tierkv/scheduler/cache_engine.h"
#include "tierkv/scheduler/prefill_service.h"
#include "tierkv/status.h"

namespace tierkv::daemon {

struct DaemonConfig {
  // [server]
  std::string socket_path = "/run/tierkv/tierkvd.sock";
  uint32_t socket_mode = 0666;
  std::vector<uint32_t> allowed_uids;  // besides the daemon's own uid and root
  uint32_t max_clients = 1024;
  // [host], [cache]
  scheduler::CacheOptions cache;
  // [prefill]
  scheduler::PrefillOptions prefill;
  // [log]
  std::string log_level = "info";
};

// The commented default configuration file.
std::string_view default_config_toml();

// Parses TOML text; `origin` names the file in messages.
Result<DaemonConfig> parse_config(std::string_view toml_text, std::string_view origin);
Result<DaemonConfig> load_config_file(const std::string& path);

// "2GiB", "512MiB", "64KiB", "1TiB", "4096" (bytes), "10GB" (decimal); or a plain integer.
Result<uint64_t> parse_size(std::string_view text);
std::string format_size(uint64_t bytes);  // "2 GiB", "1.5 MiB"

}  // namespace tierkv::daemon
