#pragma once
// The attention core of Transformer-XL / XLNet (HF XLNetRelativeAttention.rel_attn_core), two
// implementations of one contract:
//   relative_attention_reference  the composition of core ops (matmul, rel_shift_bnij, masked
//                                 softmax, dropout, matmul): the specification; it stores the
//                                 [B, H, Lq, P] position scores and several [B, H, Lq, Lk] ones;
//   relative_attention            the fused CPU kernel (ops/relative_attention_tiles.hpp): online
//                                 softmax over key blocks, the position term computed per tile
//                                 from the band of positions the tile needs; neither the
//                                 [Lq, P] nor any [Lq, Lk] matrix is stored. Backward recomputes.
//                                 CUDA tensors run kernels/relative_attention.cu (float, double;
//                                 head dims up to 128), the same contract up to rounding.
//
// Layouts (batch first, docs/conventions.md; HF's XLNet is time first):
//   q   [B, H, Lq, D]   query heads (XLNet: h W_q, or for the query stream g W_q, moved by
//                       target_mapping^T to the positions it predicts)
//   k   [B, H, Lk, D]   content keys over [mems; h], Lk = mlen + qlen (memory first)
//   v   [B, H, Lk, Dv]  values over the same positions
//   k_r [Br, H, P, D]   position keys r W_r, Br = 1 (one encoding for the batch) or B (bi_data
//                       or an expanded encoding); row p is the relative distance of HF's
//                       relative_positional_encoding, P >= Lk + 1. XLNet builds P = klen + qlen
//                       (attn_type "bi": distances klen .. -qlen + 1) or P = klen + 1 ("uni":
//                       klen .. 0); clamp_len and bi_data only change the rows' values, so any
//                       encoding xlnet_relative_positional_encoding(qlen, klen, ...) returns fits.
//   r_w_bias, r_r_bias [H, D]
//   out [B, H, Lq, Dv]  (contiguous)
// Scores, with scale = 1 / sqrt(D) unless given:
//   ac[i, j] = (q_i + r_w_bias) . k_j
//   bd[i, j] = rel_shift_bnij((q + r_r_bias) k_r^T, Lk)[i, j]: the raw column c = Lq - i + j,
//              i.e. distance mlen + i - j for query i at absolute position mlen + i (when
//              c >= P, as under "uni" for keys after the query, the row-major read of HF's
//              reshape continues into row i + c / P at column c % P, reproduced exactly)
//   ef[i, j] = w0 e0_i + w1 e1_i, e_s = (q_i + r_s_bias) . seg_embed[s], with (w0, w1) = (1, 0)
//              where query i and key j are in the same segment and (0, 1) where they differ
//              (segment ids seg_q [B, Lq], seg_k [B, Lk]; XLNet gives memory positions id 0),
//              or HF's seg_mat [B, Lq, Lk, 2] read as is; no segment term without seg_embed
//   score    = scale (ac + bd + ef), and key j is hidden from query i where mask[b, h, i, j]
//              is nonzero (uint8, broadcastable to [B, H, Lq, Lk]; XLNet's attn_mask,
//              xlnet_attention_masks) or, with `causal`, j > i + (Lk - Lq)
//   prob     = softmax_j(score - 1e30 hidden), HF's additive mask: hidden keys of a row that sees
//              some key get probability exactly 0; a row that hides every key is uniform over
//              all Lk keys (HF's scores are then all -1e30) and passes gradients as HF's does
//   out      = dropout(prob) v
// Dropout (dropout_p > 0) is the rule of the fused attention and of ops/dropout.hpp applied to
// prob: the call reserves B*H*Lq*Lk counters at `base`, element (b, h, i, j) is kept iff
// philox_uniform(seed, base, ((b*H + h)*Lq + i)*Lk + j) >= p and scaled by 1 / (1 - p); both
// implementations drop the same elements. dropout_p == 0 draws nothing.
// Gradients: q, k, v, k_r (summed over the batch when Br = 1), r_w_bias, r_r_bias, r_s_bias and
// seg_embed (summed over batch and queries); masks, segment ids and seg_mat get none.
// `probs`, when set, receives the probabilities [B, H, Lq, Lk] after dropout (no gradient).
// Lk = 0: the output is zeros.
#include <cmath>
#include <limits>
#include <optional>

