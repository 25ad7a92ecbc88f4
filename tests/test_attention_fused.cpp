// The fused attention op against its reference composition and against finite differences,
// the masking, dropout and error rules of ops/attention.hpp, and nn::MultiHeadAttention.
#include <cmath>
#include <limits>
#include <optional>
#include <string>

#include "test_util.hpp"
#include "txtcls/nn/attention.hpp"
#include "txtcls/ops/attention.hpp"

using namespace txtcls;
using namespace tt;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// One configuration of the op: sizes and options, instantiated for float or double.
struct Case {
  std::string name;
  int64_t B = 2, H = 3, Lq = 5, Lk = 7, D = 5, Dv = 4;
  std::vector<int64_t> lengths;  // empty: none
  bool causal = false;
  Shape bias;                    // empty: no bias
  enum Mask { NoMask, NegInfMask, FiniteMask } mask = NoMask;  // additive, [B, 1, Lq, Lk]
  Shape allowed;                 // empty: no boolean mask
  std::optional<double> scale;
  double dropout = 0;
  bool strided = false;          // q a permuted view, v with a non-unit last stride
  int64_t bq = 0, bk = 0;        // tile sizes of the fused kernel (0: defaults)

  Case with_blocks(int64_t q, int64_t k) const {
    Case c = *this;
    c.bq = q;
    c.bk = k;
    return c;
  }
  std::string label() const {
    return name + " [" + std::to_string(B) + "," + std::to_string(H) + "," + std::to_string(Lq) + "," +
           std::to_string(Lk) + "," + std::to_string(D) + "," + std::to_string(Dv) + "] blocks " + std::to_string(bq) +
           "x" + std::to_string(bk);
  }
};

// Whether the pattern hides key j of row (b, i); row (0, Lq - 1) is hidden entirely.
bool hidden_at(const Case& c, int64_t b, int64_t i, int64_t j) {
  return (b == 0 && i == c.Lq - 1) || (i * 3 + j * 5 + b) % 4 == 0;
}

TD additive_mask(const Case& c) {
  TD m = rnd({c.B, 1, c.Lq, c.Lk}, 41);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t i = 0; i < c.Lq; ++i)
      for (int64_t j = 0; j < c.Lk; ++j)
        if (hidden_at(c, b, i, j)) m.set({b, 0, i, j}, c.mask == Case::NegInfMask ? -kInf : -20.0);
  return m;
}

Tensor<uint8_t> allowed_mask(const Case& c) {
  Tensor<uint8_t> a = zeros<uint8_t>(c.allowed);
  const int64_t lead = 4 - static_cast<int64_t>(c.allowed.size());
  // Fill by the broadcast position of each element (b = 0 when the mask has no batch dim).
  for (int64_t n = 0; n < a.numel(); ++n) {
    int64_t idx[4] = {0, 0, 0, 0}, rem = n;
    for (int64_t d = 3; d >= lead; --d) {
      idx[d] = rem % c.allowed[d - lead];
      rem /= c.allowed[d - lead];
    }
    a.data()[n] = hidden_at(c, idx[0], idx[2], idx[3]) ? 0 : 1;
  }
  return a;
}

// The double inputs of a case, and a fixed upstream gradient.
struct Inputs {
  TD q, k, v, bias, mask, gout;
  Tensor<uint8_t> allowed;
};

Inputs make_inputs(const Case& c) {
  Inputs in;
  in.q = rnd({c.B, c.H, c.Lq, c.D}, 1, -1.5, 1.5);
  in.k = rnd({c.B, c.H, c.Lk, c.D}, 2, -1.5, 1.5);
  in.v = rnd({c.B, c.H, c.Lk, c.Dv}, 3);
  if (!c.bias.empty()) in.bias = rnd(c.bias, 4);
  if (c.mask != Case::NoMask) in.mask = additive_mask(c);
  if (!c.allowed.empty()) in.allowed = allowed_mask(c);
  in.gout = rnd({c.B, c.H, c.Lq, c.Dv}, 5);
  return in;
}

template <class T>
AttentionOptions<T> options(const Case& c, const Tensor<T>& bias, const Tensor<T>& mask,
                            const Tensor<uint8_t>& allowed, Generator* gen) {
  AttentionOptions<T> o;
  if (!c.lengths.empty()) o.key_lengths = from_vector<int64_t>(c.lengths);
  o.causal = c.causal;
  o.bias = bias;
  o.mask = mask;
  o.allowed = allowed;
  o.scale = c.scale;
  o.dropout_p = c.dropout;
  o.generator = gen;
  o.block_q = c.bq;
  o.block_k = c.bk;
  return o;
}

