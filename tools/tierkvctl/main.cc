// tierkvctl: the admin CLI of tierkvd. See commands.h; `tierkvctl --help` lists the subcommands.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "common/connect.h"
#include "common/tool_main.h"
#include "tierkvctl/commands.h"

namespace {

int run_main(int argc, char** argv) {
  using namespace tierkv::ctl;
  CLI::App app{"tierkvctl: inspect and administer a running tierkvd"};
  app.set_version_flag("--version", TIERKV_VERSION);
  app.require_subcommand(1);
  // Global options may follow the subcommand too ("tierkvctl stats --json").
  app.fallthrough();

  std::string socket_flag;
  GlobalOptions g;
  app.add_option("--socket", socket_flag, tierkv::tools::socket_flag_help());
  app.add_flag("--json", g.json, "print exactly one JSON object on stdout");

  auto* status = app.add_subcommand("status", "daemon version, pid, uptime, sessions, leases");
  auto* stats = app.add_subcommand("stats", "per-tier capacity, usage, hits, misses, evictions");
  auto* ls = app.add_subcommand("ls", "registered namespaces and what they hold");

  InspectOptions inspect_opts;
  auto* inspect = app.add_subcommand("inspect", "which chunks of a prompt are cached, and where");
  inspect->add_option("--ns", inspect_opts.ns, "namespace id (hex, as tierkvctl ls shows it)")
      ->required();
  inspect
      ->add_option("TOKENS_FILE", inspect_opts.tokens_file,
                   "the prompt's token ids: whitespace/comma separated, or a JSON array")
      ->required();

  EvictOptions evict_opts;
  auto* evict = app.add_subcommand("evict", "drop a prompt's chunks, or a whole namespace");
  evict->add_option("--ns", evict_opts.ns, "namespace id (hex, as tierkvctl ls shows it)")
      ->required();
  evict->add_option("TOKENS_FILE", evict_opts.tokens_file,
                    "only this prompt's chunks (default: the whole namespace)");
  evict->add_flag("--delete", evict_opts.remove,
                  "drop from every tier (NVMe and remote too), not only the memory tiers");

  auto* flush = app.add_subcommand(
      "flush", "write every host chunk bound for NVMe down to it and wait, with progress");
  auto* verify = app.add_subcommand(
      "verify", "read back every NVMe chunk and check its checksum; damaged ones are removed");

  CLI11_PARSE(app, argc, argv);
  g.socket_path = tierkv::tools::resolve_socket_path(socket_flag);

  tierkv::Status s;
  if (*status) {
    s = run_status(g);
  } else if (*stats) {
    s = run_stats(g);
  } else if (*ls) {
    s = run_ls(g);
  } else if (*inspect) {
    s = run_inspect(g, inspect_opts);
  } else if (*evict) {
    s = run_evict(g, evict_opts);
  } else if (*flush) {
    s = run_flush(g);
  } else if (*verify) {
    s = run_verify(g);
  }
  return tierkv::tools::exit_status("tierkvctl", s);
}

}  // namespace

int main(int argc, char** argv) {
  return tierkv::tools::run_guarded("tierkvctl", run_main, argc, argv);
}