#include "txtcls/ops/attention.hpp"
#include "txtcls/ops/indexing.hpp"
#include "txtcls/ops/relative_attention_tiles.hpp"
#include "txtcls/ops/relative_position.hpp"
#ifdef TXTCLS_WITH_CUDA
#include "txtcls/cuda/relative_attention.hpp"
#endif

namespace txtcls {

template <class T>
struct RelativeAttentionOptions {
  Tensor<T> r_s_bias;              // [H, D]: with seg_embed, the segment term
  Tensor<T> seg_embed;             // [2, H, D]: same segment, different segments
  Tensor<int64_t> seg_q, seg_k;    // [B, Lq], [B, Lk] segment ids, or
  Tensor<T> seg_mat;               // [B, Lq, Lk, 2] weights of seg_embed[0], seg_embed[1] (HF's seg_mat)
  Tensor<uint8_t> mask;            // nonzero = hidden; broadcastable to [B, H, Lq, Lk]
  bool causal = false;             // also hide keys j > i + (Lk - Lq)
  std::optional<double> scale;     // default 1 / sqrt(D)
  double dropout_p = 0.0;          // on the probabilities; 0 draws nothing
  Generator* generator = nullptr;  // dropout's stream; default_generator() when null
  int64_t block_q = 0, block_k = 0;  // fused tile sizes (0: defaults); tests shrink them
  Tensor<T>* probs = nullptr;      // receives the probabilities [B, H, Lq, Lk] when set
};

namespace detail {

struct RelAttnDims {
  int64_t B, H, Lq, Lk, P, D, Dv, Br;
  Shape scores() const { return {B, H, Lq, Lk}; }
};

template <class T>
bool has_segment_term(const RelativeAttentionOptions<T>& o) {
  return o.seg_embed.defined() || o.r_s_bias.defined() || o.seg_mat.defined() || o.seg_q.defined() ||
         o.seg_k.defined();
}

template <class T>
RelAttnDims check_relative_attention(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v, const Tensor<T>& k_r,
                                     const Tensor<T>& r_w_bias, const Tensor<T>& r_r_bias,
                                     const RelativeAttentionOptions<T>& o, const char* op, bool cuda = false) {
  // With `cuda` (the fused op on a CUDA q) every float operand is on q's device; masks and
  // segment ids may stay on the host (they are uploaded).
  for (const Tensor<T>* t : {&q, &k, &v, &k_r, &r_w_bias, &r_r_bias, &o.r_s_bias, &o.seg_embed, &o.seg_mat}) {
    if (!t->defined()) continue;
    if (!cuda) require_cpu(*t, op);
    else
      TXTCLS_CHECK(t->device() == q.device(), op, ": every operand must be on q's device ", q.device().str(),
                   ", got one of shape ", shape_str(t->shape()), " on ", t->device().str());
  }
  TXTCLS_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op, ": q, k, v must be [B, H, L, D], got ",
               shape_str(q.shape()), ", ", shape_str(k.shape()), ", ", shape_str(v.shape()));
  RelAttnDims d{q.size(0), q.size(1), q.size(2), k.size(2), 0, q.size(3), v.size(3), 0};
  TXTCLS_CHECK(k.size(0) == d.B && k.size(1) == d.H && k.size(3) == d.D, op, ": k ", shape_str(k.shape()),
               " does not match q ", shape_str(q.shape()), " (expected [", d.B, ", ", d.H, ", Lk, ", d.D, "])");
  TXTCLS_CHECK(v.size(0) == d.B && v.size(1) == d.H && v.size(2) == d.Lk, op, ": v ", shape_str(v.shape()),
               " does not match k ", shape_str(k.shape()), " (expected [", d.B, ", ", d.H, ", ", d.Lk, ", Dv])");
  TXTCLS_CHECK(k_r.defined() && k_r.dim() == 4 && (k_r.size(0) == 1 || k_r.size(0) == d.B) && k_r.size(1) == d.H &&
                   k_r.size(2) > d.Lk && k_r.size(3) == d.D,
               op, ": k_r ", k_r.defined() ? shape_str(k_r.shape()) : std::string("(undefined)"), " does not fit k ",
               shape_str(k.shape()), " (expected [1 or ", d.B, ", ", d.H, ", P >= Lk + 1 = ", d.Lk + 1, ", ", d.D,
               "])");
  d.Br = k_r.size(0);
  d.P = k_r.size(2);
  auto head_param = [&](const Tensor<T>& t, const char* name) {
    TXTCLS_CHECK(t.defined() && t.shape() == (Shape{d.H, d.D}), op, ": ", name, " must be [H, D] = [", d.H, ", ", d.D,
                 "], got ", t.defined() ? shape_str(t.shape()) : std::string("(undefined)"));
  };
  head_param(r_w_bias, "r_w_bias");
  head_param(r_r_bias, "r_r_bias");
  if (has_segment_term(o)) {
    TXTCLS_CHECK(o.seg_embed.defined() && o.r_s_bias.defined(), op,
                 ": the segment term needs both seg_embed [2, H, D] and r_s_bias [H, D]");
    head_param(o.r_s_bias, "r_s_bias");
    TXTCLS_CHECK(o.seg_embed.shape() == (Shape{2, d.H, d.D}), op, ": seg_embed must be [2, H, D] = [2, ", d.H, ", ",
                 d.D, "], got ", shape_str(o.seg_embed.shape()));
    const bool ids = o.seg_q.defined() || o.seg_k.defined();
    TXTCLS_CHECK(ids != o.seg_mat.defined(), op,
                 ": the segment term takes segment ids (seg_q and seg_k) or seg_mat, exactly one of them");
    if (ids) {
      TXTCLS_CHECK(o.seg_q.defined() && o.seg_k.defined(), op, ": pass both seg_q [B, Lq] and seg_k [B, Lk]");
      if (!cuda) require_cpu(o.seg_q, op);
      if (!cuda) require_cpu(o.seg_k, op);
      TXTCLS_CHECK(o.seg_q.shape() == (Shape{d.B, d.Lq}), op, ": seg_q must be [B, Lq] = [", d.B, ", ", d.Lq,
                   "], got ", shape_str(o.seg_q.shape()));
      TXTCLS_CHECK(o.seg_k.shape() == (Shape{d.B, d.Lk}), op, ": seg_k must be [B, Lk] = [", d.B, ", ", d.Lk,
                   "], got ", shape_str(o.seg_k.shape()));
    } else {
      TXTCLS_CHECK(o.seg_mat.shape() == (Shape{d.B, d.Lq, d.Lk, 2}), op, ": seg_mat must be [B, Lq, Lk, 2] = ",
                   shape_str({d.B, d.Lq, d.Lk, 2}), ", got ", shape_str(o.seg_mat.shape()));
      TXTCLS_CHECK(!o.seg_mat.requires_grad(), op, ": seg_mat gets no gradient (it is a constant one-hot)");
    }
  }
  if (o.mask.defined()) {
    if (!cuda) require_cpu(o.mask, op);
    TXTCLS_CHECK(broadcasts_into(o.mask.shape(), d.scores()), op, ": mask of shape ", shape_str(o.mask.shape()),
                 " does not broadcast to the scores [B, H, Lq, Lk] = ", shape_str(d.scores()));
  }
  check_dropout_p(o.dropout_p, op);
  TXTCLS_CHECK(o.block_q >= 0 && o.block_k >= 0, op, ": block sizes must be >= 0, got ", o.block_q, " and ",
               o.block_k);
  return d;
}

// The reference's hidden keys: mask OR causal (uint8, the broadcast of the two); undefined when none.
template <class T>
Tensor<uint8_t> relative_attention_hidden(const RelativeAttentionOptions<T>& o, const RelAttnDims& d) {
  if (!o.causal) return o.mask;
  Shape ms{1, 1, d.Lq, d.Lk};
  const Tensor<uint8_t> mask = o.mask.defined() ? o.mask.cpu() : o.mask;  // built on the host
  if (mask.defined()) ms = broadcast_shapes(ms, mask.shape(), "relative_attention_reference");
  const Shape sm = mask.defined() ? broadcast_strides(mask.shape(), mask.strides(), ms) : Shape(4, 0);
  const uint8_t* pm = mask.defined() ? mask.data() : nullptr;
  Tensor<uint8_t> m(ms);
  uint8_t* out = m.data();
  for (int64_t b = 0, n = 0; b < ms[0]; ++b)
    for (int64_t h = 0; h < ms[1]; ++h)
      for (int64_t i = 0; i < ms[2]; ++i)
        for (int64_t j = 0; j < ms[3]; ++j, ++n)
          out[n] = (j > i + d.Lk - d.Lq) || (pm && pm[b * sm[0] + h * sm[1] + i * sm[2] + j * sm[3]] != 0);
  return m;
}

// The one-hot segment weights [B, Lq, Lk, 2] of segment ids: index 1 where query and key differ.
template <class T>
Tensor<T> segment_weights(const Tensor<int64_t>& seg_q, const Tensor<int64_t>& seg_k) {
  const int64_t B = seg_q.size(0), Lq = seg_q.size(1), Lk = seg_k.size(1);
  const Tensor<int64_t> a = seg_q.cpu().contiguous(), c = seg_k.cpu().contiguous();  // built on the host
  Tensor<T> w = zeros<T>({B, Lq, Lk, 2});
  T* p = w.data();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < Lq; ++i)
      for (int64_t j = 0; j < Lk; ++j)
        p[((b * Lq + i) * Lk + j) * 2 + (a.data()[b * Lq + i] != c.data()[b * Lk + j] ? 1 : 0)] = T(1);
  return w;
}