// Runs one path on q, k, v (and bias) of element type T.
template <class T>
Tensor<T> attend(const Case& c, bool fused, const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v,
                 const Tensor<T>& bias, const Tensor<T>& mask, const Tensor<uint8_t>& allowed) {
  Generator gen(99);
  const AttentionOptions<T> o = options<T>(c, bias, mask, allowed, &gen);
  Tensor<T> out = fused ? scaled_dot_product_attention(q, k, v, o) : attention_reference(q, k, v, o);
  REQUIRE(gen.offset() == (c.dropout > 0 ? static_cast<uint64_t>(c.B * c.H * c.Lq * c.Lk) : 0));
  return out;
}

template <class T>
struct Result {
  Tensor<T> out, dq, dk, dv, dbias;
};

// Forward and backward of one path in precision T.
template <class T>
Result<T> run(const Case& c, const Inputs& in, bool fused) {
  auto leaf = [](const TD& x) { return x.defined() ? cast<T>(x).set_requires_grad(true) : Tensor<T>(); };
  Tensor<T> q = leaf(in.q), k = leaf(in.k), v = leaf(in.v), bias = leaf(in.bias);
  Tensor<T> mask = in.mask.defined() ? cast<T>(in.mask) : Tensor<T>();
  Tensor<T> qa = q, va = v;
  if (c.strided) {  // the same values through views: rows of q strided, v's last dim strided
    qa = q.permute({0, 2, 1, 3}).contiguous().permute({0, 2, 1, 3});
    va = v.transpose(2, 3).contiguous().transpose(2, 3);
    REQUIRE(!qa.is_contiguous());
    REQUIRE(va.stride(3) != 1);
  }
  Tensor<T> out = attend<T>(c, fused, qa, k, va, bias, mask, in.allowed);
  out.backward(cast<T>(in.gout));
  return {out.detach(), q.grad(), k.grad(), v.grad(), bias.defined() ? bias.grad() : Tensor<T>()};
}

// max |a - b| / max |b|, requiring a finite and of b's shape. A reference that is zero up to
// rounding (a gradient that vanishes identically, e.g. dQ with a single visible key, or the bias
// of the key projection, which shifts a whole row of scores) is compared in absolute terms.
template <class T>
double rel_err(const Tensor<T>& a, const Tensor<T>& b) {
  REQUIRE(a.defined());
  REQUIRE(b.defined());
  REQUIRE(a.shape() == b.shape());
  auto va = a.to_vector(), vb = b.to_vector();
  double err = 0, top = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    REQUIRE(std::isfinite(static_cast<double>(va[i])));
    err = std::max(err, std::abs(static_cast<double>(va[i]) - static_cast<double>(vb[i])));
    top = std::max(top, std::abs(static_cast<double>(vb[i])));
  }
  return top > 1e-6 ? err / top : err;
}

template <class T>
void require_parity(const Case& c, double tol) {
  INFO(c.label() << (sizeof(T) == 4 ? " float" : " double"));
  const Inputs in = make_inputs(c);
  const Result<T> f = run<T>(c, in, true), r = run<T>(c, in, false);
  CHECK(rel_err(f.out, r.out) <= tol);
  CHECK(rel_err(f.dq, r.dq) <= tol);
  CHECK(rel_err(f.dk, r.dk) <= tol);
  CHECK(rel_err(f.dv, r.dv) <= tol);
  if (!c.bias.empty()) CHECK(rel_err(f.dbias, r.dbias) <= tol);
}

void require_gradcheck(const Case& c, bool fused) {
  INFO(c.label() << (fused ? " fused" : " reference"));
  const Inputs in = make_inputs(c);
  std::vector<TD> xs{in.q, in.k, in.v};
  if (in.bias.defined()) xs.push_back(in.bias);
  auto f = [&](const std::vector<TD>& x) {
    return attend<double>(c, fused, x[0], x[1], x[2], x.size() > 3 ? x[3] : TD(), in.mask, in.allowed);
  };
  const auto res = txtcls::testing::gradcheck(f, xs);
  INFO("gradcheck: " << res.where << " (max abs err " << res.max_abs_err << ")");
  REQUIRE(res.ok);
}

