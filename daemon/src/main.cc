// tierkvd: the tierkv daemon. See the README for operation and every config option.
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <chrono>
#include <iostream>

#include "tierkv/daemon/config.h"
#include "tierkv/daemon/server.h"
#include "tierkv/scheduler/cache_engine.h"
#include "tierkv/version.h"

namespace {

using namespace tierkv;

int run(int argc, char** argv) {
  CLI::App app{"tierkvd: keeps the KV cache of already-seen prompts in shared memory (and, later, "
               "on NVMe and remote tiers) for LLM inference engines on this host."};
  std::string config_path;
  std::string socket_override;
  std::string level_override;
  bool check_only = false;
  bool print_default = false;
  bool version = false;
  app.add_option("-c,--config", config_path,
                 "TOML configuration file; without it the embedded default is used "
                 "(see --print-default-config)");
  app.add_option("-s,--socket", socket_override, "Listen on this socket (overrides server.socket_path)");
  app.add_option("-l,--log-level", level_override, "Log level (overrides log.level)");
  app.add_flag("--check-config", check_only, "Validate the configuration, print it, and exit");
  app.add_flag("--print-default-config", print_default,
               "Print the embedded default configuration, every option documented, and exit");
  app.add_flag("-V,--version", version, "Print the version and exit");
  CLI11_PARSE(app, argc, argv);

  if (version) {
    std::cout << "tierkvd " << kVersion << "\n";
    return 0;
  }
  if (print_default) {
    std::cout << daemon::default_config_toml();
    return 0;
  }
  auto loaded = config_path.empty()
                    ? daemon::parse_config(daemon::default_config_toml(), "<embedded default>")
                    : daemon::load_config_file(config_path);
  if (!loaded.ok()) {
    std::cerr << "tierkvd: invalid configuration: " << loaded.status().message() << "\n";
    return 2;
  }
  daemon::DaemonConfig config = std::move(loaded).value();
  if (!socket_override.empty()) config.socket_path = socket_override;
  if (!level_override.empty()) config.log_level = level_override;
  const auto level = spdlog::level::from_str(config.log_level);
  if (level == spdlog::level::off && config.log_level != "off") {
    std::cerr << "tierkvd: log level '" << config.log_level << "' is not one of trace, debug, "
              << "info, warn, error, critical, off\n";
    return 2;
  }
  if (check_only) {
    std::cout << "configuration OK: " << (config_path.empty() ? "<embedded default>" : config_path)
              << "\n  socket " << config.socket_path << "\n  host tier "
              << daemon::format_size(config.cache.host_capacity_bytes) << " (slabs of "
              << daemon::format_size(config.cache.slab_bytes) << ", slots from "
              << daemon::format_size(config.cache.min_slot_bytes) << ")\n  chunk_tokens "
              << config.cache.default_chunk_tokens << "\n  log level " << config.log_level
              << "\n";
    const auto& nv = config.cache.nvme;
    if (nv.store.directories.empty()) {
      std::cout << "  nvme tier off\n";
    } else {
      std::cout << "  nvme tier " << daemon::format_size(nv.store.capacity_bytes) << " over "
                << nv.store.directories.size() << " directories, "
                << (nv.write_through ? "write-through" : "write-back") << ", queue depth "
                << nv.store.queue_depth << "\n  nvme codec " << nv.codec;
      for (const auto& [tenant, codec] : nv.codec_by_tenant) {
        std::cout << ", tenant '" << tenant << "': " << codec;
      }
      std::cout << "\n";
    }
    const auto& gpu = config.cache.gpu;
    if (gpu.capacity_bytes == 0 || gpu.device < 0) {
      std::cout << "  gpu tier off\n";
    } else {
      std::cout << "  gpu tier " << daemon::format_size(gpu.capacity_bytes) << " on CUDA device "
                << gpu.device << ", promoted after " << gpu.promote_after_loads << " loads\n";
    }
    return 0;
  }
  spdlog::set_level(level);
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");

  const auto t0 = std::chrono::steady_clock::now();
  auto engine = scheduler::CacheEngine::create(config.cache);
  if (!engine.ok()) {
    spdlog::critical("cannot start the cache tiers: {}", engine.status().message());
    return 1;
  }
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - t0)
                      .count();
  spdlog::info("host tier: {} of shared memory{} in {} ms", daemon::format_size((*engine)->host_region_bytes()),
               config.cache.prefault ? " reserved and mapped" : " mapped", ms);
  if ((*engine)->nvme_enabled()) {
    const auto& nv = config.cache.nvme;
    spdlog::info("nvme tier: {} over {} directories ({}), {}, queue depth {}",
                 daemon::format_size(nv.store.capacity_bytes), nv.store.directories.size(),
                 fmt::join(nv.store.directories, ", "),
                 nv.write_through ? "write-through" : "write-back", nv.store.queue_depth);
    if (nv.store.faults.any()) spdlog::warn("nvme: fault injection is ON (a test configuration)");
  }
  if ((*engine)->gpu_enabled()) {
    spdlog::info("gpu tier: {} {}, promoted after {} loads", (*engine)->gpu_status(),
                 daemon::format_size(config.cache.gpu.capacity_bytes),
                 config.cache.gpu.promote_after_loads);
  } else if (config.cache.gpu.capacity_bytes > 0) {
    spdlog::warn("gpu tier: {}; tierkvd runs without it", (*engine)->gpu_status());
  } else {
    spdlog::info("gpu tier: {}", (*engine)->gpu_status());
  }

  boost::asio::io_context io(1);
  daemon::Server server(io, config, **engine);
  // Signals are caught before the socket exists: a client that sees the socket and sends
  // SIGTERM at once gets a clean stop, not the default action.
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    spdlog::info("received {}, stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
    sd_notify(0, "STOPPING=1");
    server.stop();
    io.stop();
  });
  if (Status s = server.listen(); !s.ok()) {
    spdlog::critical("{}", s.message());
    return 1;
  }
  spdlog::info("tierkvd {} serving {} (pid {}, chunk_tokens {})", kVersion, config.socket_path,
               ::getpid(), config.cache.default_chunk_tokens);
  sd_notifyf(0, "READY=1\nSTATUS=serving %s\nMAINPID=%d", config.socket_path.c_str(), ::getpid());
  io.run();
  server.stop();
  spdlog::info("stopped after {} requests ({} rejected)", server.requests(), server.request_errors());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Exceptions stay inside: the daemon reports and exits rather than terminating uncleanly.
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "tierkvd: fatal: " << e.what() << "\n";
    return 1;
  }
}
