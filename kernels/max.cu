// Extremes along one dim with their first index (max, min, argmax, argmin) and the backward that
// routes each gradient to its winner. The comparison is ops/max.hpp's `beats`: strictly better,
// or a NaN over a number, so scanning in index order keeps the first extreme (and the first NaN).
//
// Two layouts of x = [outer, n, inner]: with inner > 1 one thread owns an (o, i) output and walks
// j, consecutive threads on consecutive i (coalesced). With inner == 1 (logits [B, C] reduced
// over the classes) a long row would be one thread's serial walk, so a warp takes each row: lane
// l scans j = l, l + 32, ... and the 32 partial winners are merged by index, which gives the
// same first extreme as the serial scan.
#include <cstdint>

#include "launch.cuh"
#include "txtcls/cuda/max.hpp"

namespace txtcls::cuda {
namespace {

template <class T>
__device__ __forceinline__ bool beats(T v, T best, bool is_max) {
  const bool better = is_max ? (v > best) : (v < best);
  return better || (v != v && best == best);
}

template <class T>
__global__ void extreme_columns(const T* __restrict__ x, int64_t outer, int64_t n, int64_t inner, bool is_max,
                                T* __restrict__ vals, int64_t* __restrict__ idx) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < outer * inner;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = e / inner, i = e % inner;
    const T* p = x + o * n * inner + i;
    T best = p[0];
    int64_t at = 0;
    for (int64_t j = 1; j < n; ++j) {
      const T v = p[j * inner];
      if (beats(v, best, is_max)) best = v, at = j;
    }
    vals[e] = best;
    idx[e] = at;
  }
}

// One warp per row of x [outer, n] (inner == 1).
template <class T>
__global__ void extreme_rows(const T* __restrict__ x, int64_t outer, int64_t n, bool is_max, T* __restrict__ vals,
                             int64_t* __restrict__ idx) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t o = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32; o < outer; o += warps) {
    const T* row = x + o * n;
    T best = T(0);
    int64_t at = -1;  // -1: this lane has seen nothing (n < 32)
    for (int64_t j = lane; j < n; j += 32) {
      const T v = row[j];
      if (at < 0 || beats(v, best, is_max)) best = v, at = j;
    }
    // Merge: the other candidate wins if it beats ours, or ties (neither beats) at a lower index.
    for (int off = 16; off > 0; off /= 2) {
      const T ov = __shfl_down_sync(0xffffffffu, best, off);
      const int64_t oa = __shfl_down_sync(0xffffffffu, at, off);
      if (oa < 0) continue;
      if (at < 0 || beats(ov, best, is_max) || (!beats(best, ov, is_max) && oa < at)) best = ov, at = oa;
    }
    if (lane == 0) {
      vals[o] = best;
      idx[o] = at;
    }
  }
}

template <class T>
__global__ void scatter_winners_kernel(const T* __restrict__ g, const int64_t* __restrict__ idx, T* __restrict__ gx,
                                       int64_t outer, int64_t n, int64_t inner) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < outer * n * inner;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e % inner, j = (e / inner) % n, o = e / (inner * n);
    gx[e] = idx[o * inner + i] == j ? g[o * inner + i] : T(0);
  }
}

}  // namespace

template <class T>
void arg_extreme(const T* x, int64_t outer, int64_t n, int64_t inner, bool is_max, T* vals, int64_t* idx) {
  if (outer * inner == 0) return;
  cudaStream_t stream = active_stream();
  if (inner == 1 && n >= 64) {
    constexpr int kWarps = kBlock / 32;
    extreme_rows<T><<<grid_for(outer, kWarps), kBlock, 0, stream>>>(x, outer, n, is_max, vals, idx);
    TXTCLS_KERNEL_CHECK("extreme_rows");
    return;
  }
  extreme_columns<T><<<grid_for(outer * inner), kBlock, 0, stream>>>(x, outer, n, inner, is_max, vals, idx);
  TXTCLS_KERNEL_CHECK("extreme_columns");
}

template <class T>
void scatter_to_winners(const T* g, const int64_t* idx, T* gx, int64_t outer, int64_t n, int64_t inner) {
  if (outer * n * inner == 0) return;
  scatter_winners_kernel<T><<<grid_for(outer * n * inner), kBlock, 0, active_stream()>>>(g, idx, gx, outer, n, inner);
  TXTCLS_KERNEL_CHECK("scatter_to_winners");
}

#define TXTCLS_MAX(T)                                                                                   \
  template void arg_extreme<T>(const T*, int64_t, int64_t, int64_t, bool, T*, int64_t*);                \
  template void scatter_to_winners<T>(const T*, const int64_t*, T*, int64_t, int64_t, int64_t);
TXTCLS_MAX(float)
TXTCLS_MAX(double)

}  // namespace txtcls::cuda