// Every mask / bias / dropout variant on small awkward sizes (Lq != Lk, D = 5).
std::vector<Case> variants() {
  std::vector<Case> v;
  Case base;
  base.name = "plain";
  v.push_back(base);
  auto add = [&](const std::string& name, auto edit) {
    Case c = base;
    c.name = name;
    edit(c);
    v.push_back(c);
  };
  add("key lengths 7, 1, 0", [](Case& c) { c.B = 3, c.lengths = {7, 1, 0}; });
  add("causal, Lk > Lq", [](Case& c) { c.causal = true; });
  add("causal, Lk < Lq (first rows empty)", [](Case& c) { c.causal = true, c.Lq = 7, c.Lk = 5; });
  add("causal + key lengths", [](Case& c) { c.causal = true, c.lengths = {3, 7}; });
  add("causal, Lq = 9, Lk = 14, D = 9, Dv = 13",
      [](Case& c) { c.causal = true, c.Lq = 9, c.Lk = 14, c.D = 9, c.Dv = 13; });
  for (Shape s : {Shape{3, 5, 7}, Shape{1, 3, 5, 7}, Shape{2, 1, 1, 7}, Shape{2, 3, 5, 7}, Shape{7}, Shape{2, 1, 5, 7}})
    add("bias " + shape_str(s), [s](Case& c) { c.bias = s; });
  add("additive -inf mask", [](Case& c) { c.mask = Case::NegInfMask; });
  add("additive finite mask", [](Case& c) { c.mask = Case::FiniteMask; });
  add("boolean mask [B,1,Lq,Lk]", [](Case& c) { c.allowed = {2, 1, 5, 7}; });
  add("boolean mask [Lq,Lk]", [](Case& c) { c.allowed = {5, 7}; });
  add("T5: scale 1, bias [1,H,Lq,Lk]", [](Case& c) { c.scale = 1.0, c.bias = {1, 3, 5, 7}; });
  add("dropout 0.3", [](Case& c) { c.dropout = 0.3; });
  add("dropout + causal + bias + lengths",
      [](Case& c) { c.dropout = 0.4, c.causal = true, c.bias = {3, 5, 7}, c.lengths = {7, 4}; });
  add("Lq = 1", [](Case& c) { c.Lq = 1, c.bias = {2, 3, 1, 7}; });
  add("Lq = 1, causal", [](Case& c) { c.Lq = 1, c.causal = true; });
  add("Lk = 1", [](Case& c) { c.Lk = 1, c.causal = true; });
  add("Dv = D = 9, strided views", [](Case& c) { c.D = 9, c.Dv = 9, c.strided = true; });
  add("everything", [](Case& c) {
    c.lengths = {6, 7}, c.causal = true, c.bias = {2, 3, 5, 7}, c.mask = Case::NegInfMask, c.allowed = {5, 7};
    c.dropout = 0.25, c.scale = 0.7;
  });
  return v;
}

// Larger sizes: several default-size tiles, partial last tiles, D not a multiple of 8.
std::vector<Case> large_variants() {
  std::vector<Case> v;
  Case base;
  base.B = 2, base.H = 2, base.Lq = 100, base.Lk = 150, base.D = 20, base.Dv = 12;
  base.name = "large plain";
  v.push_back(base);
  Case c = base;
  c.name = "large causal + lengths + bias [H,Lq,Lk] + dropout";
  c.causal = true, c.lengths = {150, 77}, c.bias = {2, 100, 150}, c.dropout = 0.2;
  v.push_back(c);
  c = base;
  c.name = "large Lq > Lk causal + bias [B,1,1,Lk] + -inf mask";
  c.Lq = 150, c.Lk = 100, c.causal = true, c.bias = {2, 1, 1, 100}, c.mask = Case::NegInfMask;
  v.push_back(c);
  c = base;
  c.name = "large single head, causal (query blocks split over tasks)";
  c.B = 1, c.H = 1, c.Lq = 150, c.Lk = 130, c.causal = true, c.bias = {150, 130};
  v.push_back(c);
  c = base;
  c.name = "large head dims 72/40, boolean mask, strided";
  c.D = 72, c.Dv = 40, c.allowed = {2, 1, 100, 150}, c.strided = true;
  v.push_back(c);
  return v;
}

}  // namespace

TEST_CASE("attention: closed-form values", "[attention]") {
  // One key: the output is its value, whatever the score.
  auto q = rnd({1, 2, 3, 4}, 1), k = rnd({1, 2, 1, 4}, 2), v = rnd({1, 2, 1, 5}, 3);
  for (bool fused : {true, false}) {
    auto out = fused ? scaled_dot_product_attention(q, k, v) : attention_reference(q, k, v);
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t i = 0; i < 3; ++i)
        for (int64_t d = 0; d < 5; ++d) REQUIRE(std::abs(out.at({0, h, i, d}) - v.at({0, h, 0, d})) < 1e-15);
  }
  // Two keys, D = 1: weights softmax(q k_j / 1) by hand.
  auto q1 = from_vector<double>({2.0}, {1, 1, 1, 1}), k1 = from_vector<double>({0.5, -1.0}, {1, 1, 2, 1});
  auto v1 = from_vector<double>({3.0, -2.0}, {1, 1, 2, 1});
  const double w0 = std::exp(1.0) / (std::exp(1.0) + std::exp(-2.0));
  for (bool fused : {true, false}) {
    auto out = fused ? scaled_dot_product_attention(q1, k1, v1) : attention_reference(q1, k1, v1);
    REQUIRE(std::abs(out.item() - (3.0 * w0 - 2.0 * (1 - w0))) < 1e-14);
    // scale 0.5 and a causal mask with Lq = Lk = 1... here Lk = 2, Lq = 1: both keys visible
    AttentionOptions<double> o;
    o.scale = 0.5;
    o.causal = true;
    const double u0 = std::exp(0.5) / (std::exp(0.5) + std::exp(-1.0));
    auto out2 = fused ? scaled_dot_product_attention(q1, k1, v1, o) : attention_reference(q1, k1, v1, o);
    REQUIRE(std::abs(out2.item() - (3.0 * u0 - 2.0 * (1 - u0))) < 1e-14);
    // key length 1: only the first key
    AttentionOptions<double> ol;
    ol.key_lengths = from_vector<int64_t>({1});
    auto out3 = fused ? scaled_dot_product_attention(q1, k1, v1, ol) : attention_reference(q1, k1, v1, ol);
    REQUIRE(out3.item() == 3.0);
  }
}

