// Snavely (BAL / Bundler) reprojection cost for Ceres, handed to pyceres as a C++
// ceres::CostFunction (automatic differentiation), so that Ceres' solve never calls back into
// Python. Compiled at run time by benchmarks/beyond_poses.py (see build_ceres_module there):
// pyceres' wheel links Ceres 2.2.0 statically and ships no headers, so this file is compiled
// against Ceres' public headers (only header-only templates and the CostFunction base class are
// used; cost_function.h is identical in Ceres 2.1.0 and 2.2.0 apart from its copyright line),
// Eigen's headers and pybind11 3.0.1 (the version pyceres 2.6 was built with: the two modules
// share pybind11's type registry, so pyceres' Problem.add_residual_block accepts the object).
//
// Camera block (9): angle-axis w (3), translation t (3), f, k1, k2; point block (3).
//   x_c = R(w) X + t, p = -x_c[:2] / x_c[2], pixel = f (1 + k1 |p|^2 + k2 |p|^4) p,
//   residual = pixel - observed (2).
#include <memory>

#include <pybind11/pybind11.h>

#include "ceres/autodiff_cost_function.h"
#include "ceres/cost_function.h"
#include "ceres/rotation.h"

namespace ceres {
// The base class' out-of-line members live in Ceres' library, whose symbols pyceres does not
// export; these are the definitions of Ceres' internal/ceres/cost_function.cc.
CostFunction::CostFunction() : num_residuals_(0) {}
CostFunction::~CostFunction() = default;
}  // namespace ceres

namespace {

class SnavelyResidual {
 public:
  SnavelyResidual(double u, double v) : u_(u), v_(v) {}

  template <typename T>
  bool operator()(const T* const cam, const T* const X, T* r) const {
    T xc[3];
    ceres::AngleAxisRotatePoint(cam, X, xc);
    for (int i = 0; i < 3; ++i) xc[i] += cam[3 + i];
    const T px = -xc[0] / xc[2];
    const T py = -xc[1] / xc[2];
    const T r2 = px * px + py * py;
    const T scale = cam[6] * (T(1.0) + r2 * (cam[7] + cam[8] * r2));
    r[0] = scale * px - T(u_);
    r[1] = scale * py - T(v_);
    return true;
  }

 private:
  double u_, v_;
};

std::unique_ptr<ceres::CostFunction> SnavelyCost(double u, double v) {
  return std::make_unique<ceres::AutoDiffCostFunction<SnavelyResidual, 2, 9, 3>>(
      new SnavelyResidual(u, v));
}

}  // namespace

PYBIND11_MODULE(_ceres_snavely, m) {
  pybind11::module_::import("pyceres");  // registers ceres::CostFunction with pybind11
  m.doc() = "Snavely reprojection cost (Ceres autodiff) for pyceres";
  m.def("snavely_cost", &SnavelyCost, pybind11::arg("u"), pybind11::arg("v"),
        "AutoDiffCostFunction<SnavelyResidual, 2, 9, 3> for the observation (u, v).");
}
