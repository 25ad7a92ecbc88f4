#pragma once
// CPU kernels of the fused Transformer-XL / XLNet relative attention
// (ops/relative_attention_fused.hpp), on the packed blocks, online softmax and dropout rule of the
// fused scaled-dot-product attention (ops/attention_tiles.hpp, ops/attention_kernels.hpp).
//
// Scores of query i against key j (Q^w = scale (q + r_w_bias), Q^r = scale (q + r_r_bias)):
//   S[i, j] = Q^w_i . k_j  +  Q^r_r . kr_c  +  scale (w0 e0_i + w1 e1_i)
// with c = Lq - i + j (HF's rel_shift_bnij: column c of row i of (q + r_r_bias) kr^T), r = i while
// c < P, and the segment weights w of (i, j) (one-hot "segments differ" or HF's seg_mat).
//
// The position term by bands. A tile of queries [i0, i0 + rows) and keys [j0, j0 + cols) reads
// the positions c in [cmin + j0, cmin + j0 + rows + cols - 2], cmin = Lq - i0 - rows + 1: a band
// of rows + cols - 1 positions. With t = c - cmin (the "strip column" of the query block), element
// (i0 + ii, j) reads t = (rows - 1 - ii) + j. The kernels keep, for a window of strip columns,
//   G^T[t, ii] = Q^r_{i0 + ii} . kr_{cmin + t}          (one GEMM: KR_window (Q^r_block)^T)
// and add to score (ii, j) the element (rows - 1 - ii + j, ii): for query ii a contiguous run of
// column ii of G^T, i.e. one diagonal of G per key. Successive key tiles of a query block share
// rows - 1 positions, so the window slides: the shared columns move to the front, only the cols
// new ones are multiplied, and each position of the block's strip is computed once. The position
// term then costs (Lk + rows - 1) / Lk times the content term, not (rows + cols - 1) / cols; the
// scratch is one window, O(bq (bq + bk)), never the [Lq, P] scores.
//
// Backward, the transpose of that gather: dS of the tile is added into a window dG^T at the same
// places (a scatter along the diagonals); a window column no later tile of the block touches is
// final and leaves through two GEMMs, dKR[c] += dG^T[t, :] Q^r_block (all queries of the block
// that read position c) and dQ^r_block += dG KR_window.
//
// Wrapped positions. When P < Lq + Lk (attn_type "uni": P = Lk + 1), HF's reshape reads past the
// end of row i for c >= P: the flat index Lq + i (P - 1) + j = i P + c falls in row r = i + c / P,
// column c % P. Those scores (keys j > mlen + i, which XLNet's causal mask hides) are computed one
// by one where they matter: for visible keys, and in backward where their dS is not zero (rows
// whose every key is hidden). The band holds zeros there.
//
// Masks follow HF's additive -1e30: a hidden key of a row that sees some key gets probability
// exactly 0 (HF: exp(-1e30 - max) = 0); a row whose every key is hidden has all scores equal to
// -1e30 up to rounding, so HF's softmax is uniform over the keys and the gradient still flows
// through every score. The kernels write 0 for every key of such a row (the same softmax: a
// constant shift) and never skip a tile of its block; dS then flows as in HF. Tiles whose keys
// are all hidden, in blocks without such rows, are skipped (about half of them under "uni").
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "txtcls/ops/attention_kernels.hpp"

namespace txtcls::detail::relattn {

using attn::kPanelTiles;
using attn::lhs_size;
using attn::multiply;
using attn::pack_lhs;
using attn::pack_rhs;
using attn::rhs_size;
using attn::round_up;
using attn::Rows;
using attn::Term;

template <class T>
struct Problem {
  int64_t B = 0, H = 0, Lq = 0, Lk = 0, P = 0, D = 0, Dv = 0;
  Rows<const T> q, k, v;
  Rows<const T> kr;                // [Br, H, P, D]; sb == 0 when the batch shares one set
  const T* r_w_bias = nullptr;     // [H, D], contiguous
  const T* r_r_bias = nullptr;     // [H, D]
  const T* r_s_bias = nullptr;     // [H, D]; null: no segment term
  const T* seg_embed = nullptr;    // [2, H, D]
  const int64_t* seg_q = nullptr;  // [B, Lq] and [B, Lk] segment ids (contiguous), or null:
  const int64_t* seg_k = nullptr;  //   then seg_mat gives the weights
  Term<const T> seg_mat;           // weight of seg_embed[0] for (b, -, i, j); + seg_mat_s: of seg_embed[1]
  int64_t seg_mat_s = 0;
  Term<const uint8_t> mask;        // nonzero = hidden
  bool causal = false;             // hides j > i + (Lk - Lq)
  T scale = 1;
  double dropout_p = 0;
  uint64_t seed = 0, base = 0;
  T drop_scale = 1;
  int64_t bq = 64, bk = 64;

  bool segments() const { return seg_embed != nullptr; }
  bool dropout() const { return dropout_p > 0; }
  bool masked(int64_t b, int64_t h, int64_t i, int64_t j) const {
    return (causal && j > i + (Lk - Lq)) || (mask && *mask.at(b, h, i, j) != 0);
  }
  // The rule of ops/dropout.hpp on the row-major index of the probabilities [B, H, Lq, Lk].
  T drop_factor(int64_t b, int64_t h, int64_t i, int64_t j) const {
    const auto index = static_cast<uint64_t>(((b * H + h) * Lq + i) * Lk + j);
    return dropout_keep(seed, base, index, dropout_p) ? drop_scale : T(0);
  }
  // The first key of query i whose position column c = Lq - i + j wraps (c >= P).
  int64_t first_wrapped_key(int64_t i) const { return P - Lq + i; }
};

// ---------------------------------------------------------------- visibility
// Which tiles hold a visible key and which rows hide every key, from the mask and the causal
// rule, per distinct mask slice (batch and head only where the mask has those dims).
struct Visibility {
  static constexpr uint8_t kHidden = 0, kMixed = 1, kVisible = 2;
  int64_t nb = 1, nh = 1, Lq = 0, nqb = 0, nkb = 0;
  bool any_masked = false;
  std::vector<uint8_t> tile;         // [nb, nh, nqb, nkb]
  std::vector<uint8_t> empty;        // [nb, nh, Lq]: the row hides every key
  std::vector<uint8_t> block_empty;  // [nb, nh, nqb]: the query block holds such a row

