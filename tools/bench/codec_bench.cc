// tierkv-bench codec: every chunk codec on real KV (tools/kvdata datasets), per workload.
//
// For each codec and workload: compression ratio (logical bytes / stored bytes, representatives
// included for fused), encode and decode GB/s on one core (logical bytes per second), relative
// L2 error of K and of V, and the relative error of the attention output softmax(Q K^T / sqrt(d)) V
// computed with the model's real queries over the decoded prefix, against the original. For
// fused, a curve over similarity thresholds. The physical limit printed beside the decode figures
// is one core's memcpy bandwidth, measured in the same run.
//
// Throughput is logical bytes per second of the encoding or decoding thread's CPU time
// (CLOCK_THREAD_CPUTIME_ID): "per core", and steady on a machine whose other cores (or this one)
// are busy with other work.
//
// Chunks are cut as the daemon cuts them (chunk_tokens, trailing partial chunk dropped) and a
// chunk whose key (its whole prefix of tokens) was already stored is stored once, as the
// daemon's index does: workload (a)'s shared prefix counts once.
#include <time.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "bench/bench_command.h"
#include "bench/measure.h"
#include "kv_dataset.h"
#include "tierkv/kernels/half.h"
#include "tierkv/storage/codec.h"
#include "tierkv/storage/representative_store.h"

