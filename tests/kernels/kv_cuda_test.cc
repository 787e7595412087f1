// The CUDA gather/scatter kernels (tierkv/kernels/kv_cuda.h) against the CPU references
// (paged_kv.h, flat_kv.h), byte for byte, on random inputs. Every output is poisoned before a run
// and compared whole, so an unwritten byte fails (each gather runs twice, under two different
// poisons, so that a byte the kernel skipped cannot match the reference by chance), and a scatter
// is compared over the whole cache, so a byte written where it should not be fails too.
// Skips, saying why, where no CUDA device is visible.
#include "tierkv/kernels/kv_cuda.h"

#include <cuda_runtime.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <ostream>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "support/kv_tensors.h"

namespace tierkv::kernels::cuda {
namespace {

using ::testing::HasSubstr;

constexpr std::byte kPoisonA{0xCD};
constexpr std::byte kPoisonB{0x3A};

#define ASSERT_CUDA(expr)                                                                    \
  do {                                                                                       \
    const cudaError_t cuda_error_ = (expr);                                                  \
    ASSERT_EQ(cuda_error_, cudaSuccess) << #expr << ": " << cudaGetErrorString(cuda_error_); \
  } while (0)

// Device memory owned by a test.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (cudaMalloc(&data_, bytes) != cudaSuccess) data_ = nullptr;
  }
  ~DeviceBuffer() { (void)cudaFree(data_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}

  [[nodiscard]] std::byte* data() const { return static_cast<std::byte*>(data_); }
  [[nodiscard]] size_t size() const { return bytes_; }
  [[nodiscard]] cudaError_t upload(const std::vector<std::byte>& host) const {
    return cudaMemcpy(data_, host.data(), std::min(bytes_, host.size()), cudaMemcpyHostToDevice);
  }
  [[nodiscard]] std::vector<std::byte> download() const {
    std::vector<std::byte> out(bytes_);
    if (cudaMemcpy(out.data(), data_, bytes_, cudaMemcpyDeviceToHost) != cudaSuccess) out.clear();
    return out;
  }
  [[nodiscard]] cudaError_t fill(std::byte value) const {
    return cudaMemset(data_, static_cast<int>(value), bytes_);
  }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// First index where two byte vectors differ, or -1.
int64_t first_difference(const std::vector<std::byte>& a, const std::vector<std::byte>& b) {
  if (a.size() != b.size()) return 0;
  const auto m = std::mismatch(a.begin(), a.end(), b.begin());
  return m.first == a.end() ? -1 : m.first - a.begin();
}

// A KV cache held twice: on the host (for the CPU reference) and on the device (for the kernel),
// per layer one K and one V tensor of `tensor_bytes` each.
class MirroredCache {
 public:
  MirroredCache(uint32_t layers, size_t tensor_bytes) : host_(layers, tensor_bytes, std::byte{0}) {
    for (uint32_t i = 0; i < 2 * layers; ++i) device_.emplace_back(tensor_bytes);
    for (uint32_t l = 0; l < layers; ++l) {
      dev_k_.push_back(device_[2 * l].data());
      dev_v_.push_back(device_[2 * l + 1].data());
    }
  }
  [[nodiscard]] bool allocated() const {
    return std::all_of(device_.begin(), device_.end(),
                       [](const DeviceBuffer& b) { return b.data() != nullptr; });
  }
  // Host and device both hold random bytes (the same ones), or both `fill`.
  void randomize(std::mt19937_64& rng) {
    host_.randomize(rng);
    for (size_t i = 0; i < device_.size(); ++i) ASSERT_CUDA(device_[i].upload(host_.tensors()[i]));
  }
  void fill(std::byte value) {
    host_.fill(value);
    for (const DeviceBuffer& d : device_) ASSERT_CUDA(d.fill(value));
  }
  // The device tensors equal the host ones, byte for byte.
  void expect_device_matches_host() const {
    for (size_t i = 0; i < device_.size(); ++i) {
      const std::vector<std::byte> got = device_[i].download();
      const int64_t at = first_difference(got, host_.tensors()[i]);
      EXPECT_EQ(at, -1) << "tensor " << i << " (layer " << i / 2 << (i % 2 ? " V" : " K")
                        << ") differs from the CPU reference first at byte " << at;
    }
  }

  testing::HostKvTensors host_;
  std::vector<DeviceBuffer> device_;
  std::vector<std::byte*> dev_k_, dev_v_;
};

// A case common to both layouts: which tokens and layers one launch moves, and how the chunk
// buffer is laid out.
struct Launch {
  uint32_t chunk_tokens;
  uint32_t num_chunks;
  uint64_t first_token;
  uint32_t layer_begin;
  uint32_t layer_end;     // 0 = all
  uint64_t stride_pad;    // extra bytes between chunks in the chunk buffer
  uint32_t chunk_offset;  // bytes the chunk buffer starts past an aligned address
};

// Runs the kernel and the CPU reference for one layout. `cpu_gather(c, out)` and
// `cpu_scatter(c, in)` move whole chunk c (all layers) on the host.
template <typename CpuGather, typename CpuScatter>
void check_layout(MirroredCache& cache, const DeviceKvCache& dev, DeviceBlockTable table,
                  const Launch& launch, uint32_t layers, uint64_t row_bytes, uint64_t seed,
                  CpuGather cpu_gather, CpuScatter cpu_scatter) {
  std::mt19937_64 rng(seed);
  const uint32_t layer_end = launch.layer_end == 0 ? layers : launch.layer_end;
  const uint64_t segment = uint64_t{launch.chunk_tokens} * row_bytes;
  const uint64_t full_chunk = 2 * uint64_t{layers} * segment;
  const uint64_t part = 2 * uint64_t{layer_end - launch.layer_begin} * segment;
  const uint64_t stride = part + launch.stride_pad;
  const uint64_t part_offset = 2 * uint64_t{launch.layer_begin} * segment;  // in a full chunk
  DeviceBuffer chunks(launch.chunk_offset + stride * launch.num_chunks);
  ASSERT_NE(chunks.data(), nullptr);
  const ChunkBuffer buffer{chunks.data() + launch.chunk_offset,
                           launch.stride_pad == 0 ? 0 : stride};
  const CopyRange range{.first_token = launch.first_token,
                        .chunk_tokens = launch.chunk_tokens,
                        .num_chunks = launch.num_chunks,
                        .layer_begin = launch.layer_begin,
                        .layer_end = launch.layer_end};

  // Gather: the chunk buffer must hold exactly the reference's bytes of the range, and the
  // padding between chunks must keep its poison.
  cache.randomize(rng);
  std::vector<std::byte> full(full_chunk);
  for (std::byte poison : {kPoisonA, kPoisonB}) {
    ASSERT_CUDA(chunks.fill(poison));
    const Status s = gather(dev, table, range, buffer, nullptr);
    ASSERT_TRUE(s.ok()) << s.to_string();
    ASSERT_CUDA(cudaDeviceSynchronize());
    const std::vector<std::byte> got = chunks.download();
    std::vector<std::byte> want(got.size(), poison);
    for (uint32_t c = 0; c < launch.num_chunks; ++c) {
      cpu_gather(c, full);
      std::copy_n(full.begin() + static_cast<int64_t>(part_offset), part,
                  want.begin() + static_cast<int64_t>(launch.chunk_offset + c * stride));
    }
    const int64_t at = first_difference(got, want);
    ASSERT_EQ(at, -1) << "gathered chunk buffer differs from the CPU reference first at byte " << at
                      << " (poison 0x" << std::hex << static_cast<int>(poison) << ")";
  }
  auto bad = dev.take_bad_rows(nullptr);
  ASSERT_TRUE(bad.ok()) << bad.status().to_string();
  EXPECT_EQ(*bad, 0u);

  // Scatter random chunks into a poisoned cache; the reference does the same on the host (for a
  // layer range: the other layers of each full chunk are read back from the cache first, so the
  // CPU scatter leaves them as they were).
  cache.fill(kPoisonA);
  std::vector<std::byte> in(chunks.size());
  testing::fill_random(in, rng);
  ASSERT_CUDA(chunks.upload(in));
  const Status s = scatter(dev, table, range, buffer, nullptr);
  ASSERT_TRUE(s.ok()) << s.to_string();
  ASSERT_CUDA(cudaDeviceSynchronize());
  for (uint32_t c = 0; c < launch.num_chunks; ++c) {
    cpu_gather(c, full);
    std::copy_n(in.begin() + static_cast<int64_t>(launch.chunk_offset + c * stride), part,
                full.begin() + static_cast<int64_t>(part_offset));
    cpu_scatter(c, full);
  }
  cache.expect_device_matches_host();
  bad = dev.take_bad_rows(nullptr);
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(*bad, 0u);
}

// A case's name: its cache shape, then its launch. Case is PagedCase or FlatCase (below).
template <typename Case>
std::string case_string(const Case& c) {
  const Launch& l = c.launch;
  std::ostringstream o;
  o << c.cache.name() << "_ct" << l.chunk_tokens << "x" << l.num_chunks << "_first" << l.first_token
    << "_layers" << l.layer_begin << "to" << l.layer_end << "_pad" << l.stride_pad << "_off"
    << l.chunk_offset;
  return o.str();
}

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const Status available = device_available();
    if (!available.ok()) GTEST_SKIP() << "no GPU: " << available.message();
  }
};

