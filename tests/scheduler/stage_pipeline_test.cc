#include "tierkv/scheduler/stage_pipeline.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <vector>

namespace tierkv::scheduler {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;

BatchPolicy policy(uint32_t min, uint32_t max, uint32_t initial, microseconds target) {
  BatchPolicy p;
  p.min_batch = min;
  p.max_batch = max;
  p.initial_batch = initial;
  p.target_latency = target;
  return p;
}

TEST(BatchSizer, GrowsWhileTheQueueBuildsAndShrinksWhenSlow) {
  BatchSizer s(policy(1, 16, 1, microseconds(100)));
  EXPECT_EQ(s.size(), 1u);
  s.observe(1, 10, microseconds(10));  // full batch taken, more than a batch waiting
  EXPECT_EQ(s.size(), 2u);
  s.observe(2, 10, microseconds(10));
  s.observe(4, 10, microseconds(10));
  s.observe(8, 10, microseconds(10));
  EXPECT_EQ(s.size(), 16u);
  s.observe(16, 100, microseconds(10));
  EXPECT_EQ(s.size(), 16u) << "capped at max_batch";
  s.observe(16, 100, microseconds(50));
  EXPECT_EQ(s.size(), 16u) << "fast enough, holds";
  s.observe(16, 100, microseconds(150));
  EXPECT_EQ(s.size(), 8u) << "slower than the target: halves";
  s.observe(3, 0, microseconds(10));
  EXPECT_EQ(s.size(), 8u) << "a partial batch and an empty queue: holds";
  for (int i = 0; i < 10; ++i) s.observe(1, 0, microseconds(1000));
  EXPECT_EQ(s.size(), 1u) << "never below min_batch";
}

TEST(BatchPolicy, RejectsInconsistentSizes) {
  EXPECT_FALSE(policy(0, 4, 1, microseconds(1)).validate().ok());
  EXPECT_FALSE(policy(4, 2, 4, microseconds(1)).validate().ok());
  EXPECT_FALSE(policy(1, 4, 8, microseconds(1)).validate().ok());
  EXPECT_FALSE(policy(1, 4, 1, microseconds(0)).validate().ok());
  EXPECT_TRUE(policy(1, 4, 2, microseconds(1)).validate().ok());
}

struct Item {
  int id = 0;
  std::vector<int> visited;  // stages, in order
};

// A fake clock the handlers advance: each item costs `cost` of "time" in the encode stage, so a
// batch's latency is proportional to its size.
struct FakeClock {
  PipelineClock::time_point t{};
  PipelineClock::time_point now() const { return t; }
};

TEST(StagePipeline, BatchesGrowUnderLoadAndShrinkWhenLatencyRises) {
  FakeClock clock;
  microseconds cost(10);
  std::vector<size_t> encode_batches;
  std::vector<int> sunk;
  using P = StagePipeline<Item>;
  std::vector<P::Stage> stages;
  stages.push_back(
      {{"encode", 1000, 1, policy(1, 64, 1, microseconds(200))}, [&](std::vector<Item>& b) {
         encode_batches.push_back(b.size());
         for (auto& it : b) {
           it.visited.push_back(0);
           clock.t += cost;
         }
       }});
  stages.push_back(
      {{"write", 1000, 1, policy(1, 8, 1, microseconds(200))}, [](std::vector<Item>& b) {
         for (auto& it : b) it.visited.push_back(1);
       }});
  auto p = P::create(
      std::move(stages),
      [&](std::vector<Item>& b) {
        for (auto& it : b) {
          EXPECT_EQ(it.visited, (std::vector<int>{0, 1}));
          sunk.push_back(it.id);
        }
      },
      [&] { return clock.now(); });
  ASSERT_TRUE(p.ok());
  for (int i = 0; i < 200; ++i) ASSERT_TRUE((*p)->try_push({i, {}}).ok());
  // Load: 200 items queued. Batches double while the queue holds more than a batch, until a
  // batch costs more than the 200 us target (32 items x 10 us = 320 us), then halve.
  for (int i = 0; i < 6; ++i) ASSERT_TRUE((*p)->step(0));
  EXPECT_EQ(encode_batches, (std::vector<size_t>{1, 2, 4, 8, 16, 32}));
  auto st = (*p)->stats();
  EXPECT_EQ(st[0].batch_size, 16u) << "the 320 us batch halved the next";
  EXPECT_EQ(st[0].queue_depth, 200u - 63u);
  EXPECT_EQ(st[1].queue_depth, 63u);
  EXPECT_DOUBLE_EQ(st[0].last_latency_us, 320.0);
  EXPECT_EQ(st[0].batches, 6u);
  EXPECT_EQ(st[0].items, 63u);
  EXPECT_EQ(st[0].max_queue_depth, 200u);
  // Cheaper items: the size climbs back while the queue is long.
  cost = microseconds(1);
  ASSERT_TRUE((*p)->step(0));
  EXPECT_EQ(encode_batches.back(), 16u);
  EXPECT_EQ((*p)->stats()[0].batch_size, 32u);
  // Drain everything.
  while ((*p)->step(0) || (*p)->step(1)) {
  }
  EXPECT_EQ(sunk.size(), 200u);
  EXPECT_EQ(std::set<int>(sunk.begin(), sunk.end()).size(), 200u);
  EXPECT_EQ((*p)->stats()[1].batch_size, 8u) << "write grew to its max while its queue was long";
}

TEST(StagePipeline, BoundedQueuesPushBack) {
  using P = StagePipeline<int>;
  std::vector<P::Stage> stages;
  stages.push_back({{"a", 4, 1, policy(1, 8, 8, milliseconds(5))}, [](std::vector<int>&) {}});
  stages.push_back({{"b", 2, 1, policy(1, 8, 8, milliseconds(5))}, [](std::vector<int>&) {}});
  int sunk = 0;
  auto p = P::create(std::move(stages), [&](std::vector<int>& b) { sunk += int(b.size()); });
  ASSERT_TRUE(p.ok());
  for (int i = 0; i < 4; ++i) ASSERT_TRUE((*p)->try_push(i).ok());
  const Status full = (*p)->try_push(4);
  EXPECT_EQ(full.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ((*p)->push(4, PipelineClock::now()).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ((*p)->rejected(), 2u);
  // Stage b holds 2 at most: a step of a takes only what fits there.
  ASSERT_TRUE((*p)->step(0));
  EXPECT_EQ((*p)->stats()[0].queue_depth, 2u);
  EXPECT_EQ((*p)->stats()[1].queue_depth, 2u);
  EXPECT_FALSE((*p)->step(0)) << "b is full: a takes nothing";
  ASSERT_TRUE((*p)->try_push(5).ok()) << "a has room again";
  ASSERT_TRUE((*p)->step(1));
  EXPECT_EQ(sunk, 2);
  (*p)->stop();  // drains the rest on this thread
  EXPECT_EQ(sunk, 5);
  EXPECT_EQ((*p)->try_push(6).code(), StatusCode::kUnavailable);
}

TEST(StagePipeline, WorkerThreadsProcessEveryItemOnceAndDrainOnStop) {
  using P = StagePipeline<Item>;
  std::vector<P::Stage> stages;
  for (int k = 0; k < 3; ++k) {
    stages.push_back(
        {{"s" + std::to_string(k), 16, k == 1 ? 2u : 1u, policy(1, 32, 1, milliseconds(50))},
         [k](std::vector<Item>& b) {
           for (auto& it : b) it.visited.push_back(k);
         }});
  }
  std::mutex mu;
  std::vector<int> sunk;
  bool in_order = true;
  auto p = P::create(std::move(stages), [&](std::vector<Item>& b) {
    std::lock_guard lock(mu);
    for (auto& it : b) {
      in_order = in_order && it.visited == std::vector<int>{0, 1, 2};
      sunk.push_back(it.id);
    }
  });
  ASSERT_TRUE(p.ok());
  (*p)->start();
  const auto deadline = PipelineClock::now() + std::chrono::seconds(60);
  for (int i = 0; i < 2000; ++i) ASSERT_TRUE((*p)->push({i, {}}, deadline).ok());
  (*p)->stop();
  EXPECT_TRUE(in_order);
  ASSERT_EQ(sunk.size(), 2000u);
  EXPECT_EQ(std::set<int>(sunk.begin(), sunk.end()).size(), 2000u);
  for (const auto& st : (*p)->stats()) {
    EXPECT_EQ(st.items, 2000u) << st.name;
    EXPECT_EQ(st.queue_depth, 0u) << st.name;
    EXPECT_LE(st.max_queue_depth, 16u) << st.name << ": queues stay bounded";
  }
}

TEST(StagePipeline, CreateRejectsBadStages) {
  using P = StagePipeline<int>;
  EXPECT_FALSE(P::create({}).ok());
  std::vector<P::Stage> no_handler;
  no_handler.push_back({{"x", 4, 1, {}}, nullptr});
  EXPECT_FALSE(P::create(std::move(no_handler)).ok());
  std::vector<P::Stage> bad_policy;
  bad_policy.push_back({{"x", 4, 1, policy(2, 1, 1, milliseconds(1))}, [](std::vector<int>&) {}});
  EXPECT_FALSE(P::create(std::move(bad_policy)).ok());
}

}  // namespace
}  // namespace tierkv::scheduler
