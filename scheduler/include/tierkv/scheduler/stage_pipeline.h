// StagePipeline: a multi-stage, batched work pipeline with bounded queues and adaptive batches —
// the shape of the ingest path (commit -> encode -> write down), where each stage batches work
// from many requests.
//
// Items of type T enter the first stage's queue (push), each stage's handler processes a batch
// of them in place, and they move on to the next stage's queue and finally to the sink. Every
// queue is bounded: push fails (try_push) or waits (push with a deadline) while the first queue
// is full, and a stage's worker waits for room in the next queue before it takes more work, so
// memory stays bounded and a slow stage pushes back all the way to the producers.
//
// Batches are never waited for: a worker takes what is queued, up to the stage's current batch
// size, so an idle pipeline adds no latency. The batch size adapts (BatchSizer): it doubles while
// the queue holds at least a full batch after a take (work is building up), and halves when a
// batch takes longer than the stage's target latency (the stage is slowing: smaller batches keep
// latency bounded), within [min, max].
//
// Threads: start() runs `workers` threads per stage; without start(), step() runs one batch of a
// stage on the caller's thread — deterministic, for tests and for a caller that drives the
// pipeline itself. Handlers run without any pipeline lock held; a handler must not call back
// into the pipeline. With several workers a stage's batches may finish out of order. All public
// member functions are thread-safe. stop() (and the destructor) refuses new items, lets the
// workers drain what is queued through every stage, and joins them.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tierkv/status.h"

namespace tierkv::scheduler {

using PipelineClock = std::chrono::steady_clock;

struct BatchPolicy {
  uint32_t min_batch = 1;
  uint32_t max_batch = 64;
  uint32_t initial_batch = 1;
  // A batch that takes longer than this shrinks the next one.
  std::chrono::nanoseconds target_latency = std::chrono::milliseconds(5);
  Status validate() const;
};

// The adaptive batch size of one stage. Thread safety: none (the pipeline guards it).
class BatchSizer {
 public:
  explicit BatchSizer(const BatchPolicy& policy);
  [[nodiscard]] uint32_t size() const { return size_; }
  // After a batch of `taken` items that took `latency`, with `queued` items still waiting.
  void observe(uint32_t taken, uint64_t queued, std::chrono::nanoseconds latency);

 private:
  BatchPolicy policy_;
  uint32_t size_;
};

struct StageOptions {
  std::string name;
  uint64_t queue_capacity = 1024;  // items waiting for this stage, at most
  uint32_t workers = 1;            // threads after start()
  BatchPolicy batch;
};

// One stage's figures, as stats() reports them.
struct StageStats {
  std::string name;
  uint64_t queue_depth = 0;
  uint64_t max_queue_depth = 0;
  uint32_t batch_size = 0;  // the current adaptive batch size
  uint64_t batches = 0;
  uint64_t items = 0;
  double last_batch_items = 0;
  double last_latency_us = 0;  // of the last batch
  double mean_latency_us = 0;  // exponentially weighted (1/8) over batches
};

template <typename T>
class StagePipeline {
 public:
  // Processes a batch in place; the items then move on. Must not throw.
  using Handler = std::function<void(std::vector<T>& batch)>;
  // Receives the items that left the last stage.
  using Sink = std::function<void(std::vector<T>& batch)>;
  using NowFn = std::function<PipelineClock::time_point()>;

  struct Stage {
    StageOptions options;
    Handler handler;
  };

  // `now` measures batch latency (a fake clock in tests); defaults to the steady clock.
  static Result<std::unique_ptr<StagePipeline>> create(std::vector<Stage> stages, Sink sink = {},
                                                       NowFn now = {}) {
    if (stages.empty()) return Status::InvalidArgument("pipeline has no stages");
    for (const auto& s : stages) {
      if (s.options.queue_capacity == 0 || s.options.workers == 0 || !s.handler) {
        return Status::InvalidArgument("stage '" + s.options.name +
                                       "': queue_capacity, workers and handler must be set");
      }
      if (Status st = s.options.batch.validate(); !st.ok()) {
        return Status::InvalidArgument("stage '" + s.options.name + "': " + st.message());
      }
    }
    return std::unique_ptr<StagePipeline>(
        new StagePipeline(std::move(stages), std::move(sink), std::move(now)));
  }

  ~StagePipeline() { stop(); }
  StagePipeline(const StagePipeline&) = delete;
  StagePipeline& operator=(const StagePipeline&) = delete;

