// The fused Transformer-XL / XLNet relative attention (ops/relative_attention_fused.hpp) against its
// reference composition and finite differences, for every variant XLNet uses (memory, "bi" and
// "uni" position encodings, segments as ids or HF's seg_mat, the content and query streams'
// masks, rows that see no key, dropout, shared or per-sequence position keys), on tiles small
// enough to cross many block edges; nn::XLNetRelativeAttention with the fused core on and off,
// including the Hugging Face parity fixtures.
#include <cmath>
#include <string>
#include <vector>

#include "test_attention_relpos_fixture.hpp"
#include "txtcls/nn/relative_attention.hpp"
#include "txtcls/ops/relative_attention_fused.hpp"

// In a namespace of its own: test files are compiled several to a unit (TXTCLS_UNITY_BUILD).
namespace test_attention_relfused {

using namespace txtcls;
using namespace tt;

namespace {

// One configuration of the op: XLNet's shapes and masks, instantiated for float or double.
struct Case {
  std::string name;
  int64_t B = 2, H = 3, qlen = 5, mlen = 0, D = 6, Dv = 6;
  XLNetAttnType type = XLNetAttnType::Bi;
  int64_t extra_positions = 0;  // rows of k_r beyond what XLNet builds (never read)
  bool shared_kr = true;        // k_r [1, H, P, D] (one encoding) or [B, H, P, D] (bi_data)
  enum Seg { NoSeg, Ids, SegMat, SoftSegMat } seg = NoSeg;  // SoftSegMat: seg_mat of arbitrary weights
  bool mask = false;            // xlnet_attention_masks (always for "uni" with mask_uni)
  bool same_length = false;
  bool padding = false;         // input_mask: the last key of batch 1 is padding
  bool perm = false;            // a perm_mask
  bool query_stream = false;    // the g mask (perm_mask applies to the query itself) instead of h
  bool empty_row = false;       // the perm mask hides every key of query 1 of batch 0 (query stream)
  bool causal = false;          // the op's causal flag
  double dropout = 0;
  bool strided = false;         // heads as permuted views of [B, L, H, D], v with strided rows
  int64_t bq = 0, bk = 0;

