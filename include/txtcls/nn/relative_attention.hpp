#pragma once
// Attention with relative positions, as Hugging Face transformers implements it (plain, unfused ops;
// formulas, layouts and the HF functions each piece mirrors are in docs/relative_positions.md):
//
//   XLNetRelativeAttention  Transformer-XL/XLNet attention: content, position and segment terms,
//                           memory of earlier segments, and XLNet's two-stream (h/g) attention.
//                           Its attention core runs fused (ops/relative_attention_fused.hpp) unless
//                           `fused` is cleared; the unfused composition is the reference.
//   T5Attention             T5 attention: no 1/sqrt(d) scaling, a learned bucketed position bias
//                           owned by the first layer and shared by the others.
//   xlnet_cache_mem, xlnet_causal_mask, xlnet_attention_masks, xlnet_segment_matrix: the segment
//                           recurrence of XLNetModel (next memory, masks and segments over memory).
//   t5_attention_mask       T5's additive padding/causal mask.
//
// Layouts are batch first (docs/conventions.md), where HF's XLNet works time first:
//   hidden states [B, L, d_model], heads [B, n_head, L, d_head], scores [B, n_head, qlen, klen].
// Parameters keep HF's state_dict names and shapes, so HF weights load one to one.
#include <limits>
#include <memory>
#include <string>

#include "txtcls/nn/dropout.hpp"
#include "txtcls/nn/embedding.hpp"
#include "txtcls/nn/layer_norm.hpp"
#include "txtcls/nn/linear.hpp"
#include "txtcls/ops/indexing.hpp"
#include "txtcls/ops/matmul.hpp"
#include "txtcls/ops/relative_attention_fused.hpp"
#include "txtcls/ops/relative_position.hpp"
#include "txtcls/ops/softmax.hpp"

