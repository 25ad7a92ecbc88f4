// The fused XLNet relative attention kernels (kernels/relative_attention.cu), emulated on the host
// (cuda_shim.hpp) behind the op's own CUDA branch (detail::relative_attention_cuda, which folds
// the kernels' partial gradients), against the CPU fused op and the reference composition:
// output, probabilities and all eight gradients, double and float, 27 configurations (memory,
// bi/uni positions with wrapped reads, shared or per-sequence k_r, segment ids, seg_mat, soft
// segments, masks, permutation and padding masks, empty rows, causal, dropout, strided views).
// Tolerances relative to the largest reference value: 1e-12 (double), 1e-5 (float).
//   check_relative [case index]
#include <cstdio>
#include <cstdlib>
#include <string>

#include "txtcls/nn/relative_attention.hpp"
#include "txtcls/ops/relative_attention_fused.hpp"
#include "check_util.hpp"
#include "host_backend.hpp"

using namespace txtcls;

struct Case {
  std::string name;
  int64_t B = 2, H = 2, qlen = 5, mlen = 0, D = 6, Dv = 6;
  XLNetAttnType type = XLNetAttnType::Bi;
  bool shared_kr = true;
  int seg = 0;  // 0 none, 1 ids, 2 seg_mat, 3 soft
  bool mask = false, perm = false, padding = false, query_stream = false, empty_row = false, causal = false, strided = false;
  double dropout = 0;
  bool own = false;
  int64_t klen() const { return mlen + qlen; }
  int64_t P() const { return xlnet_num_relative_positions(qlen, klen(), type); }
};

Tensor<double> rnd(const Shape& s, uint64_t seed, double lo = -1, double hi = 1) { Generator g(seed); return rand_uniform<double>(s, g, lo, hi); }

template <class T>
struct Res { Tensor<T> out, probs; std::vector<Tensor<T>> g; };

template <class T>
Res<T> run(const Case& c, int path) {  // 0 cpu fused, 1 emulated cuda, 2 reference
  const int64_t Lk = c.klen();
  auto leaf = [](const Tensor<double>& x) { return x.defined() ? cast<T>(x).set_requires_grad(true) : Tensor<T>(); };
  std::vector<Tensor<T>> x{leaf(rnd({c.B, c.H, c.qlen, c.D}, 1, -1.5, 1.5)), leaf(rnd({c.B, c.H, Lk, c.D}, 2, -1.5, 1.5)),
                           leaf(rnd({c.B, c.H, Lk, c.Dv}, 3)), leaf(rnd({c.shared_kr ? 1 : c.B, c.H, c.P(), c.D}, 4, -1.5, 1.5)),
                           leaf(rnd({c.H, c.D}, 5, -.5, .5)), leaf(rnd({c.H, c.D}, 6, -.5, .5))};
  RelativeAttentionOptions<T> o;
  std::vector<int64_t> ids;
  for (int64_t b = 0; b < c.B; ++b) for (int64_t i = 0; i < c.qlen; ++i) ids.push_back(((i * 2 + b) / 3 + b) % 2);
  Tensor<int64_t> types = from_vector<int64_t>(ids, {c.B, c.qlen});
  if (c.seg) {
    x.push_back(leaf(rnd({c.H, c.D}, 8, -.5, .5)));
    x.push_back(leaf(rnd({2, c.H, c.D}, 9)));
    o.r_s_bias = x[6]; o.seg_embed = x[7];
    if (c.seg == 1) { o.seg_q = types; o.seg_k = concat({zeros<int64_t>({c.B, c.mlen}), types}, 1); }
    else if (c.seg == 2) o.seg_mat = cast<T>(nn::xlnet_segment_matrix<double>(types, c.mlen));
    else o.seg_mat = cast<T>(rnd({c.B, c.qlen, Lk, 2}, 10));
  }
  if (c.own) {
    o.mask = zeros<uint8_t>({c.B, 1, c.qlen, Lk});
    for (int64_t b = 0; b < c.B; ++b) for (int64_t i = 0; i < c.qlen; ++i) for (int64_t j = 0; j < Lk; ++j) {
      const bool causal = c.mask && c.type == XLNetAttnType::Uni && j > c.mlen + i;
      const bool pad = c.padding && b == c.B - 1 && j == Lk - 1;
      const bool perm = c.perm && j != c.mlen + i && (i * 5 + j * 3 + b) % 3 == 0;
      o.mask.set({b, 0, i, j}, causal || pad || perm || (c.empty_row && b == 0 && i == 1) ? 1 : 0);
    }
  } else if (c.mask || c.perm || c.padding || c.empty_row) {
    Tensor<uint8_t> im, pm;
    if (c.padding) { im = zeros<uint8_t>({c.B, c.qlen}); im.set({c.B - 1, c.qlen - 1}, 1); }
    if (c.perm || c.empty_row) {
      pm = zeros<uint8_t>({c.B, c.qlen, c.qlen});
      if (c.perm) for (int64_t b = 0; b < c.B; ++b) for (int64_t i = 0; i < c.qlen; ++i) for (int64_t j = 0; j < c.qlen; ++j) pm.set({b, i, j}, (i * 5 + j * 3 + b) % 3 == 0 ? 1 : 0);
      if (c.empty_row) for (int64_t j = 0; j < c.qlen; ++j) pm.set({0, 1, j}, 1);
    }
    auto m = nn::xlnet_attention_masks(c.qlen, c.mlen, c.type, false, im, pm);
    o.mask = c.query_stream ? m.g : m.h;
  }
  o.causal = c.causal;
  o.dropout_p = c.dropout;
  Generator gen(99);
  o.generator = &gen;
  Res<T> r;
  o.probs = &r.probs;
  Tensor<T> q = x[0], k = x[1], v = x[2], kr = x[3];
  if (c.strided) {
    q = q.permute({0, 2, 1, 3}).contiguous().permute({0, 2, 1, 3});
    kr = kr.permute({0, 2, 1, 3}).contiguous().permute({0, 2, 1, 3});
    v = v.transpose(2, 3).contiguous().transpose(2, 3);
  }
  Tensor<T> out;
  if (path == 0) out = relative_attention(q, k, v, kr, x[4], x[5], o);
  else if (path == 2) out = relative_attention_reference(q, k, v, kr, x[4], x[5], o);
  else out = detail::relative_attention_cuda(q, k, v, kr, x[4], x[5], o,
             detail::check_relative_attention(q, k, v, kr, x[4], x[5], o, "relative_attention", true), "relative_attention");
  out.backward(cast<T>(rnd({c.B, c.H, c.qlen, c.Dv}, 7)));
  r.out = out.detach();
  for (auto& t : x) r.g.push_back(t.grad());
  return r;
}

