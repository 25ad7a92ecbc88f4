#pragma once
// Building blocks of the fused attention kernels (ops/attention_kernels.hpp):
//   - the problem description (operands as strided rows, score terms with broadcast strides);
//   - block products on packed operands (packed_gemm.hpp's kernels, one thread, no allocation);
//   - a vectorised exp that writes exact zeros below the smallest normal result;
//   - the score terms (bias, additive mask, boolean mask, causal diagonal) and the dropout
//     factors of one tile.
// A tile holds the scores of query rows [i0, i0 + rows) against keys [j0, j0 + cols); element
// (i, j) lives at s[i * ti + j * tj]. The forward runs queries down the columns (ti = 1), the
// backward keys (tj = 1): in each, the tile is the left operand of the products that follow, in
// the micro-kernel's packed layout (16-row panels, see kPanelTiles) when it has one.
#include <cmath>
#include <cstdint>
#include <limits>

#include "txtcls/ops/dropout.hpp"
#include "txtcls/ops/packed_gemm.hpp"
#include "txtcls/ops/vec_lanes.hpp"  // Vec8, Vec16, vexp; TXTCLS_VEC_AVX2 / TXTCLS_VEC_AVX512

namespace txtcls::detail::attn {

// A [B, H, L, W] operand with unit stride along W: row (b, h, i) starts at p + b*sb + h*sh + i*si.
template <class U>
struct Rows {
  U* p = nullptr;
  int64_t sb = 0, sh = 0, si = 0;
  U* row(int64_t b, int64_t h, int64_t i) const { return p + b * sb + h * sh + i * si; }
};

// A term broadcast to the scores [B, H, Lq, Lk] (bias, additive mask, boolean mask, or the bias
// gradient): element (b, h, i, j) at p[b*sb + h*sh + i*si + j*sj]; p is null when absent.
template <class U>
struct Term {
  U* p = nullptr;
  int64_t sb = 0, sh = 0, si = 0, sj = 0;
  explicit operator bool() const { return p != nullptr; }
  U* at(int64_t b, int64_t h, int64_t i, int64_t j) const { return p + b * sb + h * sh + i * si + j * sj; }
};

template <class T>
struct Problem {
  int64_t B = 0, H = 0, Lq = 0, Lk = 0, D = 0, Dv = 0;
  Rows<const T> q, k, v;
  T scale = 1;
  const int64_t* key_lengths = nullptr;  // [B], or null
  bool causal = false;
  int64_t diag = 0;  // Lk - Lq: under `causal`, query i sees keys j <= i + diag
  Term<const T> bias, mask;
  Term<const uint8_t> allowed;
  double dropout_p = 0;  // dropout on the probabilities; mask element (b,h,i,j) = keep(seed, base, index)
  uint64_t seed = 0, base = 0;
  T drop_scale = 1;
  int64_t bq = 64, bk = 64;  // query rows and keys per tile

