// fused: joint encoding of similar blocks across chunks.
//
// A chunk is cut into blocks: one layer, K or V, one KV head, a run of B tokens (B = gcd of the
// configured block size and chunk_tokens, so blocks tile the chunk). For each block, in the order
// below, the encoder looks for the most similar representative of the same (layer, head, K/V)
// among those created earlier in this batch (chunked and batched fusion) and the last `window`
// of earlier batches (cosine similarity, kernels/similarity.h). If the best similarity reaches
// the threshold the block becomes a *reference* to it: decoded as alpha * rep, where alpha is
// the least-squares scale, plus an optional residual (the block minus that prediction, quantized
// in the residual format) when the similarity is below `free` (0.99999: a near-exact duplicate
// needs none). Otherwise the block becomes a new representative in the RepresentativeStore
// (encoded in the rep format) and the chunk refers to it with alpha = 1.
//
// RoPE: with rope=BASE > 0, keys are compared after undoing the rotary embedding of each token's
// position (rotate-half pairing (i, i + D/2), frequency BASE^(-2i/D)), so the same text at a
// different position matches. A reference to a key representative at another position is
// rotated by the position difference when decoded; values are never rotated.
//
// Params: [0,4) uint32 first_token of the chunk; [4,6) uint16 B; [6] rep format; [7] residual
// format; [8,12) float rope base; [12,16) float threshold (informational).
// Payload: uint32 block count, uint32 0, then one 16-byte entry per block — uint64 RepId, float
// alpha, uint8 flags (bit 0: has residual), 3 zero bytes — in the order
//   for layer, for K then V, for head, for block,
// then the residuals of the entries that have one, in entry order, each a kernels encoded slab
// of shape [B][1][head_dim] (fp8: kFp8E4M3, int8: kInt8, int4: kInt4Value with one group per
// token row) of the fp32 residual.
//
// Error: a reference without residual has relative error sqrt(1 - s^2) for similarity s; with a
// residual, the residual format's error on a residual that small. The threshold is the
// size/error knob; tierkv-bench codec prints the curve.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <numeric>
#include <unordered_map>
#include <vector>

#include "codecs.h"
#include "tierkv/kernels/half.h"
#include "tierkv/kernels/quantize.h"
#include "tierkv/kernels/similarity.h"
#include "tierkv/storage/representative_store.h"

namespace tierkv::storage::codec_internal {

namespace {

constexpr size_t kEntryBytes = 16;
constexpr size_t kPayloadHeadBytes = 8;
constexpr float kFreeSimilarity = 0.99999f;
constexpr uint8_t kHasResidual = 1;

struct Geometry {
  uint32_t layers = 0, heads = 0, dim = 0, tokens = 0, block = 0, blocks_per_run = 0;
  [[nodiscard]] uint64_t num_blocks() const {
    return uint64_t{layers} * 2 * heads * blocks_per_run;
  }
  [[nodiscard]] uint32_t block_elems() const { return block * dim; }
  [[nodiscard]] uint32_t group_of(uint32_t layer, uint32_t kind, uint32_t head) const {
    return (layer * 2 + kind) * heads + head;
  }
};

Geometry geometry(const Layout& layout, uint32_t block_tokens) {
  Geometry g;
  g.layers = layout.num_layers;
  g.heads = layout.num_kv_heads;
  g.dim = layout.head_dim;
  g.tokens = layout.chunk_tokens;
  g.block = std::gcd(layout.chunk_tokens, block_tokens);
  g.blocks_per_run = g.tokens / g.block;
  return g;
}

kernels::QuantSpec spec_for(BlockFormat f, uint32_t dim) {
  switch (f) {
    case BlockFormat::kFp8:
      return {kernels::QuantScheme::kFp8E4M3, 0};
    case BlockFormat::kInt8:
      return {kernels::QuantScheme::kInt8, 0};
    default:
      return {kernels::QuantScheme::kInt4Value, dim};
  }
}

// Bytes of one block of `tokens` x `dim` in format `f` (elements of `dtype` for kRaw).
uint64_t block_bytes(BlockFormat f, uint32_t tokens, uint32_t dim, DType dtype) {
  if (f == BlockFormat::kNone) return 0;
  if (f == BlockFormat::kRaw) return uint64_t{tokens} * dim * dtype_bytes(dtype);
  return kernels::quant_sizes(spec_for(f, dim), {tokens, 1, dim}).total();
}

// Byte offset of block `b`'s first row (token b*B, head h) in a layer's K or V slab.
uint64_t row_offset(const Geometry& g, uint32_t layer, uint32_t kind, uint32_t head, uint32_t token,
                    uint32_t eb) {
  const uint64_t slab = uint64_t{g.tokens} * g.heads * g.dim * eb;
  return (2 * uint64_t{layer} + kind) * slab + (uint64_t{token} * g.heads + head) * g.dim * eb;
}

// The encoder's per-element loops, built for baseline x86-64 and for AVX2 and chosen at load
// time (the decoder's are below).
#if defined(__x86_64__) && !defined(__clang__)
#define TIERKV_ENCODE_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define TIERKV_ENCODE_CLONES
#endif

// sum a[i] * b[i] in double, in eight interleaved partial sums (lane i % 8), added pairwise.
TIERKV_ENCODE_CLONES double dot(const float* __restrict a, const float* __restrict b, uint32_t n) {
  using V4d = double __attribute__((vector_size(32)));
  V4d s0 = {}, s1 = {};
  uint32_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const V4d a0 = {a[i], a[i + 1], a[i + 2], a[i + 3]};
    const V4d b0 = {b[i], b[i + 1], b[i + 2], b[i + 3]};
    const V4d a1 = {a[i + 4], a[i + 5], a[i + 6], a[i + 7]};
    const V4d b1 = {b[i + 4], b[i + 5], b[i + 6], b[i + 7]};
    s0 += a0 * b0;
    s1 += a1 * b1;
  }
  double tail = 0;
  for (; i < n; ++i) tail += double{a[i]} * b[i];
  return ((s0[0] + s1[0]) + (s0[1] + s1[1])) + ((s0[2] + s1[2]) + (s0[3] + s1[3])) + tail;
}

// v[i] /= norm, in double.
TIERKV_ENCODE_CLONES void divide(float* v, uint32_t n, double norm) {
  for (uint32_t i = 0; i < n; ++i) v[i] = static_cast<float>(double{v[i]} / norm);
}

// sketch[d] = sum over the block's rows of rows[t][d], in row order.
TIERKV_ENCODE_CLONES void sum_rows(const float* __restrict rows, uint32_t tokens, uint32_t dim,
                                   float* __restrict sketch) {
  for (uint32_t d = 0; d < dim; ++d) sketch[d] = 0.0f;
  for (uint32_t t = 0; t < tokens; ++t) {
    const float* r = rows + uint64_t{t} * dim;
    for (uint32_t d = 0; d < dim; ++d) sketch[d] += r[d];
  }
}

// resid[i] = block[i] - alpha * pred[i] (a product, then a difference).
TIERKV_ENCODE_CLONES void residual(const float* __restrict block, float alpha,
                                   const float* __restrict pred, uint32_t n,
                                   float* __restrict resid) {
  for (uint32_t i = 0; i < n; ++i) resid[i] = block[i] - alpha * pred[i];
}

// cos/sin of delta * base^(-2i/dim) for i < dim/2, cached per delta (blocks repeat deltas).
class RotationCache {
 public:
  const float* get(int64_t delta, float base, uint32_t dim) {
    if (base != base_ || dim != dim_) {
      cache_.clear();
      base_ = base;
      dim_ = dim;
    }
    auto it = cache_.find(delta);
    if (it != cache_.end()) return it->second.data();
    if (cache_.size() > 4096) cache_.clear();
    std::vector<float> t(dim);
    const uint32_t half = dim / 2;
    for (uint32_t i = 0; i < half; ++i) {
      const double freq = std::pow(static_cast<double>(base), -2.0 * i / dim);
      const double a = static_cast<double>(delta) * freq;
      t[i] = static_cast<float>(std::cos(a));
      t[half + i] = static_cast<float>(std::sin(a));
    }
    return cache_.emplace(delta, std::move(t)).first->second.data();
  }

