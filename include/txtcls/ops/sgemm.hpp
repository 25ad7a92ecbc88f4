#pragma once
// txtcls's own single-precision GEMM micro-kernel, used by packed_gemm.hpp for float when the
// CPU has AVX2 + FMA: register kernels for AVX2 (sgemm_avx2.hpp: 16 x 6 and 16 x 4, ymm) or
// AVX-512 (sgemm_avx512.hpp: 16 x 16 and 16 x 8, zmm), over one set of packed layouts.
//
// Packed layouts (zero padded to whole panels, so the inner loop never branches on edges):
//   A panel p: rows [16p, 16p+16), step k at a[k*16 + r];
//   B panels: kWide columns wide, the last one or two kNarrow wide (BPanels), step k of a panel
//   of width w starting at column c0 at b[c0*k + k*w + c]. A narrow kernel for the last panel
//   keeps the padding small when n is not a multiple of kWide.
// The A layout is the same for both instruction sets: a step of a panel is two ymm or one zmm.
#if defined(__AVX2__) && defined(__FMA__)
#define TXTCLS_SGEMM 1
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

namespace txtcls::detail::sgemm {

inline constexpr int64_t kMR = 16;

inline int64_t panels(int64_t n, int64_t width) { return (n + width - 1) / width; }

// The C tile is read only after the k loop; fetching it first hides a miss to memory (the
// LSTM's gate rows were written long before they are accumulated into).
inline void prefetch_tile(const float* c, int64_t ldc, int64_t m, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    _mm_prefetch(reinterpret_cast<const char*>(c + j * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + j * ldc + m - 1), _MM_HINT_T0);
  }
}

// A streams from L2/L3 (the recurrent weights are re-read every step): the kernels fetch it
// 1 KiB ahead, which runs on into the next panel.
inline void prefetch_a(const float* a) { _mm_prefetch(reinterpret_cast<const char*>(a + 16 * kMR), _MM_HINT_T0); }

}  // namespace txtcls::detail::sgemm

#if defined(__AVX512F__)
#define TXTCLS_SGEMM_AVX512 1
#include "txtcls/ops/sgemm_avx512.hpp"
#else
#define TXTCLS_SGEMM_AVX512 0
#include "txtcls/ops/sgemm_avx2.hpp"
#endif

