// Dropout with the counter-based Philox rule of ops/dropout.hpp: each thread computes its
// elements' keep bits from (seed, base, index), so forward and backward draw the same mask and
// no mask is stored. Grid-stride loops over contiguous data.
#include <cstdint>

#include "launch.cuh"
#include "txtcls/cuda/dropout.hpp"
#include "txtcls/ops/dropout_mask.hpp"

namespace txtcls::cuda {
namespace {

template <class T>
__global__ void dropout_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n, uint64_t seed, uint64_t base,
                               double p, T scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = x[i] * (dropout_keep(seed, base, static_cast<uint64_t>(i), p) ? scale : T(0));
}

template <class T>
__global__ void shared_mask_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t total, int64_t M, int64_t K,
                                   int64_t Km, uint64_t seed, uint64_t base, double p, T scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = i % K, a = i / (K * M);
    const uint64_t e = static_cast<uint64_t>(a * Km + (Km == 1 ? 0 : k));
    y[i] = x[i] * (dropout_keep(seed, base, e, p) ? scale : T(0));
  }
}

}  // namespace

template <class T>
void dropout(const T* x, T* y, int64_t n, uint64_t seed, uint64_t base, double p, T scale) {
  if (n == 0) return;
  dropout_kernel<T><<<grid_for(n), kBlock, 0, active_stream()>>>(x, y, n, seed, base, p, scale);
  TXTCLS_KERNEL_CHECK("dropout");
}

template <class T>
void shared_mask_dropout(const T* x, T* y, int64_t A, int64_t M, int64_t K, int64_t Km, uint64_t seed, uint64_t base,
                         double p, T scale) {
  const int64_t total = A * M * K;
  if (total == 0) return;
  shared_mask_kernel<T><<<grid_for(total), kBlock, 0, active_stream()>>>(x, y, total, M, K, Km, seed, base, p, scale);
  TXTCLS_KERNEL_CHECK("shared_mask_dropout");
}

template void dropout<float>(const float*, float*, int64_t, uint64_t, uint64_t, double, float);
template void dropout<double>(const double*, double*, int64_t, uint64_t, uint64_t, double, double);
template void shared_mask_dropout<float>(const float*, float*, int64_t, int64_t, int64_t, int64_t, uint64_t, uint64_t,
                                         double, float);
template void shared_mask_dropout<double>(const double*, double*, int64_t, int64_t, int64_t, int64_t, uint64_t,
                                          uint64_t, double, double);

}  // namespace txtcls::cuda
