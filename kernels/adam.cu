// Fused multi-tensor Adam(W): every parameter of a model updated in as few launches as the
// kernel-argument space allows. A launch carries a table of up to kTensors parameters and of up
// to kChunks chunks (kChunkSize elements of one parameter each, one block per chunk), passed by
// value as the kernel's argument, so no table is copied to the device and no step synchronizes.
// The arithmetic is train::AdamStepMath, the same code as the CPU loop. A chunk is shared by
// `split` blocks (each a disjoint, interleaved share of its elements) so that a model's few
// dozen chunks still put several blocks on every multiprocessor.
#include <algorithm>
#include <cstdint>

#include "launch.cuh"
#include "txtcls/cuda/adam.hpp"

namespace txtcls::cuda {
namespace {

constexpr int kTensors = 16;
constexpr int kChunks = 96;
constexpr int64_t kChunkSize = int64_t(1) << 16;

template <class T>
struct AdamLaunch {
  AdamTensor<T> t[kTensors];
  int chunk_tensor[kChunks];
  int64_t chunk_start[kChunks];
};
static_assert(sizeof(AdamLaunch<double>) <= 4096, "kernel arguments are limited to 4 KiB");

template <class T>
__global__ void adam_chunks(AdamLaunch<T> a, int split) {
  const int chunk = blockIdx.x / split, part = blockIdx.x % split;
  const AdamTensor<T>& t = a.t[a.chunk_tensor[chunk]];
  const int64_t start = a.chunk_start[chunk];
  const int64_t end = min(t.n, start + kChunkSize);
  const int64_t step = int64_t(split) * blockDim.x;
  for (int64_t i = start + int64_t(part) * blockDim.x + threadIdx.x; i < end; i += step)
    t.math(t.p[i], t.g[i], t.m[i], t.v[i]);
}

}  // namespace

template <class T>
void adam_step(const std::vector<AdamTensor<T>>& tensors) {
  cudaStream_t stream = active_stream();
  const int target_blocks = 8 * multiprocessor_count();
  AdamLaunch<T> a;
  int nt = 0, nc = 0;
  auto launch = [&] {
    if (nc > 0) {
      // Blocks per chunk: enough for ~8 per multiprocessor, at most one per kBlock elements.
      const int split = std::clamp((target_blocks + nc - 1) / nc, 1, int(kChunkSize / kBlock));
      adam_chunks<T><<<nc * split, kBlock, 0, stream>>>(a, split);
      TXTCLS_KERNEL_CHECK("adam_chunks");
    }
    nc = 0;
  };
  for (const AdamTensor<T>& t : tensors) {
    if (t.n == 0) continue;
    if (nt == kTensors) {  // table full: flush and start a new one
      launch();
      nt = 0;
    }
    a.t[nt] = t;
    for (int64_t s = 0; s < t.n; s += kChunkSize) {
      if (nc == kChunks) launch();  // the tensor table stays; only chunks are flushed
      a.chunk_tensor[nc] = nt;
      a.chunk_start[nc] = s;
      ++nc;
    }
    ++nt;
  }
  launch();
}

template void adam_step<float>(const std::vector<AdamTensor<float>>&);
template void adam_step<double>(const std::vector<AdamTensor<double>>&);

}  // namespace txtcls::cuda
