// CPU microbenchmarks of the core ops at transformer sizes. bench/compare_ops_torch.py runs this
// binary and PyTorch on the same shapes and thread count and prints the ratios.
//   bench_ops --threads N [google-benchmark flags]
#include <benchmark/benchmark.h>

#include <cstring>
#include <string>

#include "txtcls/ops/norm.hpp"
#include "txtcls/ops/softmax.hpp"
#include "txtcls/txtcls.hpp"

using namespace txtcls;

// matmul [M,K] @ [K,N], float32; counters report GFLOP/s.
static void BM_matmul(benchmark::State& st) {
  const int64_t M = st.range(0), K = st.range(1), N = st.range(2);
  Generator g(1);
  auto a = randn<float>({M, K}, g), b = randn<float>({K, N}, g);
  for (auto _ : st) benchmark::DoNotOptimize(matmul(a, b).data());
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * M * K * N, benchmark::Counter::kIsIterationInvariantRate,
                                               benchmark::Counter::kIs1000);
}
BENCHMARK(BM_matmul)->Args({512, 768, 768})->Args({2048, 768, 3072})->Args({2048, 3072, 768})
    ->Args({4096, 1024, 1024})->Unit(benchmark::kMillisecond)->UseRealTime();

// softmax over the last dim of [rows, L] (attention scores: rows = batch*heads*L).
static void BM_softmax(benchmark::State& st) {
  const int64_t rows = st.range(0), L = st.range(1);
  Generator g(2);
  auto x = randn<float>({rows, L}, g);
  for (auto _ : st) benchmark::DoNotOptimize(softmax(x, -1).data());
  st.SetBytesProcessed(st.iterations() * rows * L * 2 * sizeof(float));
}
BENCHMARK(BM_softmax)->Args({8 * 12 * 128, 128})->Args({4 * 12 * 512, 512})->Unit(benchmark::kMillisecond)->UseRealTime();

// layer_norm over the last dim of [tokens, D].
static void BM_layer_norm(benchmark::State& st) {
  const int64_t rows = st.range(0), D = st.range(1);
  Generator g(3);
  auto x = randn<float>({rows, D}, g), w = randn<float>({D}, g), b = randn<float>({D}, g);
  for (auto _ : st) benchmark::DoNotOptimize(layer_norm(x, w, b, 1e-5).data());
  st.SetBytesProcessed(st.iterations() * rows * D * 2 * sizeof(float));
}
BENCHMARK(BM_layer_norm)->Args({4096, 768})->Args({16384, 1024})->Unit(benchmark::kMillisecond)->UseRealTime();

int main(int argc, char** argv) {
  int threads = 0;
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = std::stoi(argv[i + 1]);
  if (threads > 0) set_num_threads(threads);
  // Drop our flags before Google Benchmark parses the rest.
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--threads") == 0) { ++i; continue; }
    argv[out++] = argv[i];
  }
  argc = out;
  benchmark::AddCustomContext("txtcls_threads", std::to_string(num_threads()));
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