  int64_t slot(int64_t b, int64_t h) const { return (nb == 1 ? 0 : b) * nh + (nh == 1 ? 0 : h); }
  uint8_t tile_state(int64_t b, int64_t h, int64_t qb, int64_t kb) const {
    return any_masked ? tile[static_cast<size_t>((slot(b, h) * nqb + qb) * nkb + kb)] : kVisible;
  }
  bool row_empty(int64_t b, int64_t h, int64_t i) const {
    return any_masked && empty[static_cast<size_t>(slot(b, h) * Lq + i)] != 0;
  }
  bool block_has_empty(int64_t b, int64_t h, int64_t qb) const {
    return any_masked && block_empty[static_cast<size_t>(slot(b, h) * nqb + qb)] != 0;
  }
};

template <class T>
Visibility visibility(const Problem<T>& p) {
  Visibility v;
  v.Lq = p.Lq;
  v.nqb = (p.Lq + p.bq - 1) / p.bq;
  v.nkb = (p.Lk + p.bk - 1) / p.bk;
  if (!p.mask && !p.causal) return v;
  v.any_masked = true;
  v.nb = p.mask && p.mask.sb != 0 ? p.B : 1;
  v.nh = p.mask && p.mask.sh != 0 ? p.H : 1;
  const int64_t nqb = v.nqb, nkb = v.nkb, blocks = v.nb * v.nh * nqb;
  v.tile.assign(static_cast<size_t>(blocks * nkb), Visibility::kHidden);
  v.empty.assign(static_cast<size_t>(v.nb * v.nh * p.Lq), 0);
  v.block_empty.assign(static_cast<size_t>(blocks), 0);
#pragma omp parallel for schedule(dynamic) if (v.nb * v.nh * p.Lq * p.Lk > kParallelGrain)
  for (int64_t t = 0; t < blocks; ++t) {
    const int64_t s = t / nqb, qb = t % nqb, b = s / v.nh, h = s % v.nh;
    std::vector<uint8_t> any_visible(static_cast<size_t>(nkb), 0), any_hidden(static_cast<size_t>(nkb), 0);
    for (int64_t i = qb * p.bq; i < std::min(p.Lq, (qb + 1) * p.bq); ++i) {
      int64_t visible = 0;
      for (int64_t kb = 0; kb < nkb; ++kb) {
        const int64_t j0 = kb * p.bk, j1 = std::min(p.Lk, j0 + p.bk);
        int64_t n = 0;
        for (int64_t j = j0; j < j1; ++j) n += p.masked(b, h, i, j) ? 0 : 1;
        visible += n;
        any_visible[kb] |= n > 0;
        any_hidden[kb] |= n < j1 - j0;
      }
      if (visible == 0) {
        v.empty[static_cast<size_t>(s * p.Lq + i)] = 1;
        v.block_empty[static_cast<size_t>(t)] = 1;
      }
    }
    for (int64_t kb = 0; kb < nkb; ++kb)
      v.tile[static_cast<size_t>(t * nkb + kb)] = !any_visible[kb] ? Visibility::kHidden
                                                  : any_hidden[kb]  ? Visibility::kMixed
                                                                    : Visibility::kVisible;
  }
  return v;
}

// ---------------------------------------------------------------- the position window
// G^T (or dG^T) of one query block for the strip columns [w0, w1): element (t, ii) at
// col(ii)[t - w0]; one column per query, ld >= rows + cols - 1 of any tile.
template <class T>
struct Band {
  int64_t ld = 0, w0 = 0, w1 = 0;
  AlignedVec<T> g;
  Band(int64_t width, int64_t rows) : ld(width), g(static_cast<size_t>(std::max<int64_t>(1, width * rows))) {}
  T* col(int64_t ii) { return g.data() + ii * ld; }
  const T* col(int64_t ii) const { return g.data() + ii * ld; }
  void reset(int64_t t) { w0 = w1 = t; }
  // Forgets the columns before t (w0 <= t <= w1) and moves the others to the front.
  void drop_before(int64_t t, int64_t rows) {
    const int64_t shift = t - w0, keep = w1 - t;
    if (shift > 0 && keep > 0)
      for (int64_t ii = 0; ii < rows; ++ii) std::memmove(col(ii), col(ii) + shift, static_cast<size_t>(keep) * sizeof(T));
    w0 = t;
  }
};

// Strip columns [a, e) of G^T (w0 <= a, e - w0 <= ld): Q^r_i . kr_{cmin + t} by one GEMM of the
// position keys (left) and the block's packed (Q^r)^T (right); zero where cmin + t >= P (wrapped).
template <class T>
void fill_band(const Problem<T>& p, int64_t b, int64_t h, int64_t cmin, int64_t rows, Band<T>& g, int64_t a,
               int64_t e, const T* qrt, T* kra) {
  const int64_t n = e - a, valid = std::clamp<int64_t>(p.P - (cmin + a), 0, n);
  if (valid > 0) {
    pack_lhs(kra, MatRef<T>{p.kr.row(b, h, cmin + a), valid, p.D, p.kr.si, 1});
    multiply<T>({g.col(0) + (a - g.w0), g.ld}, kra, qrt, valid, rows, p.D, false);
  }
  if (valid < n)
    for (int64_t ii = 0; ii < rows; ++ii) std::fill(g.col(ii) + (a - g.w0) + valid, g.col(ii) + (e - g.w0), T(0));
}

// Makes the window hold the strip columns of the tile at key j0: [j0, j0 + cols + rows - 1).
template <class T>
void advance_band(const Problem<T>& p, int64_t b, int64_t h, int64_t cmin, int64_t rows, int64_t j0, int64_t cols,
                  Band<T>& g, const T* qrt, T* kra) {
  const int64_t end = j0 + cols + rows - 1;
  if (j0 < g.w0 || j0 >= g.w1) g.reset(j0);  // nothing to keep (first tile, or tiles skipped)
  else g.drop_before(j0, rows);
  if (end > g.w1) {
    fill_band(p, b, h, cmin, rows, g, g.w1, end, qrt, kra);
    g.w1 = end;
  }
}

// ---------------------------------------------------------------- score terms
// scale (q_i + bias) for the rows of a query block, row-major [rows, D].
template <class T>
void biased_queries(const Problem<T>& p, int64_t b, int64_t h, int64_t i0, int64_t rows, const T* bias, T* dst) {
  const T* bh = bias + h * p.D;
  for (int64_t r = 0; r < rows; ++r) {
    const T* src = p.q.row(b, h, i0 + r);
    for (int64_t d = 0; d < p.D; ++d) dst[r * p.D + d] = p.scale * (src[d] + bh[d]);
  }
}

// The two segment scores of each query of a block: e_s = scale (q_i + r_s_bias) . seg_embed[s].
template <class T>
void segment_scores(const Problem<T>& p, int64_t b, int64_t h, int64_t i0, int64_t rows, T* e0, T* e1) {
  if (!p.segments()) return;
  const T *rs = p.r_s_bias + h * p.D, *s0 = p.seg_embed + h * p.D, *s1 = p.seg_embed + (p.H + h) * p.D;
  for (int64_t r = 0; r < rows; ++r) {
    const T* src = p.q.row(b, h, i0 + r);
    T a0 = 0, a1 = 0;
    for (int64_t d = 0; d < p.D; ++d) {
      const T x = src[d] + rs[d];
      a0 += x * s0[d];
      a1 += x * s1[d];
    }
    e0[r] = p.scale * a0;
    e1[r] = p.scale * a1;
  }
}

// The score of a wrapped position (c >= P): row r = i + c / P, column c % P of the raw scores.
template <class T>
T wrapped_score(const Problem<T>& p, int64_t b, int64_t h, int64_t i, int64_t j) {
  const int64_t c = p.Lq - i + j, r = i + c / p.P;
  const T *q = p.q.row(b, h, r), *kr = p.kr.row(b, h, c % p.P), *bias = p.r_r_bias + h * p.D;
  T acc = 0;
  for (int64_t d = 0; d < p.D; ++d) acc += (q[d] + bias[d]) * kr[d];
  return p.scale * acc;
}

// Its gradient: dQ^r (unscaled, as the band's) of row r and dKR of column c % P.
template <class T>
void wrapped_grad(const Problem<T>& p, int64_t b, int64_t h, int64_t i, int64_t j, T ds, T* dqr, T* dkr) {
  const int64_t c = p.Lq - i + j, r = i + c / p.P, cc = c % p.P;
  const T *q = p.q.row(b, h, r), *kr = p.kr.row(b, h, cc), *bias = p.r_r_bias + h * p.D;
  T* dq = dqr + r * p.D;
  for (int64_t d = 0; d < p.D; ++d) dq[d] += ds * kr[d];
  if (dkr)
    for (int64_t d = 0; d < p.D; ++d) dkr[cc * p.D + d] += ds * p.scale * (q[d] + bias[d]);
}

// The terms of a tile other than the content scores, one contiguous row per query:
// e[ii * lde + jj] = band + segment (+ wrapped position) term of (i0 + ii, j0 + jj), and -inf
// where the key is hidden. (A row that hides every key is set to 0 after the addition, by
// clear_empty_rows: there S + e would be -inf.)
template <class T>
void tile_terms(const Problem<T>& p, const Band<T>& g, const T* e0, const T* e1, int64_t b, int64_t h, int64_t i0,
                int64_t rows, int64_t j0, int64_t cols, uint8_t state, T* e, int64_t lde) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  for (int64_t ii = 0; ii < rows; ++ii) {
    const int64_t i = i0 + ii;
    const T* band = g.col(ii) + (j0 - g.w0) + (rows - 1 - ii);  // this query's diagonal run
    T* er = e + ii * lde;
    if (!p.segments()) {
      std::copy(band, band + cols, er);
    } else if (p.seg_q) {
      const int64_t sq = p.seg_q[b * p.Lq + i];
      const int64_t* sk = p.seg_k + b * p.Lk + j0;
      const T same = e0[ii], differ = e1[ii];
#pragma omp simd
      for (int64_t jj = 0; jj < cols; ++jj) er[jj] = band[jj] + (sk[jj] != sq ? differ : same);
    } else {
      const T* w = p.seg_mat.at(b, 0, i, j0);
      const int64_t sj = p.seg_mat.sj, ss = p.seg_mat_s;
      const T a0 = e0[ii], a1 = e1[ii];
      for (int64_t jj = 0; jj < cols; ++jj) er[jj] = band[jj] + w[jj * sj] * a0 + w[jj * sj + ss] * a1;
    }
    for (int64_t jj = std::max<int64_t>(0, p.first_wrapped_key(i) - j0); jj < cols; ++jj)
      if (state == Visibility::kVisible || !p.masked(b, h, i, j0 + jj)) er[jj] += wrapped_score(p, b, h, i, j0 + jj);
    if (state != Visibility::kVisible)
      for (int64_t jj = 0; jj < cols; ++jj)
        if (p.masked(b, h, i, j0 + jj)) er[jj] = kNegInf;
  }
}