namespace tierkv::bench {

namespace {

using storage::ChunkInput;
using storage::CodecConfig;
using storage::CodecId;
using storage::EncodeBuffer;

constexpr double kFp8MinRatio = 1.9;
constexpr double kAttnMaxErr = 2e-2;
constexpr double kFusedMinRatioB = 2.5;
constexpr double kMinDecodeGBps = 1.5;

const char* const kWorkloads[] = {"shared_prefix", "retrieval", "unrelated"};

// One workload's unique chunks and, per prompt, which chunk holds each of its chunk positions.
struct Workload {
  std::string name;
  kvdata::KvDataset ds;
  Layout layout;
  std::vector<std::vector<std::byte>> chunks;
  std::vector<ChunkInput> inputs;
  std::vector<std::vector<size_t>> prompt_chunks;
  // Attention outputs of the original KV: per prompt, per kept query, per layer, per q head, D.
  std::vector<std::vector<float>> reference;
  std::vector<std::vector<uint32_t>> queries;  // per prompt: indices into query_positions used
};

struct Measured {
  double ratio = 0, encode_GBps = 0, decode_GBps = 0, k_rel = 0, v_rel = 0, kv_rel = 0, attn = 0;
  bool exact = true;
};

// CPU seconds the calling thread has run.
double thread_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

// Attention outputs for prompt `p` with K/V taken from `chunks` (decoded or original).
void attention(const Workload& w, size_t p, const std::vector<std::vector<std::byte>>& chunks,
               std::vector<float>& out) {
  const auto& ds = w.ds;
  const auto& prompt = ds.prompts[p];
  const uint32_t C = w.layout.chunk_tokens, H = ds.num_kv_heads, D = ds.head_dim;
  const uint32_t QH = ds.num_q_heads, group = QH / H;
  const uint32_t T = static_cast<uint32_t>(w.prompt_chunks[p].size()) * C;
  const auto& qs = w.queries[p];
  out.assign(qs.size() * ds.num_layers * QH * D, 0.0f);
  std::vector<float> K(uint64_t{T} * H * D), V(uint64_t{T} * H * D), q(D), s(T);
  const uint64_t slab = uint64_t{C} * H * D;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  for (uint32_t l = 0; l < ds.num_layers; ++l) {
    for (size_t c = 0; c < w.prompt_chunks[p].size(); ++c) {
      const std::byte* chunk = chunks[w.prompt_chunks[p][c]].data();
      const uint32_t eb = dtype_bytes(ds.dtype);
      kernels::convert_to_f32(ds.dtype, chunk + 2 * l * slab * eb, slab, K.data() + c * slab);
      kernels::convert_to_f32(ds.dtype, chunk + (2 * l + 1) * slab * eb, slab, V.data() + c * slab);
    }
    for (size_t qi = 0; qi < qs.size(); ++qi) {
      const uint32_t pos = static_cast<uint32_t>(prompt.query_positions[qs[qi]]);
      for (uint32_t hq = 0; hq < QH; ++hq) {
        const uint32_t hk = hq / group;
        kernels::convert_to_f32(
            ds.dtype, prompt.q[l].data() + (uint64_t{qs[qi]} * QH + hq) * D * dtype_bytes(ds.dtype),
            D, q.data());
        float mx = -INFINITY;
        for (uint32_t t = 0; t <= pos; ++t) {
          const float* k = K.data() + (uint64_t{t} * H + hk) * D;
          float acc = 0;
          for (uint32_t d = 0; d < D; ++d) acc += q[d] * k[d];
          s[t] = acc * scale;
          mx = std::max(mx, s[t]);
        }
        double sum = 0;
        for (uint32_t t = 0; t <= pos; ++t) {
          s[t] = std::exp(s[t] - mx);
          sum += s[t];
        }
        float* o = out.data() + ((qi * ds.num_layers + l) * QH + hq) * D;
        for (uint32_t t = 0; t <= pos; ++t) {
          const float wgt = static_cast<float>(s[t] / sum);
          const float* v = V.data() + (uint64_t{t} * H + hk) * D;
          for (uint32_t d = 0; d < D; ++d) o[d] += wgt * v[d];
        }
      }
    }
  }
}

// Runs `f(i)` for i in [0, n) on two threads (the machine's cores; not part of any timing).
template <typename F>
void parallel_for(size_t n, F f) {
  const size_t threads = std::max(1u, std::min(4u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (size_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (size_t i = t; i < n; i += threads) f(i);
    });
  }
  for (auto& th : pool) th.join();
}

Result<Workload> load_workload(const std::string& dir, const std::string& name,
                               uint32_t chunk_tokens, uint32_t max_queries) {
  auto ds = kvdata::KvDataset::load(dir + "/" + name + ".tkv");
  if (!ds.ok()) return ds.status();
  Workload w;
  w.name = name;
  w.ds = std::move(ds).value();
  w.layout = w.ds.layout(chunk_tokens);
  TIERKV_RETURN_IF_ERROR(w.layout.validate());
  // Chunk keys: the hash of every token up to the chunk's end (the daemon chains them, with
  // the same effect: equal keys iff equal prefixes).
  std::map<uint64_t, size_t> seen;
  for (size_t p = 0; p < w.ds.prompts.size(); ++p) {
    const auto& tokens = w.ds.prompts[p].tokens;
    std::vector<size_t> idx;
    for (uint32_t c = 0; c < w.ds.full_chunks(p, chunk_tokens); ++c) {
      const uint64_t key = XXH3_64bits(tokens.data(), sizeof(int32_t) * (c + 1) * chunk_tokens);
      auto [it, fresh] = seen.emplace(key, w.chunks.size());
      if (fresh) {
        w.chunks.emplace_back(w.layout.chunk_bytes());
        w.ds.gather_chunk(p, c, chunk_tokens, w.chunks.back());
        w.inputs.push_back({{}, uint64_t{c} * chunk_tokens});
      }
      idx.push_back(it->second);
    }
    w.prompt_chunks.push_back(std::move(idx));
    // Queries over the stored prefix, evenly spread over the kept ones.
    const auto& qp = w.ds.prompts[p].query_positions;
    const uint64_t stored = uint64_t{w.prompt_chunks.back().size()} * chunk_tokens;
    std::vector<uint32_t> usable;
    for (uint32_t i = 0; i < qp.size(); ++i) {
      if (static_cast<uint64_t>(qp[i]) < stored) usable.push_back(i);
    }
    std::vector<uint32_t> pick;
    for (uint32_t j = 0; j < std::min<size_t>(max_queries, usable.size()); ++j) {
      pick.push_back(usable[j * usable.size() / std::min<size_t>(max_queries, usable.size())]);
    }
    w.queries.push_back(std::move(pick));
  }
  if (w.chunks.empty()) {
    return Status::InvalidArgument(name + ": no prompt has a full chunk of " +
                                   std::to_string(chunk_tokens) +
                                   " tokens; pass a smaller --chunk-tokens");
  }
  for (size_t i = 0; i < w.chunks.size(); ++i) w.inputs[i].bytes = w.chunks[i];
  w.reference.resize(w.ds.prompts.size());
  parallel_for(w.ds.prompts.size(), [&](size_t p) { attention(w, p, w.chunks, w.reference[p]); });
  return w;
}

Result<Measured> measure(const Workload& w, const std::string& spec, uint32_t batch,
                         double min_seconds) {
  storage::RepresentativeStore reps;
  auto codec = storage::make_codec(spec, &reps);
  if (!codec.ok()) return codec.status();
  const bool fused = (*codec)->config().id == CodecId::kFused;
  const uint64_t logical = w.chunks.size() * w.layout.chunk_bytes();
  std::vector<EncodeBuffer> enc(w.chunks.size());
  Measured m;

  // Encode: the fused codec once, in batches of `batch` chunks committed together (its store
  // grows as it goes); the stateless codecs repeatedly until `min_seconds`.
  double enc_seconds = 0;
  uint64_t enc_bytes = 0;
  do {
    const double t0 = thread_seconds();
    for (size_t i = 0; i < w.chunks.size(); i += batch) {
      const size_t n = std::min<size_t>(batch, w.chunks.size() - i);
      TIERKV_RETURN_IF_ERROR((*codec)->encode_batch(w.layout, std::span(w.inputs).subspan(i, n),
                                                    std::span(enc).subspan(i, n)));
    }
    enc_seconds += thread_seconds() - t0;
    enc_bytes += logical;
  } while (!fused && enc_seconds < min_seconds);
  m.encode_GBps = enc_bytes / enc_seconds / 1e9;

  uint64_t stored = reps.stats().bytes;
  for (const auto& e : enc) stored += e.size();
  m.ratio = double(logical) / double(stored);

  std::vector<std::vector<std::byte>> dec(w.chunks.size(),
                                          std::vector<std::byte>(w.layout.chunk_bytes()));
  storage::ChunkDecoder decoder(&reps);
  double dec_seconds = 0;
  uint64_t dec_bytes = 0;
  do {
    const double t0 = thread_seconds();
    for (size_t i = 0; i < w.chunks.size(); ++i) {
      TIERKV_RETURN_IF_ERROR(decoder.decode(enc[i].bytes(), dec[i]));
    }
    dec_seconds += thread_seconds() - t0;
    dec_bytes += logical;
  } while (dec_seconds < min_seconds);
  m.decode_GBps = dec_bytes / dec_seconds / 1e9;

  // Errors: K and V separately and together.
  const uint64_t slab = w.layout.chunk_bytes() / (2 * w.layout.num_layers);
  const uint32_t eb = dtype_bytes(w.layout.dtype);
  double num[2] = {0, 0}, den[2] = {0, 0};
  std::vector<float> a(slab / eb), b(slab / eb);
  for (size_t i = 0; i < w.chunks.size(); ++i) {
    m.exact = m.exact && dec[i] == w.chunks[i];
    for (uint32_t s = 0; s < 2 * w.layout.num_layers; ++s) {
      kernels::convert_to_f32(w.layout.dtype, w.chunks[i].data() + s * slab, a.size(), a.data());
      kernels::convert_to_f32(w.layout.dtype, dec[i].data() + s * slab, b.size(), b.data());
      for (size_t j = 0; j < a.size(); ++j) {
        num[s % 2] += (double{b[j]} - a[j]) * (double{b[j]} - a[j]);
        den[s % 2] += double{a[j]} * a[j];
      }
    }
  }
  m.k_rel = std::sqrt(num[0] / den[0]);
  m.v_rel = std::sqrt(num[1] / den[1]);
  m.kv_rel = std::sqrt((num[0] + num[1]) / (den[0] + den[1]));
  if (m.exact) {
    m.attn = 0;
  } else {
    std::vector<double> pn(w.ds.prompts.size()), pd(w.ds.prompts.size());
    parallel_for(w.ds.prompts.size(), [&](size_t p) {
      std::vector<float> out;
      attention(w, p, dec, out);
      for (size_t j = 0; j < out.size(); ++j) {
        const double r = w.reference[p][j];
        pn[p] += (out[j] - r) * (out[j] - r);
        pd[p] += r * r;
      }
    });
    double n = 0, d = 0;
    for (size_t p = 0; p < pn.size(); ++p) {
      n += pn[p];
      d += pd[p];
    }
    m.attn = std::sqrt(n / d);
  }
  for (const auto& e : enc) TIERKV_RETURN_IF_ERROR((*codec)->release(e.bytes()));
  if (reps.stats().count != 0) {
    return Status::Internal(spec + ": " + std::to_string(reps.stats().count) +
                            " representatives left after every chunk was released");
  }
  return m;
}

class CodecBench : public BenchCommand {
 public:
  [[nodiscard]] std::string name() const override { return "codec"; }
  [[nodiscard]] std::string summary() const override {
    return "chunk codecs on real KV: ratio, GB/s per core, K/V and attention-output error";
  }
  void add_options(CLI::App& app) override {
    app.add_option("--data", data_,
                   "KV dataset directory (tools/kvdata; default $TIERKV_KVDATA, else "
                   "build/kvdata if present, else the test slice tests/data/kv)");
    app.add_option("--chunk-tokens", chunk_tokens_,
                   "tokens per chunk (0: 256, or 32 for a "
                   "dataset whose prompts are shorter)");
    app.add_option("--codecs", codecs_, "comma-separated codec specs to measure");
    app.add_option("--defaults", defaults_,
                   "the specs among --codecs whose decode speed counts toward the target");
    app.add_option("--fused", fused_,
                   "fused spec without its threshold, e.g. 'b16:rep=int8:res=int4' (rope is "
                   "the dataset's)");
    app.add_option("--thresholds", thresholds_, "comma-separated fused thresholds (the curve)");
    app.add_option("--batch", batch_, "chunks committed together (fused batches)");
    app.add_option("--queries", queries_, "query positions per prompt for the attention error");
  }
  Result<BenchReport> run(const CommonOptions& common) override;