 private:
  float base_ = 0;
  uint32_t dim_ = 0;
  std::unordered_map<int64_t, std::vector<float>> cache_;
};

// Rotates each of `rows` rows of `dim` floats by the table's angles (rotate-half pairing).
void rotate_rows(float* x, uint32_t rows, uint32_t dim, const float* table) {
  const uint32_t half = dim / 2;
  const float* c = table;
  const float* s = table + half;
  for (uint32_t r = 0; r < rows; ++r) {
    float* v = x + uint64_t{r} * dim;
    for (uint32_t i = 0; i < half; ++i) {
      const float a = v[i];
      const float b = v[half + i];
      v[i] = a * c[i] - b * s[i];
      v[half + i] = b * c[i] + a * s[i];
    }
  }
}

// The decoder's per-element loops, built for baseline x86-64 and for AVX2 and chosen at load time
// (same operations, no FMA: the same results either way).
#if defined(__x86_64__) && !defined(__clang__)
#define TIERKV_FUSED_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define TIERKV_FUSED_CLONES
#endif

// y = alpha * y (if alpha != 1), then y += resid (if resid): the decoder's prediction plus
// residual, in the order the encoder computed the residual against.
TIERKV_FUSED_CLONES void scale_add(float* __restrict y, float alpha, const float* __restrict resid,
                                   uint32_t n) {
  if (alpha != 1.0f) {
    for (uint32_t k = 0; k < n; ++k) y[k] *= alpha;
  }
  if (resid != nullptr) {
    for (uint32_t k = 0; k < n; ++k) y[k] += resid[k];
  }
}

TIERKV_FUSED_CLONES void row_to_bf16(const float* __restrict src, uint32_t n,
                                     uint16_t* __restrict dst) {
  for (uint32_t d = 0; d < n; ++d) dst[d] = kernels::f32_to_bf16(src[d]);
}

TIERKV_FUSED_CLONES void row_to_fp16(const float* __restrict src, uint32_t n,
                                     uint16_t* __restrict dst) {
  for (uint32_t d = 0; d < n; ++d) dst[d] = kernels::f32_to_fp16(src[d]);
}

TIERKV_FUSED_CLONES void int8_row(const int8_t* __restrict q, float scale, uint32_t n,
                                  float* __restrict y) {
  for (uint32_t d = 0; d < n; ++d) y[d] = static_cast<float>(q[d]) * scale;
}

// Both nibbles of every byte value as floats, low nibble first.
const std::array<std::array<float, 2>, 256> kNibblePairs = [] {
  std::array<std::array<float, 2>, 256> t{};
  for (uint32_t b = 0; b < 256; ++b) {
    t[b] = {static_cast<float>(b & 0xfu), static_cast<float>(b >> 4)};
  }
  return t;
}();

TIERKV_FUSED_CLONES void axpb_add(float* __restrict y, const float* __restrict q, float s, float m,
                                  uint32_t n) {
  for (uint32_t d = 0; d < n; ++d) y[d] += q[d] * s + m;
}

// y += the int4 residual `res` (kernels kInt4Value slab [rows][1][dim] with one group per row,
// dim even): element by element exactly kernels::dequantize_slab's q * scale + min, added.
void add_int4_residual(float* y, const std::byte* res, uint32_t rows, uint32_t dim) {
  const std::byte* scales = res;
  const std::byte* mins = res + 4 * uint64_t{rows};
  const auto* packed = reinterpret_cast<const uint8_t*>(res + 8 * uint64_t{rows});
  float q[512];
  for (uint32_t r = 0; r < rows; ++r) {
    const uint8_t* p = packed + uint64_t{r} * dim / 2;
    for (uint32_t k = 0; k < dim / 2; ++k) std::memcpy(q + 2 * k, kNibblePairs[p[k]].data(), 8);
    axpb_add(y + uint64_t{r} * dim, q, load_le<float>(scales + 4 * r), load_le<float>(mins + 4 * r),
             dim);
  }
}

// Writes a slab staged head-major in fp32 ([head][token][dim]) to the chunk's [token][head][dim]
// layout in `dtype`, rounding to nearest even and saturating (tierkv/kernels/half.h).
void unstage(const Geometry& g, DType dtype, const float* stage, std::byte* slab) {
  const uint32_t eb = dtype_bytes(dtype);
  constexpr uint32_t kRow = 512;
  uint16_t row[kRow];
  for (uint32_t t = 0; t < g.tokens; ++t) {
    for (uint32_t h = 0; h < g.heads; ++h) {
      const float* src = stage + (uint64_t{h} * g.tokens + t) * g.dim;
      std::byte* dst = slab + (uint64_t{t} * g.heads + h) * g.dim * eb;
      if (dtype == DType::kFloat32) {
        std::memcpy(dst, src, 4 * uint64_t{g.dim});
        continue;
      }
      if ((reinterpret_cast<uintptr_t>(dst) & 1u) == 0) {
        // Aligned (the usual case): converted straight into the chunk.
        auto* out = reinterpret_cast<uint16_t*>(dst);
        if (dtype == DType::kFloat16) {
          row_to_fp16(src, g.dim, out);
        } else {
          row_to_bf16(src, g.dim, out);
        }
        continue;
      }
      for (uint32_t d0 = 0; d0 < g.dim; d0 += kRow) {
        const uint32_t n = std::min(kRow, g.dim - d0);
        if (dtype == DType::kFloat16) {
          row_to_fp16(src + d0, n, row);
        } else {
          row_to_bf16(src + d0, n, row);
        }
        // Fixed-size copies compile to vector moves; the tail goes element by element.
        std::byte* out = dst + 2 * uint64_t{d0};
        uint32_t d = 0;
        for (; d + 16 <= n; d += 16) std::memcpy(out + 2 * d, row + d, 32);
        for (; d < n; ++d) std::memcpy(out + 2 * d, row + d, 2);
      }
    }
  }
}

class FusedCodec final : public ChunkCodec {
 public:
  FusedCodec(const CodecConfig& config, RepresentativeStore* reps) : config_(config), reps_(reps) {}
  const CodecConfig& config() const override { return config_; }

