// Encoded chunks on the NVMe tier, through the real daemon: real files, real io_uring, real
// RocksDB, real KV (tests/data/kv). Each codec's round trip put -> write down -> evict -> load
// from NVMe; chunks written under one codec loading after a restart under another; a damaged
// encoded chunk becoming a counted miss; SIGKILL during encoded write-downs never leaving a torn
// chunk; and what `tierkvctl stats` shows.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <random>
#include <thread>

#include "kv_dataset.h"
#include "storage/codec_test_util.h"
#include "support/json.h"
#include "support/nvme_client.h"
#include "support/nvme_damage.h"
#include "support/process.h"
#include "support/test_daemon.h"
#include "tierkv/client.h"
#include "tierkv/storage/codec.h"

namespace tierkv {
namespace {

using testing::flush_to_nvme;
using testing::TestDaemon;
using namespace std::chrono_literals;

constexpr uint32_t kChunkTokens = 32;  // real KV: 3 layers x 3 KV heads x 64 dim bf16 = 72 KiB

// A daemon with a 16 MiB host tier and a 64 MiB NVMe tier in ${DIR}/nvme, write-through, its
// NVMe chunks stored under `codec`.
std::unique_ptr<TestDaemon> start_codec_daemon(const std::string& codec,
                                               const std::string& extra = "",
                                               const std::string& staging = "8MiB",
                                               const std::string& mode = "write-through") {
  testing::TestDaemonOptions o;
  o.host_capacity = "16MiB";
  o.extra_toml =
      "slab_size = \"4MiB\"\nprefault = false\n[nvme]\ndirectories = [\"${DIR}/nvme\"]\n"
      "capacity = \"64MiB\"\nslab_size = \"4MiB\"\nqueue_depth = 16\n"
      "mode = \"" +
      mode + "\"\nstaging_size = \"" + staging + "\"\nencode_threads = 2\ncodec = \"" + codec +
      "\"\n" + extra;
  auto d = TestDaemon::start(o);
  EXPECT_TRUE(d.ok()) << d.status().to_string();
  return d.ok() ? std::move(d).value() : nullptr;
}

// Rewrites the codec in the daemon's config file (for the next restart).
void set_codec(const TestDaemon& d, const std::string& from, const std::string& to) {
  const std::string path = d.dir() + "/c.toml";
  std::string text = testing::read_file(path);
  const std::string old_line = "codec = \"" + from + "\"";
  const size_t at = text.find(old_line);
  ASSERT_NE(at, std::string::npos) << text;
  text.replace(at, old_line.size(), "codec = \"" + to + "\"");
  testing::write_file(path, text);
}

std::shared_ptr<Client> connect(const TestDaemon& d) {
  auto c = Client::connect({d.socket_path(), "nvme-codec-test", false});
  EXPECT_TRUE(c.ok()) << c.status().to_string();
  return c.ok() ? *c : nullptr;
}

// Real prompts: their token ids and the KV a real model computed for their full chunks.
struct RealPrompt {
  std::vector<TokenId> tokens;
  std::vector<std::byte> kv;  // chunks() * chunk_bytes
};
struct RealKv {
  Layout layout;
  std::vector<RealPrompt> prompts;
  size_t distinct_chunks = 0;
};

const RealKv& real_kv() {
  static const RealKv kv = [] {
    RealKv out;
    for (const char* workload : {"unrelated", "retrieval"}) {
      auto ds = kvdata::KvDataset::load(std::string(TIERKV_SOURCE_DIR) + "/tests/data/kv/" +
                                        workload + ".tkv");
      EXPECT_TRUE(ds.ok()) << ds.status().to_string();
      if (!ds.ok()) continue;
      out.layout = ds->layout(kChunkTokens);
      for (size_t p = 0; p < ds->prompts.size(); ++p) {
        RealPrompt rp;
        const uint32_t chunks = ds->full_chunks(p, kChunkTokens);
        for (uint32_t i = 0; i < chunks * kChunkTokens; ++i) {
          rp.tokens.push_back(static_cast<TokenId>(ds->prompts[p].tokens[i]));
        }
        rp.kv.resize(chunks * out.layout.chunk_bytes());
        for (uint32_t c = 0; c < chunks; ++c) {
          ds->gather_chunk(
              p, c, kChunkTokens,
              std::span(rp.kv).subspan(c * out.layout.chunk_bytes(), out.layout.chunk_bytes()));
        }
        out.prompts.push_back(std::move(rp));
      }
    }
    return out;
  }();
  return kv;
}

// Puts every real prompt; returns the distinct keys stored.
std::vector<ChunkKey> put_real(Client& c, const Namespace& ns) {
  std::vector<ChunkKey> all;
  for (const RealPrompt& p : real_kv().prompts) {
    auto put = c.put(ns, p.tokens, p.kv);
    EXPECT_TRUE(put.ok()) << put.status().to_string();
    for (const ChunkKey& k : Client::keys(ns, p.tokens)) {
      if (std::find(all.begin(), all.end(), k) == all.end()) all.push_back(k);
    }
  }
  return all;
}

// Loads every real prompt (from NVMe, after an evict) and checks each distinct chunk: bit-exact
// for a lossless codec, within the stated bound of a lossy one. Returns the chunks checked.
size_t load_and_check(Client& c, const Namespace& ns, const storage::CodecConfig& codec) {
  const Layout& layout = real_kv().layout;
  const bool lossless = codec.id == storage::CodecId::kRaw || codec.id == storage::CodecId::kZstd;
  size_t checked = 0;
  std::vector<ChunkKey> seen;
  for (const RealPrompt& p : real_kv().prompts) {
    const auto keys = Client::keys(ns, p.tokens);
    auto lease = c.load(ns, p.tokens);
    EXPECT_TRUE(lease.ok()) << lease.status().to_string();
    if (!lease.ok()) continue;
    EXPECT_EQ(lease->chunks(), p.kv.size() / layout.chunk_bytes());
    for (size_t i = 0; i < lease->chunks(); ++i) {
      if (std::find(seen.begin(), seen.end(), keys[i]) != seen.end()) continue;
      seen.push_back(keys[i]);
      const auto original = std::span(p.kv).subspan(i * layout.chunk_bytes(), layout.chunk_bytes());
      const auto got = lease->chunk(i);
      if (lossless) {
        EXPECT_TRUE(std::equal(got.begin(), got.end(), original.begin(), original.end()))
            << codec.to_string() << ": chunk " << i << " differs";
      } else if (codec.id == storage::CodecId::kFused) {
        // The fused codec's stated bound, per block (tests/storage/codec_test_util.h).
        const double e_rep = codec.fused_rep == storage::BlockFormat::kFp8 ? 0.0625 : 0.0;
        EXPECT_LE(storage::testing::fused_worst_block(layout, codec.fused_block_tokens,
                                                      codec.fused_threshold, e_rep, original, got),
                  1.0)
            << codec.to_string() << ": chunk " << i << " exceeds the codec's error bound";
      } else {
        EXPECT_EQ(storage::testing::count_bound_violations(codec, layout, original, got), 0u)
            << codec.to_string() << ": chunk " << i << " exceeds the codec's error bound";
      }
      ++checked;
    }
    EXPECT_TRUE(lease->release().ok());
  }
  return checked;
}

const proto::TierCodecStats* nvme_codec_stats(const proto::StatsReply& st) {
  for (const auto& t : st.tier_codecs) {
    if (t.tier == proto::Tier::kNvme) return &t;
  }
  return nullptr;
}

class NvmeCodecRoundTrip : public ::testing::TestWithParam<const char*> {};

TEST_P(NvmeCodecRoundTrip, PutEvictLoadFromNvme) {
  const std::string spec = GetParam();
  const auto codec = storage::CodecConfig::parse(spec);
  ASSERT_TRUE(codec.ok());
  auto d = start_codec_daemon(spec);
  ASSERT_TRUE(d);
  auto c = connect(*d);
  auto ns = c->register_layout(real_kv().layout, "codec");
  ASSERT_TRUE(ns.ok()) << ns.status().to_string();
  const auto keys = put_real(*c, *ns);
  ASSERT_GE(keys.size(), 12u);
  flush_to_nvme(*c);
  ASSERT_EQ(*c->evict(ns->id, keys), keys.size());  // out of RAM: every load reads NVMe
  for (const RealPrompt& p : real_kv().prompts) {
    auto look = c->lookup(*ns, p.tokens);
    ASSERT_TRUE(look.ok());
    for (Tier t : look->tiers) EXPECT_EQ(t, Tier::kNvme);
  }
  EXPECT_EQ(load_and_check(*c, *ns, *codec), keys.size());

  auto st = c->stats();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->nvme.checksum_failures, 0u);
  EXPECT_EQ(st->nvme.logical_bytes, keys.size() * ns->chunk_bytes());
  const proto::TierCodecStats* n = nvme_codec_stats(*st);
  ASSERT_NE(n, nullptr);
  EXPECT_EQ(n->logical_bytes, st->nvme.logical_bytes);
  EXPECT_EQ(n->stored_bytes, st->nvme.stored_bytes);
  if (codec->id == storage::CodecId::kRaw) {
    EXPECT_EQ(n->encoded_chunks, 0u);
    EXPECT_EQ(n->stored_bytes, n->logical_bytes);
    EXPECT_TRUE(st->codec_stages.empty());  // raw only: no codec threads at all
  } else {
    // Real KV compresses: every chunk is stored encoded, in fewer bytes than it has.
    EXPECT_EQ(n->encoded_chunks, keys.size());
    EXPECT_LT(n->stored_bytes, n->logical_bytes);
    ASSERT_EQ(st->codec_stages.size(), 2u);
    EXPECT_EQ(st->codec_stages[0].items, keys.size());  // encode
    EXPECT_GE(st->codec_stages[1].items, keys.size());  // decode
    EXPECT_EQ(st->codec.encode_errors, 0u);
    EXPECT_EQ(st->codec.staging_used_bytes, 0u);  // every staging buffer came back
    if (codec->id == storage::CodecId::kFused) {
      // The representatives live beside the chunks: counted, and their bytes come on top.
      EXPECT_GT(st->codec.fused_representatives, 0u);
      EXPECT_LT(n->stored_bytes + st->codec.fused_representative_bytes, n->logical_bytes);
    } else if (codec->id != storage::CodecId::kZstd) {
      EXPECT_LT(n->stored_bytes * 17 / 10, n->logical_bytes) << spec;  // 8 bits or fewer of 16
    }
  }
}

INSTANTIATE_TEST_SUITE_P(EachCodec, NvmeCodecRoundTrip,
                         ::testing::Values("raw", "zstd", "zstd:3:bits", "fp8", "int8", "int4:g32",
                                           "fused"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n) {
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return n;
                         });

TEST(NvmeCodecTest, ChunksLoadAfterRestartUnderAnotherCodec) {
  auto d = start_codec_daemon("zstd");
  ASSERT_TRUE(d);
  const storage::CodecConfig lossless;  // raw and zstd: checked bit-exact
  const auto& prompts = real_kv().prompts;
  std::vector<ChunkKey> zstd_keys;
  {
    auto c = connect(*d);
    auto ns = c->register_layout(real_kv().layout, "zstd-then-raw");
    ASSERT_TRUE(ns.ok());
    zstd_keys = put_real(*c, *ns);
    flush_to_nvme(*c);
  }
  d->stop();
  ASSERT_NO_FATAL_FAILURE(set_codec(*d, "zstd", "raw"));
  ASSERT_TRUE(d->restart().ok());
  {
    // Under raw: the zstd chunks still load (decoded), and new chunks go down raw.
    auto c = connect(*d);
    auto ns = c->register_layout(real_kv().layout, "zstd-then-raw");
    ASSERT_TRUE(ns.ok());
    auto st = c->stats();
    EXPECT_EQ(st->nvme.recovered_chunks, zstd_keys.size());
    EXPECT_EQ(nvme_codec_stats(*st)->encoded_chunks, zstd_keys.size());
    EXPECT_EQ(st->nvme_codec, "raw");
    EXPECT_EQ(load_and_check(*c, *ns, lossless), zstd_keys.size());
    auto raw_ns = c->register_layout(real_kv().layout, "raw-then-zstd");
    ASSERT_TRUE(raw_ns.ok());
    const auto raw_keys = put_real(*c, *raw_ns);
    flush_to_nvme(*c);
    st = c->stats();
    EXPECT_EQ(nvme_codec_stats(*st)->encoded_chunks, zstd_keys.size());  // the new ones are raw
    EXPECT_EQ(st->nvme.checksum_failures, 0u);
  }
  d->stop();
  ASSERT_NO_FATAL_FAILURE(set_codec(*d, "raw", "zstd"));
  ASSERT_TRUE(d->restart().ok());
  // Under zstd again: both kinds load from NVMe (host RAM is empty after the restart).
  auto c = connect(*d);
  for (const char* tenant : {"zstd-then-raw", "raw-then-zstd"}) {
    auto ns = c->register_layout(real_kv().layout, tenant);
    ASSERT_TRUE(ns.ok());
    for (const RealPrompt& p : prompts) {
      auto look = c->lookup(*ns, p.tokens);
      ASSERT_TRUE(look.ok());
      for (Tier t : look->tiers) EXPECT_EQ(t, Tier::kNvme) << tenant;
    }
    EXPECT_EQ(load_and_check(*c, *ns, lossless), zstd_keys.size()) << tenant;
  }
  EXPECT_EQ(c->stats()->nvme.checksum_failures, 0u);
}

TEST(NvmeCodecTest, FusedChunksDecodeAfterARestartAndDeletingThemFreesTheirRepresentatives) {
  auto d = start_codec_daemon("fused");
  ASSERT_TRUE(d);
  const auto fused = storage::CodecConfig::parse("fused");
  std::vector<ChunkKey> keys;
  uint64_t reps_before = 0;
  {
    auto c = connect(*d);
    auto ns = c->register_layout(real_kv().layout, "fused");
    ASSERT_TRUE(ns.ok());
    keys = put_real(*c, *ns);
    flush_to_nvme(*c);
    const auto st = c->stats();
    EXPECT_EQ(nvme_codec_stats(*st)->encoded_chunks, keys.size());
    reps_before = st->codec.fused_representatives;
    EXPECT_GT(reps_before, 0u);
  }
  d->stop();
  ASSERT_TRUE(d->restart().ok());
  auto c = connect(*d);
  auto ns = c->register_layout(real_kv().layout, "fused");
  ASSERT_TRUE(ns.ok());
  auto st = c->stats();
  EXPECT_EQ(st->nvme.recovered_chunks, keys.size());
  // Every representative a recovered chunk refers to came back from the index.
  EXPECT_GT(st->codec.fused_representatives, 0u);
  EXPECT_LE(st->codec.fused_representatives, reps_before);
  EXPECT_EQ(load_and_check(*c, *ns, *fused), keys.size());  // from NVMe: RAM is empty
  EXPECT_EQ(c->stats()->nvme.checksum_failures, 0u);
  // Deleted from every tier: no chunk refers to a representative any more, and none is left.
  ASSERT_EQ(*c->remove(ns->id, keys), keys.size());
  st = c->stats();
  EXPECT_EQ(st->tiers[2].chunks, 0u);
  EXPECT_EQ(st->codec.fused_representatives, 0u);
  EXPECT_EQ(st->codec.fused_representative_bytes, 0u);
}

TEST(NvmeCodecTest, DamagedEncodedChunkIsAMissAndCounted) {
  auto d = start_codec_daemon("zstd");
  ASSERT_TRUE(d);
  const auto& p0 = real_kv().prompts[0];
  const auto& p1 = real_kv().prompts[1];
  std::vector<ChunkKey> k0, k1;
  {
    auto c = connect(*d);
    auto ns = c->register_layout(real_kv().layout, "damage");
    ASSERT_TRUE(ns.ok());
    (void)put_real(*c, *ns);
    flush_to_nvme(*c);
    k0 = Client::keys(*ns, p0.tokens);
    k1 = Client::keys(*ns, p1.tokens);
  }
  d->stop();
  testing::damage_chunk(*d, k0[1]);  // found by a load
  testing::damage_chunk(*d, k1[2]);  // found by the scrub
  ASSERT_TRUE(d->restart().ok());
  auto c = connect(*d);
  auto ns = c->register_layout(real_kv().layout, "damage");
  ASSERT_TRUE(ns.ok());
  ASSERT_EQ(c->lookup(*ns, p0.tokens)->cached_chunks, k0.size());  // lookup reads nothing
  {
    auto lease = c->load(*ns, p0.tokens);
    ASSERT_TRUE(lease.ok());
    ASSERT_EQ(lease->chunks(), 1u);  // the prefix ends before the damaged chunk
    const auto got = lease->chunk(0);
    EXPECT_TRUE(std::equal(got.begin(), got.end(), p0.kv.begin()));
  }
  auto st = c->stats();
  EXPECT_EQ(st->nvme.checksum_failures, 1u);
  EXPECT_EQ(c->lookup(*ns, p0.tokens)->cached_chunks, 1u);  // removed from the tier
  EXPECT_NE(d->log().find("fails its checksum"), std::string::npos) << d->log();
  EXPECT_EQ(testing::scrub_nvme(*c).corrupt, 1u);
  EXPECT_EQ(c->lookup(*ns, p1.tokens)->cached_chunks, 2u);
}

// Key-derived chunk bytes that zstd compresses (3 random bits per byte), so they go down encoded,
// and that a torn, stale or misplaced chunk does not reproduce.
void fill_compressible(const ChunkKey& key, std::span<std::byte> out) {
  uint64_t x = key.lo ^ (key.hi * 0x9E3779B97F4A7C15ull) ^ 7;
  for (size_t i = 0; i < out.size(); ++i) {
    if (i % 16 == 0) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
    }
    out[i] = static_cast<std::byte>(0x38 | ((x >> (3 * (i % 16))) & 7));
  }
}