  bool dropout() const { return dropout_p > 0; }
  int64_t key_end(int64_t b) const { return key_lengths ? key_lengths[b] : Lk; }
  // Keys [0, end) can be visible to some query of [i0, i1).
  int64_t key_end(int64_t b, int64_t i1) const {
    int64_t e = key_end(b);
    if (causal) e = std::min(e, std::max<int64_t>(0, i1 + diag));
    return e;
  }
  // Whether every key of [j0, j1) is on or below the causal diagonal for query i0 (hence for all
  // later queries): such a tile needs no per-element causal mask.
  bool below_diagonal(int64_t i0, int64_t j1) const { return !causal || j1 - 1 <= i0 + diag; }
  // Index of dropout mask element (b, h, i, j): the row-major position in [B, H, Lq, Lk].
  uint64_t drop_index(int64_t b, int64_t h, int64_t i, int64_t j) const {
    return static_cast<uint64_t>(((b * H + h) * Lq + i) * Lk + j);
  }
};

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// ---------------------------------------------------------------- block products
// Elements reserved for one packed operand: a multiple of 64 bytes, so operands laid out one
// after another in a buffer all start aligned (the packing routines store aligned vectors).
template <class T>
int64_t lhs_size(int64_t m, int64_t k) {
  return round_up(packed_a_size<T>(m, k), 64 / static_cast<int64_t>(sizeof(T)));
}
template <class T>
int64_t rhs_size(int64_t k, int64_t n) {
  return round_up(packed_b_size<T>(k, n), 64 / static_cast<int64_t>(sizeof(T)));
}

// Whether score tiles are kept in the float kernel's packed-left-operand layout (16-row panels,
// ops/sgemm.hpp), which saves packing P and dS before the products that consume them. Other
// kernels (Eigen's, for double) pack.
template <class T>
inline constexpr bool kPanelTiles = gemm_kernel<T> == GemmKernel::Sgemm;

// Packs A [m, k] (left operand). Without a packed kernel, a row-major copy.
template <class T>
void pack_lhs(T* dst, MatRef<T> a) {
  pack_a_block(dst, a);
}


#if TXTCLS_SGEMM
// Packs B [k, n] from a panel tile (multiply's `panels` layout): element (kk, c) at
// tile[(kk / 16) * panel + kk % 16 + 16 * c]; each 16 steps of k are one block of contiguous columns.
inline void pack_b_from_panels(float* dst, const float* tile, int64_t k, int64_t n, int64_t panel) {
  for (int64_t k0 = 0; k0 < k; k0 += 16)
    sgemm::pack_b_columns(dst, tile + (k0 / 16) * panel, std::min<int64_t>(16, k - k0), n, 16, k, k0);
}
#endif

// Writes a column-major block out as rows: dst[r * ld + c] = src[r + c * rows] for r < rows,
// c < cols. The kernels accumulate O, dK and dV column-major (as the products leave them); this
// stores them as the rows of the result (for float through sgemm::transpose's register blocks).
template <class T>
void column_major_to_rows(const T* src, int64_t rows, int64_t cols, T* dst, int64_t ld) {
#if TXTCLS_SGEMM
  if constexpr (std::is_same_v<T, float>) {
    sgemm::transpose(src, rows, cols, rows, dst, ld);  // src's columns are the rows it reads
    return;
  }
#endif
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[r * ld + c] = src[r + c * rows];
}

// Packs B [k, n] (right operand). Without a packed kernel, a row-major copy.
template <class T>
void pack_rhs(T* dst, MatRef<T> b) {
  if constexpr (gemm_kernel<T> == GemmKernel::EigenProduct) {
    for (int64_t i = 0; i < b.rows; ++i)
      for (int64_t j = 0; j < b.cols; ++j) dst[i * b.cols + j] = b.p[i * b.rs + j * b.cs];
  } else {
    pack_b_block(dst, b);
  }
}

// C [m, n] (column-major) = or += packed A [m, k] * packed B [k, n]; one thread.
// With the float kernel (ops/sgemm.hpp): while A is at most sgemm::kLhsSweepBytes (16 KiB with
// 6-wide AVX2 panels, 64 KiB with 16-wide AVX-512 ones), B panels outside and A inside, as
// sgemm::multiply_rows does; a larger A runs A panels outside, so each stays in L1 while B
// streams past it. (On Zen 3 the two orders measured the same at this op's sizes, within the
// noise of a shared machine; on an AVX-512 Xeon B outside was 8-13% faster at 64 x 128.)
//
// panels (kPanelTiles only): C is written in the layout of a packed left operand instead, rows
// [16 p, 16 p + 16) as a 16 x n column-major block at c.p + 16 p n (c.ld unused), so that a tile
// of scores is, once turned into probabilities, already packed for the next product. The kernel
// never writes rows past m of the last block; they are zero when the product does not accumulate.
template <class T>
void multiply(ColMajorOut<T> c, const T* pa, const T* pb, int64_t m, int64_t n, int64_t k, bool accumulate,
              bool panels = false) {
  // Our kernels can write the product over C instead of adding to a zeroed C; in the panel
  // layout only when m fills whole panels, since the padding rows must then be zero.
  const bool overwrite = !accumulate && kOverwriteKernel<T> && m > 0 && n > 0 && k > 0 && (!panels || m % 16 == 0);
  if (!accumulate && !overwrite) {
    if (panels) std::fill(c.p, c.p + round_up(m, 16) * n, T(0));
    else zero_result(c, m, n);
  }
  if (m == 0 || n == 0 || k == 0) return;
  if constexpr (gemm_kernel<T> == GemmKernel::Sgemm) {
#if TXTCLS_SGEMM
    const sgemm::BPanels plan(n);
    auto tile = [&](int64_t i, int64_t q) {
      const int64_t rows = std::min(sgemm::kMR, m - i), j0 = plan.first_col(q), cols = std::min(plan.width(q), n - j0);
      float* ct = panels ? c.p + i * n + j0 * sgemm::kMR : c.p + i + j0 * c.ld;
      sgemm::kernel(plan, q, k, pa + i * k, pb + j0 * k, ct, panels ? sgemm::kMR : c.ld, rows, cols, !overwrite);
    };
    if (m * k * static_cast<int64_t>(sizeof(float)) <= sgemm::kLhsSweepBytes) {
      for (int64_t q = 0; q < plan.count(); ++q)
        for (int64_t i = 0; i < m; i += sgemm::kMR) tile(i, q);
    } else {
      for (int64_t i = 0; i < m; i += sgemm::kMR)
        for (int64_t q = 0; q < plan.count(); ++q) tile(i, q);
    }
#endif
  } else if constexpr (gemm_kernel<T> == GemmKernel::EigenProduct) {
    gemm_reference(c, row_major_ref(pa, m, k, k), row_major_ref(pb, k, n, n), true);
  } else {
    multiply_packed(c, pa, pb, m, n, k, kGemmRowGroup);
  }
}

// ---------------------------------------------------------------- exp
// Below this argument exp() is no longer a normal number: the kernels write exact 0 instead, so
// masked scores (-inf) give 0 and no denormal reaches the products (they are slow on x86).
template <class T>
inline constexpr T kExpFloor = std::is_same_v<T, float> ? T(vec::kExpFloorF) : T(-708.3964185322641);

template <class T>
T exp_or_zero(T a) {
  return a < kExpFloor<T> ? T(0) : std::exp(a);
}

// Replaces x[0, n) (arguments) by their exp, flushed below kExpFloor, through Eigen's vectorised exp.
template <class T>
void exp_in_place(T* x, int64_t n) {
  using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
  constexpr int64_t kChunk = 64;
  alignas(64) T arg[kChunk];
  for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
    const int64_t w = std::min(kChunk, n - i0);
    std::copy(x + i0, x + i0 + w, arg);
    Eigen::Map<Arr>(x + i0, w) = Eigen::Map<const Arr>(arg, w).exp();
#pragma omp simd
    for (int64_t i = 0; i < w; ++i) x[i0 + i] = arg[i] < kExpFloor<T> ? T(0) : x[i0 + i];
  }
}

