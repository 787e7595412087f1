#include "buffers.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>

#include "errors.h"

namespace tierkv::python {

namespace py = pybind11;

namespace {

std::string type_name(py::handle obj) { return py::str(py::type::handle_of(obj).attr("__name__")); }

// Item size of a __cuda_array_interface__ / __array_interface__ typestr such as "<f2" or "|u1".
uint32_t typestr_itemsize(const std::string& typestr, const char* what) {
  if (typestr.size() < 3) invalid_argument(std::string(what) + ": bad typestr '" + typestr + "'");
  try {
    return static_cast<uint32_t>(std::stoul(typestr.substr(2)));
  } catch (const std::exception&) {
    invalid_argument(std::string(what) + ": bad typestr '" + typestr + "'");
  }
}

// Checks that (shape, strides) of itemsize-sized elements are C-contiguous; strides None is.
// Returns the element count.
uint64_t contiguous_elements(const py::tuple& shape, py::handle strides, uint32_t itemsize,
                             const char* what) {
  uint64_t count = 1;
  for (py::handle d : shape) count *= d.cast<uint64_t>();
  if (strides.is_none() || count == 0) return count;
  const py::tuple st = py::reinterpret_borrow<py::tuple>(strides);
  if (st.size() != shape.size())
    invalid_argument(std::string(what) + ": strides do not match shape");
  int64_t expected = itemsize;
  for (size_t i = shape.size(); i-- > 0;) {
    const auto dim = shape[i].cast<int64_t>();
    if (dim != 1 && st[i].cast<int64_t>() != expected) {
      invalid_argument(std::string(what) + " must be C-contiguous (its dimension " +
                       std::to_string(i) + " has stride " + std::to_string(st[i].cast<int64_t>()) +
                       " bytes, contiguous would be " + std::to_string(expected) +
                       "); pass a contiguous copy");
    }
    expected *= dim;
  }
  return count;
}

}  // namespace

ArrayRef::ArrayRef(py::handle obj, const char* what, bool writable) {
  owner_ = py::reinterpret_borrow<py::object>(obj);
  if (py::hasattr(obj, "data_ptr") && py::hasattr(obj, "device") &&
      py::hasattr(obj, "element_size")) {
    from_torch(obj, what);
  } else if (py::hasattr(obj, "__cuda_array_interface__")) {
    from_cuda_interface(obj, what);
  } else if (PyObject_CheckBuffer(obj.ptr()) != 0) {
    from_buffer(obj, what, writable);
  } else if (py::hasattr(obj, "__array_interface__")) {
    from_array_interface(obj, what, writable);
  } else {
    throw py::type_error(std::string(what) +
                         ": expected an array (numpy array, torch tensor, buffer, or object with "
                         "__cuda_array_interface__ / __array_interface__), got " +
                         type_name(obj));
  }
}

ArrayRef::~ArrayRef() {
  if (has_view_) PyBuffer_Release(&view_);
}

void ArrayRef::from_torch(py::handle obj, const char* what) {
  if (!obj.attr("is_contiguous")().cast<bool>()) {
    invalid_argument(std::string(what) + " must be a contiguous tensor; pass .contiguous()");
  }
  const py::object device = obj.attr("device");
  const std::string dev_type = py::str(device.attr("type"));
  itemsize_ = obj.attr("element_size")().cast<uint32_t>();
  nbytes_ = obj.attr("numel")().cast<uint64_t>() * itemsize_;
  data_ = reinterpret_cast<std::byte*>(obj.attr("data_ptr")().cast<uintptr_t>());
  if (dev_type == "cpu") {
    kind_ = MemoryKind::kHost;
  } else if (dev_type == "cuda") {
    kind_ = MemoryKind::kCuda;
    const py::object index = device.attr("index");
    device_ = index.is_none() ? 0 : index.cast<int>();
  } else {
    invalid_argument(std::string(what) + " lives on device '" + dev_type +
                     "'; tierkv reads and writes CPU and CUDA tensors");
  }
}

void ArrayRef::from_cuda_interface(py::handle obj, const char* what) {
  const py::dict cai = obj.attr("__cuda_array_interface__");
  const py::tuple data = cai["data"];
  const py::tuple shape = cai["shape"];
  itemsize_ = typestr_itemsize(py::str(cai["typestr"]), what);
  const py::object strides = cai.contains("strides") ? py::object(cai["strides"]) : py::none();
  nbytes_ = contiguous_elements(shape, strides, itemsize_, what) * itemsize_;
  data_ = reinterpret_cast<std::byte*>(data[0].cast<uintptr_t>());
  kind_ = MemoryKind::kCuda;
  if (cai.contains("stream") && !cai["stream"].is_none()) {
    stream_ = cai["stream"].cast<uintptr_t>();
    // Per the interface, 1 and 2 name the legacy and per-thread default streams.
    if (stream_ == 1) stream_ = 0;
  }
  // The device is the one the pointer belongs to; the CUDA code asks the driver.
  device_ = -1;
}

void ArrayRef::from_buffer(py::handle obj, const char* what, bool writable) {
  if (PyObject_GetBuffer(obj.ptr(), &view_, PyBUF_STRIDES | PyBUF_FORMAT) != 0) {
    throw py::error_already_set();
  }
  has_view_ = true;
  if (PyBuffer_IsContiguous(&view_, 'C') == 0) {
    invalid_argument(std::string(what) + " must be C-contiguous (" + type_name(obj) +
                     " with strides); pass a contiguous copy (numpy.ascontiguousarray)");
  }
  if (writable && view_.readonly != 0) {
    invalid_argument(std::string(what) + " is read-only; tierkv writes into it");
  }
  data_ = static_cast<std::byte*>(view_.buf);
  nbytes_ = static_cast<uint64_t>(view_.len);
  itemsize_ = static_cast<uint32_t>(view_.itemsize);
}

void ArrayRef::from_array_interface(py::handle obj, const char* what, bool writable) {
  const py::dict ai = obj.attr("__array_interface__");
  const py::tuple data = ai["data"];
  const py::tuple shape = ai["shape"];
  itemsize_ = typestr_itemsize(py::str(ai["typestr"]), what);
  const py::object strides = ai.contains("strides") ? py::object(ai["strides"]) : py::none();
  nbytes_ = contiguous_elements(shape, strides, itemsize_, what) * itemsize_;
  if (writable && data[1].cast<bool>()) {
    invalid_argument(std::string(what) + " is read-only; tierkv writes into it");
  }
  data_ = reinterpret_cast<std::byte*>(data[0].cast<uintptr_t>());
}

// --- tokens ------------------------------------------------------------------------------------

namespace {

bool is_int_format(const char* f, Py_ssize_t itemsize) {
  if (f == nullptr) return itemsize == 1;
  if (*f == '<' || *f == '=' || *f == '@' || *f == '!' || *f == '>') {
    if (*f == '>' || *f == '!') return false;  // big-endian ids would need swapping
    ++f;
  }
  return f[0] != '\0' && f[1] == '\0' && std::strchr("bBhHiIlLqQ", f[0]) != nullptr;
}

bool is_signed_format(const char* f) {
  if (f == nullptr) return false;
  while (*f == '<' || *f == '=' || *f == '@') ++f;
  return std::strchr("bhilq", f[0]) != nullptr;
}

// The integer of sizeof(Signed) bytes at p, read as Signed or as its unsigned twin.
template <typename Signed>
int64_t int_at(const std::byte* p, bool is_signed) {
  using Unsigned = std::make_unsigned_t<Signed>;
  Signed s;
  Unsigned u;
  std::memcpy(&s, p, sizeof(s));
  std::memcpy(&u, p, sizeof(u));
  return is_signed ? int64_t{s} : int64_t{u};
}

TokenId token_at(const std::byte* p, Py_ssize_t itemsize, bool is_signed, size_t i) {
  int64_t v = 0;
  switch (itemsize) {
    case 1:
      v = int_at<int8_t>(p, is_signed);
      break;
    case 2:
      v = int_at<int16_t>(p, is_signed);
      break;
    case 4:
      v = int_at<int32_t>(p, is_signed);
      break;
    default: {
      uint64_t u;
      std::memcpy(&u, p, 8);
      if (!is_signed && u > std::numeric_limits<uint32_t>::max())
        v = -1;
      else
        v = static_cast<int64_t>(u);
    }
  }
  if (v < 0 || v > int64_t{std::numeric_limits<uint32_t>::max()}) {
    invalid_argument("tokens[" + std::to_string(i) + "] = " + std::to_string(v) +
                     " is not a token id (0 .. 4294967295)");
  }
  return static_cast<TokenId>(v);
}

}  // namespace

Tokens::Tokens(py::handle obj) {
  py::object holder = py::reinterpret_borrow<py::object>(obj);
  // torch tensors: to host memory, then through the buffer protocol (numpy).
  if (!PyObject_CheckBuffer(obj.ptr()) && py::hasattr(obj, "numpy") && py::hasattr(obj, "cpu")) {
    holder = obj.attr("detach")().attr("cpu")().attr("numpy")();
  }
  if (PyObject_CheckBuffer(holder.ptr()) != 0 && !py::isinstance<py::bytes>(holder) &&
      !py::isinstance<py::bytearray>(holder)) {
    if (PyObject_GetBuffer(holder.ptr(), &view_, PyBUF_STRIDES | PyBUF_FORMAT) != 0) {
      throw py::error_already_set();
    }
    has_view_ = true;
    if (view_.ndim > 1) invalid_argument("tokens must be one-dimensional");
    if (!is_int_format(view_.format, view_.itemsize)) {
      throw py::type_error(std::string("tokens must be integers; got an array of format '") +
                           (view_.format != nullptr ? view_.format : "B") + "'");
    }
    const bool is_signed = is_signed_format(view_.format);
    const auto n = static_cast<size_t>(view_.ndim == 0 ? 1 : view_.shape[0]);
    const Py_ssize_t stride = view_.ndim == 0 ? view_.itemsize : view_.strides[0];
    const auto* base = static_cast<const std::byte*>(view_.buf);
    if (view_.itemsize == 4 && stride == 4 && reinterpret_cast<uintptr_t>(base) % 4 == 0) {
      // In place, unless a signed array holds a negative id (then the loop below says which).
      bool in_place = !is_signed;
      if (is_signed) {
        const auto* ids = reinterpret_cast<const int32_t*>(base);
        in_place = std::all_of(ids, ids + n, [](int32_t v) { return v >= 0; });
      }
      if (in_place) {
        span_ = {reinterpret_cast<const TokenId*>(base), n};
        return;
      }
    }
    owned_.resize(n);
    for (size_t i = 0; i < n; ++i) {
      owned_[i] =
          token_at(base + static_cast<Py_ssize_t>(i) * stride, view_.itemsize, is_signed, i);
    }
    PyBuffer_Release(&view_);
    has_view_ = false;
    span_ = owned_;
    return;
  }
  if (py::isinstance<py::str>(holder) || py::isinstance<py::bytes>(holder) ||
      !py::isinstance<py::sequence>(holder)) {
    throw py::type_error("tokens must be a sequence or 1-D array of token ids, got " +
                         type_name(holder));
  }
  const py::sequence seq = py::reinterpret_borrow<py::sequence>(holder);
  owned_.resize(seq.size());
  for (size_t i = 0; i < owned_.size(); ++i) {
    const py::handle item = seq[i];
    if (!PyLong_Check(item.ptr()) && !py::hasattr(item, "__index__")) {
      throw py::type_error("tokens[" + std::to_string(i) + "] is a " + type_name(item) +
                           ", not an int");
    }
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(
        py::int_(py::reinterpret_borrow<py::object>(item)).ptr(), &overflow);
    if (overflow != 0 || v < 0 ||
        v > static_cast<long long>(std::numeric_limits<uint32_t>::max())) {
      invalid_argument("tokens[" + std::to_string(i) + "] = " + std::string(py::str(item)) +
                       " is not a token id (0 .. 4294967295)");
    }
    owned_[i] = static_cast<TokenId>(v);
  }
  span_ = owned_;
}

Tokens::~Tokens() {
  if (has_view_) PyBuffer_Release(&view_);
}

uintptr_t stream_from(py::handle obj) {
  if (obj.is_none()) return 0;
  if (py::hasattr(obj, "cuda_stream")) return obj.attr("cuda_stream").cast<uintptr_t>();
  if (PyLong_Check(obj.ptr())) return obj.cast<uintptr_t>();
  throw py::type_error(
      "stream must be None, an int (cudaStream_t) or an object with .cuda_stream, "
      "got " +
      type_name(obj));
}

}  // namespace tierkv::python