// --- paged ---------------------------------------------------------------------------------------

struct PagedCase {
  testing::PagedKvShape cache;
  uint32_t padding_entries;  // -1 entries past the sequence's blocks
  Launch launch;
};
// Keeps ctest's test names readable (gtest would print the struct's bytes).
void PrintTo(const PagedCase& c, std::ostream* os) { *os << case_string(c); }

class CudaPagedTest : public CudaTest, public ::testing::WithParamInterface<PagedCase> {};

TEST_P(CudaPagedTest, MatchesCpuReference) {
  const PagedCase pc = GetParam();
  const testing::PagedKvShape& shape = pc.cache;
  const Launch& l = pc.launch;
  MirroredCache cache(shape.layers, shape.tensor_bytes());
  ASSERT_TRUE(cache.allocated());
  const PagedKvView host_view = shape.view(cache.host_.k_layers(), cache.host_.v_layers());
  auto dev = DeviceKvCache::create_paged(shape.view(cache.dev_k_, cache.dev_v_), 0);
  ASSERT_TRUE(dev.ok()) << dev.status().to_string();

  // Distinct blocks in shuffled order, then padding.
  std::mt19937_64 rng(std::hash<std::string>{}(case_string(pc)));
  const uint64_t end_token = l.first_token + uint64_t{l.num_chunks} * l.chunk_tokens;
  const auto used = static_cast<uint32_t>((end_token + shape.block_size - 1) / shape.block_size);
  ASSERT_LE(used, shape.num_blocks);
  std::vector<int32_t> table(shape.num_blocks);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), rng);
  table.resize(used);
  table.insert(table.end(), pc.padding_entries, -1);
  DeviceBuffer table_dev(table.size() * sizeof(int32_t));
  ASSERT_CUDA(cudaMemcpy(table_dev.data(), table.data(), table_dev.size(), cudaMemcpyHostToDevice));
  const DeviceBlockTable dtable{reinterpret_cast<const int32_t*>(table_dev.data()), table.size()};

  check_layout(
      cache, *dev, dtable, l, shape.layers, shape.row_bytes(), rng(),
      [&](uint32_t c, std::vector<std::byte>& out) {
        const Status s = gather_chunk(
            host_view, table, l.first_token + uint64_t{c} * l.chunk_tokens, l.chunk_tokens, out);
        ASSERT_TRUE(s.ok()) << s.to_string();
      },
      [&](uint32_t c, const std::vector<std::byte>& in) {
        const Status s = scatter_chunk(
            host_view, table, l.first_token + uint64_t{c} * l.chunk_tokens, l.chunk_tokens, in);
        ASSERT_TRUE(s.ok()) << s.to_string();
      });
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaPagedTest,
    ::testing::Values(
        // An 8B-class layer shape, bf16, block_size 16, two whole chunks of 256 tokens.
        PagedCase{{4, 16, 40, 8, 128, 2}, 3, {256, 2, 0, 0, 0, 0, 0}},
        // Partial blocks at both ends, head_dim 64, fp16.
        PagedCase{{3, 16, 20, 2, 64, 2}, 5, {40, 1, 7, 0, 0, 0, 0}},
        // Many layers, one head, chunks starting mid-block, a layer sub-range.
        PagedCase{{40, 16, 12, 1, 64, 2}, 1, {24, 3, 9, 5, 33, 0, 0}},
        // One layer of many chunks: the layer-by-layer load path.
        PagedCase{{6, 16, 64, 4, 128, 2}, 0, {32, 24, 16, 4, 5, 0, 0}},
        // Rows of 30 bytes: 2-byte accesses.
        PagedCase{{2, 4, 30, 3, 5, 2}, 2, {9, 3, 6, 0, 0, 0, 0}},
        // fp8 with an odd head_dim: 1-byte accesses; padded chunk stride.
        PagedCase{{3, 8, 20, 2, 7, 1}, 4, {13, 2, 3, 0, 0, 5, 0}},
        // fp32, head_dim 128, block_size 32, misaligned chunk buffer (8-byte accesses).
        PagedCase{{2, 32, 12, 2, 128, 4}, 2, {100, 2, 40, 0, 0, 0, 8}},
        // block_size 1 (one token per block, as a token pool), chunk buffer misaligned to 4.
        PagedCase{{2, 1, 100, 2, 64, 2}, 3, {17, 4, 5, 1, 2, 0, 4}},
        // Padded chunk stride that keeps 16-byte alignment, blocks larger than the chunk.
        PagedCase{{2, 64, 6, 8, 64, 2}, 0, {20, 5, 30, 0, 0, 4096, 0}}),
    [](const ::testing::TestParamInfo<PagedCase>& info) { return case_string(info.param); });
