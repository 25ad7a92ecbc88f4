#pragma once
// What the CUDA tests and the kernels' host emulation (tools/cuda_emulate) share, free of Catch2:
// the random CPU inputs (so that both draw the very same values) and the error measure.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "txtcls/tensor/creation.hpp"
#include "txtcls/tensor/random.hpp"

namespace ct {

template <class T>
txtcls::Tensor<T> rnd(const txtcls::Shape& s, uint64_t seed, double lo = -2.0, double hi = 2.0) {
  txtcls::Generator g(seed);
  return txtcls::rand_uniform<T>(s, g, lo, hi);
}

// max |got - want| / max(|want|, floor, tiny). A NaN or infinity must sit where the reference has
// the same value: anything else (a poisoned, unwritten output, say) gives +inf. `floor` is for
// results that are zero in exact arithmetic, where the largest reference value is rounding noise.
// Missing tensors or different shapes give +inf too.
template <class T>
double rel_err(const txtcls::Tensor<T>& got, const txtcls::Tensor<T>& want, double floor = 0) {
  if (!got.defined() || !want.defined() || got.shape() != want.shape()) return INFINITY;
  auto g = got.to_vector();
  auto w = want.to_vector();
  double scale = floor, err = 0;
  for (size_t i = 0; i < w.size(); ++i)
    if (std::isfinite(double(w[i]))) scale = std::max(scale, std::abs(double(w[i])));
  for (size_t i = 0; i < w.size(); ++i) {
    const double gi = double(g[i]), wi = double(w[i]);
    if (!std::isfinite(gi) || !std::isfinite(wi)) {
      const bool same = (std::isnan(gi) && std::isnan(wi)) || gi == wi;
      if (!same) return INFINITY;
      continue;
    }
    err = std::max(err, std::abs(gi - wi));
  }
  return err / std::max(scale, 1e-300);
}

}  // namespace ct
