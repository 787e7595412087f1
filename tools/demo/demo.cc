// tierkv-demo: the quickstart's first client. Stores a prompt's KV in tierkvd, finds it again,
// loads it in place and checks every byte, then shows that a second prompt sharing a prefix hits
// exactly the shared full chunks. Idempotent: a second run finds the chunks already cached and
// still verifies them. Exits non-zero with the daemon's message on any failure.
#include <CLI/CLI.hpp>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "common/connect.h"
#include "common/format.h"
#include "common/tool_main.h"
#include "tierkv/client.h"

namespace tierkv::demo {

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kPromptTokens = 4096;
constexpr size_t kSharedTokens = 3000;
constexpr uint64_t kSeed = 20240607;
constexpr TokenId kVocabulary = 128256;  // Llama 3's

double micros_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

// A Llama-like layout, slimmed so a chunk of the daemon's default 256 tokens is 1 MiB:
// 8 layers x 1 kv head x 128 dim x bf16 x (K and V) = 4 KiB per token.
Layout demo_layout() {
  Layout l;
  l.num_layers = 8;
  l.num_kv_heads = 1;
  l.head_dim = 128;
  l.dtype = DType::kBFloat16;
  l.chunk_tokens = 0;  // the daemon's default
  return l;
}

std::vector<TokenId> make_tokens(uint64_t seed, size_t n) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<TokenId> dist(0, kVocabulary - 1);
  std::vector<TokenId> t(n);
  for (auto& x : t) x = dist(rng);
  return t;
}

// The KV bytes the demo stores: a function of (chunk index, offset) only, so a later run can check
// what an earlier one stored.
std::vector<std::byte> make_kv(size_t chunks, uint64_t chunk_bytes) {
  std::vector<std::byte> kv(chunks * chunk_bytes);
  for (size_t i = 0; i < kv.size(); i += 8) {
    uint64_t z = (kSeed ^ (i * 0x9E3779B97F4A7C15ull)) + i;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    std::memcpy(kv.data() + i, &z, std::min<size_t>(8, kv.size() - i));
  }
  return kv;
}

// "host" when every chunk is in one tier, else each run: "host x10, nvme x6".
std::string describe_tiers(const std::vector<Tier>& tiers) {
  std::string out;
  for (size_t i = 0; i < tiers.size();) {
    size_t j = i;
    while (j < tiers.size() && tiers[j] == tiers[i]) ++j;
    if (!out.empty()) out += ", ";
    out += std::string(proto::tier_name(tiers[i]));
    if (i != 0 || j != tiers.size()) out += " x" + std::to_string(j - i);
    i = j;
  }
  return out.empty() ? "none" : out;
}

