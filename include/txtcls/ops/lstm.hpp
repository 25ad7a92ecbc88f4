#pragma once
// Fused LSTM layer over padded, batch-first sequences, with hand-written backpropagation
// through time. Gate order and weight shapes are PyTorch's (i, f, g, o stacked in W [4H, *]),
// so nn.LSTM weights load unchanged.
//
//   lstm_layer(x [B,T,I], lengths [B], w_ih [4H,I], w_hh [4H,H], b_ih [4H], b_hh [4H], reverse)
//       -> [B,T,H], zero where t >= lengths[b]
//   lstm_bidirectional_layer(x, lengths, fwd, rev) -> [B,T,2H] = [forward | reverse]
//
// A sequence is processed for exactly its own length: the reverse direction starts at the
// sequence's last valid step (as with pack_padded_sequence), and padded steps neither produce
// output nor receive gradient.
//
// How it is fast:
//  * sequences are ordered longest first, so the live rows of every step are a prefix and the
//    rows of all steps pack into one [N, *] matrix (N = total valid steps): padding costs
//    nothing, and the input projection X W_ih^T, the weight gradients [dW_ih | dW_hh] and dX
//    are one GEMM each;
//  * W_hh is packed once per call into the GEMM micro-kernel's layout, so each step only
//    multiplies the [live, H] state by a ready panel (packed_gemm.hpp);
//  * the gate nonlinearities, cell and hidden updates are one fused loop per step, forward
//    and backward (the backward overwrites the saved gate activations with gate gradients);
//  * threads split the work by direction first (both directions of a layer run concurrently)
//    and then by hidden units: a thread owns units [u0, u1) and the four gate slices of those
//    units sit side by side in the gate buffer, so it can update its units right after its
//    own slice of the recurrent GEMM; threads meet once per step only when they share a
//    direction.
//
// Devices: everything CPU-specific is in lstm_forward_cpu / lstm_backward_cpu, which read and
// write an LstmSaved. On a CUDA tensor, lstm_directions() runs the GPU implementation instead
// (txtcls/cuda/lstm.hpp: the own kernels, or cuDNN's RNN behind cuda::set_lstm_backend), with
// the same semantics and the same gradients.
#include <algorithm>
#include <functional>
#include <memory>
#include <numeric>
#include <utility>
#include <vector>

#include "txtcls/cuda/lstm.hpp"
#include "txtcls/ops/packed_gemm.hpp"
#include "txtcls/tensor.hpp"

namespace txtcls {

// Weights of one direction of one layer, PyTorch's layout. Biases may be undefined (no bias).
template <class T>
struct LstmWeights {
  Tensor<T> w_ih;  // [4H, I]
  Tensor<T> w_hh;  // [4H, H]
  Tensor<T> b_ih;  // [4H]
  Tensor<T> b_hh;  // [4H]
};

namespace detail {

// The step structure shared by all directions of a layer. Sequences are sorted longest first
// (stable), so at step s the live sequences are sorted positions [0, active[s]) and their
// packed rows are offset[s] + k: sorted sequence k at time s (forward) or len[k]-1-s (reverse).
struct LstmSchedule {
  int64_t batch = 0, time = 0, steps = 0, rows = 0;
  std::vector<int64_t> order;   // sorted position -> batch index
  std::vector<int64_t> rank;    // batch index -> sorted position
  std::vector<int64_t> len;     // length of sorted sequence k
  std::vector<int64_t> active;  // live sequences at step s
  std::vector<int64_t> offset;  // first packed row of step s; offset[steps] = rows