#if TXTCLS_VEC_AVX2
// exp_sub and probs_and_score_grad over whole vectors of S from x + i on; return where they stopped.
template <class S>
int64_t exp_sub_lanes(float* x, float m, int64_t i, int64_t n) {
  const typename S::V mv = S::set1(m);
  for (; i + S::kLanes <= n; i += S::kLanes) S::store(x + i, vec::vexp<S>(S::sub(S::load(x + i), mv)));
  return i;
}
template <class S>
int64_t probs_and_score_grad_lanes(float* p, float* u, float lse, float delta, int64_t j, int64_t n) {
  const typename S::V lv = S::set1(lse), dv = S::set1(delta);
  for (; j + S::kLanes <= n; j += S::kLanes) {
    const typename S::V e = vec::vexp<S>(S::sub(S::load(p + j), lv));
    S::store(p + j, e);
    S::store(u + j, S::mul(e, S::sub(S::load(u + j), dv)));
  }
  return j;
}
#endif

// x[i] = exp(x[i] - m) (a backward tile column: one query, many keys).
template <class T>
void exp_sub(T* x, T m, int64_t n) {
#if TXTCLS_VEC_AVX2
  if constexpr (std::is_same_v<T, float>) {
    int64_t i = 0;
#if TXTCLS_VEC_AVX512
    i = exp_sub_lanes<vec::Vec16>(x, m, i, n);
#endif
    i = exp_sub_lanes<vec::Vec8>(x, m, i, n);
    for (; i < n; ++i) x[i] = exp_or_zero(x[i] - m);
    return;
  }
#endif
#pragma omp simd
  for (int64_t r = 0; r < n; ++r) x[r] -= m;
  exp_in_place(x, n);
}