  Status encode(const Layout& layout, std::span<const std::byte> chunk,
                EncodeBuffer& out) override {
    const ChunkInput in{chunk, 0};
    return encode_batch(layout, {&in, 1}, {&out, 1});
  }

  Status encode_batch(const Layout& layout, std::span<const ChunkInput> chunks,
                      std::span<EncodeBuffer> outs) override;
  Status decode(std::span<const std::byte> encoded, std::span<std::byte> out) override;
  Status release(std::span<const std::byte> encoded) override;
  Status retain(std::span<const std::byte> encoded) override;

 private:
  // Searchable representatives of one (layer, K/V, head): unit-norm search vectors (keys
  // de-rotated when rope is on), one row per representative. Rows [first, ids.size()) are live
  // (index i below is row first + i); dropping the oldest advances `first`, and the dead rows
  // are compacted away only once they outnumber the live ones, so trimming to the window costs
  // no memmove of the whole index per batch.
  struct GroupIndex {
    std::vector<RepId> ids;
    std::vector<float> vectors;   // unit search vectors, block_elems() floats each
    std::vector<float> norms;     // 1, or 0 for a zero block
    std::vector<float> sketches;  // unit mean-over-tokens of the search vector, head_dim each
    std::vector<float> sketch_norms;
    size_t first = 0;