// XLNet's seg_mat is the one-hot of "the segments of query i and key j differ". When seg_mat has
// exactly that form for some ids (s_i XOR t_j, weights exactly 0 and 1), those ids are returned
// and the kernels read O(B L) of them instead of the [B, Lq, Lk, 2] matrix in every tile (the
// weights, hence every score, are the same). One pass over seg_mat; false when it has another form.
template <class T>
bool segment_ids_of(const Tensor<T>& seg_mat, Tensor<int64_t>& seg_q, Tensor<int64_t>& seg_k) {
  const int64_t B = seg_mat.size(0), Lq = seg_mat.size(1), Lk = seg_mat.size(2);
  const int64_t s0 = seg_mat.stride(0), s1 = seg_mat.stride(1), s2 = seg_mat.stride(2), s3 = seg_mat.stride(3);
  const T* m = seg_mat.data();
  // 0: weights (1, 0), 1: (0, 1), -1: anything else
  auto differ = [&](int64_t b, int64_t i, int64_t j) -> int {
    const T* w = m + b * s0 + i * s1 + j * s2;
    if (w[0] == T(1) && w[s3] == T(0)) return 0;
    if (w[0] == T(0) && w[s3] == T(1)) return 1;
    return -1;
  };
  Tensor<int64_t> q = zeros<int64_t>({B, Lq}), k = zeros<int64_t>({B, Lk});
  int64_t *pq = q.data(), *pk = k.data();
  bool ok = true;
  if (Lq > 0 && Lk > 0) {
    for (int64_t b = 0; b < B && ok; ++b) {  // ids relative to query 0 (a flip of all changes nothing)
      for (int64_t j = 0; j < Lk && ok; ++j) ok = (pk[b * Lk + j] = differ(b, 0, j)) >= 0;
      for (int64_t i = 0; i < Lq && ok; ++i) ok = (pq[b * Lq + i] = differ(b, i, 0)) >= 0;
      if (ok)
        for (int64_t i = 0; i < Lq; ++i) pq[b * Lq + i] ^= pk[b * Lk];
    }
#pragma omp parallel for schedule(static) reduction(&& : ok) if (ok && B * Lq * Lk > kParallelGrain)
    for (int64_t r = 0; r < B * Lq; ++r) {
      if (!ok) continue;
      const int64_t b = r / Lq, i = r % Lq;
      for (int64_t j = 0; j < Lk; ++j) ok = ok && differ(b, i, j) == (pq[r] ^ pk[b * Lk + j]);
    }
  }
  if (!ok) return false;
  seg_q = q;
  seg_k = k;
  return true;
}