// ---------------------------------------------------------------- softmax steps
// The online-softmax step of one forward row (its scores s[j * stride], one key block). m (the
// running max) takes the block's max, s becomes exp(S - m), l = l * alpha + rowsum(s), and the
// returned alpha = exp(m_old - m_new) rescales what the row accumulated before. A row with
// nothing visible yet keeps m = -inf, s = 0, alpha = 1.
template <class T>
T softmax_row_step(T* s, int64_t stride, int64_t cols, T& m, T& l) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  T mx = m;
  for (int64_t j = 0; j < cols; ++j) mx = std::max(mx, s[j * stride]);
  const T alpha = mx == m ? T(1) : std::exp(m - mx);  // m = -inf, mx finite: 0
  const T mu = mx == kNegInf ? T(0) : mx;
  T sum = 0;
  for (int64_t j = 0; j < cols; ++j) sum += s[j * stride] = exp_or_zero(s[j * stride] - mu);
  m = mx;
  l = l * alpha + sum;
  return alpha;
}

#if TXTCLS_VEC_AVX2
// softmax_step's vector body: S::kLanes rows whose scores are contiguous at si + j * cs, their
// statistics in registers across the keys. Returns whether some alpha is not 1.
template <class S>
bool softmax_rows(float* si, int64_t cols, int64_t cs, float* m, float* l, float* alpha) {
  using V = typename S::V;
  const V one = S::set1(1.0f), zero = S::set1(0.0f), m_old = S::load(m);
  // Four independent max chains: one chain waits out vmaxps's latency at every key.
  V mx0 = m_old, mx1 = m_old, mx2 = m_old, mx3 = m_old;
  int64_t j = 0;
  for (; j + 4 <= cols; j += 4) {
    const float* c0 = si + j * cs;
    mx0 = S::max(mx0, S::load(c0));
    mx1 = S::max(mx1, S::load(c0 + cs));
    mx2 = S::max(mx2, S::load(c0 + 2 * cs));
    mx3 = S::max(mx3, S::load(c0 + 3 * cs));
  }
  for (; j < cols; ++j) mx0 = S::max(mx0, S::load(si + j * cs));
  const V mx = S::max(S::max(mx0, mx1), S::max(mx2, mx3));
  const V a = S::select_equal(m_old, mx, one, vec::vexp<S>(S::sub(m_old, mx)));
  // A row with nothing visible yet keeps m = -inf: its scores are shifted by 0.
  const V mu = S::select_equal(mx, S::set1(-std::numeric_limits<float>::infinity()), zero, mx);
  V sum0 = zero, sum1 = zero;
  for (j = 0; j + 2 <= cols; j += 2) {
    float* c0 = si + j * cs;
    const V e0 = vec::vexp<S>(S::sub(S::load(c0), mu)), e1 = vec::vexp<S>(S::sub(S::load(c0 + cs), mu));
    S::store(c0, e0);
    S::store(c0 + cs, e1);
    sum0 = S::add(sum0, e0);
    sum1 = S::add(sum1, e1);
  }
  if (j < cols) {
    float* c0 = si + j * cs;
    const V e0 = vec::vexp<S>(S::sub(S::load(c0), mu));
    S::store(c0, e0);
    sum0 = S::add(sum0, e0);
  }
  S::store(m, mx);
  S::store(alpha, a);
  S::store(l, S::fmadd(S::load(l), a, S::add(sum0, sum1)));
  return S::any_differ(a, one);
}
#endif