bool matches_compressible(const ChunkKey& key, std::span<const std::byte> got) {
  std::vector<std::byte> want(got.size());
  fill_compressible(key, want);
  return std::equal(got.begin(), got.end(), want.begin());
}

TEST(NvmeCodecTest, SigkillDuringEncodedWriteDownNeverServesATornChunk) {
  const Layout layout{2, 2, 64, DType::kBFloat16, 64};  // 64 KiB chunks
  auto d = start_codec_daemon("zstd");
  ASSERT_TRUE(d);
  std::mt19937 rng(20261123);
  uint64_t recovered_max = 0, encoded_max = 0;
  for (int round = 0; round < 6; ++round) {
    std::mutex mu;
    std::vector<std::vector<TokenId>> attempted;  // guarded by mu
    std::atomic<bool> stop{false};
    std::vector<std::thread> writers;
    for (int w = 0; w < 2; ++w) {
      writers.emplace_back([&, w] {
        auto c = Client::connect({d->socket_path(), "codec-writer", true});
        if (!c.ok()) return;
        auto ns = (*c)->register_layout(layout, "sigkill");
        if (!ns.ok()) return;
        for (uint32_t i = 0; !stop.load(); ++i) {
          std::vector<TokenId> tokens(4 * layout.chunk_tokens);
          for (size_t t = 0; t < tokens.size(); ++t) {
            tokens[t] = (round * 2 + w) * 1000003u + i * 977u + static_cast<TokenId>(t);
          }
          {
            std::lock_guard lock(mu);
            attempted.push_back(tokens);
          }
          const auto keys = Client::keys(*ns, tokens);
          auto put = (*c)->begin_put(*ns, tokens);
          if (!put.ok()) return;  // the daemon is gone
          for (size_t k = 0; k < put->chunks(); ++k) {
            if (put->needs_write(k)) fill_compressible(keys[k], put->slot(k));
          }
          if (!put->commit().ok()) return;
        }
      });
    }
    // A random point of the encode-and-write-heavy load: the kill is the event under test.
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + rng() % 250));
    d->kill();
    stop = true;
    for (auto& t : writers) t.join();
    ASSERT_TRUE(d->restart().ok()) << "round " << round;
    // Everything the restarted daemon serves comes from NVMe (RAM is empty), decoded, and must
    // be whole and the chunk its key names.
    auto c = connect(*d);
    auto ns = c->register_layout(layout, "sigkill");
    ASSERT_TRUE(ns.ok());
    for (const auto& tokens : attempted) {
      const auto keys = Client::keys(*ns, tokens);
      auto lease = c->load(*ns, tokens);
      ASSERT_TRUE(lease.ok()) << lease.status().to_string();
      for (size_t k = 0; k < lease->chunks(); ++k) {
        ASSERT_TRUE(matches_compressible(keys[k], lease->chunk(k)))
            << "round " << round << ": a chunk served after the kill is not the one stored";
      }
      ASSERT_TRUE(lease->release().ok());
    }
    auto st = c->stats();
    ASSERT_TRUE(st.ok());
    EXPECT_EQ(st->nvme.checksum_failures, 0u) << "round " << round;
    recovered_max = std::max(recovered_max, st->nvme.recovered_chunks);
    encoded_max = std::max(encoded_max, nvme_codec_stats(*st)->encoded_chunks);
  }
  EXPECT_GT(recovered_max, 0u) << "no round recovered a chunk: the kills never found one on disk";
  EXPECT_GT(encoded_max, 0u) << "no encoded chunk was recovered";
  auto c = connect(*d);
  const testing::NvmeScrub scrub = testing::scrub_nvme(*c);
  EXPECT_GT(scrub.checked, 0u);
  EXPECT_EQ(scrub.corrupt + scrub.unreadable, 0u);
}

