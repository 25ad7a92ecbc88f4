#pragma once
// Multi-head scaled dot-product attention, two implementations of one contract:
//   attention_reference            the unfused composition of core ops (matmul, scale, bias add,
//                                  masked softmax, dropout, matmul): the specification;
//   scaled_dot_product_attention   the fused CPU kernel (ops/attention_kernels.hpp): online
//                                  softmax over key blocks, Lq x Lk never stored, backward
//                                  recomputing the probabilities from the saved logsumexp.
//
// Layout: q [B, H, Lq, D], k [B, H, Lk, D], v [B, H, Lk, Dv] -> out [B, H, Lq, Dv].
// Scores: S = scale * q k^T + bias + mask, then keys are hidden (probability exactly 0) where
//   - key_lengths[b] <= j              (padding),
//   - causal and j > i + (Lk - Lq)     (bottom-right aligned: with Lk = memory + Lq, query i sees
//                                       the whole memory and the queries up to itself),
//   - allowed[b, h, i, j] == 0         (boolean mask, PyTorch's boolean attn_mask convention),
//   - S is -inf                        (an additive mask of -inf).
// A row whose keys are all hidden is EMPTY: its output is zeros and it passes no gradient (PyTorch
// returns NaN there). A large finite negative mask only shifts a row, as in PyTorch.
// Dropout (dropout_p > 0) zeroes probabilities with the counter-based rule of ops/dropout.hpp:
// the call reserves B*H*Lq*Lk counters at `base` and element (b, h, i, j) is kept iff
// philox_uniform(seed, base, ((b*H + h)*Lq + i)*Lk + j) >= p, survivors scaled by 1 / (1 - p).
// Both implementations draw exactly this mask; the fused backward recomputes it.
#include <cmath>
#include <limits>
#include <optional>

#include "txtcls/cuda/attention.hpp"
#include "txtcls/ops/attention_kernels.hpp"
#include "txtcls/ops/dropout.hpp"
#include "txtcls/ops/matmul.hpp"
#include "txtcls/ops/softmax.hpp"

