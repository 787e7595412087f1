// A client process for the co-scheduled prefill integration tests.
//
//   tierkv_test_prefill_client hang SOCKET
//     Stores a 32-chunk prompt, begins a prefill session that loads all of it (the daemon's host
//     reads are throttled, so reads are in flight), takes what is ready, prints "READY" and waits
//     to be killed.
//   tierkv_test_prefill_client hang-nvme SOCKET
//     The same, with the prompt written down to NVMe and evicted from host RAM first, so the
//     session's reads are NVMe reads (the daemon should throttle them).
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "tierkv/client.h"
#include "tierkv/prefill.h"

namespace {

using namespace tierkv;

const Layout kLayout{2, 2, 64, DType::kBFloat16, 64};  // 64 KiB chunks

int hang(const char* socket, bool nvme) {
  auto client = Client::connect({socket, "test-client prefill hang", true});
  if (!client.ok()) return 1;
  auto ns = (*client)->register_layout(kLayout, "prefill");
  if (!ns.ok()) return 1;
  std::vector<TokenId> tokens(32 * 64);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = 60000 + i;
  std::vector<std::byte> kv(32 * ns->chunk_bytes(), std::byte{5});
  if (!(*client)->put(*ns, tokens, kv).ok()) return 1;
  if (nvme) {
    for (;;) {  // written down, then out of host RAM
      auto f = (*client)->flush();
      if (!f.ok()) return 1;
      if (f->dirty_chunks == 0 && f->writes_in_flight == 0) break;
      ::usleep(1000);
    }
    auto evicted = (*client)->evict(ns->id, Client::keys(*ns, tokens));
    if (!evicted.ok() || *evicted != 32) return 1;
  }
  PrefillOptions o;
  o.meeting_point = 0;
  auto s = PrefillSession::begin(*client, *ns, std::span<const TokenId>(tokens), o);
  if (!s.ok()) return 1;
  // Wait until something is delivered and held: leases and reads in flight when killed.
  while ((*s)->take_ready().empty()) {
    if (!(*s)->wait_ready(std::chrono::milliseconds(100)).ok()) return 1;
  }
  std::printf("READY\n");
  std::fflush(stdout);
  for (;;) ::pause();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "hang") == 0) return hang(argv[2], false);
  if (argc == 3 && std::strcmp(argv[1], "hang-nvme") == 0) return hang(argv[2], true);
  std::fprintf(stderr, "usage: %s hang|hang-nvme SOCKET\n", argv[0]);
  return 2;
}
