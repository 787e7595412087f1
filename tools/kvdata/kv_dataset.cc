#include "kv_dataset.h"

#include <cstdio>
#include <cstring>
#include <memory>

namespace tierkv::kvdata {

namespace {

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

class Reader {
 public:
  Reader(std::FILE* f, std::string path) : f_(f), path_(std::move(path)) {}
  Status read(void* dst, size_t n, const char* what) {
    if (n != 0 && std::fread(dst, 1, n, f_) != n) {
      return Status::InvalidArgument(path_ + ": truncated while reading " + what);
    }
    return Status::Ok();
  }
  template <typename T>
  Status read_vec(std::vector<T>& v, uint64_t n, const char* what) {
    v.resize(n);
    return read(v.data(), n * sizeof(T), what);
  }

 private:
  std::FILE* f_;
  std::string path_;
};

}  // namespace

Result<KvDataset> KvDataset::load(const std::string& path) {
  std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
  if (!f) return Status::FromErrno("open " + path, errno);
  Reader r(f.get(), path);
  char magic[8];
  TIERKV_RETURN_IF_ERROR(r.read(magic, 8, "magic"));
  if (std::memcmp(magic, "TKVDATA1", 8) != 0) {
    return Status::InvalidArgument(path + ": not a tierkv KV dataset (bad magic)");
  }
  uint32_t h[8];
  TIERKV_RETURN_IF_ERROR(r.read(h, sizeof(h), "header"));
  if (h[0] != 1) {
    return Status::InvalidArgument(path + ": dataset version " + std::to_string(h[0]) +
                                   " is not supported");
  }
  KvDataset ds;
  ds.num_layers = h[1];
  ds.num_kv_heads = h[2];
  ds.num_q_heads = h[3];
  ds.head_dim = h[4];
  ds.dtype = static_cast<DType>(h[5]);
  const uint32_t num_prompts = h[6];
  std::memcpy(&ds.rope_theta, &h[7], 4);
  if (ds.num_layers == 0 || ds.num_layers > 1024 || ds.num_kv_heads == 0 ||
      ds.num_kv_heads > 1024 || ds.num_q_heads == 0 || ds.num_q_heads > 4096 ||
      ds.num_q_heads % ds.num_kv_heads != 0 || ds.head_dim == 0 || ds.head_dim > 16384 ||
      dtype_bytes(ds.dtype) == 0 || num_prompts > 100000 || !(ds.rope_theta >= 0)) {
    return Status::InvalidArgument(path + ": implausible dataset header");
  }
  const uint64_t eb = dtype_bytes(ds.dtype);
  ds.prompts.resize(num_prompts);
  for (auto& p : ds.prompts) {
    uint32_t n[2];
    TIERKV_RETURN_IF_ERROR(r.read(n, sizeof(n), "prompt header"));
    if (n[0] > (1u << 22) || n[1] > n[0]) {
      return Status::InvalidArgument(path + ": implausible prompt of " + std::to_string(n[0]) +
                                     " tokens, " + std::to_string(n[1]) + " queries");
    }
    TIERKV_RETURN_IF_ERROR(r.read_vec(p.tokens, n[0], "tokens"));
    TIERKV_RETURN_IF_ERROR(r.read_vec(p.query_positions, n[1], "query positions"));
    for (int32_t qp : p.query_positions) {
      if (qp < 0 || static_cast<uint32_t>(qp) >= n[0]) {
        return Status::InvalidArgument(path + ": query position " + std::to_string(qp) +
                                       " out of range");
      }
    }
    const uint64_t kv_bytes = uint64_t{n[0]} * ds.num_kv_heads * ds.head_dim * eb;
    const uint64_t q_bytes = uint64_t{n[1]} * ds.num_q_heads * ds.head_dim * eb;
    p.k.resize(ds.num_layers);
    p.v.resize(ds.num_layers);
    p.q.resize(ds.num_layers);
    for (uint32_t l = 0; l < ds.num_layers; ++l) {
      TIERKV_RETURN_IF_ERROR(r.read_vec(p.k[l], kv_bytes, "keys"));
      TIERKV_RETURN_IF_ERROR(r.read_vec(p.v[l], kv_bytes, "values"));
    }
    for (uint32_t l = 0; l < ds.num_layers; ++l) {
      TIERKV_RETURN_IF_ERROR(r.read_vec(p.q[l], q_bytes, "queries"));
    }
  }
  return ds;
}

Layout KvDataset::layout(uint32_t chunk_tokens) const {
  Layout l;
  l.num_layers = num_layers;
  l.num_kv_heads = num_kv_heads;
  l.head_dim = head_dim;
  l.dtype = dtype;
  l.chunk_tokens = chunk_tokens;
  return l;
}

void KvDataset::gather_chunk(size_t prompt, uint32_t chunk, uint32_t chunk_tokens,
                             std::span<std::byte> out) const {
  const KvPrompt& p = prompts[prompt];
  const uint64_t row = uint64_t{num_kv_heads} * head_dim * dtype_bytes(dtype);
  const uint64_t slab = row * chunk_tokens;
  const uint64_t first = uint64_t{chunk} * chunk_tokens * row;
  std::byte* o = out.data();
  for (uint32_t l = 0; l < num_layers; ++l) {
    std::memcpy(o, p.k[l].data() + first, slab);
    o += slab;
    std::memcpy(o, p.v[l].data() + first, slab);
    o += slab;
  }
}

}  // namespace tierkv::kvdata
