// Fused Transformer-XL / XLNet relative attention (ops/relative_attention_fused.hpp) on FMA units,
// float and double: the CPU fused op's contract without storing any [Lq, P] or [Lq, Lk] matrix,
// on the thread layout of kernels/attention_tiles.cuh and the dropout and softmax helpers of
// kernels/attention_common.cuh.
//
// Two kinds of tiles, both [BQ query rows] x [BN columns]:
//   key tiles       columns are keys j0 + u; element (ii, u) reads position c = Lq - i + j, a band
//                   of BQ + BN - 1 rows of k_r starting at Lq - i0 - BQ + 1 + j0 (index BQ-1-ii+u);
//   position tiles  columns are raw positions c0 + u of HF's [Lq, P] position scores (before the
//                   shift); row r's raw column c is read by key j = r + c - Lq, a band of keys
//                   (index ii + u) starting at r0 + c0 - Lq.
// Wrapped reads (c >= P, "uni" without the causal mask, or rows hiding every key) come from
// another query row: their scores are computed from global memory, one by one, where they matter.
//
//   empty     a thread per row: whether the row hides every key (its scores are then all 0: HF's
//             uniform row, and the gradient flows through every score as in HF).
//   forward   a block per (head, query block) over key tiles: scores, online softmax, O += P V;
//             out = O / l, lse = m + log l; a second pass writes the probabilities if asked.
//   dK, dV    a block per (head, key block) over its query blocks (key tiles).
//   dQ        a block per (head, query block): over key tiles for the content and segment parts,
//             over position tiles for the position part (the wrapped reads land in their row).
//   dK_r      a block per (head, position block) over query blocks (position tiles), per sequence.
// Every output element is written by one thread in a fixed order (no atomics): the results are
// the same bit for bit on every run; batch sums are left to the op's deterministic reductions.
#include <cmath>
#include <cstdint>

#include "attention_common.cuh"
#include "attention_tiles.cuh"
#include "launch.cuh"
#include "txtcls/cuda/relative_attention.hpp"

