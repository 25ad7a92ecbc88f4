// GPU kernel microbenchmarks (Google Benchmark, manual timing with CUDA events): achieved
// bandwidth of the elementwise, reduction, softmax and Adam kernels as a fraction of the
// device's measured copy bandwidth (cudaMemcpy device to device, timed first), and cuBLAS GEMM
// TFLOP/s in FP32, TF32 and FP64. Without a GPU it says so and exits 0.
//   build/bin/bench_cuda_kernels [--benchmark_filter=...] [--benchmark_format=json]
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <functional>

#include "cuda_timing.hpp"
#include "txtcls/txtcls.hpp"

using namespace txtcls;

namespace {

double g_copy_bytes_per_s = 0;  // measured once in main

// Times f (txtcls::bench::time_gpu_events); reports bytes/s (bytes moved per call) and, when
// given, TFLOP/s.
void time_gpu(benchmark::State& state, const std::function<void()>& f, double bytes, double flops = 0) {
  txtcls::bench::time_gpu_events(state, f);
  state.SetBytesProcessed(static_cast<int64_t>(bytes) * state.iterations());
  if (bytes > 0 && g_copy_bytes_per_s > 0)
    state.counters["of_copy_bw"] =
        benchmark::Counter(bytes / g_copy_bytes_per_s, benchmark::Counter::kIsIterationInvariantRate);
  if (flops > 0)
    state.counters["TFLOP/s"] = benchmark::Counter(flops / 1e12, benchmark::Counter::kIsIterationInvariantRate);
}

Tensor<float> gpu_rand(const Shape& s, uint64_t seed) {
  Generator g(seed);
  return rand_uniform<float>(s, g, -1, 1, Device::cuda(0));
}

void BM_copy(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor<float> x = gpu_rand({n}, 1), y({n}, Device::cuda(0));
  time_gpu(state, [&] { cudaMemcpyAsync(y.data(), x.data(), n * 4, cudaMemcpyDeviceToDevice,
                                        static_cast<cudaStream_t>(cuda::current_stream())); }, 2.0 * n * 4);
}

void BM_exp(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor<float> x = gpu_rand({n}, 2);
  time_gpu(state, [&] { benchmark::DoNotOptimize(exp(x)); }, 2.0 * n * 4);
}

void BM_add_broadcast(benchmark::State& state) {  // [n / 1024, 1024] + [1024]
  const int64_t n = state.range(0);
  Tensor<float> x = gpu_rand({n / 1024, 1024}, 3), b = gpu_rand({1024}, 4);
  time_gpu(state, [&] { benchmark::DoNotOptimize(add(x, b)); }, 2.0 * n * 4);
}

void BM_add_transposed(benchmark::State& state) {  // strided path: x^T + y
  const int64_t n = state.range(0);
  Tensor<float> x = gpu_rand({1024, n / 1024}, 5), y = gpu_rand({n / 1024, 1024}, 6);
  time_gpu(state, [&] { benchmark::DoNotOptimize(add(x.t(), y)); }, 3.0 * n * 4);
}

void BM_sum_rows(benchmark::State& state) {  // [rows, 4096] -> [rows]
  const int64_t n = state.range(0);
  Tensor<float> x = gpu_rand({n / 4096, 4096}, 7);
  time_gpu(state, [&] { benchmark::DoNotOptimize(sum(x, {1})); }, double(n) * 4);
}

void BM_sum_columns(benchmark::State& state) {  // [rows, 1024] -> [1024] (a bias gradient)
  const int64_t n = state.range(0);
  Tensor<float> x = gpu_rand({n / 1024, 1024}, 8);
  time_gpu(state, [&] { benchmark::DoNotOptimize(sum(x, {0})); }, double(n) * 4);
}

void BM_sum_all(benchmark::State& state) {  // two-pass
  const int64_t n = state.range(0);
  Tensor<float> x = gpu_rand({n}, 9);
  time_gpu(state, [&] { benchmark::DoNotOptimize(sum(x)); }, double(n) * 4);
}

void BM_softmax(benchmark::State& state) {  // attention-shaped rows of length L
  const int64_t L = state.range(0), rows = (int64_t(1) << 24) / L;
  Tensor<float> x = gpu_rand({rows, L}, 10);
  time_gpu(state, [&] { benchmark::DoNotOptimize(softmax(x, -1)); }, 2.0 * rows * L * 4);
}

void BM_adam(benchmark::State& state) {  // one fused step over an LSTM_reg-sized parameter set
  std::vector<Shape> shapes = {{9000, 300}, {2048, 300}, {2048, 512}, {2048}, {2048}, {2048, 300}, {2048, 512},
                               {2048}, {2048}, {6, 1024}, {6}};
  std::vector<Tensor<float>> ps;
  double n = 0;
  for (size_t i = 0; i < shapes.size(); ++i) {
    ps.push_back(gpu_rand(shapes[i], 20 + i).set_requires_grad());
    ps.back().set_grad(gpu_rand(shapes[i], 40 + i));
    n += double(numel_of(shapes[i]));
  }
  train::Adam<float> opt(ps);
  time_gpu(state, [&] { opt.step(); }, n * 4 * 7);  // reads p, g, m, v; writes p, m, v
}

void BM_gemm(benchmark::State& state) {
  const int64_t n = state.range(0);
  const int mode = static_cast<int>(state.range(1));  // 0 FP32, 1 TF32, 2 FP64
  cuda::set_allow_tf32(mode == 1);
  const double flops = 2.0 * n * n * n;
  if (mode == 2) {
    Generator g(11);
    Tensor<double> a = rand_uniform<double>({n, n}, g, -1, 1, Device::cuda(0));
    Tensor<double> b = rand_uniform<double>({n, n}, g, -1, 1, Device::cuda(0));
    time_gpu(state, [&] { benchmark::DoNotOptimize(matmul(a, b)); }, 0, flops);
  } else {
    Tensor<float> a = gpu_rand({n, n}, 12), b = gpu_rand({n, n}, 13);
    time_gpu(state, [&] { benchmark::DoNotOptimize(matmul(a, b)); }, 0, flops);
  }
  cuda::set_allow_tf32(false);
  state.SetLabel(mode == 0 ? "fp32" : mode == 1 ? "tf32" : "fp64");
}

constexpr int64_t kBig = int64_t(1) << 26;  // 64M floats: 256 MB, far beyond L2

}  // namespace

