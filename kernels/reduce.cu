// Sum reductions over any set of dims: K outputs, each the sum of R elements reached through
// the `kept` and `reduced` geometries (see txtcls/cuda/elementwise.hpp). Four shapes of work:
//   kept dims innermost         column sums (bias gradients, sums over leading dims): adjacent
//                               threads take adjacent outputs, so every row is read coalesced;
//                               the reduced rows are cut into chunks across blocks (grid y),
//                               whose partials a second launch sums per output in chunk order;
//   many outputs, short rows    one thread per output, a sequential loop;
//   few outputs, long rows      one block per output: a strided loop per thread, then warp
//                               shuffles and one shared-memory step;
//   very long rows              two passes: blocks sum fixed chunks into partials, a second
//                               launch sums each output's partials in order.
// A single reduced dim (after merging, the common case) is addressed without a division: the
// 64-bit div/mod of the general walk costs more than the memory access it addresses.
// No atomics: the order of additions depends on the shapes only, so results are reproducible.
#include <cstdint>

#include "launch.cuh"
#include "txtcls/cuda/elementwise.hpp"
#include "txtcls/tensor/storage.hpp"

namespace txtcls::cuda {
namespace {

__device__ __forceinline__ int64_t offset_of(int64_t i, const Geometry& g, int operand) {
  int64_t off = 0;
  for (int d = g.nd - 1; d >= 0; --d) {
    off += (i % g.size[d]) * g.stride[operand][d];
    i /= g.size[d];
  }
  return off;
}

__device__ __forceinline__ int64_t reduced_offset(int64_t r, const Geometry& g) {
  return g.nd == 1 ? r * g.stride[0][0] : offset_of(r, g, 0);
}

// Output k (thread) over rows [c * chunk, (c + 1) * chunk) of its column (c = blockIdx.y), into
// partial[k * chunks + c]; with one chunk the partial is the output itself.
template <class T>
__global__ void sum_columns(const T* __restrict__ x, T* __restrict__ partial, Geometry kept, Geometry red,
                            int64_t chunk, int64_t chunks) {
  const int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x, c = blockIdx.y;
  if (k >= kept.numel) return;
  const T* base = x + offset_of(k, kept, 1);
  const int64_t lo = c * chunk, hi = min(red.numel, lo + chunk);
  T acc = T(0);
  for (int64_t r = lo; r < hi; ++r) acc += base[reduced_offset(r, red)];
  partial[k * chunks + c] = acc;
}

template <class T>
__global__ void sum_per_thread(const T* __restrict__ x, T* __restrict__ out, Geometry kept, Geometry red) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < kept.numel; k += int64_t(gridDim.x) * blockDim.x) {
    const T* base = x + offset_of(k, kept, 1);
    T acc = T(0);
    for (int64_t r = 0; r < red.numel; ++r) acc += base[reduced_offset(r, red)];
    out[k] = acc;
  }
}

template <class T>
__device__ T block_sum(T v) {
  __shared__ T warp_sums[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = threadIdx.x < blockDim.x / 32 ? warp_sums[lane] : T(0);
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;  // valid in thread 0
}

// Block (k, c) sums chunk c (elements [c * chunk, (c + 1) * chunk)) of output k's row into
// partial[k * chunks + c]; with one chunk the partial is the output itself.
template <class T>
__global__ void sum_per_block(const T* __restrict__ x, T* __restrict__ partial, Geometry kept, Geometry red,
                              int64_t chunk, int64_t chunks) {
  const int64_t k = blockIdx.x / chunks, c = blockIdx.x % chunks;
  const T* base = x + offset_of(k, kept, 1);
  const int64_t lo = c * chunk, hi = min(red.numel, lo + chunk);
  T acc = T(0);
  for (int64_t r = lo + threadIdx.x; r < hi; r += blockDim.x) acc += base[reduced_offset(r, red)];
  acc = block_sum(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

template <class T>
__global__ void sum_partials(const T* __restrict__ partial, T* __restrict__ out, int64_t K, int64_t chunks) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < K; k += int64_t(gridDim.x) * blockDim.x) {
    T acc = T(0);
    for (int64_t c = 0; c < chunks; ++c) acc += partial[k * chunks + c];
    out[k] = acc;
  }
}

}  // namespace