TEST_CASE("attention: fused and reference agree in float and double, outputs and gradients", "[attention]") {
  for (const Case& c : variants())
    for (const Case& cb : {c, c.with_blocks(2, 3), c.with_blocks(3, 2)}) {
      require_parity<double>(cb, 1e-12);
      require_parity<float>(cb, 1e-5);
    }
  for (const Case& c : large_variants()) {
    require_parity<double>(c, 1e-12);
    require_parity<float>(c, 1e-5);
    require_parity<float>(c.with_blocks(16, 48), 1e-5);
  }
}

TEST_CASE("attention: gradients match finite differences (both paths)", "[attention][grad]") {
  for (const Case& c : variants()) {
    require_gradcheck(c, false);
    require_gradcheck(c, true);
    require_gradcheck(c.with_blocks(2, 3), true);
  }
}

TEST_CASE("attention: rows with every key hidden are zero and pass no gradient", "[attention]") {
  Case c;
  c.B = 3, c.Lq = 6, c.Lk = 5, c.causal = true, c.lengths = {5, 0, 3};  // rows 0 of every batch: diag = -1
  c.bias = {6, 5};  // [Lq, Lk]: shared by every batch and head
  const Inputs in = make_inputs(c);
  for (bool fused : {true, false})
    for (int64_t bq : {0, 2}) {
      INFO((fused ? "fused" : "reference") << " block_q " << bq);
      Case cb = c.with_blocks(bq, bq);
      auto check = [&](const auto& r) {
        for (int64_t b = 0; b < 3; ++b)
          for (int64_t h = 0; h < 3; ++h)
            for (int64_t i = 0; i < 6; ++i) {
              const bool empty = i == 0 || b == 1;  // i + diag < 0, or key length 0
              for (int64_t d = 0; d < 4; ++d) {
                REQUIRE(std::isfinite(static_cast<double>(r.out.at({b, h, i, d}))));
                if (empty) REQUIRE(r.out.at({b, h, i, d}) == 0);
                else REQUIRE(r.out.at({b, h, i, d}) != 0);
              }
              for (int64_t d = 0; d < 5; ++d)
                if (empty) REQUIRE(r.dq.at({b, h, i, d}) == 0);
            }
        for (int64_t h = 0; h < 3; ++h)  // batch 1 has no visible key: no key gets a gradient
          for (int64_t j = 0; j < 5; ++j) REQUIRE(r.dk.at({1, h, j, 0}) == 0);
        for (int64_t j = 0; j < 5; ++j) {
          REQUIRE(r.dbias.at({0, j}) == 0);  // row 0 is empty everywhere
          REQUIRE(r.dbias.at({5, j}) != 0);
        }
      };
      check(run<double>(cb, in, fused));
      check(run<float>(cb, in, fused));
    }
  // Every key of every row masked by -inf in the additive mask: all zeros, no NaN.
  AttentionOptions<double> o;
  o.mask = full<double>({1, 1, 1, 4}, -kInf);
  auto q = rnd({1, 2, 3, 4}, 1), k = rnd({1, 2, 4, 4}, 2), v = rnd({1, 2, 4, 4}, 3);
  for (bool fused : {true, false}) {
    auto out = fused ? scaled_dot_product_attention(q, k, v, o) : attention_reference(q, k, v, o);
    for (double x : out.to_vector()) REQUIRE(x == 0.0);
  }
}