BENCHMARK(BM_copy)->Arg(kBig)->UseManualTime();
BENCHMARK(BM_exp)->Arg(kBig)->Arg(1 << 20)->UseManualTime();
BENCHMARK(BM_add_broadcast)->Arg(kBig)->UseManualTime();
BENCHMARK(BM_add_transposed)->Arg(kBig)->UseManualTime();
BENCHMARK(BM_sum_rows)->Arg(kBig)->UseManualTime();
BENCHMARK(BM_sum_columns)->Arg(kBig)->UseManualTime();
BENCHMARK(BM_sum_all)->Arg(kBig)->UseManualTime();
BENCHMARK(BM_softmax)->Arg(128)->Arg(512)->Arg(2048)->Arg(8192)->UseManualTime();
BENCHMARK(BM_adam)->UseManualTime();
BENCHMARK(BM_gemm)->Args({4096, 0})->Args({4096, 1})->Args({4096, 2})->UseManualTime();

int main(int argc, char** argv) {
  if (cuda::device_count() == 0) {
    std::printf("no CUDA device: nothing to measure\n");
    return 0;
  }
  {  // the reference bandwidth: a large device-to-device copy, best of 10
    const int64_t n = kBig;
    Tensor<float> x({n}, Device::cuda(0)), y({n}, Device::cuda(0));
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    float best = 1e30f;
    for (int i = 0; i < 10; ++i) {
      cudaEventRecord(a);
      cudaMemcpy(y.data(), x.data(), n * 4, cudaMemcpyDeviceToDevice);
      cudaEventRecord(b);
      cudaEventSynchronize(b);
      float ms = 0;
      cudaEventElapsedTime(&ms, a, b);
      best = std::min(best, ms);
    }
    g_copy_bytes_per_s = 2.0 * n * 4 / (best / 1e3);
    std::printf("device copy bandwidth: %.1f GB/s (read + write)\n", g_copy_bytes_per_s / 1e9);
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