TEST(NvmeCodecTest, SmallStagingMakesWriteDownWaitNotFail) {
  // 1 MiB of staging: write-downs may hold at most three quarters of it (nine 80 KiB encodes at
  // once). Write-back holds the chunks until the flush, which then asks for all of them at once:
  // write-down waits for staging to come back, and gets everything down.
  auto d = start_codec_daemon("zstd", "", "1MiB", "write-back");
  ASSERT_TRUE(d);
  auto c = connect(*d);
  auto ns = c->register_layout(real_kv().layout, "small-staging");
  ASSERT_TRUE(ns.ok());
  const auto keys = put_real(*c, *ns);
  ASSERT_GT(keys.size(), 9u);
  EXPECT_EQ(c->stats()->tiers[2].chunks, 0u);  // write-back: nothing down before the flush
  flush_to_nvme(*c);
  auto st = c->stats();
  EXPECT_GT(st->codec.encode_waits, 0u);
  EXPECT_EQ(st->tiers[2].chunks, keys.size());
  EXPECT_EQ(nvme_codec_stats(*st)->encoded_chunks, keys.size());
  EXPECT_EQ(st->codec.staging_capacity_bytes, 1u << 20);
  EXPECT_LE(st->codec_stages[0].max_queue_depth, 10u);  // never more than staging allows
  EXPECT_EQ(st->nvme.dropped_unwritten, 0u);
  ASSERT_EQ(*c->evict(ns->id, keys), keys.size());
  EXPECT_EQ(load_and_check(*c, *ns, storage::CodecConfig{}), keys.size());
}

