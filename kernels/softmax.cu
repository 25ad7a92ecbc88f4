// softmax / log_softmax over one dim of a contiguous [outer, n, inner] tensor, forward and
// backward.
//   inner == 1  rows that fit in registers (n <= 8192) are read once: a warp per row up to 512
//               elements (several rows per block), a block of 256 threads per row beyond; the
//               max, then the sum of exp, are reduced over the group; exp is computed once per
//               element and the row written once. Longer rows: one block per row, each thread
//               folds its strided share into a running (max, sum of exp) pair, pairs are merged
//               by warp shuffles and shared memory, then the row is written in a second sweep;
//   inner > 1   one thread per column (adjacent threads read adjacent addresses), a loop over n.
#include <cmath>
#include <cstdint>

#include "launch.cuh"
#include "txtcls/cuda/softmax.hpp"

namespace txtcls::cuda {
namespace {

template <class T> __device__ __forceinline__ T neg_inf() { return -INFINITY; }

// Running max m and sum s of exp(x - m); `nan` records a NaN seen anywhere.
template <class T> struct MaxSum {
  T m, s;
  bool nan;
};

template <class T> __device__ __forceinline__ MaxSum<T> add_value(MaxSum<T> a, T x) {
  if (x != x) {
    a.nan = true;
    return a;
  }
  if (x == neg_inf<T>()) return a;
  if (x > a.m) {
    a.s = a.s * exp(a.m - x) + T(1);  // a.m == -inf gives exp(-inf) = 0: fine
    a.m = x;
  } else {
    a.s += exp(x - a.m);
  }
  return a;
}

template <class T> __device__ __forceinline__ MaxSum<T> merge(MaxSum<T> a, MaxSum<T> b) {
  MaxSum<T> r;
  r.nan = a.nan || b.nan;
  r.m = max(a.m, b.m);
  r.s = (a.m == neg_inf<T>() ? T(0) : a.s * exp(a.m - r.m)) + (b.m == neg_inf<T>() ? T(0) : b.s * exp(b.m - r.m));
  return r;
}

template <class T> __device__ MaxSum<T> block_merge(MaxSum<T> v) {
  __shared__ T sm[32], ss[32];
  __shared__ bool sn[32];
  for (int o = 16; o > 0; o >>= 1) {
    MaxSum<T> w{__shfl_xor_sync(0xffffffffu, v.m, o), __shfl_xor_sync(0xffffffffu, v.s, o),
                static_cast<bool>(__shfl_xor_sync(0xffffffffu, static_cast<int>(v.nan), o))};
    v = merge(v, w);
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  if (lane == 0) sm[warp] = v.m, ss[warp] = v.s, sn[warp] = v.nan;
  __syncthreads();
  MaxSum<T> r{neg_inf<T>(), T(0), false};
  for (int w = 0; w < warps; ++w) r = merge(r, MaxSum<T>{sm[w], ss[w], sn[w]});  // same order in every thread
  return r;
}

template <class T>
__device__ __forceinline__ T output(T x, const MaxSum<T>& r, bool log) {
  const T nan = T(NAN);
  if (r.nan) return nan;
  if (r.m == neg_inf<T>()) return log ? neg_inf<T>() : T(0);  // empty row
  if (log) return x - r.m - ::log(r.s);
  return x == neg_inf<T>() ? T(0) : exp(x - r.m) / r.s;
}

template <class T>
__global__ void softmax_rows(const T* __restrict__ x, T* __restrict__ y, int64_t n, bool log) {
  const T* xr = x + blockIdx.x * n;
  T* yr = y + blockIdx.x * n;
  MaxSum<T> v{neg_inf<T>(), T(0), false};
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) v = add_value(v, xr[j]);
  const MaxSum<T> r = block_merge(v);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] = output(xr[j], r, log);
}

// Max / sum over a group of threads (a warp, or the whole block), the same value in every thread:
// warp shuffles, then, for a block, the warps' results combined in warp order from shared memory.
struct MaxOp {
  template <class T> __device__ T operator()(T a, T b) const { return a > b ? a : b; }
};
struct SumOp {
  template <class T> __device__ T operator()(T a, T b) const { return a + b; }
};
template <bool kWarp, class T, class Op> __device__ T group_reduce(T v, Op op, T* scratch) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (kWarp) return v;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T r = scratch[0];
  for (int w = 1; w < warps; ++w) r = op(r, scratch[w]);
  __syncthreads();  // scratch free for the next reduction
  return r;
}
template <bool kWarp> __device__ bool group_any(bool b) {
  return kWarp ? __any_sync(0xffffffffu, b) : __syncthreads_or(b);
}