namespace txtcls {

template <class T>
struct AttentionOptions {
  Tensor<int64_t> key_lengths;   // [B]: keys j >= key_lengths[b] are hidden
  bool causal = false;           // query i sees keys j <= i + (Lk - Lq)
  Tensor<T> bias;                // additive, broadcastable to [B, H, Lq, Lk]; receives a gradient
  Tensor<T> mask;                // additive constant (0 / -inf or a large negative), broadcastable; no gradient
  Tensor<uint8_t> allowed;       // boolean, broadcastable: nonzero = the query may attend to the key
  std::optional<double> scale;   // of q k^T; default 1 / sqrt(D) (T5 uses 1)
  double dropout_p = 0.0;        // on the probabilities; 0 draws nothing
  Generator* generator = nullptr;  // dropout's stream; default_generator() when null
  int64_t block_q = 0, block_k = 0;  // fused tile sizes (0: tuned defaults); tests shrink them
};

namespace detail {

struct AttentionDims {
  int64_t B, H, Lq, Lk, D, Dv;
  Shape scores() const { return {B, H, Lq, Lk}; }
};

// The dropout draw of one attention call (the fused ops, CPU and CUDA, plain and relative):
// `count` = B*H*Lq*Lk counters reserved from the generator, none when p = 0, so every
// implementation that reserves through here drops the same elements.
struct ScoreDropout {
  double p = 0;
  uint64_t seed = 0, base = 0;
};

inline ScoreDropout reserve_score_dropout(double p, Generator* generator, int64_t count) {
  if (p <= 0) return {};
  Generator& gen = generator ? *generator : default_generator();
  return {p, gen.seed(), gen.reserve(static_cast<uint64_t>(count))};
}

// Whether s broadcasts to `to` without enlarging it.
inline bool broadcasts_into(const Shape& s, const Shape& to) {
  if (s.size() > to.size()) return false;
  const size_t lead = to.size() - s.size();
  for (size_t i = 0; i < s.size(); ++i)
    if (s[i] != 1 && s[i] != to[lead + i]) return false;
  return true;
}

template <class T>
AttentionDims check_attention(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v,
                              const AttentionOptions<T>& o, const char* op) {
  // On a CUDA build a CUDA q takes the GPU path: every tensor operand on q's device.
#ifdef TXTCLS_WITH_CUDA
  const bool gpu = q.device().is_cuda();
#else
  constexpr bool gpu = false;
#endif
  auto place = [&](const auto& t, const char* name) {
    if (!gpu) return require_cpu(t, op);
    TXTCLS_CHECK(t.device() == q.device(), op, ": ", name, " is on ", t.device().str(), ", q on ",
                 q.device().str());
  };
  place(q, "q");
  place(k, "k");
  place(v, "v");
  TXTCLS_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op, ": q, k, v must be [B, H, L, D], got ",
               shape_str(q.shape()), ", ", shape_str(k.shape()), ", ", shape_str(v.shape()));
  const AttentionDims d{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), v.size(3)};
  TXTCLS_CHECK(k.size(0) == d.B && k.size(1) == d.H && k.size(3) == d.D, op, ": k ", shape_str(k.shape()),
               " does not match q ", shape_str(q.shape()), " (expected [", d.B, ", ", d.H, ", Lk, ", d.D, "])");
  TXTCLS_CHECK(v.size(0) == d.B && v.size(1) == d.H && v.size(2) == d.Lk, op, ": v ", shape_str(v.shape()),
               " does not match k ", shape_str(k.shape()), " (expected [", d.B, ", ", d.H, ", ", d.Lk, ", Dv])");
  const Shape sc = d.scores();
  auto term = [&](const Shape& s, const char* name) {
    TXTCLS_CHECK(broadcasts_into(s, sc), op, ": ", name, " of shape ", shape_str(s),
                 " does not broadcast to the scores [B, H, Lq, Lk] = ", shape_str(sc));
  };
  if (o.bias.defined()) {
    place(o.bias, "bias");
    term(o.bias.shape(), "bias");
  }
  if (o.mask.defined()) {
    place(o.mask, "mask");
    term(o.mask.shape(), "mask");
    TXTCLS_CHECK(!o.mask.requires_grad(), op,
                 ": the additive mask gets no gradient; pass a trainable term as `bias` instead");
  }
  if (o.allowed.defined()) {
    place(o.allowed, "allowed");
    term(o.allowed.shape(), "allowed");
  }
  if (o.key_lengths.defined()) {
    TXTCLS_CHECK(o.key_lengths.dim() == 1 && o.key_lengths.size(0) == d.B, op, ": key_lengths must be [B] = [",
                 d.B, "], got ", shape_str(o.key_lengths.shape()));
    const std::vector<int64_t> len = o.key_lengths.to_vector();
    for (int64_t b = 0; b < d.B; ++b)
      TXTCLS_CHECK(len[b] >= 0 && len[b] <= d.Lk, op, ": key_lengths[", b, "] = ", len[b], " is outside [0, Lk = ",
                   d.Lk, "]");
  }
  check_dropout_p(o.dropout_p, op);
  TXTCLS_CHECK(o.block_q >= 0 && o.block_k >= 0, op, ": block sizes must be >= 0, got ", o.block_q, " and ",
               o.block_k);
  return d;
}

template <class T>
T attention_scale(const AttentionOptions<T>& o, int64_t D) {
  return static_cast<T>(o.scale ? *o.scale : 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(D, 1))));
}

// The constant additive mask of the reference: -inf where padding, the causal diagonal or the
// boolean mask hide a key, the user's additive mask elsewhere. Its shape is the broadcast of
// the parts present; undefined when there are none.
template <class T>
Tensor<T> attention_constant_mask(const AttentionOptions<T>& o, const AttentionDims& d) {
  const bool len = o.key_lengths.defined(), add = o.mask.defined(), allow = o.allowed.defined();
  if (!len && !o.causal && !add && !allow) return Tensor<T>();
  const char* op = "attention_reference";
  Shape ms{1, 1, 1, 1};
  if (len) ms = broadcast_shapes(ms, {d.B, 1, 1, d.Lk}, op);
  if (o.causal) ms = broadcast_shapes(ms, {1, 1, d.Lq, d.Lk}, op);
  if (add) ms = broadcast_shapes(ms, o.mask.shape(), op);
  if (allow) ms = broadcast_shapes(ms, o.allowed.shape(), op);
  const std::vector<int64_t> lengths = len ? o.key_lengths.to_vector() : std::vector<int64_t>();
  // Built on the host (GPU terms are copied here first; CPU ones are read in place).
  const Tensor<T> mk = add ? o.mask.cpu() : Tensor<T>();
  const Tensor<uint8_t> al = allow ? o.allowed.cpu() : Tensor<uint8_t>();
  const Shape sm = add ? broadcast_strides(mk.shape(), mk.strides(), ms) : Shape(4, 0);
  const Shape sa = allow ? broadcast_strides(al.shape(), al.strides(), ms) : Shape(4, 0);
  Tensor<T> m(ms);
  T* out = m.data();
  const T* pm = add ? mk.data() : nullptr;
  const uint8_t* pa = allow ? al.data() : nullptr;
  for (int64_t b = 0, n = 0; b < ms[0]; ++b)
    for (int64_t h = 0; h < ms[1]; ++h)
      for (int64_t i = 0; i < ms[2]; ++i)
        for (int64_t j = 0; j < ms[3]; ++j, ++n) {
          const bool hidden = (len && j >= lengths[b]) || (o.causal && j > i + d.Lk - d.Lq) ||
                              (allow && !pa[b * sa[0] + h * sa[1] + i * sa[2] + j * sa[3]]);
          out[n] = hidden ? -std::numeric_limits<T>::infinity()
                          : (add ? pm[b * sm[0] + h * sm[1] + i * sm[2] + j * sm[3]] : T(0));
        }
  return m;
}

