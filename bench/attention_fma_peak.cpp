// The machine's single-precision FMA peak, as the yardstick of the attention benchmarks: every
// thread runs twelve independent chains of vector FMAs (enough to cover the FMA latency on both
// pipes of a Zen 3 or Skylake core), nothing else, no memory traffic. No kernel that also
// computes exponentials, packs operands and waits on caches can run faster, so
// bench/compare_attention_torch.py divides by it to say which speedups are possible at all.
//
//   bench_attention --benchmark_filter='^peak/' [--threads N]
#include <benchmark/benchmark.h>

#include <cstdint>

#include "txtcls/txtcls.hpp"

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>

namespace {

#if defined(__AVX512F__)
using Vec = __m512;
constexpr int kLanes = 16;
inline Vec splat(float x) { return _mm512_set1_ps(x); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline float first(Vec a) { return _mm512_cvtss_f32(a); }
#else
using Vec = __m256;
constexpr int kLanes = 8;
inline Vec splat(float x) { return _mm256_set1_ps(x); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline float first(Vec a) { return _mm256_cvtss_f32(a); }
#endif
constexpr int kChains = 12;

// steps x kChains FMAs on kLanes floats. Named locals, not an array: that keeps every chain in a
// register at any optimisation level.
float fma_chains(int64_t steps, float seed) {
  const Vec m = splat(0.999999f), b = splat(1e-7f);
  Vec c0 = splat(seed), c1 = splat(seed + 1), c2 = splat(seed + 2), c3 = splat(seed + 3), c4 = splat(seed + 4),
      c5 = splat(seed + 5), c6 = splat(seed + 6), c7 = splat(seed + 7), c8 = splat(seed + 8), c9 = splat(seed + 9),
      c10 = splat(seed + 10), c11 = splat(seed + 11);
  for (int64_t s = 0; s < steps; ++s) {
    c0 = fma(c0, m, b), c1 = fma(c1, m, b), c2 = fma(c2, m, b), c3 = fma(c3, m, b);
    c4 = fma(c4, m, b), c5 = fma(c5, m, b), c6 = fma(c6, m, b), c7 = fma(c7, m, b);
    c8 = fma(c8, m, b), c9 = fma(c9, m, b), c10 = fma(c10, m, b), c11 = fma(c11, m, b);
  }
  return first(c0) + first(c1) + first(c2) + first(c3) + first(c4) + first(c5) + first(c6) + first(c7) +
         first(c8) + first(c9) + first(c10) + first(c11);
}

void BM_fma_peak(benchmark::State& st) {
  const int threads = txtcls::num_threads();
  constexpr int64_t kSteps = int64_t(1) << 22;  // ~10 ms per thread
  for (auto _ : st) {
    float sink = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    sink += fma_chains(kSteps, sink + 1.0f);
    benchmark::DoNotOptimize(sink);
  }
  const double flops = 2.0 * kLanes * kChains * static_cast<double>(kSteps) * threads;
  st.counters["TFLOP"] = benchmark::Counter(flops / 1e12, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["threads"] = threads;
}

// Registered at static initialisation, so it runs under the thread count the program's main sets.
const auto* const kRegistered =
    benchmark::RegisterBenchmark("peak/fma", BM_fma_peak)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
#endif