// clang-format on

// --- flat ----------------------------------------------------------------------------------------

struct FlatCase {
  testing::FlatKvShape cache;
  Launch launch;
};
void PrintTo(const FlatCase& c, std::ostream* os) { *os << case_string(c); }

class CudaFlatTest : public CudaTest, public ::testing::WithParamInterface<FlatCase> {};

TEST_P(CudaFlatTest, MatchesCpuReference) {
  const FlatCase fc = GetParam();
  const testing::FlatKvShape& shape = fc.cache;
  const Launch& l = fc.launch;
  MirroredCache cache(shape.layers, shape.tensor_bytes());
  ASSERT_TRUE(cache.allocated());
  const FlatKvView host_view = shape.view(cache.host_.k_layers(), cache.host_.v_layers());
  auto dev = DeviceKvCache::create_flat(shape.view(cache.dev_k_, cache.dev_v_), 0);
  ASSERT_TRUE(dev.ok()) << dev.status().to_string();
  std::mt19937_64 rng(std::hash<std::string>{}(case_string(fc)));

  check_layout(
      cache, *dev, DeviceBlockTable{}, l, shape.layers, host_view.row_bytes(), rng(),
      [&](uint32_t c, std::vector<std::byte>& out) {
        const Status s = gather_chunk_flat(host_view, l.first_token + uint64_t{c} * l.chunk_tokens,
                                           l.chunk_tokens, out);
        ASSERT_TRUE(s.ok()) << s.to_string();
      },
      [&](uint32_t c, const std::vector<std::byte>& in) {
        const Status s = scatter_chunk_flat(host_view, l.first_token + uint64_t{c} * l.chunk_tokens,
                                            l.chunk_tokens, in);
        ASSERT_TRUE(s.ok()) << s.to_string();
      });
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaFlatTest,
    ::testing::Values(
        // Packed token-major [tokens][heads][dim], bf16, 8B-class heads.
        FlatCase{{4, 600, 8, 128, 2, 0, 0}, {256, 2, 50, 0, 0, 0, 0}},
        // Head-major [heads][capacity][dim] (transformers), head_dim 64, chunks mid-sequence.
        FlatCase{{3, 300, 4, 64, 2, 128, 300 * 128}, {40, 3, 17, 0, 0, 0, 0}},
        // Head-major with padding, a layer sub-range, many layers.
        FlatCase{{36, 80, 2, 128, 2, 256, 80 * 256 + 64}, {16, 2, 33, 30, 36, 0, 0}},
        // Token-major with padding after each head (8-byte runs of 4-byte alignment).
        FlatCase{{2, 50, 3, 4, 2, 48, 16}, {7, 3, 20, 0, 0, 12, 0}},
        // fp8 odd head_dim, head-major.
        FlatCase{{2, 40, 3, 5, 1, 5, 200}, {9, 2, 11, 1, 2, 0, 1}}),
    [](const ::testing::TestParamInfo<FlatCase>& info) { return case_string(info.param); });
