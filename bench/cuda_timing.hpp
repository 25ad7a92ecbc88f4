#pragma once
// The timing loop of the GPU benchmarks: CUDA events on the current stream around each call,
// reported to Google Benchmark as manual time, after one warm-up call (the allocator's cache
// fills, cuBLAS and cuDNN pick their kernels).
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <cstdio>
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

// The GPU benchmarks' main: without a CUDA device it says so and exits 0 (so that a machine without
// a GPU runs them as a no-op); else it registers the benchmarks (register_all, when given: after
// the device check) and runs those the arguments select.
inline int gpu_benchmark_main(int argc, char** argv, void (*register_all)() = nullptr) {
  if (cuda::device_count() == 0) {
    std::printf("no CUDA device: nothing to measure\n");
    return 0;
  }
  if (register_all) register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace txtcls::bench
