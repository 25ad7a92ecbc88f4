#pragma once
// CPU kernels of the fused attention op (ops/attention.hpp): FlashAttention-2's algorithm on
// packed GEMM blocks.
//
// Forward, per (batch, head, query block): stream the key blocks; for each, S = (scale Q) K^T on
// a [bq, bk] tile, add the score terms, update the running row max m and row sum l (online
// softmax), P = exp(S - m), O = O * exp(m_old - m) + (P * dropout) V. At the end O / l is the
// output and m + log l (the row's logsumexp) is saved for backward. Lq x Lk is never stored.
//
// Backward, per (batch, head): for each key block, for each query block that can see it,
// recompute P = exp(S - lse) and the dropout factors Z, then
//   dV += (P Z)^T dO,  dP = (dO V^T) Z,  dS = P (dP - rowsum(dO * O)),
//   dK += dS^T (scale Q),  dQ += scale dS K,  dBias += dS.
// A task owns dQ, dK, dV of its head, so nothing is shared but a broadcast bias gradient.
//
// Packing: K^T and V of every head are packed once before the forward; the backward packs the
// query-side operands of its head once and the key-side ones per key block. Score tiles are
// written by the GEMM straight into the layout of a packed left operand (kPanelTiles), so P and
// dS need no packing for the products that take them on the left; per tile pair only dS for dQ
// (a right operand) is packed.
#include <vector>

#include "txtcls/ops/attention_tiles.hpp"

namespace txtcls::detail::attn {

// ---------------------------------------------------------------- forward
// K^T [D, bk] and V [bk, Dv] of every key block of one head, packed as right operands.
template <class T>
struct PackedKeys {
  int64_t nkb = 0, kt_size = 0, v_size = 0, head = -1;  // head: the one packed, -1 for none
  AlignedVec<T> buf;
  explicit PackedKeys(const Problem<T>& p)
      : nkb((p.Lk + p.bk - 1) / p.bk), kt_size(rhs_size<T>(p.D, p.bk)), v_size(rhs_size<T>(p.bk, p.Dv)),
        buf(static_cast<size_t>(std::max<int64_t>(1, nkb * (kt_size + v_size)))) {}
  T* kt(int64_t kb) { return buf.data() + kb * (kt_size + v_size); }
  T* v(int64_t kb) { return kt(kb) + kt_size; }
  const T* kt(int64_t kb) const { return buf.data() + kb * (kt_size + v_size); }
  const T* v(int64_t kb) const { return kt(kb) + kt_size; }