    [[nodiscard]] uint32_t size() const { return static_cast<uint32_t>(ids.size() - first); }
    [[nodiscard]] RepId id(size_t i) const { return ids[first + i]; }
    [[nodiscard]] const float* vectors_at(uint32_t n) const { return vectors.data() + first * n; }
    [[nodiscard]] const float* norms_at() const { return norms.data() + first; }
    [[nodiscard]] std::span<const float> sketches_at(uint32_t dim) const {
      return {sketches.data() + first * dim, sketches.size() - first * dim};
    }
    [[nodiscard]] const float* sketch_norms_at() const { return sketch_norms.data() + first; }
    // Room for `more` rows beyond the live ones, so pushes do not reallocate.
    void reserve(size_t more, uint32_t n, uint32_t dim) {
      const size_t rows = ids.size() + more;
      ids.reserve(rows);
      norms.reserve(rows);
      sketch_norms.reserve(rows);
      vectors.reserve(rows * n);
      sketches.reserve(rows * dim);
    }
    void push(RepId id, std::span<const float> vector, float norm, std::span<const float> sketch,
              float sketch_norm) {
      ids.push_back(id);
      vectors.insert(vectors.end(), vector.begin(), vector.end());
      norms.push_back(norm);
      sketches.insert(sketches.end(), sketch.begin(), sketch.end());
      sketch_norms.push_back(sketch_norm);
    }
    // Drops the `count` oldest live rows.
    void drop_oldest(size_t count, uint32_t n, uint32_t dim) {
      first += count;
      if (first >= ids.size() - first) {
        erase_rows(0, first, n, dim);
        first = 0;
      }
    }
    // Drops live row i.
    void drop(size_t i, uint32_t n, uint32_t dim) { erase_rows(first + i, 1, n, dim); }

   private:
    void erase_rows(size_t row, size_t count, uint32_t n, uint32_t dim) {
      auto at = [](auto& v, size_t i) { return v.begin() + static_cast<ptrdiff_t>(i); };
      ids.erase(at(ids, row), at(ids, row + count));
      norms.erase(at(norms, row), at(norms, row + count));
      sketch_norms.erase(at(sketch_norms, row), at(sketch_norms, row + count));
      vectors.erase(at(vectors, row * n), at(vectors, (row + count) * n));
      sketches.erase(at(sketches, row * dim), at(sketches, (row + count) * dim));
    }
  };
  // The best match for search_/sketch_ in `gi`: (index, similarity), (-1, -inf) if none.
  std::pair<int32_t, float> search(const GroupIndex& gi, uint32_t n, uint32_t dim);

  struct ParsedChunk {
    EncodedChunkInfo info;
    Geometry g;
    uint32_t first_token = 0;
    BlockFormat residual = BlockFormat::kNone;
    float rope = 0;
    const std::byte* entries = nullptr;
    const std::byte* residuals = nullptr;
    uint64_t residual_bytes = 0;
  };

 public:
  static Result<ParsedChunk> parse(std::span<const std::byte> encoded);

 private:
  // Trims each group's index to the window and reserves room for `chunks` chunks' blocks.
  void start_batch(const Layout& layout, const Geometry& g, size_t chunks);
  // Decodes a representative's block into `rows` (fp32, tokens x dim), rotated to `position`
  // when it is a key and rope is on.
  Status load_rep(const Representative& rep, int64_t position, float rope, float* rows);

