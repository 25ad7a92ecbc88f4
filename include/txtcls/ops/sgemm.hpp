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

// C[0:m, 0:n] (column-major, ldc) += packed A panel * B panel q of `plan`, over k steps.
inline void kernel(const BPanels& plan, int64_t q, int64_t k, const float* a, const float* b, float* c, int64_t ldc,
                   int64_t m, int64_t n) {
  if (plan.width(q) == kWide)
    kernel_wide(k, a, b, c, ldc, m, n);
  else
    kernel_narrow(k, a, b, c, ldc, m, n);
}

// C [m, n] += packed A rows [i0, i1) (a panel boundary) times every B panel, over k.
inline void multiply_rows(int64_t i0, int64_t i1, int64_t m, int64_t n, int64_t k, const float* pa, const float* pb,
                          float* c, int64_t ldc) {
  const BPanels plan(n);
  for (int64_t q = 0; q < plan.count(); ++q) {
    const int64_t j0 = plan.first_col(q), cols = std::min(plan.width(q), n - j0);
    for (int64_t i = i0; i < i1; i += kMR)
      kernel(plan, q, k, pa + i * k, pb + j0 * k, c + i + j0 * ldc, ldc, std::min(kMR, m - i), cols);
  }
}

}  // namespace txtcls::detail::sgemm
#else
#define TXTCLS_SGEMM 0
#define TXTCLS_SGEMM_AVX512 0
#endif
