// One Client shared by many threads, against the real tierkvd: requests from the threads are
// pipelined on the one connection, and each thread must get exactly its own replies.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "support/chunk_pattern.h"
#include "support/process.h"
#include "support/test_daemon.h"
#include "tierkv/client.h"

namespace tierkv {
namespace {

using namespace std::chrono_literals;

constexpr uint32_t kChunkTokens = 16;
constexpr size_t kPromptChunks = 12;

Layout small_layout() {
  Layout l;
  l.num_layers = 1;
  l.num_kv_heads = 1;
  l.head_dim = 64;
  l.dtype = DType::kBFloat16;
  l.chunk_tokens = kChunkTokens;  // 2 KiB chunks
  return l;
}

// Thread t's prompt: its own tokens, kPromptChunks full chunks.
std::vector<TokenId> prompt_of(size_t t) {
  std::vector<TokenId> tokens(kPromptChunks * kChunkTokens);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<TokenId>(t * 100003 + i * 7);
  return tokens;
}

// Stores the first `cached` chunks of `tokens`, each filled with fill_chunk(its key).
void store_prefix(Client& c, const Namespace& ns, const std::vector<TokenId>& tokens,
                  size_t cached) {
  const std::vector<ChunkKey> keys = Client::keys(ns, tokens);
  std::vector<std::byte> kv(cached * ns.chunk_bytes());
  for (size_t i = 0; i < cached; ++i) {
    testing::fill_chunk(keys[i], std::span(kv).subspan(i * ns.chunk_bytes(), ns.chunk_bytes()));
  }
  auto put = c.put(ns, std::span(tokens).first(cached * kChunkTokens), kv);
  ASSERT_TRUE(put.ok()) << put.status().to_string();
  ASSERT_EQ(put->written, cached);
}

TEST(ClientThreadsTest, ThreadsSharingOneClientEachGetTheirOwnReplies) {
  auto d = testing::TestDaemon::start();
  ASSERT_TRUE(d.ok()) << d.status().to_string();
  auto c = Client::connect({(*d)->socket_path(), "threads", false});
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  Client& client = **c;
  auto ns = client.register_layout(small_layout(), "threads");
  ASSERT_TRUE(ns.ok()) << ns.status().to_string();

  // Thread t's prompt has t+1 leading chunks cached: a reply meant for another thread shows as a
  // wrong count, wrong tiers or wrong bytes; a reply of another kind fails to decode.
  constexpr size_t kThreads = 8;
  constexpr int kRounds = 150;
  std::vector<std::vector<TokenId>> prompts;
  for (size_t t = 0; t < kThreads; ++t) {
    prompts.push_back(prompt_of(t));
    store_prefix(client, *ns, prompts[t], t + 1);
  }

  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::vector<TokenId>& tokens = prompts[t];
      const std::vector<ChunkKey> keys = Client::keys(*ns, tokens);
      const size_t want = t + 1;
      for (int round = 0; round < kRounds && errors[t].empty(); ++round) {
        // Requests of different kinds and sizes, each checked against what this thread knows.
        auto found = client.lookup(*ns, tokens);
        if (!found.ok()) {
          errors[t] = "lookup: " + found.status().to_string();
          break;
        }
        if (found->total_chunks != kPromptChunks || found->cached_chunks != want ||
            found->tiers != std::vector<Tier>(want, Tier::kHost)) {
          errors[t] = "lookup found " + std::to_string(found->cached_chunks) + " cached of " +
                      std::to_string(found->total_chunks) + ", expected " + std::to_string(want);
          break;
        }
        auto lease = client.load(ns->id, std::span(keys).first(want - round % want));
        if (!lease.ok()) {
          errors[t] = "load: " + lease.status().to_string();
          break;
        }
        if (lease->chunks() != want - round % want) {
          errors[t] = "load leased " + std::to_string(lease->chunks()) + " chunks";
          break;
        }
        for (size_t i = 0; i < lease->chunks(); ++i) {
          if (!testing::chunk_matches(keys[i], lease->chunk(i))) {
            errors[t] = "chunk " + std::to_string(i) + " does not hold its bytes";
            break;
          }
        }
        if (Status s = lease->release(); !s.ok()) errors[t] = "release: " + s.to_string();
        if (static_cast<size_t>(round) % 10 == t % 10) {
          auto stats = client.stats();
          if (!stats.ok()) errors[t] = "stats: " + stats.status().to_string();
        }
        // An error reply is this thread's too: a namespace nobody registered.
        if (round % 7 == 0) {
          auto missing = client.lookup(0xdead0000u + t, keys);
          if (missing.ok() || missing.status().code() != StatusCode::kNotFound ||
              missing.status().message().find("not registered") == std::string::npos) {
            errors[t] = "lookup in an unknown namespace: " + missing.status().to_string();
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (size_t t = 0; t < kThreads; ++t) EXPECT_EQ(errors[t], "") << "thread " << t;

  // The connection is still in step: one more round trip from this thread.
  auto found = client.lookup(*ns, prompts[3]);
  ASSERT_TRUE(found.ok()) << found.status().to_string();
  EXPECT_EQ(found->cached_chunks, 4u);
}

TEST(ClientThreadsTest, EveryWaitingThreadFailsWhenTheDaemonDies) {
  auto d = testing::TestDaemon::start();
  ASSERT_TRUE(d.ok()) << d.status().to_string();
  auto c = Client::connect({(*d)->socket_path(), "threads", false});
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  Client& client = **c;
  auto ns = client.register_layout(small_layout(), "threads");
  ASSERT_TRUE(ns.ok()) << ns.status().to_string();
  store_prefix(client, *ns, prompt_of(0), kPromptChunks);

  constexpr size_t kThreads = 6;
  std::atomic<size_t> started{0}, finished{0};
  std::vector<Status> last(kThreads);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::vector<TokenId> tokens = prompt_of(0);
      bool counted = false;
      for (;;) {
        auto found = client.lookup(*ns, tokens);
        if (!found.ok()) {
          last[t] = found.status();
          break;
        }
        if (!counted) {
          counted = true;
          ++started;
        }
      }
      ++finished;
    });
  }
  // Once every thread has had a reply, the daemon dies under their requests in flight.
  const bool all_started = testing::wait_until([&] { return started == kThreads; }, 30s);
  (*d)->kill();
  const bool all_finished = testing::wait_until([&] { return finished == kThreads; }, 30s);
  if (!all_finished) {
    // A thread still blocked would hang the join: report, then end the process.
    ADD_FAILURE() << finished.load() << " of " << kThreads << " threads returned";
    std::abort();
  }
  for (auto& th : threads) th.join();
  EXPECT_TRUE(all_started);
  for (size_t t = 0; t < kThreads; ++t) {
    EXPECT_EQ(last[t].code(), StatusCode::kUnavailable)
        << "thread " << t << ": " << last[t].to_string();
  }
  // Later calls fail at once with the same cause.
  auto again = client.stats();
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), StatusCode::kUnavailable) << again.status().to_string();
}

}  // namespace
}  // namespace tierkv