// clang-format on

// --- failures ------------------------------------------------------------------------------------

TEST_F(CudaTest, BadBlockIdsAreCountedAndNotWritten) {
  MirroredCache cache(2, 4 * 16 * 64);  // 4 blocks of 16 tokens x 64 bytes
  ASSERT_TRUE(cache.allocated());
  const PagedKvView view{.k_layers = cache.dev_k_,
                         .v_layers = cache.dev_v_,
                         .block_size = 16,
                         .num_blocks = 4,
                         .num_kv_heads = 1,
                         .head_dim = 32,
                         .elem_bytes = 2};
  auto dev = DeviceKvCache::create_paged(view, 0);
  ASSERT_TRUE(dev.ok()) << dev.status().to_string();
  cache.fill(kPoisonA);
  const std::vector<int32_t> table = {2, 4, -7};  // entries 1 and 2 name no block
  DeviceBuffer table_dev(table.size() * sizeof(int32_t));
  ASSERT_CUDA(cudaMemcpy(table_dev.data(), table.data(), table_dev.size(), cudaMemcpyHostToDevice));
  const DeviceBlockTable dtable{reinterpret_cast<const int32_t*>(table_dev.data()), table.size()};
  const CopyRange range{.first_token = 0, .chunk_tokens = 48};
  DeviceBuffer chunk(2 * 2 * 48 * 64);
  ASSERT_CUDA(chunk.fill(std::byte{0x11}));
  ASSERT_TRUE(scatter(*dev, dtable, range, ChunkBuffer{chunk.data()}, nullptr).ok());
  auto bad = dev->take_bad_rows(nullptr);
  ASSERT_TRUE(bad.ok()) << bad.status().to_string();
  EXPECT_GT(*bad, 0u);
  // Only block 2 was written; the counter was reset by the read.
  for (uint32_t i = 0; i < 4; ++i) {
    const std::vector<std::byte> t = cache.device_[i].download();
    for (size_t b = 0; b < t.size(); ++b) {
      const bool in_block2 = b >= 2 * 16 * 64 && b < 3 * 16 * 64;
      ASSERT_EQ(t[b], in_block2 ? std::byte{0x11} : kPoisonA) << "tensor " << i << " byte " << b;
    }
  }
  bad = dev->take_bad_rows(nullptr);
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(*bad, 0u);
}

