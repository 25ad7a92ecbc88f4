#pragma once
// Host-side face of the fused multi-tensor Adam(W) step (kernels/adam.cu). Compiles without nvcc.
#include <cstdint>
#include <vector>

#include "txtcls/train/adam_math.hpp"

namespace txtcls::cuda {

// One parameter's update: its data, gradient, both moments (all contiguous, on one device), and
// its step's coefficients (each parameter has its own step count and weight decay).
template <class T>
struct AdamTensor {
  T* p;
  const T* g;
  T* m;
  T* v;
  int64_t n;
  train::AdamStepMath<T> math;
};

// Updates every listed parameter in one kernel launch.
template <class T>
void adam_step(const std::vector<AdamTensor<T>>& tensors);

}  // namespace txtcls::cuda