template <class T>
T relative_attention_scale(const RelativeAttentionOptions<T>& o, int64_t D) {
  return static_cast<T>(o.scale ? *o.scale : 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(D, 1))));
}

// Default tiles: those of the fused attention (docs/relative_positions.md has the measurements).
inline constexpr int64_t kRelAttnBlockQ = 64, kRelAttnBlockK = 64;

// What the fused op keeps for its backward.
template <class T>
struct RelAttnSaved {
  RelAttnDims d{};
  Tensor<T> q, k, v, kr, rw, rr, rs, se, seg_mat, out, lse;
  Tensor<int64_t> seg_q, seg_k;
  Tensor<uint8_t> mask;
  bool causal = false;
  T scale = 1;
  double p = 0;
  uint64_t seed = 0, base = 0;
  int64_t bq = 0, bk = 0;
  relattn::Visibility vis;

  relattn::Problem<T> problem() const {
    relattn::Problem<T> pr;
    pr.B = d.B, pr.H = d.H, pr.Lq = d.Lq, pr.Lk = d.Lk, pr.P = d.P, pr.D = d.D, pr.Dv = d.Dv;
    pr.q = rows_of(q.data(), q);
    pr.k = rows_of(k.data(), k);
    pr.v = rows_of(v.data(), v);
    pr.kr = rows_of(kr.data(), kr);
    if (d.Br == 1) pr.kr.sb = 0;  // one set of position keys for the whole batch
    pr.r_w_bias = rw.data();
    pr.r_r_bias = rr.data();
    if (se.defined()) {
      pr.r_s_bias = rs.data();
      pr.seg_embed = se.data();
      if (seg_q.defined()) {
        pr.seg_q = seg_q.data();
        pr.seg_k = seg_k.data();
      } else {
        pr.seg_mat = {seg_mat.data(), seg_mat.stride(0), 0, seg_mat.stride(1), seg_mat.stride(2)};
        pr.seg_mat_s = seg_mat.stride(3);
      }
    }
    pr.mask = term_of(mask, d.scores());
    pr.causal = causal;
    pr.scale = scale;
    pr.dropout_p = p;
    pr.seed = seed;
    pr.base = base;
    pr.drop_scale = dropout_scale<T>(p);
    pr.bq = bq;
    pr.bk = bk;
    return pr;
  }
};