TEST_CASE("attention: empty sizes", "[attention]") {
  for (bool fused : {true, false}) {
    INFO((fused ? "fused" : "reference"));
    auto sdpa = [fused](const TD& q, const TD& k, const TD& v) {
      return fused ? scaled_dot_product_attention(q, k, v) : attention_reference(q, k, v);
    };
    // no keys: every row is empty
    auto q = rnd({2, 2, 3, 4}, 1).set_requires_grad(true);
    auto out = sdpa(q, zeros<double>({2, 2, 0, 4}), zeros<double>({2, 2, 0, 5}));
    REQUIRE(out.shape() == Shape{2, 2, 3, 5});
    for (double x : out.to_vector()) REQUIRE(x == 0.0);
    sum(out).backward();
    for (double x : q.grad().to_vector()) REQUIRE(x == 0.0);
    REQUIRE(sdpa(zeros<double>({2, 2, 0, 4}), rnd({2, 2, 3, 4}, 2), rnd({2, 2, 3, 5}, 3)).shape() == Shape{2, 2, 0, 5});
    REQUIRE(sdpa(zeros<double>({0, 2, 3, 4}), zeros<double>({0, 2, 3, 4}), zeros<double>({0, 2, 3, 5})).shape() ==
            Shape{0, 2, 3, 5});
  }
}

TEST_CASE("attention: dropout draws the documented mask, the same in both paths", "[attention][dropout]") {
  // v = identity over keys, so out[b, h, i, j] = P[i, j] * factor(b, h, i, j).
  const int64_t B = 2, H = 2, Lq = 9, Lk = 11;
  const double p = 0.35;
  auto q = rnd({B, H, Lq, 6}, 1), k = rnd({B, H, Lk, 6}, 2);
  TD v = zeros<double>({B, H, Lk, Lk});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t j = 0; j < Lk; ++j) v.set({b, h, j, j}, 1.0);
  const TD probs = attention_reference(q, k, v);
  for (bool fused : {true, false}) {
    INFO((fused ? "fused" : "reference"));
    Generator gen(1234);
    gen.reserve(77);  // start mid-stream
    const uint64_t base = gen.offset();
    AttentionOptions<double> o;
    o.dropout_p = p;
    o.generator = &gen;
    o.block_q = 4, o.block_k = 5;
    auto out = fused ? scaled_dot_product_attention(q, k, v, o) : attention_reference(q, k, v, o);
    REQUIRE(gen.offset() == base + static_cast<uint64_t>(B * H * Lq * Lk));
    int64_t kept = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < Lq; ++i)
          for (int64_t j = 0; j < Lk; ++j) {
            const uint64_t index = static_cast<uint64_t>(((b * H + h) * Lq + i) * Lk + j);
            const bool keep = philox_uniform(1234, base, index) >= p;
            const double expect = keep ? probs.at({b, h, i, j}) / (1 - p) : 0.0;
            REQUIRE(std::abs(out.at({b, h, i, j}) - expect) < 1e-14);
            kept += keep;
          }
    REQUIRE(kept > 0);
    REQUIRE(kept < B * H * Lq * Lk);
  }
  // p = 1 drops everything; p = 0 draws nothing.
  Generator g1(5);
  AttentionOptions<double> o1;
  o1.dropout_p = 1.0;
  o1.generator = &g1;
  for (double x : scaled_dot_product_attention(q, k, v, o1).to_vector()) REQUIRE(x == 0.0);
  AttentionOptions<double> o0;
  o0.generator = &g1;
  const uint64_t before = g1.offset();
  scaled_dot_product_attention(q, k, v, o0);
  REQUIRE(g1.offset() == before);
}

TEST_CASE("attention: results do not depend on the thread count", "[attention]") {
  Case c;
  c.B = 2, c.H = 4, c.Lq = 40, c.Lk = 45, c.D = 8, c.Dv = 8, c.dropout = 0.2, c.causal = true;
  Case one_head = c;  // a single head: the forward splits its query blocks over tasks
  one_head.B = 1, one_head.H = 1, one_head.Lq = 300, one_head.Lk = 280;
  const int prev = num_threads();
  // Bias shapes that take each backward schedule: owned per head; shared over the batch, by 4
  // groups of heads (one task per group with 2 threads, per-thread copies with 3); shared by all
  // heads (per-thread copies).
  for (auto [shape, bias] : {std::pair{c, Shape{2, 4, 40, 45}}, std::pair{c, Shape{4, 40, 45}},
                             std::pair{c, Shape{40, 45}}, std::pair{one_head, Shape{300, 280}}}) {
    INFO("bias " << shape_str(bias));
    c = shape;
    c.bias = bias;
    const Inputs in = make_inputs(c);
    set_num_threads(1);
    const Result<double> one = run<double>(c, in, true);
    for (int t : {2, 3}) {
      set_num_threads(t);
      const Result<double> many = run<double>(c, in, true);
      REQUIRE(many.out.to_vector() == one.out.to_vector());
      REQUIRE(many.dq.to_vector() == one.dq.to_vector());
      REQUIRE(many.dk.to_vector() == one.dk.to_vector());
      REQUIRE(many.dv.to_vector() == one.dv.to_vector());
      REQUIRE(rel_err(many.dbias, one.dbias) <= 1e-14);  // summed in another order
    }
    set_num_threads(prev);
    require_parity<double>(c, 1e-12);
  }
}

