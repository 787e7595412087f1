// Arrays handed to the Python module by reference: the module reads and writes their memory in
// place, through the pointer the array exports, and never copies them into a temporary.
//
// Accepted, in this order:
//   - a torch tensor (anything with data_ptr(), device, is_contiguous(), element_size(), numel()),
//     on the CPU or a CUDA device;
//   - anything with __cuda_array_interface__ (CuPy, Numba, torch), device memory;
//   - anything with the buffer protocol (numpy arrays, bytearray, memoryview, array.array);
//   - anything with __array_interface__.
// The memory must be C-contiguous (the module addresses it as one run of bytes).
//
// Token lists are resolved separately (tokens_from): a 1-D buffer of 4-byte integers is used in
// place; anything else (int64 arrays, lists, torch tensors) is converted to uint32 token ids.
//
// Thread safety: ArrayRef and Tokens hold Python references and buffers; create and destroy them
// with the GIL held. Between the two, their data may be used with the GIL released.
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "tierkv/chunk_key.h"

namespace tierkv::python {

enum class MemoryKind { kHost, kCuda };

class ArrayRef {
 public:
  // `what` names the argument in error messages ("kv", "into"). `writable`: the module will write
  // into the memory (a read-only buffer is refused).
  ArrayRef(pybind11::handle obj, const char* what, bool writable);
  ~ArrayRef();
  ArrayRef(const ArrayRef&) = delete;
  ArrayRef& operator=(const ArrayRef&) = delete;

  std::byte* data() const { return data_; }
  uint64_t nbytes() const { return nbytes_; }
  uint32_t itemsize() const { return itemsize_; }
  MemoryKind kind() const { return kind_; }
  int device() const { return device_; }  // CUDA device ordinal; -1 for host memory
  // The stream the array's producer named (__cuda_array_interface__ v3 "stream"), or 0.
  uintptr_t stream() const { return stream_; }
  std::span<std::byte> bytes() const { return {data_, nbytes_}; }

 private:
  void from_torch(pybind11::handle obj, const char* what);
  void from_cuda_interface(pybind11::handle obj, const char* what);
  void from_buffer(pybind11::handle obj, const char* what, bool writable);
  void from_array_interface(pybind11::handle obj, const char* what, bool writable);

  pybind11::object owner_;  // keeps the array alive
  Py_buffer view_{};
  bool has_view_ = false;
  std::byte* data_ = nullptr;
  uint64_t nbytes_ = 0;
  uint32_t itemsize_ = 1;
  MemoryKind kind_ = MemoryKind::kHost;
  int device_ = -1;
  uintptr_t stream_ = 0;
};

class Tokens {
 public:
  explicit Tokens(pybind11::handle obj);
  ~Tokens();
  Tokens(const Tokens&) = delete;
  Tokens& operator=(const Tokens&) = delete;

  std::span<const TokenId> span() const { return span_; }
  size_t size() const { return span_.size(); }

 private:
  Py_buffer view_{};
  bool has_view_ = false;
  std::vector<TokenId> owned_;
  std::span<const TokenId> span_;
};

// A CUDA stream argument: None (0, the legacy default stream), an int (a cudaStream_t's address),
// or an object with .cuda_stream (torch.cuda.Stream).
uintptr_t stream_from(pybind11::handle obj);

}  // namespace tierkv::python