  CodecConfig config_;
  RepresentativeStore* reps_;
  uint64_t index_layout_ = 0;  // fingerprint the index was built for
  std::vector<GroupIndex> index_;
  RotationCache rotations_;
  // Scratch, grown to the largest block and reused.
  std::vector<float> block_, search_, sketch_, pred_, resid_, quant_scratch_, stage_;
  std::vector<std::byte> bytes_;
  std::vector<RepId> ids_;
  std::vector<std::shared_ptr<const Representative>> pinned_;
};

void FusedCodec::start_batch(const Layout& layout, const Geometry& g, size_t chunks) {
  const uint64_t fp = layout.fingerprint() ^ (uint64_t{g.block} << 48);
  if (fp != index_layout_ || index_.size() != uint64_t{g.layers} * 2 * g.heads) {
    index_.assign(uint64_t{g.layers} * 2 * g.heads, GroupIndex{});
    index_layout_ = fp;
  }
  // Keep the last `window` representatives of earlier batches searchable.
  for (auto& gi : index_) {
    if (gi.size() > config_.fused_window) {
      gi.drop_oldest(gi.size() - config_.fused_window, g.block_elems(), g.dim);
    }
    gi.reserve(chunks * g.blocks_per_run, g.block_elems(), g.dim);
  }
}

std::pair<int32_t, float> FusedCodec::search(const GroupIndex& gi, uint32_t n, uint32_t dim) {
  const auto count = gi.size();
  int32_t best = -1;
  float sim = -INFINITY;
  if (count == 0) return {best, sim};
  // The similarities are those kernels::best_cosine_match would give (same sums, same cosine),
  // with the query's norm computed once and the dot products several candidates at a time.
  const float qn = std::sqrt(kernels::dot_product(search_.data(), search_.data(), n));
  // Few candidates: compare them all in full. Many: shortlist on the sketches (head_dim floats
  // instead of tokens * head_dim), then compare the shortlist in full.
  constexpr uint32_t kShortlist = 8;
  constexpr uint32_t kFullSearch = 2 * kShortlist;
  float dots[kFullSearch];
  if (count <= kFullSearch) {
    kernels::dot_products(search_.data(), gi.vectors_at(n), nullptr, count, n, dots);
    for (uint32_t c = 0; c < count; ++c) {
      const float s = kernels::cosine_from_dot(dots[c], qn, gi.norms_at()[c]);
      if (s > sim) {
        sim = s;
        best = static_cast<int32_t>(c);
      }
    }
    return {best, sim};
  }
  int32_t picks[kShortlist];
  float sims[kShortlist];
  auto top = kernels::top_cosine_matches(sketch_, gi.sketches_at(dim), count, dim,
                                         gi.sketch_norms_at(), kShortlist, picks, sims);
  if (!top.ok()) return {best, sim};
  const uint32_t npicks = *top;
  kernels::dot_products(search_.data(), gi.vectors_at(n), picks, npicks, n, dots);
  for (uint32_t i = 0; i < npicks; ++i) {
    const auto c = static_cast<uint32_t>(picks[i]);
    const float s = kernels::cosine_from_dot(dots[i], qn, gi.norms_at()[c]);
    if (s > sim || (s == sim && static_cast<int32_t>(c) < best)) {
      sim = s;
      best = static_cast<int32_t>(c);
    }
  }
  return {best, sim};
}

Status FusedCodec::load_rep(const Representative& rep, int64_t position, float rope, float* rows) {
  const RepresentativeInfo& ri = rep.info;
  const uint64_t n = uint64_t{ri.tokens} * ri.head_dim;
  if (ri.format == BlockFormat::kRaw) {
    if (rep.bytes.size() != n * dtype_bytes(ri.dtype)) {
      return Status::Internal("representative holds " + std::to_string(rep.bytes.size()) +
                              " bytes, expected " + std::to_string(n * dtype_bytes(ri.dtype)));
    }
    kernels::convert_to_f32(ri.dtype, rep.bytes.data(), n, rows);
  } else if (ri.format == BlockFormat::kInt8) {
    // kernels kInt8 slab [tokens][1][dim]: fp32 scale per row, then int8 q; value q * scale.
    if (rep.bytes.size() != 4ull * ri.tokens + n) {
      return Status::Internal("int8 representative holds " + std::to_string(rep.bytes.size()) +
                              " bytes, expected " + std::to_string(4ull * ri.tokens + n));
    }
    const auto* q = reinterpret_cast<const int8_t*>(rep.bytes.data() + 4ull * ri.tokens);
    for (uint32_t r = 0; r < ri.tokens; ++r) {
      int8_row(q + uint64_t{r} * ri.head_dim, load_le<float>(rep.bytes.data() + 4ull * r),
               ri.head_dim, rows + uint64_t{r} * ri.head_dim);
    }
  } else {
    TIERKV_RETURN_IF_ERROR(kernels::dequantize_slab(
        spec_for(ri.format, ri.head_dim), {ri.tokens, 1, ri.head_dim}, rep.bytes, DType::kFloat32,
        {reinterpret_cast<std::byte*>(rows), n * 4}));
  }
  if (ri.kind == 0 && rope > 0 && position != ri.first_token) {
    rotate_rows(rows, ri.tokens, ri.head_dim,
                rotations_.get(position - ri.first_token, rope, ri.head_dim));
  }
  return Status::Ok();
}

Status FusedCodec::encode_batch(const Layout& layout, std::span<const ChunkInput> chunks,
                                std::span<EncodeBuffer> outs) {
  if (reps_ == nullptr)
    return Status::FailedPrecondition("fused codec has no representative store");
  if (chunks.size() != outs.size()) {
    return Status::InvalidArgument("encode_batch: " + std::to_string(chunks.size()) +
                                   " chunks but " + std::to_string(outs.size()) + " outputs");
  }
  for (const auto& c : chunks) {
    TIERKV_RETURN_IF_ERROR(check_encode_input(layout, c.bytes, /*need_float=*/true));
    if (c.first_token > UINT32_MAX - layout.chunk_tokens) {
      return Status::InvalidArgument("chunk first_token " + std::to_string(c.first_token) +
                                     " is beyond the 32-bit position range");
    }
  }
  const float rope = config_.fused_rope_theta;
  if (rope > 0 && layout.head_dim % 2 != 0) {
    return Status::InvalidArgument("fused rope needs an even head_dim, layout has " +
                                   std::to_string(layout.head_dim));
  }
  const Geometry g = geometry(layout, config_.fused_block_tokens);
  const uint32_t n = g.block_elems();
  const uint32_t eb = dtype_bytes(layout.dtype);
  const BlockFormat res_fmt = config_.fused_residual;
  const uint64_t res_bytes = block_bytes(res_fmt, g.block, g.dim, DType::kFloat32);
  const uint64_t rep_bytes = block_bytes(config_.fused_rep, g.block, g.dim, layout.dtype);
  const auto res_spec = spec_for(res_fmt, g.dim);
  const auto rep_spec = spec_for(config_.fused_rep, g.dim);
  block_.resize(n);
  search_.resize(n);
  sketch_.resize(g.dim);
  pred_.resize(n);
  resid_.resize(n);
  quant_scratch_.resize(3 * uint64_t{g.dim});
  bytes_.resize(std::max(rep_bytes, res_bytes));
  start_batch(layout, g, chunks.size());

  // Every reference taken in this batch, to give back if something fails halfway.
  std::vector<RepId> taken;
  auto fail = [&](Status s) {
    for (RepId id : taken) (void)reps_->release(id);
    return s;
  };

  for (size_t ci = 0; ci < chunks.size(); ++ci) {
    const std::byte* chunk = chunks[ci].bytes.data();
    const auto first_token = static_cast<uint32_t>(chunks[ci].first_token);
    EncodeBuffer& out = outs[ci];
    // Entries first; residuals are appended after them as they are made.
    const uint64_t entries_end =
        kChunkHeaderBytes + kPayloadHeadBytes + g.num_blocks() * kEntryBytes;
    // Sized for a residual on every block up front (residuals are appended as they are made),
    // then cut to what was used.
    auto buf = out.resize(entries_end + g.num_blocks() * res_bytes);
    store_le<uint32_t>(buf.data() + kChunkHeaderBytes, static_cast<uint32_t>(g.num_blocks()));
    store_le<uint32_t>(buf.data() + kChunkHeaderBytes + 4, 0);
    uint64_t used = entries_end;
    uint64_t entry = 0;
    for (uint32_t l = 0; l < g.layers; ++l) {
      for (uint32_t kind = 0; kind < 2; ++kind) {
        for (uint32_t h = 0; h < g.heads; ++h) {
          GroupIndex& gi = index_[g.group_of(l, kind, h)];
          for (uint32_t b = 0; b < g.blocks_per_run; ++b, ++entry) {
            const uint32_t t0 = b * g.block;
            const int64_t position = int64_t{first_token} + t0;
            // Gather the block's rows into fp32.
            for (uint32_t t = 0; t < g.block; ++t) {
              kernels::convert_to_f32(layout.dtype, chunk + row_offset(g, l, kind, h, t0 + t, eb),
                                      g.dim, block_.data() + uint64_t{t} * g.dim);
            }
            std::copy(block_.begin(), block_.end(), search_.begin());
            if (kind == 0 && rope > 0 && position != 0) {
              rotate_rows(search_.data(), g.block, g.dim, rotations_.get(-position, rope, g.dim));
            }
            const double norm = std::sqrt(dot(search_.data(), search_.data(), n));
            if (norm > 0) divide(search_.data(), n, norm);
            sum_rows(search_.data(), g.block, g.dim, sketch_.data());
            const double sketch_norm = std::sqrt(dot(sketch_.data(), sketch_.data(), g.dim));
            if (sketch_norm > 0) divide(sketch_.data(), g.dim, sketch_norm);
            const auto [best, sim] = search(gi, n, g.dim);
            RepId id = kNoRep;
            float alpha = 1.0f;
            uint8_t flags = 0;
            if (best >= 0 && sim >= config_.fused_threshold && reps_->acquire(gi.id(best)).ok()) {
              id = gi.id(best);
              taken.push_back(id);
              auto rep = reps_->get(id);
              Status s = rep ? load_rep(*rep, position, rope, pred_.data())
                             : Status::Internal("representative vanished while referenced");
              if (!s.ok()) return fail(s);
              const double rr = dot(pred_.data(), pred_.data(), n);
              alpha = rr > 0 ? static_cast<float>(dot(block_.data(), pred_.data(), n) / rr) : 0.0f;
              if (res_fmt != BlockFormat::kNone && sim < kFreeSimilarity) {
                residual(block_.data(), alpha, pred_.data(), n, resid_.data());
                auto dst = out.mutable_bytes().subspan(used, res_bytes);
                s = kernels::quantize_slab(res_spec, {g.block, 1, g.dim}, DType::kFloat32,
                                           std::as_bytes(std::span(resid_)), dst, quant_scratch_);
                if (!s.ok()) return fail(s);
                used += res_bytes;
                flags |= kHasResidual;
              }
            } else {
              if (best >= 0 && sim >= config_.fused_threshold) {
                gi.drop(static_cast<size_t>(best), n, g.dim);  // freed meanwhile: forget it
              }
              // A new representative.
              std::span<std::byte> rb(bytes_.data(), rep_bytes);
              if (config_.fused_rep == BlockFormat::kRaw) {
                kernels::convert_from_f32(layout.dtype, block_.data(), n, rb.data());
              } else {
                Status s =
                    kernels::quantize_slab(rep_spec, {g.block, 1, g.dim}, DType::kFloat32,
                                           std::as_bytes(std::span(block_)), rb, quant_scratch_);
                if (!s.ok()) return fail(s);
              }
              RepresentativeInfo ri;
              ri.layer = l;
              ri.head = h;
              ri.kind = static_cast<uint8_t>(kind);
              ri.format = config_.fused_rep;
              ri.dtype = layout.dtype;
              ri.tokens = g.block;
              ri.head_dim = g.dim;
              ri.first_token = position;
              id = reps_->add(ri, rb);
              taken.push_back(id);
              gi.push(id, search_, norm > 0 ? 1.0f : 0.0f, sketch_, sketch_norm > 0 ? 1.0f : 0.0f);
            }
            std::byte* e = out.mutable_bytes().data() + kChunkHeaderBytes + kPayloadHeadBytes +
                           entry * kEntryBytes;
            store_le<uint64_t>(e, id);
            store_le<float>(e + 8, alpha);
            store_le<uint32_t>(e + 12, flags);
          }
        }
      }
    }
    out.resize(used);
    Params params{};
    store_le<uint32_t>(params.data(), first_token);
    store_le<uint16_t>(params.data() + 4, static_cast<uint16_t>(g.block));
    params[6] = static_cast<std::byte>(config_.fused_rep);
    params[7] = static_cast<std::byte>(res_fmt);
    store_le<float>(params.data() + 8, rope);
    store_le<float>(params.data() + 12, config_.fused_threshold);
    write_header(out.mutable_bytes(), CodecId::kFused, layout, params);
  }
  return Status::Ok();
}

Result<FusedCodec::ParsedChunk> FusedCodec::parse(std::span<const std::byte> encoded) {
  auto info = verify_chunk(encoded);
  if (!info.ok()) return info.status();
  if (info->codec != CodecId::kFused) {
    return Status::InvalidArgument("encoded chunk is " + std::string(codec_name(info->codec)) +
                                   ", this decoder is fused");
  }
  ParsedChunk p;
  p.info = *info;
  const Layout& layout = info->layout;
  if (!kernels::is_float_kv_dtype(layout.dtype)) {
    return Status::InvalidArgument("fused chunk has non-float dtype " +
                                   std::string(dtype_name(layout.dtype)));
  }
  const std::byte* params = info->params.data();
  p.first_token = load_le<uint32_t>(params);
  const uint32_t block = load_le<uint16_t>(params + 4);
  p.residual = static_cast<BlockFormat>(params[7]);
  p.rope = load_le<float>(params + 8);
  if (block == 0 || layout.chunk_tokens % block != 0) {
    return Status::InvalidArgument("fused chunk block size " + std::to_string(block) +
                                   " does not tile " + std::to_string(layout.chunk_tokens) +
                                   " tokens");
  }
  if (p.residual != BlockFormat::kNone && p.residual != BlockFormat::kFp8 &&
      p.residual != BlockFormat::kInt8 && p.residual != BlockFormat::kInt4) {
    return Status::InvalidArgument("fused chunk residual format " +
                                   std::to_string(static_cast<int>(p.residual)) + " is unknown");
  }
  if (!(p.rope >= 0) || !std::isfinite(p.rope) || (p.rope > 0 && layout.head_dim % 2 != 0)) {
    return Status::InvalidArgument("fused chunk rope base is invalid");
  }
  p.g = geometry(layout, block);
  const uint64_t nblocks = p.g.num_blocks();
  const uint64_t head = kPayloadHeadBytes + nblocks * kEntryBytes;
  if (info->payload_bytes < head) {
    return Status::InvalidArgument("fused chunk payload of " + std::to_string(info->payload_bytes) +
                                   " bytes cannot hold " + std::to_string(nblocks) +
                                   " block entries");
  }
  const std::byte* payload = encoded.data() + kChunkHeaderBytes;
  if (load_le<uint32_t>(payload) != nblocks) {
    return Status::InvalidArgument("fused chunk says " +
                                   std::to_string(load_le<uint32_t>(payload)) +
                                   " blocks, its layout has " + std::to_string(nblocks));
  }
  p.entries = payload + kPayloadHeadBytes;
  uint64_t with_residual = 0;
  for (uint64_t i = 0; i < nblocks; ++i) {
    const std::byte* e = p.entries + i * kEntryBytes;
    const uint32_t flags = load_le<uint32_t>(e + 12);
    if ((flags & ~uint32_t{kHasResidual}) != 0 ||
        (flags != 0 && p.residual == BlockFormat::kNone)) {
      return Status::InvalidArgument("fused chunk block " + std::to_string(i) +
                                     " has invalid flags " + std::to_string(flags));
    }
    if (!std::isfinite(load_le<float>(e + 8))) {
      return Status::InvalidArgument("fused chunk block " + std::to_string(i) +
                                     " has a non-finite scale");
    }
    with_residual += flags;
  }
  const uint64_t rb = block_bytes(p.residual, p.g.block, p.g.dim, DType::kFloat32);
  p.residual_bytes = rb;
  if (info->payload_bytes != head + with_residual * rb) {
    return Status::InvalidArgument("fused chunk payload is " + std::to_string(info->payload_bytes) +
                                   " bytes, its entries need " +
                                   std::to_string(head + with_residual * rb));
  }
  p.residuals = payload + head;
  return p;
}

Status FusedCodec::decode(std::span<const std::byte> encoded, std::span<std::byte> out) {
  if (reps_ == nullptr)
    return Status::FailedPrecondition("fused codec has no representative store");
  auto parsed = parse(encoded);
  if (!parsed.ok()) return parsed.status();
  const ParsedChunk& p = *parsed;
  if (out.size() != p.info.logical_bytes) {
    return Status::InvalidArgument("decode output is " + std::to_string(out.size()) +
                                   " bytes, the chunk's logical size is " +
                                   std::to_string(p.info.logical_bytes));
  }
  const Geometry& g = p.g;
  const uint64_t nblocks = g.num_blocks();
  const uint32_t n = g.block_elems();
  const DType dtype = p.info.layout.dtype;
  const uint32_t eb = dtype_bytes(dtype);
  ids_.resize(nblocks);
  pinned_.resize(nblocks);
  for (uint64_t i = 0; i < nblocks; ++i) ids_[i] = load_le<uint64_t>(p.entries + i * kEntryBytes);
  reps_->get_many(ids_, pinned_);
  resid_.resize(n);
  // One (layer, K/V) slab at a time, staged head-major in fp32 ([head][token][dim]) so each
  // block is contiguous, then converted to the chunk's [token][head][dim] in one pass.
  stage_.resize(uint64_t{g.heads} * g.tokens * g.dim);
  const auto res_spec = spec_for(p.residual, g.dim);
  // The default residual (int4, one group per row) is added in place, without a scratch pass.
  const bool fast_int4 = p.residual == BlockFormat::kInt4 && g.dim % 2 == 0 && g.dim <= 512;
  const std::byte* residual = p.residuals;
  const uint64_t slab_bytes = uint64_t{g.tokens} * g.heads * g.dim * eb;
  uint64_t i = 0;
  Status status;
  for (uint32_t l = 0; l < g.layers && status.ok(); ++l) {
    for (uint32_t kind = 0; kind < 2 && status.ok(); ++kind) {
      for (uint32_t h = 0; h < g.heads && status.ok(); ++h) {
        for (uint32_t b = 0; b < g.blocks_per_run; ++b, ++i) {
          const Representative* rep = pinned_[i].get();
          if (rep == nullptr) {
            status = Status::NotFound("fused chunk block " + std::to_string(i) +
                                      " refers to a representative that is not in the store");
            break;
          }
          const RepresentativeInfo& ri = rep->info;
          if (ri.layer != l || ri.kind != kind || ri.head != h || ri.tokens != g.block ||
              ri.head_dim != g.dim || ri.dtype != dtype) {
            status = Status::InvalidArgument(
                "fused chunk block " + std::to_string(i) +
                " refers to a representative of another layer, head, kind or shape");
            break;
          }
          const uint32_t t0 = b * g.block;
          float* y = stage_.data() + (uint64_t{h} * g.tokens + t0) * g.dim;
          status = load_rep(*rep, int64_t{p.first_token} + t0, p.rope, y);
          if (!status.ok()) break;
          const std::byte* e = p.entries + i * kEntryBytes;
          const bool has_residual = (load_le<uint32_t>(e + 12) & kHasResidual) != 0;
          if (has_residual && fast_int4) {
            scale_add(y, load_le<float>(e + 8), nullptr, n);
            add_int4_residual(y, residual, g.block, g.dim);
            residual += p.residual_bytes;
            continue;
          }
          const float* resid = nullptr;
          if (has_residual) {
            status = kernels::dequantize_slab(res_spec, {g.block, 1, g.dim},
                                              {residual, p.residual_bytes}, DType::kFloat32,
                                              std::as_writable_bytes(std::span(resid_)));
            if (!status.ok()) break;
            residual += p.residual_bytes;
            resid = resid_.data();
          }
          scale_add(y, load_le<float>(e + 8), resid, n);
        }
      }
      if (!status.ok()) break;
      std::byte* slab = out.data() + (2 * uint64_t{l} + kind) * slab_bytes;
      unstage(g, dtype, stage_.data(), slab);
    }
  }
  for (auto& r : pinned_) r.reset();
  return status;
}

Status FusedCodec::release(std::span<const std::byte> encoded) {
  if (reps_ == nullptr)
    return Status::FailedPrecondition("fused codec has no representative store");
  auto parsed = parse(encoded);
  if (!parsed.ok()) return parsed.status();
  Status first;
  for (uint64_t i = 0; i < parsed->g.num_blocks(); ++i) {
    Status s = reps_->release(load_le<uint64_t>(parsed->entries + i * kEntryBytes));
    if (!s.ok() && first.ok()) first = s;
  }
  return first;
}

Status FusedCodec::retain(std::span<const std::byte> encoded) {
  if (reps_ == nullptr) {
    return Status::FailedPrecondition("fused codec has no representative store");
  }
  auto parsed = parse(encoded);
  if (!parsed.ok()) return parsed.status();
  const uint64_t n = parsed->g.num_blocks();
  for (uint64_t i = 0; i < n; ++i) {
    Status s = reps_->acquire(load_le<uint64_t>(parsed->entries + i * kEntryBytes));
    if (!s.ok()) {
      for (uint64_t j = 0; j < i; ++j) {
        (void)reps_->release(load_le<uint64_t>(parsed->entries + j * kEntryBytes));
      }
      return s;
    }
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<ChunkCodec>> make_fused_codec(const CodecConfig& config,
                                                     RepresentativeStore* reps) {
  return std::unique_ptr<ChunkCodec>(std::make_unique<FusedCodec>(config, reps));
}

}  // namespace tierkv::storage::codec_internal

namespace tierkv::storage {

Result<std::vector<RepId>> fused_chunk_references(std::span<const std::byte> encoded) {
  auto info = verify_chunk(encoded);
  if (!info.ok()) return info.status();
  std::vector<RepId> ids;
  if (info->codec != CodecId::kFused) return ids;
  auto parsed = codec_internal::FusedCodec::parse(encoded);
  if (!parsed.ok()) return parsed.status();
  const uint64_t n = parsed->g.num_blocks();
  ids.resize(n);
  for (uint64_t i = 0; i < n; ++i)
    ids[i] = codec_internal::load_le<uint64_t>(parsed->entries + i * codec_internal::kEntryBytes);
  return ids;
}

}  // namespace tierkv::storage