template <class T>
void sum(const T* x, T* out, const Geometry& kept, const Geometry& red) {
  TXTCLS_CHECK(kept.operands == 2 && red.operands == 1, "sum: kept geometry needs 2 operands (out, x), reduced 1");
  const int64_t K = kept.numel, R = red.numel;
  if (K == 0) return;
  cudaStream_t stream = active_stream();
  int device = 0;
  TXTCLS_CUDA_CHECK(cudaGetDevice(&device));
  const int sms = multiprocessor_count();
  // Kept dims innermost in x: column sums, the rows split into chunks until there are about
  // eight blocks per multiprocessor (each chunk at least 32 rows).
  if (kept.nd >= 1 && kept.stride[1][kept.nd - 1] == 1 && R > 1) {
    const int64_t col_blocks = (K + kBlock - 1) / kBlock;
    int64_t chunks = 1;
    while (col_blocks * chunks < int64_t(sms) * 8 && R / (chunks * 2) >= 32 && chunks < 4096) chunks *= 2;
    const int64_t chunk = (R + chunks - 1) / chunks;
    TXTCLS_CHECK(col_blocks < (int64_t(1) << 31), "sum: ", K, " outputs is too many blocks for one launch");
    const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(chunks));
    if (chunks == 1) {
      sum_columns<T><<<grid, kBlock, 0, stream>>>(x, out, kept, red, chunk, 1);
      TXTCLS_KERNEL_CHECK("sum_columns");
      return;
    }
    Storage<T> partial(static_cast<size_t>(K * chunks), Device::cuda(device));
    sum_columns<T><<<grid, kBlock, 0, stream>>>(x, partial.data(), kept, red, chunk, chunks);
    TXTCLS_KERNEL_CHECK("sum_columns");
    sum_partials<T><<<grid_for(K), kBlock, 0, stream>>>(partial.data(), out, K, chunks);
    TXTCLS_KERNEL_CHECK("sum_partials");
    return;
  }
  // One thread per output when there are enough outputs to fill the device or rows are short.
  if (R <= 32 || K >= int64_t(sms) * 2048) {
    sum_per_thread<T><<<grid_for(K), kBlock, 0, stream>>>(x, out, kept, red);
    TXTCLS_KERNEL_CHECK("sum_per_thread");
    return;
  }
  // Otherwise blocks of kBlock threads, each on a chunk of at least 8 elements per thread; rows
  // are split into chunks until there are about four blocks per SM.
  const int64_t min_chunk = int64_t(kBlock) * 8;
  int64_t chunks = 1;
  while (K * chunks < int64_t(sms) * 4 && R / (chunks * 2) >= min_chunk) chunks *= 2;
  const int64_t chunk = (R + chunks - 1) / chunks;
  TXTCLS_CHECK(K * chunks < (int64_t(1) << 31), "sum: ", K, " outputs is too many blocks for one launch");
  if (chunks == 1) {
    sum_per_block<T><<<static_cast<unsigned>(K), kBlock, 0, stream>>>(x, out, kept, red, chunk, 1);
    TXTCLS_KERNEL_CHECK("sum_per_block");
    return;
  }
  Storage<T> partial(static_cast<size_t>(K * chunks), Device::cuda(device));
  sum_per_block<T><<<static_cast<unsigned>(K * chunks), kBlock, 0, stream>>>(x, partial.data(), kept, red, chunk, chunks);
  TXTCLS_KERNEL_CHECK("sum_per_block");
  sum_partials<T><<<grid_for(K), kBlock, 0, stream>>>(partial.data(), out, K, chunks);
  TXTCLS_KERNEL_CHECK("sum_partials");
}

template void sum<float>(const float*, float*, const Geometry&, const Geometry&);
template void sum<double>(const double*, double*, const Geometry&, const Geometry&);

}  // namespace txtcls::cuda
