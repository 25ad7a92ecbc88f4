#pragma once
// The timing loop of the GPU benchmarks: CUDA events on the current stream around each call,
// reported to Google Benchmark as manual time, after one warm-up call (the allocator's cache
// fills, cuBLAS and cuDNN pick their kernels).
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <functional>

#include "txtcls/cuda/runtime.hpp"

namespace txtcls::bench {

inline void time_gpu_events(benchmark::State& state, const std::function<void()>& f) {
  cudaStream_t stream = static_cast<cudaStream_t>(cuda::current_stream());
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  f();
  cuda::synchronize();
  for (auto _ : state) {
    cudaEventRecord(a, stream);
    f();
    cudaEventRecord(b, stream);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    state.SetIterationTime(ms / 1e3);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
}

}  // namespace txtcls::bench