namespace txtcls::nn {

// ================================================================ XLNet segment recurrence

// The memory for the next segment (HF XLNetModel.cache_mem): the hidden states curr_out
// [B, qlen, d] of this segment (only the first reuse_len of them when reuse_len > 0) appended to
// prev_mem [B, mlen, d] (may be undefined), keeping the last mem_len states (all when mem_len == 0).
// The result is detached: no gradient ever flows from a later segment into an earlier one.
template <class T>
Tensor<T> xlnet_cache_mem(const Tensor<T>& curr_out, const Tensor<T>& prev_mem, int64_t mem_len, int64_t reuse_len = 0) {
  TXTCLS_CHECK(curr_out.dim() == 3, "xlnet_cache_mem: hidden states must be [B, qlen, d], got ",
               shape_str(curr_out.shape()));
  TXTCLS_CHECK(mem_len >= 0 && reuse_len >= 0, "xlnet_cache_mem: mem_len ", mem_len, " and reuse_len ", reuse_len,
               " must be non-negative (0: keep everything / reuse the whole segment)");
  Tensor<T> cur = curr_out.detach();
  if (reuse_len > 0) cur = cur.slice(1, 0, reuse_len);
  Tensor<T> all = cur;
  if (prev_mem.defined()) {
    TXTCLS_CHECK(prev_mem.dim() == 3 && prev_mem.size(0) == cur.size(0) && prev_mem.size(2) == cur.size(2),
                 "xlnet_cache_mem: memory ", shape_str(prev_mem.shape()), " does not match hidden states ",
                 shape_str(curr_out.shape()));
    all = concat({prev_mem.detach(), cur}, 1);
  }
  const int64_t n = all.size(1);
  const int64_t start = mem_len == 0 ? 0 : std::max<int64_t>(0, n - mem_len);
  return all.slice(1, start, n).detach();
}

// The causal mask of XLNetModel.create_mask: [qlen, mlen + qlen], nonzero = masked. Query i (at
// absolute position mlen + i) sees the memory and keys up to itself; with same_length it also
// loses the columns j < i (HF masks them among the first qlen columns, memory included), so every
// query sees the same mlen + 1 keys.
inline Tensor<uint8_t> xlnet_causal_mask(int64_t qlen, int64_t mlen, bool same_length) {
  TXTCLS_CHECK(qlen >= 0 && mlen >= 0, "xlnet_causal_mask: negative length (qlen ", qlen, ", mlen ", mlen, ")");
  const int64_t klen = mlen + qlen;
  Tensor<uint8_t> m({qlen, klen});
  uint8_t* p = m.data();
  for (int64_t i = 0; i < qlen; ++i)
    for (int64_t j = 0; j < klen; ++j) p[i * klen + j] = (j > i + mlen) || (same_length && j < qlen && j < i);
  return m;
}

// The two attention masks XLNetModel builds, [B' , 1, qlen, klen] with B' = B or 1, nonzero = masked,
// both undefined when nothing is masked (attn_type bi, no input_mask, no perm_mask):
//   g: the causal mask (uni) OR input_mask[b, j] (padding keys, nonzero = pad) OR
//      perm_mask[b, i, j] (query i may not see key j); the memory columns are never data-masked.
//   h: the same with each query's own position (i, mlen + i) unmasked (the content stream sees itself).
struct XLNetMasks {
  Tensor<uint8_t> h, g;
};

inline XLNetMasks xlnet_attention_masks(int64_t qlen, int64_t mlen, XLNetAttnType attn_type, bool same_length = false,
                                        const Tensor<uint8_t>& input_mask = {}, const Tensor<uint8_t>& perm_mask = {}) {
  const char* op = "xlnet_attention_masks";
  TXTCLS_CHECK(qlen >= 0 && mlen >= 0, op, ": negative length (qlen ", qlen, ", mlen ", mlen, ")");
  int64_t B = 1;
  if (input_mask.defined()) {
    TXTCLS_CHECK(input_mask.dim() == 2 && input_mask.size(1) == qlen, op, ": input_mask must be [B, qlen = ", qlen,
                 "], got ", shape_str(input_mask.shape()));
    B = input_mask.size(0);
  }
  if (perm_mask.defined()) {
    TXTCLS_CHECK(perm_mask.dim() == 3 && perm_mask.size(1) == qlen && perm_mask.size(2) == qlen, op,
                 ": perm_mask must be [B, qlen, qlen] with qlen = ", qlen, ", got ", shape_str(perm_mask.shape()));
    TXTCLS_CHECK(!input_mask.defined() || perm_mask.size(0) == B, op, ": perm_mask ", shape_str(perm_mask.shape()),
                 " and input_mask ", shape_str(input_mask.shape()), " disagree on the batch");
    B = perm_mask.size(0);
  }
  const bool uni = attn_type == XLNetAttnType::Uni, data = input_mask.defined() || perm_mask.defined();
  if (!uni && !data) return {};
  const int64_t klen = mlen + qlen;
  const Tensor<uint8_t> causal = uni ? xlnet_causal_mask(qlen, mlen, same_length) : Tensor<uint8_t>();
  if (input_mask.defined()) txtcls::detail::require_cpu(input_mask, op);
  if (perm_mask.defined()) txtcls::detail::require_cpu(perm_mask, op);
  const Tensor<uint8_t> in = input_mask.defined() ? input_mask.contiguous() : Tensor<uint8_t>();
  const Tensor<uint8_t> pm = perm_mask.defined() ? perm_mask.contiguous() : Tensor<uint8_t>();
  const uint8_t* pc = uni ? causal.data() : nullptr;
  const uint8_t* pi = in.defined() ? in.data() : nullptr;
  const uint8_t* pp = pm.defined() ? pm.data() : nullptr;
  Tensor<uint8_t> g({B, 1, qlen, klen}), h({B, 1, qlen, klen});
  uint8_t* pg = g.data();
  uint8_t* ph = h.data();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < qlen; ++i)
      for (int64_t j = 0; j < klen; ++j) {
        bool m = pc && pc[i * klen + j] != 0;
        if (j >= mlen) {  // the memory columns carry no data mask
          if (pi) m = m || pi[b * qlen + j - mlen] != 0;
          if (pp) m = m || pp[(b * qlen + i) * qlen + j - mlen] != 0;
        }
        const int64_t at = (b * qlen + i) * klen + j;
        pg[at] = m;
        ph[at] = m && j != mlen + i;
      }
  return {h, g};
}

// XLNet's segment matrix (XLNetModel.forward): [B, qlen, klen, 2], the one-hot of "query i and key j
// are in different segments" (index 1) or the same one (index 0), from token_type_ids [B, qlen].
// The mlen memory positions count as segment 0.
template <class T>
Tensor<T> xlnet_segment_matrix(const Tensor<int64_t>& token_type_ids, int64_t mlen) {
  TXTCLS_CHECK(token_type_ids.dim() == 2, "xlnet_segment_matrix: token_type_ids must be [B, qlen], got ",
               shape_str(token_type_ids.shape()));
  TXTCLS_CHECK(mlen >= 0, "xlnet_segment_matrix: negative mlen ", mlen);
  const int64_t B = token_type_ids.size(0), qlen = token_type_ids.size(1), klen = mlen + qlen;
  txtcls::detail::require_cpu(token_type_ids, "xlnet_segment_matrix");
  const Tensor<int64_t> ids = token_type_ids.contiguous();
  const int64_t* pid = ids.data();
  Tensor<T> out = zeros<T>({B, qlen, klen, 2});
  T* p = out.data();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < qlen; ++i) {
      const int64_t ti = pid[b * qlen + i];
      for (int64_t j = 0; j < klen; ++j) {
        const int64_t tj = j < mlen ? 0 : pid[b * qlen + j - mlen];
        p[((b * qlen + i) * klen + j) * 2 + (ti != tj ? 1 : 0)] = T(1);
      }
    }
  return out;
}

