// The fused codec and its representative store, on synthetic and on real KV (tests/data/kv).
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>
#include <thread>
#include <vector>

#include "codec_test_util.h"
#include "kv_dataset.h"
#include "tierkv/storage/codec.h"
#include "tierkv/storage/representative_store.h"

namespace tierkv::storage {
namespace {

using testing::count_bound_violations;
using testing::kv_like_chunk;
using testing::rel_l2;

Layout small_layout() {
  Layout l;
  l.num_layers = 2;
  l.num_kv_heads = 2;
  l.head_dim = 16;
  l.dtype = DType::kBFloat16;
  l.chunk_tokens = 32;
  return l;
}

uint64_t blocks_per_chunk(const Layout& l, uint32_t block) {
  return 2ull * l.num_layers * l.num_kv_heads * (l.chunk_tokens / block);
}

TEST(RepresentativeStore, CountsReferencesAndFreesAtZero) {
  RepresentativeStore store;
  RepresentativeInfo info;
  const std::vector<std::byte> bytes(100);
  const RepId a = store.add(info, bytes);
  const RepId b = store.add(info, bytes);
  EXPECT_NE(a, b);
  EXPECT_EQ(store.stats().count, 2u);
  EXPECT_EQ(store.stats().bytes, 200u);
  ASSERT_TRUE(store.acquire(a).ok());
  EXPECT_EQ(store.references(a), 2u);
  auto pinned = store.get(a);
  ASSERT_TRUE(store.release(a).ok());
  ASSERT_TRUE(store.release(a).ok());
  EXPECT_EQ(store.references(a), 0u);
  EXPECT_EQ(store.get(a), nullptr);
  EXPECT_EQ(pinned->bytes.size(), 100u) << "a reader's pin outlives the release";
  EXPECT_FALSE(store.release(a).ok());
  EXPECT_FALSE(store.acquire(a).ok());
  // The freed slot is reused under a new generation: the stale id stays dead.
  const RepId c = store.add(info, bytes);
  EXPECT_NE(c, a);
  EXPECT_EQ(static_cast<uint32_t>(c), static_cast<uint32_t>(a));
  EXPECT_FALSE(store.acquire(a).ok());
  EXPECT_EQ(store.stats().count, 2u);
  EXPECT_FALSE(store.acquire(kNoRep).ok());
  EXPECT_FALSE(store.acquire(~0ull).ok());
  (void)store.release(b);
  (void)store.release(c);
  EXPECT_EQ(store.stats().count, 0u);
  EXPECT_EQ(store.stats().bytes, 0u);
  EXPECT_EQ(store.stats().references, 0u);
}

TEST(RepresentativeStore, RestoresUnderPersistedIdsAndNeverReusesThemWhileLive) {
  RepresentativeStore store;
  const std::vector<std::byte> bytes(32, std::byte{5});
  RepresentativeInfo info;
  info.layer = 3;
  const RepId a = (RepId{4} << 32) | 2;  // generation 4, slot 2
  const RepId b = (RepId{1} << 32) | 5;
  ASSERT_TRUE(store.restore(a, info, bytes, 3).ok());
  ASSERT_TRUE(store.restore(b, info, bytes, 1).ok());
  EXPECT_EQ(store.references(a), 3u);
  EXPECT_EQ(store.get(a)->info.layer, 3u);
  EXPECT_EQ(store.get(a)->bytes, bytes);
  EXPECT_EQ(store.stats().count, 2u);
  EXPECT_EQ(store.stats().references, 4u);
  EXPECT_EQ(store.stats().bytes, 64u);
  // Refused: a live slot, no references, generation 0.
  EXPECT_FALSE(store.restore((RepId{9} << 32) | 2, info, bytes, 1).ok());
  EXPECT_FALSE(store.restore((RepId{1} << 32) | 7, info, bytes, 0).ok());
  EXPECT_FALSE(store.restore(7, info, bytes, 1).ok());
  // New ids fill the free slots (0, 1, 3, 4, then beyond), never the restored ones.
  std::set<uint32_t> slots;
  for (int i = 0; i < 5; ++i) {
    const RepId id = store.add(info, bytes);
    EXPECT_NE(id, a);
    EXPECT_NE(id, b);
    slots.insert(static_cast<uint32_t>(id));
  }
  EXPECT_EQ(slots, (std::set<uint32_t>{0, 1, 3, 4, 6}));
  // A restored one freed: its slot comes back with a new generation.
  ASSERT_TRUE(store.release(b).ok());
  EXPECT_EQ(store.get(b), nullptr);
  const RepId c = store.add(info, bytes);
  EXPECT_EQ(static_cast<uint32_t>(c), 5u);
  EXPECT_EQ(c >> 32, 2u);
}

TEST(RepresentativeStore, ConcurrentAcquireRelease) {
  RepresentativeStore store;
  const std::vector<std::byte> bytes(16);
  std::vector<RepId> ids;
  for (int i = 0; i < 64; ++i) ids.push_back(store.add({}, bytes));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int round = 0; round < 200; ++round) {
        for (RepId id : ids) ASSERT_TRUE(store.acquire(id).ok());
        for (RepId id : ids) ASSERT_NE(store.get(id), nullptr);
        for (RepId id : ids) ASSERT_TRUE(store.release(id).ok());
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(store.stats().references, 64u);
  for (RepId id : ids) EXPECT_EQ(store.references(id), 1u);
}

// fused_chunk_references lists one id per block, and exactly the references the chunk holds.
TEST(FusedCodec, ReferencesListEveryBlocksRepresentative) {
  RepresentativeStore store;
  auto codec = make_codec("fused:0.9:b8:rep=int8:res=int4", &store);
  const Layout layout = small_layout();
  const auto a = kv_like_chunk(layout, 1);
  const ChunkInput in[] = {{a, 0}, {a, 0}};
  EncodeBuffer out[2];
  ASSERT_TRUE((*codec)->encode_batch(layout, in, out).ok());
  std::map<RepId, uint32_t> counts;
  for (const auto& o : out) {
    auto ids = fused_chunk_references(o.bytes());
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(ids->size(),
              uint64_t{layout.num_layers} * 2 * layout.num_kv_heads * (layout.chunk_tokens / 8));
    for (RepId id : *ids) ++counts[id];
  }
  for (const auto& [id, n] : counts) EXPECT_EQ(store.references(id), n);
  EXPECT_EQ(counts.size(), store.stats().count);
  auto raw = make_codec("int8");
  EncodeBuffer enc;
  ASSERT_TRUE((*raw)->encode(layout, a, enc).ok());
  auto none = fused_chunk_references(enc.bytes());
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  auto bad = std::vector<std::byte>(out[0].bytes().begin(), out[0].bytes().end());
  bad[100] ^= std::byte{1};
  EXPECT_FALSE(fused_chunk_references(bad).ok());
}

TEST(FusedCodec, BatchedFusionSharesBlocksAndReleasesThem) {
  RepresentativeStore store;
  auto codec = make_codec("fused:0.99:b8:rep=raw:res=int4", &store);
  ASSERT_TRUE(codec.ok());
  const Layout layout = small_layout();
  const auto a = kv_like_chunk(layout, 1);
  const auto b = kv_like_chunk(layout, 2);
  // Chunks a, b, a committed together: the second a is all references to the first.
  const ChunkInput in[] = {{a, 0}, {b, 32}, {a, 64}};
  EncodeBuffer out[3];
  ASSERT_TRUE((*codec)->encode_batch(layout, in, out).ok());
  const uint64_t per_chunk = blocks_per_chunk(layout, 8);
  EXPECT_EQ(store.stats().count, 2 * per_chunk);
  EXPECT_EQ(store.stats().references, 3 * per_chunk);
  EXPECT_LT(out[2].size(), out[0].size() + 1) << "identical blocks carry no residual";
  std::vector<std::byte> dec(a.size());
  ASSERT_TRUE((*codec)->decode(out[0].bytes(), dec).ok());
  EXPECT_EQ(dec, a) << "raw representatives decode exactly";
  ASSERT_TRUE((*codec)->decode(out[2].bytes(), dec).ok());
  EXPECT_EQ(dec, a) << "a reference to an identical block decodes exactly";
  // A copy of the second chunk (another tier) takes its own references and releases them.
  ASSERT_TRUE((*codec)->retain(out[1].bytes()).ok());
  EXPECT_EQ(store.stats().references, 4 * per_chunk);
  ASSERT_TRUE((*codec)->release(out[1].bytes()).ok());
  EXPECT_EQ(store.stats().references, 3 * per_chunk);
  // Deleting the first chunk keeps what the third refers to.
  ASSERT_TRUE((*codec)->release(out[0].bytes()).ok());
  EXPECT_EQ(store.stats().count, 2 * per_chunk);
  ASSERT_TRUE((*codec)->decode(out[2].bytes(), dec).ok());
  EXPECT_EQ(dec, a);
  ASSERT_TRUE((*codec)->release(out[2].bytes()).ok());
  EXPECT_EQ(store.stats().count, per_chunk);
  ASSERT_TRUE((*codec)->release(out[1].bytes()).ok());
  EXPECT_EQ(store.stats().count, 0u);
  EXPECT_EQ(store.stats().bytes, 0u);
  // A chunk whose representatives are gone is an error, not garbage.
  EXPECT_FALSE((*codec)->decode(out[1].bytes(), dec).ok());
  EXPECT_FALSE((*codec)->retain(out[1].bytes()).ok());
  EXPECT_EQ(store.stats().references, 0u) << "a failed retain takes nothing";
}

TEST(FusedCodec, LaterBatchesMatchEarlierRepresentativesWithinTheWindow) {
  RepresentativeStore store;
  const Layout layout = small_layout();
  const auto a = kv_like_chunk(layout, 1);
  for (uint32_t window : {0u, 64u}) {
    auto codec = make_codec("fused:0.99:b8:rep=fp8:window=" + std::to_string(window), &store);
    EncodeBuffer first, second;
    ASSERT_TRUE((*codec)->encode(layout, a, first).ok());
    const uint64_t before = store.stats().count;
    ASSERT_TRUE((*codec)->encode(layout, a, second).ok());
    if (window == 0) {
      EXPECT_EQ(store.stats().count, 2 * before) << "nothing from earlier batches is searched";
    } else {
      EXPECT_EQ(store.stats().count, before) << "the second chunk refers to the first's blocks";
    }
    ASSERT_TRUE((*codec)->release(first.bytes()).ok());
    ASSERT_TRUE((*codec)->release(second.bytes()).ok());
    EXPECT_EQ(store.stats().count, 0u);
  }
}

// Keys rotated by RoPE at two positions match only when the codec undoes the rotation.
TEST(FusedCodec, RopeAwareMatchingFindsShiftedKeys) {
  const Layout layout = small_layout();
  const float base = 10000.0f;
  const auto pre = kv_like_chunk(layout, 3);  // "pre-RoPE" keys and values
  auto rotate_keys = [&](uint32_t first_token) {
    auto x = testing::to_f32(layout.dtype, pre);
    const uint32_t T = layout.chunk_tokens, H = layout.num_kv_heads, D = layout.head_dim;
    for (uint32_t l = 0; l < layout.num_layers; ++l) {
      for (uint32_t t = 0; t < T; ++t) {
        for (uint32_t h = 0; h < H; ++h) {
          float* v = x.data() + (uint64_t{2 * l} * T * H + uint64_t{t} * H + h) * D;
          for (uint32_t i = 0; i < D / 2; ++i) {
            const double a = double(first_token + t) * std::pow(double(base), -2.0 * i / D);
            const float c = float(std::cos(a)), s = float(std::sin(a));
            const float x1 = v[i], x2 = v[i + D / 2];
            v[i] = x1 * c - x2 * s;
            v[i + D / 2] = x2 * c + x1 * s;
          }
        }
      }
    }
    std::vector<std::byte> out(pre.size());
    kernels::convert_from_f32(DType::kFloat32 == layout.dtype ? DType::kFloat32 : layout.dtype,
                              x.data(), x.size(), out.data());
    return out;
  };
  const auto at0 = rotate_keys(0);
  const auto at96 = rotate_keys(96);
  const uint64_t key_blocks = blocks_per_chunk(layout, 8) / 2;
  for (float rope : {0.0f, base}) {
    RepresentativeStore store;
    auto codec = make_codec("fused:0.98:b8:rep=raw:res=int8:rope=" + std::to_string(rope), &store);
    const ChunkInput in[] = {{at0, 0}, {at96, 96}};
    EncodeBuffer out[2];
    ASSERT_TRUE((*codec)->encode_batch(layout, in, out).ok());
    // Values are identical in both chunks: always shared. Keys only with rope.
    const uint64_t expect = rope > 0 ? 2 * key_blocks : 3 * key_blocks;
    EXPECT_EQ(store.stats().count, expect) << "rope " << rope;
    std::vector<std::byte> dec(at96.size());
    ASSERT_TRUE((*codec)->decode(out[1].bytes(), dec).ok());
    EXPECT_LT(rel_l2(layout.dtype, at96, dec), 0.01) << "rope " << rope;
  }
}

TEST(FusedCodec, ThresholdTradesSizeForError) {
  const Layout layout = small_layout();
  std::vector<std::vector<std::byte>> chunks;
  // Noisy copies of one chunk: similar, not identical.
  const auto base_chunk = kv_like_chunk(layout, 7);
  for (uint32_t i = 0; i < 6; ++i) {
    auto noisy = testing::to_f32(layout.dtype, kv_like_chunk(layout, 100 + i));
    auto x = testing::to_f32(layout.dtype, base_chunk);
    for (size_t k = 0; k < x.size(); ++k) x[k] += 0.15f * (noisy[k] - x[k]);
    std::vector<std::byte> c(base_chunk.size());
    kernels::convert_from_f32(layout.dtype, x.data(), x.size(), c.data());
    chunks.push_back(std::move(c));
  }
  std::vector<ChunkInput> in;
  for (auto& c : chunks) in.push_back({c, 0});
  double prev_bytes = 0, prev_err = 1;
  for (const char* spec : {"fused:0.999:b8:res=none", "fused:0.9:b8:res=none"}) {
    RepresentativeStore store;
    auto codec = make_codec(spec, &store);
    std::vector<EncodeBuffer> out(chunks.size());
    ASSERT_TRUE((*codec)->encode_batch(layout, in, out).ok());
    double bytes = double(store.stats().bytes), err = 0;
    for (size_t i = 0; i < chunks.size(); ++i) {
      bytes += double(out[i].size());
      std::vector<std::byte> dec(chunks[i].size());
      ASSERT_TRUE((*codec)->decode(out[i].bytes(), dec).ok());
      err += rel_l2(layout.dtype, chunks[i], dec);
    }
    if (prev_bytes > 0) {
      EXPECT_LT(bytes, prev_bytes * 0.6) << spec << ": a lower threshold stores less";
      EXPECT_GT(err, prev_err) << spec << ": and errs more";
    }
    prev_bytes = bytes;
    prev_err = err;
  }
}

// ---- real KV ---------------------------------------------------------------------------------

std::string data_path(const char* workload) {
  return std::string(TIERKV_SOURCE_DIR) + "/tests/data/kv/" + workload + ".tkv";
}

class RealKv : public ::testing::TestWithParam<const char*> {};

TEST_P(RealKv, EveryCodecRoundTripsWithinItsBound) {
  auto ds = kvdata::KvDataset::load(data_path(GetParam()));
  ASSERT_TRUE(ds.ok()) << ds.status().to_string();
  constexpr uint32_t kChunkTokens = 32;
  const Layout layout = ds->layout(kChunkTokens);
  std::vector<std::vector<std::byte>> chunks;
  std::vector<ChunkInput> inputs;
  for (size_t p = 0; p < ds->prompts.size(); ++p) {
    for (uint32_t c = 0; c < ds->full_chunks(p, kChunkTokens); ++c) {
      chunks.emplace_back(layout.chunk_bytes());
      ds->gather_chunk(p, c, kChunkTokens, chunks.back());
    }
  }
  for (size_t i = 0, p = 0; p < ds->prompts.size(); ++p) {
    for (uint32_t c = 0; c < ds->full_chunks(p, kChunkTokens); ++c, ++i) {
      inputs.push_back({chunks[i], uint64_t{c} * kChunkTokens});
    }
  }
  ASSERT_GE(chunks.size(), 6u);
  for (const char* spec :
       {"raw", "zstd:3:bytes", "zstd:3:bits", "fp8", "int8", "int8:k0", "int4:g32",
        "fused:0.95:rep=fp8:res=int4:rope=100000", "fused:0.9:rep=raw:res=none:rope=100000"}) {
    RepresentativeStore store;
    auto codec = make_codec(spec, &store);
    ASSERT_TRUE(codec.ok());
    const CodecConfig config = (*codec)->config();
    std::vector<EncodeBuffer> out(chunks.size());
    ASSERT_TRUE((*codec)->encode_batch(layout, inputs, out).ok()) << spec;
    uint64_t stored = store.stats().bytes;
    for (size_t i = 0; i < chunks.size(); ++i) {
      stored += out[i].size();
      std::vector<std::byte> dec(chunks[i].size());
      ASSERT_TRUE((*codec)->decode(out[i].bytes(), dec).ok()) << spec;
      if (config.id == CodecId::kRaw || config.id == CodecId::kZstd) {
        ASSERT_EQ(dec, chunks[i]) << spec;
      } else if (config.id == CodecId::kFused) {
        const double e_rep = config.fused_rep == BlockFormat::kFp8 ? 0.0625 : 0.0;
        EXPECT_LE(testing::fused_worst_block(layout, config.fused_block_tokens,
                                             config.fused_threshold, e_rep, chunks[i], dec),
                  1.0)
            << spec;
      } else {
        EXPECT_EQ(count_bound_violations(config, layout, chunks[i], dec), 0u) << spec;
      }
    }
    const double ratio = double(chunks.size() * layout.chunk_bytes()) / double(stored);
    if (config.id == CodecId::kFp8 || (config.id == CodecId::kInt8 && config.int8_key_group == 0)) {
      EXPECT_GT(ratio, 1.8) << spec;
    }
    if (config.id == CodecId::kInt8 && config.int8_key_group > 0) {
      // Per-channel key metadata (8 bytes per channel) over 32-token chunks costs 0.25 byte per
      // key element; over the default 256-token chunks, 1/32.
      EXPECT_GT(ratio, 1.7) << spec;
    }
    if (config.id == CodecId::kInt4) {
      EXPECT_GT(ratio, 2.5) << spec;
    }
    if (config.id == CodecId::kZstd) {
      EXPECT_GT(ratio, 1.05) << spec;
    }
    if (std::string(GetParam()) == "shared_prefix" && config.id == CodecId::kFused) {
      // The slice's prompts share their first tokens: their chunks fuse into one set of blocks.
      EXPECT_GT(ratio, 2.5) << spec;
    }
    for (size_t i = 0; i < chunks.size(); ++i) ASSERT_TRUE((*codec)->release(out[i].bytes()).ok());
    EXPECT_EQ(store.stats().count, 0u) << spec;
  }
}

// Real keys have outlier channels: quantized per channel (int8), their error is several times
// smaller than per token (int8:k0); values are quantized the same way by both.
TEST_P(RealKv, Int8PerChannelKeysBeatPerTokenKeys) {
  auto ds = kvdata::KvDataset::load(data_path(GetParam()));
  ASSERT_TRUE(ds.ok()) << ds.status().to_string();
  constexpr uint32_t kChunkTokens = 32;
  const Layout layout = ds->layout(kChunkTokens);
  std::vector<std::byte> chunk(layout.chunk_bytes());
  ds->gather_chunk(0, 0, kChunkTokens, chunk);
  const uint64_t slab = layout.chunk_bytes() / (2 * uint64_t{layout.num_layers});
  auto key_error = [&](const char* spec, double* value_error) {
    auto codec = make_codec(spec);
    EncodeBuffer enc;
    EXPECT_TRUE((*codec)->encode(layout, chunk, enc).ok());
    std::vector<std::byte> dec(chunk.size());
    EXPECT_TRUE((*codec)->decode(enc.bytes(), dec).ok());
    double kn = 0, kd = 0, vn = 0, vd = 0;
    const auto x = testing::to_f32(layout.dtype, chunk);
    const auto y = testing::to_f32(layout.dtype, dec);
    const uint64_t per_slab = slab / dtype_bytes(layout.dtype);
    for (uint64_t i = 0; i < x.size(); ++i) {
      const double d = double{y[i]} - x[i];
      const bool key = (i / per_slab) % 2 == 0;
      (key ? kn : vn) += d * d;
      (key ? kd : vd) += double{x[i]} * x[i];
    }
    *value_error = std::sqrt(vn / vd);
    return std::sqrt(kn / kd);
  };
  double v_channel = 0, v_token = 0;
  const double k_channel = key_error("int8", &v_channel);
  const double k_token = key_error("int8:k0", &v_token);
  EXPECT_LT(k_channel * 2, k_token);
  EXPECT_EQ(v_channel, v_token);
}

INSTANTIATE_TEST_SUITE_P(Workloads, RealKv,
                         ::testing::Values("shared_prefix", "retrieval", "unrelated"));

}  // namespace
}  // namespace tierkv::storage