// s(ii, jj) += e[ii * lde + jj] on a forward tile (queries down: element (ii, jj) at
// s[(ii / 16) * panel + ii % 16 + jj * cs]). With AVX2 the rows of e are turned into the tile's
// columns eight by eight in registers.
template <class T>
void add_terms_queries_down(T* s, int64_t panel, int64_t cs, const T* e, int64_t lde, int64_t rows, int64_t cols) {
  int64_t i8 = 0;
#if TXTCLS_SGEMM
  if constexpr (std::is_same_v<T, float>) {
    if (cs == 16) {
      for (; i8 + 8 <= rows; i8 += 8) {
        float* col0 = s + (i8 / 16) * panel + i8 % 16;  // 8 queries of one key: contiguous
        int64_t j8 = 0;
        for (; j8 + 8 <= cols; j8 += 8) {
          __m256 r[8];
          for (int64_t t = 0; t < 8; ++t) r[t] = _mm256_loadu_ps(e + (i8 + t) * lde + j8);
          sgemm::transpose8x8(r);  // r[t]: key j8 + t of the 8 queries
          for (int64_t t = 0; t < 8; ++t) {
            float* d = col0 + (j8 + t) * 16;
            _mm256_storeu_ps(d, _mm256_add_ps(_mm256_loadu_ps(d), r[t]));
          }
        }
        for (; j8 < cols; ++j8)
          for (int64_t t = 0; t < 8; ++t) col0[j8 * 16 + t] += e[(i8 + t) * lde + j8];
      }
    }
  }
#endif
  for (int64_t ii = i8; ii < rows; ++ii) {
    T* row = s + (ii / 16) * panel + ii % 16;
    const T* er = e + ii * lde;
    for (int64_t jj = 0; jj < cols; ++jj) row[jj * cs] += er[jj];
  }
}