TEST(NvmeCodecTest, TierkvctlStatsShowsTheCompressionAndTheStages) {
  auto d = start_codec_daemon("zstd", "[nvme.codec_by_tenant]\nbulk = \"int8\"\n");
  ASSERT_TRUE(d);
  auto c = connect(*d);
  auto ns = c->register_layout(real_kv().layout, "codec");
  ASSERT_TRUE(ns.ok());
  const auto keys = put_real(*c, *ns);
  flush_to_nvme(*c);
  ASSERT_EQ(*c->evict(ns->id, keys), keys.size());
  EXPECT_EQ(load_and_check(*c, *ns, storage::CodecConfig{}), keys.size());

  const std::string ctl = std::string(TIERKV_BINARY_DIR) + "/tools/tierkvctl";
  const auto json = testing::run_process({ctl, "--socket", d->socket_path(), "stats", "--json"});
  ASSERT_TRUE(json.ok()) << json.describe();
  std::string error;
  auto doc = testing::parse_json(json.out, &error);
  ASSERT_TRUE(doc) << error << "\n" << json.out;
  const auto& codecs = (*doc)["codecs"];
  // Each codec in its canonical form.
  const std::string shown = storage::CodecConfig::parse("zstd")->to_string() +
                            ", bulk=" + storage::CodecConfig::parse("int8")->to_string();
  EXPECT_EQ(codecs["nvme_codec"].as_string(), shown);
  bool nvme_seen = false;
  for (const auto& t : codecs["tiers"].as_array()) {
    if (t["tier"].as_string() != "nvme") continue;
    nvme_seen = true;
    EXPECT_GT(t["ratio"].as_number(), 1.0);
    EXPECT_EQ(t["encoded_chunks"].as_number(), static_cast<double>(keys.size()));
  }
  EXPECT_TRUE(nvme_seen);
  ASSERT_EQ(codecs["stages"].as_array().size(), 2u);
  EXPECT_EQ(codecs["stages"].as_array()[0]["stage"].as_string(), "encode");
  EXPECT_EQ(codecs["stages"].as_array()[0]["items"].as_number(), static_cast<double>(keys.size()));
  EXPECT_GE(codecs["stages"].as_array()[0]["batch_size"].as_number(), 1.0);
  EXPECT_EQ(codecs["stages"].as_array()[1]["stage"].as_string(), "decode");
  EXPECT_EQ(codecs["fused_representatives"].as_number(), 0.0);

  const auto human = testing::run_process({ctl, "--socket", d->socket_path(), "stats"});
  ASSERT_TRUE(human.ok()) << human.describe();
  EXPECT_NE(human.out.find("codecs: nvme " + shown), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("encode"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("RATIO"), std::string::npos) << human.out;
}

}  // namespace
}  // namespace tierkv