// ================================================================ XLNetRelativeAttention

// HF XLNetRelativeAttention. Parameters (state_dict names): q, k, v, o, r [d_model, n_head, d_head];
// r_r_bias, r_s_bias, r_w_bias [n_head, d_head]; seg_embed [2, n_head, d_head]; layer_norm.{weight,bias}.
// Scores of query i against key j (heads [B, n_head, L, d_head], scale = 1 / sqrt(d_head)):
//   ac = (q_i + r_w_bias) . k_j                       content
//   bd = rel_shift_bnij((q_i + r_r_bias) . kr_p)      position, kr = r @ r-weight over the distances p
//   ef = sum_s seg_mat[i, j, s] (q_i + r_s_bias) . seg_embed[s]   segment (when seg_mat is given)
//   score = (ac + bd + ef) * scale - 1e30 * mask;  prob = softmax_j(score);  dropout(prob)
//   out = LayerNorm(h + dropout(o-projection(prob @ v)))
// Keys and values are taken over [mems; h] (klen = mlen + qlen); the memory is detached here.
// With `fused` (the default) rel_attn_core is the fused kernel relative_attention(), which stores
// no [qlen, klen] or [qlen, P] scores for backward; the unfused composition (fused = false) is
// HF's and the reference. Both draw the same dropout masks from the dropout module's generator.
template <class T>
class XLNetRelativeAttention : public Module<T> {
 public:
  XLNetRelativeAttention(int64_t d_model, int64_t n_head, int64_t d_head, double layer_norm_eps = 1e-12,
                         double dropout = 0.1, double initializer_range = 0.02, Generator& gen = default_generator())
      : d_model_(d_model), n_head_(n_head), d_head_(d_head), scale_(1.0 / std::sqrt(static_cast<double>(d_head))) {
    TXTCLS_CHECK(d_model > 0 && n_head > 0 && d_head > 0, "XLNetRelativeAttention: sizes must be positive (d_model ",
                 d_model, ", n_head ", n_head, ", d_head ", d_head, ")");
    TXTCLS_CHECK(d_model % n_head == 0, "XLNetRelativeAttention: d_model ", d_model,
                 " is not a multiple of n_head ", n_head);
    auto init = [&](const Shape& s) { return randn<T>(s, gen, 0.0, initializer_range); };
    q = this->register_parameter("q", init({d_model, n_head, d_head}));
    k = this->register_parameter("k", init({d_model, n_head, d_head}));
    v = this->register_parameter("v", init({d_model, n_head, d_head}));
    o = this->register_parameter("o", init({d_model, n_head, d_head}));
    r = this->register_parameter("r", init({d_model, n_head, d_head}));
    r_r_bias = this->register_parameter("r_r_bias", init({n_head, d_head}));
    r_s_bias = this->register_parameter("r_s_bias", init({n_head, d_head}));
    r_w_bias = this->register_parameter("r_w_bias", init({n_head, d_head}));
    seg_embed = this->register_parameter("seg_embed", init({2, n_head, d_head}));
    layer_norm = this->register_module("layer_norm", std::make_shared<LayerNorm<T>>(d_model, layer_norm_eps));
    this->dropout = this->register_module("dropout", std::make_shared<Dropout<T>>(dropout));
  }

  std::string type_name() const override { return "XLNetRelativeAttention"; }

  struct Output {
    Tensor<T> h;            // [B, qlen, d_model]
    Tensor<T> g;            // [B, M, d_model], undefined for single-stream attention
    Tensor<T> attn_prob_h;  // [B, n_head, qlen, klen] (after dropout)
    Tensor<T> attn_prob_g;  // [B, n_head, qlen, klen] (queries mapped by target_mapping), or undefined
  };

