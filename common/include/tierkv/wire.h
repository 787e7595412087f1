// ByteWriter / ByteReader: bounds-checked little-endian encoding of protocol payloads.
//
// The reader never reads past its span; a short payload yields a Status that names the field it
// was reading ("truncated payload: field 'keys' needs 160 bytes, 24 remain"). Neither allocates
// except the writer's buffer, which callers reuse across frames. Thread safety: none (per frame).
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "tierkv/status.h"

namespace tierkv::wire {

static_assert(std::endian::native == std::endian::little,
              "the wire format is little-endian and so is every host tierkv supports");

class ByteWriter {
 public:
  explicit ByteWriter(std::vector<uint8_t>& out) : out_(out) {}

  template <typename T>
    requires std::is_trivially_copyable_v<T>
  void put(const T& v) {
    const size_t at = out_.size();
    out_.resize(at + sizeof(T));
    std::memcpy(out_.data() + at, &v, sizeof(T));
  }
  template <typename T>
    requires std::is_trivially_copyable_v<T>
  void put_array(std::span<const T> items) {
    put<uint32_t>(static_cast<uint32_t>(items.size()));
    const size_t at = out_.size();
    out_.resize(at + items.size_bytes());
    if (!items.empty()) std::memcpy(out_.data() + at, items.data(), items.size_bytes());
  }
  void put_string(std::string_view s) {
    put_array(std::span<const char>(s.data(), s.size()));
  }

 private:
  std::vector<uint8_t>& out_;
};

class ByteReader {
 public:
  explicit ByteReader(std::span<const uint8_t> in) : in_(in) {}

  template <typename T>
    requires std::is_trivially_copyable_v<T>
  Status get(const char* field, T& v) {
    TIERKV_RETURN_IF_ERROR(need(field, sizeof(T)));
    std::memcpy(&v, in_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return Status::Ok();
  }
  // A u32 count, then that many items; count above max_items is rejected before any copy.
  template <typename T>
    requires std::is_trivially_copyable_v<T>
  Status get_array(const char* field, std::vector<T>& out, uint32_t max_items) {
    uint32_t n = 0;
    TIERKV_RETURN_IF_ERROR(get(field, n));
    if (n > max_items) {
      return Status::InvalidArgument(std::string("field '") + field + "': " + std::to_string(n) +
                                     " items exceed the limit of " + std::to_string(max_items));
    }
    TIERKV_RETURN_IF_ERROR(need(field, size_t{n} * sizeof(T)));
    out.resize(n);
    if (n) std::memcpy(out.data(), in_.data() + pos_, size_t{n} * sizeof(T));
    pos_ += size_t{n} * sizeof(T);
    return Status::Ok();
  }
  Status get_string(const char* field, std::string& out, uint32_t max_len) {
    uint32_t n = 0;
    TIERKV_RETURN_IF_ERROR(get(field, n));
    if (n > max_len) {
      return Status::InvalidArgument(std::string("field '") + field + "': length " +
                                     std::to_string(n) + " exceeds the limit of " +
                                     std::to_string(max_len));
    }
    TIERKV_RETURN_IF_ERROR(need(field, n));
    out.assign(reinterpret_cast<const char*>(in_.data() + pos_), n);
    pos_ += n;
    return Status::Ok();
  }
  // A payload that is exactly one T (a message sent as one fixed-layout struct): get(field, v),
  // then expect_end(message).
  template <typename T>
    requires std::is_trivially_copyable_v<T>
  Status get_whole(const char* field, T& v, const char* message) {
    TIERKV_RETURN_IF_ERROR(get(field, v));
    return expect_end(message);
  }
  // Trailing bytes after the last field are a protocol error too: they mean the peer and we
  // disagree on the message's shape.
  Status expect_end(const char* message) const {
    if (pos_ == in_.size()) return Status::Ok();
    return Status::ProtocolError(std::string(message) + ": " + std::to_string(in_.size() - pos_) +
                                 " unexpected trailing bytes");
  }
  size_t remaining() const { return in_.size() - pos_; }

 private:
  Status need(const char* field, size_t n) const {
    if (in_.size() - pos_ >= n) return Status::Ok();
    return Status::ProtocolError(std::string("truncated payload: field '") + field + "' needs " +
                                 std::to_string(n) + " bytes, " +
                                 std::to_string(in_.size() - pos_) + " remain");
  }

  std::span<const uint8_t> in_;
  size_t pos_ = 0;
};

}  // namespace tierkv::wire