Status run(const std::string& socket_flag, const std::string& tokens_out) {
  const std::string socket = tools::resolve_socket_path(socket_flag);
  auto connected = tools::connect_daemon(socket, "tierkv-demo", /*populate=*/true);
  if (!connected.ok()) return connected.status();
  Client& client = **connected;

  auto ns = client.register_layout(demo_layout(), "demo");
  if (!ns.ok()) return ns.status();
  const uint64_t cb = ns->chunk_bytes();
  const uint32_t ct = ns->layout.chunk_tokens;
  std::printf("connected to tierkvd %s at %s\n", client.daemon_version().c_str(), socket.c_str());
  std::printf("namespace %s: %s, %s per chunk\n", tools::namespace_hex(ns->id).c_str(),
              ns->layout.to_string().c_str(), tools::human_size(cb).c_str());

  const std::vector<TokenId> tokens = make_tokens(kSeed, kPromptTokens);
  const size_t chunks = kPromptTokens / ct;
  if (!tokens_out.empty()) {
    std::ofstream out(tokens_out);
    for (size_t i = 0; i < tokens.size(); ++i) out << tokens[i] << (i % 16 == 15 ? '\n' : ' ');
    if (!out) return Status::FromErrno("writing " + tokens_out, errno);
  }
  const std::vector<std::byte> kv = make_kv(chunks, cb);

  // Store.
  auto t0 = Clock::now();
  auto put = client.put(*ns, tokens, kv);
  const double put_us = micros_since(t0);
  if (!put.ok()) return put.status();
  if (put->written == 0 && put->already_cached == chunks) {
    std::printf("put:     all %zu chunks already cached (an earlier run stored them)\n", chunks);
  } else {
    const double mib = static_cast<double>(put->written * cb) / (1 << 20);
    std::printf(
        "put:     %zu chunks written (%zu already cached), %.1f MiB in %.2f ms, %.2f GB/s\n",
        put->written, put->already_cached, mib, put_us / 1000,
        static_cast<double>(put->written * cb) / (put_us * 1000));
  }
  if (put->written + put->already_cached != chunks) {
    return Status::ResourceExhausted(
        "put stored " + std::to_string(put->written + put->already_cached) + " of " +
        std::to_string(chunks) + " chunks (" + std::to_string(put->in_progress) +
        " being written by another client, " + std::to_string(put->no_space) +
        " without a free slot)");
  }

  // Find it.
  t0 = Clock::now();
  auto found = client.lookup(*ns, tokens);
  const double lookup_us = micros_since(t0);
  if (!found.ok()) return found.status();
  std::printf("lookup:  %zu/%zu chunks cached (%s) in %.0f µs\n", found->cached_chunks,
              found->total_chunks, describe_tiers(found->tiers).c_str(), lookup_us);
  if (found->cached_chunks != chunks) {
    return Status::Internal("lookup found " + std::to_string(found->cached_chunks) + " of the " +
                            std::to_string(chunks) + " chunks just stored");
  }

  // Load it in place and check every byte against what was stored.
  t0 = Clock::now();
  auto lease = client.load(*ns, tokens);
  const double load_us = micros_since(t0);
  if (!lease.ok()) return lease.status();
  std::printf("load:    %zu chunks leased in place in %.0f µs\n", lease->chunks(), load_us);
  if (lease->chunks() != chunks) {
    return Status::Internal("load leased " + std::to_string(lease->chunks()) + " of " +
                            std::to_string(chunks) + " chunks");
  }
  uint64_t verified = 0;
  for (size_t i = 0; i < lease->chunks(); ++i) {
    const std::span<const std::byte> got = lease->chunk(i);
    if (got.size() != cb) {
      return Status::Internal("chunk " + std::to_string(i) + ": " + std::to_string(got.size()) +
                              " bytes leased, expected " + std::to_string(cb));
    }
    const std::byte* want = kv.data() + i * cb;
    if (std::memcmp(got.data(), want, cb) != 0) {
      size_t at = 0;
      while (got[at] == want[at]) ++at;
      char msg[160];
      std::snprintf(msg, sizeof(msg), "chunk %zu, byte %zu: read 0x%02x, stored 0x%02x", i, at,
                    static_cast<unsigned>(got[at]), static_cast<unsigned>(want[at]));
      return Status::Internal(std::string("verification failed: ") + msg);
    }
    verified += cb;
  }
  TIERKV_RETURN_IF_ERROR(lease->release());
  std::printf("verify:  verified %" PRIu64 " bytes: OK\n", verified);

  // A second prompt sharing the first kSharedTokens tokens hits exactly the shared full chunks:
  // a chunk key names its whole prefix, so the chunk holding token kSharedTokens differs.
  std::vector<TokenId> other = make_tokens(kSeed + 1, kPromptTokens);
  std::copy(tokens.begin(), tokens.begin() + kSharedTokens, other.begin());
  if (other[kSharedTokens] == tokens[kSharedTokens]) other[kSharedTokens] ^= 1;
  t0 = Clock::now();
  auto shared = client.lookup(*ns, other);
  const double shared_us = micros_since(t0);
  if (!shared.ok()) return shared.status();
  const size_t expect = kSharedTokens / ct;
  std::printf(
      "prefix:  a prompt sharing the first %zu tokens hits %zu/%zu chunks "
      "(%zu/%u = %zu shared full chunks) in %.0f µs\n",
      kSharedTokens, shared->cached_chunks, shared->total_chunks, kSharedTokens, ct, expect,
      shared_us);
  if (shared->cached_chunks != expect) {
    return Status::Internal("the prompt sharing " + std::to_string(kSharedTokens) + " tokens hit " +
                            std::to_string(shared->cached_chunks) + " chunks, expected " +
                            std::to_string(expect));
  }

  const std::string stored = put->written == 0
                                 ? "all " + std::to_string(chunks) + " chunks already cached"
                                 : "stored " + std::to_string(put->written) + " chunks";
  std::printf("demo: %s, lookup hit %zu/%zu (%s), loaded and verified %s in place\n",
              stored.c_str(), found->cached_chunks, found->total_chunks,
              describe_tiers(found->tiers).c_str(), tools::human_size(verified).c_str());
  return Status::Ok();
}

}  // namespace

}  // namespace tierkv::demo

namespace {

int run_main(int argc, char** argv) {
  CLI::App app{"tierkv-demo: store, find, load and verify a prompt's KV cache in tierkvd"};
  std::string socket;
  std::string tokens_out;
  app.add_option("--socket", socket, tierkv::tools::socket_flag_help());
  app.add_option("--tokens-out", tokens_out,
                 "also write the prompt's token ids to this file (for tierkvctl inspect)");
  CLI11_PARSE(app, argc, argv);
  return tierkv::tools::exit_status("tierkv-demo", tierkv::demo::run(socket, tokens_out));
}

}  // namespace

int main(int argc, char** argv) {
  return tierkv::tools::run_guarded("tierkv-demo", run_main, argc, argv);
}