// A row held in registers: V elements per thread, G threads per row (32 for a warp, blockDim.x
// for a block), element j of the row in thread j % G, slot j / G. Same results as `output` of
// the online kernel: NaN anywhere gives a NaN row, an all -inf row is empty.
template <class T, int V, bool kWarp>
__global__ void softmax_rows_cached(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t n, bool log) {
  __shared__ T scratch[32];
  const int G = kWarp ? 32 : blockDim.x, t = kWarp ? threadIdx.x % 32 : threadIdx.x;
  const int64_t row = kWarp ? blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32 : blockIdx.x;
  if (row >= rows) return;  // a whole warp (one row) leaves together; blocks have one row each
  const T* xr = x + row * n;
  T* yr = y + row * n;
  T v[V];
  T m = neg_inf<T>();
  bool nan = false;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const int64_t j = t + int64_t(i) * G;
    v[i] = j < n ? xr[j] : neg_inf<T>();
    nan |= v[i] != v[i];
    m = v[i] > m ? v[i] : m;  // NaN never compares greater
  }
  m = group_reduce<kWarp>(m, MaxOp{}, scratch);
  nan = group_any<kWarp>(nan);
  T s = T(0);
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const T e = (v[i] == neg_inf<T>() || m == neg_inf<T>()) ? T(0) : exp(v[i] - m);
    s += v[i] == m ? T(1) : e;  // as the online fold: a +inf maximum counts 1 (its own output is NaN)
    if (!log) v[i] = e;
  }
  s = group_reduce<kWarp>(s, SumOp{}, scratch);
  const T ls = log ? ::log(s) : T(0);
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const int64_t j = t + int64_t(i) * G;
    if (j >= n) break;
    T out;
    if (nan) out = T(NAN);
    else if (m == neg_inf<T>()) out = log ? neg_inf<T>() : T(0);  // empty row
    else out = log ? v[i] - m - ls : v[i] / s;
    yr[j] = out;
  }
}

// Launches the cached kernel with the smallest V that holds a row; false when n is too long.
template <class T>
bool launch_rows_cached(const T* x, T* y, int64_t rows, int64_t n, bool log, cudaStream_t stream) {
  constexpr int kRowsPerBlock = kBlock / 32;
  const unsigned warp_grid = static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
  const unsigned block_grid = static_cast<unsigned>(rows);
#define TXTCLS_SOFTMAX_CACHED(V, WARP, GRID)                                    \
  do {                                                                          \
    softmax_rows_cached<T, V, WARP><<<GRID, kBlock, 0, stream>>>(x, y, rows, n, log); \
    TXTCLS_KERNEL_CHECK("softmax_rows_cached");                                 \
    return true;                                                                \
  } while (0)
  if (n <= 32) TXTCLS_SOFTMAX_CACHED(1, true, warp_grid);
  if (n <= 64) TXTCLS_SOFTMAX_CACHED(2, true, warp_grid);
  if (n <= 128) TXTCLS_SOFTMAX_CACHED(4, true, warp_grid);
  if (n <= 256) TXTCLS_SOFTMAX_CACHED(8, true, warp_grid);
  if (n <= 512) TXTCLS_SOFTMAX_CACHED(16, true, warp_grid);
  if (n <= 1024) TXTCLS_SOFTMAX_CACHED(4, false, block_grid);
  if (n <= 2048) TXTCLS_SOFTMAX_CACHED(8, false, block_grid);
  if (n <= 4096) TXTCLS_SOFTMAX_CACHED(16, false, block_grid);
  if (n <= 8192) TXTCLS_SOFTMAX_CACHED(32, false, block_grid);
#undef TXTCLS_SOFTMAX_CACHED
  return false;
}

