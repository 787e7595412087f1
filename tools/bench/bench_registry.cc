#include "bench/bench_command.h"

namespace tierkv::bench {

std::vector<std::unique_ptr<BenchCommand>> all_bench_commands() {
  std::vector<std::unique_ptr<BenchCommand>> commands;
  commands.push_back(make_host_bench());
  commands.push_back(make_nvme_bench());
  commands.push_back(make_codec_bench());
  commands.push_back(make_cake_bench());
  commands.push_back(make_ingest_bench());
#ifdef TIERKV_HAVE_CUDA
  commands.push_back(make_gpu_bench());
#endif
  return commands;
}

}  // namespace tierkv::bench
