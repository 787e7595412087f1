// A client process for the daemon's integration tests.
//
//   tierkv_test_client stress SOCKET SEED ROUNDS
//     Stores, looks up and loads prompts that share long prefixes with other clients' prompts,
//     and verifies every loaded byte. Chunk content is a function of the chunk key, so any client
//     can verify a chunk another client stored. Prints "verified N chunks" and exits 0, or prints
//     what differed and exits 1.
//   tierkv_test_client hang-in-put SOCKET
//     Leases a prompt's chunks for reading, begins storing another prompt, writes half of its
//     first chunk, prints "READY" and waits to be killed.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "support/chunk_pattern.h"
#include "tierkv/client.h"

namespace {

using namespace tierkv;

// 2 layers x 2 kv heads x 64 dim x bf16 x (K, V) = 1 KiB per token; 64 tokens = 64 KiB chunks.
const Layout kLayout{2, 2, 64, DType::kBFloat16, 64};

using testing::chunk_matches;
using testing::fill_chunk;

// Prompt = one of 8 shared documents (16 chunks) + a suffix of 0-7 chunks from a small pool, so
// prompts overlap both in their heads and whole.
std::vector<TokenId> make_prompt(std::mt19937& rng) {
  const uint32_t doc = rng() % 8;
  const uint32_t suffix_chunks = rng() % 8;
  const uint32_t suffix_id = rng() % 4;
  std::vector<TokenId> t;
  for (uint32_t i = 0; i < 16 * 64; ++i) t.push_back(doc * 100000 + i);
  for (uint32_t i = 0; i < suffix_chunks * 64; ++i) t.push_back(9000000 + suffix_id * 1000 + i);
  for (uint32_t i = 0; i < rng() % 64; ++i) t.push_back(1);  // partial trailing chunk
  return t;
}

int stress(const char* socket, uint32_t seed, int rounds) {
  auto client = Client::connect({socket, "test-client stress", true});
  if (!client.ok()) {
    std::printf("connect: %s\n", client.status().to_string().c_str());
    return 1;
  }
  auto ns = (*client)->register_layout(kLayout, "integration");
  if (!ns.ok()) {
    std::printf("register: %s\n", ns.status().to_string().c_str());
    return 1;
  }
  std::mt19937 rng(seed);
  size_t verified = 0, written = 0;
  for (int r = 0; r < rounds; ++r) {
    const auto tokens = make_prompt(rng);
    const auto keys = Client::keys(*ns, tokens);
    auto look = (*client)->lookup(*ns, tokens);
    if (!look.ok()) {
      std::printf("lookup: %s\n", look.status().to_string().c_str());
      return 1;
    }
    auto lease = (*client)->load(*ns, tokens);
    if (!lease.ok()) {
      std::printf("load: %s\n", lease.status().to_string().c_str());
      return 1;
    }
    for (size_t i = 0; i < lease->chunks(); ++i) {
      const auto got = lease->chunk(i);
      if (got.size() != ns->chunk_bytes() || !chunk_matches(keys[i], got)) {
        std::printf("round %d chunk %zu: loaded bytes differ from what was stored\n", r, i);
        return 1;
      }
      ++verified;
    }
    if (Status s = lease->release(); !s.ok()) {
      std::printf("release: %s\n", s.to_string().c_str());
      return 1;
    }
    auto put = (*client)->begin_put(*ns, tokens);
    if (!put.ok()) {
      std::printf("begin_put: %s\n", put.status().to_string().c_str());
      return 1;
    }
    for (size_t i = 0; i < put->chunks(); ++i) {
      if (put->needs_write(i)) {
        fill_chunk(keys[i], put->slot(i));
        ++written;
      }
    }
    if (auto c = put->commit(); !c.ok()) {
      std::printf("commit: %s\n", c.status().to_string().c_str());
      return 1;
    }
  }
  std::printf("verified %zu chunks, wrote %zu\n", verified, written);
  return 0;
}

int hang_in_put(const char* socket) {
  auto client = Client::connect({socket, "test-client hang", true});
  if (!client.ok()) return 1;
  auto ns = (*client)->register_layout(kLayout, "integration");
  if (!ns.ok()) return 1;
  std::vector<TokenId> stored(4 * 64), pending(4 * 64);
  for (size_t i = 0; i < stored.size(); ++i) stored[i] = 7000 + i;
  for (size_t i = 0; i < pending.size(); ++i) pending[i] = 8000 + i;
  std::vector<std::byte> kv(4 * ns->chunk_bytes(), std::byte{1});
  if (!(*client)->put(*ns, stored, kv).ok()) return 1;
  auto reading = (*client)->load(*ns, stored);
  if (!reading.ok() || reading->chunks() != 4) return 1;
  auto put = (*client)->begin_put(*ns, pending);
  if (!put.ok() || !put->needs_write(0)) return 1;
  std::memset(put->slot(0).data(), 0xAB, put->slot(0).size() / 2);
  std::printf("READY\n");
  std::fflush(stdout);
  for (;;) ::pause();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 5 && std::strcmp(argv[1], "stress") == 0) {
    return stress(argv[2], static_cast<uint32_t>(std::atoi(argv[3])), std::atoi(argv[4]));
  }
  if (argc == 3 && std::strcmp(argv[1], "hang-in-put") == 0) return hang_in_put(argv[2]);
  std::fprintf(stderr, "usage: %s stress SOCKET SEED ROUNDS | hang-in-put SOCKET\n", argv[0]);
  return 2;
}
