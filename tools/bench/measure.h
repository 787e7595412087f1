// Measuring helpers shared by tierkv-bench's subcommands: clocks, order statistics, prefaulted
// buffers and the memcpy bandwidth that host-side figures are compared with, prompts of random
// tokens, and the sizes and names they all use.
// Thread safety: plain functions and values; a PrefaultedBuffer is owned by one thread at a time.
#pragma once

#include <string>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "tierkv/chunk_key.h"
#include "tierkv/status.h"

namespace tierkv::bench {

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kGiB = 1ull << 30;
// The tenant of the namespaces the subcommands register.
constexpr const char* kTenant = "tierkv-bench";

// `s` with "<what>: " before its message, same code.
inline Status context(const Status& s, const std::string& what) {
  return {s.code(), what + ": " + s.message()};
}

// `n` vocabulary-sized token ids (as a tokenizer would produce them) drawn from `rng`.
std::vector<TokenId> random_tokens(std::mt19937_64& rng, size_t n);

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The q-quantile (0 <= q <= 1) of `v`, by nearest rank; sorts `v`. 0 for an empty vector.
double quantile(std::vector<double>& v, double q);
inline double median(std::vector<double>& v) { return quantile(v, 0.5); }

// Private anonymous memory, every page faulted in and written before use, so that a measurement
// never pays for first-touch page faults (the daemon prefaults its pool too). Move-only.
class PrefaultedBuffer {
 public:
  static Result<PrefaultedBuffer> allocate(size_t bytes);
  PrefaultedBuffer(PrefaultedBuffer&& other) noexcept;
  PrefaultedBuffer& operator=(PrefaultedBuffer&& other) noexcept;
  PrefaultedBuffer(const PrefaultedBuffer&) = delete;
  PrefaultedBuffer& operator=(const PrefaultedBuffer&) = delete;
  ~PrefaultedBuffer();

  [[nodiscard]] std::byte* data() const { return data_; }
  [[nodiscard]] size_t size() const { return size_; }
  [[nodiscard]] std::span<std::byte> span() const { return {data_, size_}; }

 private:
  PrefaultedBuffer(std::byte* data, size_t size) : data_(data), size_(size) {}
  std::byte* data_ = nullptr;
  size_t size_ = 0;
};

// Fills `out` with bytes from a fixed-seed generator: deterministic, and not compressible or
// all-zero (zero pages could be shared copy-on-write, which would flatter a copy).
void fill_pattern(std::span<std::byte> out, uint64_t seed);

struct MemcpyFigures {
  double median_GBps = 0;  // GB = 1e9 bytes
  size_t runs = 0;
};
// Single-thread memcpy between two prefaulted private buffers of `bytes` each: `runs` runs, each
// copying repeatedly for at least `run_seconds`; the median run's bandwidth.
// With `streaming`, the copy is tierkv::copy_streaming (non-temporal stores) instead of memcpy.
Result<MemcpyFigures> measure_memcpy(size_t bytes, size_t runs, double run_seconds,
                                     bool streaming = false);

// A fresh directory `<base>/<prefix>-XXXXXX` for a benchmark's files, removed with everything in it
// when the object goes (on error paths too). Move-only.
class ScratchDir {
 public:
  static Result<ScratchDir> create(const std::string& base, const std::string& prefix);
  ScratchDir(ScratchDir&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  ScratchDir& operator=(ScratchDir&&) = delete;
  ScratchDir(const ScratchDir&) = delete;
  ~ScratchDir();
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  explicit ScratchDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

// The non-empty items of a comma-separated list ("a,b,,c" -> a, b, c).
std::vector<std::string> split_list(const std::string& s);

// Where the KV dataset lies: $TIERKV_KVDATA if set, else build/kvdata when it holds `probe_file`
// (the full dataset tools/kvdata makes), else the slice committed in tests/data/kv.
std::string default_kv_data_dir(const char* probe_file);

// Keeps the compiler from optimising away a read whose value is otherwise unused.
inline void do_not_optimize(uint64_t v) { asm volatile("" : : "r"(v) : "memory"); }

}  // namespace tierkv::bench
