// Python bindings of the dataset index builder. Filled by the index issue; for now
// it only reports how it was built so the wheel is known to carry compiled code.
#include <pybind11/pybind11.h>

namespace py = pybind11;

PYBIND11_MODULE(_index, m) {
  m.doc() = "neox dataset index builder (C++)";
  m.def("build_info", []() {
    py::dict info;
    info["version"] = NEOX_KERNELS_VERSION;
    info["compiler"] = __VERSION__;
    info["cplusplus"] = __cplusplus;
    return info;
  });
}
