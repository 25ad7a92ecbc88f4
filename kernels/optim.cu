// SGD on GPU parameters (the arithmetic of train::SgdStepMath, shared with the CPU loop) and the
// pieces of clip_grad_norm: per-chunk partial norms in double with a fixed reduction tree, one
// ordered final sum that also computes the clipping coefficient on the device, and the scaling,
// which reads that coefficient from device memory, so the host waits only to return the norm.
#include <cmath>
#include <cstdint>

#include "launch.cuh"
#include "txtcls/cuda/optim.hpp"

namespace txtcls::cuda {
namespace {

template <class T>
__global__ void sgd_kernel(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ b, int64_t n,
                           train::SgdStepMath<T> f) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    if (b) f.momentum(p[i], g[i], b[i]);
    else f.plain(p[i], g[i]);
  }
}

__device__ __forceinline__ double norm_term(double a, double p) {
  return p == 2.0 ? a * a : p == 1.0 ? a : pow(a, p);
}

// Block c sums chunk c: each thread a strided share, then a shared-memory tree (fixed order).
template <class T>
__global__ void norm_partials_kernel(const T* __restrict__ x, int64_t n, double p, double* __restrict__ partials) {
  __shared__ double part[kBlock];
  const bool inf = isinf(p);
  const int64_t start = blockIdx.x * kNormChunk, end = min(n, start + kNormChunk);
  double acc = 0;
  for (int64_t i = start + threadIdx.x; i < end; i += blockDim.x) {
    const double a = fabs(static_cast<double>(x[i]));
    acc = inf ? fmax(acc, a) : acc + norm_term(a, p);
  }
  part[threadIdx.x] = acc;
  __syncthreads();
  for (int w = kBlock / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) {
      const double o = part[threadIdx.x + w];
      part[threadIdx.x] = inf ? fmax(part[threadIdx.x], o) : part[threadIdx.x] + o;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[blockIdx.x] = part[0];
}

__global__ void norm_finish_kernel(const double* __restrict__ partials, int64_t count, double p, double max_norm,
                                   double* __restrict__ out) {
  const bool inf = isinf(p);
  double acc = 0;
  for (int64_t c = 0; c < count; ++c) acc = inf ? fmax(acc, partials[c]) : acc + partials[c];
  const double total = inf ? acc : p == 2.0 ? sqrt(acc) : p == 1.0 ? acc : pow(acc, 1.0 / p);
  out[0] = total;
  out[1] = max_norm / (total + 1e-6);
}

template <class T>
__global__ void scale_kernel(T* __restrict__ x, int64_t n, const double* __restrict__ coef) {
  const double c = *coef;
  if (c >= 1.0) return;  // a NaN coefficient scales, as on the CPU
  const T s = static_cast<T>(c);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] *= s;
}

}  // namespace

template <class T>
void sgd_step(T* p, const T* g, T* b, int64_t n, const train::SgdStepMath<T>& f) {
  if (n == 0) return;
  sgd_kernel<T><<<grid_for(n), kBlock, 0, active_stream()>>>(p, g, b, n, f);
  TXTCLS_KERNEL_CHECK("sgd_step");
}

template <class T>
void norm_partials(const T* x, int64_t n, double p, double* partials) {
  const int64_t chunks = norm_chunks(n);
  if (chunks == 0) return;
  TXTCLS_CHECK(chunks < (int64_t(1) << 31), "clip_grad_norm: a gradient of ", n, " elements is too large");
  norm_partials_kernel<T><<<static_cast<unsigned>(chunks), kBlock, 0, active_stream()>>>(x, n, p, partials);
  TXTCLS_KERNEL_CHECK("norm_partials");
}

void norm_finish(const double* partials, int64_t count, double p, double max_norm, double* out) {
  norm_finish_kernel<<<1, 1, 0, active_stream()>>>(partials, count, p, max_norm, out);
  TXTCLS_KERNEL_CHECK("norm_finish");
}

template <class T>
void scale_unless_one(T* x, int64_t n, const double* coef) {
  if (n == 0) return;
  scale_kernel<T><<<grid_for(n), kBlock, 0, active_stream()>>>(x, n, coef);
  TXTCLS_KERNEL_CHECK("scale_unless_one");
}

#define TXTCLS_OPTIM(T)                                                                         \
  template void sgd_step<T>(T*, const T*, T*, int64_t, const train::SgdStepMath<T>&);           \
  template void norm_partials<T>(const T*, int64_t, double, double*);                           \
  template void scale_unless_one<T>(T*, int64_t, const double*);
TXTCLS_OPTIM(float)
TXTCLS_OPTIM(double)

}  // namespace txtcls::cuda