// Emulated CUDA (1) against the CPU fused op (0) and the reference (2); names the tensors past
// the tolerance. Returns whether all are within it.
template <class T>
bool check(const Case& c) {
  const double tol = sizeof(T) == 4 ? 1e-5 : 1e-12;
  Res<T> e = run<T>(c, 1), f = run<T>(c, 0), r = run<T>(c, 2);
  double w = std::max({emu::rel_err(e.out, f.out), emu::rel_err(e.probs, f.probs), emu::rel_err(e.out, r.out), emu::rel_err(e.probs, r.probs)});
  std::string bad = w > tol ? " out/probs" : "";
  const char* names[] = {"q", "k", "v", "kr", "r_w_bias", "r_r_bias", "r_s_bias", "seg_embed"};
  for (size_t i = 0; i < e.g.size(); ++i) {
    const double ei = std::max(emu::rel_err(e.g[i], f.g[i]), emu::rel_err(e.g[i], r.g[i]));
    if (ei > tol) bad += std::string(" ") + names[i];
    w = std::max(w, ei);
  }
  std::printf("%s %-50s %s max rel err %.2e%s\n", bad.empty() ? "ok  " : "FAIL", c.name.c_str(),
              sizeof(T) == 4 ? "float " : "double", w, bad.c_str());
  std::fflush(stdout);
  return bad.empty();
}

