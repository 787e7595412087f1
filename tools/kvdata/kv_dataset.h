// KvDataset: reads the KV datasets tools/kvdata/make_kv_dataset.py writes (format in README.md):
// the keys, values and sampled queries a real model produced for a workload's prompts.
//
// Gives each prompt's full chunks (trailing partial chunks are dropped, as tierkv never stores
// them) in tierkv's canonical chunk layout. Thread safety: a loaded dataset is immutable; share it
// freely.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "tierkv/layout.h"
#include "tierkv/status.h"

namespace tierkv::kvdata {

struct KvPrompt {
  std::vector<int32_t> tokens;
  std::vector<int32_t> query_positions;  // ascending token positions whose queries are kept
  // Per layer, raw little-endian elements of the dataset dtype:
  std::vector<std::vector<std::byte>> k;  // [tokens][num_kv_heads][head_dim]
  std::vector<std::vector<std::byte>> v;  // [tokens][num_kv_heads][head_dim]
  std::vector<std::vector<std::byte>> q;  // [query_positions][num_q_heads][head_dim]
};

class KvDataset {
 public:
  // Reads a .tkv file; every size is checked against the file's length.
  static Result<KvDataset> load(const std::string& path);

  uint32_t num_layers = 0;
  uint32_t num_kv_heads = 0;
  uint32_t num_q_heads = 0;
  uint32_t head_dim = 0;
  DType dtype = DType::kBFloat16;
  float rope_theta = 0;  // the model's RoPE base (keys are stored rotated), 0 if none
  std::vector<KvPrompt> prompts;

  [[nodiscard]] Layout layout(uint32_t chunk_tokens) const;
  [[nodiscard]] uint32_t full_chunks(size_t prompt, uint32_t chunk_tokens) const {
    return static_cast<uint32_t>(prompts[prompt].tokens.size() / chunk_tokens);
  }
  // Copies chunk `chunk` (tokens [chunk * chunk_tokens, +chunk_tokens)) of `prompt` into `out`
  // (layout(chunk_tokens).chunk_bytes() bytes): per layer K rows, then V rows.
  void gather_chunk(size_t prompt, uint32_t chunk, uint32_t chunk_tokens,
                    std::span<std::byte> out) const;
};

}  // namespace tierkv::kvdata