namespace txtcls::cuda {
namespace {

using namespace attn;

// Per-row values kept in shared memory: running max / lse, running sum / delta, alpha, the two
// segment dots and the empty-row flag.
inline constexpr int kRowValues = 6;

template <class T, int DMAX>
struct RelTile {
  static constexpr int BQ = 16, BN = 16, W = BQ + BN - 1, DP = DMAX + 1, SP = BN + 1;
  static constexpr int RM = BQ / kTY, RN = BN / kTX, RD = DMAX / kTX;
  // query side: Q^w, Q^r, dO [BQ]; streamed side: K, V, K_r [W] (a band or a tile)
  static constexpr int kQw = 0, kQr = kQw + BQ * DP, kDo = kQr + BQ * DP, kK = kDo + BQ * DP, kV = kK + W * DP,
                       kKr = kV + W * DP, kS = kKr + W * DP, kDs = kS + BQ * SP, kRow = kDs + BQ * SP,
                       kEnd = kRow + kRowValues * BQ;
  static constexpr int kSmem = smem_bytes<T, DMAX>(3 * BQ + 3 * W, 2 * BQ, BN, kRowValues * BQ);
  static_assert(kEnd * static_cast<int>(sizeof(T)) == kSmem);
  static_assert(kSmem <= 163 * 1024, "relative attention tiles exceed an A100's shared memory");
};

template <class T>
struct Shared {
  T *qw, *qr, *dout, *k, *v, *kr, *s, *ds, *m, *l, *alpha, *e0, *e1, *empty;
};

extern __shared__ unsigned char rel_smem[];

template <class T, int DMAX>
__device__ __forceinline__ Shared<T> shared_of() {
  using Tl = RelTile<T, DMAX>;
  T* p = reinterpret_cast<T*>(rel_smem);
  T* row = p + Tl::kRow;
  return {p + Tl::kQw, p + Tl::kQr, p + Tl::kDo, p + Tl::kK, p + Tl::kV, p + Tl::kKr, p + Tl::kS, p + Tl::kDs,
          row, row + Tl::BQ, row + 2 * Tl::BQ, row + 3 * Tl::BQ, row + 4 * Tl::BQ, row + 5 * Tl::BQ};
}

template <class T>
__device__ __forceinline__ T dot(const T* x, const T* y, int64_t n) {
  T s = 0;
  for (int64_t d = 0; d < n; ++d) s = fma(x[d], y[d], s);
  return s;
}

template <class T>
__device__ __forceinline__ bool hidden(const RelativeAttentionArgs<T>& ra, int64_t b, int64_t h, int64_t i, int64_t j) {
  const AttentionArgs<T>& a = ra.a;
  if (a.causal && j > i + (a.Lk - a.Lq)) return true;
  const AttnTerm<uint8_t>& m = ra.mask;
  return m.p && m.p[b * m.sb + h * m.sh + i * m.si + j * m.sj] != 0;
}

template <class T>
__device__ __forceinline__ bool row_empty(const RelativeAttentionArgs<T>& ra, int64_t b, int64_t h, int64_t i) {
  return ra.empty[(b * ra.a.H + h) * ra.a.Lq + i] != 0;
}

template <class T>
__device__ __forceinline__ const T* row_of(AttnRows<const T> t, int64_t b, int64_t h, int64_t i) {
  return t.p + b * t.sb + h * t.sh + i * t.si;
}

// (q_i + r_s_bias) . seg_embed[s]
template <class T>
__device__ T segment_dot(const RelativeAttentionArgs<T>& ra, int64_t b, int64_t h, int64_t i, int s) {
  const int64_t D = ra.a.D;
  const T *q = row_of(ra.a.q, b, h, i), *rs = ra.r_s_bias + h * D, *se = ra.seg_embed + (s * ra.a.H + h) * D;
  T acc = 0;
  for (int64_t d = 0; d < D; ++d) acc = fma(q[d] + rs[d], se[d], acc);
  return acc;
}

// The weights of seg_embed[0] and seg_embed[1] for query i, key j.
template <class T>
__device__ __forceinline__ void segment_weights(const RelativeAttentionArgs<T>& ra, int64_t b, int64_t i, int64_t j,
                                                T& w0, T& w1) {
  if (ra.seg_q) {
    const bool differ = ra.seg_q[b * ra.a.Lq + i] != ra.seg_k[b * ra.a.Lk + j];
    w0 = differ ? T(0) : T(1);
    w1 = differ ? T(1) : T(0);
  } else {
    const T* w = ra.seg_mat.p + b * ra.seg_mat.sb + i * ra.seg_mat.si + j * ra.seg_mat.sj;
    w0 = w[0];
    w1 = w[ra.seg_mat_s];
  }
}

// The position term read for query i at raw column c from global memory; c >= P wraps into
// row i + c / P (HF's reshape), which is why these reads cannot come from the tile's band.
template <class T>
__device__ T position_term(const RelativeAttentionArgs<T>& ra, int64_t b, int64_t h, int64_t i, int64_t c) {
  const AttentionArgs<T>& a = ra.a;
  const T *q = row_of(a.q, b, h, i + c / ra.P), *kr = row_of(ra.kr, b, h, c % ra.P), *rr = ra.r_r_bias + h * a.D;
  T acc = 0;
  for (int64_t d = 0; d < a.D; ++d) acc = fma(a.scale * (q[d] + rr[d]), kr[d], acc);
  return acc;
}

// The score of (i, j), all from global memory (wrapped reads of position tiles).
template <class T>
__device__ T score_global(const RelativeAttentionArgs<T>& ra, int64_t b, int64_t h, int64_t i, int64_t j) {
  const AttentionArgs<T>& a = ra.a;
  if (row_empty(ra, b, h, i)) return T(0);
  if (hidden(ra, b, h, i, j)) return neg_inf<T>();
  const T *q = row_of(a.q, b, h, i), *k = row_of(a.k, b, h, j), *rw = ra.r_w_bias + h * a.D;
  T s = 0;
  for (int64_t d = 0; d < a.D; ++d) s = fma(a.scale * (q[d] + rw[d]), k[d], s);
  s += position_term(ra, b, h, i, a.Lq - i + j);
  if (ra.r_s_bias) {
    T w0, w1;
    segment_weights(ra, b, i, j, w0, w1);
    s += a.scale * (w0 * segment_dot(ra, b, h, i, 0) + w1 * segment_dot(ra, b, h, i, 1));
  }
  return s;
}

// dS of (i, j), all from global memory.
template <class T>
__device__ T score_grad_global(const RelativeAttentionArgs<T>& ra, AttnRows<const T> go, const T* lse,
                               const T* delta, int64_t b, int64_t h, int64_t i, int64_t j) {
  const AttentionArgs<T>& a = ra.a;
  const T s = score_global(ra, b, h, i, j);
  if (s == neg_inf<T>()) return T(0);
  const int64_t row = (b * a.H + h) * a.Lq + i;
  T pz, ds;
  probs_and_grad(a, b, h, i, j, s, lse[row], dot(row_of(go, b, h, i), row_of(a.v, b, h, j), a.Dv), delta[row], pz,
                 ds);
  return ds;
}

// The score of query row ii of the tile (query i) and key j, reading key row kidx and position
// row pidx of the tile: -inf for padding and hidden keys, 0 in a row that hides every key.
template <class T, int DMAX>
__device__ T score_tile(const RelativeAttentionArgs<T>& ra, const Shared<T>& sh, int64_t b, int64_t h, int ii,
                        int64_t i, int64_t j, int kidx, int pidx) {
  constexpr int DP = DMAX + 1;
  const AttentionArgs<T>& a = ra.a;
  if (i >= a.Lq || j < 0 || j >= a.Lk) return neg_inf<T>();
  if (sh.empty[ii] != T(0)) return T(0);
  if (hidden(ra, b, h, i, j)) return neg_inf<T>();
  T s = dot(sh.qw + ii * DP, sh.k + kidx * DP, a.D);
  const int64_t c = a.Lq - i + j;
  s += c < ra.P ? dot(sh.qr + ii * DP, sh.kr + pidx * DP, a.D) : position_term(ra, b, h, i, c);
  if (ra.r_s_bias) {
    T w0, w1;
    segment_weights(ra, b, i, j, w0, w1);
    s += a.scale * (w0 * sh.e0[ii] + w1 * sh.e1[ii]);
  }
  return s;
}

// Query rows r0 .. r0 + rows - 1 of head (b, h): Q^w = scale (q + r_w_bias), Q^r = scale (q + r_r_bias),
// dO (when go.p is set), the segment dots and the empty flags; zeros past `rows` and past the dims.
template <class T, int DMAX>
__device__ void load_queries(const RelativeAttentionArgs<T>& ra, const Shared<T>& sh, AttnRows<const T> go, int64_t b,
                             int64_t h, int64_t r0, int64_t rows) {
  using Tl = RelTile<T, DMAX>;
  const AttentionArgs<T>& a = ra.a;
  const T *rw = ra.r_w_bias + h * a.D, *rr = ra.r_r_bias + h * a.D;
  for (int e = threadIdx.x; e < Tl::BQ * DMAX; e += kThreads) {
    const int r = e / DMAX, c = e % DMAX, at = r * Tl::DP + c;
    const bool in = r < rows && c < a.D;
    const T x = in ? row_of(a.q, b, h, r0 + r)[c] : T(0);
    sh.qw[at] = in ? a.scale * (x + rw[c]) : T(0);
    sh.qr[at] = in ? a.scale * (x + rr[c]) : T(0);
    if (go.p) sh.dout[at] = r < rows && c < a.Dv ? row_of(go, b, h, r0 + r)[c] : T(0);
  }
  for (int r = threadIdx.x; r < Tl::BQ; r += kThreads) {
    const bool in = r < rows, seg = in && ra.r_s_bias;
    sh.empty[r] = in && row_empty(ra, b, h, r0 + r) ? T(1) : T(0);
    sh.e0[r] = seg ? segment_dot(ra, b, h, r0 + r, 0) : T(0);
    sh.e1[r] = seg ? segment_dot(ra, b, h, r0 + r, 1) : T(0);
  }
}

// lse and delta of the query rows (into m and l); -inf and 0 past `rows`.
template <class T, int BQ>
__device__ void load_stats(const Shared<T>& sh, const T* lse, const T* delta, int64_t off, int64_t rows) {
  for (int r = threadIdx.x; r < BQ; r += kThreads) {
    sh.m[r] = r < rows ? lse[off + r] : neg_inf<T>();
    sh.l[r] = r < rows ? delta[off + r] : T(0);
  }
}

// `count` rows from row `first` (any integer) of an operand of length L and width w into a shared
// tile of rows of DMAX + 1; rows outside [0, L) and columns past w are zero.
template <class T, int DMAX>
__device__ void load_band(T* dst, int count, AttnRows<const T> src, int64_t b, int64_t h, int64_t first, int64_t L,
                          int64_t w) {
  for (int e = threadIdx.x; e < count * DMAX; e += kThreads) {
    const int r = e / DMAX, c = e % DMAX;
    const int64_t row = first + r;
    dst[r * (DMAX + 1) + c] = row >= 0 && row < L && c < w ? row_of(src, b, h, row)[c] : T(0);
  }
}

// acc[r][c] += sum_{k < K} x(ty + 8 r, k) y(k, tx + 16 c): a register tile fed from shared memory.
template <class T, int R, int C, class X, class Y>
__device__ __forceinline__ void accumulate(T (&acc)[R][C], int K, X x, Y y) {
  const int ty = threadIdx.x / kTX, tx = threadIdx.x % kTX;
  for (int k = 0; k < K; ++k)
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const T xr = x(ty + kTY * r, k);
#pragma unroll
      for (int c = 0; c < C; ++c) acc[r][c] = fma(xr, y(k, tx + kTX * c), acc[r][c]);
    }
}

// Rows [0, valid) and columns [0, w) of a register tile into a contiguous row-major block, times mul.
template <class T, int R, int C>
__device__ __forceinline__ void write_tile(const T (&acc)[R][C], T* dst, int64_t valid, int64_t w, T mul) {
  const int ty = threadIdx.x / kTX, tx = threadIdx.x % kTX;
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int row = ty + kTY * r, col = tx + kTX * c;
      if (row < valid && col < w) dst[row * w + col] = acc[r][c] * mul;
    }
}

