#pragma once
// Relative positions for attention, as Hugging Face transformers computes them (docs/relative_positions.md):
//
//   T5 (modeling_t5.T5Attention):
//     t5_relative_position_bucket  relative position -> bucket id (exact increments near 0, log-spaced
//                                  buckets up to max_distance, one bucket per sign when bidirectional);
//     t5_relative_positions        the [Lq, Lk] matrix key - (query + query_offset);
//     t5_position_bias             the [1, H, Lq, Lk] additive bias looked up in the
//                                  relative_attention_bias table [num_buckets, H] (differentiable in it).
//   Transformer-XL / XLNet (modeling_xlnet.XLNetModel, XLNetRelativeAttention):
//     xlnet_relative_positional_encoding  the sinusoidal embedding of the relative distances
//                                         klen, klen-1, ... seen by the position term;
//     rel_shift_bnij                       the "relative shift" that turns scores against those
//                                         distances into [.., qlen, klen] scores, with its backward.
//
// Float rounding follows HF step by step where it decides a result: the bucket of a large distance
// truncates a float32 expression, and XLNet's embedding is computed in float32 whatever the model's
// dtype (HF builds it with float32 aranges). The transcendental functions here are correctly rounded
// (evaluated in double, rounded to float); PyTorch's vectorised CPU sin/cos/pow can differ from that
// by one float32 ulp (see the document above), the bucket logarithm has never been seen to.
#include <cmath>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "txtcls/ops/embedding.hpp"