int main(int argc, char** argv) {
  std::vector<Case> cs;
  Case b; b.name = "bi";
  cs.push_back(b);
  auto add = [&](std::string n, auto f) { Case c = b; c.name = n; f(c); cs.push_back(c); };
  add("bi mem3 ids", [](Case& c) { c.mlen = 3, c.seg = 1; });
  add("bi mem3 segmat", [](Case& c) { c.mlen = 3, c.seg = 2; });
  add("uni mem2 mask ids", [](Case& c) { c.type = XLNetAttnType::Uni, c.mlen = 2, c.mask = true, c.seg = 1; });
  add("uni no mask (wrapped)", [](Case& c) { c.type = XLNetAttnType::Uni, c.mlen = 2; });
  add("uni causal flag", [](Case& c) { c.type = XLNetAttnType::Uni, c.mlen = 3, c.causal = true; });
  add("qstream perm padding mem1 ids", [](Case& c) { c.mlen = 1, c.perm = c.padding = c.query_stream = true, c.seg = 1; });
  add("empty row ids", [](Case& c) { c.empty_row = c.query_stream = true, c.seg = 1; });
  add("uni empty row segmat (wrapped)", [](Case& c) { c.type = XLNetAttnType::Uni, c.empty_row = c.query_stream = true, c.seg = 2; });
  add("kr per seq", [](Case& c) { c.mlen = 2, c.shared_kr = false, c.seg = 1; });
  add("dropout uni", [](Case& c) { c.type = XLNetAttnType::Uni, c.mlen = 2, c.mask = true, c.dropout = 0.3, c.seg = 1; });
  add("Lq=1 mem4", [](Case& c) { c.qlen = 1, c.mlen = 4, c.seg = 1; });
  add("Lq=7 D9 Dv5 uni mem3", [](Case& c) { c.qlen = 7, c.mlen = 3, c.D = 9, c.Dv = 5, c.type = XLNetAttnType::Uni, c.mask = true; });
  add("strided segmat", [](Case& c) { c.mlen = 2, c.strided = true, c.seg = 2; });
  add("soft seg_mat uni", [](Case& c) { c.type = XLNetAttnType::Uni, c.mlen = 2, c.mask = true, c.seg = 3; });
  add("Lq=37 mem 20 uni no mask soft D70", [](Case& c) { c.qlen = 37, c.mlen = 20, c.type = XLNetAttnType::Uni, c.seg = 3, c.D = 70, c.Dv = 33, c.B = 1; });
  add("Lq=40 mem 9 bi perm empty dropout", [](Case& c) { c.qlen = 40, c.mlen = 9, c.perm = c.empty_row = c.query_stream = true, c.seg = 1, c.dropout = 0.2, c.shared_kr = false; });
  add("Lq=20 uni empty causal", [](Case& c) { c.qlen = 20, c.mlen = 0, c.type = XLNetAttnType::Uni, c.empty_row = c.query_stream = true, c.causal = true, c.seg = 2; });
  add("Lq 33 uni causal empty D128", [](Case& c) { c.qlen = 33, c.type = XLNetAttnType::Uni, c.empty_row = c.query_stream = true, c.causal = true, c.seg = 2, c.D = c.Dv = 128; });
  add("Lq 70 mem 65 uni mask padding D64 Dv48 strided", [](Case& c) { c.qlen = 70, c.mlen = 65, c.type = XLNetAttnType::Uni, c.mask = c.padding = c.strided = true, c.seg = 1, c.D = 64, c.Dv = 48; });
  add("Lq 17 mem 50 bi D16 Dv100", [](Case& c) { c.qlen = 17, c.mlen = 50, c.D = 16, c.Dv = 100; });
  add("sanitize everything", [](Case& c) { c.qlen = 19, c.mlen = 5, c.D = 20, c.Dv = 12, c.type = XLNetAttnType::Uni; c.mask = c.padding = c.perm = c.query_stream = c.empty_row = c.strided = true; c.causal = true, c.dropout = 0.25, c.seg = 2, c.shared_kr = false; });
  add("sanitize bi ids", [](Case& c) { c.qlen = 19, c.mlen = 5, c.D = 20, c.Dv = 12; c.mask = c.padding = c.perm = c.query_stream = c.empty_row = c.strided = true; c.dropout = 0.25, c.seg = 1; });
  add("own: empty row with memory 2", [](Case& c) { c.own = true, c.mlen = 2, c.seg = 1, c.empty_row = true; });
  add("own: perm empty dropout mem9 L40", [](Case& c) { c.own = true, c.qlen = 40, c.mlen = 9, c.shared_kr = false, c.seg = 1, c.perm = c.empty_row = true, c.dropout = 0.2; });
  add("own: sanitize", [](Case& c) { c.own = true, c.qlen = 19, c.mlen = 5, c.D = 20, c.Dv = 12, c.type = XLNetAttnType::Uni, c.shared_kr = false, c.seg = 2, c.mask = c.padding = c.perm = c.empty_row = c.causal = c.strided = true, c.dropout = 0.25; });
  add("own: repeat case", [](Case& c) { c.own = true, c.B = 4, c.qlen = 45, c.mlen = 20, c.D = c.Dv = 32, c.type = XLNetAttnType::Uni, c.seg = 1, c.mask = true, c.dropout = 0.1; });
  const int only = argc > 1 ? std::atoi(argv[1]) : -1;
  int failed = 0, count = 0;
  for (size_t i = 0; i < cs.size(); ++i) {
    if (only >= 0 && int(i) != only) continue;
    failed += !check<double>(cs[i]);
    failed += !check<float>(cs[i]);
    count += 2;
  }
  std::printf("%d of %d configurations passed%s (largest block: %d bytes of shared memory)\n", count - failed, count,
              failed ? ": FAILURES" : "", g_max_smem);
  return failed ? 1 : 0;
}