TEST_F(CudaTest, RejectsHostPointersAndBadRanges) {
  std::vector<std::byte> host(1024);
  std::vector<std::byte*> layers = {host.data()};
  PagedKvView view{.k_layers = layers,
                   .v_layers = layers,
                   .block_size = 4,
                   .num_blocks = 2,
                   .num_kv_heads = 1,
                   .head_dim = 8,
                   .elem_bytes = 2};
  auto from_host = DeviceKvCache::create_paged(view, 0);
  ASSERT_FALSE(from_host.ok());
  EXPECT_THAT(from_host.status().message(), HasSubstr("not device memory"));

  DeviceBuffer k(128);
  DeviceBuffer v(128);
  std::vector<std::byte*> dk = {k.data()};
  std::vector<std::byte*> dv = {v.data()};
  view.k_layers = dk;
  view.v_layers = dv;
  EXPECT_THAT(DeviceKvCache::create_paged(view, 1 << 20).status().message(),
              HasSubstr("device 1048576 is out of range"));
  auto dev = DeviceKvCache::create_paged(view, 0);
  ASSERT_TRUE(dev.ok()) << dev.status().to_string();
  DeviceBuffer chunk(1024);
  const int32_t* fake_table = reinterpret_cast<const int32_t*>(chunk.data());
  // 2 entries x 4 tokens = 8 tokens covered.
  EXPECT_THAT(gather(*dev, {fake_table, 2}, {.first_token = 6, .chunk_tokens = 4},
                     ChunkBuffer{chunk.data()}, nullptr)
                  .message(),
              HasSubstr("tokens [6, 10) are not covered"));
  EXPECT_THAT(gather(*dev, {fake_table, 2}, {.chunk_tokens = 4, .layer_begin = 1},
                     ChunkBuffer{chunk.data()}, nullptr)
                  .message(),
              HasSubstr("layers [1, 1)"));
  EXPECT_THAT(gather(*dev, {fake_table, 2}, {.chunk_tokens = 4, .num_chunks = 0},
                     ChunkBuffer{chunk.data()}, nullptr)
                  .message(),
              HasSubstr("num_chunks 0"));
  EXPECT_THAT(
      gather(*dev, {fake_table, 2}, {.chunk_tokens = 4}, ChunkBuffer{chunk.data(), 8}, nullptr)
          .message(),
      HasSubstr("chunk_stride 8 is less than"));
  EXPECT_THAT(
      gather(*dev, {nullptr, 2}, {.chunk_tokens = 4}, ChunkBuffer{chunk.data()}, nullptr).message(),
      HasSubstr("block table is null"));
}

}  // namespace
}  // namespace tierkv::kernels::cuda