// Calls f(row, col) for this thread's elements of a [BQ, BN] tile.
template <int RM, int RN, class F>
__device__ __forceinline__ void for_each_element(F f) {
  const int ty = threadIdx.x / kTX, tx = threadIdx.x % kTX;
#pragma unroll
  for (int r = 0; r < RM; ++r)
#pragma unroll
    for (int c = 0; c < RN; ++c) f(ty + kTY * r, tx + kTX * c, r, c);
}

// Key tile (queries from i0, keys from j0): K, V rows and the band of position rows.
template <class T, int DMAX>
__device__ void load_key_tile(const RelativeAttentionArgs<T>& ra, const Shared<T>& sh, int64_t b, int64_t h,
                              int64_t i0, int64_t j0, bool keys) {
  using Tl = RelTile<T, DMAX>;
  const AttentionArgs<T>& a = ra.a;
  if (keys) {
    load_band<T, DMAX>(sh.k, Tl::BN, a.k, b, h, j0, a.Lk, a.D);
    load_band<T, DMAX>(sh.v, Tl::BN, a.v, b, h, j0, a.Lk, a.Dv);
  }
  load_band<T, DMAX>(sh.kr, Tl::W, ra.kr, b, h, a.Lq - i0 - Tl::BQ + 1 + j0, ra.P, a.D);
}

