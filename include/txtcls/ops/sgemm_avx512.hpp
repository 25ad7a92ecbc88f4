#pragma once
// The AVX-512 register kernels of ops/sgemm.hpp (included from there after kMR and the prefetch
// helpers, when AVX-512F is on).
//
// A 16-row A panel step is one zmm vector, so the panel layouts stay those of the AVX2 kernels
// and only B panels widen: 16 columns (16 accumulators, one A vector, the B values broadcast
// from memory inside the FMAs: `vfmadd231ps (b){1to16}`), the last one 8 wide. Per step of k,
// 17 loads feed 16 FMAs of 16 lanes. On a 2-core Sapphire Rapids VM, on hot 64 x 64 x 64
// operands, it runs at 140-170 GFLOP/s per core against 169 for a pure-register FMA loop, while
// the AVX2 kernel is capped by 256-bit FMAs at 74.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

namespace txtcls::detail::sgemm {

inline constexpr int64_t kWide = 16, kNarrow = 8;
inline constexpr int64_t kDepthCap = 256;  // K block: an A and a wide B micro-panel, 16 KiB each, in L1
// Largest A (bytes) that a single-block product sweeps inside each B panel (B panels outside,
// A re-read once per 16 columns): at the attention's 64 x 128 and 64 x 256 operands that order
// ran 8-13% faster here than A panels outside (bench_attention's tile/product).
inline constexpr int64_t kLhsSweepBytes = 65536;

// C[0:m, 0:n] (column-major, ldc) += A panel * B panel (W wide) over k steps (= when !add: C is
// not read, so a product that overwrites needs neither a zeroing pass nor C's old values in
// cache); m <= 16, n <= W. The accumulators are an array indexed only by constants once the
// loops are unrolled, which keeps them in registers: a runtime index (a loop to n) would send
// them to the stack.
template <int W>
inline void kernel_16xw(int64_t k, const float* a, const float* b, float* c, int64_t ldc, int64_t m, int64_t n,
                        bool add) {
  if (add) prefetch_tile(c, ldc, m, n);
  __m512 acc[W];
#pragma GCC unroll 16
  for (int j = 0; j < W; ++j) acc[j] = _mm512_setzero_ps();
  for (int64_t kk = 0; kk < k; ++kk, a += kMR, b += W) {
    prefetch_a(a);
    const __m512 av = _mm512_load_ps(a);
#pragma GCC unroll 16
    for (int j = 0; j < W; ++j) acc[j] = _mm512_fmadd_ps(av, _mm512_set1_ps(b[j]), acc[j]);
  }
  if (m >= kMR) {
#pragma GCC unroll 16
    for (int j = 0; j < W; ++j) {
      if (j >= n) break;
      float* cj = c + j * ldc;
      _mm512_storeu_ps(cj, add ? _mm512_add_ps(_mm512_loadu_ps(cj), acc[j]) : acc[j]);
    }
    return;
  }
  // The last panel of an A whose height is not a multiple of 16: rows past m stay untouched.
  const __mmask16 rows = __mmask16((1u << m) - 1u);
#pragma GCC unroll 16
  for (int j = 0; j < W; ++j) {
    if (j >= n) break;
    float* cj = c + j * ldc;
    _mm512_mask_storeu_ps(cj, rows, add ? _mm512_add_ps(_mm512_maskz_loadu_ps(rows, cj), acc[j]) : acc[j]);
  }
}

inline void kernel_wide(int64_t k, const float* a, const float* b, float* c, int64_t ldc, int64_t m, int64_t n,
                        bool add) {
  kernel_16xw<16>(k, a, b, c, ldc, m, n, add);
}
inline void kernel_narrow(int64_t k, const float* a, const float* b, float* c, int64_t ldc, int64_t m, int64_t n,
                          bool add) {
  kernel_16xw<8>(k, a, b, c, ldc, m, n, add);
}

}  // namespace txtcls::detail::sgemm