 private:
  std::string data_;
  uint32_t chunk_tokens_ = 0;
  std::string codecs_ =
      "raw,zstd:1:bytes,zstd:3:bytes,zstd:3:bits,fp8,fp8:e4m3,int8,int8:k0,int4:g32";
  // The codecs as configured by default (their rows count toward min_decode_GBps; the others are
  // shown for comparison: zstd's level 3 and bit planes, which compress less and decode slower,
  // and int8:k0, int8 with keys per token as values are, which costs twice int8's attention
  // error).
  std::string defaults_ = "raw,zstd:1:bytes,fp8,fp8:e4m3,int8,int4:g32";
  std::string fused_ = "b16:rep=int8:res=int4:window=256";
  std::string thresholds_ = "0.999,0.995,0.99,0.98,0.95,0.9,0.8";
  uint32_t batch_ = 16;
  uint32_t queries_ = 16;
};

Result<BenchReport> CodecBench::run(const CommonOptions& common) {
  const std::string dir = data_.empty() ? default_kv_data_dir("retrieval.tkv") : data_;
  const double min_seconds = common.quick ? 0.0 : 0.3;
  auto log = [&](const std::string& s) {
    if (!common.json) std::fprintf(stderr, "%s\n", s.c_str());
  };
  BenchReport report("codec");
  report.add_info("data", dir);

  auto memcpy_fig = measure_memcpy(64ull << 20, common.quick ? 3 : 5, common.quick ? 0.01 : 0.05);
  if (!memcpy_fig.ok()) return memcpy_fig.status();

  std::vector<Workload> workloads;
  for (const char* name : kWorkloads) {
    uint32_t ct = chunk_tokens_;
    if (ct == 0) {
      auto probe = kvdata::KvDataset::load(dir + "/" + name + ".tkv");
      if (!probe.ok()) return probe.status();
      size_t longest = 0;
      for (const auto& p : probe->prompts) longest = std::max(longest, p.tokens.size());
      ct = longest >= 512 ? 256 : 32;
    }
    log("loading " + std::string(name) + " (" + std::to_string(ct) + " tokens/chunk)");
    auto w = load_workload(dir, name, ct, common.quick ? std::min(queries_, 4u) : queries_);
    if (!w.ok()) return w.status();
    workloads.push_back(std::move(w).value());
  }
  const Workload& first = workloads.front();
  report.add_info("layout", first.layout.to_string());
  report.add_info("rope_theta", static_cast<uint64_t>(first.ds.rope_theta));
  for (const auto& w : workloads) {
    report.add_info(w.name + "_chunks", static_cast<uint64_t>(w.chunks.size()));
  }

  std::vector<std::vector<BenchReport::Cell>> rows;
  auto add_row = [&](const std::string& spec, const Workload& w, const Measured& m) {
    rows.push_back(
        {spec, w.name, m.ratio, m.encode_GBps, m.decode_GBps, m.k_rel, m.v_rel, m.kv_rel, m.attn});
  };
  double min_decode = INFINITY;
  // The worst workload's ratio and attention error of the 1-byte codecs: fp8 (the target), and
  // beside it fp8:e4m3 (OCP e4m3, power-of-two scales) and int8 (keys per channel).
  struct Worst {
    double ratio = INFINITY;
    double attn = 0;
  };
  std::map<std::string, Worst> worst{{"fp8", {}}, {"fp8:e4m3", {}}, {"int8", {}}};
  bool zstd_exact = true;
  double zstd_ratio = 0;
  const auto defaults = split_list(defaults_);
  for (const auto& spec : split_list(codecs_)) {
    const bool counts = std::find(defaults.begin(), defaults.end(), spec) != defaults.end();
    for (const auto& w : workloads) {
      log("  " + spec + " on " + w.name);
      auto m = measure(w, spec, batch_, min_seconds);
      if (!m.ok())
        return Status(m.status().code(), spec + " on " + w.name + ": " + m.status().message());
      add_row(spec, w, *m);
      if (counts) min_decode = std::min(min_decode, m->decode_GBps);
      if (auto it = worst.find(spec); it != worst.end()) {
        it->second.ratio = std::min(it->second.ratio, m->ratio);
        it->second.attn = std::max(it->second.attn, m->attn);
      }
      if (spec.rfind("zstd", 0) == 0) {
        zstd_exact = zstd_exact && m->exact;
        if (spec == "zstd:1:bytes" && w.name == "retrieval") zstd_ratio = m->ratio;
      }
    }
  }

  // The fused curve: for each threshold, every workload. The operating point is the threshold
  // of greatest ratio on (b) retrieval whose attention error there stays within the target.
  double best_b = 0;
  std::string best_spec;
  std::map<std::string, std::vector<Measured>> curve;
  for (const auto& t : split_list(thresholds_)) {
    std::string spec = "fused:" + t + ":" + fused_;
    if (fused_.find("rope=") == std::string::npos && first.ds.rope_theta > 0) {
      char buf[32];
      std::snprintf(buf, sizeof(buf), ":rope=%g", static_cast<double>(first.ds.rope_theta));
      spec += buf;
    }
    for (const auto& w : workloads) {
      log("  " + spec + " on " + w.name);
      auto m = measure(w, spec, batch_, min_seconds);
      if (!m.ok())
        return Status(m.status().code(), spec + " on " + w.name + ": " + m.status().message());
      add_row(spec, w, *m);
      curve[spec].push_back(*m);
      if (w.name == "retrieval" && m->attn <= kAttnMaxErr && m->ratio > best_b) {
        best_b = m->ratio;
        best_spec = spec;
      }
    }
  }
  for (const auto& [spec, ms] : curve) {
    if (spec != best_spec) continue;
    for (const auto& m : ms) min_decode = std::min(min_decode, m.decode_GBps);
  }
  report.add_rows("rows",
                  {"codec", "workload", "ratio", "encode_GBps", "decode_GBps", "k_rel_l2",
                   "v_rel_l2", "kv_rel_l2", "attn_rel_err"},
                  std::move(rows));
  report.add_info("fused_operating_point", best_spec.empty() ? std::string("none") : best_spec);
  report.add_info("min_decode_over", defaults_ + ",fused at its operating point");
  if (!best_spec.empty()) {
    const auto& ms = curve[best_spec];
    report.add_figure("fused_ratio_a_at_2e-2", "fused ratio (a) at the (b) operating point",
                      ms[0].ratio, Unit::kRatio);
    report.add_figure("fused_ratio_c_at_2e-2", "fused ratio (c) at the (b) operating point",
                      ms[2].ratio, Unit::kRatio);
  }
  report.add_figure("memcpy_GBps", "memcpy, one core (physical limit)", memcpy_fig->median_GBps,
                    Unit::kGBps);
  report.add_figure("zstd_bit_exact", "zstd round trips bit-exact (1 = yes)", zstd_exact ? 1 : 0,
                    Unit::kRatio);
  report.add_target("zstd_bit_exact", true, 1);
  report.add_figure("zstd_ratio_b", "zstd:1:bytes (default) ratio on (b)", zstd_ratio,
                    Unit::kRatio);
  // `key`'s two figures (fp8_ratio, fp8_attn_rel_err, ...) for `spec`.
  auto add_worst = [&](const std::string& key, const std::string& spec) {
    const Worst& wst = worst[spec];
    report.add_figure(key + "_ratio", spec + " ratio (worst workload)", wst.ratio, Unit::kRatio);
    report.add_figure(key + "_attn_rel_err", spec + " attention-output rel. error (worst workload)",
                      wst.attn, Unit::kRatio);
  };
  add_worst("fp8", "fp8");
  report.add_target("fp8_ratio", true, kFp8MinRatio);
  report.add_target("fp8_attn_rel_err", false, kAttnMaxErr);
  if (worst["fp8:e4m3"].ratio < INFINITY) add_worst("fp8_e4m3", "fp8:e4m3");
  if (worst["int8"].ratio < INFINITY) add_worst("int8", "int8");
  report.add_figure("fused_ratio_b_at_2e-2", "fused ratio (b) at attention error <= 2e-2", best_b,
                    Unit::kRatio);
  report.add_target("fused_ratio_b_at_2e-2", true, kFusedMinRatioB);
  report.add_figure("min_decode_GBps", "slowest decode, one core (default configs)", min_decode,
                    Unit::kGBps);
  report.add_target("min_decode_GBps", true, kMinDecodeGBps);
  report.add_figure_group(
      "summary", {"fp8_ratio", "fp8_attn_rel_err", "fused_ratio_b_at_2e-2", "min_decode_GBps",
                  "zstd_bit_exact", "zstd_ratio_b", "fp8_e4m3_ratio", "fp8_e4m3_attn_rel_err",
                  "int8_ratio", "int8_attn_rel_err"});
  return report;
}

}  // namespace

std::unique_ptr<BenchCommand> make_codec_bench() { return std::make_unique<CodecBench>(); }

}  // namespace tierkv::bench