TEST_CASE("attention: errors name the op and the shapes", "[attention]") {
  auto q = rnd({2, 3, 4, 5}, 1), k = rnd({2, 3, 6, 5}, 2), v = rnd({2, 3, 6, 7}, 3);
  for (bool fused : {true, false}) {
    const std::string op = fused ? "scaled_dot_product_attention" : "attention_reference";
    auto call = [fused](const TD& a, const TD& b, const TD& c, const AttentionOptions<double>& o = {}) {
      return fused ? scaled_dot_product_attention(a, b, c, o) : attention_reference(a, b, c, o);
    };
    REQUIRE_THROWS_WITH(call(rnd({3, 4, 5}, 1), k, v), Catch::Contains(op + ": q, k, v must be [B, H, L, D], got "
                                                                           "[3, 4, 5], [2, 3, 6, 5], [2, 3, 6, 7]"));
    REQUIRE_THROWS_WITH(call(q, rnd({2, 3, 6, 4}, 2), v), Catch::Contains(op + ": k [2, 3, 6, 4] does not match q "
                                                                              "[2, 3, 4, 5] (expected [2, 3, Lk, 5])"));
    REQUIRE_THROWS_WITH(call(q, rnd({1, 3, 6, 5}, 2), v), Catch::Contains(op + ": k [1, 3, 6, 5] does not match q"));
    REQUIRE_THROWS_WITH(call(q, k, rnd({2, 3, 5, 7}, 3)), Catch::Contains(op + ": v [2, 3, 5, 7] does not match k "
                                                                              "[2, 3, 6, 5] (expected [2, 3, 6, Dv])"));
    AttentionOptions<double> o;
    o.bias = rnd({3, 5, 6}, 4);
    REQUIRE_THROWS_WITH(call(q, k, v, o), Catch::Contains(op + ": bias of shape [3, 5, 6] does not broadcast to the "
                                                               "scores [B, H, Lq, Lk] = [2, 3, 4, 6]"));
    o = {};
    o.bias = rnd({1, 2, 3, 4, 6}, 4);
    REQUIRE_THROWS_WITH(call(q, k, v, o), Catch::Contains(op + ": bias of shape [1, 2, 3, 4, 6] does not broadcast"));
    o = {};
    o.mask = rnd({2, 1, 1, 6}, 5).set_requires_grad(true);
    REQUIRE_THROWS_WITH(call(q, k, v, o), Catch::Contains(op + ": the additive mask gets no gradient"));
    o = {};
    o.mask = rnd({2, 1, 1, 5}, 5);
    REQUIRE_THROWS_WITH(call(q, k, v, o), Catch::Contains(op + ": mask of shape [2, 1, 1, 5] does not broadcast"));
    o = {};
    o.allowed = ones<uint8_t>({2, 4, 6});
    REQUIRE_THROWS_WITH(call(q, k, v, o), Catch::Contains(op + ": allowed of shape [2, 4, 6] does not broadcast"));
    o = {};
    o.key_lengths = from_vector<int64_t>({6, 6, 6});
    REQUIRE_THROWS_WITH(call(q, k, v, o), Catch::Contains(op + ": key_lengths must be [B] = [2], got [3]"));
    o.key_lengths = from_vector<int64_t>({6, 7});
    REQUIRE_THROWS_WITH(call(q, k, v, o), Catch::Contains(op + ": key_lengths[1] = 7 is outside [0, Lk = 6]"));
    o.key_lengths = from_vector<int64_t>({-1, 2});
    REQUIRE_THROWS_WITH(call(q, k, v, o), Catch::Contains(op + ": key_lengths[0] = -1 is outside"));
    o = {};
    o.dropout_p = 1.5;
    REQUIRE_THROWS_WITH(call(q, k, v, o), Catch::Contains(op + ": drop probability p must be in [0, 1], got 1.5"));
  }
}