  void pack(const Problem<T>& p, int64_t b, int64_t h) {
    head = b * p.H + h;
    const int64_t kend = p.key_end(b);
    for (int64_t kb = 0; kb * p.bk < kend; ++kb) {
      const int64_t j0 = kb * p.bk, cols = std::min(p.bk, kend - j0);
      pack_rhs(kt(kb), MatRef<T>{p.k.row(b, h, j0), p.D, cols, 1, p.k.si});
      pack_rhs(v(kb), MatRef<T>{p.v.row(b, h, j0), cols, p.Dv, p.v.si, 1});
    }
  }
};

// Per-thread buffers of the forward.
template <class T>
struct ForwardScratch {
  PackedKeys<T> keys;
  AlignedVec<T> q, qa, s, pa, o, m, l, alpha;
  explicit ForwardScratch(const Problem<T>& p)
      : keys(p), q(p.bq * p.D), qa(lhs_size<T>(p.bq, p.D)), s(round_up(p.bq, 16) * p.bk),
        pa(kPanelTiles<T> ? 0 : lhs_size<T>(p.bq, p.bk)), o(p.bq * p.Dv), m(p.bq), l(p.bq), alpha(p.bq) {}
};

// Output rows [i0, i0 + bq) of head (b, h) and their logsumexp.
template <class T>
void forward_block(const Problem<T>& p, int64_t b, int64_t h, int64_t i0, Rows<T> out, T* lse,
                   ForwardScratch<T>& w) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  const int64_t rows = std::min(p.bq, p.Lq - i0), head = b * p.H + h, D = p.D, Dv = p.Dv;
  // Key blocks up to kend hold a visible key; a block is multiplied whole (as packed), keys past
  // the causal diagonal being hidden by apply_terms.
  const int64_t kend = p.key_end(b, i0 + rows), klen = p.key_end(b);
  T* lse_rows = lse + head * p.Lq + i0;
  if (kend <= 0) {  // no key visible to any row: empty rows
    for (int64_t r = 0; r < rows; ++r) {
      std::fill(out.row(b, h, i0 + r), out.row(b, h, i0 + r) + Dv, T(0));
      lse_rows[r] = kNegInf;
    }
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const T* src = p.q.row(b, h, i0 + r);
    for (int64_t d = 0; d < D; ++d) w.q[r * D + d] = src[d] * p.scale;
  }
  pack_lhs(w.qa.data(), row_major_ref<T>(w.q.data(), rows, D, D));
  T *m = w.m.data(), *l = w.l.data(), *alpha = w.alpha.data(), *o = w.o.data();
  std::fill(m, m + rows, kNegInf);
  std::fill(l, l + rows, T(0));
  std::fill(o, o + rows * Dv, T(0));  // O(i, d) at o[i + d * rows]
  for (int64_t kb = 0; kb * p.bk < kend; ++kb) {
    const int64_t j0 = kb * p.bk, cols = std::min(p.bk, klen - j0);
    // S(i, j) at s[(i / 16) * panel + i % 16 + j * cs]: column-major, or (kPanelTiles) already
    // laid out as the packed left operand of O += P V.
    constexpr bool kPanels = kPanelTiles<T>;
    const int64_t panel = kPanels ? 16 * cols : 16, cs = kPanels ? 16 : rows;
    T* s = w.s.data();
    auto at = [&](int64_t i, int64_t j) -> T& { return s[(i / 16) * panel + i % 16 + j * cs]; };
    multiply<T>({s, rows}, w.qa.data(), w.keys.kt(kb), rows, cols, D, false, kPanels);
    for (int64_t r0 = 0; r0 < rows; r0 += 16)
      apply_terms(p, Tile<T>{&at(r0, 0), 1, cs, std::min<int64_t>(16, rows - r0), cols, i0 + r0, j0}, b, h);
    // Online softmax: s becomes P = exp(S - m_new); O was accumulated under m_old, rescale it.
    const bool rescale = softmax_step(s, rows, cols, panel, cs, m, l, alpha);
    if (p.dropout())
      for (int64_t j = 0; j < cols; ++j)
        for (int64_t i = 0; i < rows; ++i) at(i, j) *= drop_factor(p, p.drop_index(b, h, i0 + i, j0 + j));
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
  }
  column_major_to_rows(o, rows, Dv, out.row(b, h, i0), out.si);
  for (int64_t i = 0; i < rows; ++i) {
    const T inv = l[i] > T(0) ? T(1) / l[i] : T(0);  // l == 0: every key hidden, an empty row
    T* dst = out.row(b, h, i0 + i);
#pragma omp simd
    for (int64_t d = 0; d < Dv; ++d) dst[d] *= inv;
    lse_rows[i] = l[i] > T(0) ? m[i] + std::log(l[i]) : kNegInf;
  }
}

// out [B, H, Lq, Dv] (rows of Dv) and lse [B, H, Lq] (contiguous). One parallel region: a task
// is a head, or a share of a head's query blocks when there are too few heads for the threads,
// and packs its head's keys and values itself (a pass of its own would cost a second fork/join,
// which on a loaded machine means waking a descheduled thread once more).
template <class T>
void forward(const Problem<T>& p, Rows<T> out, T* lse) {
  const int64_t heads = p.B * p.H, nqb = (p.Lq + p.bq - 1) / p.bq;
  if (heads == 0 || nqb == 0) return;
  const bool parallel = heads * nqb > 1 && heads * p.Lq * p.Lk * (p.D + p.Dv) > kParallelGrain;
  const int threads = parallel ? num_threads() : 1;
  const int64_t splits = std::min(nqb, (2 * threads + heads - 1) / heads), tasks = heads * splits;
#pragma omp parallel num_threads(threads)
  {
    ForwardScratch<T> w(p);
#pragma omp for schedule(dynamic)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t head = t / splits, share = t % splits, b = head / p.H, h = head % p.H;
      if (w.keys.head != head) w.keys.pack(p, b, h);
      // Query blocks share, share + splits, ...: under causal each share gets light and heavy ones.
      for (int64_t qb = share; qb < nqb; qb += splits) forward_block(p, b, h, qb * p.bq, out, lse, w);
    }
  }
}