// The same step for every row of a forward tile, whose element (i, j) is at
// s[(i / 16) * panel + i % 16 + j * cs]: a column-major tile has panel = 16 and cs = rows, a panel
// tile (kPanelTiles) panel = 16 * cols and cs = 16. Returns whether some alpha differs from 1.
// The vector paths keep 16 (AVX-512) or 8 (AVX2) rows' statistics in registers across the block's keys.
template <class T>
bool softmax_step(T* s, int64_t rows, int64_t cols, int64_t panel, int64_t cs, T* m, T* l, T* alpha) {
  int64_t i = 0;
  bool rescale = false;
  auto row = [&](int64_t r) { return s + (r / 16) * panel + r % 16; };
#if TXTCLS_VEC_AVX2
  // Groups of rows are contiguous in either layout (16 rows from a multiple of 16, 8 from a multiple of 8).
  if constexpr (std::is_same_v<T, float>) {
#if TXTCLS_VEC_AVX512
    for (; i + 16 <= rows; i += 16) rescale = softmax_rows<vec::Vec16>(row(i), cols, cs, m + i, l + i, alpha + i) || rescale;
#endif
    for (; i + 8 <= rows; i += 8) rescale = softmax_rows<vec::Vec8>(row(i), cols, cs, m + i, l + i, alpha + i) || rescale;
  }
#endif
  for (; i < rows; ++i) {
    alpha[i] = softmax_row_step(row(i), cs, cols, m[i], l[i]);
    rescale = rescale || alpha[i] != T(1);
  }
  return rescale;
}

// One backward tile column (query i, its keys contiguous): p = exp(s - lse) in place and
// u = p * (u - delta): u enters as dP = dO V^T and leaves as dS (no dropout).
template <class T>
void probs_and_score_grad(T* p, T* u, T lse, T delta, int64_t n) {
#if TXTCLS_VEC_AVX2
  if constexpr (std::is_same_v<T, float>) {
    int64_t j = 0;
#if TXTCLS_VEC_AVX512
    j = probs_and_score_grad_lanes<vec::Vec16>(p, u, lse, delta, j, n);
#endif
    j = probs_and_score_grad_lanes<vec::Vec8>(p, u, lse, delta, j, n);
    for (; j < n; ++j) {
      p[j] = exp_or_zero(p[j] - lse);
      u[j] = p[j] * (u[j] - delta);
    }
    return;
  }
#endif
  exp_sub(p, lse, n);
#pragma omp simd
  for (int64_t r = 0; r < n; ++r) u[r] = p[r] * (u[r] - delta);
}

// ---------------------------------------------------------------- score terms
template <class T>
struct Tile {
  T* s;
  int64_t ti, tj;          // element (i, j) at s[i * ti + j * tj]
  int64_t rows, cols;      // queries, keys
  int64_t i0, j0;          // first query, first key
};

// Adds the bias and the additive mask to a tile of scaled scores, then writes -inf where the
// boolean mask or the causal diagonal hides a key.
template <class T>
void apply_terms(const Problem<T>& p, const Tile<T>& t, int64_t b, int64_t h) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  const bool diagonal = !p.below_diagonal(t.i0, t.j0 + t.cols);
  if (!p.bias && !p.mask && !p.allowed && !diagonal) return;
  for (int64_t i = 0; i < t.rows; ++i) {
    T* row = t.s + i * t.ti;
    const int64_t qi = t.i0 + i;
    for (const Term<const T>* term : {&p.bias, &p.mask}) {
      if (!*term) continue;
      const T* src = term->at(b, h, qi, t.j0);
      const int64_t sj = term->sj;
      for (int64_t j = 0; j < t.cols; ++j) row[j * t.tj] += src[j * sj];
    }
    if (p.allowed) {
      const uint8_t* src = p.allowed.at(b, h, qi, t.j0);
      const int64_t sj = p.allowed.sj;
      for (int64_t j = 0; j < t.cols; ++j)
        if (!src[j * sj]) row[j * t.tj] = kNegInf;
    }
    if (diagonal)  // keys after qi + diag are hidden
      for (int64_t j = std::max<int64_t>(0, qi + p.diag + 1 - t.j0); j < t.cols; ++j) row[j * t.tj] = kNegInf;
  }
}

// The dropout factor (0 or 1 / (1 - p)) of mask element `index`: the rule of ops/dropout.hpp.
template <class T>
T drop_factor(const Problem<T>& p, uint64_t index) {
  return dropout_keep(p.seed, p.base, index, p.dropout_p) ? p.drop_scale : T(0);
}

}  // namespace txtcls::detail::attn