// Position tile (query rows from r0, raw positions from c0): K_r rows and the band of keys.
template <class T, int DMAX>
__device__ void load_position_tile(const RelativeAttentionArgs<T>& ra, const Shared<T>& sh, int64_t b, int64_t h,
                                   int64_t r0, int64_t c0, bool positions) {
  using Tl = RelTile<T, DMAX>;
  const AttentionArgs<T>& a = ra.a;
  if (positions) load_band<T, DMAX>(sh.kr, Tl::BN, ra.kr, b, h, c0, ra.P, a.D);
  load_band<T, DMAX>(sh.k, Tl::W, a.k, b, h, r0 + c0 - a.Lq, a.Lk, a.D);
  load_band<T, DMAX>(sh.v, Tl::W, a.v, b, h, r0 + c0 - a.Lq, a.Lk, a.Dv);
}

// dS of the score that reads raw position (r, c), tile row ii and column u of a position tile
// (r = r0 + ii, c = c0 + u); 0 where no score reads it.
template <class T, int DMAX>
__device__ T position_grad(const RelativeAttentionArgs<T>& ra, const Shared<T>& sh, AttnRows<const T> go,
                           const T* lse, const T* delta, int64_t b, int64_t h, int ii, int u, int64_t r, int64_t c) {
  const AttentionArgs<T>& a = ra.a;
  if (r >= a.Lq || c < 0 || c >= ra.P || a.Lk == 0) return T(0);
  const int64_t j = r + c - a.Lq;
  if (j >= a.Lk) return T(0);
  if (j >= 0) {
    const T s = score_tile<T, DMAX>(ra, sh, b, h, ii, r, j, ii + u, u);
    T pz, ds;
    probs_and_grad(a, b, h, r, j, s, sh.m[ii], dot(sh.dout + ii * (DMAX + 1), sh.v + (ii + u) * (DMAX + 1), a.Dv),
                   sh.l[ii], pz, ds);
    return ds;
  }
  // A wrapped read: the flat index r P + c of HF's plane is Lq + i (P - 1) + j' of an earlier row.
  const int64_t flat = r * (ra.P - 1) + j;
  if (flat < 0 || flat % (ra.P - 1) >= a.Lk) return T(0);
  return score_grad_global(ra, go, lse, delta, b, h, flat / (ra.P - 1), flat % (ra.P - 1));
}

// dS of the position tile (rows from r0, raw positions from c0) into sh.ds, once its operands are
// loaded; the barriers on both sides order the loads, dS and its readers.
template <class T, int DMAX>
__device__ void position_tile_grads(const RelativeAttentionArgs<T>& ra, const Shared<T>& sh, AttnRows<const T> go,
                                    const T* lse, const T* delta, int64_t b, int64_t h, int64_t r0, int64_t c0) {
  using Tl = RelTile<T, DMAX>;
  __syncthreads();
  for_each_element<Tl::RM, Tl::RN>([&](int row, int col, int, int) {
    sh.ds[row * Tl::SP + col] = position_grad<T, DMAX>(ra, sh, go, lse, delta, b, h, row, col, r0 + row, c0 + col);
  });
  __syncthreads();
}

