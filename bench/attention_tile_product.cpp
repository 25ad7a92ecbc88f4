// One tile product of the fused attention (attn::multiply: C [m, n] += packed A [m, k] x packed
// B [k, n], m = n = 64), one thread, as GFLOP/s, with its operands cycling through `buffers`
// distinct sets so that they come from L1 (1 set, 48 KiB), L2 (up to ~40 sets) or L3 (64 sets,
// 3 MiB). Compared with peak/fma it says how much of the peak the register kernel keeps at the
// op's tile sizes and cache levels (docs/attention.md, "One thread").
//
//   bench_attention --benchmark_filter='^tile/' --threads 1
#include <benchmark/benchmark.h>

#include <cstdint>

#include "txtcls/txtcls.hpp"

namespace {

void BM_tile_product(benchmark::State& st) {
  using namespace txtcls::detail;
  const int64_t m = 64, n = 64, k = st.range(0), sets = st.range(1);
  const int64_t as = attn::lhs_size<float>(m, k), bs = attn::rhs_size<float>(k, n);
  txtcls::Generator g(5);
  const txtcls::Tensor<float> a = txtcls::rand_uniform<float>({as * sets}, g, -1, 1);
  const txtcls::Tensor<float> b = txtcls::rand_uniform<float>({bs * sets}, g, -1, 1);
  txtcls::Tensor<float> c = txtcls::rand_uniform<float>({m * n * sets}, g, -1, 1);
  int64_t q = 0;
  for (auto _ : st) {
    attn::multiply<float>({c.data() + q * m * n, m}, a.data() + q * as, b.data() + q * bs, m, n, k, true);
    q = q + 1 == sets ? 0 : q + 1;
  }
  benchmark::DoNotOptimize(c.data());
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * m * n * k / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

BENCHMARK(BM_tile_product)->Name("tile/product")->ArgNames({"k", "sets"})->ArgsProduct({{64, 128}, {1, 16, 64}});