  // Starts the worker threads (once).
  void start() {
    std::lock_guard lock(run_mu_);
    if (started_ || stopped_) return;
    started_ = true;
    for (size_t i = 0; i < stages_.size(); ++i) {
      for (uint32_t w = 0; w < stages_[i]->options.workers; ++w) {
        threads_.emplace_back([this, i] { worker(i); });
      }
    }
  }

  // Refuses new items, drains every queue through the remaining stages, joins the workers. Items
  // still queued when the pipeline never started are drained on the caller's thread.
  void stop() {
    {
      std::lock_guard lock(run_mu_);
      if (stopped_) return;
      stopped_ = true;
    }
    closed_.store(true);
    for (auto& s : stages_) {
      std::lock_guard lock(s->mu);
      s->not_empty.notify_all();
      s->not_full.notify_all();
    }
    for (auto& t : threads_) t.join();
    threads_.clear();
    for (size_t i = 0; i < stages_.size(); ++i) {
      while (step_impl(i, /*ignore_capacity=*/true)) {
      }
    }
  }

  // Enqueues `item` at the first stage; ResourceExhausted if its queue is full, Unavailable after
  // stop().
  Status try_push(T item) {
    StageState& s = *stages_.front();
    std::lock_guard lock(s.mu);
    if (closed_.load()) return Status::Unavailable("pipeline is stopped");
    if (s.queue.size() >= s.options.queue_capacity) {
      ++s.rejected;
      return Status::ResourceExhausted("stage '" + s.options.name + "' queue is full (" +
                                       std::to_string(s.options.queue_capacity) + " items)");
    }
    enqueue(s, std::move(item));
    return Status::Ok();
  }

  // Enqueues `item`, waiting until `deadline` for room: backpressure to the producer.
  Status push(T item, PipelineClock::time_point deadline) {
    StageState& s = *stages_.front();
    std::unique_lock lock(s.mu);
    if (!s.not_full.wait_until(lock, deadline, [&] {
          return closed_.load() || s.queue.size() < s.options.queue_capacity;
        })) {
      ++s.rejected;
      return Status::ResourceExhausted("stage '" + s.options.name +
                                       "' queue stayed full until the deadline");
    }
    if (closed_.load()) return Status::Unavailable("pipeline is stopped");
    enqueue(s, std::move(item));
    return Status::Ok();
  }

  // Runs one batch of stage `index` on the caller's thread: takes up to the stage's batch size
  // (and no more than the next stage has room for), handles it, passes it on. Returns false if
  // there was nothing it could take. For a pipeline that was not start()ed.
  bool step(size_t index) { return step_impl(index, /*ignore_capacity=*/false); }

  [[nodiscard]] std::vector<StageStats> stats() const {
    std::vector<StageStats> out;
    for (const auto& s : stages_) {
      std::lock_guard lock(s->mu);
      StageStats st = s->stats;
      st.name = s->options.name;
      st.queue_depth = s->queue.size();
      st.batch_size = s->sizer.size();
      out.push_back(std::move(st));
    }
    return out;
  }

  // Items try_push/push turned away because the first queue was full.
  [[nodiscard]] uint64_t rejected() const {
    std::lock_guard lock(stages_.front()->mu);
    return stages_.front()->rejected;
  }

 private:
  struct StageState {
    StageOptions options;
    Handler handler;
    mutable std::mutex mu;
    std::condition_variable not_empty;  // items arrived (or closing)
    std::condition_variable not_full;   // room freed (or closing)
    std::deque<T> queue;                // guarded by mu
    BatchSizer sizer;                   // guarded by mu
    StageStats stats;                   // guarded by mu
    uint64_t rejected = 0;              // guarded by mu
    uint32_t busy = 0;                  // workers inside the handler; guarded by mu
    explicit StageState(Stage s)
        : options(std::move(s.options)), handler(std::move(s.handler)), sizer(options.batch) {}
  };

  StagePipeline(std::vector<Stage> stages, Sink sink, NowFn now)
      : sink_(std::move(sink)),
        now_(now ? std::move(now) : NowFn([] { return PipelineClock::now(); })) {
    for (auto& s : stages) stages_.push_back(std::make_unique<StageState>(std::move(s)));
  }

  // s.mu held.
  void enqueue(StageState& s, T item) {
    s.queue.push_back(std::move(item));
    s.stats.max_queue_depth = std::max<uint64_t>(s.stats.max_queue_depth, s.queue.size());
    s.not_empty.notify_one();
  }