// ---------------------------------------------------------------- backward
template <class T>
struct Grads {
  Rows<T> dq, dk, dv;  // contiguous [B, H, L, D]: row stride D; written whole by the head's task
  Term<T> dbias;       // bias-shaped, zero on entry; null when not wanted
};

// Per-thread buffers of the backward.
template <class T>
struct BackwardScratch {
  int64_t nqb, qt_size, qb_size, dot_size, dob_size;
  AlignedVec<T> qt, qb, dot, dob;  // per query block: (scale Q)^T, scale Q, dO^T, dO, packed as right operands
  AlignedVec<T> qtmp, delta;
  AlignedVec<T> ka, va, kta, dk, dv;  // per key block: K, V, K^T packed as left operands; dK, dV (column-major)
  AlignedVec<T> s, u;                 // per tile: P^T and dS^T [bk, bq]
  AlignedVec<T> pa, dsb;              // per tile: a packed left operand (without kPanelTiles), dS^T packed
  explicit BackwardScratch(const Problem<T>& p)
      : nqb((p.Lq + p.bq - 1) / p.bq), qt_size(rhs_size<T>(p.D, p.bq)), qb_size(rhs_size<T>(p.bq, p.D)),
        dot_size(rhs_size<T>(p.Dv, p.bq)), dob_size(rhs_size<T>(p.bq, p.Dv)), qt(nqb * qt_size), qb(nqb * qb_size),
        dot(nqb * dot_size), dob(nqb * dob_size), qtmp(p.bq * p.D), delta(p.Lq), ka(lhs_size<T>(p.bk, p.D)),
        va(lhs_size<T>(p.bk, p.Dv)), kta(lhs_size<T>(p.D, p.bk)), dk(p.bk * p.D), dv(p.bk * p.Dv),
        s(round_up(p.bk, 16) * p.bq), u(round_up(p.bk, 16) * p.bq), pa(kPanelTiles<T> ? 0 : lhs_size<T>(p.bk, p.bq)),
        dsb(rhs_size<T>(p.bk, p.bq)) {}
};