// ---------------------------------------------------------------- nn::MultiHeadAttention
TEST_CASE("MultiHeadAttention: Hugging Face names and shapes", "[attention][nn]") {
  nn::MultiHeadAttentionConfig cfg;
  cfg.embed_dim = 12, cfg.num_heads = 3;
  nn::MultiHeadAttention<float> with_bias(cfg);
  std::vector<std::string> names;
  for (auto& [n, p] : with_bias.named_parameters()) names.push_back(n + shape_str(p.shape()));
  REQUIRE(names == std::vector<std::string>{"q.weight[12, 12]", "q.bias[12]", "k.weight[12, 12]", "k.bias[12]",
                                            "v.weight[12, 12]", "v.bias[12]", "o.weight[12, 12]", "o.bias[12]"});
  // T5 style: no biases, head width set apart, cross-attention from a wider memory
  cfg.bias = false, cfg.head_dim = 5, cfg.kv_dim = 7;
  nn::MultiHeadAttention<float> t5(cfg);
  names.clear();
  for (auto& [n, p] : t5.named_parameters()) names.push_back(n + shape_str(p.shape()));
  REQUIRE(names ==
          std::vector<std::string>{"q.weight[15, 12]", "k.weight[15, 7]", "v.weight[15, 7]", "o.weight[12, 15]"});
  Generator g(3);
  auto x = randn<float>({2, 4, 12}, g), mem = randn<float>({2, 6, 7}, g);
  REQUIRE(t5.forward(x, mem).shape() == Shape{2, 4, 12});
  REQUIRE_THROWS_WITH(t5.forward(x),
                      Catch::Contains("MultiHeadAttention: memory of shape [2, 4, 12] is not [2, L, 7]"));
  REQUIRE_THROWS_WITH(t5.forward(randn<float>({2, 4, 11}, g), mem),
                      Catch::Contains("MultiHeadAttention: input of shape [2, 4, 11] is not [B, L, 12]"));
  nn::MultiHeadAttentionConfig bad;
  bad.embed_dim = 10, bad.num_heads = 3;
  REQUIRE_THROWS_WITH(nn::MultiHeadAttention<float>(bad),
                      Catch::Contains("MultiHeadAttention: embed_dim 10 is not divisible by num_heads 3"));
}

TEST_CASE("MultiHeadAttention: equals its own composition; fused and reference agree", "[attention][nn]") {
  nn::MultiHeadAttentionConfig cfg;
  cfg.embed_dim = 8, cfg.num_heads = 2, cfg.dropout = 0.3;
  Generator init(11);
  nn::MultiHeadAttention<double> mha(cfg, init);
  const int64_t B = 2, L = 5;
  auto x = rnd({B, L, 8}, 1);
  AttentionOptions<double> o;
  o.key_lengths = from_vector<int64_t>({5, 3});
  o.causal = true;
  o.bias = rnd({2, L, L}, 2).set_requires_grad(true);  // a trained position bias
  mha.eval();
  // By hand: project, split heads, attend, merge, project.
  auto split = [&](const TD& t) { return t.reshape({B, L, 2, 4}).permute({0, 2, 1, 3}); };
  auto expect = linear(attention_reference(split(linear(x, mha.q->weight, mha.q->bias)),
                                           split(linear(x, mha.k->weight, mha.k->bias)),
                                           split(linear(x, mha.v->weight, mha.v->bias)), o)
                           .permute({0, 2, 1, 3})
                           .reshape({B, L, 8}),
                       mha.o->weight, mha.o->bias);
  REQUIRE(rel_err(mha.forward(x, o), expect.detach()) <= 1e-12);

  // Training mode: dropout from the module's generator; fused and reference give the same
  // outputs and gradients for every parameter and for the bias.
  mha.train();
  std::vector<std::vector<TD>> grads;
  std::vector<TD> outs;
  for (bool fused : {true, false}) {
    mha.set_fused(fused);
    mha.zero_grad();
    o.bias.zero_grad();
    Generator gen(7);
    mha.set_generator(&gen);
    auto y = mha.forward(x, o);
    REQUIRE(gen.offset() == static_cast<uint64_t>(B * 2 * L * L));
    y.backward(rnd({B, L, 8}, 3));
    outs.push_back(y.detach());
    std::vector<TD> gs{o.bias.grad()};
    for (auto& [n, p] : mha.named_parameters()) gs.push_back(p.grad());
    grads.push_back(gs);
  }
  mha.set_generator(nullptr);
  REQUIRE(rel_err(outs[0], outs[1]) <= 1e-12);
  REQUIRE(grads[0].size() == 9);
  for (size_t i = 0; i < grads[0].size(); ++i) {
    INFO("gradient " << i);
    REQUIRE(rel_err(grads[0][i], grads[1][i]) <= 1e-12);
  }
  // Evaluation draws no dropout.
  mha.eval();
  Generator gen(7);
  mha.set_generator(&gen);
  mha.forward(x, o);
  REQUIRE(gen.offset() == 0);
  mha.set_generator(nullptr);
}