// s(ii, jj) += e[ii * lde + jj] on a backward tile (keys down: element (jj, ii) at
// s[(jj / 16) * panel + jj % 16 + ii * cs], a query's keys in runs of `chunk`).
template <class T>
void add_terms_keys_down(T* s, int64_t panel, int64_t cs, int64_t chunk, const T* e, int64_t lde, int64_t rows,
                         int64_t cols) {
  for (int64_t c0 = 0; c0 < cols; c0 += chunk) {
    const int64_t kc = std::min(chunk, cols - c0), off = (c0 / 16) * panel + c0 % 16;
    for (int64_t ii = 0; ii < rows; ++ii) {
      T* run = s + off + ii * cs;
      const T* er = e + ii * lde + c0;
#pragma omp simd
      for (int64_t j = 0; j < kc; ++j) run[j] += er[j];
    }
  }
}

// A row that hides every key has all scores 0 (HF: all -1e30, the same softmax).
template <class At>
void clear_empty_rows(const Visibility& vis, int64_t b, int64_t h, int64_t i0, int64_t rows, int64_t cols, At&& at) {
  for (int64_t ii = 0; ii < rows; ++ii)
    if (vis.row_empty(b, h, i0 + ii))
      for (int64_t jj = 0; jj < cols; ++jj) at(ii, jj) = 0;
}

// The transpose of tile_terms for the score gradients of a backward tile (dS^T, keys down): into
// the band window (the scatter along the diagonals), the segment scores' gradients de0, de1 (per
// query, unscaled) and, for wrapped positions, straight into dQ^r and dKR.
template <class T>
void scatter_terms(const Problem<T>& p, Band<T>& dg, int64_t b, int64_t h, int64_t i0, int64_t rows, int64_t j0,
                   int64_t cols, const T* u, int64_t panel, int64_t cs, int64_t chunk, T* de0, T* de1, T* dqr, T* dkr) {
  for (int64_t ii = 0; ii < rows; ++ii) {
    const int64_t i = i0 + ii, jw = p.first_wrapped_key(i) - j0;
    T* band = dg.col(ii) + (j0 - dg.w0) + (rows - 1 - ii);
    T g0 = 0, g1 = 0;
    for (int64_t c0 = 0; c0 < cols; c0 += chunk) {
      const int64_t kc = std::min(chunk, cols - c0);
      const T* ds = u + (c0 / 16) * panel + c0 % 16 + ii * cs;
      T* br = band + c0;
#pragma omp simd
      for (int64_t j = 0; j < kc; ++j) br[j] += ds[j];
      if (p.segments()) {
        if (p.seg_q) {
          const int64_t sq = p.seg_q[b * p.Lq + i];
          const int64_t* sk = p.seg_k + b * p.Lk + j0 + c0;
          for (int64_t j = 0; j < kc; ++j) {
            const bool differ = sk[j] != sq;
            g1 += differ ? ds[j] : T(0);
            g0 += differ ? T(0) : ds[j];
          }
        } else {
          const T* w = p.seg_mat.at(b, 0, i, j0 + c0);
          const int64_t sj = p.seg_mat.sj, ss = p.seg_mat_s;
          for (int64_t j = 0; j < kc; ++j) {
            g0 += w[j * sj] * ds[j];
            g1 += w[j * sj + ss] * ds[j];
          }
        }
      }
      for (int64_t j = std::max<int64_t>(0, jw - c0); j < kc; ++j)
        if (ds[j] != T(0)) wrapped_grad(p, b, h, i, j0 + c0 + j, ds[j], dqr, dkr);
    }
    if (p.segments()) {
      de0[i] += g0;
      de1[i] += g1;
    }
  }
}

// The K^T and V packing of the fused attention, described by its own problem type.
template <class T>
attn::Problem<T> keys_problem(const Problem<T>& p) {
  attn::Problem<T> c;
  c.B = p.B, c.H = p.H, c.Lq = p.Lq, c.Lk = p.Lk, c.D = p.D, c.Dv = p.Dv;
  c.q = p.q, c.k = p.k, c.v = p.v;
  c.bq = p.bq, c.bk = p.bk;
  return c;
}

// ---------------------------------------------------------------- forward
template <class T>
struct ForwardScratch {
  attn::PackedKeys<T> keys;
  AlignedVec<T> qw, qr, qa, qrt, s, e, pa, o, m, l, alpha, e0, e1, kra, mt;
  Band<T> g;
  ForwardScratch(const Problem<T>& p, const attn::Problem<T>& core, int64_t nkb, bool probs)
      : keys(core), qw(p.bq * p.D), qr(p.bq * p.D), qa(lhs_size<T>(p.bq, p.D)), qrt(rhs_size<T>(p.D, p.bq)),
        s(round_up(p.bq, 16) * p.bk), e(p.bq * p.bk), pa(kPanelTiles<T> ? 0 : lhs_size<T>(p.bq, p.bk)),
        o(p.bq * p.Dv), m(p.bq), l(p.bq), alpha(p.bq), e0(p.bq), e1(p.bq), kra(lhs_size<T>(p.bq + p.bk - 1, p.D)),
        mt(probs ? p.bq * std::max<int64_t>(nkb, 1) : 0), g(p.bq + p.bk - 1, p.bq) {}
};

