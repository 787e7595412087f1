// BenchCommand: one tierkv-bench subcommand ("host", later "nvme", "cake", "gpu").
//
// Each subcommand lives in its own file, declares its own options on the CLI11 subcommand main
// hands it, and returns a BenchReport; main prints it as a table or, with --json, as one JSON
// object, and turns a Status into a message on stderr and a non-zero exit. To add one: write
// <name>_bench.cc with a make_<name>_bench() and list it in bench_registry.cc.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <vector>

#include "bench/report.h"
#include "tierkv/status.h"

namespace tierkv::bench {

// Options main gives every subcommand.
struct CommonOptions {
  bool json = false;   // print exactly one JSON object on stdout, nothing else
  bool quick = false;  // every measurement short: a smoke test, not a result
};

class BenchCommand {
 public:
  virtual ~BenchCommand() = default;
  [[nodiscard]] virtual std::string name() const = 0;
  [[nodiscard]] virtual std::string summary() const = 0;
  // Declares the subcommand's own options on `app`; the values are read when run() is called.
  virtual void add_options(CLI::App& app) = 0;
  // Progress for a person goes to stderr (never with --json); the figures go in the report.
  virtual Result<BenchReport> run(const CommonOptions& common) = 0;
};

std::unique_ptr<BenchCommand> make_host_bench();
std::unique_ptr<BenchCommand> make_nvme_bench();
std::unique_ptr<BenchCommand> make_codec_bench();
std::unique_ptr<BenchCommand> make_cake_bench();
std::unique_ptr<BenchCommand> make_ingest_bench();
// Built only with CUDA (TIERKV_HAVE_CUDA).
std::unique_ptr<BenchCommand> make_gpu_bench();

// Every subcommand, in the order --help lists them.
std::vector<std::unique_ptr<BenchCommand>> all_bench_commands();

}  // namespace tierkv::bench