// Gradients of head (b, h). o: the forward output; go: its gradient; lse: the saved logsumexp.
template <class T>
void backward_head(const Problem<T>& p, Rows<const T> o, Rows<const T> go, const T* lse, const Grads<T>& g, int64_t b,
                   int64_t h, BackwardScratch<T>& w) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  const int64_t D = p.D, Dv = p.Dv, Lq = p.Lq;
  const T* lse_h = lse + (b * p.H + h) * Lq;
  T* delta = w.delta.data();
  for (int64_t i = 0; i < Lq; ++i) {  // rowsum(dO * O)
    const T *a = go.row(b, h, i), *c = o.row(b, h, i);
    T acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t d = 0; d < Dv; ++d) acc += a[d] * c[d];
    delta[i] = acc;
  }
  for (int64_t ib = 0; ib < w.nqb; ++ib) {
    const int64_t i0 = ib * p.bq, rows = std::min(p.bq, Lq - i0);
    T* qs = w.qtmp.data();
    for (int64_t r = 0; r < rows; ++r) {
      const T* src = p.q.row(b, h, i0 + r);
      for (int64_t d = 0; d < D; ++d) qs[r * D + d] = src[d] * p.scale;
    }
    pack_rhs(w.qt.data() + ib * w.qt_size, MatRef<T>{qs, D, rows, 1, D});
    pack_rhs(w.qb.data() + ib * w.qb_size, MatRef<T>{qs, rows, D, D, 1});
    const T* g0 = go.row(b, h, i0);
    pack_rhs(w.dot.data() + ib * w.dot_size, MatRef<T>{g0, Dv, rows, 1, go.si});
    pack_rhs(w.dob.data() + ib * w.dob_size, MatRef<T>{g0, rows, Dv, go.si, 1});
  }
  T* dq = g.dq.row(b, h, 0);
  std::fill(dq, dq + Lq * D, T(0));
  const int64_t kend = p.key_end(b);
  for (int64_t kb = 0; kb * p.bk < kend; ++kb) {
    const int64_t j0 = kb * p.bk, cols = std::min(p.bk, kend - j0);
    const T *k0 = p.k.row(b, h, j0), *v0 = p.v.row(b, h, j0);
    pack_lhs(w.ka.data(), MatRef<T>{k0, cols, D, p.k.si, 1});
    pack_lhs(w.va.data(), MatRef<T>{v0, cols, Dv, p.v.si, 1});
    pack_lhs(w.kta.data(), MatRef<T>{k0, D, cols, 1, p.k.si});
    T *dk = w.dk.data(), *dv = w.dv.data();  // dK(j, d) at dk[j + d * cols]
    std::fill(dk, dk + cols * D, T(0));
    std::fill(dv, dv + cols * Dv, T(0));
    const int64_t first_query = p.causal ? std::clamp<int64_t>(j0 - p.diag, 0, Lq) : 0;
    for (int64_t ib = first_query / p.bq; ib < w.nqb; ++ib) {
      const int64_t i0 = ib * p.bq, rows = std::min(p.bq, Lq - i0);
      // Tiles of keys by queries: element (j, i) at s[(j / 16) * panel + j % 16 + i * cs], column-
      // major or (kPanelTiles) laid out as packed left operands of dV += (P Z)^T dO, dK += dS^T Q.
      constexpr bool kPanels = kPanelTiles<T>;
      const int64_t panel = kPanels ? 16 * rows : 16, cs = kPanels ? 16 : cols, chunk = kPanels ? 16 : cols;
      T *s = w.s.data(), *u = w.u.data();
      multiply<T>({s, cols}, w.ka.data(), w.qt.data() + ib * w.qt_size, cols, rows, D, false, kPanels);
      multiply<T>({u, cols}, w.va.data(), w.dot.data() + ib * w.dot_size, cols, rows, Dv, false, kPanels);  // dO V^T
      for (int64_t c0 = 0; c0 < cols; c0 += chunk) {
        const int64_t kc = std::min(chunk, cols - c0), off = (c0 / 16) * panel + c0 % 16;
        apply_terms(p, Tile<T>{s + off, cs, 1, rows, kc, i0, j0 + c0}, b, h);
        for (int64_t i = 0; i < rows; ++i) {
          T *pc = s + off + i * cs, *uc = u + off + i * cs;
          const T l = lse_h[i0 + i], di = delta[i0 + i];
          if (l == kNegInf) {  // an empty row: no gradient
            std::fill(pc, pc + kc, T(0));
            std::fill(uc, uc + kc, T(0));
            continue;
          }
          if (p.dropout()) {
            exp_sub(pc, l, kc);  // P
            const uint64_t base = p.drop_index(b, h, i0 + i, j0 + c0);
            for (int64_t j = 0; j < kc; ++j) {
              const T z = drop_factor(p, base + j);
              uc[j] = pc[j] * (uc[j] * z - di);
              pc[j] *= z;
            }
          } else {
            probs_and_score_grad(pc, uc, l, di, kc);
          }
          if (g.dbias) {
            T* dst = g.dbias.at(b, h, i0 + i, j0 + c0);
            const int64_t sj = g.dbias.sj;
            for (int64_t j = 0; j < kc; ++j) dst[j * sj] += uc[j];
          }
        }
      }
      if constexpr (kPanels) {
        multiply<T>({dv, cols}, s, w.dob.data() + ib * w.dob_size, cols, Dv, rows, true);
        multiply<T>({dk, cols}, u, w.qb.data() + ib * w.qb_size, cols, D, rows, true);
#if TXTCLS_SGEMM
        pack_b_from_panels(w.dsb.data(), u, cols, rows, panel);
#endif
      } else {
        pack_lhs(w.pa.data(), MatRef<T>{s, cols, rows, 1, cols});
        multiply<T>({dv, cols}, w.pa.data(), w.dob.data() + ib * w.dob_size, cols, Dv, rows, true);
        pack_lhs(w.pa.data(), MatRef<T>{u, cols, rows, 1, cols});
        multiply<T>({dk, cols}, w.pa.data(), w.qb.data() + ib * w.qb_size, cols, D, rows, true);
        pack_rhs(w.dsb.data(), MatRef<T>{u, cols, rows, 1, cols});
      }
      multiply<T>({dq + i0 * D, D}, w.kta.data(), w.dsb.data(), D, rows, cols, true);
    }
    column_major_to_rows(dk, cols, D, g.dk.row(b, h, j0), g.dk.si);
    column_major_to_rows(dv, cols, Dv, g.dv.row(b, h, j0), g.dv.si);
  }
  for (int64_t j = kend; j < p.Lk; ++j) {  // padding keys get no gradient
    std::fill(g.dk.row(b, h, j), g.dk.row(b, h, j) + D, T(0));
    std::fill(g.dv.row(b, h, j), g.dv.row(b, h, j) + Dv, T(0));
  }
  for (int64_t i = 0; i < Lq * D; ++i) dq[i] *= p.scale;
}