// ---------------------------------------------------------------- kernels
template <class T>
__global__ void rel_empty_kernel(const RelativeAttentionArgs<T> ra, int64_t n) {
  const AttentionArgs<T>& a = ra.a;
  for (int64_t row = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; row < n; row += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = row / (a.H * a.Lq), h = (row / a.Lq) % a.H, i = row % a.Lq;
    bool none = a.Lk > 0;
    for (int64_t j = 0; j < a.Lk && none; ++j) none = hidden(ra, b, h, i, j);
    ra.empty[row] = none ? 1 : 0;
  }
}

template <class T, int DMAX>
__global__ void __launch_bounds__(kThreads) rel_forward_kernel(const RelativeAttentionArgs<T> ra, T* __restrict__ out,
                                                               T* __restrict__ lse, T* __restrict__ probs) {
  using Tl = RelTile<T, DMAX>;
  constexpr int BQ = Tl::BQ, BN = Tl::BN, DP = Tl::DP, SP = Tl::SP;
  const Shared<T> sh = shared_of<T, DMAX>();
  const AttentionArgs<T>& a = ra.a;
  const int64_t head = blockIdx.x, b = head / a.H, h = head % a.H, i0 = int64_t(blockIdx.y) * BQ;
  const int64_t rows = lmin(BQ, a.Lq - i0), head_row = head * a.Lq + i0;

  load_queries<T, DMAX>(ra, sh, {}, b, h, i0, rows);
  for (int r = threadIdx.x; r < BQ; r += kThreads) sh.m[r] = neg_inf<T>(), sh.l[r] = T(0);
  T o[Tl::RM][Tl::RD];
  zero(o);
  auto scores = [&](int64_t j0) {
    for_each_element<Tl::RM, Tl::RN>([&](int row, int col, int, int) {
      sh.s[row * SP + col] = score_tile<T, DMAX>(ra, sh, b, h, row, i0 + row, j0 + col, col, BQ - 1 - row + col);
    });
  };
  for (int64_t j0 = 0; j0 < a.Lk; j0 += BN) {
    __syncthreads();  // the previous tile is consumed (and, first, the queries are loaded)
    load_key_tile<T, DMAX>(ra, sh, b, h, i0, j0, true);
    __syncthreads();
    scores(j0);
    __syncthreads();
    if (threadIdx.x < BQ) {  // online softmax, a thread per row
      const int row = threadIdx.x;
      T* sr = sh.s + row * SP;
      const T m_old = sh.m[row];
      T mx = m_old;
      for (int u = 0; u < BN; ++u) mx = max(mx, sr[u]);
      const T alpha = mx == m_old ? T(1) : exp(m_old - mx), mu = mx == neg_inf<T>() ? T(0) : mx;
      T sum = 0;
      for (int u = 0; u < BN; ++u) {
        const T p = exp_or_zero(sr[u] - mu);
        sum += p;  // before dropout, as softmax then dropout
        sr[u] = a.dropout_p > 0 && p != T(0) ? p * drop_factor(a, b, h, i0 + row, j0 + u) : p;
      }
      sh.m[row] = mx;
      sh.l[row] = sh.l[row] * alpha + sum;
      sh.alpha[row] = alpha;
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < Tl::RM; ++r)
#pragma unroll
      for (int c = 0; c < Tl::RD; ++c) o[r][c] *= sh.alpha[threadIdx.x / kTX + kTY * r];
    accumulate(o, BN, [&](int row, int u) { return sh.s[row * SP + u]; },
               [&](int u, int col) { return sh.v[u * DP + col]; });
  }
  __syncthreads();
  const int ty = threadIdx.x / kTX, tx = threadIdx.x % kTX;
#pragma unroll
  for (int r = 0; r < Tl::RM; ++r) {
    const int row = ty + kTY * r;
    const T l = sh.l[row], inv = l > T(0) ? T(1) / l : T(0);
#pragma unroll
    for (int c = 0; c < Tl::RD; ++c) {
      const int col = tx + kTX * c;
      if (row < rows && col < a.Dv) out[(head_row + row) * a.Dv + col] = o[r][c] * inv;
    }
  }
  __syncthreads();  // every thread has read m and l
  for (int r = threadIdx.x; r < BQ; r += kThreads) {
    sh.m[r] = sh.l[r] > T(0) ? sh.m[r] + log(sh.l[r]) : neg_inf<T>();
    if (r < rows) lse[head_row + r] = sh.m[r];
  }
  if (!probs) return;
  for (int64_t j0 = 0; j0 < a.Lk; j0 += BN) {  // the probabilities after dropout, recomputed
    __syncthreads();
    load_key_tile<T, DMAX>(ra, sh, b, h, i0, j0, true);
    __syncthreads();
    for_each_element<Tl::RM, Tl::RN>([&](int row, int col, int, int) {
      const int64_t i = i0 + row, j = j0 + col;
      if (row >= rows || j >= a.Lk) return;
      const T s = score_tile<T, DMAX>(ra, sh, b, h, row, i, j, col, BQ - 1 - row + col);
      T p = exp_or_zero(s - sh.m[row]);
      if (a.dropout_p > 0 && p != T(0)) p *= drop_factor(a, b, h, i, j);
      probs[(head_row + row) * a.Lk + j] = p;
    });
  }
}