  // h: content stream [B, qlen, d_model]. g: query stream [B, M, d_model] or undefined (then
  // single-stream attention over h only); M = num_predict with target_mapping [B, M, qlen] (HF's
  // user-facing layout), else M = qlen. attn_mask_h / attn_mask_g: nonzero = masked, broadcastable
  // to [B, n_head, qlen, klen], or undefined (xlnet_attention_masks builds them). r: the positional
  // encoding [1 or B, P, d_model] with P > klen (xlnet_relative_positional_encoding(qlen, klen, ...)).
  // seg_mat: [B, qlen, klen, 2] (xlnet_segment_matrix) or undefined. mems: [B, mlen, d_model] or
  // undefined; detached before use.
  Output forward(const Tensor<T>& h, const Tensor<T>& g, const Tensor<uint8_t>& attn_mask_h,
                 const Tensor<uint8_t>& attn_mask_g, const Tensor<T>& r_emb, const Tensor<T>& seg_mat = {},
                 const Tensor<T>& mems = {}, const Tensor<T>& target_mapping = {}) {
    const std::string me = type_name();
    TXTCLS_CHECK(h.dim() == 3 && h.size(2) == d_model_, me, ": h must be [B, qlen, ", d_model_, "], got ",
                 shape_str(h.shape()));
    const int64_t B = h.size(0), qlen = h.size(1);
    Tensor<T> cat = h;
    if (mems.defined() && mems.numel() > 0) {
      TXTCLS_CHECK(mems.dim() == 3 && mems.size(0) == B && mems.size(2) == d_model_, me, ": mems ",
                   shape_str(mems.shape()), " do not match h ", shape_str(h.shape()), " (expected [B, mlen, d_model])");
      cat = concat({mems.detach(), h}, 1);
    }
    const int64_t klen = cat.size(1);
    TXTCLS_CHECK(r_emb.dim() == 3 && (r_emb.size(0) == 1 || r_emb.size(0) == B) && r_emb.size(1) > klen &&
                     r_emb.size(2) == d_model_,
                 me, ": positional encoding r must be [1 or B = ", B, ", P > klen = ", klen, ", ", d_model_,
                 "], got ", shape_str(r_emb.shape()));
    if (seg_mat.defined())
      TXTCLS_CHECK(seg_mat.shape() == (Shape{B, qlen, klen, 2}), me, ": seg_mat must be [B, qlen, klen, 2] = ",
                   shape_str({B, qlen, klen, 2}), ", got ", shape_str(seg_mat.shape()));
    const Shape scores{B, n_head_, qlen, klen};
    check_mask(attn_mask_h, scores, "attn_mask_h");
    check_mask(attn_mask_g, scores, "attn_mask_g");

    Tensor<T> k_head_h = heads(cat, k), v_head_h = heads(cat, v), k_head_r = heads(r_emb, r);
    Output out;
    out.h = post_attention(h, rel_attn_core(heads(h, q), k_head_h, v_head_h, k_head_r, seg_mat, attn_mask_h,
                                            &out.attn_prob_h));
    if (!g.defined()) return out;

    Tensor<T> q_head_g = heads(g, q);  // [B, N, M, D]
    Tensor<T> vec_g;
    if (target_mapping.defined()) {
      TXTCLS_CHECK(target_mapping.dim() == 3 && target_mapping.size(0) == B && target_mapping.size(2) == qlen &&
                       g.dim() == 3 && g.size(0) == B && g.size(1) == target_mapping.size(1) && g.size(2) == d_model_,
                   me, ": target_mapping [B, M, qlen] ", shape_str(target_mapping.shape()), " and g [B, M, d_model] ",
                   shape_str(g.shape()), " do not fit h ", shape_str(h.shape()));
      // queries moved to the positions they predict, attended, and moved back
      Tensor<T> tm = target_mapping.unsqueeze(1);  // [B, 1, M, qlen]
      Tensor<T> mapped = matmul(tm.transpose(-1, -2), q_head_g);
      vec_g = matmul(tm, rel_attn_core(mapped, k_head_h, v_head_h, k_head_r, seg_mat, attn_mask_g, &out.attn_prob_g));
    } else {
      TXTCLS_CHECK(g.shape() == h.shape(), me, ": without target_mapping g must have h's shape ",
                   shape_str(h.shape()), ", got ", shape_str(g.shape()));
      vec_g = rel_attn_core(q_head_g, k_head_h, v_head_h, k_head_r, seg_mat, attn_mask_g, &out.attn_prob_g);
    }
    out.g = post_attention(g, vec_g);
    return out;
  }

