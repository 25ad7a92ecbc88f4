#pragma once
// Single-precision GEMM micro-kernel for AVX2 + FMA, used by packed_gemm.hpp for float.
// The 16 x 6 register tile (two 8-float vectors down a column, six columns) keeps 12
// accumulators, two A vectors and a broadcast B value in the 16 ymm registers: per step of the
// inner dimension, 2 loads and 6 broadcasts feed 12 FMAs. On Zen 3 it ran 1.2-1.4x faster than
// Eigen 3.4's float kernel (24 x 4 tile) on the LSTM's shapes.
//
// Packed layouts (zero padded to whole panels, so the inner loop never branches on edges):
//   A panel p: rows [16p, 16p+16), step k at a[k*16 + r];
//   B panels: 6 columns wide, the last one or two 4 wide (BPanels), step k of a panel of width
//   w starting at column c0 at b[c0*k + k*w + c]. A 16 x 4 kernel for the narrow panels keeps
//   the padding small when n is not a multiple of 6 (a batch of 32: 6+6+6+6+4+4, no padding).
// With AVX-512 available, Eigen's kernel (16-float vectors) is used instead.
#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
#define TXTCLS_SGEMM_AVX2 1
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

namespace txtcls::detail::avx2 {

inline constexpr int64_t kMR = 16;

inline int64_t panels(int64_t n, int64_t width) { return (n + width - 1) / width; }

// A [m, k] (element (i, j) at p[i*rs + j*cs]) into ceil(m/16) panels of 16 x k.
inline void pack_a(float* dst, const float* p, int64_t m, int64_t k, int64_t rs, int64_t cs) {
  for (int64_t i0 = 0; i0 < m; i0 += kMR, dst += kMR * k) {
    const int64_t rows = std::min(kMR, m - i0);
    if (rs == 1 && rows == kMR) {
      for (int64_t j = 0; j < k; ++j) {
        const float* s = p + i0 + j * cs;
        _mm256_store_ps(dst + j * kMR, _mm256_loadu_ps(s));
        _mm256_store_ps(dst + j * kMR + 8, _mm256_loadu_ps(s + 8));
      }
      continue;
    }
    for (int64_t r = 0; r < kMR; ++r) {
      if (r < rows) {
        const float* s = p + (i0 + r) * rs;
        for (int64_t j = 0; j < k; ++j) dst[j * kMR + r] = s[j * cs];
      } else {
        for (int64_t j = 0; j < k; ++j) dst[j * kMR + r] = 0.0f;
      }
    }
  }
}

// How n columns are cut into B panels: n6 panels of 6, then n4 (at most 2) of 4, with the
// least padding (n rounded up to even is always 6a + 4b).
struct BPanels {
  int64_t n6 = 0, n4 = 0;
  explicit BPanels(int64_t n) {
    const int64_t even = n + (n & 1);
    const int64_t r = even % 6;
    n4 = r == 0 ? 0 : (r == 4 || even < 8) ? 1 : 2;
    n6 = std::max<int64_t>(0, (even - 4 * n4) / 6);
    if (n == 0) n4 = 0;
  }
  int64_t count() const { return n6 + n4; }
  int64_t width(int64_t q) const { return q < n6 ? 6 : 4; }
  int64_t first_col(int64_t q) const { return q < n6 ? 6 * q : 6 * n6 + 4 * (q - n6); }
  int64_t padded() const { return 6 * n6 + 4 * n4; }
};

// B [k, n] (element (i, j) at p[i*rs + j*cs]) into the panels of BPanels(n). Each case walks the
// source along its contiguous direction.
inline void pack_b(float* dst, const float* p, int64_t k, int64_t n, int64_t rs, int64_t cs) {
  const BPanels plan(n);
  for (int64_t q = 0; q < plan.count(); ++q) {
    const int64_t w = plan.width(q), j0 = plan.first_col(q), cols = std::min(w, n - j0);
    float* d0 = dst + j0 * k;
    if (cs == 1) {
      for (int64_t i = 0; i < k; ++i) {
        const float* s = p + i * rs + j0;
        float* d = d0 + i * w;
        for (int64_t c = 0; c < w; ++c) d[c] = c < cols ? s[c] : 0.0f;
      }
      continue;
    }
    for (int64_t c = 0; c < w; ++c) {
      if (c < cols) {
        const float* s = p + (j0 + c) * cs;
        for (int64_t i = 0; i < k; ++i) d0[i * w + c] = s[i * rs];
      } else {
        for (int64_t i = 0; i < k; ++i) d0[i * w + c] = 0.0f;
      }
    }
  }
}

// The C tile is read only after the k loop; fetching it first hides a miss to memory (the
// LSTM's gate rows were written long before they are accumulated into).
inline void prefetch_tile(const float* c, int64_t ldc, int64_t m, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    _mm_prefetch(reinterpret_cast<const char*>(c + j * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + j * ldc + m - 1), _MM_HINT_T0);
  }
}

