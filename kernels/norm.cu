// layer_norm and rms_norm over the last dim. Forward: one block per row, one pass over the row
// for the statistics (Welford's running mean and M2 per thread, merged across the warp and the
// block; for rms the sum of squares), a second to write y. Backward: per-row block reductions
// for gx; the weight and bias gradients as column sums over a fixed number of row partitions
// (partials, then one ordered sum), so no atomics and reproducible results.
#include <cmath>
#include <cstdint>

#include "launch.cuh"
#include "txtcls/cuda/norm.hpp"
#include "txtcls/tensor/storage.hpp"

namespace txtcls::cuda {
namespace {

constexpr int64_t kPartitions = 64;

template <class T> struct Welford {
  T n, mean, m2;
};

template <class T> __device__ __forceinline__ Welford<T> merge(Welford<T> a, Welford<T> b) {
  const T n = a.n + b.n;
  if (n == T(0)) return a;
  const T d = b.mean - a.mean, wb = b.n / n;
  return {n, a.mean + d * wb, a.m2 + b.m2 + d * d * a.n * wb};
}

template <class T> __device__ Welford<T> block_welford(Welford<T> v) {
  __shared__ T sn[32], sm[32], s2[32];
  for (int o = 16; o > 0; o >>= 1)
    v = merge(v, Welford<T>{__shfl_xor_sync(0xffffffffu, v.n, o), __shfl_xor_sync(0xffffffffu, v.mean, o),
                            __shfl_xor_sync(0xffffffffu, v.m2, o)});
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  if (lane == 0) sn[warp] = v.n, sm[warp] = v.mean, s2[warp] = v.m2;
  __syncthreads();
  Welford<T> r{T(0), T(0), T(0)};
  for (int w = 0; w < warps; ++w) r = merge(r, Welford<T>{sn[w], sm[w], s2[w]});
  return r;
}

// Sums of two values over the block; every thread gets both.
template <class T> __device__ void block_sum2(T& a, T& b) {
  __shared__ T sa[32], sb[32];
  for (int o = 16; o > 0; o >>= 1) {
    a += __shfl_xor_sync(0xffffffffu, a, o);
    b += __shfl_xor_sync(0xffffffffu, b, o);
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  __syncthreads();
  if (lane == 0) sa[warp] = a, sb[warp] = b;
  __syncthreads();
  a = T(0), b = T(0);
  for (int w = 0; w < warps; ++w) a += sa[w], b += sb[w];
}

template <class T>
__global__ void norm_forward_rows(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                                  T* __restrict__ y, T* __restrict__ mean, T* __restrict__ rstd, int64_t D, T eps,
                                  bool rms) {
  const T* xr = x + blockIdx.x * D;
  T* yr = y + blockIdx.x * D;
  T mu = T(0), rs;
  if (rms) {
    T ss = T(0), unused = T(0);
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) ss += xr[i] * xr[i];
    block_sum2(ss, unused);
    rs = T(1) / sqrt(ss / static_cast<T>(D) + eps);
  } else {
    Welford<T> v{T(0), T(0), T(0)};
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) v = merge(v, Welford<T>{T(1), xr[i], T(0)});
    v = block_welford(v);
    mu = v.mean;
    rs = T(1) / sqrt(v.m2 / static_cast<T>(D) + eps);
  }
  if (threadIdx.x == 0) {
    if (!rms) mean[blockIdx.x] = mu;
    rstd[blockIdx.x] = rs;
  }
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    T h = (xr[i] - mu) * rs;
    if (w) h *= w[i];
    if (b) h += b[i];
    yr[i] = h;
  }
}

template <class T>
__global__ void norm_backward_rows(const T* __restrict__ g, const T* __restrict__ x, const T* __restrict__ mean,
                                   const T* __restrict__ rstd, const T* __restrict__ w, int64_t D, T* __restrict__ gx,
                                   bool rms) {
  const int64_t r = blockIdx.x;
  const T* gr = g + r * D;
  const T* xr = x + r * D;
  const T mu = rms ? T(0) : mean[r], rs = rstd[r];
  T s1 = T(0), s2 = T(0);
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    const T gw = w ? gr[i] * w[i] : gr[i];
    s1 += gw;
    s2 += gw * (xr[i] - mu);
  }
  block_sum2(s1, s2);
  const T inv_d = T(1) / static_cast<T>(D);
  const T c1 = rms ? T(0) : s1 * inv_d, c2 = s2 * rs * rs * inv_d;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    const T gw = w ? gr[i] * w[i] : gr[i];
    gx[r * D + i] = rs * (gw - c1 - (xr[i] - mu) * c2);
  }
}