  // x [B', L, d_model] through a [d_model, n_head, d_head] weight -> heads [B', n_head, L, d_head] (a view).
  Tensor<T> heads(const Tensor<T>& x, const Tensor<T>& w) const {
    const int64_t B = x.size(0), L = x.size(1);
    return matmul(x, w.reshape({d_model_, n_head_ * d_head_})).view({B, L, n_head_, d_head_}).permute({0, 2, 1, 3});
  }

  // The attention of query heads q_head [B, N, qlen, D] over keys/values [B, N, klen, D] with position
  // keys k_head_r [1 or B, N, P, D]; returns the attention vectors [B, N, qlen, D]. (HF rel_attn_core.)
  Tensor<T> rel_attn_core(const Tensor<T>& q_head, const Tensor<T>& k_head_h, const Tensor<T>& v_head_h,
                          const Tensor<T>& k_head_r, const Tensor<T>& seg_mat, const Tensor<uint8_t>& attn_mask,
                          Tensor<T>* attn_prob = nullptr) {
    if (fused) return fused_core(q_head, k_head_h, v_head_h, k_head_r, seg_mat, attn_mask, attn_prob);
    const int64_t klen = k_head_h.size(2);
    auto bias = [&](const Tensor<T>& b) { return add(q_head, b.unsqueeze(1)); };  // + [N, 1, D]
    Tensor<T> ac = matmul(bias(r_w_bias), k_head_h.transpose(-1, -2));
    Tensor<T> bd = rel_shift_bnij(matmul(bias(r_r_bias), k_head_r.transpose(-1, -2)), klen);
    Tensor<T> score = add(ac, bd);
    if (seg_mat.defined()) {
      // ef_s[b, n, i, s] = (q + r_s_bias) . seg_embed[s];  ef = seg_mat[.., 0] ef_s[.., 0] + seg_mat[.., 1] ef_s[.., 1]
      Tensor<T> ef_s = matmul(bias(r_s_bias), seg_embed.permute({1, 2, 0}));  // [B, N, qlen, 2]
      auto term = [&](int64_t s) { return mul(seg_mat.select(-1, s).unsqueeze(1), ef_s.select(-1, s).unsqueeze(-1)); };
      score = add(score, add(term(0), term(1)));
    }
    score = mul(score, static_cast<T>(scale_));
    Tensor<T> additive;
    if (attn_mask.defined())
      additive = masked_fill(zeros<T>(attn_mask.shape(), score.device()), attn_mask, static_cast<T>(-1e30));
    Tensor<T> prob = dropout->forward(softmax(score, -1, additive));
    if (attn_prob) *attn_prob = prob;
    return matmul(prob, v_head_h);
  }

  // o-projection of attn_vec [B, N, L, D] back to d_model, dropout, residual and layer norm.
  // (HF post_attention.)
  Tensor<T> post_attention(const Tensor<T>& h, const Tensor<T>& attn_vec, bool residual = true) {
    const int64_t B = attn_vec.size(0), L = attn_vec.size(2);
    Tensor<T> flat = attn_vec.permute({0, 2, 1, 3}).reshape({B, L, n_head_ * d_head_});
    Tensor<T> attn_out = dropout->forward(matmul(flat, o.reshape({d_model_, n_head_ * d_head_}).t()));
    if (residual) attn_out = add(attn_out, h);
    return layer_norm->forward(attn_out);
  }

  int64_t d_model() const { return d_model_; }
  int64_t n_head() const { return n_head_; }
  int64_t d_head() const { return d_head_; }
  double scale() const { return scale_; }

  // true: the attention core is the fused relative_attention(); false: the unfused composition above.
  bool fused = true;
  // Fused core only: whether it fills Output::attn_prob_h / attn_prob_g, written by the kernel as
  // a side output (values only, no gradient through them; one [B, N, qlen, klen] tensor per
  // stream). Clear it to keep the fused core's memory at O(B N L d_head). The unfused path always
  // fills them (it has them anyway).
  bool output_attentions = true;

  Tensor<T> q, k, v, o, r;                       // [d_model, n_head, d_head]
  Tensor<T> r_r_bias, r_s_bias, r_w_bias;        // [n_head, d_head]
  Tensor<T> seg_embed;                           // [2, n_head, d_head]
  std::shared_ptr<LayerNorm<T>> layer_norm;
  std::shared_ptr<Dropout<T>> dropout;           // on the attention probabilities and the output

 private:
  void check_mask(const Tensor<uint8_t>& m, const Shape& scores, const char* what) const {
    if (!m.defined()) return;
    bool ok = m.dim() <= 4;
    for (int64_t d = 0; ok && d < m.dim(); ++d) {
      const int64_t s = m.size(d), want = scores[4 - m.dim() + d];
      ok = s == want || s == 1;
    }
    TXTCLS_CHECK(ok, type_name(), ": ", what, " of shape ", shape_str(m.shape()),
                 " does not broadcast to the scores [B, n_head, qlen, klen] = ", shape_str(scores));
  }

