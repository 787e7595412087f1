#include "errors.h"

#include <array>
#include <string>

namespace tierkv::python {

namespace py = pybind11;

namespace {

constexpr std::array kCodes = {
    StatusCode::kInvalidArgument,    StatusCode::kNotFound,
    StatusCode::kResourceExhausted,  StatusCode::kPermissionDenied,
    StatusCode::kFailedPrecondition, StatusCode::kProtocolError,
    StatusCode::kUnavailable,        StatusCode::kIoError,
    StatusCode::kInternal,
};

// Indexed by StatusCode; owned by the module (kept alive by its attributes).
std::array<PyObject*, 16> g_classes{};
PyObject* g_base = nullptr;

PyObject* class_for(StatusCode code) {
  const auto i = static_cast<size_t>(code);
  if (i < g_classes.size() && g_classes[i] != nullptr) return g_classes[i];
  return g_base;
}

void raise(const Status& status) {
  PyObject* cls = class_for(status.code());
  py::object instance = py::reinterpret_borrow<py::object>(cls)(status.to_string());
  instance.attr("code") = std::string(status_code_name(status.code()));
  instance.attr("message") = status.message();
  PyErr_SetObject(cls, instance.ptr());
}

}  // namespace

void register_errors(py::module_& m) {
  py::dict base_doc;
  g_base = PyErr_NewExceptionWithDoc(
      "tierkv.Error",
      "A tierkv call failed. `code` is the status code's name (e.g. 'InvalidArgument'), "
      "`message` says what was wrong and with which value.",
      PyExc_Exception, nullptr);
  if (g_base == nullptr) throw py::error_already_set();
  m.attr("Error") = py::reinterpret_steal<py::object>(g_base);
  for (StatusCode code : kCodes) {
    const std::string name(status_code_name(code));
    // Python's own kinds as second bases, so `except ValueError` catches bad arguments.
    py::tuple bases;
    if (code == StatusCode::kInvalidArgument) {
      bases = py::make_tuple(py::handle(g_base), py::handle(PyExc_ValueError));
    } else if (code == StatusCode::kUnavailable) {
      bases = py::make_tuple(py::handle(g_base), py::handle(PyExc_ConnectionError));
    } else if (code == StatusCode::kIoError) {
      bases = py::make_tuple(py::handle(g_base), py::handle(PyExc_OSError));
    } else {
      bases = py::make_tuple(py::handle(g_base));
    }
    const std::string qualified = "tierkv." + name;
    PyObject* cls = PyErr_NewException(qualified.c_str(), bases.ptr(), nullptr);
    if (cls == nullptr) throw py::error_already_set();
    m.attr(name.c_str()) = py::reinterpret_steal<py::object>(cls);
    g_classes[static_cast<size_t>(code)] = cls;
  }
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const StatusError& e) {
      raise(e.status());
    }
  });
}

}  // namespace tierkv::python