template <class T, int DMAX>
__global__ void __launch_bounds__(kThreads) rel_dkdv_kernel(const RelativeAttentionArgs<T> ra, AttnRows<const T> go,
                                                            const T* __restrict__ lse, const T* __restrict__ delta,
                                                            T* __restrict__ dk, T* __restrict__ dv) {
  using Tl = RelTile<T, DMAX>;
  constexpr int BQ = Tl::BQ, BN = Tl::BN, DP = Tl::DP, SP = Tl::SP;
  const Shared<T> sh = shared_of<T, DMAX>();
  const AttentionArgs<T>& a = ra.a;
  const int64_t head = blockIdx.x, b = head / a.H, h = head % a.H, j0 = int64_t(blockIdx.y) * BN;
  T gk[BN / kTY][Tl::RD], gv[BN / kTY][Tl::RD];
  zero(gk);
  zero(gv);
  for (int64_t i0 = 0; i0 < a.Lq; i0 += BQ) {
    const int64_t rows = lmin(BQ, a.Lq - i0);
    __syncthreads();
    load_queries<T, DMAX>(ra, sh, go, b, h, i0, rows);
    load_stats<T, BQ>(sh, lse, delta, head * a.Lq + i0, rows);
    load_key_tile<T, DMAX>(ra, sh, b, h, i0, j0, i0 == 0);
    __syncthreads();
    for_each_element<Tl::RM, Tl::RN>([&](int row, int col, int, int) {
      const int64_t i = i0 + row, j = j0 + col;
      const T s = score_tile<T, DMAX>(ra, sh, b, h, row, i, j, col, BQ - 1 - row + col);
      T pz, ds;
      probs_and_grad(a, b, h, i, j, s, sh.m[row], dot(sh.dout + row * DP, sh.v + col * DP, a.Dv), sh.l[row], pz, ds);
      sh.s[row * SP + col] = pz;
      sh.ds[row * SP + col] = ds;
    });
    __syncthreads();
    accumulate(gv, BQ, [&](int u, int ii) { return sh.s[ii * SP + u]; },
               [&](int ii, int col) { return sh.dout[ii * DP + col]; });
    accumulate(gk, BQ, [&](int u, int ii) { return sh.ds[ii * SP + u]; },
               [&](int ii, int col) { return sh.qw[ii * DP + col]; });
  }
  const int64_t cols = lmin(BN, a.Lk - j0);
  write_tile(gk, dk + (head * a.Lk + j0) * a.D, cols, a.D, T(1));
  write_tile(gv, dv + (head * a.Lk + j0) * a.Dv, cols, a.Dv, T(1));
}

