// A client process for the GPU tier's tests: opens the daemon's GPU pool, leases a prompt's
// chunks with gpu_load, says so, and holds the leases until it is killed.
//
//   tierkv_test_gpu_lease_client SOCKET SEED CHUNKS
//     Registers the tests' layout, loads the prompt tokens(SEED, CHUNKS) through the GPU pool,
//     prints "READY <chunks leased> <of them on the GPU>" and waits to be killed.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "client/gpu_tier_test_prompt.h"
#include "tierkv/client.h"
#include "tierkv/gpu_pool.h"

int main(int argc, char** argv) {
  using namespace tierkv;
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s SOCKET SEED CHUNKS\n", argv[0]);
    return 2;
  }
  auto client = Client::connect({argv[1], "gpu-lease-client", false});
  if (!client.ok()) {
    std::printf("connect: %s\n", client.status().to_string().c_str());
    return 1;
  }
  auto ns = (*client)->register_layout(testing::gpu_tier_layout(), testing::kGpuTierTenant);
  if (!ns.ok()) {
    std::printf("register: %s\n", ns.status().to_string().c_str());
    return 1;
  }
  auto pool = DaemonGpuPool::attach(*client);
  if (!pool.ok()) {
    std::printf("attach: %s\n", pool.status().to_string().c_str());
    return 1;
  }
  const auto tokens = testing::gpu_tier_prompt(std::strtoul(argv[2], nullptr, 10),
                                               std::strtoul(argv[3], nullptr, 10));
  auto lease = (*pool)->load(*ns, tokens);
  if (!lease.ok()) {
    std::printf("gpu_load: %s\n", lease.status().to_string().c_str());
    return 1;
  }
  std::printf("READY %zu %zu\n", lease->chunks(), lease->gpu_chunks());
  std::fflush(stdout);
  for (;;) ::pause();
}