// Sums [B, X] per-head parts over the batch into a [X]-sized tensor of `shape`.
template <class T>
Tensor<T> sum_over_batch(const std::vector<T>& parts, int64_t B, const Shape& shape) {
  Tensor<T> out = zeros<T>(shape);
  const int64_t n = out.numel();
  T* p = out.data();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < n; ++i) p[i] += parts[static_cast<size_t>(b * n + i)];
  return out;
}

#ifdef TXTCLS_WITH_CUDA
// The GPU path of relative_attention (kernels/relative_attention.cu): the same contract. The
// kernels read q, k, v, k_r in place (rows with unit stride), seg_mat and the mask by their
// strides; masks and segment ids are uploaded from wherever the caller keeps them. The kernels'
// per-row and per-sequence gradient parts are folded into the parameters' gradients here by
// deterministic reductions (sum, matmul), so results are the same bit for bit on every run.
template <class T>
Tensor<T> relative_attention_cuda(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v, const Tensor<T>& k_r,
                                  const Tensor<T>& r_w_bias, const Tensor<T>& r_r_bias,
                                  const RelativeAttentionOptions<T>& o, const RelAttnDims& d, const char* op) {
  cuda::check_attention_head_dims(d.D, d.Dv, op);
  struct Saved {
    RelAttnDims d{};
    cuda::RelativeAttentionArgs<T> ra;
    Tensor<T> q, k, v, kr, rw, rr, rs, se, seg_mat, out, lse;
    Tensor<int64_t> seg_q, seg_k;
    Tensor<uint8_t> mask, empty;
  };
  auto saved = std::make_shared<Saved>();
  Saved& sv = *saved;
  sv.d = d;
  const Device dev = q.device();
  sv.q = unit_rows(q);
  sv.k = unit_rows(k);
  sv.v = unit_rows(v);
  sv.kr = unit_rows(k_r);
  sv.rw = r_w_bias.detach().contiguous();
  sv.rr = r_r_bias.detach().contiguous();
  cuda::RelativeAttentionArgs<T>& ra = sv.ra;
  cuda::AttentionArgs<T>& a = ra.a;
  a.B = d.B, a.H = d.H, a.Lq = d.Lq, a.Lk = d.Lk, a.D = d.D, a.Dv = d.Dv;
  a.q = cuda_rows(sv.q), a.k = cuda_rows(sv.k), a.v = cuda_rows(sv.v);
  a.scale = relative_attention_scale(o, d.D), a.causal = o.causal;
  ra.P = d.P;
  ra.kr = cuda_rows(sv.kr);
  if (d.Br == 1) ra.kr.sb = 0;  // one set of position keys for the whole batch
  ra.r_w_bias = sv.rw.data();
  ra.r_r_bias = sv.rr.data();
  if (o.seg_embed.defined()) {
    sv.rs = o.r_s_bias.detach().contiguous();
    sv.se = o.seg_embed.detach().contiguous();
    ra.r_s_bias = sv.rs.data();
    ra.seg_embed = sv.se.data();
    if (o.seg_q.defined()) {  // ids: contiguous on the host, then uploaded
      sv.seg_q = o.seg_q.cpu().contiguous().to(dev);
      sv.seg_k = o.seg_k.cpu().contiguous().to(dev);
      ra.seg_q = sv.seg_q.data();
      ra.seg_k = sv.seg_k.data();
    } else {  // read as weights, whatever their form (the CPU's one-hot detection gives the same scores)
      sv.seg_mat = o.seg_mat.detach();
      ra.seg_mat = {sv.seg_mat.data(), sv.seg_mat.stride(0), 0, sv.seg_mat.stride(1), sv.seg_mat.stride(2)};
      ra.seg_mat_s = sv.seg_mat.stride(3);
    }
  }
  if (o.mask.defined()) sv.mask = o.mask.to(dev), ra.mask = cuda_term(sv.mask, d.scores());
  // The CPU op's counters: the same mask.
  const ScoreDropout draw = reserve_score_dropout(o.dropout_p, o.generator, d.B * d.H * d.Lq * d.Lk);
  a.dropout_p = draw.p, a.seed = draw.seed, a.base = draw.base, a.drop_scale = dropout_scale<T>(draw.p);
  sv.empty = Tensor<uint8_t>({d.B, d.H, d.Lq}, dev);
  ra.empty = sv.empty.data();
  Tensor<T> out({d.B, d.H, d.Lq, d.Dv}, dev), probs;
  sv.lse = Tensor<T>({d.B, d.H, d.Lq}, dev);
  if (o.probs) probs = Tensor<T>(d.scores(), dev);
  cuda::relative_attention_forward<T>(ra, out.data(), sv.lse.data(), probs.defined() ? probs.data() : nullptr);
  if (o.probs) *o.probs = probs;
  sv.out = out.detach();
  autograd::record<T>(
      out, op, {q, k, v, k_r, r_w_bias, r_r_bias, o.r_s_bias, o.seg_embed},
      [saved](const Tensor<T>& grad, const std::vector<bool>& needs) {
        const Saved& s = *saved;
        const RelAttnDims& d = s.d;
        const Device dev = s.out.device();
        Tensor<T> g = unit_rows(grad);
        // Written whole by the kernels.
        Tensor<T> dqw({d.B, d.H, d.Lq, d.D}, dev), dqr({d.B, d.H, d.Lq, d.D}, dev), es({d.B, d.H, d.Lq, 2}, dev),
            dk({d.B, d.H, d.Lk, d.D}, dev), dv({d.B, d.H, d.Lk, d.Dv}, dev), dkr({d.B, d.H, d.P, d.D}, dev);
        const Tensor<T> delta = sum(mul(g, s.out), {3}).contiguous();
        cuda::RelativeAttentionGrads<T> gr{dqw.data(), dqr.data(), es.data(), dk.data(), dv.data(), dkr.data(),
                                           delta.data()};
        cuda::relative_attention_backward<T>(s.ra, cuda_rows(g), s.lse.data(), gr);
        const bool seg = s.se.defined();
        Tensor<T> dqs;  // the segment part of dq: es_0 seg_embed[0] + es_1 seg_embed[1]
        if (seg && (needs[0] || needs[6])) {
          auto part = [&](int64_t sgm) { return mul(es.select(-1, sgm).unsqueeze(-1), s.se.select(0, sgm).unsqueeze(1)); };
          dqs = add(part(0), part(1));
        }
        auto over_rows = [](const Tensor<T>& t) { return sum(t, {0, 2}).contiguous(); };  // [B, H, L, D] -> [H, D]
        Tensor<T> dq;
        if (needs[0]) dq = dqs.defined() ? add(add(dqw, dqr), dqs) : add(dqw, dqr);
        Tensor<T> dkr_out;
        if (needs[3]) dkr_out = d.Br == 1 ? sum(dkr, {0}, true).contiguous() : dkr;
        Tensor<T> dse;
        if (needs[7]) {  // sum over batch and queries of es_s (q + r_s_bias): [B, H, 2, D] -> [2, H, D]
          const Tensor<T> qs = add(s.q, s.rs.unsqueeze(1));
          dse = sum(matmul(es.transpose(-1, -2).contiguous(), qs), {0}).permute({1, 0, 2}).contiguous();
        }
        return std::vector<Tensor<T>>{needs[0] ? dq : Tensor<T>(),
                                      needs[1] ? dk : Tensor<T>(),
                                      needs[2] ? dv : Tensor<T>(),
                                      dkr_out,
                                      needs[4] ? over_rows(dqw) : Tensor<T>(),
                                      needs[5] ? over_rows(dqr) : Tensor<T>(),
                                      needs[6] ? over_rows(dqs) : Tensor<T>(),
                                      dse};
      });
  return out;
}
#endif

}  // namespace detail