// A view whose rows (last dim) are contiguous, as the fused kernels read them.
template <class T>
Tensor<T> unit_rows(const Tensor<T>& t) {
  Tensor<T> x = t.detach();
  return (x.size(-1) <= 1 || x.stride(-1) == 1) ? x : x.contiguous();
}

template <class U, class T>
attn::Rows<U> rows_of(U* p, const Tensor<T>& t) {
  return {p, t.stride(0), t.stride(1), t.stride(2)};
}

template <class U>
attn::Term<const U> term_of(const Tensor<U>& t, const Shape& scores) {
  if (!t.defined()) return {};
  const Shape s = broadcast_strides(t.shape(), t.strides(), scores);
  return {t.data(), s[0], s[1], s[2], s[3]};
}

// What the fused op keeps for its backward.
template <class T>
struct AttentionSaved {
  AttentionDims d;
  Tensor<T> q, k, v, bias, mask, out, lse;
  Tensor<uint8_t> allowed;
  std::vector<int64_t> lengths;
  bool causal = false;
  T scale = 1;
  double p = 0;
  uint64_t seed = 0, base = 0;
  int64_t bq = 0, bk = 0;

  attn::Problem<T> problem() const {
    attn::Problem<T> pr;
    pr.B = d.B, pr.H = d.H, pr.Lq = d.Lq, pr.Lk = d.Lk, pr.D = d.D, pr.Dv = d.Dv;
    pr.q = rows_of(q.data(), q);
    pr.k = rows_of(k.data(), k);
    pr.v = rows_of(v.data(), v);
    pr.scale = scale;
    pr.key_lengths = lengths.empty() ? nullptr : lengths.data();
    pr.causal = causal;
    pr.diag = d.Lk - d.Lq;
    pr.bias = term_of(bias, d.scores());
    pr.mask = term_of(mask, d.scores());
    pr.allowed = term_of(allowed, d.scores());
    pr.dropout_p = p;
    pr.seed = seed;
    pr.base = base;
    pr.drop_scale = dropout_scale<T>(p);
    pr.bq = bq;
    pr.bk = bk;
    return pr;
  }
};

// Tile sizes measured on Zen 3 (AVX2, float); see docs/attention.md.
inline constexpr int64_t kAttentionBlockQ = 64, kAttentionBlockK = 64;

#ifdef TXTCLS_WITH_CUDA
// The GPU path of scaled_dot_product_attention (kernels/attention.cu): the same contract; the
// kernels read q, k, v and the score terms in place (rows with unit stride) and save the output
// and lse for the backward, which recomputes the probabilities.
// A score term (any element type: values or a boolean mask) as the kernels address it.
template <class T>
cuda::AttnTerm<T> cuda_term(const Tensor<T>& t, const Shape& scores) {
  if (!t.defined()) return {};
  const Shape s = broadcast_strides(t.shape(), t.strides(), scores);
  return {t.data(), s[0], s[1], s[2], s[3]};
}

template <class T>
cuda::AttnRows<const T> cuda_rows(const Tensor<T>& t) {
  return {t.data(), t.stride(0), t.stride(1), t.stride(2)};
}

