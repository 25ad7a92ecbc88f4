#pragma once
// Random CPU inputs of the CUDA tests, free of Catch2 so that the configuration headers shared
// with the kernels' host emulation (tools/cuda_emulate) draw the very same values.
#include <cstdint>

#include "txtcls/tensor/creation.hpp"
#include "txtcls/tensor/random.hpp"

namespace ct {

template <class T>
txtcls::Tensor<T> rnd(const txtcls::Shape& s, uint64_t seed, double lo = -2.0, double hi = 2.0) {
  txtcls::Generator g(seed);
  return txtcls::rand_uniform<T>(s, g, lo, hi);
}

}  // namespace ct
