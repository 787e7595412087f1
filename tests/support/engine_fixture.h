// EngineFixture: a real CacheEngine for the tests of what runs over it (the prefill service, the
// tier loader, NVMe loads): a real shared-memory host tier and, where a test asks, a real NVMe tier
// in a temporary directory (io_uring, O_DIRECT); one namespace of 64 KiB chunks; chunks put with
// known bytes; NVMe completions run on the test's thread until a condition holds.
//
// Base is the GoogleTest fixture to derive from (::testing::Test, or TestWithParam<T>). Header
// only; needs tierkv_scheduler, tierkv_test_support and GoogleTest. Thread safety: the test's
// thread only.
#pragma once

#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "support/process.h"
#include "tierkv/scheduler/cache_engine.h"

namespace tierkv::testing {

template <typename Base = ::testing::Test>
class EngineFixture : public Base {
 protected:
  static constexpr uint64_t kMiB = 1ull << 20;

  // A 16 MiB host tier alone, 64 tokens a chunk.
  static scheduler::CacheOptions host_options() {
    scheduler::CacheOptions o;
    o.host_capacity_bytes = 16 * kMiB;
    o.slab_bytes = 4 * kMiB;
    o.prefault = false;
    o.default_chunk_tokens = 64;
    return o;
  }

  // The host tier over a 32 MiB write-through NVMe tier in a fresh temporary directory. Destroys
  // the engine first: it may be using the directory this replaces.
  scheduler::CacheOptions nvme_options() {
    engine_.reset();
    dir_ = std::make_unique<TempDir>();
    scheduler::CacheOptions o = host_options();
    o.nvme.store.directories = {dir_->path()};
    o.nvme.store.capacity_bytes = 32 * kMiB;
    o.nvme.store.slab_bytes = 4 * kMiB;
    o.nvme.write_through = true;
    return o;
  }

  // Creates the engine, registers ns_ and opens the writer session.
  void start_engine(const scheduler::CacheOptions& options) {
    engine_.reset();
    auto e = scheduler::CacheEngine::create(options);
    ASSERT_TRUE(e.ok()) << e.status().to_string();
    engine_ = std::move(e).value();
    // 2 layers x 2 heads x 64 dim x bf16 x K,V = 1 KiB per token; 64 tokens = 64 KiB.
    auto ns = engine_->register_namespace(Layout{2, 2, 64, DType::kBFloat16, 64}, "t", "");
    ASSERT_TRUE(ns.ok());
    ns_ = *ns;
    writer_ = engine_->open_session();
  }

  // Byte `byte` of the i-th chunk put_chunks puts.
  static uint8_t pattern(size_t chunk, size_t byte) {
    return static_cast<uint8_t>(chunk * 131 + byte * 7 + 1);
  }

  // Puts new chunks `keys` through the writer session, chunk i holding pattern(i, ...), and
  // commits them to the host tier.
  void put_chunks(const std::vector<ChunkKey>& keys) {
    proto::PutBeginRequest req{ns_.id, kRootKey, ns_.chunk_bytes(), keys};
    proto::PutBeginReply rep;
    EXPECT_TRUE(engine_->put_begin(writer_, req, rep).ok());
    std::vector<uint32_t> slots;
    for (size_t i = 0; i < rep.slots.size(); ++i) {
      EXPECT_EQ(rep.slots[i].disposition, proto::PutDisposition::kWrite);
      auto* p = reinterpret_cast<uint8_t*>(engine_->host_base() + rep.slots[i].offset);
      for (size_t b = 0; b < ns_.chunk_bytes(); ++b) p[b] = pattern(i, b);
      slots.push_back(rep.slots[i].slot);
    }
    uint64_t committed = 0;
    EXPECT_TRUE(engine_->put_commit(writer_, slots, &committed).ok());
  }

  // put_chunks, then waits until every chunk is written down to NVMe.
  void put_and_write_down(const std::vector<ChunkKey>& keys) {
    put_chunks(keys);
    EXPECT_TRUE(pump_until([&] {
      const proto::NvmeStats s = stats().nvme;
      return s.dirty_chunks == 0 && s.writes_in_flight == 0;
    })) << "write-down did not finish";
  }

  // Removes chunks from host RAM (the NVMe tier keeps them).
  void evict(const std::vector<ChunkKey>& keys) {
    uint64_t removed = 0;
    ASSERT_TRUE(
        engine_->evict(proto::DropRequest{ns_.id, proto::Scope::kKeys, keys}, &removed).ok());
    ASSERT_EQ(removed, keys.size());
  }

  std::vector<proto::Tier> tiers_of(const std::vector<ChunkKey>& keys) {
    proto::LookupReply r;
    EXPECT_TRUE(engine_->lookup(proto::KeysRequest{ns_.id, keys}, r).ok());
    return r.tiers;
  }

  // Whether `slot` holds exactly the bytes put_chunks put for its chunk number `chunk`.
  bool bytes_match(uint32_t chunk, const proto::SlotRef& slot) const {
    if (slot.bytes != ns_.chunk_bytes()) return false;
    const auto* p = reinterpret_cast<const uint8_t*>(engine_->host_base() + slot.offset);
    for (size_t b = 0; b < slot.bytes; ++b) {
      if (p[b] != pattern(chunk, b)) return false;
    }
    return true;
  }

  // Runs NVMe completions (waiting on the engine's completion fd) until `done`, or 10 s.
  bool pump_until(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      pollfd p{engine_->io_fd(), POLLIN, 0};
      (void)::poll(&p, 1, 10);
      if (p.revents & POLLIN) {
        uint64_t n = 0;
        (void)!::read(engine_->io_fd(), &n, sizeof(n));
      }
      engine_->poll_io();
    }
    return true;
  }

  proto::StatsReply stats() const {
    proto::StatsReply s;
    engine_->fill_stats(s);
    return s;
  }

  std::unique_ptr<TempDir> dir_;  // declared before engine_: removed after the engine is gone
  std::unique_ptr<scheduler::CacheEngine> engine_;
  Namespace ns_;
  scheduler::SessionId writer_ = 0;
};

}  // namespace tierkv::testing
