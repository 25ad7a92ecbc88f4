#pragma once
// Shared by the emulation check drivers: the error measure of the CUDA tests.
#include <algorithm>
#include <cmath>

namespace emu {

// max |got - want| / max(max |want|, floor) (absolute when both are zero); 1e300 when the tensors
// are missing, differ in shape, or got holds a NaN or infinity (a poisoned, unwritten value).
template <class Tensor>  // txtcls::Tensor<float or double>
double rel_err(const Tensor& got, const Tensor& want, double floor = 0) {
  if (!got.defined() || !want.defined() || got.shape() != want.shape()) return 1e300;
  const auto g = got.to_vector(), w = want.to_vector();
  double e = 0, top = floor;
  for (size_t i = 0; i < w.size(); ++i) {
    if (!std::isfinite(double(g[i]))) return 1e300;
    e = std::max(e, std::abs(double(g[i]) - double(w[i])));
    top = std::max(top, std::abs(double(w[i])));
  }
  return top > 0 ? e / top : e;
}

}  // namespace emu