  int64_t time_of(int64_t k, int64_t s, bool reverse) const { return reverse ? len[k] - 1 - s : s; }
  int64_t row_of(int64_t k, int64_t t, bool reverse) const { return offset[reverse ? len[k] - 1 - t : t] + k; }
};

inline LstmSchedule lstm_schedule(const std::vector<int64_t>& lengths, int64_t time) {
  LstmSchedule s;
  s.batch = static_cast<int64_t>(lengths.size());
  s.time = time;
  s.order.resize(lengths.size());
  std::iota(s.order.begin(), s.order.end(), int64_t(0));
  std::stable_sort(s.order.begin(), s.order.end(), [&](int64_t a, int64_t b) { return lengths[a] > lengths[b]; });
  s.rank.resize(lengths.size());
  s.len.resize(lengths.size());
  for (int64_t k = 0; k < s.batch; ++k) {
    s.rank[s.order[k]] = k;
    s.len[k] = lengths[s.order[k]];
  }
  s.steps = s.batch ? s.len[0] : 0;
  s.active.assign(s.steps, 0);
  s.offset.assign(s.steps + 1, 0);
  int64_t live = s.batch;
  for (int64_t t = 0; t < s.steps; ++t) {
    while (live > 0 && s.len[live - 1] <= t) --live;
    s.active[t] = live;
    s.offset[t + 1] = s.offset[t] + live;
  }
  s.rows = s.offset[s.steps];
  return s;
}

// Hidden units split into chunks, one per thread of a direction. Chunk c owns units
// [begin[c], begin[c+1]); in the internal gate layout its gates i, f, g, o occupy the adjacent
// columns [4 begin[c], 4 begin[c+1]), each slice of the chunk's width. One chunk = PyTorch's order.
struct LstmChunks {
  int64_t hidden = 0;
  std::vector<int64_t> begin{0, 0};
  int64_t count() const { return static_cast<int64_t>(begin.size()) - 1; }
  int64_t first(int64_t c) const { return begin[c]; }
  int64_t width(int64_t c) const { return begin[c + 1] - begin[c]; }
};

inline LstmChunks lstm_chunks(int64_t hidden, int64_t parts) {
  // Chunks of at least 16 units, boundaries on multiples of 8 so gate slices start on SIMD
  // boundaries.
  parts = std::clamp<int64_t>(parts, 1, std::max<int64_t>(1, hidden / 16));
  LstmChunks ch;
  ch.hidden = hidden;
  ch.begin.assign(parts + 1, hidden);
  ch.begin[0] = 0;
  for (int64_t c = 1; c < parts; ++c) ch.begin[c] = (c * hidden / parts) / 8 * 8;
  return ch;
}

// Copies the rows of a [4H, K] matrix between PyTorch's gate order and the chunked layout,
// for the units of chunk c only (so chunks can be permuted by different threads).
template <class T>
void lstm_rows_to_chunked(const LstmChunks& ch, int64_t c, const T* natural, T* chunked, int64_t K) {
  const int64_t H = ch.hidden, u0 = ch.first(c), w = ch.width(c);
  for (int64_t q = 0; q < 4; ++q)
    std::copy(natural + (q * H + u0) * K, natural + (q * H + u0 + w) * K, chunked + (4 * u0 + q * w) * K);
}
template <class T>
void lstm_rows_to_natural(const LstmChunks& ch, int64_t c, const T* chunked, T* natural, int64_t K) {
  const int64_t H = ch.hidden, u0 = ch.first(c), w = ch.width(c);
  for (int64_t q = 0; q < 4; ++q)
    std::copy(chunked + (4 * u0 + q * w) * K, chunked + (4 * u0 + (q + 1) * w) * K, natural + (q * H + u0) * K);
}

// One step of one row for w units. g holds the pre-activations [i | f | g | o] (each w wide)
// without the bias (the input projection writes its product over the gate rows: adding the
// bias here, while the row is in cache, saves a pass over every step's gates) and receives the
// activations; c_prev is null for a zero initial state.
template <class T>
inline void lstm_cell_forward(T* g, int64_t w, const T* bias, const T* c_prev, T* c, T* h) {
  using A = Eigen::Array<T, Eigen::Dynamic, 1>;
  using CA = Eigen::Map<const A>;
  Eigen::Map<A> gi(g, w), gf(g + w, w), gg(g + 2 * w, w), go(g + 3 * w, w), cm(c, w), hm(h, w);
  gi = (gi + CA(bias, w)).logistic();
  gf = (gf + CA(bias + w, w)).logistic();
  gg = (gg + CA(bias + 2 * w, w)).tanh();
  go = (go + CA(bias + 3 * w, w)).logistic();
  if (c_prev)
    cm = gf * Eigen::Map<const A>(c_prev, w) + gi * gg;
  else
    cm = gi * gg;
  hm = go * cm.tanh();
}

// Backward of lstm_cell_forward for one row. On entry g holds the activations, on exit the
// gradients of the pre-activations. dh_out: gradient arriving from the layer output;
// dh_rec: from the next step (null if none). dc: on entry the cell gradient from the next step
// (ignored when !has_next), on exit the gradient for c_prev. tmp holds 3w scratch values.
template <class T>
inline void lstm_cell_backward(T* g, int64_t w, const T* c_prev, const T* c, const T* dh_out, const T* dh_rec, T* dc,
                               bool has_next, T* tmp) {
  using A = Eigen::Array<T, Eigen::Dynamic, 1>;
  using CA = Eigen::Map<const A>;
  Eigen::Map<A> gi(g, w), gf(g + w, w), gg(g + 2 * w, w), go(g + 3 * w, w), dcm(dc, w);
  Eigen::Map<A> tc(tmp, w), dh(tmp + w, w), dct(tmp + 2 * w, w);
  tc = CA(c, w).tanh();
  if (dh_rec)
    dh = CA(dh_out, w) + CA(dh_rec, w);
  else
    dh = CA(dh_out, w);
  if (has_next)
    dct = dh * go * (T(1) - tc * tc) + dcm;
  else
    dct = dh * go * (T(1) - tc * tc);
  go = dh * tc * go * (T(1) - go);
  dcm = dct * gf;
  if (c_prev)
    gf = dct * CA(c_prev, w) * gf * (T(1) - gf);
  else
    gf.setZero();
  tc = gi;  // the input gate, needed by the candidate's gradient after gi is overwritten
  gi = dct * gg * gi * (T(1) - gi);
  gg = dct * tc * (T(1) - gg * gg);
}

// What the forward keeps for the backward, per direction.
template <class T>
struct LstmDirState {
  bool reverse = false;
  bool has_h0 = false, has_c0 = false;
  Tensor<T> w_ih_c, w_hh_c;   // weights in the chunked layout: [4H, I], [4H, H]
  Tensor<T> bias_c;           // b_ih + b_hh, chunked [4H]
  Tensor<T> gates;            // [N, 4H] gate activations, chunked columns
  Tensor<T> cell, hidden;     // [N, H]
  Tensor<T> h0, c0;           // [B, H] in sorted order (when given)
};

template <class T>
struct LstmSaved {
  LstmSchedule sched;
  LstmChunks chunks;
  int64_t input = 0, hidden = 0, threads = 1;
  Tensor<T> x;  // [B, T, I], contiguous
  std::vector<LstmDirState<T>> dirs;
};

// Gradients produced by the backward, natural layout; undefined where not requested.
template <class T>
struct LstmGrads {
  Tensor<T> x;
  std::vector<Tensor<T>> w_ih, w_hh, bias, h0, c0;  // per direction; bias = grad of b_ih = grad of b_hh
};

// Work spread over a team: items are (direction, chunk) pairs; every thread walks the same
// sequence of phases and meets the others at team_barrier().
inline void team_barrier() {
#pragma omp barrier
}
inline int team_rank() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}
inline int team_size() {
#ifdef _OPENMP
  return omp_get_num_threads();
#else
  return 1;
#endif
}
template <class F>
void for_my_items(int64_t items, F&& f) {
  for (int64_t w = team_rank(); w < items; w += team_size()) f(w);
}
// [begin, end) of part p of n rows split in `parts` near-equal parts.
inline std::pair<int64_t, int64_t> split_range(int64_t n, int64_t parts, int64_t p) {
  return {n * p / parts, n * (p + 1) / parts};
}

// Below this much recurrent work (multiply-adds over all steps) the op runs on one thread: the
// team's start and per-step barriers would cost more than they save.
inline constexpr int64_t kLstmParallelWork = int64_t(1) << 20;

// Threads and chunks for a layer: directions first, then hidden-unit chunks within each.
inline std::pair<int64_t, int64_t> lstm_team(int64_t dirs, int64_t hidden, int64_t rows) {
  int64_t threads = num_threads();
  if (rows * 4 * hidden * hidden < kLstmParallelWork) threads = 1;
  const int64_t parts = lstm_chunks(hidden, std::max<int64_t>(1, threads / dirs)).count();
  return {std::min(threads, dirs * parts), parts};
}

template <class T>
void lstm_forward_cpu(LstmSaved<T>& st, const std::vector<LstmWeights<T>>& weights, const std::vector<Tensor<T>>& h0,
                      const std::vector<Tensor<T>>& c0, Tensor<T>& out) {
  const LstmSchedule& sc = st.sched;
  const LstmChunks& ch = st.chunks;
  const int64_t D = static_cast<int64_t>(st.dirs.size()), P = ch.count(), items = D * P;
  const int64_t H = st.hidden, I = st.input, N = sc.rows, B = sc.batch, Tm = sc.time, G4 = 4 * H;
  const int64_t maxb = sc.steps ? sc.active[0] : 0;

  std::vector<Tensor<T>> xp(D);
  std::vector<PackedLhs<T>> packed(items);
  std::vector<Tensor<T>> scratch(items);
  for (int64_t d = 0; d < D; ++d) {
    auto& ds = st.dirs[d];
    ds.w_ih_c = Tensor<T>({G4, I});
    ds.w_hh_c = Tensor<T>({G4, H});
    ds.bias_c = zeros<T>({G4});
    ds.gates = Tensor<T>({N, G4});
    ds.cell = Tensor<T>({N, H});
    ds.hidden = Tensor<T>({N, H});
    xp[d] = Tensor<T>({N, I});
    ds.has_h0 = h0[d].defined();
    ds.has_c0 = c0[d].defined();
    if (ds.has_h0) ds.h0 = Tensor<T>({B, H});
    if (ds.has_c0) ds.c0 = Tensor<T>({B, H});
  }
  for (int64_t w = 0; w < items; ++w)
    scratch[w] = Tensor<T>({packed_b_size<T>(gemm_depth_block<T>(H), maxb)});
  const T* xd = st.x.data();
  T* od = out.data();
  const int64_t OD = D * H;

#pragma omp parallel num_threads(static_cast<int>(st.threads)) if (st.threads > 1)
  {
    // Phase 1: gather inputs in packed order, lay the weights out in chunks, pack W_hh.
    for_my_items(items, [&](int64_t w) {
      const int64_t d = w / P, c = w % P, u0 = ch.first(c), cw = ch.width(c);
      auto& ds = st.dirs[d];
      auto [r0, r1] = split_range(maxb, P, c);
      for (int64_t s = 0; s < sc.steps; ++s)
        for (int64_t k = r0; k < std::min(r1, sc.active[s]); ++k) {
          const int64_t t = sc.time_of(k, s, ds.reverse);
          const T* src = xd + (sc.order[k] * Tm + t) * I;
          std::copy(src, src + I, xp[d].data() + (sc.offset[s] + k) * I);
        }
      const auto& wt = weights[d];
      lstm_rows_to_chunked(ch, c, wt.w_ih.data(), ds.w_ih_c.data(), I);
      lstm_rows_to_chunked(ch, c, wt.w_hh.data(), ds.w_hh_c.data(), H);
      T* bc = ds.bias_c.data();
      for (const Tensor<T>* b : {&wt.b_ih, &wt.b_hh})
        if (b->defined())
          for (int64_t q = 0; q < 4; ++q)
            for (int64_t j = 0; j < cw; ++j) bc[4 * u0 + q * cw + j] += b->data()[q * H + u0 + j];
      for (int64_t k = 0; k < B; ++k) {
        if (ds.has_h0) std::copy_n(h0[d].data() + sc.order[k] * H + u0, cw, ds.h0.data() + k * H + u0);
        if (ds.has_c0) std::copy_n(c0[d].data() + sc.order[k] * H + u0, cw, ds.c0.data() + k * H + u0);
      }
      packed[w].pack(row_major_ref<T>(ds.w_hh_c.data() + 4 * u0 * H, 4 * cw, H, H));
    });
    team_barrier();

    // Phase 2: input projection of the chunk's gate columns for all steps, then the recurrence.
    for_my_items(items, [&](int64_t w) {
      const int64_t d = w / P, c = w % P, u0 = ch.first(c), cw = ch.width(c);
      auto& ds = st.dirs[d];
      // Written over the gate rows (the bias is added by the cell).
      gemm<T>({ds.gates.data() + 4 * u0, G4}, row_major_ref<T>(ds.w_ih_c.data() + 4 * u0 * I, 4 * cw, I, I),
              col_major_ref<T>(xp[d].data(), I, N, I), false);
    });
    for (int64_t s = 0; s < sc.steps; ++s) {
      if (s > 0 && P > 1) team_barrier();  // every unit of h at step s-1 is written
      for_my_items(items, [&](int64_t w) {
        const int64_t d = w / P, c = w % P, u0 = ch.first(c), cw = ch.width(c);
        auto& ds = st.dirs[d];
        const int64_t n = sc.active[s], row0 = sc.offset[s];
        const T* h_prev = s > 0 ? ds.hidden.data() + sc.offset[s - 1] * H : (ds.has_h0 ? ds.h0.data() : nullptr);
        const T* c_prev = s > 0 ? ds.cell.data() + sc.offset[s - 1] * H : (ds.has_c0 ? ds.c0.data() : nullptr);
        T* g = ds.gates.data() + row0 * G4 + 4 * u0;
        if (h_prev) packed[w].multiply_add({g, G4}, col_major_ref<T>(h_prev, H, n, H), scratch[w].data());
        for (int64_t k = 0; k < n; ++k)
          lstm_cell_forward(g + k * G4, cw, ds.bias_c.data() + 4 * u0, c_prev ? c_prev + k * H + u0 : nullptr,
                            ds.cell.data() + (row0 + k) * H + u0, ds.hidden.data() + (row0 + k) * H + u0);
      });
    }
    team_barrier();

    // Phase 3: scatter the hidden states to [B, T, D*H], zeros at padded steps.
    for_my_items(items, [&](int64_t w) {
      const int64_t d = w / P, c = w % P, u0 = ch.first(c), cw = ch.width(c);
      const auto& ds = st.dirs[d];
      for (int64_t b = 0; b < B; ++b) {
        const int64_t k = sc.rank[b];
        for (int64_t t = 0; t < Tm; ++t) {
          T* dst = od + (b * Tm + t) * OD + d * H + u0;
          if (t < sc.len[k])
            std::copy_n(ds.hidden.data() + sc.row_of(k, t, ds.reverse) * H + u0, cw, dst);
          else
            std::fill_n(dst, cw, T(0));
        }
      }
    });
  }
}

template <class T>
void lstm_backward_cpu(LstmSaved<T>& st, const Tensor<T>& grad_out, LstmGrads<T>& gr, bool need_x, bool need_w,
                       bool need_b, bool need_h0, bool need_c0) {
  const LstmSchedule& sc = st.sched;
  const LstmChunks& ch = st.chunks;
  const int64_t D = static_cast<int64_t>(st.dirs.size()), P = ch.count(), items = D * P;
  const int64_t H = st.hidden, I = st.input, N = sc.rows, B = sc.batch, Tm = sc.time, G4 = 4 * H, OD = D * H;
  const int64_t maxb = sc.steps ? sc.active[0] : 0;
  const T* go = grad_out.data();

  std::vector<PackedLhs<T>> packed(items);
  std::vector<Tensor<T>> scratch(items), tmp(items);
  // xh: the GEMM operand [Xp | Hprev] [N, I+H], so dW_ih and dW_hh come out of one product.
  std::vector<Tensor<T>> dh_rec(D), dc(D), xh(D), dxp(D), dw_c(D);
  for (int64_t d = 0; d < D; ++d) {
    dh_rec[d] = Tensor<T>({std::max<int64_t>(maxb, 1), H});
    dc[d] = Tensor<T>({std::max<int64_t>(maxb, 1), H});
    if (need_w) {
      xh[d] = Tensor<T>({N, I + H});
      dw_c[d] = Tensor<T>({G4, I + H});
      gr.w_ih.push_back(Tensor<T>({G4, I}));
      gr.w_hh.push_back(Tensor<T>({G4, H}));
    }
    if (need_b) gr.bias.push_back(Tensor<T>({G4}));
    if (need_x) dxp[d] = Tensor<T>({N, I});
    gr.h0.push_back(need_h0 ? zeros<T>({B, H}) : Tensor<T>());
    gr.c0.push_back(need_c0 ? zeros<T>({B, H}) : Tensor<T>());
  }
  for (int64_t w = 0; w < items; ++w) {
    scratch[w] = Tensor<T>({packed_b_size<T>(gemm_depth_block<T>(G4), maxb)});
    tmp[w] = Tensor<T>({3 * H});
  }
  if (need_x) gr.x = Tensor<T>({B, Tm, I});
  const T* xd = st.x.data();

#pragma omp parallel num_threads(static_cast<int>(st.threads)) if (st.threads > 1)
  {
    // Phase 1: W_hh^T packed per chunk of units (the rows of dh the chunk produces).
    for_my_items(items, [&](int64_t w) {
      const int64_t d = w / P, c = w % P, u0 = ch.first(c), cw = ch.width(c);
      packed[w].pack(col_major_ref<T>(st.dirs[d].w_hh_c.data() + u0, cw, G4, H));
    });

    // Phase 2: back through time. dG of step s overwrites the activations of step s.
    for (int64_t s = sc.steps - 1; s >= 0; --s) {
      if (s < sc.steps - 1 && P > 1) team_barrier();  // dG of step s+1 is complete
      for_my_items(items, [&](int64_t w) {
        const int64_t d = w / P, c = w % P, u0 = ch.first(c), cw = ch.width(c);
        auto& ds = st.dirs[d];
        const int64_t n = sc.active[s], row0 = sc.offset[s];
        const bool next = s + 1 < sc.steps;
        const int64_t n_next = next ? sc.active[s + 1] : 0;
        T* dhr = dh_rec[d].data();
        if (next)
          packed[w].multiply_add({dhr + u0, H}, col_major_ref<T>(ds.gates.data() + sc.offset[s + 1] * G4, G4, n_next, G4),
                                 scratch[w].data(), false);
        const T* c_prev = s > 0 ? ds.cell.data() + sc.offset[s - 1] * H : (ds.has_c0 ? ds.c0.data() : nullptr);
        T* g = ds.gates.data() + row0 * G4 + 4 * u0;
        for (int64_t k = 0; k < n; ++k) {
          const int64_t t = sc.time_of(k, s, ds.reverse);
          const T* dh_out = go + (sc.order[k] * Tm + t) * OD + d * H + u0;
          const bool has_next = k < n_next;
          lstm_cell_backward(g + k * G4, cw, c_prev ? c_prev + k * H + u0 : nullptr, ds.cell.data() + (row0 + k) * H + u0,
                             dh_out, has_next ? dhr + k * H + u0 : nullptr, dc[d].data() + k * H + u0, has_next,
                             tmp[w].data());
        }
      });
    }
    team_barrier();

    // Phase 3: gradients of the initial state; gather the operands of the weight GEMMs.
    for_my_items(items, [&](int64_t w) {
      const int64_t d = w / P, c = w % P, u0 = ch.first(c), cw = ch.width(c);
      auto& ds = st.dirs[d];
      const int64_t n0 = sc.steps ? sc.active[0] : 0;
      if (need_h0 && n0 > 0) {
        T* dhr = dh_rec[d].data();
        packed[w].multiply_add({dhr + u0, H}, col_major_ref<T>(ds.gates.data(), G4, n0, G4), scratch[w].data(), false);
        for (int64_t k = 0; k < n0; ++k) std::copy_n(dhr + k * H + u0, cw, gr.h0[d].data() + sc.order[k] * H + u0);
      }
      if (need_c0)
        for (int64_t k = 0; k < n0; ++k) std::copy_n(dc[d].data() + k * H + u0, cw, gr.c0[d].data() + sc.order[k] * H + u0);
      if (need_w) {
        auto [r0, r1] = split_range(maxb, P, c);
        for (int64_t s = 0; s < sc.steps; ++s)
          for (int64_t k = r0; k < std::min(r1, sc.active[s]); ++k) {
            T* dst = xh[d].data() + (sc.offset[s] + k) * (I + H);
            std::copy_n(xd + (sc.order[k] * Tm + sc.time_of(k, s, ds.reverse)) * I, I, dst);
            const T* hp = s > 0 ? ds.hidden.data() + (sc.offset[s - 1] + k) * H : (ds.has_h0 ? ds.h0.data() + k * H : nullptr);
            if (hp)
              std::copy_n(hp, H, dst + I);
            else
              std::fill_n(dst + I, H, T(0));
          }
      }
    });
    team_barrier();

    // Phase 4: dW and db of the chunk's gate rows; dX rows split over the chunks.
    for_my_items(items, [&](int64_t w) {
      const int64_t d = w / P, c = w % P, u0 = ch.first(c), cw = ch.width(c);
      auto& ds = st.dirs[d];
      const T* dg = ds.gates.data();
      if (need_w) {
        // The chunk's rows of [dW_ih | dW_hh] = dG[:, chunk]^T [Xp | Hprev], computed transposed.
        T* dwc = dw_c[d].data();
        gemm<T>({dwc + 4 * u0 * (I + H), I + H}, col_major_ref<T>(xh[d].data(), I + H, N, I + H),
                row_major_ref<T>(dg + 4 * u0, N, 4 * cw, G4), false);
        // Back to PyTorch's layout, chunk rows only.
        for (int64_t q = 0; q < 4; ++q)
          for (int64_t j = 0; j < cw; ++j) {
            const T* src = dwc + (4 * u0 + q * cw + j) * (I + H);
            const int64_t row = q * H + u0 + j;
            std::copy_n(src, I, gr.w_ih[d].data() + row * I);
            std::copy_n(src + I, H, gr.w_hh[d].data() + row * H);
          }
      }
      if (need_b) {
        T* db = gr.bias[d].data();
        std::vector<T> acc(static_cast<size_t>(4 * cw), T(0));
        for (int64_t r = 0; r < N; ++r) {
          const T* row = dg + r * G4 + 4 * u0;
          for (int64_t j = 0; j < 4 * cw; ++j) acc[j] += row[j];
        }
        for (int64_t q = 0; q < 4; ++q)
          for (int64_t j = 0; j < cw; ++j) db[q * H + u0 + j] = acc[q * cw + j];
      }
      if (need_x) {
        auto [r0, r1] = split_range(N, P, c);
        gemm<T>({dxp[d].data() + r0 * I, I}, col_major_ref<T>(ds.w_ih_c.data(), I, G4, I),
                col_major_ref<T>(dg + r0 * G4, G4, r1 - r0, G4), false);
      }
    });
    if (need_x) {
      team_barrier();
      // Phase 5: dx[b, t] = sum over directions of the packed rows of (b, t); zero at padding.
      for_my_items(items, [&](int64_t w) {
        auto [b0, b1] = split_range(B * Tm, items, w);
        for (int64_t bt = b0; bt < b1; ++bt) {
          const int64_t b = bt / Tm, t = bt % Tm, k = sc.rank[b];
          T* dst = gr.x.data() + bt * I;
          if (t >= sc.len[k]) {
            std::fill_n(dst, I, T(0));
            continue;
          }
          std::copy_n(dxp[0].data() + sc.row_of(k, t, st.dirs[0].reverse) * I, I, dst);
          for (int64_t d = 1; d < D; ++d) {
            const T* src = dxp[d].data() + sc.row_of(k, t, st.dirs[d].reverse) * I;
            for (int64_t i = 0; i < I; ++i) dst[i] += src[i];
          }
        }
      });
    }
  }
}

// The device the op runs on: x's, when it is a CUDA tensor in a CUDA build; otherwise the CPU
// (whose checks then reject a device tensor with require_cpu's message).
template <class T>
Device lstm_device(const Tensor<T>& x) {
#ifdef TXTCLS_WITH_CUDA
  if (x.device().is_cuda()) return x.device();
#endif
  (void)x;
  return Device::cpu();
}

template <class T>
void lstm_require_device(const Tensor<T>& t, Device dev, const char* op) {
  if (dev.is_cpu()) {
    require_cpu(t, op);
    return;
  }
  TXTCLS_CHECK(t.device() == dev, op, ": x is on ", dev.str(), " but a tensor of shape ", shape_str(t.shape()),
               " is on ", t.device().str(), " (weights and initial states must be on x's device)");
}

template <class T>
void lstm_check_direction(const LstmWeights<T>& w, int64_t I, Device dev, const char* op) {
  TXTCLS_CHECK(w.w_ih.defined() && w.w_hh.defined(), op, ": w_ih and w_hh are required");
  TXTCLS_CHECK(w.w_hh.dim() == 2 && w.w_hh.size(0) == 4 * w.w_hh.size(1), op, ": w_hh must be [4H, H], got ",
               shape_str(w.w_hh.shape()));
  const int64_t H = w.w_hh.size(1);
  TXTCLS_CHECK(w.w_ih.dim() == 2 && w.w_ih.size(0) == 4 * H && w.w_ih.size(1) == I, op, ": w_ih must be [4H, I] = [",
               4 * H, ", ", I, "], got ", shape_str(w.w_ih.shape()));
  for (const Tensor<T>* b : {&w.b_ih, &w.b_hh})
    if (b->defined())
      TXTCLS_CHECK(b->dim() == 1 && b->size(0) == 4 * H, op, ": biases must be [4H] = [", 4 * H, "], got ",
                   shape_str(b->shape()));
  for (const Tensor<T>* t : {&w.w_ih, &w.w_hh, &w.b_ih, &w.b_hh})
    if (t->defined()) lstm_require_device(*t, dev, op);
}

// lstm_directions' autograd inputs: x, then w_ih, w_hh, b_ih, b_hh per direction, then h0, c0.
template <class T>
std::vector<Tensor<T>> lstm_inputs(const Tensor<T>& x, const std::vector<LstmWeights<T>>& dirs, const Tensor<T>& h0,
                                   const Tensor<T>& c0) {
  std::vector<Tensor<T>> inputs{x};
  for (const auto& w : dirs) inputs.insert(inputs.end(), {w.w_ih, w.w_hh, w.b_ih, w.b_hh});
  inputs.insert(inputs.end(), {h0, c0});
  return inputs;
}

// Which gradients a backward produces: both weight matrices of every direction when any is
// needed, both biases likewise (their gradients are equal).
struct LstmNeeds {
  bool x = false, w = false, b = false, h0 = false, c0 = false;
};

inline LstmNeeds lstm_needs(const std::vector<bool>& needs, int64_t D) {
  LstmNeeds n;
  n.x = needs[0];
  for (int64_t d = 0; d < D; ++d) {
    n.w = n.w || needs[1 + 4 * d] || needs[2 + 4 * d];
    n.b = n.b || needs[3 + 4 * d] || needs[4 + 4 * d];
  }
  n.h0 = needs[1 + 4 * D];
  n.c0 = needs[2 + 4 * D];
  return n;
}

// The gradients in the order of lstm_inputs. The initial states are shared by the directions;
// their gradients are those of direction 0.
template <class T>
std::vector<Tensor<T>> lstm_grad_list(const LstmGrads<T>& gr, int64_t D, const LstmNeeds& n) {
  std::vector<Tensor<T>> out_grads{gr.x};
  for (int64_t d = 0; d < D; ++d) {
    out_grads.push_back(n.w ? gr.w_ih[d] : Tensor<T>());
    out_grads.push_back(n.w ? gr.w_hh[d] : Tensor<T>());
    out_grads.push_back(n.b ? gr.bias[d] : Tensor<T>());
    out_grads.push_back(n.b ? gr.bias[d] : Tensor<T>());
  }
  out_grads.push_back(gr.h0.empty() ? Tensor<T>() : gr.h0[0]);
  out_grads.push_back(gr.c0.empty() ? Tensor<T>() : gr.c0[0]);
  return out_grads;
}

// The forward's output and the backward that goes with it (given the output gradient and what
// is needed, the gradients of lstm_inputs).
template <class T>
struct LstmRun {
  Tensor<T> out;
  std::function<LstmGrads<T>(const Tensor<T>& grad_out, const LstmNeeds& needs)> backward;
};

// The fused CPU op (lstm_forward_cpu / lstm_backward_cpu).
template <class T>
LstmRun<T> lstm_run_cpu(const Tensor<T>& x, const std::vector<int64_t>& len, const std::vector<LstmWeights<T>>& dirs,
                        const std::vector<bool>& reverse, const Tensor<T>& h0, const Tensor<T>& c0) {
  const int64_t B = x.size(0), Tm = x.size(1), I = x.size(2), H = dirs[0].w_hh.size(1);
  const int64_t D = static_cast<int64_t>(dirs.size());
  auto st = std::make_shared<LstmSaved<T>>();
  st->sched = lstm_schedule(len, Tm);
  st->input = I;
  st->hidden = H;
  auto [threads, parts] = lstm_team(D, H, st->sched.rows);
  st->threads = threads;
  st->chunks = lstm_chunks(H, parts);
  st->x = x.detach().contiguous();
  std::vector<LstmWeights<T>> wc(D);
  std::vector<Tensor<T>> h0s(D), c0s(D);
  st->dirs.resize(D);
  for (int64_t d = 0; d < D; ++d) {
    st->dirs[d].reverse = reverse[d];
    auto c = [](const Tensor<T>& t) { return t.defined() ? t.detach().contiguous() : Tensor<T>(); };
    wc[d] = {c(dirs[d].w_ih), c(dirs[d].w_hh), c(dirs[d].b_ih), c(dirs[d].b_hh)};
    h0s[d] = c(h0);
    c0s[d] = c(c0);
  }
  Tensor<T> out({B, Tm, D * H});
  lstm_forward_cpu(*st, wc, h0s, c0s, out);
  return {out, [st](const Tensor<T>& g, const LstmNeeds& n) {
            LstmGrads<T> gr;
            lstm_backward_cpu(*st, g.contiguous(), gr, n.x, n.w, n.b, n.h0, n.c0);
            return gr;
          }};
}

#ifdef TXTCLS_WITH_CUDA
// ---- the GPU path (kernels/lstm.cu, kernels/lstm_cudnn.cu; see txtcls/cuda/lstm.hpp)

// The op's arguments on the device, contiguous and detached.
template <class T>
struct LstmCudaArgs {
  int64_t D = 1, B = 0, Tm = 0, I = 0, H = 0, S = 0;  // S: the longest length
  Device dev;
  std::vector<int64_t> len;
  Tensor<int64_t> len_dev;
  std::vector<bool> reverse;
  Tensor<T> x, h0, c0;
  std::vector<LstmWeights<T>> w;
  bool has_bias = false;