  // rel_attn_core through the fused kernel: the same scores, masks (HF's -1e30 rule) and dropout
  // draws (the dropout module's generator and rule; a training call with p = 0 still reserves the
  // counters dropout() would have).
  Tensor<T> fused_core(const Tensor<T>& q_head, const Tensor<T>& k_head_h, const Tensor<T>& v_head_h,
                       const Tensor<T>& k_head_r, const Tensor<T>& seg_mat, const Tensor<uint8_t>& attn_mask,
                       Tensor<T>* attn_prob) {
    RelativeAttentionOptions<T> o;
    if (seg_mat.defined()) {
      o.seg_mat = seg_mat;
      o.r_s_bias = r_s_bias;
      o.seg_embed = seg_embed;
    }
    o.mask = attn_mask;
    o.scale = scale_;
    if (dropout->is_training()) {
      Generator& gen = dropout->generator() ? *dropout->generator() : default_generator();
      if (dropout->p() > 0) {
        o.dropout_p = dropout->p();
        o.generator = &gen;
      } else {
        gen.reserve(static_cast<uint64_t>(q_head.size(0) * n_head_ * q_head.size(2) * k_head_h.size(2)));
      }
    }
    Tensor<T> probs;
    if (attn_prob && output_attentions) o.probs = &probs;
    Tensor<T> out = relative_attention(q_head, k_head_h, v_head_h, k_head_r, r_w_bias, r_r_bias, o);
    if (attn_prob) *attn_prob = probs;
    return out;
  }

  int64_t d_model_, n_head_, d_head_;
  double scale_;
};

// ================================================================ T5

// T5's additive attention mask [B' , 1, query_length, key_length] (B' = B of key_padding_mask, or 1):
// 0 where query i may attend to key j, the lowest finite T where not (HF's eager masks use
// torch.finfo(dtype).min). key_padding_mask [B, key_length], nonzero = padding, or undefined.
// causal: key j is hidden from query i when j > past_len + i (query i sits at absolute position
// past_len + i; the first past_len keys come from a cache).
template <class T>
Tensor<T> t5_attention_mask(const Tensor<uint8_t>& key_padding_mask, int64_t query_length, int64_t key_length,
                            bool causal, int64_t past_len = 0) {
  TXTCLS_CHECK(query_length >= 0 && key_length >= 0 && past_len >= 0, "t5_attention_mask: negative length (query ",
               query_length, ", key ", key_length, ", past ", past_len, ")");
  if (key_padding_mask.defined())
    TXTCLS_CHECK(key_padding_mask.dim() == 2 && key_padding_mask.size(1) == key_length,
                 "t5_attention_mask: key_padding_mask must be [B, key_length = ", key_length, "], got ",
                 shape_str(key_padding_mask.shape()));
  const int64_t B = key_padding_mask.defined() ? key_padding_mask.size(0) : 1;
  if (key_padding_mask.defined()) txtcls::detail::require_cpu(key_padding_mask, "t5_attention_mask");
  const Tensor<uint8_t> pad = key_padding_mask.defined() ? key_padding_mask.contiguous() : Tensor<uint8_t>();
  const uint8_t* pp = pad.defined() ? pad.data() : nullptr;
  const T lowest = std::numeric_limits<T>::lowest();
  Tensor<T> m({B, 1, query_length, key_length});
  T* p = m.data();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < query_length; ++i)
      for (int64_t j = 0; j < key_length; ++j) {
        const bool hidden = (causal && j > past_len + i) || (pp && pp[b * key_length + j] != 0);
        p[(b * query_length + i) * key_length + j] = hidden ? lowest : T(0);
      }
  return m;
}