  int64_t klen() const { return mlen + qlen; }
  int64_t P() const { return xlnet_num_relative_positions(qlen, klen(), type) + extra_positions; }
  Case with_blocks(int64_t q, int64_t k) const {
    Case c = *this;
    c.bq = q, c.bk = k;
    return c;
  }
  std::string label() const {
    return name + " [B " + std::to_string(B) + ", H " + std::to_string(H) + ", qlen " + std::to_string(qlen) +
           ", mlen " + std::to_string(mlen) + ", D " + std::to_string(D) + ", Dv " + std::to_string(Dv) + "] blocks " +
           std::to_string(bq) + "x" + std::to_string(bk);
  }
};

// The double inputs of a case and a fixed upstream gradient.
struct Inputs {
  TD q, k, v, kr, rw, rr, rs, se, seg_mat, gout;
  Tensor<int64_t> seg_q, seg_k;
  Tensor<uint8_t> mask;
};

Tensor<int64_t> token_types(const Case& c) {
  std::vector<int64_t> ids;
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t i = 0; i < c.qlen; ++i) ids.push_back(((i * 2 + b) / 3 + b) % 2);  // batch 1 starts in segment 1
  return from_vector<int64_t>(ids, {c.B, c.qlen});
}

Inputs make_inputs(const Case& c) {
  Inputs in;
  const int64_t Lk = c.klen();
  in.q = rnd({c.B, c.H, c.qlen, c.D}, 1, -1.5, 1.5);
  in.k = rnd({c.B, c.H, Lk, c.D}, 2, -1.5, 1.5);
  in.v = rnd({c.B, c.H, Lk, c.Dv}, 3);
  in.kr = rnd({c.shared_kr ? 1 : c.B, c.H, c.P(), c.D}, 4, -1.5, 1.5);
  in.rw = rnd({c.H, c.D}, 5, -0.5, 0.5);
  in.rr = rnd({c.H, c.D}, 6, -0.5, 0.5);
  in.gout = rnd({c.B, c.H, c.qlen, c.Dv}, 7);
  if (c.seg != Case::NoSeg) {
    in.rs = rnd({c.H, c.D}, 8, -0.5, 0.5);
    in.se = rnd({2, c.H, c.D}, 9, -1.0, 1.0);
    const Tensor<int64_t> types = token_types(c);
    if (c.seg == Case::SegMat) {
      in.seg_mat = nn::xlnet_segment_matrix<double>(types, c.mlen);
    } else if (c.seg == Case::SoftSegMat) {  // not a one-hot: the kernels read the weights themselves
      in.seg_mat = rnd({c.B, c.qlen, c.klen(), 2}, 10, -1.0, 1.0);
    } else {  // XLNet's ids: memory positions are segment 0
      in.seg_q = types;
      in.seg_k = concat({zeros<int64_t>({c.B, c.mlen}), types}, 1);
    }
  }
  if (c.mask || c.padding || c.perm || c.empty_row) {
    Tensor<uint8_t> input_mask, perm;
    if (c.padding) {
      input_mask = zeros<uint8_t>({c.B, c.qlen});
      input_mask.set({c.B - 1, c.qlen - 1}, 1);
    }
    if (c.perm || c.empty_row) {
      perm = zeros<uint8_t>({c.B, c.qlen, c.qlen});
      if (c.perm)
        for (int64_t b = 0; b < c.B; ++b)
          for (int64_t i = 0; i < c.qlen; ++i)
            for (int64_t j = 0; j < c.qlen; ++j) perm.set({b, i, j}, (i * 5 + j * 3 + b) % 3 == 0 ? 1 : 0);
      if (c.empty_row)
        for (int64_t j = 0; j < c.qlen; ++j) perm.set({0, 1, j}, 1);
    }
    auto masks = nn::xlnet_attention_masks(c.qlen, c.mlen, c.type, c.same_length, input_mask, perm);
    in.mask = c.query_stream ? masks.g : masks.h;
  }
  return in;
}

template <class T>
RelativeAttentionOptions<T> options(const Case& c, const Inputs& in, const Tensor<T>& rs, const Tensor<T>& se,
                                    Generator* gen, Tensor<T>* probs) {
  RelativeAttentionOptions<T> o;
  if (c.seg != Case::NoSeg) {
    o.r_s_bias = rs;
    o.seg_embed = se;
    if (c.seg != Case::Ids) o.seg_mat = cast<T>(in.seg_mat);
    else o.seg_q = in.seg_q, o.seg_k = in.seg_k;
  }
  o.mask = in.mask;
  o.causal = c.causal;
  o.dropout_p = c.dropout;
  o.generator = gen;
  o.block_q = c.bq, o.block_k = c.bk;
  o.probs = probs;
  return o;
}

template <class T>
struct Result {
  Tensor<T> out, probs;
  std::vector<Tensor<T>> grads;  // q, k, v, k_r, r_w_bias, r_r_bias[, r_s_bias, seg_embed]
};

// Forward and backward of one path in precision T.
template <class T>
Result<T> run(const Case& c, const Inputs& in, bool fused) {
  auto leaf = [](const TD& x) { return x.defined() ? cast<T>(x).set_requires_grad(true) : Tensor<T>(); };
  std::vector<Tensor<T>> x{leaf(in.q), leaf(in.k), leaf(in.v), leaf(in.kr), leaf(in.rw), leaf(in.rr)};
  if (c.seg != Case::NoSeg) x.insert(x.end(), {leaf(in.rs), leaf(in.se)});
  Tensor<T> q = x[0], k = x[1], v = x[2], kr = x[3];
  if (c.strided) {  // the layer's heads: [B, L, H, D] projections seen as [B, H, L, D]
    q = q.permute({0, 2, 1, 3}).contiguous().permute({0, 2, 1, 3});
    k = k.permute({0, 2, 1, 3}).contiguous().permute({0, 2, 1, 3});
    kr = kr.permute({0, 2, 1, 3}).contiguous().permute({0, 2, 1, 3});
    v = v.transpose(2, 3).contiguous().transpose(2, 3);
    REQUIRE(!q.is_contiguous());
    REQUIRE(v.stride(3) != 1);
  }
  Generator gen(99);
  Result<T> r;
  const auto o = options<T>(c, in, c.seg != Case::NoSeg ? x[6] : Tensor<T>(), c.seg != Case::NoSeg ? x[7] : Tensor<T>(),
                            &gen, &r.probs);
  Tensor<T> out = fused ? relative_attention(q, k, v, kr, x[4], x[5], o)
                        : relative_attention_reference(q, k, v, kr, x[4], x[5], o);
  REQUIRE(gen.offset() == (c.dropout > 0 ? static_cast<uint64_t>(c.B * c.H * c.qlen * c.klen()) : 0));
  out.backward(cast<T>(in.gout));
  r.out = out.detach();
  for (auto& t : x) r.grads.push_back(t.grad());
  return r;
}

// max |a - b| / max |b|, requiring a finite and of b's shape. A reference that vanishes up to
// rounding (a gradient that is zero identically) is compared in absolute terms.
template <class T>
double rel_err(const Tensor<T>& a, const Tensor<T>& b) {
  REQUIRE(a.defined());
  REQUIRE(b.defined());
  REQUIRE(a.shape() == b.shape());
  const auto va = a.to_vector(), vb = b.to_vector();
  double err = 0, top = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    REQUIRE(std::isfinite(static_cast<double>(va[i])));
    err = std::max(err, std::abs(static_cast<double>(va[i]) - static_cast<double>(vb[i])));
    top = std::max(top, std::abs(static_cast<double>(vb[i])));
  }
  return top > 1e-6 ? err / top : err;
}

// The largest errors seen, per precision (printed with TXTCLS_PARITY_REPORT set).
struct Worst {
  double out = 0, grad = 0;
  const char* name;
  ~Worst() {
    if (std::getenv("TXTCLS_PARITY_REPORT"))
      std::cout << "relative_attention fused vs reference, " << name << ": outputs " << out << ", gradients " << grad
                << "\n";
  }
};
Worst worst_f64{0, 0, "double"}, worst_f32{0, 0, "float"};

const char* const kGradNames[] = {"q", "k", "v", "k_r", "r_w_bias", "r_r_bias", "r_s_bias", "seg_embed"};