// Output rows [i0, i0 + bq) of head (b, h), their logsumexp and, when probs is set, their
// probabilities (written per tile under the running max, rescaled at the end).
template <class T>
void forward_block(const Problem<T>& p, const Visibility& vis, int64_t b, int64_t h, int64_t qb, Rows<T> out, T* lse,
                   T* probs, ForwardScratch<T>& w) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  constexpr bool kPanels = kPanelTiles<T>;
  const int64_t i0 = qb * p.bq, rows = std::min(p.bq, p.Lq - i0), D = p.D, Dv = p.Dv, nkb = vis.nkb;
  const int64_t cmin = p.Lq - i0 - rows + 1;
  biased_queries(p, b, h, i0, rows, p.r_w_bias, w.qw.data());
  biased_queries(p, b, h, i0, rows, p.r_r_bias, w.qr.data());
  segment_scores(p, b, h, i0, rows, w.e0.data(), w.e1.data());
  pack_lhs(w.qa.data(), row_major_ref<T>(w.qw.data(), rows, D, D));
  pack_rhs(w.qrt.data(), MatRef<T>{w.qr.data(), D, rows, 1, D});
  T *m = w.m.data(), *l = w.l.data(), *alpha = w.alpha.data(), *o = w.o.data();
  std::fill(m, m + rows, kNegInf);
  std::fill(l, l + rows, T(0));
  std::fill(o, o + rows * Dv, T(0));  // O(i, d) at o[i + d * rows]
  T* prow = probs ? probs + ((b * p.H + h) * p.Lq + i0) * p.Lk : nullptr;
  if (prow) {
    std::fill(prow, prow + rows * p.Lk, T(0));
    std::fill(w.mt.begin(), w.mt.end(), kNegInf);  // unvisited tiles: factor 0
  }
  w.g.reset(0);
  const bool keep_all = vis.block_has_empty(b, h, qb);
  for (int64_t kb = 0; kb < nkb; ++kb) {
    const uint8_t state = vis.tile_state(b, h, qb, kb);
    if (state == Visibility::kHidden && !keep_all) continue;  // every probability 0
    const int64_t j0 = kb * p.bk, cols = std::min(p.bk, p.Lk - j0);
    // S(i, j) at s[(i / 16) * panel + i % 16 + j * cs], as in the fused attention's forward.
    const int64_t panel = kPanels ? 16 * cols : 16, cs = kPanels ? 16 : rows;
    T* s = w.s.data();
    auto at = [&](int64_t i, int64_t j) -> T& { return s[(i / 16) * panel + i % 16 + j * cs]; };
    multiply<T>({s, rows}, w.qa.data(), w.keys.kt(kb), rows, cols, D, false, kPanels);
    advance_band(p, b, h, cmin, rows, j0, cols, w.g, w.qrt.data(), w.kra.data());
    tile_terms(p, w.g, w.e0.data(), w.e1.data(), b, h, i0, rows, j0, cols, state, w.e.data(), p.bk);
    add_terms_queries_down(s, panel, cs, w.e.data(), p.bk, rows, cols);
    if (keep_all) clear_empty_rows(vis, b, h, i0, rows, cols, at);
    const bool rescale = attn::softmax_step(s, rows, cols, panel, cs, m, l, alpha);
    if (p.dropout())
      for (int64_t j = 0; j < cols; ++j)
        for (int64_t i = 0; i < rows; ++i) at(i, j) *= p.drop_factor(b, h, i0 + i, j0 + j);
    if (rescale)
      for (int64_t d = 0; d < Dv; ++d) {
        T* od = o + d * rows;
#pragma omp simd
        for (int64_t i = 0; i < rows; ++i) od[i] *= alpha[i];
      }
    const T* pa = s;
    if constexpr (!kPanels) {
      pack_lhs(w.pa.data(), MatRef<T>{s, rows, cols, 1, rows});
      pa = w.pa.data();
    }
    multiply<T>({o, rows}, pa, w.keys.v(kb), rows, Dv, cols, true);
    if (prow)
      for (int64_t i = 0; i < rows; ++i) {
        for (int64_t j = 0; j < cols; ++j) prow[i * p.Lk + j0 + j] = at(i, j);
        w.mt[i * nkb + kb] = m[i];
      }
  }
  T* lse_rows = lse + (b * p.H + h) * p.Lq + i0;
  attn::column_major_to_rows(o, rows, Dv, out.row(b, h, i0), out.si);
  for (int64_t i = 0; i < rows; ++i) {
    const T inv = l[i] > T(0) ? T(1) / l[i] : T(0);  // l == 0 only without keys (Lk == 0)
    T* dst = out.row(b, h, i0 + i);
#pragma omp simd
    for (int64_t d = 0; d < Dv; ++d) dst[d] *= inv;
    lse_rows[i] = l[i] > T(0) ? m[i] + std::log(l[i]) : kNegInf;
    if (prow)
      for (int64_t kb = 0; kb < nkb; ++kb) {
        const T f = std::exp(w.mt[i * nkb + kb] - m[i]) * inv;
        T* run = prow + i * p.Lk + kb * p.bk;
        for (int64_t j = 0; j < std::min(p.bk, p.Lk - kb * p.bk); ++j) run[j] *= f;
      }
  }
}

// out [B, H, Lq, Dv], lse [B, H, Lq] (contiguous), probs [B, H, Lq, Lk] (contiguous) or null.
// Tasks as in the fused attention: a head, or a share of its query blocks when heads are few.
template <class T>
void forward(const Problem<T>& p, const Visibility& vis, Rows<T> out, T* lse, T* probs) {
  const int64_t heads = p.B * p.H, nqb = vis.nqb;
  if (heads == 0 || nqb == 0) return;
  const attn::Problem<T> core = keys_problem(p);
  const bool parallel = heads * nqb > 1 && heads * p.Lq * p.Lk * (2 * p.D + p.Dv) > kParallelGrain;
  const int threads = parallel ? num_threads() : 1;
  const int64_t splits = std::min(nqb, (2 * threads + heads - 1) / heads), tasks = heads * splits;
#pragma omp parallel num_threads(threads)
  {
    ForwardScratch<T> w(p, core, vis.nkb, probs != nullptr);
#pragma omp for schedule(dynamic)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t head = t / splits, share = t % splits, b = head / p.H, h = head % p.H;
      if (w.keys.head != head) w.keys.pack(core, b, h);
      for (int64_t qb = share; qb < nqb; qb += splits) forward_block(p, vis, b, h, qb, out, lse, probs, w);
    }
  }
}