namespace txtcls::detail::sgemm {

// In-register 8 x 8 transpose: afterwards r[t] holds element t of every input vector.
inline void transpose8x8(__m256 (&r)[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// dst[c * ld + r] = src[r * ls + c] for r < rows, c < cols: a strided transpose, 8 x 8 blocks
// through registers and the edges one float at a time. pack_a uses it for row-major A panels;
// the attention to store column-major blocks (O, dK, dV) as the rows of a result.
inline void transpose(const float* src, int64_t ls, int64_t rows, int64_t cols, float* dst, int64_t ld) {
  int64_t r0 = 0;
  for (; r0 + 8 <= rows; r0 += 8) {
    int64_t c0 = 0;
    for (; c0 + 8 <= cols; c0 += 8) {
      __m256 v[8];
      for (int64_t t = 0; t < 8; ++t) v[t] = _mm256_loadu_ps(src + (r0 + t) * ls + c0);
      transpose8x8(v);  // v[t]: column c0 + t of rows r0 .. r0 + 7
      for (int64_t t = 0; t < 8; ++t) _mm256_storeu_ps(dst + (c0 + t) * ld + r0, v[t]);
    }
    for (; c0 < cols; ++c0)
      for (int64_t r = r0; r < r0 + 8; ++r) dst[c0 * ld + r] = src[r * ls + c0];
  }
  for (int64_t t = 0; t < 8 && r0 + t < rows; ++t)  // the last rows % 8 rows (< 8: a bound GCC sees)
    for (int64_t c = 0; c < cols; ++c) dst[c * ld + r0 + t] = src[(r0 + t) * ls + c];
}

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
    if (cs == 1 && rows == kMR) {  // rows contiguous: step j of row r goes to dst[j * 16 + r]
      transpose(p + i0 * rs, rs, kMR, k, dst, kMR);
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

// How n columns are cut into B panels: `wide` panels of kWide, then `narrow` ones (at most 2) of
// kNarrow, with the least padding. AVX2 (6, 4): n rounded up to even is always 6a + 4b.
// AVX-512 (16, 8): n rounded up to a multiple of 8 is 16a + 8b with b <= 1.
static_assert((kWide == 6 && kNarrow == 4) || kWide == 2 * kNarrow, "BPanels: no plan for these panel widths");
struct BPanels {
  int64_t wide = 0, narrow = 0;
  explicit BPanels(int64_t n) {
    if (n <= 0) return;
    if constexpr (kWide == 6 && kNarrow == 4) {
      const int64_t even = n + (n & 1);
      const int64_t r = even % 6;
      narrow = r == 0 ? 0 : (r == 4 || even < 8) ? 1 : 2;
      wide = std::max<int64_t>(0, (even - 4 * narrow) / 6);
    } else {
      const int64_t units = panels(n, kNarrow);
      wide = units / 2;
      narrow = units % 2;
    }
  }
  int64_t count() const { return wide + narrow; }
  int64_t width(int64_t q) const { return q < wide ? kWide : kNarrow; }
  int64_t first_col(int64_t q) const { return q < wide ? kWide * q : kWide * wide + kNarrow * (q - wide); }
  int64_t padded() const { return kWide * wide + kNarrow * narrow; }
};

// pack_b for a B whose columns are contiguous (rs == 1: a column-major matrix, or dS^T read from
// a tile of dS rows): 8 steps of k by 8 columns at a time, the columns are loaded as vectors and
// transposed in registers (pack_b's generic loop would move one float at a time). A panel is
// cut into groups of 8 columns (16 = 8 + 8 on AVX-512), or is one group (6 or 4 on AVX2).
// Writes steps [k0, k0 + k) of a packed B of depth `depth` (default: the whole of it).
inline void pack_b_columns(float* dst, const float* p, int64_t k, int64_t n, int64_t cs, int64_t depth = -1,
                           int64_t k0 = 0) {
  if (depth < 0) depth = k;
  const BPanels plan(n);
  for (int64_t q = 0; q < plan.count(); ++q) {
    const int64_t w = plan.width(q), j0 = plan.first_col(q), cols = std::min(w, n - j0);
    float* d0 = dst + j0 * depth + k0 * w;
    int64_t i = 0;
    for (; i + 8 <= k; i += 8)
      for (int64_t g = 0; g < w; g += 8) {
        const int64_t gw = std::min<int64_t>(8, w - g);
        __m256 r[8];
        for (int64_t c = 0; c < 8; ++c)
          r[c] = c < gw && g + c < cols ? _mm256_loadu_ps(p + i + (j0 + g + c) * cs) : _mm256_setzero_ps();
        transpose8x8(r);  // r[t]: step i + t of the group's columns
        float* dg = d0 + g;
        if (gw == 8) {
          for (int64_t t = 0; t < 8; ++t) _mm256_storeu_ps(dg + (i + t) * w, r[t]);
        } else if (gw == 6) {
          // Masked stores are slow on AMD: a 6-wide step is stored as 8 floats whose last two are
          // overwritten by the next step; the panel's last step is stored as 4 + 2.
          for (int64_t t = 0; t < 8; ++t) {
            float* d = dg + (i + t) * 6;
            if (k0 + i + t + 1 < depth) {
              _mm256_storeu_ps(d, r[t]);
            } else {
              _mm_storeu_ps(d, _mm256_castps256_ps128(r[t]));
              _mm_storel_pi(reinterpret_cast<__m64*>(d + 4), _mm256_extractf128_ps(r[t], 1));
            }
          }
        } else {  // 4 wide
          for (int64_t t = 0; t < 8; ++t) _mm_storeu_ps(dg + (i + t) * w, _mm256_castps256_ps128(r[t]));
        }
      }
    for (; i < k; ++i)
      for (int64_t c = 0; c < w; ++c) d0[i * w + c] = c < cols ? p[i + (j0 + c) * cs] : 0.0f;
  }
}

// B [k, n] (element (i, j) at p[i*rs + j*cs]) into the panels of BPanels(n). Each case walks the
// source along its contiguous direction.
inline void pack_b(float* dst, const float* p, int64_t k, int64_t n, int64_t rs, int64_t cs) {
  if (rs == 1 && cs != 1) {
    pack_b_columns(dst, p, k, n, cs);
    return;
  }
  const BPanels plan(n);
  for (int64_t q = 0; q < plan.count(); ++q) {
    const int64_t w = plan.width(q), j0 = plan.first_col(q), cols = std::min(w, n - j0);
    float* d0 = dst + j0 * k;
    if (cs == 1) {
      if (cols == kWide) {  // whole wide panel: fixed-length copies the compiler vectorises
        for (int64_t i = 0; i < k; ++i) std::copy_n(p + i * rs + j0, kWide, d0 + i * kWide);
        continue;
      }
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

// C[0:m, 0:n] (column-major, ldc) += packed A panel * B panel q of `plan`, over k steps; with
// !add, C = the product (C is not read).
inline void kernel(const BPanels& plan, int64_t q, int64_t k, const float* a, const float* b, float* c, int64_t ldc,
                   int64_t m, int64_t n, bool add = true) {
  if (plan.width(q) == kWide)
    kernel_wide(k, a, b, c, ldc, m, n, add);
  else
    kernel_narrow(k, a, b, c, ldc, m, n, add);
}

// C [m, n] += packed A rows [i0, i1) (a panel boundary) times every B panel, over k (= when !add).
inline void multiply_rows(int64_t i0, int64_t i1, int64_t m, int64_t n, int64_t k, const float* pa, const float* pb,
                          float* c, int64_t ldc, bool add = true) {
  const BPanels plan(n);
  for (int64_t q = 0; q < plan.count(); ++q) {
    const int64_t j0 = plan.first_col(q), cols = std::min(plan.width(q), n - j0);
    for (int64_t i = i0; i < i1; i += kMR)
      kernel(plan, q, k, pa + i * k, pb + j0 * k, c + i + j0 * ldc, ldc, std::min(kMR, m - i), cols, add);
  }
}

}  // namespace txtcls::detail::sgemm
#else
#define TXTCLS_SGEMM 0
#define TXTCLS_SGEMM_AVX512 0
#endif