// Runs backward_head over every head. A bias gradient broadcast over batch or heads is shared by
// several heads: heads that share it run in one task when there are enough such groups,
// otherwise every thread accumulates into its own copy and the copies are summed.
template <class T>
void backward(const Problem<T>& p, Rows<const T> o, Rows<const T> go, const T* lse, Grads<T> g, int64_t dbias_numel) {
  const int64_t heads = p.B * p.H;
  if (heads == 0) return;
  const int threads = (heads > 1 && heads * p.Lq * p.Lk * (p.D + p.Dv) > kParallelGrain) ? num_threads() : 1;
  const bool shared_b = g.dbias && g.dbias.sb == 0 && p.B > 1, shared_h = g.dbias && g.dbias.sh == 0 && p.H > 1;
  const int64_t group_b = shared_b ? 1 : p.B, group_h = shared_h ? 1 : p.H, groups = group_b * group_h;
  const int64_t per_group = heads / groups;
  if (!shared_b && !shared_h) {
#pragma omp parallel num_threads(threads)
    {
      BackwardScratch<T> w(p);
#pragma omp for schedule(dynamic)
      for (int64_t head = 0; head < heads; ++head) backward_head(p, o, go, lse, g, head / p.H, head % p.H, w);
    }
    return;
  }
  if (threads == 1 || groups >= 2 * threads) {
#pragma omp parallel num_threads(threads)
    {
      BackwardScratch<T> w(p);
#pragma omp for schedule(dynamic)
      for (int64_t grp = 0; grp < groups; ++grp)
        for (int64_t r = 0; r < per_group; ++r) {
          // Group (gb, gh) holds the heads whose non-shared coordinates are (gb, gh).
          const int64_t b = shared_b ? r / (shared_h ? p.H : 1) : grp / group_h;
          const int64_t h = shared_h ? r % p.H : grp % group_h;
          backward_head(p, o, go, lse, g, b, h, w);
        }
    }
    return;
  }
  std::vector<AlignedVec<T>> copies(static_cast<size_t>(threads));
#pragma omp parallel num_threads(threads)
  {
    BackwardScratch<T> w(p);
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
    AlignedVec<T>& mine = copies[static_cast<size_t>(tid)];
    mine.assign(static_cast<size_t>(dbias_numel), T(0));
    Grads<T> gt = g;
    gt.dbias.p = mine.data();
#pragma omp for schedule(dynamic)
    for (int64_t head = 0; head < heads; ++head) backward_head(p, o, go, lse, gt, head / p.H, head % p.H, w);
  }
  for (const auto& c : copies)
    if (!c.empty())
      for (int64_t i = 0; i < dbias_numel; ++i) g.dbias.p[i] += c[static_cast<size_t>(i)];
}

}  // namespace txtcls::detail::attn