namespace txtcls {

// ================================================================ T5

namespace detail {

// Validates the bucket parameters; returns (buckets per sign, max_exact).
inline std::pair<int64_t, int64_t> t5_bucket_layout(bool bidirectional, int64_t num_buckets, int64_t max_distance,
                                                    const char* op) {
  const int64_t per_sign = bidirectional ? num_buckets / 2 : num_buckets;
  const int64_t max_exact = per_sign / 2;
  TXTCLS_CHECK(max_exact >= 1, op, ": num_buckets ", num_buckets, " is too small (",
               bidirectional ? "bidirectional needs at least 4" : "causal needs at least 2", ")");
  // The log buckets divide by log(max_distance / max_exact): equal values (or max_distance <= 0) leave
  // HF's result undefined. A max_distance below max_exact runs the formula backwards (buckets fall
  // below max_exact, even negative, which HF's embedding lookup then refuses); reproduced as is.
  TXTCLS_CHECK(max_distance > 0 && max_distance != max_exact, op, ": max_distance ", max_distance,
               " must be positive and differ from the number of exact buckets ", max_exact, " (num_buckets ",
               num_buckets, bidirectional ? ", bidirectional)" : ", causal)");
  return {per_sign, max_exact};
}

// The bucket of one relative position, for validated parameters. `log_ratio` is
// float(log(max_distance / max_exact)) (HF divides by a Python float, which PyTorch rounds to the
// tensor's float32).
inline int64_t t5_bucket_one(int64_t rel, bool bidirectional, int64_t per_sign, int64_t max_exact, float log_ratio) {
  int64_t bucket = 0;
  if (bidirectional) {
    if (rel > 0) bucket += per_sign;
    rel = rel < 0 ? -rel : rel;
  } else {
    rel = rel < 0 ? -rel : 0;  // future keys (rel > 0) share bucket 0 with the query itself
  }
  if (rel < max_exact) return bucket + rel;
  // max_exact + trunc(float32(log(float32(rel) / max_exact)) / log_ratio * (per_sign - max_exact)),
  // every step rounded to float32 as PyTorch does; the log itself correctly rounded.
  const float x = static_cast<float>(rel) / static_cast<float>(max_exact);
  const float l = static_cast<float>(std::log(static_cast<double>(x)));
  const float q = l / log_ratio;
  const float v = q * static_cast<float>(per_sign - max_exact);
  const int64_t large = max_exact + static_cast<int64_t>(v);  // truncation toward zero, as .to(torch.long)
  return bucket + std::min(large, per_sign - 1);
}

inline float t5_log_ratio(int64_t max_distance, int64_t max_exact) {
  return static_cast<float>(std::log(static_cast<double>(max_distance) / static_cast<double>(max_exact)));
}

}  // namespace detail

// The T5 bucket of relative_position = key position - query position (HF
// T5Attention._relative_position_bucket). Bidirectional (encoder): num_buckets / 2 buckets per
// sign, positive distances in the upper half. Causal (decoder): positive distances (future keys)
// all fall in bucket 0. Within a sign, distances below max_exact = buckets_per_sign / 2 have a
// bucket each, larger ones share log-spaced buckets up to max_distance, beyond which everything
// is in the last bucket.
inline int64_t t5_relative_position_bucket(int64_t relative_position, bool bidirectional = true,
                                           int64_t num_buckets = 32, int64_t max_distance = 128) {
  auto [per_sign, max_exact] =
      detail::t5_bucket_layout(bidirectional, num_buckets, max_distance, "t5_relative_position_bucket");
  return detail::t5_bucket_one(relative_position, bidirectional, per_sign, max_exact,
                               detail::t5_log_ratio(max_distance, max_exact));
}

// Elementwise over a tensor of relative positions (any shape).
inline Tensor<int64_t> t5_relative_position_bucket(const Tensor<int64_t>& relative_position, bool bidirectional = true,
                                                   int64_t num_buckets = 32, int64_t max_distance = 128) {
  detail::require_cpu(relative_position, "t5_relative_position_bucket");
  auto [per_sign, max_exact] =
      detail::t5_bucket_layout(bidirectional, num_buckets, max_distance, "t5_relative_position_bucket");
  const float log_ratio = detail::t5_log_ratio(max_distance, max_exact);
  Tensor<int64_t> out(relative_position.shape());
  int64_t* po = out.data();
  const int64_t* pr = relative_position.data();
  detail::for_each_strided<1>(relative_position.shape(), {&relative_position.strides()},
                              [&](int64_t i, const std::array<int64_t, 1>& o) {
                                po[i] = detail::t5_bucket_one(pr[o[0]], bidirectional, per_sign, max_exact, log_ratio);
                              });
  return out;
}

// [query_length, key_length] with element (i, j) = j - (i + query_offset): the distance from query
// i, which sits at absolute position query_offset + i (tokens already in a cache come first), to key j.
inline Tensor<int64_t> t5_relative_positions(int64_t query_length, int64_t key_length, int64_t query_offset = 0) {
  TXTCLS_CHECK(query_length >= 0 && key_length >= 0, "t5_relative_positions: negative length (query ", query_length,
               ", key ", key_length, ")");
  Tensor<int64_t> out({query_length, key_length});
  int64_t* p = out.data();
  for (int64_t i = 0; i < query_length; ++i)
    for (int64_t j = 0; j < key_length; ++j) p[i * key_length + j] = j - (i + query_offset);
  return out;
}

// T5's position bias (HF T5Attention.compute_bias): relative_attention_bias [num_buckets, H] looked up
// at the buckets of t5_relative_positions(query_length, key_length, query_offset), laid out as
// [1, H, query_length, key_length] (contiguous). Gradients flow into the table.
// bidirectional: true for an encoder, false for a decoder's self-attention.
template <class T>
Tensor<T> t5_position_bias(const Tensor<T>& relative_attention_bias, int64_t query_length, int64_t key_length,
                           bool bidirectional, int64_t max_distance = 128, int64_t query_offset = 0) {
  TXTCLS_CHECK(relative_attention_bias.dim() == 2, "t5_position_bias: relative_attention_bias must be [num_buckets, ",
               "heads], got ", shape_str(relative_attention_bias.shape()));
  TXTCLS_CHECK(query_offset >= 0, "t5_position_bias: negative query_offset ", query_offset);
  const int64_t num_buckets = relative_attention_bias.size(0);
  Tensor<int64_t> buckets = t5_relative_position_bucket(t5_relative_positions(query_length, key_length, query_offset),
                                                        bidirectional, num_buckets, max_distance);
  // [Lq, Lk, H] -> [1, H, Lq, Lk]
  return embedding(relative_attention_bias, buckets).permute({2, 0, 1}).unsqueeze(0).contiguous();
}

// ================================================================ Transformer-XL / XLNet

enum class XLNetAttnType { Bi, Uni };

// "bi" or "uni" (the attn_type of XLNetConfig).
inline XLNetAttnType xlnet_attn_type(std::string_view name) {
  if (name == "bi") return XLNetAttnType::Bi;
  if (name == "uni") return XLNetAttnType::Uni;
  detail::fail("xlnet_attn_type: unknown attn_type '", std::string(name), "' (expected 'bi' or 'uni')");
}

// The number of relative distances the position term sees: klen + qlen (bi: klen down to -qlen + 1)
// or klen + 1 (uni: klen down to 0).
inline int64_t xlnet_num_relative_positions(int64_t qlen, int64_t klen, XLNetAttnType attn_type) {
  return attn_type == XLNetAttnType::Bi ? klen + qlen : klen + 1;
}

// inv_freq[k] = 1 / 10000^(2k / d_model), k < d_model / 2, in float32 as HF computes it.
inline std::vector<float> xlnet_inv_freq(int64_t d_model) {
  TXTCLS_CHECK(d_model > 0 && d_model % 2 == 0, "xlnet_inv_freq: d_model must be positive and even, got ", d_model);
  std::vector<float> inv(static_cast<size_t>(d_model / 2));
  for (int64_t k = 0; k < d_model / 2; ++k) {
    const float e = static_cast<float>(2 * k) / static_cast<float>(d_model);
    const float p = static_cast<float>(std::pow(10000.0, static_cast<double>(e)));
    inv[k] = 1.0f / p;
  }
  return inv;
}

// XLNet's relative positional encoding (HF XLNetModel.relative_positional_encoding), batch first:
// [Br, P, d_model] with P = xlnet_num_relative_positions(qlen, klen, attn_type), where row p holds
// the distance pos_p = klen - p (the forward sequence) as [sin(pos * inv_freq), cos(pos * inv_freq)].
// With clamp_len > 0 distances are clamped to [-clamp_len, clamp_len]. klen = mlen + qlen when a
// memory of mlen states precedes the segment.
//   bi_data false: Br = bsz (a stride-0 expansion) or 1 when bsz < 0.
//   bi_data true:  the first half of the batch gets the forward sequence, the second half the
//                  backward one (-pos_p); Br = bsz (which must then be even) or 2 when bsz < 0.
// Computed in float32 like HF whatever T is, then converted.
template <class T>
Tensor<T> xlnet_relative_positional_encoding(int64_t qlen, int64_t klen, int64_t d_model, XLNetAttnType attn_type,
                                             bool bi_data = false, int64_t clamp_len = -1, int64_t bsz = -1) {
  const char* op = "xlnet_relative_positional_encoding";
  TXTCLS_CHECK(qlen >= 0 && klen >= qlen, op, ": need 0 <= qlen <= klen, got qlen ", qlen, ", klen ", klen);
  TXTCLS_CHECK(d_model > 0 && d_model % 2 == 0, op, ": d_model must be positive and even, got ", d_model);
  TXTCLS_CHECK(!bi_data || bsz < 0 || bsz % 2 == 0, op, ": bi_data splits the batch in halves, bsz ", bsz,
               " is odd");
  const std::vector<float> inv = xlnet_inv_freq(d_model);
  const int64_t half = d_model / 2, P = xlnet_num_relative_positions(qlen, klen, attn_type);
  // One [P, d_model] table per direction.
  auto table = [&](int64_t sign) {
    Tensor<T> t({1, P, d_model});
    T* p = t.data();
    for (int64_t r = 0; r < P; ++r) {
      float pos = static_cast<float>(sign * (klen - r));
      if (clamp_len > 0) pos = std::clamp(pos, -static_cast<float>(clamp_len), static_cast<float>(clamp_len));
      for (int64_t k = 0; k < half; ++k) {
        const float x = pos * inv[k];
        p[r * d_model + k] = static_cast<T>(static_cast<float>(std::sin(static_cast<double>(x))));
        p[r * d_model + half + k] = static_cast<T>(static_cast<float>(std::cos(static_cast<double>(x))));
      }
    }
    return t;
  };
  Tensor<T> fwd = table(1);
  if (!bi_data) return bsz >= 0 ? fwd.expand({bsz, P, d_model}) : fwd;
  Tensor<T> bwd = table(-1);
  if (bsz < 0) return concat({fwd, bwd}, 0);
  return concat({fwd.expand({bsz / 2, P, d_model}), bwd.expand({bsz / 2, P, d_model})}, 0);
}

// ---------------------------------------------------------------- rel_shift_bnij
// The relative shift of Transformer-XL/XLNet (HF XLNetRelativeAttention.rel_shift_bnij) on x [..., I, J]
// (scores of query i against the relative distances of xlnet_relative_positional_encoding):
// HF reshapes each [I, J] plane to [J, I], drops the first row, reshapes to [I, J - 1] and keeps
// the first klen columns. In flat terms, with x_flat the row-major plane,
//     out[..., i, j] = x_flat[I + i * (J - 1) + j],   0 <= j < klen <= J - 1,
// which for J >= I + klen is x[..., i, I - i + j]: the distance klen - (I - i + j) = (klen - I) + i - j
// from query i (absolute position mlen + i) to key j. With fewer columns (uni: J = klen + 1) the read
// runs on into row i + 1 for j > mlen + i, exactly as HF's reshape does (those keys are future ones,
// which the causal mask hides). Each input element is read at most once, so the backward is a scatter.
// On the CPU one copy per row; on other devices HF's own sequence of views (their copies and
// gradients are the backend's).
template <class T>
Tensor<T> rel_shift_bnij(const Tensor<T>& x, int64_t klen) {
  TXTCLS_CHECK(x.dim() >= 2, "rel_shift_bnij: input must have at least 2 dims [..., qlen, P], got ",
               shape_str(x.shape()));
  const int64_t I = x.size(-2), J = x.size(-1);
  TXTCLS_CHECK(klen >= 0 && klen <= J - 1, "rel_shift_bnij: klen ", klen, " must be in [0, ", J - 1,
               "] for input ", shape_str(x.shape()), " (one column fewer than its last dim)");
  if (!x.device().is_cpu()) {
    auto lead_and = [&](int64_t a, int64_t b) {
      Shape s(x.shape().begin(), x.shape().end() - 2);
      s.push_back(a);
      s.push_back(b);
      return s;
    };
    return x.reshape(lead_and(J, I)).slice(-2, 1, J).reshape(lead_and(I, J - 1)).slice(-1, 0, klen).contiguous();
  }
  const int64_t planes = I > 0 ? x.numel() / (I * J) : 0;  // J >= 1 here
  Shape os = x.shape();
  os.back() = klen;
  Tensor<T> out(os);
  if (out.numel() > 0) {
    Tensor<T> xc = x.detach().contiguous();
    const T* px = xc.data();
    T* po = out.data();
#pragma omp parallel for schedule(static) if (out.numel() > kParallelGrain)
    for (int64_t r = 0; r < planes * I; ++r) {
      const int64_t p = r / I, i = r % I;
      std::memcpy(po + r * klen, px + p * I * J + I + i * (J - 1), static_cast<size_t>(klen) * sizeof(T));
    }
  }
  autograd::record<T>(out, "rel_shift_bnij", {x}, [xs = x.shape(), I, J, klen, planes](const Tensor<T>& g,
                                                                                       const std::vector<bool>&) {
    Tensor<T> gx = zeros<T>(xs);
    if (g.numel() > 0) {
      Tensor<T> gc = g.contiguous();
      const T* pg = gc.data();
      T* pgx = gx.data();
#pragma omp parallel for schedule(static) if (g.numel() > kParallelGrain)
      for (int64_t r = 0; r < planes * I; ++r) {
        const int64_t p = r / I, i = r % I;
        std::memcpy(pgx + p * I * J + I + i * (J - 1), pg + r * klen, static_cast<size_t>(klen) * sizeof(T));
      }
    }
    return std::vector<Tensor<T>>{gx};
  });
  return out;
}

}  // namespace txtcls