TEST_CASE("MultiHeadAttention: gradients match finite differences", "[attention][nn][grad]") {
  nn::MultiHeadAttentionConfig cfg;
  cfg.embed_dim = 6, cfg.num_heads = 2, cfg.kv_dim = 5, cfg.scale = 1.0;
  Generator init(5);
  nn::MultiHeadAttention<double> mha(cfg, init);
  AttentionOptions<double> o;
  o.key_lengths = from_vector<int64_t>({4, 2});
  REQUIRE_GRAD([&](auto& in) { return mha.forward(in[0], in[1], o); }, rnd({2, 3, 6}, 1), rnd({2, 4, 5}, 2));
}

// The vector exp of the fused kernels (vec::vexp at 8 lanes, and 16 on AVX-512) against std::exp, through
// exp_sub over lengths that reach every vector width and the scalar tail; then one online-softmax
// step of a whole tile (softmax_step) against its scalar rule (softmax_row_step).
TEST_CASE("attention: the kernels' vectorised exp and softmax step match the scalar rules", "[attention]") {
  using detail::attn::kExpFloor;
  constexpr float kInf = std::numeric_limits<float>::infinity();
  Generator g(31);
  for (int64_t n : {1, 7, 8, 15, 16, 17, 37, 64}) {
    INFO("n = " << n);
    auto x = rand_uniform<float>({n}, g, -100.0, 20.0);
    std::vector<float> v(x.data(), x.data() + n);
    v[0] = -kInf;  // a hidden key
    if (n > 2) v[n - 1] = kExpFloor<float> - 0.01f;  // just under the floor: exactly 0
    if (n > 3) v[n - 2] = kExpFloor<float> + 0.5f;   // just above it: a normal number
    std::vector<float> y = v;
    detail::attn::exp_sub(y.data(), 3.0f, n);
    for (int64_t i = 0; i < n; ++i) {
      const double want = double(v[i]) - 3.0 < kExpFloor<float> ? 0.0 : std::exp(double(v[i] - 3.0f));
      INFO("x = " << v[i]);
      if (want == 0.0) {
        REQUIRE(y[i] == 0.0f);
      } else {
        REQUIRE(std::isnormal(y[i]));
        REQUIRE(std::abs(y[i] - want) <= 3e-7 * want);  // about 2 ulp
      }
    }
    std::vector<float> nan(static_cast<size_t>(n), std::numeric_limits<float>::quiet_NaN());
    detail::attn::exp_sub(nan.data(), 0.0f, n);
    for (float e : nan) REQUIRE(std::isnan(e));
  }
  // A forward tile of 40 rows (two panels and a half) by 37 keys, in the panel layout, with some
  // rows whose running max moves, some whose max stays, and one row with nothing visible.
  const int64_t rows = 40, cols = 37, panel = 16 * cols;
  auto s0 = rand_uniform<float>({3 * panel}, g, -5.0, 5.0);
  std::vector<float> s(s0.data(), s0.data() + 3 * panel), ref = s;
  std::vector<float> m(rows), l(rows), alpha(rows), mr(rows), lr(rows);
  auto at = [&](std::vector<float>& t, int64_t i, int64_t j) -> float& { return t[(i / 16) * panel + i % 16 + j * 16]; };
  for (int64_t i = 0; i < rows; ++i) {
    m[i] = mr[i] = i % 3 == 0 ? -kInf : i % 3 == 1 ? 10.0f : 1.0f;
    l[i] = lr[i] = i % 3 == 0 ? 0.0f : 2.5f;
  }
  for (int64_t j = 0; j < cols; ++j) at(s, 21, j) = at(ref, 21, j) = -kInf;
  m[21] = mr[21] = -kInf;
  l[21] = lr[21] = 0.0f;
  const bool rescale = detail::attn::softmax_step(s.data(), rows, cols, panel, 16, m.data(), l.data(), alpha.data());
  bool any_moved = false;
  for (int64_t i = 0; i < rows; ++i) {
    INFO("row " << i);
    float mi = mr[i], li = lr[i];
    const float a = detail::attn::softmax_row_step(&at(ref, i, 0), 16, cols, mi, li);
    any_moved = any_moved || a != 1.0f;
    REQUIRE(m[i] == mi);
    REQUIRE(std::abs(alpha[i] - a) <= 3e-7f * std::abs(a));
    REQUIRE(std::abs(l[i] - li) <= 1e-6f * std::abs(li));
    for (int64_t j = 0; j < cols; ++j) REQUIRE(std::abs(at(s, i, j) - at(ref, i, j)) <= 3e-7f * std::abs(at(ref, i, j)) + 1e-30f);
  }
  REQUIRE(any_moved);
  REQUIRE(rescale == any_moved);
  REQUIRE(m[21] == -kInf);
  REQUIRE(l[21] == 0.0f);
  REQUIRE(alpha[21] == 1.0f);
}