template <class T>
void require_parity(const Case& c, double tol) {
  INFO(c.label() << (sizeof(T) == 4 ? " float" : " double"));
  const Inputs in = make_inputs(c);
  const Result<T> f = run<T>(c, in, true), r = run<T>(c, in, false);
  Worst& w = sizeof(T) == 4 ? worst_f32 : worst_f64;
  const double e_out = rel_err(f.out, r.out), e_probs = rel_err(f.probs, r.probs);
  CHECK(e_out <= tol);
  CHECK(e_probs <= tol);
  w.out = std::max({w.out, e_out, e_probs});
  REQUIRE(f.grads.size() == r.grads.size());
  REQUIRE(f.grads.size() == (c.seg != Case::NoSeg ? 8u : 6u));
  for (size_t i = 0; i < f.grads.size(); ++i) {
    INFO("gradient of " << kGradNames[i]);
    const double e = rel_err(f.grads[i], r.grads[i]);
    CHECK(e <= tol);
    w.grad = std::max(w.grad, e);
  }
}

// Every XLNet variant on small awkward sizes.
std::vector<Case> variants() {
  std::vector<Case> v;
  Case base;
  base.name = "bi, no memory, no segments";
  v.push_back(base);
  auto add = [&](const std::string& name, auto edit) {
    Case c = base;
    c.name = name;
    edit(c);
    v.push_back(c);
  };
  add("bi, memory 3, segment ids", [](Case& c) { c.mlen = 3, c.seg = Case::Ids; });
  add("bi, memory 3, seg_mat", [](Case& c) { c.mlen = 3, c.seg = Case::SegMat; });
  add("uni, memory 2, causal mask, segment ids",
      [](Case& c) { c.type = XLNetAttnType::Uni, c.mlen = 2, c.mask = true, c.seg = Case::Ids; });
  add("uni, memory 2, same_length", [](Case& c) { c.type = XLNetAttnType::Uni, c.mlen = 2, c.mask = c.same_length = true; });
  add("uni without a mask: the wrapped positions are read", [](Case& c) { c.type = XLNetAttnType::Uni, c.mlen = 2; });
  add("uni by the causal flag", [](Case& c) { c.type = XLNetAttnType::Uni, c.mlen = 3, c.causal = true; });
  add("bi, padding, memory 2", [](Case& c) { c.mlen = 2, c.padding = true, c.seg = Case::SegMat; });
  add("query stream: perm mask + padding, memory 1",
      [](Case& c) { c.mlen = 1, c.perm = c.padding = c.query_stream = true, c.seg = Case::Ids; });
  add("query stream: a query that sees no key", [](Case& c) { c.empty_row = c.query_stream = true, c.seg = Case::Ids; });
  add("uni query stream: an empty row reads wrapped positions",
      [](Case& c) { c.type = XLNetAttnType::Uni, c.empty_row = c.query_stream = true, c.seg = Case::SegMat; });
  add("position keys per sequence (bi_data)", [](Case& c) { c.mlen = 2, c.shared_kr = false, c.seg = Case::Ids; });
  add("dropout 0.3, uni, memory 2", [](Case& c) {
    c.type = XLNetAttnType::Uni, c.mlen = 2, c.mask = true, c.dropout = 0.3, c.seg = Case::Ids;
  });
  add("Lq = 1, memory 4", [](Case& c) { c.qlen = 1, c.mlen = 4, c.seg = Case::Ids; });
  add("Lq = 7, D = 9, Dv = 5, uni, memory 3",
      [](Case& c) { c.qlen = 7, c.mlen = 3, c.D = 9, c.Dv = 5, c.type = XLNetAttnType::Uni, c.mask = true; });
  add("strided views", [](Case& c) { c.mlen = 2, c.strided = true, c.seg = Case::SegMat; });
  add("seg_mat of arbitrary weights, uni, memory 2",
      [](Case& c) { c.type = XLNetAttnType::Uni, c.mlen = 2, c.mask = true, c.seg = Case::SoftSegMat; });
  add("more position rows than XLNet builds", [](Case& c) { c.mlen = 1, c.extra_positions = 3; });
  add("everything", [](Case& c) {
    c.type = XLNetAttnType::Uni, c.mlen = 2, c.same_length = c.padding = c.perm = c.query_stream = true;
    c.mask = true, c.dropout = 0.25, c.seg = Case::SegMat, c.shared_kr = false, c.strided = true;
  });
  add("everything but the perm mask (no empty row)", [](Case& c) {
    c.type = XLNetAttnType::Uni, c.mlen = 2, c.same_length = c.padding = c.query_stream = true;
    c.mask = true, c.dropout = 0.25, c.seg = Case::Ids, c.shared_kr = false, c.strided = true;
  });
  return v;
}

// Several default tiles, partial last tiles, D not a multiple of 8.
std::vector<Case> large_variants() {
  std::vector<Case> v;
  Case c;
  c.B = 2, c.H = 2, c.D = 16, c.Dv = 16;
  c.name = "large: Lq 33, memory 17, bi, segment ids, padding";
  c.qlen = 33, c.mlen = 17, c.seg = Case::Ids, c.padding = true;
  v.push_back(c);
  c = Case{};
  c.B = 2, c.H = 2, c.D = 16, c.Dv = 12;
  c.name = "large: Lq 130, memory 65, uni mask, seg_mat, dropout 0.1";
  c.qlen = 130, c.mlen = 65, c.type = XLNetAttnType::Uni, c.mask = true, c.seg = Case::SegMat, c.dropout = 0.1;
  v.push_back(c);
  c = Case{};
  c.B = 2, c.H = 2, c.D = 20, c.Dv = 20;
  c.name = "large: Lq 130, bi query stream, perm mask and an empty row, per-sequence k_r";
  c.qlen = 130, c.perm = c.empty_row = c.query_stream = true, c.shared_kr = false, c.seg = Case::Ids;
  v.push_back(c);
  c = Case{};
  c.B = 1, c.H = 2, c.D = 8, c.Dv = 8;
  c.name = "large: Lq 70, memory 60, bi, seg_mat of arbitrary weights, padding";
  c.qlen = 70, c.mlen = 60, c.seg = Case::SoftSegMat, c.padding = true;
  v.push_back(c);
  return v;
}

}  // namespace

