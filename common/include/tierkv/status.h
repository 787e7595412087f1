// Status and Result<T>: how every fallible call in tierkv reports failure.
//
// Errors are values, never exceptions across a library boundary or the socket. A Status carries a
// code (also sent on the wire) and a message that names what was wrong and with which value, e.g.
// "chunk 17: length 4096 exceeds slot size 2048". Thread safety: plain values.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace tierkv {

// Wire-stable codes: never renumber.
enum class StatusCode : uint16_t {
  kOk = 0,
  kInvalidArgument = 1,     // the request named a bad field or value
  kNotFound = 2,            // unknown namespace, slot or key
  kResourceExhausted = 3,   // no slot could be had (all leased), frame too large
  kPermissionDenied = 4,    // peer uid not allowed
  kFailedPrecondition = 5,  // e.g. commit of a slot this session did not lease for writing
  kProtocolError = 6,       // malformed frame, version mismatch
  kUnavailable = 7,         // daemon not running, connection closed
  kIoError = 8,             // a system call failed
  kInternal = 9,
};

std::string_view status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return {}; }
  static Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status ResourceExhausted(std::string m) {
    return {StatusCode::kResourceExhausted, std::move(m)};
  }
  static Status PermissionDenied(std::string m) {
    return {StatusCode::kPermissionDenied, std::move(m)};
  }
  static Status FailedPrecondition(std::string m) {
    return {StatusCode::kFailedPrecondition, std::move(m)};
  }
  static Status ProtocolError(std::string m) { return {StatusCode::kProtocolError, std::move(m)}; }
  static Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
  static Status IoError(std::string m) { return {StatusCode::kIoError, std::move(m)}; }
  // errno-based: "what: strerror(err)".
  static Status FromErrno(std::string_view what, int err);
  static Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "InvalidArgument: chunk 17: ..." (or "OK").
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// A value or the Status that explains why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOkStatus;
    return ok() ? kOkStatus : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace tierkv

// Propagates a failed Status out of the enclosing function.
#define TIERKV_RETURN_IF_ERROR(expr)          \
  do {                                        \
    ::tierkv::Status tierkv_status_ = (expr); \
    if (!tierkv_status_.ok()) return tierkv_status_; \
  } while (0)
