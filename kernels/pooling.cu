// Max and mean pooling over time with per-sequence lengths, forward and backward. One thread per
// (b, d) output walks t < len[b]; consecutive threads take consecutive d, so reads coalesce when
// the feature dim is the unit-stride one (the usual [B, T, D] layout). The max follows
// ops/max.hpp: the first maximum wins, and a NaN beats every number.
#include <cstdint>

#include "launch.cuh"
#include "txtcls/cuda/gather.hpp"

namespace txtcls::cuda {
namespace {

template <class T>
__global__ void max_pool_kernel(const T* __restrict__ x, int64_t B, int64_t D, int64_t sb, int64_t st, int64_t sd,
                                const int64_t* __restrict__ len, T* __restrict__ out, int64_t* __restrict__ arg) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < B * D; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = e / D, d = e % D;
    const T* p = x + b * sb + d * sd;
    T best = p[0];
    int64_t at = 0;
    for (int64_t t = 1; t < len[b]; ++t) {
      const T v = p[t * st];
      if (v > best || (v != v && best == best)) best = v, at = t;
    }
    out[e] = best;
    arg[e] = at;
  }
}

template <class T>
__global__ void max_pool_backward_kernel(const T* __restrict__ g, const int64_t* __restrict__ arg, T* __restrict__ gx,
                                         int64_t B, int64_t Tn, int64_t D) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < B * Tn * D; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t d = e % D, t = (e / D) % Tn, b = e / (D * Tn);
    gx[e] = arg[b * D + d] == t ? g[b * D + d] : T(0);
  }
}

template <class T>
__global__ void mean_pool_kernel(const T* __restrict__ x, int64_t B, int64_t D, int64_t sb, int64_t st, int64_t sd,
                                 const int64_t* __restrict__ len, T* __restrict__ out) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < B * D; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = e / D, d = e % D;
    const T* p = x + b * sb + d * sd;
    T acc = T(0);
    for (int64_t t = 0; t < len[b]; ++t) acc += p[t * st];
    out[e] = acc / static_cast<T>(len[b]);
  }
}

template <class T>
__global__ void mean_pool_backward_kernel(const T* __restrict__ g, const int64_t* __restrict__ len, T* __restrict__ gx,
                                          int64_t B, int64_t Tn, int64_t D) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < B * Tn * D; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t d = e % D, t = (e / D) % Tn, b = e / (D * Tn);
    gx[e] = t < len[b] ? g[b * D + d] * (T(1) / static_cast<T>(len[b])) : T(0);
  }
}

}  // namespace

template <class T>
void max_pool_time(const T* x, int64_t B, int64_t D, int64_t sb, int64_t st, int64_t sd, const int64_t* len, T* out,
                   int64_t* arg) {
  if (B * D == 0) return;
  max_pool_kernel<T><<<grid_for(B * D), kBlock, 0, active_stream()>>>(x, B, D, sb, st, sd, len, out, arg);
  TXTCLS_KERNEL_CHECK("max_pool_time");
}

template <class T>
void max_pool_time_backward(const T* g, const int64_t* arg, T* gx, int64_t B, int64_t Tn, int64_t D) {
  if (B * Tn * D == 0) return;
  max_pool_backward_kernel<T><<<grid_for(B * Tn * D), kBlock, 0, active_stream()>>>(g, arg, gx, B, Tn, D);
  TXTCLS_KERNEL_CHECK("max_pool_time_backward");
}

template <class T>
void mean_pool_time(const T* x, int64_t B, int64_t D, int64_t sb, int64_t st, int64_t sd, const int64_t* len, T* out) {
  if (B * D == 0) return;
  mean_pool_kernel<T><<<grid_for(B * D), kBlock, 0, active_stream()>>>(x, B, D, sb, st, sd, len, out);
  TXTCLS_KERNEL_CHECK("mean_pool_time");
}

template <class T>
void mean_pool_time_backward(const T* g, const int64_t* len, T* gx, int64_t B, int64_t Tn, int64_t D) {
  if (B * Tn * D == 0) return;
  mean_pool_backward_kernel<T><<<grid_for(B * Tn * D), kBlock, 0, active_stream()>>>(g, len, gx, B, Tn, D);
  TXTCLS_KERNEL_CHECK("mean_pool_time_backward");
}

#define TXTCLS_POOL(T)                                                                                              \
  template void max_pool_time<T>(const T*, int64_t, int64_t, int64_t, int64_t, int64_t, const int64_t*, T*, int64_t*); \
  template void max_pool_time_backward<T>(const T*, const int64_t*, T*, int64_t, int64_t, int64_t);                   \
  template void mean_pool_time<T>(const T*, int64_t, int64_t, int64_t, int64_t, int64_t, const int64_t*, T*);         \
  template void mean_pool_time_backward<T>(const T*, const int64_t*, T*, int64_t, int64_t, int64_t);
TXTCLS_POOL(float)
TXTCLS_POOL(double)

}  // namespace txtcls::cuda