TEST_CASE("relative_attention: fused and reference agree, outputs and every gradient", "[attention][relfused]") {
  for (const Case& c : variants())
    for (const Case& cb : {c, c.with_blocks(2, 3), c.with_blocks(3, 2), c.with_blocks(1, 4)}) {
      require_parity<double>(cb, 1e-12);
      require_parity<float>(cb, 1e-5);
    }
}

TEST_CASE("relative_attention: fused and reference agree on several tiles", "[attention][relfused]") {
  for (const Case& c : large_variants())
    for (const Case& cb : {c, c.with_blocks(16, 48), c.with_blocks(7, 33)}) {
      require_parity<double>(cb, 1e-12);
      require_parity<float>(cb, 1e-5);
    }
}

// Whether some query hides every key (HF's scores of such a row are constant, so its gradient is
// not their derivative and finite differences do not apply).
bool has_empty_row(const Case& c, const Tensor<uint8_t>& mask) {
  if (!mask.defined()) return false;
  for (int64_t b = 0; b < mask.size(0); ++b)
    for (int64_t i = 0; i < c.qlen; ++i) {
      bool all = true;
      for (int64_t j = 0; j < c.klen(); ++j) all = all && mask.at({b, 0, i, j}) != 0;
      if (all) return true;
    }
  return false;
}

TEST_CASE("relative_attention: gradients match finite differences", "[attention][relfused][grad]") {
  int checked = 0;
  for (Case c : variants()) {
    c.B = 2, c.H = 2, c.D = std::min<int64_t>(c.D, 3), c.Dv = std::min<int64_t>(c.Dv, 3);
    c.bq = 2, c.bk = 3;
    const Inputs in = make_inputs(c);
    if (has_empty_row(c, in.mask)) continue;
    ++checked;
    for (bool fused : {true, false}) {
      INFO(c.label() << (fused ? " fused" : " reference"));
      auto f = [&](const std::vector<TD>& x) {
        Generator gen(99);
        RelativeAttentionOptions<double> o =
            options<double>(c, in, x.size() > 6 ? x[6] : TD(), x.size() > 6 ? x[7] : TD(), &gen, nullptr);
        return fused ? relative_attention(x[0], x[1], x[2], x[3], x[4], x[5], o)
                     : relative_attention_reference(x[0], x[1], x[2], x[3], x[4], x[5], o);
      };
      std::vector<TD> xs{in.q, in.k, in.v, in.kr, in.rw, in.rr};
      if (c.seg != Case::NoSeg) xs.insert(xs.end(), {in.rs, in.se});
      const auto res = txtcls::testing::gradcheck(f, xs);
      INFO("gradcheck: " << res.where << " (max abs err " << res.max_abs_err << ")");
      REQUIRE(res.ok);
    }
  }
  REQUIRE(checked >= 17);
}

TEST_CASE("relative_attention: hand-worked position and segment terms", "[attention][relfused]") {
  // One head, D = 1, q = 0 except the biases: every score is a bias times a key, so the rows'
  // softmax weights are known in closed form. qlen 2, no memory, "bi": P = 4, distances 2, 1, 0, -1.
  const TD q = zeros<double>({1, 1, 2, 1}), k = from_vector<double>({0.5, -1.0}, {1, 1, 2, 1});
  const TD v = from_vector<double>({3.0, -2.0}, {1, 1, 2, 1});
  const TD kr = from_vector<double>({10, 20, 30, 40}, {1, 1, 4, 1});
  const TD rw = from_vector<double>({2.0}, {1, 1}), rr = from_vector<double>({0.01}, {1, 1});
  RelativeAttentionOptions<double> o;
  o.scale = 1.0;
  o.r_s_bias = from_vector<double>({1.0}, {1, 1});
  o.seg_embed = from_vector<double>({0.25, -0.75}, {2, 1, 1});
  o.seg_q = from_vector<int64_t>({0, 1}, {1, 2});
  o.seg_k = from_vector<int64_t>({0, 1}, {1, 2});
  // query i, key j reads kr[2 - i + j]: (0,0) 30, (0,1) 40, (1,0) 20, (1,1) 30; segments: same on the diagonal
  auto expect = [&](int64_t i) {
    double s[2];
    for (int64_t j = 0; j < 2; ++j) {
      const double ac = 2.0 * k.at({0, 0, j, 0}), bd = 0.01 * kr.at({0, 0, 2 - i + j, 0});
      const double ef = (i == j) ? 0.25 : -0.75;
      s[j] = ac + bd + ef;
    }
    const double w0 = 1.0 / (1.0 + std::exp(s[1] - s[0]));
    return 3.0 * w0 - 2.0 * (1 - w0);
  };
  for (bool fused : {true, false}) {
    INFO((fused ? "fused" : "reference"));
    auto out = fused ? relative_attention(q, k, v, kr, rw, rr, o) : relative_attention_reference(q, k, v, kr, rw, rr, o);
    REQUIRE(std::abs(out.at({0, 0, 0, 0}) - expect(0)) < 1e-14);
    REQUIRE(std::abs(out.at({0, 0, 1, 0}) - expect(1)) < 1e-14);
  }
  // "uni" with P = klen + 1 = 3 and no mask: query 0, key 1 reads column 2 - 0 + 1 = 3 = P, i.e.
  // HF's reshape continues into row 1 at column 0: (q_1 + r_r_bias) . kr[0].
  const TD q2 = from_vector<double>({0.0, 5.0}, {1, 1, 2, 1}), kr3 = kr.slice(2, 0, 3);
  RelativeAttentionOptions<double> u;
  u.scale = 1.0;
  TD probs;
  u.probs = &probs;
  relative_attention(q2, zeros<double>({1, 1, 2, 1}), v, kr3, rw, rr, u);
  const double s00 = 0.01 * 30, s01 = 5.01 * 10;
  REQUIRE(std::abs(probs.at({0, 0, 0, 1}) - 1.0 / (1.0 + std::exp(s00 - s01))) < 1e-14);
}

