// The CacheEngine's I/O tokens (IoRequest::user_data): the kind of request in bits 56..59, the
// rest says which slot (or which verify op and read). Private to the engine's sources.
#pragma once

#include <cstdint>

namespace tierkv::scheduler {

inline constexpr uint64_t kKindShift = 56;
// kHostRead: a raw chunk read into its host slot; kDiskWrite: a write-down; kVerifyRead: a scrub;
// kStagedRead: an encoded chunk read into a staging buffer, to be decoded into its host slot.
inline constexpr uint64_t kHostRead = 1, kDiskWrite = 2, kVerifyRead = 3, kStagedRead = 4;
inline uint64_t token(uint64_t kind, uint64_t value) { return kind << kKindShift | value; }
inline uint64_t token_kind(uint64_t t) { return (t >> kKindShift) & 0xF; }
inline uint64_t token_value(uint64_t t) { return t & ((1ull << kKindShift) - 1); }

}  // namespace tierkv::scheduler