// ---------------------------------------------------------------- backward
template <class T>
struct Grads {
  Rows<T> dq, dk, dv;   // contiguous [B, H, L, D]: written whole by the head's task
  T* dkr = nullptr;     // [Br, H, P, D] contiguous, zero on entry; null when not wanted
  T* dw = nullptr;      // [B, H, D]: each head's part of d r_w_bias (summed over the batch by the caller)
  T* dr = nullptr;      // [B, H, D]: of d r_r_bias
  T* ds = nullptr;      // [B, H, D]: of d r_s_bias (segment term only)
  T* dseg = nullptr;    // [B, H, 2, D]: of d seg_embed (segment term only)
};

template <class T>
struct BackwardScratch {
  int64_t nkb, ka_size, va_size, kta_size;
  AlignedVec<T> ka, va, kta;          // every key block of the head: K, V, K^T packed as left operands
  AlignedVec<T> dk, dv;               // per key block [cols, D], [cols, Dv] column-major (no 4 KiB strides)
  AlignedVec<T> dqw, dqr;             // [Lq, D]: sum dS K and sum dG KR (scale applied at the end)
  AlignedVec<T> de0, de1, delta;      // [Lq]
  AlignedVec<T> qw, qr, qwt, qwb, qrt, qra, dot, dob, e0, e1;  // per query block
  AlignedVec<T> s, u, e, pa, dsb;     // per tile: P^T, dS^T (keys down the columns), the other terms
  AlignedVec<T> kra, krt, dgb, dgtb;  // per window step
  Band<T> g, dg;
  explicit BackwardScratch(const Problem<T>& p)
      : nkb((p.Lk + p.bk - 1) / p.bk), ka_size(lhs_size<T>(p.bk, p.D)), va_size(lhs_size<T>(p.bk, p.Dv)),
        kta_size(lhs_size<T>(p.D, p.bk)), ka(std::max<int64_t>(1, nkb * ka_size)),
        va(std::max<int64_t>(1, nkb * va_size)), kta(std::max<int64_t>(1, nkb * kta_size)), dk(p.Lk * p.D),
        dv(p.Lk * p.Dv), dqw(p.Lq * p.D), dqr(p.Lq * p.D), de0(p.Lq), de1(p.Lq), delta(p.Lq), qw(p.bq * p.D),
        qr(p.bq * p.D), qwt(rhs_size<T>(p.D, p.bq)), qwb(rhs_size<T>(p.bq, p.D)), qrt(rhs_size<T>(p.D, p.bq)),
        qra(lhs_size<T>(p.D, p.bq)), dot(rhs_size<T>(p.Dv, p.bq)), dob(rhs_size<T>(p.bq, p.Dv)), e0(p.bq), e1(p.bq),
        s(round_up(p.bk, 16) * p.bq), u(round_up(p.bk, 16) * p.bq), e(p.bq * p.bk),
        pa(kPanelTiles<T> ? 0 : lhs_size<T>(p.bk, p.bq)), dsb(rhs_size<T>(p.bk, p.bq)),
        kra(lhs_size<T>(p.bq + p.bk - 1, p.D)), krt(lhs_size<T>(p.D, p.bq + p.bk - 1)),
        dgb(rhs_size<T>(p.bq, p.bq + p.bk - 1)), dgtb(rhs_size<T>(p.bq + p.bk - 1, p.bq)), g(p.bq + p.bk - 1, p.bq),
        dg(p.bq + p.bk - 1, p.bq) {}
};

// Strip columns [a, e) of dG^T are final: dKR[cmin + t] += sum_ii dG^T[t, ii] Q^r_ii and
// dQ^r_ii += sum_t dG^T[t, ii] kr_{cmin + t}, two GEMMs (wrapped columns go their own way).
template <class T>
void flush_band(const Problem<T>& p, int64_t b, int64_t h, int64_t i0, int64_t rows, int64_t cmin, int64_t a,
                int64_t e, BackwardScratch<T>& w, T* dkr) {
  const int64_t valid = std::clamp<int64_t>(p.P - (cmin + a), 0, e - a), D = p.D;
  if (valid <= 0) return;
  const T* src = w.dg.col(0) + (a - w.dg.w0);
  if (dkr) {  // dKR^T [D, valid] += (Q^r)^T [D, rows] dG [rows, valid]
    pack_rhs(w.dgb.data(), MatRef<T>{src, rows, valid, w.dg.ld, 1});
    multiply<T>({dkr + (cmin + a) * D, D}, w.qra.data(), w.dgb.data(), D, valid, rows, true);
  }
  // dQ^r^T [D, rows] += KR^T [D, valid] dG^T [valid, rows]
  pack_lhs(w.krt.data(), MatRef<T>{p.kr.row(b, h, cmin + a), D, valid, 1, p.kr.si});
  pack_rhs(w.dgtb.data(), MatRef<T>{src, valid, rows, 1, w.dg.ld});
  multiply<T>({w.dqr.data() + i0 * D, D}, w.krt.data(), w.dgtb.data(), D, rows, valid, true);
}

// The backward's window step: what leaves the window is flushed, the new columns of G^T are
// computed and those of dG^T zeroed.
template <class T>
void advance_bands(const Problem<T>& p, int64_t b, int64_t h, int64_t i0, int64_t rows, int64_t cmin, int64_t j0,
                   int64_t cols, BackwardScratch<T>& w, T* dkr) {
  Band<T>&g = w.g, &dg = w.dg;
  const int64_t end = j0 + cols + rows - 1;
  if (j0 < g.w0 || j0 >= g.w1) {
    flush_band(p, b, h, i0, rows, cmin, g.w0, g.w1, w, dkr);
    g.reset(j0);
    dg.reset(j0);
  } else {
    flush_band(p, b, h, i0, rows, cmin, g.w0, j0, w, dkr);
    g.drop_before(j0, rows);
    dg.drop_before(j0, rows);
  }
  if (end > g.w1) {
    fill_band(p, b, h, cmin, rows, g, g.w1, end, w.qrt.data(), w.kra.data());
    for (int64_t ii = 0; ii < rows; ++ii) std::fill(dg.col(ii) + (dg.w1 - dg.w0), dg.col(ii) + (end - dg.w0), T(0));
    g.w1 = dg.w1 = end;
  }
}

