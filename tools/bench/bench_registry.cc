#include "bench/bench_command.h"

namespace tierkv::bench {

std::vector<std::unique_ptr<BenchCommand>> all_bench_commands() {
  std::vector<std::unique_ptr<BenchCommand>> commands;
  commands.push_back(make_host_bench());
  commands.push_back(make_codec_bench());
  return commands;
}

}  // namespace tierkv::bench
