// Embedding lookup and its deterministic backward. The forward copies rows (one thread per
// element, consecutive threads on consecutive columns). The backward never uses atomics: the
// host sorts the positions by id into segments (ops/embedding.hpp), and each (segment, column
// block) is summed by one thread in position order, so the gradient is bitwise reproducible.
// Rows of ids that do not occur are written as zeros by the same launch.
#include <cstdint>

#include "launch.cuh"
#include "txtcls/cuda/gather.hpp"

namespace txtcls::cuda {
namespace {

template <class T>
__global__ void gather_rows(const T* __restrict__ w, const int64_t* __restrict__ ids, T* __restrict__ out, int64_t n,
                            int64_t D) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n * D; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / D, j = e % D;
    out[e] = w[ids[i] * D + j];
  }
}

template <class T>
__global__ void zero_rows(T* gw, int64_t count) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < count; e += int64_t(gridDim.x) * blockDim.x)
    gw[e] = T(0);
}

// Thread (segment s, column j): gw[id_s, j] = sum over the segment's positions of g[pos, j].
template <class T>
__global__ void sum_segments(const T* __restrict__ g, const int64_t* __restrict__ order,
                             const int64_t* __restrict__ seg_start, const int64_t* __restrict__ seg_id, int64_t segments,
                             T* __restrict__ gw, int64_t D) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < segments * D; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t s = e / D, j = e % D;
    T acc = T(0);
    for (int64_t k = seg_start[s]; k < seg_start[s + 1]; ++k) acc += g[order[k] * D + j];
    gw[seg_id[s] * D + j] = acc;
  }
}

}  // namespace

template <class T>
void embedding_forward(const T* w, const int64_t* ids, T* out, int64_t n, int64_t D) {
  if (n * D == 0) return;
  gather_rows<T><<<grid_for(n * D), kBlock, 0, active_stream()>>>(w, ids, out, n, D);
  TXTCLS_KERNEL_CHECK("embedding gather_rows");
}

template <class T>
void embedding_backward(const T* g, const int64_t* order, const int64_t* seg_start, const int64_t* seg_id,
                        int64_t segments, T* gw, int64_t V, int64_t D) {
  if (V * D == 0) return;
  cudaStream_t stream = active_stream();
  zero_rows<T><<<grid_for(V * D), kBlock, 0, stream>>>(gw, V * D);
  TXTCLS_KERNEL_CHECK("embedding zero_rows");
  if (segments == 0) return;
  sum_segments<T><<<grid_for(segments * D), kBlock, 0, stream>>>(g, order, seg_start, seg_id, segments, gw, D);
  TXTCLS_KERNEL_CHECK("embedding sum_segments");
}

template void embedding_forward<float>(const float*, const int64_t*, float*, int64_t, int64_t);
template void embedding_forward<double>(const double*, const int64_t*, double*, int64_t, int64_t);
template void embedding_backward<float>(const float*, const int64_t*, const int64_t*, const int64_t*, int64_t, float*,
                                        int64_t, int64_t);
template void embedding_backward<double>(const double*, const int64_t*, const int64_t*, const int64_t*, int64_t,
                                         double*, int64_t, int64_t);

}  // namespace txtcls::cuda