  // Takes up to the batch size (and `room`) items from `s`; s.mu held.
  std::vector<T> take(StageState& s, uint64_t room) {
    const uint64_t n = std::min<uint64_t>({s.sizer.size(), s.queue.size(), room});
    std::vector<T> batch;
    batch.reserve(n);
    for (uint64_t k = 0; k < n; ++k) {
      batch.push_back(std::move(s.queue.front()));
      s.queue.pop_front();
    }
    s.not_full.notify_all();
    return batch;
  }

  // Handles `batch` of stage `index` (taken with `queued` left behind) and records its figures.
  void run_batch(size_t index, std::vector<T>& batch, uint64_t queued) {
    StageState& s = *stages_[index];
    const auto t0 = now_();
    s.handler(batch);
    const auto latency = now_() - t0;
    std::lock_guard lock(s.mu);
    s.sizer.observe(static_cast<uint32_t>(batch.size()), queued, latency);
    const double us = std::chrono::duration<double, std::micro>(latency).count();
    s.stats.last_latency_us = us;
    s.stats.mean_latency_us =
        s.stats.batches == 0 ? us : s.stats.mean_latency_us + (us - s.stats.mean_latency_us) / 8;
    s.stats.last_batch_items = static_cast<double>(batch.size());
    ++s.stats.batches;
    s.stats.items += batch.size();
  }

  // Moves a handled batch to the next stage (waiting for room unless `ignore_capacity`, which
  // only the single-threaded drain in stop() uses) or the sink.
  void pass_on(size_t index, std::vector<T>& batch, bool ignore_capacity) {
    if (index + 1 == stages_.size()) {
      if (sink_) sink_(batch);
      return;
    }
    StageState& next = *stages_[index + 1];
    std::unique_lock lock(next.mu);
    for (auto& item : batch) {
      if (!ignore_capacity) {
        // Even while closing: the next stage's workers keep running until this one is idle.
        next.not_full.wait(lock, [&] { return next.queue.size() < next.options.queue_capacity; });
      }
      enqueue(next, std::move(item));
    }
  }

  bool step_impl(size_t index, bool ignore_capacity) {
    if (index >= stages_.size()) return false;
    StageState& s = *stages_[index];
    uint64_t room = UINT64_MAX;
    if (!ignore_capacity && index + 1 < stages_.size()) {
      StageState& next = *stages_[index + 1];
      std::lock_guard lock(next.mu);
      room = next.options.queue_capacity - std::min(next.options.queue_capacity, next.queue.size());
    }
    std::vector<T> batch;
    uint64_t queued;
    {
      std::lock_guard lock(s.mu);
      batch = take(s, room);
      queued = s.queue.size();
    }
    if (batch.empty()) return false;
    run_batch(index, batch, queued);
    pass_on(index, batch, ignore_capacity);
    return true;
  }

  void worker(size_t index) {
    StageState& s = *stages_[index];
    while (true) {
      std::vector<T> batch;
      uint64_t queued;
      bool drained = false;
      {
        std::unique_lock lock(s.mu);
        s.not_empty.wait(lock, [&] { return !s.queue.empty() || closed_.load(); });
        if (s.queue.empty()) {
          drained = true;
        } else {
          batch = take(s, UINT64_MAX);
          queued = s.queue.size();
          ++s.busy;
        }
      }
      if (drained) {
        // Closing: exit once no earlier stage holds or handles an item that could still come
        // here; until then, wait a little for it.
        if (upstream_idle(index)) {
          std::lock_guard lock(s.mu);
          if (s.queue.empty()) return;
          continue;
        }
        std::unique_lock lock(s.mu);
        s.not_empty.wait_for(lock, std::chrono::milliseconds(1));
        continue;
      }
      run_batch(index, batch, queued);
      pass_on(index, batch, /*ignore_capacity=*/false);
      std::lock_guard lock(s.mu);
      --s.busy;
    }
  }

  // True when no earlier stage holds or is handling an item (only asked while closing).
  bool upstream_idle(size_t index) {
    for (size_t i = 0; i < index; ++i) {
      StageState& u = *stages_[i];
      std::lock_guard lock(u.mu);
      if (!u.queue.empty() || u.busy != 0) return false;
    }
    return true;
  }

  std::vector<std::unique_ptr<StageState>> stages_;
  Sink sink_;
  NowFn now_;
  std::atomic<bool> closed_{false};
  std::mutex run_mu_;
  bool started_ = false;  // guarded by run_mu_
  bool stopped_ = false;  // guarded by run_mu_
  std::vector<std::thread> threads_;
};

}  // namespace tierkv::scheduler