// Partial column sums of g * x_hat (pw) and g (pb) over row partition blockIdx.y.
template <class T>
__global__ void norm_param_partials(const T* __restrict__ g, const T* __restrict__ x, const T* __restrict__ mean,
                                    const T* __restrict__ rstd, int64_t rows, int64_t D, int64_t parts,
                                    T* __restrict__ pw, T* __restrict__ pb, bool rms) {
  const int64_t d = blockIdx.x * int64_t(blockDim.x) + threadIdx.x, p = blockIdx.y;
  if (d >= D) return;
  T aw = T(0), ab = T(0);
  for (int64_t r = rows * p / parts; r < rows * (p + 1) / parts; ++r) {
    const T gv = g[r * D + d];
    aw += gv * ((x[r * D + d] - (rms ? T(0) : mean[r])) * rstd[r]);
    ab += gv;
  }
  if (pw) pw[p * D + d] = aw;
  if (pb) pb[p * D + d] = ab;
}

template <class T>
__global__ void sum_partials(const T* __restrict__ partial, int64_t parts, int64_t D, T* __restrict__ out) {
  for (int64_t d = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; d < D; d += int64_t(gridDim.x) * blockDim.x) {
    T acc = T(0);
    for (int64_t p = 0; p < parts; ++p) acc += partial[p * D + d];
    out[d] = acc;
  }
}

int row_threads(int64_t D) {
  int t = 32;
  while (t < 512 && t * 4 < D) t *= 2;
  return t;
}

}  // namespace

template <class T>
void norm_forward(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t rows, int64_t D, T eps, bool rms) {
  if (rows == 0) return;
  TXTCLS_CHECK(rows < (int64_t(1) << 31), "norm: ", rows, " rows is more than one launch takes");
  norm_forward_rows<T><<<static_cast<unsigned>(rows), row_threads(D), 0, active_stream()>>>(x, w, b, y, mean, rstd, D,
                                                                                           eps, rms);
  TXTCLS_KERNEL_CHECK("norm_forward_rows");
}

template <class T>
void norm_backward(const T* g, const T* x, const T* mean, const T* rstd, const T* w, int64_t rows, int64_t D, T* gx,
                   T* gw, T* gb, bool rms) {
  cudaStream_t stream = active_stream();
  if (rows == 0) {  // the parameter gradients are zero
    if (gw) TXTCLS_CUDA_CHECK(cudaMemsetAsync(gw, 0, D * sizeof(T), stream));
    if (gb) TXTCLS_CUDA_CHECK(cudaMemsetAsync(gb, 0, D * sizeof(T), stream));
    return;
  }
  if (gx) {
    norm_backward_rows<T><<<static_cast<unsigned>(rows), row_threads(D), 0, stream>>>(g, x, mean, rstd, w, D, gx, rms);
    TXTCLS_KERNEL_CHECK("norm_backward_rows");
  }
  if (!gw && !gb) return;
  int device = 0;
  TXTCLS_CUDA_CHECK(cudaGetDevice(&device));
  const int64_t parts = std::min(rows, kPartitions);
  Storage<T> pw(gw ? static_cast<size_t>(parts * D) : 0, Device::cuda(device));
  Storage<T> pb(gb ? static_cast<size_t>(parts * D) : 0, Device::cuda(device));
  const dim3 grid(static_cast<unsigned>((D + kBlock - 1) / kBlock), static_cast<unsigned>(parts));
  norm_param_partials<T><<<grid, kBlock, 0, stream>>>(g, x, mean, rstd, rows, D, parts, gw ? pw.data() : nullptr,
                                                      gb ? pb.data() : nullptr, rms);
  TXTCLS_KERNEL_CHECK("norm_param_partials");
  if (gw) {
    sum_partials<T><<<grid_for(D), kBlock, 0, stream>>>(pw.data(), parts, D, gw);
    TXTCLS_KERNEL_CHECK("norm sum_partials");
  }
  if (gb) {
    sum_partials<T><<<grid_for(D), kBlock, 0, stream>>>(pb.data(), parts, D, gb);
    TXTCLS_KERNEL_CHECK("norm sum_partials");
  }
}

template void norm_forward<float>(const float*, const float*, const float*, float*, float*, float*, int64_t, int64_t,
                                  float, bool);
template void norm_forward<double>(const double*, const double*, const double*, double*, double*, double*, int64_t,
                                   int64_t, double, bool);
template void norm_backward<float>(const float*, const float*, const float*, const float*, const float*, int64_t,
                                   int64_t, float*, float*, float*, bool);
template void norm_backward<double>(const double*, const double*, const double*, const double*, const double*,
                                    int64_t, int64_t, double*, double*, double*, bool);

}  // namespace txtcls::cuda