  cuda::LstmWeightPtrs<T> weight_ptrs() const {
    cuda::LstmWeightPtrs<T> p;
    for (int64_t d = 0; d < D; ++d) {
      p.w_ih[d] = w[d].w_ih.data();
      p.w_hh[d] = w[d].w_hh.data();
      p.b_ih[d] = w[d].b_ih.defined() ? w[d].b_ih.data() : nullptr;
      p.b_hh[d] = w[d].b_hh.defined() ? w[d].b_hh.data() : nullptr;
    }
    return p;
  }
};

template <class T>
const T* lstm_ptr(const Tensor<T>& t) {
  return t.defined() ? t.data() : nullptr;
}
template <class T>
T* lstm_ptr(Tensor<T>& t) {
  return t.defined() ? t.data() : nullptr;
}

// The output gradient must be where the forward ran (the kernels take its pointer as is).
template <class T>
void lstm_check_grad_device(const Tensor<T>& grad_out, Device dev) {
  TXTCLS_CHECK(grad_out.device() == dev, "lstm backward: the output gradient is on ", grad_out.device().str(),
               ", the forward ran on ", dev.str());
}

// Per-direction views of stacked [D, ...] gradients (undefined when not wanted).
template <class T>
std::vector<Tensor<T>> lstm_split_directions(const Tensor<T>& stacked, int64_t D, bool wanted) {
  std::vector<Tensor<T>> out;
  for (int64_t d = 0; d < D; ++d) out.push_back(wanted ? stacked.select(0, d) : Tensor<T>());
  return out;
}

// Every length zero (or an empty batch): nothing runs, the output and every gradient are zero.
template <class T>
LstmRun<T> lstm_run_empty(const LstmCudaArgs<T>& a) {
  const int64_t D = a.D, B = a.B, Tm = a.Tm, I = a.I, H = a.H;
  const Device dev = a.dev;
  return {zeros<T>({B, Tm, D * H}, dev), [=](const Tensor<T>&, const LstmNeeds& n) {
            LstmGrads<T> gr;
            if (n.x) gr.x = zeros<T>({B, Tm, I}, dev);
            for (int64_t d = 0; d < D; ++d) {
              gr.w_ih.push_back(n.w ? zeros<T>({4 * H, I}, dev) : Tensor<T>());
              gr.w_hh.push_back(n.w ? zeros<T>({4 * H, H}, dev) : Tensor<T>());
              gr.bias.push_back(n.b ? zeros<T>({4 * H}, dev) : Tensor<T>());
            }
            gr.h0.push_back(n.h0 ? zeros<T>({B, H}, dev) : Tensor<T>());
            gr.c0.push_back(n.c0 ? zeros<T>({B, H}, dev) : Tensor<T>());
            return gr;
          }};
}

// What the own kernels' forward keeps for the backward.
template <class T>
struct LstmCudaSaved {
  cuda::LstmDims dims;
  unsigned reverse = 0;
  Tensor<int64_t> len_dev;
  Tensor<T> w_ih, w_hh, bias;         // stacked over the directions
  Tensor<T> h0, c0;                   // [B, H] or undefined
  Tensor<T> xs, gates, cell, hidden;  // [D, S, B, *]

