#include "tierkv/layout.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <array>
#include <cstring>

namespace tierkv {

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat16: return "fp16";
    case DType::kBFloat16: return "bf16";
    case DType::kFloat32: return "fp32";
    case DType::kFloat8E4M3: return "fp8_e4m3";
    case DType::kInt8: return "int8";
  }
  return "unknown";
}

Result<DType> parse_dtype(std::string_view name) {
  for (DType d : {DType::kFloat16, DType::kBFloat16, DType::kFloat32, DType::kFloat8E4M3,
                  DType::kInt8}) {
    if (dtype_name(d) == name) return d;
  }
  return Status::InvalidArgument("dtype '" + std::string(name) +
                                 "' is not one of fp16, bf16, fp32, fp8_e4m3, int8");
}

uint32_t dtype_bytes(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
    case DType::kBFloat16: return 2;
    case DType::kFloat32: return 4;
    case DType::kFloat8E4M3:
    case DType::kInt8: return 1;
  }
  return 0;
}

uint64_t Layout::fingerprint() const {
  std::array<uint32_t, 5> fields{num_layers, num_kv_heads, head_dim,
                                 static_cast<uint32_t>(dtype), chunk_tokens};
  return XXH3_64bits(fields.data(), sizeof(fields));
}

namespace {
Status check_range(const char* field, uint64_t value, uint64_t max) {
  if (value == 0 || value > max) {
    return Status::InvalidArgument("layout." + std::string(field) + " = " + std::to_string(value) +
                                   " is out of range [1, " + std::to_string(max) + "]");
  }
  return Status::Ok();
}
}  // namespace

Status Layout::validate() const {
  TIERKV_RETURN_IF_ERROR(check_range("num_layers", num_layers, kMaxLayers));
  TIERKV_RETURN_IF_ERROR(check_range("num_kv_heads", num_kv_heads, kMaxKvHeads));
  TIERKV_RETURN_IF_ERROR(check_range("head_dim", head_dim, kMaxHeadDim));
  TIERKV_RETURN_IF_ERROR(check_range("chunk_tokens", chunk_tokens, kMaxChunkTokens));
  if (dtype_bytes(dtype) == 0) {
    return Status::InvalidArgument("layout.dtype = " + std::to_string(static_cast<int>(dtype)) +
                                   " is not a known dtype");
  }
  return Status::Ok();
}

std::string Layout::to_string() const {
  return std::to_string(num_layers) + " layers x " + std::to_string(num_kv_heads) +
         " kv heads x " + std::to_string(head_dim) + " dim " + std::string(dtype_name(dtype)) +
         ", " + std::to_string(chunk_tokens) + " tokens/chunk";
}

NamespaceId namespace_id(const Layout& layout, std::string_view tenant, std::string_view salt) {
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  const uint64_t fp = layout.fingerprint();
  XXH3_64bits_update(&state, &fp, sizeof(fp));
  // Length-prefix each string so ("ab", "c") and ("a", "bc") differ.
  const uint64_t tl = tenant.size();
  XXH3_64bits_update(&state, &tl, sizeof(tl));
  XXH3_64bits_update(&state, tenant.data(), tenant.size());
  const uint64_t sl = salt.size();
  XXH3_64bits_update(&state, &sl, sizeof(sl));
  XXH3_64bits_update(&state, salt.data(), salt.size());
  return XXH3_64bits_digest(&state);
}

}  // namespace tierkv