// Writes the head's dQ, dK, dV rows and its parts of the bias and segment-embedding gradients.
// S holds scale * (the three dot products), so each gradient through q carries one factor scale.
template <class T>
void finish_head(const Problem<T>& p, int64_t b, int64_t h, const Grads<T>& g, BackwardScratch<T>& w) {
  const int64_t D = p.D, Dv = p.Dv, Lk = p.Lk, head = b * p.H + h;
  const T sc = p.scale;
  const T *s0 = p.segments() ? p.seg_embed + h * D : nullptr, *s1 = p.segments() ? p.seg_embed + (p.H + h) * D : nullptr;
  const T* rs = p.segments() ? p.r_s_bias + h * D : nullptr;
  T *dw = g.dw + head * D, *dr = g.dr + head * D;
  std::fill(dw, dw + D, T(0));
  std::fill(dr, dr + D, T(0));
  T *dsb = nullptr, *dse = nullptr;
  if (p.segments()) {
    dsb = g.ds + head * D;
    dse = g.dseg + head * 2 * D;
    std::fill(dsb, dsb + D, T(0));
    std::fill(dse, dse + 2 * D, T(0));
  }
  for (int64_t i = 0; i < p.Lq; ++i) {
    T* dq = g.dq.row(b, h, i);
    const T *aw = w.dqw.data() + i * D, *ar = w.dqr.data() + i * D;
    for (int64_t d = 0; d < D; ++d) {
      dq[d] = sc * (aw[d] + ar[d]);
      dw[d] += sc * aw[d];
      dr[d] += sc * ar[d];
    }
    if (p.segments()) {
      const T g0 = sc * w.de0[i], g1 = sc * w.de1[i];
      const T* q = p.q.row(b, h, i);
      for (int64_t d = 0; d < D; ++d) {
        const T through = g0 * s0[d] + g1 * s1[d];
        dq[d] += through;
        dsb[d] += through;
        dse[d] += g0 * (q[d] + rs[d]);
        dse[D + d] += g1 * (q[d] + rs[d]);
      }
    }
  }
  for (int64_t j0 = 0; j0 < Lk; j0 += p.bk) {  // key blocks of [cols, D] column-major
    const int64_t cols = std::min(p.bk, Lk - j0);
    attn::column_major_to_rows(w.dk.data() + j0 * D, cols, D, g.dk.row(b, h, j0), g.dk.si);
    attn::column_major_to_rows(w.dv.data() + j0 * Dv, cols, Dv, g.dv.row(b, h, j0), g.dv.si);
  }
}