// Reference: the composition of core ops that defines the contract (see the top of this file),
// the same operations as nn::XLNetRelativeAttention's unfused path. On any device q is on (every
// float operand with it; masks and segment ids may stay on the host).
template <class T>
Tensor<T> relative_attention_reference(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v,
                                       const Tensor<T>& k_r, const Tensor<T>& r_w_bias, const Tensor<T>& r_r_bias,
                                       const RelativeAttentionOptions<T>& o = {}) {
  const detail::RelAttnDims d = detail::check_relative_attention(q, k, v, k_r, r_w_bias, r_r_bias, o,
                                                                 "relative_attention_reference", !q.device().is_cpu());
  auto biased = [&](const Tensor<T>& bias) { return add(q, bias.unsqueeze(1)); };  // + [H, 1, D]
  Tensor<T> ac = matmul(biased(r_w_bias), k.transpose(-1, -2));
  Tensor<T> bd = rel_shift_bnij(matmul(biased(r_r_bias), k_r.transpose(-1, -2)), d.Lk);
  Tensor<T> score = add(ac, bd);
  if (o.seg_embed.defined()) {
    Tensor<T> ef_s = matmul(biased(o.r_s_bias), o.seg_embed.permute({1, 2, 0}));  // [B, H, Lq, 2]
    const Tensor<T> w = o.seg_mat.defined() ? o.seg_mat : detail::segment_weights<T>(o.seg_q, o.seg_k).to(q.device());
    auto term = [&](int64_t s) { return mul(w.select(-1, s).unsqueeze(1), ef_s.select(-1, s).unsqueeze(-1)); };
    score = add(score, add(term(0), term(1)));
  }
  score = mul(score, detail::relative_attention_scale(o, d.D));
  const Tensor<uint8_t> hidden = detail::relative_attention_hidden(o, d);
  Tensor<T> additive;
  if (hidden.defined()) additive = masked_fill(zeros<T>(hidden.shape(), q.device()), hidden, static_cast<T>(-1e30));
  Tensor<T> prob = softmax(score, -1, additive);
  if (o.dropout_p > 0) prob = dropout(prob, o.dropout_p, o.generator ? *o.generator : default_generator());
  if (o.probs) *o.probs = prob.detach();
  return matmul(prob, v);
}