template <class T, int DMAX>
__global__ void __launch_bounds__(kThreads) rel_dq_kernel(const RelativeAttentionArgs<T> ra, AttnRows<const T> go,
                                                          const T* __restrict__ lse, const T* __restrict__ delta,
                                                          RelativeAttentionGrads<T> g) {
  using Tl = RelTile<T, DMAX>;
  constexpr int BQ = Tl::BQ, BN = Tl::BN, DP = Tl::DP, SP = Tl::SP;
  const Shared<T> sh = shared_of<T, DMAX>();
  const AttentionArgs<T>& a = ra.a;
  const int64_t head = blockIdx.x, b = head / a.H, h = head % a.H, r0 = int64_t(blockIdx.y) * BQ;
  const int64_t rows = lmin(BQ, a.Lq - r0);
  load_queries<T, DMAX>(ra, sh, go, b, h, r0, rows);
  load_stats<T, BQ>(sh, lse, delta, head * a.Lq + r0, rows);
  T gw[Tl::RM][Tl::RD], gr[Tl::RM][Tl::RD], seg[Tl::RM][2];
  zero(gw);
  zero(gr);
  zero(seg);
  // Content and segment parts over key tiles.
  for (int64_t j0 = 0; j0 < a.Lk; j0 += BN) {
    __syncthreads();
    load_key_tile<T, DMAX>(ra, sh, b, h, r0, j0, true);
    __syncthreads();
    for_each_element<Tl::RM, Tl::RN>([&](int row, int col, int r, int) {
      const int64_t i = r0 + row, j = j0 + col;
      const T s = score_tile<T, DMAX>(ra, sh, b, h, row, i, j, col, BQ - 1 - row + col);
      T pz, ds;
      probs_and_grad(a, b, h, i, j, s, sh.m[row], dot(sh.dout + row * DP, sh.v + col * DP, a.Dv), sh.l[row], pz, ds);
      sh.ds[row * SP + col] = ds;
      if (ra.r_s_bias && i < a.Lq && j < a.Lk) {
        T w0, w1;
        segment_weights(ra, b, i, j, w0, w1);
        seg[r][0] += ds * w0;
        seg[r][1] += ds * w1;
      }
    });
    __syncthreads();
    accumulate(gw, BN, [&](int ii, int u) { return sh.ds[ii * SP + u]; },
               [&](int u, int col) { return sh.k[u * DP + col]; });
  }
  // Position part over the raw positions the block's rows hold: c in [Lq - r0 - BQ + 1, Lq - r0 + Lk)
  // for their own scores, and from 0 when scores wrap into them.
  const bool wraps = a.Lq + a.Lk - 1 >= ra.P;
  const int64_t c_lo = wraps ? 0 : lmax(0, a.Lq - r0 - BQ + 1), c_hi = lmin(ra.P, a.Lq - r0 + a.Lk);
  for (int64_t c0 = c_lo; c0 < c_hi; c0 += BN) {
    __syncthreads();
    load_position_tile<T, DMAX>(ra, sh, b, h, r0, c0, true);
    position_tile_grads<T, DMAX>(ra, sh, go, lse, delta, b, h, r0, c0);
    accumulate(gr, BN, [&](int ii, int u) { return sh.ds[ii * SP + u]; },
               [&](int u, int col) { return sh.kr[u * DP + col]; });
  }
  write_tile(gw, g.dqw + (head * a.Lq + r0) * a.D, rows, a.D, a.scale);
  write_tile(gr, g.dqr + (head * a.Lq + r0) * a.D, rows, a.D, a.scale);
  // The segment sums: each thread holds columns tx, tx + 16, ... of its rows; the 16 partial sums
  // of a row are added in a fixed order.
  __syncthreads();
  const int ty = threadIdx.x / kTX, tx = threadIdx.x % kTX;
#pragma unroll
  for (int r = 0; r < Tl::RM; ++r) {
    sh.s[(ty + kTY * r) * SP + tx] = seg[r][0];
    sh.ds[(ty + kTY * r) * SP + tx] = seg[r][1];
  }
  __syncthreads();
  for (int e = threadIdx.x; e < 2 * rows; e += kThreads) {
    const int row = e / 2, s = e % 2;
    const T* part = (s == 0 ? sh.s : sh.ds) + row * SP;
    T t = 0;
    for (int x = 0; x < kTX; ++x) t += part[x];
    g.es[(head * a.Lq + r0 + row) * 2 + s] = a.scale * t;
  }
}

template <class T, int DMAX>
__global__ void __launch_bounds__(kThreads) rel_dkr_kernel(const RelativeAttentionArgs<T> ra, AttnRows<const T> go,
                                                           const T* __restrict__ lse, const T* __restrict__ delta,
                                                           T* __restrict__ dkr) {
  using Tl = RelTile<T, DMAX>;
  constexpr int BQ = Tl::BQ, BN = Tl::BN, DP = Tl::DP, SP = Tl::SP;
  const Shared<T> sh = shared_of<T, DMAX>();
  const AttentionArgs<T>& a = ra.a;
  const int64_t head = blockIdx.x, b = head / a.H, h = head % a.H, c0 = int64_t(blockIdx.y) * BN;
  T gkr[BN / kTY][Tl::RD];
  zero(gkr);
  // Rows whose own scores read positions [c0, c0 + BN), and from 0 those whose reads wrap.
  const bool wraps = a.Lq + a.Lk - 1 >= ra.P;
  const int64_t r_lo = wraps ? 0 : lmax(0, a.Lq - c0 - BN + 1), r_hi = lmin(a.Lq, a.Lq - c0 + a.Lk);
  for (int64_t r0 = r_lo; r0 < r_hi; r0 += BQ) {
    const int64_t rows = lmin(BQ, a.Lq - r0);
    __syncthreads();
    load_queries<T, DMAX>(ra, sh, go, b, h, r0, rows);
    load_stats<T, BQ>(sh, lse, delta, head * a.Lq + r0, rows);
    load_position_tile<T, DMAX>(ra, sh, b, h, r0, c0, r0 == r_lo);
    position_tile_grads<T, DMAX>(ra, sh, go, lse, delta, b, h, r0, c0);
    accumulate(gkr, BQ, [&](int u, int ii) { return sh.ds[ii * SP + u]; },
               [&](int ii, int col) { return sh.qr[ii * DP + col]; });
  }
  write_tile(gkr, dkr + (head * ra.P + c0) * a.D, lmin(BN, ra.P - c0), a.D, T(1));
}