// The kernels' view of a call's options: dims, scale, causal, the score terms (bias, mask,
// allowed: o's, or the copies given, already where the kernels read them, with their strides
// broadcast to the scores) and the dropout reservation from o's generator. The q, k, v rows and
// the key lengths (a device copy) are the caller's to set.
template <class T>
cuda::AttentionArgs<T> cuda_attention_args(const AttentionOptions<T>& o, const AttentionDims& d, const Tensor<T>& bias,
                                           const Tensor<T>& mask, const Tensor<uint8_t>& allowed) {
  cuda::AttentionArgs<T> a;
  a.B = d.B, a.H = d.H, a.Lq = d.Lq, a.Lk = d.Lk, a.D = d.D, a.Dv = d.Dv;
  a.scale = attention_scale(o, d.D);
  a.causal = o.causal;
  a.bias = cuda_term(bias, d.scores());
  a.mask = cuda_term(mask, d.scores());
  a.allowed = cuda_term(allowed, d.scores());
  if (o.dropout_p > 0) {  // the CPU op's reservation: the same counters, the same mask
    const ScoreDropout draw = reserve_score_dropout(o.dropout_p, o.generator, d.B * d.H * d.Lq * d.Lk);
    a.dropout_p = draw.p, a.seed = draw.seed, a.base = draw.base;
    a.drop_scale = dropout_scale<T>(o.dropout_p);
  }
  return a;
}

template <class T>
Tensor<T> attention_cuda(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v, const AttentionOptions<T>& o,
                         const AttentionDims& d, const char* op) {
  cuda::check_attention_head_dims(d.D, d.Dv, op);
  struct Saved {
    cuda::AttentionArgs<T> a;
    Tensor<T> q, k, v, bias, mask, out, lse;
    Tensor<uint8_t> allowed;
    Tensor<int64_t> lengths;
  };
  auto saved = std::make_shared<Saved>();
  Saved& sv = *saved;
  const Device dev = q.device();
  sv.q = unit_rows(q);
  sv.k = unit_rows(k);
  sv.v = unit_rows(v);
  if (o.bias.defined()) sv.bias = o.bias.detach();
  if (o.mask.defined()) sv.mask = o.mask.detach();
  sv.allowed = o.allowed;
  sv.a = cuda_attention_args(o, d, sv.bias, sv.mask, sv.allowed);
  cuda::AttentionArgs<T>& a = sv.a;
  a.q = cuda_rows(sv.q);
  a.k = cuda_rows(sv.k);
  a.v = cuda_rows(sv.v);
  if (o.key_lengths.defined()) {  // checked on the host; the kernels read a device copy
    sv.lengths = from_vector<int64_t>(o.key_lengths.to_vector(), {d.B}).to(dev);
    a.key_lengths = sv.lengths.data();
  }
  Tensor<T> out({d.B, d.H, d.Lq, d.Dv}, dev);
  sv.lse = Tensor<T>({d.B, d.H, d.Lq}, dev);
  cuda::attention_forward<T>(a, out.data(), sv.lse.data());
  sv.out = out.detach();
  autograd::record<T>(out, op, {q, k, v, o.bias}, [saved](const Tensor<T>& grad, const std::vector<bool>& needs) {
    const Saved& s = *saved;
    const cuda::AttentionArgs<T>& a = s.a;
    const Device dev = s.out.device();
    Tensor<T> g = unit_rows(grad);
    // Written whole by the kernels.
    Tensor<T> dq({a.B, a.H, a.Lq, a.D}, dev), dk({a.B, a.H, a.Lk, a.D}, dev), dv({a.B, a.H, a.Lk, a.Dv}, dev);
    Tensor<T> delta({a.B, a.H, a.Lq}, dev), partial, db;
    cuda::AttentionGrads<T> gr{dq.data(), dk.data(), dv.data(), nullptr, true, delta.data()};
    if (needs[3]) {
      // Per head: [B, H, Lq, Lk], or [B, H, 1, Lk] for a bias broadcast over queries (the kernel
      // sums its columns); then the deterministic reduction over the bias's broadcast dims.
      gr.dbias_per_query = a.bias.si != 0;
      partial = zeros<T>({a.B, a.H, gr.dbias_per_query ? a.Lq : 1, a.Lk}, dev);
      gr.dbias = partial.data();
    }
    cuda::attention_backward<T>(a, s.out.data(), cuda_rows(g), s.lse.data(), gr);
    if (needs[3]) db = sum_to(partial, s.bias.shape());
    return std::vector<Tensor<T>>{needs[0] ? dq : Tensor<T>(), needs[1] ? dk : Tensor<T>(),
                                  needs[2] ? dv : Tensor<T>(), db};
  });
  return out;
}
#endif

}  // namespace detail

