#pragma once
// Helpers of the CUDA tests: random CPU inputs, their copies on the GPU, and the comparison of
// a GPU result with the CPU reference by error relative to the largest reference value.
#include <catch2/catch.hpp>
#include <cmath>

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

namespace ct {

using txtcls::Device;
using txtcls::Shape;
using txtcls::Tensor;

inline Device gpu() { return Device::cuda(0); }

template <class T>
Tensor<T> rnd(const Shape& s, uint64_t seed, double lo = -2.0, double hi = 2.0) {
  txtcls::Generator g(seed);
  return txtcls::rand_uniform<T>(s, g, lo, hi);
}

// Float tolerances: elementwise and reductions 1e-5 of the largest reference value; double 1e-12.
template <class T> constexpr double tol() { return std::is_same_v<T, float> ? 1e-5 : 1e-12; }

// max |got - want| / max(|want|, tiny); NaN anywhere (a poisoned, unwritten output) gives +inf.
template <class T>
double rel_err(const Tensor<T>& got, const Tensor<T>& want) {
  REQUIRE(got.shape() == want.shape());
  auto g = got.to_vector();
  auto w = want.to_vector();
  double scale = 0, err = 0;
  for (size_t i = 0; i < w.size(); ++i) scale = std::max(scale, std::abs(double(w[i])));
  for (size_t i = 0; i < w.size(); ++i) {
    const double d = std::abs(double(g[i]) - double(w[i]));
    if (!std::isfinite(double(g[i])) && std::isfinite(double(w[i]))) return INFINITY;
    err = std::max(err, d);
  }
  return err / std::max(scale, 1e-300);
}

#define CT_REQUIRE_CLOSE(got, want, T)            \
  do {                                            \
    const double _e = ct::rel_err((got), (want)); \
    INFO("relative error " << _e);                \
    REQUIRE(_e <= ct::tol<T>());                  \
  } while (0)

}  // namespace ct