// ---------------------------------------------------------------- launches
// x over heads, y over the blocks of one head.
dim3 rel_grid(int64_t heads, int64_t len, int block) {
  const int64_t blocks = (len + block - 1) / block;
  TXTCLS_CHECK(heads < (int64_t(1) << 31) && blocks <= 65535, "relative_attention: ", heads, " heads of ", len,
               " rows are more than one launch takes on CUDA");
  return dim3(static_cast<unsigned>(heads), static_cast<unsigned>(blocks));
}

template <class K>
void launch_tiles(K kernel, dim3 grid, int smem, const char* name, auto... args) {
  allow_dynamic_smem(kernel, smem);
  kernel<<<grid, kThreads, smem, active_stream()>>>(args...);
  TXTCLS_KERNEL_CHECK(name);
}

template <class T, int DMAX>
void forward_dmax(const RelativeAttentionArgs<T>& ra, T* out, T* lse, T* probs) {
  using Tl = RelTile<T, DMAX>;
  launch_tiles(rel_forward_kernel<T, DMAX>, rel_grid(ra.a.B * ra.a.H, ra.a.Lq, Tl::BQ), Tl::kSmem,
               "relative_attention_forward", ra, out, lse, probs);
}

template <class T, int DMAX>
void backward_dmax(const RelativeAttentionArgs<T>& ra, AttnRows<const T> go, const T* lse,
                   const RelativeAttentionGrads<T>& g) {
  using Tl = RelTile<T, DMAX>;
  const int64_t heads = ra.a.B * ra.a.H;
  if (ra.a.Lk > 0)
    launch_tiles(rel_dkdv_kernel<T, DMAX>, rel_grid(heads, ra.a.Lk, Tl::BN), Tl::kSmem, "relative_attention_dkdv",
                 ra, go, lse, g.delta, g.dk, g.dv);
  if (ra.a.Lq > 0)
    launch_tiles(rel_dq_kernel<T, DMAX>, rel_grid(heads, ra.a.Lq, Tl::BQ), Tl::kSmem, "relative_attention_dq", ra,
                 go, lse, g.delta, g);
  launch_tiles(rel_dkr_kernel<T, DMAX>, rel_grid(heads, ra.P, Tl::BN), Tl::kSmem, "relative_attention_dkr", ra, go,
               lse, g.delta, g.dkr);
}

}  // namespace

template <class T>
void relative_attention_forward(const RelativeAttentionArgs<T>& ra, T* out, T* lse, T* probs) {
  const AttentionArgs<T>& a = ra.a;
  check_attention_head_dims(a.D, a.Dv, "relative_attention");
  const int64_t rows = a.B * a.H * a.Lq;
  if (rows == 0) return;
  rel_empty_kernel<T><<<grid_for(rows), kBlock, 0, active_stream()>>>(ra, rows);
  TXTCLS_KERNEL_CHECK("relative_attention_empty");
  if (a.D <= 64 && a.Dv <= 64) forward_dmax<T, 64>(ra, out, lse, probs);
  else forward_dmax<T, 128>(ra, out, lse, probs);
}

template <class T>
void relative_attention_backward(const RelativeAttentionArgs<T>& ra, AttnRows<const T> dout, const T* lse,
                                 const RelativeAttentionGrads<T>& g) {
  const AttentionArgs<T>& a = ra.a;
  check_attention_head_dims(a.D, a.Dv, "relative_attention");
  if (a.B * a.H == 0) return;
  if (a.D <= 64 && a.Dv <= 64) backward_dmax<T, 64>(ra, dout, lse, g);
  else backward_dmax<T, 128>(ra, dout, lse, g);
}

template void relative_attention_forward<float>(const RelativeAttentionArgs<float>&, float*, float*, float*);
template void relative_attention_forward<double>(const RelativeAttentionArgs<double>&, double*, double*, double*);
template void relative_attention_backward<float>(const RelativeAttentionArgs<float>&, AttnRows<const float>,
                                                 const float*, const RelativeAttentionGrads<float>&);
template void relative_attention_backward<double>(const RelativeAttentionArgs<double>&, AttnRows<const double>,
                                                  const double*, const RelativeAttentionGrads<double>&);

}  // namespace txtcls::cuda
