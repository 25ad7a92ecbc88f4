#pragma once
// The AVX2 + FMA register kernels of ops/sgemm.hpp (included from there after kMR and the prefetch
// helpers, only when AVX2 and FMA are on and AVX-512 is off).
//
// The 16 x 6 register tile (two 8-float vectors down a column, six columns) keeps 12
// accumulators, two A vectors and a broadcast B value in the 16 ymm registers: per step of the
// inner dimension, 2 loads and 6 broadcasts feed 12 FMAs. On Zen 3 it ran 1.2-1.4x faster than
// Eigen 3.4's float kernel (24 x 4 tile) on the LSTM's shapes. B panels are 6 wide, the last one
// or two 4 wide (a batch of 32: 6+6+6+6+4+4, no padding).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

namespace txtcls::detail::sgemm {

inline constexpr int64_t kWide = 6, kNarrow = 4;
inline constexpr int64_t kDepthCap = 384;  // K block: an A and a B micro-panel stay in L1
// Largest A (bytes) that a single-block product sweeps inside each B panel: with 6-wide panels
// A is re-read once per 6 columns, so only an A that fits L1 with room to spare.
inline constexpr int64_t kLhsSweepBytes = 16384;

// C[0:m, 0:n] += the accumulators acc[j][0..1] (column j, rows 0-7 and 8-15); = when !add.
template <int W>
inline void add_tile(const __m256 (&acc)[W][2], float* c, int64_t ldc, int64_t m, int64_t n, bool add) {
  n = std::min<int64_t>(n, W);
  if (m == kMR) {
    for (int64_t j = 0; j < n; ++j) {
      float* cj = c + j * ldc;
      _mm256_storeu_ps(cj, add ? _mm256_add_ps(_mm256_loadu_ps(cj), acc[j][0]) : acc[j][0]);
      _mm256_storeu_ps(cj + 8, add ? _mm256_add_ps(_mm256_loadu_ps(cj + 8), acc[j][1]) : acc[j][1]);
    }
    return;
  }
  alignas(32) float tile[kMR];
  for (int64_t j = 0; j < n; ++j) {
    _mm256_store_ps(tile, acc[j][0]);
    _mm256_store_ps(tile + 8, acc[j][1]);
    float* cj = c + j * ldc;
    for (int64_t i = 0; i < m; ++i) cj[i] = add ? cj[i] + tile[i] : tile[i];
  }
}

// C[0:m, 0:n] (column-major, ldc) += A panel * B panel (6 wide) over k steps (= when !add);
// m <= 16, n <= 6.
inline void kernel_16x6(int64_t k, const float* a, const float* b, float* c, int64_t ldc, int64_t m, int64_t n,
                        bool add) {
  if (add) prefetch_tile(c, ldc, m, n);
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t kk = 0; kk < k; ++kk, a += kMR, b += 6) {
    prefetch_a(a);
    const __m256 a0 = _mm256_load_ps(a), a1 = _mm256_load_ps(a + 8);
    __m256 bb = _mm256_broadcast_ss(b);
    c00 = _mm256_fmadd_ps(a0, bb, c00);
    c01 = _mm256_fmadd_ps(a1, bb, c01);
    bb = _mm256_broadcast_ss(b + 1);
    c10 = _mm256_fmadd_ps(a0, bb, c10);
    c11 = _mm256_fmadd_ps(a1, bb, c11);
    bb = _mm256_broadcast_ss(b + 2);
    c20 = _mm256_fmadd_ps(a0, bb, c20);
    c21 = _mm256_fmadd_ps(a1, bb, c21);
    bb = _mm256_broadcast_ss(b + 3);
    c30 = _mm256_fmadd_ps(a0, bb, c30);
    c31 = _mm256_fmadd_ps(a1, bb, c31);
    bb = _mm256_broadcast_ss(b + 4);
    c40 = _mm256_fmadd_ps(a0, bb, c40);
    c41 = _mm256_fmadd_ps(a1, bb, c41);
    bb = _mm256_broadcast_ss(b + 5);
    c50 = _mm256_fmadd_ps(a0, bb, c50);
    c51 = _mm256_fmadd_ps(a1, bb, c51);
  }
  const __m256 acc[6][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  add_tile<6>(acc, c, ldc, m, n, add);
}

// The same for a 4-wide B panel (8 accumulators: still enough independent FMAs to fill both
// pipes); n <= 4. Spelled out like kernel_16x6 rather than templated on the width: named
// __m256 locals are what keeps every accumulator in a register.
inline void kernel_16x4(int64_t k, const float* a, const float* b, float* c, int64_t ldc, int64_t m, int64_t n,
                        bool add) {
  if (add) prefetch_tile(c, ldc, m, n);
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  for (int64_t kk = 0; kk < k; ++kk, a += kMR, b += 4) {
    prefetch_a(a);
    const __m256 a0 = _mm256_load_ps(a), a1 = _mm256_load_ps(a + 8);
    __m256 bb = _mm256_broadcast_ss(b);
    c00 = _mm256_fmadd_ps(a0, bb, c00);
    c01 = _mm256_fmadd_ps(a1, bb, c01);
    bb = _mm256_broadcast_ss(b + 1);
    c10 = _mm256_fmadd_ps(a0, bb, c10);
    c11 = _mm256_fmadd_ps(a1, bb, c11);
    bb = _mm256_broadcast_ss(b + 2);
    c20 = _mm256_fmadd_ps(a0, bb, c20);
    c21 = _mm256_fmadd_ps(a1, bb, c21);
    bb = _mm256_broadcast_ss(b + 3);
    c30 = _mm256_fmadd_ps(a0, bb, c30);
    c31 = _mm256_fmadd_ps(a1, bb, c31);
  }
  const __m256 acc[4][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}};
  add_tile<4>(acc, c, ldc, m, n, add);
}

inline void kernel_wide(int64_t k, const float* a, const float* b, float* c, int64_t ldc, int64_t m, int64_t n,
                        bool add) {
  kernel_16x6(k, a, b, c, ldc, m, n, add);
}
inline void kernel_narrow(int64_t k, const float* a, const float* b, float* c, int64_t ldc, int64_t m, int64_t n,
                          bool add) {
  kernel_16x4(k, a, b, c, ldc, m, n, add);
}

}  // namespace txtcls::detail::sgemm
