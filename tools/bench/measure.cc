#include "bench/measure.h"

#include "tierkv/stream_copy.h"

#include <sys/mman.h>

#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <utility>

namespace tierkv::bench {

double quantile(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  // Nearest rank: the smallest value with at least q of the samples at or below it.
  const double rank = std::ceil(q * static_cast<double>(v.size()));
  const size_t i = rank < 1 ? 0 : static_cast<size_t>(rank) - 1;
  return v[std::min(i, v.size() - 1)];
}

Result<PrefaultedBuffer> PrefaultedBuffer::allocate(size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) {
    return Status::FromErrno("mmap of a " + std::to_string(bytes) + "-byte buffer", errno);
  }
  // MAP_POPULATE may map the shared zero page for reads; writing gives every page its own frame.
  std::memset(p, 0x5A, bytes);
  return PrefaultedBuffer(static_cast<std::byte*>(p), bytes);
}

PrefaultedBuffer::PrefaultedBuffer(PrefaultedBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

PrefaultedBuffer& PrefaultedBuffer::operator=(PrefaultedBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) ::munmap(data_, size_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

PrefaultedBuffer::~PrefaultedBuffer() {
  if (data_ != nullptr) ::munmap(data_, size_);
}

void fill_pattern(std::span<std::byte> out, uint64_t seed) {
  uint64_t x = seed;
  size_t i = 0;
  for (; i + 8 <= out.size(); i += 8) {
    // splitmix64
    uint64_t z = (x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    std::memcpy(out.data() + i, &z, 8);
  }
  for (; i < out.size(); ++i) out[i] = static_cast<std::byte>(i * 131 + seed);
}

Result<MemcpyFigures> measure_memcpy(size_t bytes, size_t runs, double run_seconds,
                                     bool streaming) {
  auto src = PrefaultedBuffer::allocate(bytes);
  if (!src.ok()) return src.status();
  auto dst = PrefaultedBuffer::allocate(bytes);
  if (!dst.ok()) return dst.status();
  fill_pattern(src->span(), 1);
  const auto copy = [&] {
    if (streaming) copy_streaming(dst->data(), src->data(), bytes);
    else std::memcpy(dst->data(), src->data(), bytes);
  };
  // One untimed copy: warms the TLB and whatever the CPU's frequency governor needs.
  copy();

  std::vector<double> gbps;
  for (size_t r = 0; r < runs; ++r) {
    size_t copies = 0;
    const auto t0 = Clock::now();
    double elapsed = 0;
    do {
      copy();
      ++copies;
      elapsed = seconds_since(t0);
    } while (elapsed < run_seconds);
    do_not_optimize(static_cast<uint64_t>(dst->data()[bytes / 2]));
    gbps.push_back(static_cast<double>(copies * bytes) / elapsed / 1e9);
  }
  MemcpyFigures f;
  f.runs = runs;
  f.median_GBps = median(gbps);
  return f;
}

Result<ScratchDir> ScratchDir::create(const std::string& base, const std::string& prefix) {
  std::string path = base + "/" + prefix + "-XXXXXX";
  if (::mkdtemp(path.data()) == nullptr) return Status::FromErrno("mkdtemp in " + base, errno);
  return ScratchDir(std::move(path));
}

ScratchDir::~ScratchDir() {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::vector<TokenId> random_tokens(std::mt19937_64& rng, size_t n) {
  std::uniform_int_distribution<TokenId> dist(0, 151935);
  std::vector<TokenId> t(n);
  for (auto& x : t) x = dist(rng);
  return t;
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

std::string default_kv_data_dir(const char* probe_file) {
  if (const char* env = std::getenv("TIERKV_KVDATA")) return env;
  if (std::filesystem::exists(std::filesystem::path("build/kvdata") / probe_file)) {
    return "build/kvdata";
  }
  return std::string(TIERKV_SOURCE_DIR) + "/tests/data/kv";
}

}  // namespace tierkv::bench