// HF T5Attention. Parameters: q, k, v [n_heads * d_kv, d_model], o [d_model, n_heads * d_kv] (Linear
// without bias) and, in the layer that owns it, relative_attention_bias [num_buckets, n_heads].
//   scores = q k^T (no 1/sqrt(d) scaling) + position_bias + mask;  w = dropout(softmax(scores))
//   output = o(w v)
// position_bias [1, n_heads, Lq, Lk] comes from relative_attention_bias (bidirectional buckets in an
// encoder, causal ones in a decoder) when this layer has it and none is passed; a layer without
// it uses the one passed (the first layer's, as T5Stack shares it) or zeros. It is returned, so the
// caller can hand it to the next layers.
template <class T>
class T5Attention : public Module<T> {
 public:
  T5Attention(int64_t d_model, int64_t d_kv, int64_t n_heads, bool has_relative_attention_bias = false,
              bool is_decoder = false, int64_t relative_attention_num_buckets = 32,
              int64_t relative_attention_max_distance = 128, double dropout_rate = 0.1, double initializer_factor = 1.0,
              Generator& gen = default_generator())
      : d_model_(d_model), d_kv_(d_kv), n_heads_(n_heads), is_decoder_(is_decoder),
        num_buckets_(relative_attention_num_buckets), max_distance_(relative_attention_max_distance),
        dropout_rate_(dropout_rate) {
    TXTCLS_CHECK(d_model > 0 && d_kv > 0 && n_heads > 0, "T5Attention: sizes must be positive (d_model ", d_model,
                 ", d_kv ", d_kv, ", n_heads ", n_heads, ")");
    TXTCLS_CHECK(dropout_rate >= 0.0 && dropout_rate <= 1.0, "T5Attention: dropout_rate must be in [0, 1], got ",
                 dropout_rate);
    const int64_t inner = n_heads * d_kv;
    // HF T5PreTrainedModel._init_weights
    auto normal = [&](std::shared_ptr<Linear<T>>& lin, double sd) {
      NoGradGuard ng;
      lin->weight.copy_(randn<T>(lin->weight.shape(), gen, 0.0, initializer_factor * sd));
    };
    q = this->register_module("q", std::make_shared<Linear<T>>(d_model, inner, false, gen));
    k = this->register_module("k", std::make_shared<Linear<T>>(d_model, inner, false, gen));
    v = this->register_module("v", std::make_shared<Linear<T>>(d_model, inner, false, gen));
    o = this->register_module("o", std::make_shared<Linear<T>>(inner, d_model, false, gen));
    normal(q, 1.0 / std::sqrt(static_cast<double>(d_model * d_kv)));
    normal(k, 1.0 / std::sqrt(static_cast<double>(d_model)));
    normal(v, 1.0 / std::sqrt(static_cast<double>(d_model)));
    normal(o, 1.0 / std::sqrt(static_cast<double>(inner)));
    if (has_relative_attention_bias) {
      txtcls::detail::t5_bucket_layout(!is_decoder, num_buckets_, max_distance_, "T5Attention");
      relative_attention_bias =
          this->register_module("relative_attention_bias", std::make_shared<Embedding<T>>(num_buckets_, n_heads, -1, gen));
      NoGradGuard ng;
      relative_attention_bias->weight.copy_(
          randn<T>({num_buckets_, n_heads}, gen, 0.0, initializer_factor / std::sqrt(static_cast<double>(d_model))));
    }
  }

  std::string type_name() const override { return "T5Attention"; }

  bool has_relative_attention_bias() const { return static_cast<bool>(relative_attention_bias); }
  bool is_decoder() const { return is_decoder_; }

  // [1, n_heads, query_length, key_length] from this layer's table (HF compute_bias), the queries
  // starting at absolute position past_len.
  Tensor<T> compute_bias(int64_t query_length, int64_t key_length, int64_t past_len = 0) const {
    TXTCLS_CHECK(relative_attention_bias, "T5Attention.compute_bias: this layer has no relative_attention_bias");
    return t5_position_bias(relative_attention_bias->weight, query_length, key_length, !is_decoder_, max_distance_,
                            past_len);
  }

  struct Output {
    Tensor<T> output;         // [B, Lq, d_model]
    Tensor<T> position_bias;  // [1 or B, n_heads, Lq, Lk]: pass it to the next layers
    Tensor<T> key, value;     // [B, n_heads, Lk, d_kv]: the cache for the next decoding step
    Tensor<T> attn_weights;   // [B, n_heads, Lq, Lk] (after dropout)
  };

