#pragma once
// Float vectors of one width behind one interface, so that the attention's softmax steps
// (ops/attention_tiles.hpp) are written once and instantiated per width: Vec8 (AVX2 + FMA, 8
// lanes) and, with AVX-512F, Vec16 (16 lanes). Each is a struct of static functions over its
// register type V; vexp<S> is the vectorised exp they share.
#include <cstdint>

#if defined(__AVX2__) && defined(__FMA__)
#define TXTCLS_VEC_AVX2 1
#include <immintrin.h>
#else
#define TXTCLS_VEC_AVX2 0
#endif
#if TXTCLS_VEC_AVX2 && defined(__AVX512F__)
#define TXTCLS_VEC_AVX512 1
#else
#define TXTCLS_VEC_AVX512 0
#endif

namespace txtcls::detail::vec {

// Below this argument exp() is no longer a normal number: vexp writes exact 0 instead.
inline constexpr float kExpFloorF = -87.33654475f;

#if TXTCLS_VEC_AVX2
struct Vec8 {
  using V = __m256;
  static constexpr int64_t kLanes = 8;
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V x) { _mm256_storeu_ps(p, x); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  // max/min return their second operand when either is NaN: callers put the data there.
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V min(V a, V b) { return _mm256_min_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V fnmadd(V a, V b, V c) { return _mm256_fnmadd_ps(a, b, c); }
  static V round(V x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // 2^n for integral n whose result is a normal number.
  static V pow2(V n) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
  }
  // y, with 0 in the lanes where x < lo (a NaN x keeps y).
  static V zero_below(V y, V x, V lo) { return _mm256_andnot_ps(_mm256_cmp_ps(x, lo, _CMP_LT_OQ), y); }
  // x == y ? if_equal : otherwise, per lane.
  static V select_equal(V x, V y, V if_equal, V otherwise) {
    return _mm256_blendv_ps(otherwise, if_equal, _mm256_cmp_ps(x, y, _CMP_EQ_OQ));
  }
  // Whether some lane of a differs from b's (NaN differs).
  static bool any_differ(V a, V b) { return _mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_NEQ_UQ)) != 0; }
};
#endif

#if TXTCLS_VEC_AVX512
struct Vec16 {
  using V = __m512;
  static constexpr int64_t kLanes = 16;
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V x) { _mm512_storeu_ps(p, x); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V min(V a, V b) { return _mm512_min_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V fnmadd(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); }
  static V round(V x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static V pow2(V n) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
  }
  static V zero_below(V y, V x, V lo) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, lo, _CMP_NLT_UQ), y); }
  static V select_equal(V x, V y, V if_equal, V otherwise) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, y, _CMP_EQ_OQ), otherwise, if_equal);
  }
  static bool any_differ(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_NEQ_UQ) != 0; }
};
#endif

// exp per lane: Cephes' expf (range reduction by ln 2 in two parts, degree-6 polynomial),
// within 2 ulp of std::exp; 0 below kExpFloorF, NaN stays NaN. The same steps at every width, so
// a lane's value does not depend on it. Arguments here are <= ~0.
template <class S>
typename S::V vexp(typename S::V x) {
  const typename S::V lo = S::set1(kExpFloorF), arg = x;
  x = S::min(S::set1(88.0f), S::max(lo, x));
  const typename S::V n = S::round(S::mul(x, S::set1(1.44269504088896341f)));
  typename S::V r = S::fnmadd(n, S::set1(0.693359375f), x);
  r = S::fnmadd(n, S::set1(-2.12194440e-4f), r);
  typename S::V y = S::set1(1.9875691500e-4f);
  y = S::fmadd(y, r, S::set1(1.3981999507e-3f));
  y = S::fmadd(y, r, S::set1(8.3334519073e-3f));
  y = S::fmadd(y, r, S::set1(4.1665795894e-2f));
  y = S::fmadd(y, r, S::set1(1.6666665459e-1f));
  y = S::fmadd(y, r, S::set1(5.0000001201e-1f));
  y = S::fmadd(y, S::mul(r, r), S::add(r, S::set1(1.0f)));
  return S::zero_below(S::mul(y, S::pow2(n)), arg, lo);
}

}  // namespace txtcls::detail::vec
