#pragma once
// The dropout mask rule, shared by the CPU ops (ops/dropout.hpp) and the CUDA kernels
// (kernels/dropout.cu): a light header, so nvcc compiles it without the tensor library.
#include <cstdint>

#include "txtcls/tensor/random.hpp"

namespace txtcls {

// Whether mask element i of the draw (seed, base) survives dropout with probability p.
TXTCLS_HD bool dropout_keep(uint64_t seed, uint64_t base, uint64_t i, double p) {
  return philox_uniform(seed, base, i) >= p;
}

}  // namespace txtcls
