// Argument checks shared by the bindings: every array the C++ reads is checked here first,
// so a wrong dtype, shape or layout is a ValueError naming the argument, never a crash.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

namespace neox {

namespace py = pybind11;

// The numpy name of an array's dtype, for messages.
inline std::string dtype_name(const py::array& a) {
  return py::str(a.dtype()).cast<std::string>();
}

// Whether a is a one-dimensional, C-contiguous, aligned array of T in native byte order.
template <typename T>
bool is_plain_vector(const py::array& a) {
  return a.dtype().equal(py::dtype::of<T>()) && a.ndim() == 1 &&
         (a.flags() & py::array::c_style) != 0 && (a.flags() & 0x0100 /* ALIGNED */) != 0;
}

// Raises ValueError unless a is a plain vector of T; `what` names the argument.
template <typename T>
void require_vector(const py::array& a, const char* what) {
  if (!a.dtype().equal(py::dtype::of<T>())) {
    throw py::value_error(std::string(what) + " must have dtype " +
                          py::str(py::dtype::of<T>()).cast<std::string>() + ", got " +
                          dtype_name(a));
  }
  if (a.ndim() != 1) {
    throw py::value_error(std::string(what) + " must be one-dimensional, got " +
                          std::to_string(a.ndim()) + " dimensions");
  }
  if ((a.flags() & py::array::c_style) == 0 || (a.flags() & 0x0100) == 0) {
    throw py::value_error(std::string(what) +
                          " must be C-contiguous and aligned (use numpy.ascontiguousarray)");
  }
}

// Raises ValueError unless a is a plain vector of int32 or int64; returns whether it is int64.
inline bool require_index_vector(const py::array& a, const char* what) {
  if (is_plain_vector<int64_t>(a)) return true;
  if (a.dtype().equal(py::dtype::of<int64_t>())) {
    require_vector<int64_t>(a, what);  // right dtype, wrong layout: say so
  }
  require_vector<int32_t>(a, what);
  return false;
}

template <typename T>
const T* data_of(const py::array& a) {
  return static_cast<const T*>(a.data());
}

}  // namespace neox