// C[0:m, 0:n] += the accumulators acc[j][0..1] (column j, rows 0-7 and 8-15).
template <int W>
inline void add_tile(const __m256 (&acc)[W][2], float* c, int64_t ldc, int64_t m, int64_t n) {
  n = std::min<int64_t>(n, W);
  if (m == kMR) {
    for (int64_t j = 0; j < n; ++j) {
      float* cj = c + j * ldc;
      _mm256_storeu_ps(cj, _mm256_add_ps(_mm256_loadu_ps(cj), acc[j][0]));
      _mm256_storeu_ps(cj + 8, _mm256_add_ps(_mm256_loadu_ps(cj + 8), acc[j][1]));
    }
    return;
  }
  alignas(32) float tile[kMR];
  for (int64_t j = 0; j < n; ++j) {
    _mm256_store_ps(tile, acc[j][0]);
    _mm256_store_ps(tile + 8, acc[j][1]);
    float* cj = c + j * ldc;
    for (int64_t i = 0; i < m; ++i) cj[i] += tile[i];
  }
}

// A streams from L2/L3 (the recurrent weights are re-read every step): the kernels fetch it
// 1 KiB ahead, which runs on into the next panel.
#define TXTCLS_AVX2_PREFETCH_A(a) _mm_prefetch(reinterpret_cast<const char*>((a) + 16 * kMR), _MM_HINT_T0)

// C[0:m, 0:n] (column-major, ldc) += A panel * B panel (6 wide) over k steps; m <= 16, n <= 6.
inline void kernel_16x6(int64_t k, const float* a, const float* b, float* c, int64_t ldc, int64_t m, int64_t n) {
  prefetch_tile(c, ldc, m, n);
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t kk = 0; kk < k; ++kk, a += kMR, b += 6) {
    TXTCLS_AVX2_PREFETCH_A(a);
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
  add_tile<6>(acc, c, ldc, m, n);
}

// The same for a 4-wide B panel (8 accumulators: still enough independent FMAs to fill both
// pipes); n <= 4. Spelled out like kernel_16x6 rather than templated on the width: named
// __m256 locals are what keeps every accumulator in a register.
inline void kernel_16x4(int64_t k, const float* a, const float* b, float* c, int64_t ldc, int64_t m, int64_t n) {
  prefetch_tile(c, ldc, m, n);
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  for (int64_t kk = 0; kk < k; ++kk, a += kMR, b += 4) {
    TXTCLS_AVX2_PREFETCH_A(a);
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
  add_tile<4>(acc, c, ldc, m, n);
}
#undef TXTCLS_AVX2_PREFETCH_A

// C [m, n] += packed A rows [i0, i1) (a panel boundary) times every B panel, over k.
inline void multiply_rows(int64_t i0, int64_t i1, int64_t m, int64_t n, int64_t k, const float* pa, const float* pb,
                          float* c, int64_t ldc) {
  const BPanels plan(n);
  for (int64_t q = 0; q < plan.count(); ++q) {
    const int64_t j0 = plan.first_col(q), cols = std::min(plan.width(q), n - j0);
    const float* bq = pb + j0 * k;
    for (int64_t i = i0; i < i1; i += kMR) {
      const int64_t rows = std::min(kMR, m - i);
      if (plan.width(q) == 6)
        kernel_16x6(k, pa + i * k, bq, c + i + j0 * ldc, ldc, rows, cols);
      else
        kernel_16x4(k, pa + i * k, bq, c + i + j0 * ldc, ldc, rows, cols);
    }
  }
}

}  // namespace txtcls::detail::avx2
#else
#define TXTCLS_SGEMM_AVX2 0
#endif
