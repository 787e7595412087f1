// tierkvctl's subcommands: each reads what it needs from tierkvd and prints it, aligned for a
// terminal or, with --json, as exactly one JSON object on stdout. Errors go back as a Status; main
// prints them on stderr and exits non-zero.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "tierkv/status.h"

namespace tierkv::ctl {

struct GlobalOptions {
  std::string socket_path;  // resolved: --socket, $TIERKV_SOCKET or the default
  bool json = false;
};

struct InspectOptions {
  std::string ns;  // as typed: hex, with or without 0x
  std::string tokens_file;
};

struct EvictOptions {
  std::string ns;
  std::string tokens_file;  // empty = the whole namespace
  bool remove = false;      // --delete: from every tier, not only the memory tiers
};

Status run_status(const GlobalOptions& g);
Status run_stats(const GlobalOptions& g);
Status run_ls(const GlobalOptions& g);
Status run_inspect(const GlobalOptions& g, const InspectOptions& o);
Status run_evict(const GlobalOptions& g, const EvictOptions& o);
// NVMe tier: write every host chunk down and wait, with progress; scrub every chunk's checksum.
Status run_flush(const GlobalOptions& g);
Status run_verify(const GlobalOptions& g);

}  // namespace tierkv::ctl
