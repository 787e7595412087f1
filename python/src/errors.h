// How the Python module reports failure: every tierkv::Status that is not OK becomes an instance of
// tierkv.Error (or its subclass for the code, e.g. tierkv.InvalidArgument, which is also a
// ValueError), with attributes `code` (the StatusCode name, "InvalidArgument") and `message`.
//
// C++ code in the module throws StatusError; the translator registered by register_errors() turns
// it into the Python exception. Thread safety: throw from any thread; translation runs with the
// GIL.
#pragma once

#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>
#include <utility>

#include "tierkv/status.h"

namespace tierkv::python {

class StatusError : public std::exception {
 public:
  explicit StatusError(Status status) : status_(std::move(status)), what_(status_.to_string()) {}
  const Status& status() const { return status_; }
  const char* what() const noexcept override { return what_.c_str(); }

 private:
  Status status_;
  std::string what_;
};

// Throws StatusError if `status` is not OK.
inline void check(const Status& status) {
  if (!status.ok()) throw StatusError(status);
}
// The value, or throws StatusError.
template <typename T>
T take(Result<T>&& result) {
  if (!result.ok()) throw StatusError(result.status());
  return std::move(result).value();
}

[[noreturn]] inline void invalid_argument(std::string message) {
  throw StatusError(Status::InvalidArgument(std::move(message)));
}

// Creates tierkv.Error and one subclass per status code in `m`, and registers the translator.
void register_errors(pybind11::module_& m);

}  // namespace tierkv::python