TEST_CASE("relative_attention: XLNet's seg_mat is read as segment ids", "[attention][relfused]") {
  Case c;
  c.qlen = 6, c.mlen = 3;
  const Tensor<int64_t> types = token_types(c);
  const TD seg = nn::xlnet_segment_matrix<double>(types, c.mlen);
  Tensor<int64_t> sq, sk;
  REQUIRE(detail::segment_ids_of(seg, sq, sk));
  // the ids reproduce the matrix (they may be the flip of token_types: the same matrix)
  REQUIRE(detail::segment_weights<double>(sq, sk).to_vector() == seg.to_vector());
  TD other = seg.clone();
  other.set({1, 2, 4, 0}, 0.5);  // not a one-hot
  REQUIRE(!detail::segment_ids_of(other, sq, sk));
  other = seg.clone();  // one-hot, but no ids give it: query 0 differs from key 0 only
  other.set({0, 0, 0, 0}, 1 - seg.at({0, 0, 0, 0}));
  other.set({0, 0, 0, 1}, 1 - seg.at({0, 0, 0, 1}));
  REQUIRE(!detail::segment_ids_of(other, sq, sk));
}

TEST_CASE("relative_attention: a row that sees no key is uniform, as in HF", "[attention][relfused]") {
  Case c;
  c.name = "empty row";
  c.empty_row = c.query_stream = true, c.mlen = 0, c.bq = 2, c.bk = 2;
  const Inputs in = make_inputs(c);
  REQUIRE(in.mask.at({0, 0, 1, 0}) != 0);
  for (bool fused : {true, false}) {
    INFO((fused ? "fused" : "reference"));
    const Result<double> r = run<double>(c, in, fused);
    for (int64_t h = 0; h < c.H; ++h) {
      for (int64_t j = 0; j < c.klen(); ++j) REQUIRE(std::abs(r.probs.at({0, h, 1, j}) - 1.0 / c.klen()) < 1e-15);
      for (int64_t d = 0; d < c.Dv; ++d) {
        double mean = 0;
        for (int64_t j = 0; j < c.klen(); ++j) mean += in.v.at({0, h, j, d}) / c.klen();
        REQUIRE(std::abs(r.out.at({0, h, 1, d}) - mean) < 1e-14);
      }
    }
    // hidden keys of the other rows get exactly zero (the reference: zero or a denormal)
    for (int64_t i = 0; i < c.qlen; ++i)
      for (int64_t j = 0; j < c.klen(); ++j)
        if (i != 1 && in.mask.at({0, 0, i, j})) REQUIRE(r.probs.at({0, 0, i, j}) <= 1e-300);
  }
}

TEST_CASE("relative_attention: dropout draws the documented mask", "[attention][relfused][dropout]") {
  // v = identity over keys: out[b, h, i, j] = prob[i, j] * factor(b, h, i, j).
  const int64_t B = 2, H = 2, qlen = 5, mlen = 4, Lk = mlen + qlen, D = 4;
  const double p = 0.35;
  const TD q = rnd({B, H, qlen, D}, 1), k = rnd({B, H, Lk, D}, 2), kr = rnd({1, H, Lk + qlen, D}, 3);
  const TD rw = rnd({H, D}, 4), rr = rnd({H, D}, 5);
  TD v = zeros<double>({B, H, Lk, Lk});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t j = 0; j < Lk; ++j) v.set({b, h, j, j}, 1.0);
  const auto masks = nn::xlnet_attention_masks(qlen, mlen, XLNetAttnType::Uni);
  RelativeAttentionOptions<double> plain;
  plain.mask = masks.h;
  TD probs;
  plain.probs = &probs;
  relative_attention_reference(q, k, v, kr, rw, rr, plain);
  for (bool fused : {true, false}) {
    INFO((fused ? "fused" : "reference"));
    Generator gen(1234);
    gen.reserve(77);  // start mid-stream
    const uint64_t base = gen.offset();
    RelativeAttentionOptions<double> o;
    o.mask = masks.h;
    o.dropout_p = p;
    o.generator = &gen;
    o.block_q = 2, o.block_k = 3;
    TD dropped;
    o.probs = &dropped;
    auto out = fused ? relative_attention(q, k, v, kr, rw, rr, o) : relative_attention_reference(q, k, v, kr, rw, rr, o);
    REQUIRE(gen.offset() == base + static_cast<uint64_t>(B * H * qlen * Lk));
    int64_t kept = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < qlen; ++i)
          for (int64_t j = 0; j < Lk; ++j) {
            const uint64_t index = static_cast<uint64_t>(((b * H + h) * qlen + i) * Lk + j);
            const bool keep = philox_uniform(1234, base, index) >= p;
            const double expect = keep ? probs.at({b, h, i, j}) / (1 - p) : 0.0;
            REQUIRE(std::abs(out.at({b, h, i, j}) - expect) < 1e-14);
            REQUIRE(std::abs(dropped.at({b, h, i, j}) - expect) < 1e-14);
            kept += keep;
          }
    REQUIRE(kept > 0);
    REQUIRE(kept < B * H * qlen * Lk);
  }
}