// Fused relative attention (same contract as relative_attention_reference), float or double, CPU.
template <class T>
Tensor<T> relative_attention(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v, const Tensor<T>& k_r,
                             const Tensor<T>& r_w_bias, const Tensor<T>& r_r_bias,
                             const RelativeAttentionOptions<T>& o = {}) {
  constexpr const char* op = "relative_attention";
#ifdef TXTCLS_WITH_CUDA
  if (q.device().is_cuda())
    return detail::relative_attention_cuda(
        q, k, v, k_r, r_w_bias, r_r_bias, o,
        detail::check_relative_attention(q, k, v, k_r, r_w_bias, r_r_bias, o, op, /*cuda=*/true), op);
#endif
  auto saved = std::make_shared<detail::RelAttnSaved<T>>();
  detail::RelAttnSaved<T>& sv = *saved;
  sv.d = detail::check_relative_attention(q, k, v, k_r, r_w_bias, r_r_bias, o, op);
  const detail::RelAttnDims& d = sv.d;
  sv.q = detail::unit_rows(q);
  sv.k = detail::unit_rows(k);
  sv.v = detail::unit_rows(v);
  sv.kr = detail::unit_rows(k_r);
  sv.rw = r_w_bias.detach().contiguous();
  sv.rr = r_r_bias.detach().contiguous();
  if (o.seg_embed.defined()) {
    sv.rs = o.r_s_bias.detach().contiguous();
    sv.se = o.seg_embed.detach().contiguous();
    if (o.seg_q.defined()) {
      sv.seg_q = o.seg_q.contiguous();
      sv.seg_k = o.seg_k.contiguous();
    } else if (!detail::segment_ids_of(o.seg_mat, sv.seg_q, sv.seg_k)) {
      sv.seg_mat = o.seg_mat.detach();
    }
  }
  if (o.mask.defined()) sv.mask = o.mask;
  sv.causal = o.causal;
  sv.scale = detail::relative_attention_scale(o, d.D);
  sv.bq = o.block_q > 0 ? o.block_q : detail::kRelAttnBlockQ;
  sv.bk = o.block_k > 0 ? o.block_k : detail::kRelAttnBlockK;
  const detail::ScoreDropout draw =
      detail::reserve_score_dropout(o.dropout_p, o.generator, d.B * d.H * d.Lq * d.Lk);
  sv.p = draw.p, sv.seed = draw.seed, sv.base = draw.base;
  Tensor<T> out = zeros<T>({d.B, d.H, d.Lq, d.Dv});
  sv.lse = Tensor<T>({d.B, d.H, d.Lq});
  Tensor<T> probs;
  if (o.probs) probs = Tensor<T>({d.B, d.H, d.Lq, d.Lk});
  const detail::relattn::Problem<T> pr = sv.problem();
  sv.vis = detail::relattn::visibility(pr);
  detail::relattn::forward(pr, sv.vis, detail::rows_of(out.data(), out), sv.lse.data(),
                           probs.defined() ? probs.data() : nullptr);
  if (o.probs) *o.probs = probs;
  sv.out = out.detach();
  autograd::record<T>(
      out, op, {q, k, v, k_r, r_w_bias, r_r_bias, o.r_s_bias, o.seg_embed},
      [saved](const Tensor<T>& grad, const std::vector<bool>& needs) {
        const detail::RelAttnSaved<T>& s = *saved;
        const detail::RelAttnDims& d = s.d;
        const bool seg = s.se.defined();
        Tensor<T> g = detail::unit_rows(grad);
        // dq, dk, dv are written whole by the kernels; dk_r accumulates.
        Tensor<T> dq({d.B, d.H, d.Lq, d.D}), dk({d.B, d.H, d.Lk, d.D}), dv({d.B, d.H, d.Lk, d.Dv}), dkr;
        if (needs[3]) dkr = zeros<T>({d.Br, d.H, d.P, d.D});
        const auto heads = static_cast<size_t>(d.B * d.H * d.D);
        std::vector<T> dw(heads), dr(heads), ds(seg ? heads : 0), dseg(seg ? 2 * heads : 0);
        detail::relattn::Grads<T> gr{detail::rows_of(dq.data(), dq), detail::rows_of(dk.data(), dk),
                                     detail::rows_of(dv.data(), dv), dkr.defined() ? dkr.data() : nullptr,
                                     dw.data(), dr.data(), ds.data(), dseg.data()};
        detail::relattn::backward(s.problem(), s.vis, detail::rows_of(static_cast<const T*>(s.out.data()), s.out),
                                  detail::rows_of(static_cast<const T*>(g.data()), g), s.lse.data(), gr);
        std::vector<Tensor<T>> grads{needs[0] ? dq : Tensor<T>(), needs[1] ? dk : Tensor<T>(),
                                     needs[2] ? dv : Tensor<T>(), dkr};
        grads.push_back(needs[4] ? detail::sum_over_batch(dw, d.B, {d.H, d.D}) : Tensor<T>());
        grads.push_back(needs[5] ? detail::sum_over_batch(dr, d.B, {d.H, d.D}) : Tensor<T>());
        grads.push_back(needs[6] ? detail::sum_over_batch(ds, d.B, {d.H, d.D}) : Tensor<T>());
        Tensor<T> gse;
        if (needs[7]) {  // parts are [B, H, 2, D]; seg_embed is [2, H, D]
          gse = zeros<T>({2, d.H, d.D});
          for (int64_t b = 0; b < d.B; ++b)
            for (int64_t h = 0; h < d.H; ++h)
              for (int64_t sgm = 0; sgm < 2; ++sgm)
                for (int64_t e = 0; e < d.D; ++e)
                  gse.data()[(sgm * d.H + h) * d.D + e] += dseg[static_cast<size_t>(((b * d.H + h) * 2 + sgm) * d.D + e)];
        }
        grads.push_back(gse);
        return grads;
      });
  return out;
}

}  // namespace txtcls