// Reference attention: the composition of core ops that defines the contract (see the top of
// this file). Materialises the [B, H, Lq, Lk] scores; use it for checking and small inputs.
template <class T>
Tensor<T> attention_reference(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v,
                              const AttentionOptions<T>& o = {}) {
  const detail::AttentionDims d = detail::check_attention(q, k, v, o, "attention_reference");
  Tensor<T> s = mul(matmul(q, k.transpose(-1, -2)), detail::attention_scale(o, d.D));
  if (o.bias.defined()) s = add(s, o.bias);
  Tensor<T> mask = detail::attention_constant_mask(o, d);
  if (mask.defined()) mask = mask.to(q.device());
  Tensor<T> p = softmax(s, -1, mask);
  if (o.dropout_p > 0) p = dropout(p, o.dropout_p, o.generator ? *o.generator : default_generator());
  return matmul(p, v);
}

// Fused attention (same contract as attention_reference), float or double, CPU.
template <class T>
Tensor<T> scaled_dot_product_attention(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v,
                                       const AttentionOptions<T>& o = {}) {
  constexpr const char* op = "scaled_dot_product_attention";
  const detail::AttentionDims dims = detail::check_attention(q, k, v, o, op);
#ifdef TXTCLS_WITH_CUDA
  if (q.device().is_cuda()) return detail::attention_cuda(q, k, v, o, dims, op);
#endif
  auto saved = std::make_shared<detail::AttentionSaved<T>>();
  detail::AttentionSaved<T>& sv = *saved;
  sv.d = dims;
  const detail::AttentionDims& d = sv.d;
  sv.q = detail::unit_rows(q);
  sv.k = detail::unit_rows(k);
  sv.v = detail::unit_rows(v);
  if (o.bias.defined()) sv.bias = o.bias.detach();
  if (o.mask.defined()) sv.mask = o.mask.detach();
  if (o.allowed.defined()) sv.allowed = o.allowed;
  if (o.key_lengths.defined()) sv.lengths = o.key_lengths.to_vector();
  sv.causal = o.causal;
  sv.scale = detail::attention_scale(o, d.D);
  sv.bq = o.block_q > 0 ? o.block_q : detail::kAttentionBlockQ;
  sv.bk = o.block_k > 0 ? o.block_k : detail::kAttentionBlockK;
  const detail::ScoreDropout draw = detail::reserve_score_dropout(o.dropout_p, o.generator, d.B * d.H * d.Lq * d.Lk);
  sv.p = draw.p, sv.seed = draw.seed, sv.base = draw.base;
  Tensor<T> out({d.B, d.H, d.Lq, d.Dv});
  sv.lse = Tensor<T>({d.B, d.H, d.Lq});
  detail::attn::forward(sv.problem(), detail::rows_of(out.data(), out), sv.lse.data());
  sv.out = out.detach();
  autograd::record<T>(out, op, {q, k, v, o.bias}, [saved](const Tensor<T>& grad, const std::vector<bool>& needs) {
    const detail::AttentionSaved<T>& s = *saved;
    const detail::AttentionDims& d = s.d;
    Tensor<T> g = detail::unit_rows(grad);
    // Written whole by the kernels (each head's task zeroes its own rows: no extra parallel pass).
    Tensor<T> dq({d.B, d.H, d.Lq, d.D}), dk({d.B, d.H, d.Lk, d.D}), dv({d.B, d.H, d.Lk, d.Dv}), db;
    detail::attn::Grads<T> gr{detail::rows_of(dq.data(), dq), detail::rows_of(dk.data(), dk),
                              detail::rows_of(dv.data(), dv), {}};
    if (needs[3]) {
      db = zeros<T>(s.bias.shape());
      const Shape st = detail::broadcast_strides(db.shape(), db.strides(), d.scores());
      gr.dbias = {db.data(), st[0], st[1], st[2], st[3]};
    }
    detail::attn::backward(s.problem(), detail::rows_of(static_cast<const T*>(s.out.data()), s.out),
                           detail::rows_of(static_cast<const T*>(g.data()), g), s.lse.data(), gr,
                           db.defined() ? db.numel() : 0);
    return std::vector<Tensor<T>>{needs[0] ? dq : Tensor<T>(), needs[1] ? dk : Tensor<T>(),
                                  needs[2] ? dv : Tensor<T>(), db};
  });
  return out;
}

}  // namespace txtcls