  // hidden [B, Lq, d_model]. mask: additive, broadcastable to [B, n_heads, Lq, Lk] (t5_attention_mask),
  // or undefined. position_bias: [1 or B, n_heads, Lq, Lk] or undefined (see the class comment).
  // key_value_states [B, Ls, d_model]: cross-attention over them (undefined: self-attention).
  // past_key / past_value [B, n_heads, P, d_kv] (both or neither): in self-attention the cached keys of
  // the P earlier positions, prepended (the queries then sit at positions P..P+Lq-1); in
  // cross-attention the encoder's keys/values, used instead of projecting key_value_states.
  Output forward(const Tensor<T>& hidden, const Tensor<T>& mask = {}, const Tensor<T>& position_bias = {},
                 const Tensor<T>& key_value_states = {}, const Tensor<T>& past_key = {},
                 const Tensor<T>& past_value = {}) {
    const std::string me = type_name();
    TXTCLS_CHECK(hidden.dim() == 3 && hidden.size(2) == d_model_, me, ": hidden states must be [B, L, ", d_model_,
                 "], got ", shape_str(hidden.shape()));
    const int64_t B = hidden.size(0), Lq = hidden.size(1);
    TXTCLS_CHECK(past_key.defined() == past_value.defined(), me, ": pass both past_key and past_value, or neither");
    if (past_key.defined())
      TXTCLS_CHECK(past_key.dim() == 4 && past_key.size(0) == B && past_key.size(1) == n_heads_ &&
                       past_key.size(3) == d_kv_ && past_value.shape() == past_key.shape(),
                   me, ": past_key ", shape_str(past_key.shape()), " / past_value ", shape_str(past_value.shape()),
                   " must both be [B, n_heads, P, d_kv] = [", B, ", ", n_heads_, ", P, ", d_kv_, "]");
    const bool cross = key_value_states.defined();
    Tensor<T> query = split_heads(q->forward(hidden));
    Tensor<T> key, value;
    int64_t past_len = 0;
    if (cross && past_key.defined()) {
      key = past_key;
      value = past_value;
    } else {
      const Tensor<T>& src = cross ? key_value_states : hidden;
      TXTCLS_CHECK(src.dim() == 3 && src.size(0) == B && src.size(2) == d_model_, me, ": key_value_states ",
                   shape_str(src.shape()), " must be [B = ", B, ", L, ", d_model_, "]");
      key = split_heads(k->forward(src));
      value = split_heads(v->forward(src));
      if (past_key.defined()) {
        past_len = past_key.size(2);
        key = concat({past_key, key}, 2);
        value = concat({past_value, value}, 2);
      }
    }
    const int64_t Lk = key.size(2);
    Tensor<T> scores = matmul(query, key.transpose(-1, -2));
    Tensor<T> bias = position_bias;
    if (bias.defined()) {
      TXTCLS_CHECK(bias.dim() == 4 && (bias.size(0) == 1 || bias.size(0) == B) && bias.size(1) == n_heads_ &&
                       bias.size(2) == Lq && bias.size(3) == Lk,
                   me, ": position_bias must be [1 or B, n_heads, Lq, Lk] = [1, ", n_heads_, ", ", Lq, ", ", Lk,
                   "], got ", shape_str(bias.shape()));
      scores = add(scores, bias);
    } else if (relative_attention_bias) {
      bias = compute_bias(Lq, Lk, past_len);
      scores = add(scores, bias);
    } else {
      bias = zeros<T>({1, n_heads_, Lq, Lk});  // HF adds zeros: nothing to add
    }
    if (mask.defined()) {
      const Shape want{B, n_heads_, Lq, Lk};
      bool ok = mask.dim() <= 4;
      for (int64_t d = 0; ok && d < mask.dim(); ++d)
        ok = mask.size(d) == 1 || mask.size(d) == want[4 - mask.dim() + d];
      TXTCLS_CHECK(ok, me, ": mask of shape ", shape_str(mask.shape()), " does not broadcast to the scores ",
                   shape_str(want));
    }
    Tensor<T> w = dropout(softmax(scores, -1, mask), dropout_rate_, gen_ ? *gen_ : default_generator(),
                          this->is_training());
    Tensor<T> ctx = matmul(w, value).permute({0, 2, 1, 3}).reshape({B, Lq, n_heads_ * d_kv_});
    return {o->forward(ctx), bias, key, value, w};
  }

  // The generator of the attention dropout (must outlive the module); nullptr: default_generator().
  void set_generator(Generator* g) { gen_ = g; }

  std::shared_ptr<Linear<T>> q, k, v, o;
  std::shared_ptr<Embedding<T>> relative_attention_bias;  // null unless has_relative_attention_bias

 private:
  // [B, L, n_heads * d_kv] -> [B, n_heads, L, d_kv] (a view)
  Tensor<T> split_heads(const Tensor<T>& x) const {
    return x.view({x.size(0), x.size(1), n_heads_, d_kv_}).permute({0, 2, 1, 3});
  }

  int64_t d_model_, d_kv_, n_heads_;
  bool is_decoder_;
  int64_t num_buckets_, max_distance_;
  double dropout_rate_;
  Generator* gen_ = nullptr;
};

}  // namespace txtcls::nn