// Gradients of head (b, h): query blocks outside, key blocks inside, so that the position window
// of a query block slides along its keys as in the forward. The task owns dQ, dK, dV of the head
// and (unless the batch shares it, then all of the batch runs in one task) its dKR.
template <class T>
void backward_head(const Problem<T>& p, const Visibility& vis, Rows<const T> o, Rows<const T> go, const T* lse,
                   const Grads<T>& g, int64_t b, int64_t h, BackwardScratch<T>& w) {
  constexpr bool kPanels = kPanelTiles<T>;
  const int64_t D = p.D, Dv = p.Dv, Lq = p.Lq, Lk = p.Lk, head = b * p.H + h;
  const T* lse_h = lse + head * Lq;
  T* delta = w.delta.data();
  for (int64_t i = 0; i < Lq; ++i) {  // rowsum(dO * O)
    const T *a = go.row(b, h, i), *c = o.row(b, h, i);
    T acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t d = 0; d < Dv; ++d) acc += a[d] * c[d];
    delta[i] = acc;
  }
  for (int64_t kb = 0; kb < w.nkb; ++kb) {
    const int64_t j0 = kb * p.bk, cols = std::min(p.bk, Lk - j0);
    const T *k0 = p.k.row(b, h, j0), *v0 = p.v.row(b, h, j0);
    pack_lhs(w.ka.data() + kb * w.ka_size, MatRef<T>{k0, cols, D, p.k.si, 1});
    pack_lhs(w.va.data() + kb * w.va_size, MatRef<T>{v0, cols, Dv, p.v.si, 1});
    pack_lhs(w.kta.data() + kb * w.kta_size, MatRef<T>{k0, D, cols, 1, p.k.si});
  }
  T *dk = w.dk.data(), *dv = w.dv.data(), *dqw = w.dqw.data(), *dqr = w.dqr.data();
  T *de0 = w.de0.data(), *de1 = w.de1.data();
  std::fill(w.dk.begin(), w.dk.end(), T(0));
  std::fill(w.dv.begin(), w.dv.end(), T(0));
  std::fill(w.dqw.begin(), w.dqw.end(), T(0));
  std::fill(w.dqr.begin(), w.dqr.end(), T(0));
  std::fill(w.de0.begin(), w.de0.end(), T(0));
  std::fill(w.de1.begin(), w.de1.end(), T(0));
  T* dkr = g.dkr ? g.dkr + ((p.kr.sb == 0 ? 0 : b) * p.H + h) * p.P * D : nullptr;

  for (int64_t qb = 0; qb < vis.nqb; ++qb) {
    const int64_t i0 = qb * p.bq, rows = std::min(p.bq, Lq - i0), cmin = Lq - i0 - rows + 1;
    biased_queries(p, b, h, i0, rows, p.r_w_bias, w.qw.data());
    biased_queries(p, b, h, i0, rows, p.r_r_bias, w.qr.data());
    segment_scores(p, b, h, i0, rows, w.e0.data(), w.e1.data());
    pack_rhs(w.qwt.data(), MatRef<T>{w.qw.data(), D, rows, 1, D});  // (Q^w)^T: S^T = K (Q^w)^T
    pack_rhs(w.qwb.data(), MatRef<T>{w.qw.data(), rows, D, D, 1});  // Q^w: dK += dS^T Q^w
    pack_rhs(w.qrt.data(), MatRef<T>{w.qr.data(), D, rows, 1, D});  // (Q^r)^T: G^T = KR (Q^r)^T
    if (dkr) pack_lhs(w.qra.data(), MatRef<T>{w.qr.data(), D, rows, 1, D});  // dKR^T += (Q^r)^T dG
    const T* g0 = go.row(b, h, i0);
    pack_rhs(w.dot.data(), MatRef<T>{g0, Dv, rows, 1, go.si});
    pack_rhs(w.dob.data(), MatRef<T>{g0, rows, Dv, go.si, 1});
    w.g.reset(0);
    w.dg.reset(0);
    const bool keep_all = vis.block_has_empty(b, h, qb);
    for (int64_t kb = 0; kb < w.nkb; ++kb) {
      const uint8_t state = vis.tile_state(b, h, qb, kb);
      if (state == Visibility::kHidden && !keep_all) continue;
      const int64_t j0 = kb * p.bk, cols = std::min(p.bk, Lk - j0);
      // Keys down the columns: element (j, i) at s[(j / 16) * panel + j % 16 + i * cs], as in
      // the fused attention's backward; a query's keys lie in runs of `chunk`.
      const int64_t panel = kPanels ? 16 * rows : 16, cs = kPanels ? 16 : cols, chunk = kPanels ? 16 : cols;
      T *s = w.s.data(), *u = w.u.data();
      auto at_s = [&](int64_t i, int64_t j) -> T& { return s[(j / 16) * panel + j % 16 + i * cs]; };
      multiply<T>({s, cols}, w.ka.data() + kb * w.ka_size, w.qwt.data(), cols, rows, D, false, kPanels);
      multiply<T>({u, cols}, w.va.data() + kb * w.va_size, w.dot.data(), cols, rows, Dv, false, kPanels);  // dO V^T
      advance_bands(p, b, h, i0, rows, cmin, j0, cols, w, dkr);
      tile_terms(p, w.g, w.e0.data(), w.e1.data(), b, h, i0, rows, j0, cols, state, w.e.data(), p.bk);
      add_terms_keys_down(s, panel, cs, chunk, w.e.data(), p.bk, rows, cols);
      if (keep_all) clear_empty_rows(vis, b, h, i0, rows, cols, at_s);
      for (int64_t c0 = 0; c0 < cols; c0 += chunk) {
        const int64_t kc = std::min(chunk, cols - c0), off = (c0 / 16) * panel + c0 % 16;
        for (int64_t i = 0; i < rows; ++i) {
          T *pc = s + off + i * cs, *uc = u + off + i * cs;
          const T l = lse_h[i0 + i], di = delta[i0 + i];
          if (p.dropout()) {
            attn::exp_sub(pc, l, kc);  // P
            for (int64_t j = 0; j < kc; ++j) {
              const T z = p.drop_factor(b, h, i0 + i, j0 + c0 + j);
              uc[j] = pc[j] * (uc[j] * z - di);
              pc[j] *= z;
            }
          } else {
            attn::probs_and_score_grad(pc, uc, l, di, kc);
          }
        }
      }
      scatter_terms(p, w.dg, b, h, i0, rows, j0, cols, u, panel, cs, chunk, de0, de1, dqr, dkr);
      T *dkb = dk + j0 * D, *dvb = dv + j0 * Dv;  // this key block's [cols, D] column-major
      if constexpr (kPanels) {
        multiply<T>({dvb, cols}, s, w.dob.data(), cols, Dv, rows, true);
        multiply<T>({dkb, cols}, u, w.qwb.data(), cols, D, rows, true);
#if TXTCLS_SGEMM
        attn::pack_b_from_panels(w.dsb.data(), u, cols, rows, panel);
#endif
      } else {
        pack_lhs(w.pa.data(), MatRef<T>{s, cols, rows, 1, cols});
        multiply<T>({dvb, cols}, w.pa.data(), w.dob.data(), cols, Dv, rows, true);
        pack_lhs(w.pa.data(), MatRef<T>{u, cols, rows, 1, cols});
        multiply<T>({dkb, cols}, w.pa.data(), w.qwb.data(), cols, D, rows, true);
        pack_rhs(w.dsb.data(), MatRef<T>{u, cols, rows, 1, cols});
      }
      multiply<T>({dqw + i0 * D, D}, w.kta.data() + kb * w.kta_size, w.dsb.data(), D, rows, cols, true);
    }
    flush_band(p, b, h, i0, rows, cmin, w.g.w0, w.g.w1, w, dkr);
  }
  finish_head(p, b, h, g, w);
}

// Runs backward_head over every head. When the batch shares the position keys (kr.sb == 0) and
// their gradient is wanted, one task runs a head for the whole batch, in batch order, so dKR is
// owned and summed the same way on any thread count.
template <class T>
void backward(const Problem<T>& p, const Visibility& vis, Rows<const T> o, Rows<const T> go, const T* lse,
              const Grads<T>& g) {
  const int64_t heads = p.B * p.H;
  if (heads == 0) return;
  const bool grouped = g.dkr && p.kr.sb == 0 && p.B > 1;
  const int64_t tasks = grouped ? p.H : heads;
  const int threads = (tasks > 1 && heads * p.Lq * p.Lk * (2 * p.D + p.Dv) > kParallelGrain) ? num_threads() : 1;
#pragma omp parallel num_threads(threads)
  {
    BackwardScratch<T> w(p);
#pragma omp for schedule(dynamic)
    for (int64_t t = 0; t < tasks; ++t) {
      if (grouped)
        for (int64_t b = 0; b < p.B; ++b) backward_head(p, vis, o, go, lse, g, b, t, w);
      else
        backward_head(p, vis, o, go, lse, g, t / p.H, t % p.H, w);
    }
  }
}

}  // namespace txtcls::detail::relattn