TEST_CASE("relative_attention: results do not depend on the thread count", "[attention][relfused]") {
  const int prev = num_threads();
  for (bool shared : {true, false}) {
    Case c;
    c.name = shared ? "shared k_r" : "k_r per sequence";
    c.B = 3, c.H = 4, c.qlen = 40, c.mlen = 20, c.D = 8, c.Dv = 8, c.shared_kr = shared;
    c.type = XLNetAttnType::Uni, c.mask = c.padding = true, c.seg = Case::Ids, c.dropout = 0.2, c.bq = 16, c.bk = 16;
    INFO(c.name);
    const Inputs in = make_inputs(c);
    set_num_threads(1);
    const Result<double> one = run<double>(c, in, true);
    for (int t : {2, 3}) {
      set_num_threads(t);
      const Result<double> many = run<double>(c, in, true);
      REQUIRE(many.out.to_vector() == one.out.to_vector());
      for (size_t i = 0; i < one.grads.size(); ++i) {
        INFO("gradient of " << kGradNames[i]);
        REQUIRE(many.grads[i].to_vector() == one.grads[i].to_vector());
      }
    }
    set_num_threads(prev);
    require_parity<double>(c, 1e-12);
  }
}

TEST_CASE("relative_attention: empty sizes", "[attention][relfused]") {
  for (bool fused : {true, false}) {
    INFO((fused ? "fused" : "reference"));
    auto call = [fused](const TD& q, const TD& k, const TD& v, const TD& kr) {
      const TD rw = zeros<double>({2, 4}), rr = zeros<double>({2, 4});
      return fused ? relative_attention(q, k, v, kr, rw, rr) : relative_attention_reference(q, k, v, kr, rw, rr);
    };
    REQUIRE(call(zeros<double>({0, 2, 3, 4}), zeros<double>({0, 2, 3, 4}), zeros<double>({0, 2, 3, 5}),
                 zeros<double>({1, 2, 6, 4}))
                .shape() == Shape{0, 2, 3, 5});
    REQUIRE(call(zeros<double>({1, 2, 0, 4}), rnd({1, 2, 3, 4}, 1), rnd({1, 2, 3, 5}, 2), rnd({1, 2, 4, 4}, 3)).shape() ==
            Shape{1, 2, 0, 5});
  }
}