template <class T>
__global__ void softmax_columns(const T* __restrict__ x, T* __restrict__ y, int64_t outer, int64_t n, int64_t inner,
                                bool log) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < outer * inner; c += int64_t(gridDim.x) * blockDim.x) {
    const int64_t base = (c / inner) * n * inner + c % inner;
    MaxSum<T> v{neg_inf<T>(), T(0), false};
    for (int64_t j = 0; j < n; ++j) v = add_value(v, x[base + j * inner]);
    for (int64_t j = 0; j < n; ++j) y[base + j * inner] = output(x[base + j * inner], v, log);
  }
}

// softmax: gx = y (g - sum g y); log_softmax: gx = g - exp(y) sum g, 0 on an empty row.
template <class T>
__global__ void softmax_backward_rows(const T* __restrict__ g, const T* __restrict__ y, T* __restrict__ gx, int64_t n,
                                      bool log) {
  const int64_t off = blockIdx.x * n;
  T acc = T(0);
  bool live = false;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    acc += log ? g[off + j] : g[off + j] * y[off + j];
    live |= y[off + j] != neg_inf<T>();
  }
  __shared__ T scratch[32];
  const T total = group_reduce<false>(acc, SumOp{}, scratch);
  const bool any_live = __syncthreads_or(live);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const T yj = y[off + j], gj = g[off + j];
    gx[off + j] = log ? (any_live ? gj - exp(yj) * total : T(0)) : yj * (gj - total);
  }
}

template <class T>
__global__ void softmax_backward_columns(const T* __restrict__ g, const T* __restrict__ y, T* __restrict__ gx,
                                         int64_t outer, int64_t n, int64_t inner, bool log) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < outer * inner; c += int64_t(gridDim.x) * blockDim.x) {
    const int64_t base = (c / inner) * n * inner + c % inner;
    T total = T(0);
    bool live = false;
    for (int64_t j = 0; j < n; ++j) {
      const int64_t i = base + j * inner;
      total += log ? g[i] : g[i] * y[i];
      live |= y[i] != neg_inf<T>();
    }
    for (int64_t j = 0; j < n; ++j) {
      const int64_t i = base + j * inner;
      gx[i] = log ? (live ? g[i] - exp(y[i]) * total : T(0)) : y[i] * (g[i] - total);
    }
  }
}

// Threads per row block: a warp multiple, at most 1024, about one thread per 4 elements.
int row_threads(int64_t n) {
  int t = 32;
  while (t < 1024 && t * 4 < n) t *= 2;
  return t;
}

}  // namespace

template <class T>
void softmax_forward(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool log) {
  if (outer * n * inner == 0) return;
  cudaStream_t stream = active_stream();
  if (inner == 1) {
    TXTCLS_CHECK(outer < (int64_t(1) << 31), "softmax: ", outer, " rows is more than one launch takes");
    if (launch_rows_cached(x, y, outer, n, log, stream)) return;
    softmax_rows<T><<<static_cast<unsigned>(outer), row_threads(n), 0, stream>>>(x, y, n, log);
    TXTCLS_KERNEL_CHECK("softmax_rows");
  } else {
    softmax_columns<T><<<grid_for(outer * inner), kBlock, 0, stream>>>(x, y, outer, n, inner, log);
    TXTCLS_KERNEL_CHECK("softmax_columns");
  }
}

template <class T>
void softmax_backward(const T* g, const T* y, T* gx, int64_t outer, int64_t n, int64_t inner, bool log) {
  if (outer * n * inner == 0) return;
  cudaStream_t stream = active_stream();
  if (inner == 1) {
    TXTCLS_CHECK(outer < (int64_t(1) << 31), "softmax: ", outer, " rows is more than one launch takes");
    softmax_backward_rows<T><<<static_cast<unsigned>(outer), row_threads(n), 0, stream>>>(g, y, gx, n, log);
    TXTCLS_KERNEL_CHECK("softmax_backward_rows");
  } else {
    softmax_backward_columns<T><<<grid_for(outer * inner), kBlock, 0, stream>>>(g, y, gx, outer, n, inner, log);
    TXTCLS_KERNEL_CHECK("softmax_backward_columns");
  }
}

template void softmax_forward<float>(const float*, float*, int64_t, int64_t, int64_t, bool);
template void softmax_forward<double>(const double*, double*, int64_t, int64_t, int64_t, bool);
template void softmax_backward<float>(const float*, const float*, float*, int64_t, int64_t, int64_t, bool);
template void softmax_backward<double>(const double*, const double*, double*, int64_t, int64_t, int64_t, bool);

}  // namespace txtcls::cuda
