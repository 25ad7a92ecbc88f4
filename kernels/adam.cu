// Fused multi-tensor Adam(W): every parameter of a model updated in as few launches as the
// kernel-argument space allows. A launch carries a table of up to kTensors parameters and of up
// to kChunks chunks (kChunkSize elements of one parameter each, one block per chunk), passed by
// value as the kernel's argument, so no table is copied to the device and no step synchronizes.
// The arithmetic is train::AdamStepMath, the same code as the CPU loop.
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
__global__ void adam_chunks(AdamLaunch<T> a) {
  const AdamTensor<T>& t = a.t[a.chunk_tensor[blockIdx.x]];
  const int64_t start = a.chunk_start[blockIdx.x];
  const int64_t end = min(t.n, start + kChunkSize);
  for (int64_t i = start + threadIdx.x; i < end; i += blockDim.x) t.math(t.p[i], t.g[i], t.m[i], t.v[i]);
}

}  // namespace

template <class T>
void adam_step(const std::vector<AdamTensor<T>>& tensors) {
  cudaStream_t stream = active_stream();
  AdamLaunch<T> a;
  int nt = 0, nc = 0;
  auto launch = [&] {
    if (nc > 0) {
      adam_chunks<T><<<nc, kBlock, 0, stream>>>(a);
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
