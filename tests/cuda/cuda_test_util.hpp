#pragma once
// Helpers of the CUDA tests: random CPU inputs, their copies on the GPU, and the comparison of
// a GPU result with the CPU reference by error relative to the largest reference value.
#include <catch2/catch.hpp>
#include <cmath>
#include <sstream>
#include <string>

// The op headers only (not the umbrella header): the suite compiles in a fraction of the time.
#include "txtcls/cuda/runtime.hpp"
#include "txtcls/ops/dropout.hpp"
#include "txtcls/ops/embedding.hpp"
#include "txtcls/ops/loss.hpp"
#include "txtcls/ops/pooling.hpp"
#include "txtcls/ops/matmul.hpp"
#include "txtcls/ops/norm.hpp"
#include "txtcls/ops/softmax.hpp"
#include "txtcls/train/ema.hpp"
#include "txtcls/train/optim.hpp"
#include "test_common.hpp"  // ct::rnd, ct::rel_err

namespace ct {

using txtcls::Device;
using txtcls::Shape;
using txtcls::Tensor;

inline Device gpu() { return Device::cuda(0); }

// Float tolerances: elementwise and reductions 1e-5 of the largest reference value; double 1e-12.
template <class T> constexpr double tol() { return std::is_same_v<T, float> ? 1e-5 : 1e-12; }

// Where got and want differ most (for the failure message): "index i: got a, want b".
template <class T>
std::string worst(const Tensor<T>& got, const Tensor<T>& want) {
  auto g = got.to_vector();
  auto w = want.to_vector();
  size_t at = 0;
  double d = -1;
  for (size_t i = 0; i < w.size() && i < g.size(); ++i) {
    const double e = std::isfinite(double(g[i]) - double(w[i])) ? std::abs(double(g[i]) - double(w[i])) : INFINITY;
    if (e > d && !(std::isnan(double(g[i])) && std::isnan(double(w[i])))) d = e, at = i;
  }
  if (d < 0) return "no element differs";
  std::ostringstream s;
  s.precision(9);
  s << "worst at flat index " << at << " of " << txtcls::shape_str(want.shape()) << ": got " << g[at] << ", want "
    << w[at];
  return s.str();
}

// CHECK, not REQUIRE: a failing comparison inside a loop over configurations fails the test case
// and the loop goes on, so one run on a GPU reports every configuration that fails.
#define CT_CHECK_CLOSE_TOL(got, want, tolerance, floor)                  \
  do {                                                                   \
    const auto& _g = (got);                                              \
    const auto& _w = (want);                                             \
    REQUIRE(_g.shape() == _w.shape());                                   \
    const double _e = ct::rel_err(_g, _w, (floor));                      \
    INFO("relative error " << _e << ", tolerance " << (tolerance));     \
    if (!(_e <= (tolerance))) UNSCOPED_INFO(ct::worst(_g, _w));          \
    CHECK(_e <= (tolerance));                                            \
  } while (0)
#define CT_REQUIRE_CLOSE(got, want, T) CT_CHECK_CLOSE_TOL(got, want, ct::tol<T>(), 0.0)

}  // namespace ct