TEST_CASE("relative_attention: errors name the op and the shapes", "[attention][relfused]") {
  const TD q = rnd({2, 3, 4, 5}, 1), k = rnd({2, 3, 6, 5}, 2), v = rnd({2, 3, 6, 7}, 3), kr = rnd({1, 3, 10, 5}, 4);
  const TD rw = rnd({3, 5}, 5), rr = rnd({3, 5}, 6);
  for (bool fused : {true, false}) {
    const std::string op = fused ? "relative_attention" : "relative_attention_reference";
    auto call = [fused](const TD& a, const TD& b, const TD& c, const TD& r, const TD& w, const TD& x,
                        const RelativeAttentionOptions<double>& o = {}) {
      return fused ? relative_attention(a, b, c, r, w, x, o) : relative_attention_reference(a, b, c, r, w, x, o);
    };
    REQUIRE_THROWS_WITH(call(rnd({3, 4, 5}, 1), k, v, kr, rw, rr),
                        Catch::Contains(op + ": q, k, v must be [B, H, L, D], got [3, 4, 5], [2, 3, 6, 5], [2, 3, 6, 7]"));
    REQUIRE_THROWS_WITH(call(q, rnd({2, 3, 6, 4}, 2), v, kr, rw, rr),
                        Catch::Contains(op + ": k [2, 3, 6, 4] does not match q [2, 3, 4, 5] (expected [2, 3, Lk, 5])"));
    REQUIRE_THROWS_WITH(call(q, k, rnd({2, 3, 5, 7}, 3), kr, rw, rr),
                        Catch::Contains(op + ": v [2, 3, 5, 7] does not match k [2, 3, 6, 5]"));
    REQUIRE_THROWS_WITH(call(q, k, v, rnd({1, 3, 6, 5}, 4), rw, rr),
                        Catch::Contains(op + ": k_r [1, 3, 6, 5] does not fit k [2, 3, 6, 5] (expected [1 or 2, 3, "
                                             "P >= Lk + 1 = 7, 5])"));
    REQUIRE_THROWS_WITH(call(q, k, v, rnd({3, 3, 10, 5}, 4), rw, rr), Catch::Contains(op + ": k_r [3, 3, 10, 5] does not fit"));
    REQUIRE_THROWS_WITH(call(q, k, v, kr, rnd({5, 3}, 5), rr),
                        Catch::Contains(op + ": r_w_bias must be [H, D] = [3, 5], got [5, 3]"));
    REQUIRE_THROWS_WITH(call(q, k, v, kr, rw, TD()), Catch::Contains(op + ": r_r_bias must be [H, D] = [3, 5], got (undefined)"));
    RelativeAttentionOptions<double> o;
    o.seg_embed = rnd({2, 3, 5}, 7);
    REQUIRE_THROWS_WITH(call(q, k, v, kr, rw, rr, o), Catch::Contains(op + ": the segment term needs both seg_embed"));
    o.r_s_bias = rnd({3, 5}, 8);
    REQUIRE_THROWS_WITH(call(q, k, v, kr, rw, rr, o), Catch::Contains(op + ": the segment term takes segment ids"));
    o.seg_q = zeros<int64_t>({2, 4});
    REQUIRE_THROWS_WITH(call(q, k, v, kr, rw, rr, o), Catch::Contains(op + ": pass both seg_q [B, Lq] and seg_k [B, Lk]"));
    o.seg_k = zeros<int64_t>({2, 5});
    REQUIRE_THROWS_WITH(call(q, k, v, kr, rw, rr, o), Catch::Contains(op + ": seg_k must be [B, Lk] = [2, 6], got [2, 5]"));
    o.seg_q = {}, o.seg_k = {};
    o.seg_mat = zeros<double>({2, 4, 5, 2});
    REQUIRE_THROWS_WITH(call(q, k, v, kr, rw, rr, o),
                        Catch::Contains(op + ": seg_mat must be [B, Lq, Lk, 2] = [2, 4, 6, 2], got [2, 4, 5, 2]"));
    o.seg_mat = zeros<double>({2, 4, 6, 2});
    o.seg_embed = rnd({3, 5}, 7);
    REQUIRE_THROWS_WITH(call(q, k, v, kr, rw, rr, o), Catch::Contains(op + ": seg_embed must be [2, H, D] = [2, 3, 5], got [3, 5]"));
    o = {};
    o.mask = zeros<uint8_t>({2, 1, 4, 5});
    REQUIRE_THROWS_WITH(call(q, k, v, kr, rw, rr, o),
                        Catch::Contains(op + ": mask of shape [2, 1, 4, 5] does not broadcast to the scores [B, H, Lq, Lk] "
                                             "= [2, 3, 4, 6]"));
    o = {};
    o.dropout_p = 1.5;
    REQUIRE_THROWS_WITH(call(q, k, v, kr, rw, rr, o), Catch::Contains(op + ": drop probability p must be in [0, 1], got 1.5"));
  }
}

// ---------------------------------------------------------------- nn::XLNetRelativeAttention
namespace {

std::shared_ptr<nn::XLNetRelativeAttention<double>> layer(uint64_t seed, double dropout) {
  Generator gen(seed);
  auto m = std::make_shared<nn::XLNetRelativeAttention<double>>(8, 2, 4, 1e-12, dropout, 0.5, gen);
  NoGradGuard ng;
  m->layer_norm->weight.copy_(rnd({8}, seed + 1, 0.7, 1.3));
  m->layer_norm->bias.copy_(rnd({8}, seed + 2, -0.3, 0.3));
  return m;
}

struct LayerRun {
  std::vector<TD> values;  // h, g, attn_prob_h, attn_prob_g, then every parameter's and input's gradient
  uint64_t offset = 0;     // of the dropout generator afterwards
};

}  // namespace

TEST_CASE("XLNetRelativeAttention: fused and unfused layers agree", "[attention][relfused][xlnet]") {
  const int64_t B = 2, qlen = 6, mlen = 3, klen = mlen + qlen, M = 3;
  for (auto type : {XLNetAttnType::Bi, XLNetAttnType::Uni})
    for (double p : {0.0, 0.2})
      for (bool training : {false, true}) {
        INFO((type == XLNetAttnType::Bi ? "bi" : "uni") << ", dropout " << p << (training ? ", training" : ", eval"));
        auto attn = layer(31, p);
        training ? attn->train() : attn->eval();
        const TD mems = rnd({B, mlen, 8}, 32), h0 = rnd({B, qlen, 8}, 33), g0 = rnd({B, M, 8}, 34);
        const TD r = xlnet_relative_positional_encoding<double>(qlen, klen, 8, type);
        const TD seg = nn::xlnet_segment_matrix<double>(from_vector<int64_t>({0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1}, {B, qlen}), mlen);
        Tensor<uint8_t> perm = zeros<uint8_t>({B, qlen, qlen});
        for (int64_t b = 0; b < B; ++b)
          for (int64_t i = 0; i < qlen; ++i)
            for (int64_t j = 0; j < qlen; ++j) perm.set({b, i, j}, (i + 2 * j + b) % 4 == 0 ? 1 : 0);
        const auto masks = nn::xlnet_attention_masks(qlen, mlen, type, type == XLNetAttnType::Uni, {}, perm);
        TD tm = zeros<double>({B, M, qlen});
        for (int64_t b = 0; b < B; ++b)
          for (int64_t m = 0; m < M; ++m) tm.set({b, m, (2 * m + b) % qlen}, 1.0);
        const TD wh = rnd({B, qlen, 8}, 35), wg = rnd({B, M, 8}, 36);
        std::vector<LayerRun> runs;
        for (bool fused : {true, false}) {
          attn->fused = fused;
          attn->zero_grad();
          TD h = h0.clone().set_requires_grad(true), g = g0.clone().set_requires_grad(true);
          TD rr = r.clone().set_requires_grad(true);
          Generator gen(5);
          attn->dropout->set_generator(&gen);
          auto o = attn->forward(h, g, masks.h, masks.g, rr, seg, mems, tm);
          add(sum(mul(o.h, wh)), sum(mul(o.g, wg))).backward();
          attn->dropout->set_generator(nullptr);
          LayerRun lr;
          lr.values = {o.h.detach(), o.g.detach(), o.attn_prob_h.detach(), o.attn_prob_g.detach()};
          for (auto& [n, prm] : attn->named_parameters()) lr.values.push_back(prm.grad());
          lr.values.insert(lr.values.end(), {h.grad(), g.grad(), rr.grad()});
          lr.offset = gen.offset();
          runs.push_back(lr);
        }
        REQUIRE(runs[0].offset == runs[1].offset);
        // training: the two streams' probabilities [B, 2, qlen, klen] and outputs [B, qlen, 8], [B, M, 8]
        REQUIRE(runs[0].offset == (training ? static_cast<uint64_t>(2 * B * 2 * qlen * klen + B * qlen * 8 + B * M * 8) : 0));
        REQUIRE(runs[0].values.size() == 4 + 11 + 3);
        for (size_t i = 0; i < runs[0].values.size(); ++i) {
          INFO("value " << i);
          REQUIRE(rel_err(runs[0].values[i], runs[1].values[i]) <= 1e-12);
        }
      }
}

