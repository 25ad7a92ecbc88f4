#pragma once
// nn::MultiHeadAttention: multi-head attention over batch-first sequences, with the projections
// named as Hugging Face's T5 names them (`q`, `k`, `v`, `o`, each a Linear with `weight` [out, in]
// and, when enabled, `bias`), so such checkpoints load one to one.
//
//   self-attention   forward(x)          x [B, L, E] -> [B, L, E]
//   cross-attention  forward(x, memory)  x [B, Lq, E], memory [B, Lk, kv_dim] -> [B, Lq, E]
//
// Heads are computed by the fused scaled_dot_product_attention, or by attention_reference when
// `fused` is off (same results up to rounding, and the same dropout mask). Masks, key lengths,
// the causal flag and an additive bias (e.g. T5's relative position bias, which is trained
// through it) come in AttentionOptions; see ops/attention.hpp for their rules.
#include <optional>

#include "txtcls/nn/linear.hpp"
#include "txtcls/ops/attention.hpp"

namespace txtcls::nn {

struct MultiHeadAttentionConfig {
  int64_t embed_dim = 0;         // E: width of the queries' input and of the output
  int64_t num_heads = 1;         // H
  int64_t head_dim = 0;          // per-head width; 0: embed_dim / num_heads (T5 sets d_kv)
  int64_t kv_dim = 0;            // width of the keys' and values' input; 0: embed_dim
  bool bias = true;              // biases of q, k, v, o (T5: none)
  double dropout = 0.0;          // on the attention probabilities, in training mode only
  std::optional<double> scale;   // of q k^T; default 1 / sqrt(head_dim) (T5: 1)
  bool fused = true;             // scaled_dot_product_attention, else attention_reference
};

template <class T>
class MultiHeadAttention : public Module<T> {
 public:
  explicit MultiHeadAttention(const MultiHeadAttentionConfig& c, Generator& gen = default_generator()) : cfg_(c) {
    TXTCLS_CHECK(c.embed_dim > 0 && c.num_heads > 0, "MultiHeadAttention: embed_dim and num_heads must be positive, ",
                 "got ", c.embed_dim, " and ", c.num_heads);
    TXTCLS_CHECK(c.head_dim > 0 || c.embed_dim % c.num_heads == 0, "MultiHeadAttention: embed_dim ", c.embed_dim,
                 " is not divisible by num_heads ", c.num_heads, " (set head_dim)");
    TXTCLS_CHECK(c.head_dim >= 0 && c.kv_dim >= 0, "MultiHeadAttention: negative head_dim ", c.head_dim,
                 " or kv_dim ", c.kv_dim);
    TXTCLS_CHECK(c.dropout >= 0.0 && c.dropout <= 1.0, "MultiHeadAttention: dropout must be in [0, 1], got ",
                 c.dropout);
    if (cfg_.head_dim == 0) cfg_.head_dim = c.embed_dim / c.num_heads;
    if (cfg_.kv_dim == 0) cfg_.kv_dim = c.embed_dim;
    const int64_t inner = cfg_.num_heads * cfg_.head_dim;
    q = this->register_module("q", std::make_shared<Linear<T>>(cfg_.embed_dim, inner, cfg_.bias, gen));
    k = this->register_module("k", std::make_shared<Linear<T>>(cfg_.kv_dim, inner, cfg_.bias, gen));
    v = this->register_module("v", std::make_shared<Linear<T>>(cfg_.kv_dim, inner, cfg_.bias, gen));
    o = this->register_module("o", std::make_shared<Linear<T>>(inner, cfg_.embed_dim, cfg_.bias, gen));
  }

  std::string type_name() const override { return "MultiHeadAttention"; }

  // Self-attention.
  Tensor<T> forward(const Tensor<T>& x, const AttentionOptions<T>& opts = {}) { return forward(x, x, opts); }

  // Cross-attention: queries from x, keys and values from memory. opts supplies masks, key
  // lengths, causal and bias; its scale, when set, wins over the config's. Dropout and its
  // generator are the module's.
  Tensor<T> forward(const Tensor<T>& x, const Tensor<T>& memory, const AttentionOptions<T>& opts = {}) {
    TXTCLS_CHECK(x.dim() == 3 && x.size(2) == cfg_.embed_dim, type_name(), ": input of shape ", shape_str(x.shape()),
                 " is not [B, L, ", cfg_.embed_dim, "]");
    TXTCLS_CHECK(memory.dim() == 3 && memory.size(0) == x.size(0) && memory.size(2) == cfg_.kv_dim, type_name(),
                 ": memory of shape ", shape_str(memory.shape()), " is not [", x.size(0), ", L, ", cfg_.kv_dim, "]");
    const int64_t B = x.size(0), Lq = x.size(1), Lk = memory.size(1);
    Tensor<T> qh = heads(q->forward(x), B, Lq), kh = heads(k->forward(memory), B, Lk),
              vh = heads(v->forward(memory), B, Lk);
    AttentionOptions<T> ao = opts;
    if (!ao.scale) ao.scale = cfg_.scale;
    ao.dropout_p = this->is_training() ? cfg_.dropout : 0.0;
    ao.generator = gen_;
    Tensor<T> a = cfg_.fused ? scaled_dot_product_attention(qh, kh, vh, ao) : attention_reference(qh, kh, vh, ao);
    return o->forward(a.permute({0, 2, 1, 3}).reshape({B, Lq, cfg_.num_heads * cfg_.head_dim}));
  }

  const MultiHeadAttentionConfig& config() const { return cfg_; }
  bool fused() const { return cfg_.fused; }
  void set_fused(bool on) { cfg_.fused = on; }
  // Dropout's generator; it must outlive the module. nullptr: default_generator().
  void set_generator(Generator* g) { gen_ = g; }

  std::shared_ptr<Linear<T>> q, k, v, o;

 private:
  // [B, L, H * Dh] -> [B, H, L, Dh], a view (rows of Dh stay contiguous).
  Tensor<T> heads(const Tensor<T>& t, int64_t B, int64_t L) const {
    return t.view({B, L, cfg_.num_heads, cfg_.head_dim}).permute({0, 2, 1, 3});
  }

  MultiHeadAttentionConfig cfg_;
  Generator* gen_ = nullptr;
};

}  // namespace txtcls::nn