  cuda::LstmState<T> state() {
    cuda::LstmState<T> s;
    s.lengths = len_dev.data();
    s.reverse = reverse;
    s.w_ih = w_ih.data();
    s.w_hh = w_hh.data();
    s.bias = lstm_ptr(bias);
    s.h0 = lstm_ptr(std::as_const(h0));
    s.c0 = lstm_ptr(std::as_const(c0));
    s.xs = xs.data();
    s.gates = gates.data();
    s.cell = cell.data();
    s.hidden = hidden.data();
    return s;
  }
};

template <class T>
LstmGrads<T> lstm_backward_own(LstmCudaSaved<T>& st, const Tensor<T>& grad_out, const LstmNeeds& n) {
  const cuda::LstmDims& dm = st.dims;
  const int64_t D = dm.dirs, B = dm.batch, S = dm.steps, I = dm.input, H = dm.hidden;
  const Device dev = st.xs.device();
  lstm_check_grad_device(grad_out, dev);
  Tensor<T> g = grad_out.contiguous();
  Tensor<T> dw_ih, dw_hh, db, dh0, dxs;
  Tensor<T> dc({D, B, H}, dev), dh({D, B, H}, dev), dy({D, S, B, H}, dev);
  LstmGrads<T> gr;
  if (n.x) {
    gr.x = Tensor<T>({B, dm.time, I}, dev);
    dxs = Tensor<T>({D, S, B, I}, dev);
  }
  if (n.w) {
    dw_ih = Tensor<T>({D, 4 * H, I}, dev);
    dw_hh = Tensor<T>({D, 4 * H, H}, dev);
  }
  if (n.b) db = Tensor<T>({D, 4 * H}, dev);
  if (n.h0) dh0 = Tensor<T>({D, B, H}, dev);
  cuda::LstmGradPtrs<T> p;
  p.x = lstm_ptr(gr.x);
  p.w_ih = lstm_ptr(dw_ih);
  p.w_hh = lstm_ptr(dw_hh);
  p.bias = lstm_ptr(db);
  p.h0 = lstm_ptr(dh0);
  p.dc = dc.data();
  p.dh = dh.data();
  p.dy = dy.data();
  p.dxs = lstm_ptr(dxs);
  cuda::lstm_backward<T>(dm, st.state(), g.data(), p);
  gr.w_ih = lstm_split_directions(dw_ih, D, n.w);
  gr.w_hh = lstm_split_directions(dw_hh, D, n.w);
  gr.bias = lstm_split_directions(db, D, n.b);
  gr.h0 = lstm_split_directions(dh0, D, n.h0);
  gr.c0 = lstm_split_directions(dc, D, n.c0);  // dc ends as the gradient of c0
  return gr;
}

// The own kernels (kernels/lstm.cu).
template <class T>
LstmRun<T> lstm_run_own(const LstmCudaArgs<T>& a) {
  auto st = std::make_shared<LstmCudaSaved<T>>();
  const int64_t D = a.D, B = a.B, S = a.S, I = a.I, H = a.H;
  const Device dev = a.dev;
  st->dims = {D, B, a.Tm, S, I, H};
  for (int64_t d = 0; d < D; ++d)
    if (a.reverse[d]) st->reverse |= 1u << d;
  st->len_dev = a.len_dev;
  st->w_ih = Tensor<T>({D, 4 * H, I}, dev);
  st->w_hh = Tensor<T>({D, 4 * H, H}, dev);
  if (a.has_bias) st->bias = Tensor<T>({D, 4 * H}, dev);
  st->h0 = a.h0;
  st->c0 = a.c0;
  st->xs = Tensor<T>({D, S, B, I}, dev);
  st->gates = Tensor<T>({D, S, B, 4 * H}, dev);
  st->cell = Tensor<T>({D, S, B, H}, dev);
  st->hidden = Tensor<T>({D, S, B, H}, dev);
  Tensor<T> out({B, a.Tm, D * H}, dev);
  cuda::lstm_forward<T>(st->dims, a.weight_ptrs(), st->state(), a.x.data(), out.data());
  return {out, [st](const Tensor<T>& g, const LstmNeeds& n) { return lstm_backward_own(*st, g, n); }};
}

#ifdef TXTCLS_WITH_CUDNN
// cuDNN's RNN (kernels/lstm_cudnn.cu), for cuda::set_lstm_backend(cuda::LstmBackend::Cudnn).
template <class T>
LstmRun<T> lstm_run_cudnn(const LstmCudaArgs<T>& a, const char* op) {
  const int64_t D = a.D, B = a.B, Tm = a.Tm, I = a.I, H = a.H;
  const Device dev = a.dev;
  for (int64_t b = 0; b < B; ++b)
    TXTCLS_CHECK(a.len[b] >= 1, op, ": the cuDNN LSTM backend takes no empty sequence, but lengths[", b,
                 "] = 0 for x of shape ", shape_str(a.x.shape()), " (cuda::LstmBackend::Own handles them)");
  TXTCLS_CHECK(D == 1 || (!a.reverse[0] && a.reverse[1]), op,
               ": the cuDNN LSTM backend runs two directions only as [forward | reverse]");
  // cuDNN takes one initial state per direction: [D, B, H].
  auto per_direction = [&](const Tensor<T>& s) {
    return !s.defined() || D == 1 ? s : s.unsqueeze(0).expand({D, B, H}).contiguous();
  };
  Tensor<T> hx = per_direction(a.h0), cx = per_direction(a.c0);
  Tensor<T> out({B, Tm, D * H}, dev);
  cuda::CudnnLstmDims dims;
  dims.dirs = D;
  dims.batch = B;
  dims.time = Tm;
  dims.input = I;
  dims.hidden = H;
  dims.reverse = D == 1 && a.reverse[0];
  dims.lengths_host = a.len.data();
  dims.lengths = a.len_dev.data();
  std::shared_ptr<cuda::CudnnLstmPlan> plan(
      cuda::cudnn_lstm_forward<T>(dims, a.weight_ptrs(), a.has_bias, a.x.data(), lstm_ptr(std::as_const(hx)),
                                  lstm_ptr(std::as_const(cx)), out.data()),
      cuda::CudnnLstmPlanDeleter{});
  // The backward reads x, the initial states and the output of the forward. A detached view of
  // the output: the closure lives in the output's own graph node, so holding `out` itself would
  // be a cycle.
  Tensor<T> x = a.x, y = out.detach();
  return {out, [plan, x, hx, cx, y, D, B, Tm, I, H, dev](const Tensor<T>& grad_out, const LstmNeeds& n) {
            lstm_check_grad_device(grad_out, dev);
            Tensor<T> g = grad_out.contiguous();
            Tensor<T> dw_ih, dw_hh, db, dh0, dc0;
            LstmGrads<T> gr;
            if (n.x) gr.x = Tensor<T>({B, Tm, I}, dev);
            if (n.w) {
              dw_ih = Tensor<T>({D, 4 * H, I}, dev);
              dw_hh = Tensor<T>({D, 4 * H, H}, dev);
            }
            if (n.b) db = Tensor<T>({D, 4 * H}, dev);
            if (n.h0) dh0 = Tensor<T>({D, B, H}, dev);
            if (n.c0) dc0 = Tensor<T>({D, B, H}, dev);
            cuda::cudnn_lstm_backward<T>(*plan, x.data(), lstm_ptr(hx), lstm_ptr(cx), y.data(), g.data(),
                                         lstm_ptr(gr.x), lstm_ptr(dw_ih), lstm_ptr(dw_hh), lstm_ptr(db), lstm_ptr(dh0),
                                         lstm_ptr(dc0));
            gr.w_ih = lstm_split_directions(dw_ih, D, n.w);
            gr.w_hh = lstm_split_directions(dw_hh, D, n.w);
            gr.bias = lstm_split_directions(db, D, n.b);
            gr.h0 = lstm_split_directions(dh0, D, n.h0);
            gr.c0 = lstm_split_directions(dc0, D, n.c0);
            return gr;
          }};
}
#endif

// The GPU op: arguments made contiguous on the device, then the selected backend.
template <class T>
LstmRun<T> lstm_run_cuda(const Tensor<T>& x, const Tensor<int64_t>& lengths, const std::vector<int64_t>& len,
                         const std::vector<LstmWeights<T>>& dirs, const std::vector<bool>& reverse,
                         const Tensor<T>& h0, const Tensor<T>& c0, const char* op) {
  LstmCudaArgs<T> a;
  a.D = static_cast<int64_t>(dirs.size());
  a.B = x.size(0);
  a.Tm = x.size(1);
  a.I = x.size(2);
  a.H = dirs[0].w_hh.size(1);
  TXTCLS_CHECK(a.I >= 1 && a.H >= 1, op, ": the CUDA LSTM needs I >= 1 and H >= 1, got x of shape ",
               shape_str(x.shape()), " and H = ", a.H);
  a.dev = x.device();
  a.len = len;
  a.S = len.empty() ? 0 : *std::max_element(len.begin(), len.end());
  a.len_dev = lengths.device() == a.dev && lengths.is_contiguous() ? lengths
                                                                   : from_vector<int64_t>(len, {a.B}).to(a.dev);
  a.reverse = reverse;
  auto c = [](const Tensor<T>& t) { return t.defined() ? t.detach().contiguous() : Tensor<T>(); };
  a.x = c(x);
  a.h0 = c(h0);
  a.c0 = c(c0);
  for (const auto& w : dirs) {
    a.w.push_back({c(w.w_ih), c(w.w_hh), c(w.b_ih), c(w.b_hh)});
    a.has_bias = a.has_bias || w.b_ih.defined() || w.b_hh.defined();
  }
  if (a.S == 0) return lstm_run_empty(a);
#ifdef TXTCLS_WITH_CUDNN
  if (cuda::lstm_backend() == cuda::LstmBackend::Cudnn) return lstm_run_cudnn(a, op);
#endif
  return lstm_run_own(a);
}
#endif  // TXTCLS_WITH_CUDA

// The shared driver: D directions over the same input, outputs side by side. On a CUDA tensor
// it runs on the GPU (every other tensor on the same device; lengths on the CPU or there too).
template <class T>
Tensor<T> lstm_directions(const Tensor<T>& x, const Tensor<int64_t>& lengths, const std::vector<LstmWeights<T>>& dirs,
                          const std::vector<bool>& reverse, const Tensor<T>& h0, const Tensor<T>& c0, const char* op) {
  TXTCLS_CHECK(x.defined() && x.dim() == 3, op, ": x must be [B, T, I], got ",
               x.defined() ? shape_str(x.shape()) : std::string("undefined"));
  const Device dev = lstm_device(x);
  lstm_require_device(x, dev, op);
  const int64_t B = x.size(0), Tm = x.size(1), I = x.size(2);
  TXTCLS_CHECK(lengths.defined() && lengths.dim() == 1 && lengths.size(0) == B, op, ": lengths must be [B] = [", B,
               "], got ", lengths.defined() ? shape_str(lengths.shape()) : std::string("undefined"));
  if (dev.is_cpu())
    require_cpu(lengths, op);
  else
    TXTCLS_CHECK(lengths.device().is_cpu() || lengths.device() == dev, op, ": lengths must be on the CPU or on ",
                 dev.str(), " with x, got ", lengths.device().str());
  std::vector<int64_t> len = lengths.to_vector();
  for (int64_t b = 0; b < B; ++b)
    TXTCLS_CHECK(len[b] >= 0 && len[b] <= Tm, op, ": lengths[", b, "] = ", len[b], " is outside [0, ", Tm,
                 "] for x of shape ", shape_str(x.shape()));
  for (const auto& w : dirs) lstm_check_direction(w, I, dev, op);
  const int64_t H = dirs[0].w_hh.size(1);
  for (const auto& w : dirs)
    TXTCLS_CHECK(w.w_hh.size(1) == H, op, ": directions differ in hidden size (", H, " vs ", w.w_hh.size(1), ")");
  for (const Tensor<T>* s : {&h0, &c0})
    if (s->defined()) {
      TXTCLS_CHECK(s->dim() == 2 && s->size(0) == B && s->size(1) == H, op, ": initial states must be [B, H] = [", B,
                   ", ", H, "], got ", shape_str(s->shape()));
      lstm_require_device(*s, dev, op);
    }

  const int64_t D = static_cast<int64_t>(dirs.size());
  LstmRun<T> run;
#ifdef TXTCLS_WITH_CUDA
  if (dev.is_cuda())
    run = lstm_run_cuda(x, lengths, len, dirs, reverse, h0, c0, op);
  else
#endif
    run = lstm_run_cpu(x, len, dirs, reverse, h0, c0);
  autograd::record<T>(run.out, op, lstm_inputs(x, dirs, h0, c0),
                      [backward = std::move(run.backward), D](const Tensor<T>& g, const std::vector<bool>& needs) {
                        const LstmNeeds n = lstm_needs(needs, D);
                        return lstm_grad_list(backward(g, n), D, n);
                      });
  return run.out;
}

}  // namespace detail

// One direction of one LSTM layer over padded batch-first input. h0, c0 ([B, H]) default to zeros.
template <class T>
Tensor<T> lstm_layer(const Tensor<T>& x, const Tensor<int64_t>& lengths, const Tensor<T>& w_ih, const Tensor<T>& w_hh,
                     const Tensor<T>& b_ih, const Tensor<T>& b_hh, bool reverse, const Tensor<T>& h0 = Tensor<T>(),
                     const Tensor<T>& c0 = Tensor<T>()) {
  return detail::lstm_directions<T>(x, lengths, {LstmWeights<T>{w_ih, w_hh, b_ih, b_hh}}, {reverse}, h0, c0,
                                    "lstm_layer");
}

// Both directions of a bidirectional layer, run concurrently: [B, T, 2H] = [forward | reverse].
template <class T>
Tensor<T> lstm_bidirectional_layer(const Tensor<T>& x, const Tensor<int64_t>& lengths, const LstmWeights<T>& fwd,
                                   const LstmWeights<T>& rev) {
  return detail::lstm_directions<T>(x, lengths, {fwd, rev}, {false, true}, Tensor<T>(), Tensor<T>(),
                                    "lstm_bidirectional_layer");
}

}  // namespace txtcls