TEST_CASE("XLNetRelativeAttention: output_attentions off leaves the probabilities out", "[attention][relfused][xlnet]") {
  auto attn = layer(41, 0.0);
  attn->eval();
  const TD h = rnd({2, 4, 8}, 42), r = xlnet_relative_positional_encoding<double>(4, 4, 8, XLNetAttnType::Bi);
  auto with = attn->forward(h, {}, {}, {}, r);
  attn->output_attentions = false;
  auto without = attn->forward(h, {}, {}, {}, r);
  REQUIRE(with.attn_prob_h.defined());
  REQUIRE(!without.attn_prob_h.defined());
  REQUIRE(without.h.to_vector() == with.h.to_vector());
}

namespace {

// The core of the HF parity check of tests/test_attention_relpos_xlnet.cpp, for one setting of `fused`.
template <class T>
void xlnet_parity(const std::string& name, bool f64, bool fused) {
  relpos::Fixture fx(name + (f64 ? "_f64" : "_f32") + ".safetensors");
  relpos::ParityLog log{name + (f64 ? "_f64" : "_f32") + (fused ? " fused" : " unfused")};
  const double tol = relpos::parity_tol(f64);
  nn::XLNetRelativeAttention<T> attn(fx.meta_int("d_model"), fx.meta_int("n_head"), fx.meta_int("d_head"),
                                     fx.meta_double("layer_norm_eps"), 0.1);
  attn.eval();
  attn.fused = fused;
  attn.load_state_dict(fx.under<T>("weights/"));
  Tensor<T> h = fx.get<T>("inputs/h").set_requires_grad(true);
  Tensor<T> g = fx.get_opt<T>("inputs/g");
  if (g.defined()) g.set_requires_grad(true);
  Tensor<T> r = fx.get<T>("inputs/r").set_requires_grad(true);
  auto out = attn.forward(h, g, fx.mask("inputs/attn_mask_h"), fx.mask("inputs/attn_mask_g"), r,
                          fx.get_opt<T>("inputs/seg_mat"), fx.get_opt<T>("inputs/mems"),
                          fx.get_opt<T>("inputs/target_mapping"));
  Tensor<T> loss = sum(mul(out.h, fx.get<T>("inputs/loss_w/h")));
  if (g.defined()) loss = add(loss, sum(mul(out.g, fx.get<T>("inputs/loss_w/g"))));
  loss.backward();
  auto cmp = [&](const Tensor<T>& got, const std::string& n, double& worst) {
    worst = std::max(worst, relpos::require_parity(got, fx.get<double>(n), tol, fx.path + ": " + n));
  };
  cmp(out.h, "outputs/h", log.worst_out);
  if (g.defined()) cmp(out.g, "outputs/g", log.worst_out);
  int grads = 0;
  for (auto& [pname, p] : attn.named_parameters()) {
    cmp(p.grad(), "grads/" + pname, log.worst_grad);
    ++grads;
  }
  REQUIRE(grads == 11);
  cmp(h.grad(), "grads/inputs/h", log.worst_grad);
  cmp(r.grad(), "grads/inputs/r", log.worst_grad);
  if (g.defined()) cmp(g.grad(), "grads/inputs/g", log.worst_grad);
}

}  // namespace

TEST_CASE("XLNetRelativeAttention: HF parity with the fused core on and off", "[attention][relfused][xlnet][parity]") {
  for (const std::string name : {"xlnet_bi_mems_seg", "xlnet_uni_samelen_bidata", "xlnet_two_stream",
                                 "xlnet_two_stream_uni_nomem"})
    for (bool fused : {true, false}) {
      SECTION(name + (fused ? " fused" : " unfused")) {
        xlnet_parity<double>(name, true, fused);
        xlnet_parity<float>(name, false, fused);
      }
    }
}

}  // namespace test_attention_relfused
