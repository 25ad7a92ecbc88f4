// nn::XLNetRelativeAttention and XLNet's segment recurrence (include/txtcls/nn/relative_attention.hpp):
// parity with Hugging Face's XLNetRelativeAttention and XLNetModel (masks, segments, positions,
// cache_mem) on the fixtures of tools/make_attention_fixtures.py, finite differences, and the
// memory's stopped gradient.
#include "test_attention_relpos_fixture.hpp"
#include "txtcls/nn/relative_attention.hpp"

using namespace txtcls;
using namespace tt;

namespace {

const std::vector<std::string> kXLNetCases = {"xlnet_bi_mems_seg", "xlnet_uni_samelen_bidata", "xlnet_two_stream",
                                              "xlnet_two_stream_uni_nomem"};

template <class T>
void require_same_mask(const Tensor<uint8_t>& got, const Tensor<uint8_t>& want, const std::string& what) {
  INFO(what);
  REQUIRE(got.defined() == want.defined());
  if (!want.defined()) return;
  REQUIRE(got.shape() == want.shape());
  REQUIRE(got.to_vector() == want.to_vector());
}

template <class T>
void xlnet_parity(const std::string& name, bool f64) {
  relpos::Fixture fx(name + (f64 ? "_f64" : "_f32") + ".safetensors");
  relpos::ParityLog log{name + (f64 ? "_f64" : "_f32")};
  const double tol = relpos::parity_tol(f64);
  const int64_t d_model = fx.meta_int("d_model"), n_head = fx.meta_int("n_head"), d_head = fx.meta_int("d_head");
  const int64_t qlen = fx.meta_int("qlen"), mlen = fx.meta_int("mlen"), bsz = fx.meta_int("bsz");
  const auto type = xlnet_attn_type(fx.meta("attn_type"));
  const bool bi_data = fx.meta_int("bi_data") != 0, same_length = fx.meta_int("same_length") != 0;

  nn::XLNetRelativeAttention<T> attn(d_model, n_head, d_head, fx.meta_double("layer_norm_eps"), 0.1);
  attn.eval();
  attn.load_state_dict(fx.under<T>("weights/"));  // strict: HF's state_dict names, one to one

  Tensor<T> h = fx.get<T>("inputs/h").set_requires_grad(true);
  Tensor<T> g = fx.get_opt<T>("inputs/g");
  if (g.defined()) g.set_requires_grad(true);
  Tensor<T> r = fx.get<T>("inputs/r").set_requires_grad(true);
  Tensor<T> mems = fx.get_opt<T>("inputs/mems"), seg = fx.get_opt<T>("inputs/seg_mat");
  Tensor<T> tm = fx.get_opt<T>("inputs/target_mapping");
  Tensor<uint8_t> mask_h = fx.mask("inputs/attn_mask_h"), mask_g = fx.mask("inputs/attn_mask_g");

  auto out = attn.forward(h, g, mask_h, mask_g, r, seg, mems, tm);
  Tensor<T> loss = sum(mul(out.h, fx.get<T>("inputs/loss_w/h")));
  if (g.defined()) loss = add(loss, sum(mul(out.g, fx.get<T>("inputs/loss_w/g"))));
  loss.backward();

  auto out_cmp = [&](const Tensor<T>& got, const std::string& n) {
    log.worst_out = std::max(log.worst_out, relpos::require_parity(got, fx.get<double>(n), tol, fx.path + ": " + n));
  };
  auto grad_cmp = [&](const Tensor<T>& got, const std::string& n) {
    log.worst_grad = std::max(log.worst_grad, relpos::require_parity(got, fx.get<double>(n), tol, fx.path + ": " + n));
  };
  out_cmp(out.h, "outputs/h");
  REQUIRE(g.defined() == fx.has("outputs/g"));
  if (g.defined()) out_cmp(out.g, "outputs/g");
  int grads = 0;
  for (auto& [pname, p] : attn.named_parameters()) {
    grad_cmp(p.grad(), "grads/" + pname);
    ++grads;
  }
  REQUIRE(grads == 11);
  grad_cmp(h.grad(), "grads/inputs/h");
  grad_cmp(r.grad(), "grads/inputs/r");
  if (g.defined()) grad_cmp(g.grad(), "grads/inputs/g");
  if (mems.defined()) REQUIRE(!mems.grad().defined());

  // What XLNetModel builds around the layer: masks, segment matrix, positional encoding, memory.
  auto masks = nn::xlnet_attention_masks(qlen, mlen, type, same_length, fx.mask("inputs/input_mask"),
                                         fx.mask("inputs/perm_mask"));
  require_same_mask<T>(masks.h, mask_h, "attn_mask_h");
  require_same_mask<T>(masks.g, mask_g, "attn_mask_g");
  if (seg.defined()) {
    auto built = nn::xlnet_segment_matrix<T>(fx.get<int64_t>("inputs/token_type_ids"), mlen);
    REQUIRE(built.shape() == seg.shape());
    REQUIRE(built.to_vector() == seg.to_vector());
  }
  Tensor<T> new_mem = nn::xlnet_cache_mem(h, mems, fx.meta_int("mem_len"), fx.meta_int("reuse_len"));
  REQUIRE(!new_mem.requires_grad());
  REQUIRE(new_mem.shape() == fx.get<T>("outputs/new_mem").shape());
  REQUIRE(new_mem.to_vector() == fx.get<T>("outputs/new_mem").to_vector());
  // Our own encoding of the distances (klen = mlen + qlen) is HF's to a float32 ulp, and so is the
  // layer run on it.
  Tensor<T> ours = xlnet_relative_positional_encoding<T>(qlen, mlen + qlen, d_model, type, bi_data,
                                                         fx.meta_int("clamp_len"), bsz);
  REQUIRE(relpos::rel_err(ours, fx.get<double>("hf/pos_emb")) <= 2.5e-7);
  NoGradGuard ng;
  auto again = attn.forward(h, g, masks.h, masks.g, ours, seg, mems, tm);
  REQUIRE(relpos::rel_err(again.h, fx.get<double>("outputs/h")) <= 1e-5);
}

// A small layer with weights large enough for peaked softmaxes.
std::shared_ptr<nn::XLNetRelativeAttention<double>> small_layer(uint64_t seed, int64_t d_model = 4, int64_t n_head = 2,
                                                                int64_t d_head = 2, double dropout = 0.0) {
  Generator gen(seed);
  auto m = std::make_shared<nn::XLNetRelativeAttention<double>>(d_model, n_head, d_head, 1e-12, dropout, 0.5, gen);
  NoGradGuard ng;
  m->layer_norm->weight.copy_(rnd({d_model}, seed + 1, 0.7, 1.3));
  m->layer_norm->bias.copy_(rnd({d_model}, seed + 2, -0.3, 0.3));
  return m;
}

}  // namespace

TEST_CASE("XLNetRelativeAttention: HF parameter names and shapes", "[attention][relpos][xlnet]") {
  nn::XLNetRelativeAttention<float> attn(8, 2, 4);
  std::vector<std::string> names;
  for (auto& [n, p] : attn.named_parameters()) names.push_back(n + shape_str(p.shape()));
  REQUIRE(names == std::vector<std::string>{"q[8, 2, 4]", "k[8, 2, 4]", "v[8, 2, 4]", "o[8, 2, 4]", "r[8, 2, 4]",
                                            "r_r_bias[2, 4]", "r_s_bias[2, 4]", "r_w_bias[2, 4]",
                                            "seg_embed[2, 2, 4]", "layer_norm.weight[8]", "layer_norm.bias[8]"});
  REQUIRE(attn.scale() == 0.5);
  REQUIRE_THROWS_WITH(nn::XLNetRelativeAttention<float>(6, 4, 2), Catch::Contains("d_model 6 is not a multiple of n_head 4"));
}

TEST_CASE("XLNetRelativeAttention: parity with Hugging Face, float64", "[attention][relpos][xlnet][parity]") {
  for (const auto& name : kXLNetCases) {
    SECTION(name) { xlnet_parity<double>(name, true); }
  }
}

TEST_CASE("XLNetRelativeAttention: parity with Hugging Face, float32", "[attention][relpos][xlnet][parity]") {
  for (const auto& name : kXLNetCases) {
    SECTION(name) { xlnet_parity<float>(name, false); }
  }
}

TEST_CASE("XLNetRelativeAttention: finite differences, single stream over a memory", "[attention][relpos][xlnet]") {
  auto attn = small_layer(3);
  const int64_t B = 2, qlen = 3, mlen = 2, klen = mlen + qlen;
  auto mems = rnd({B, mlen, 4}, 4);
  auto r = xlnet_relative_positional_encoding<double>(qlen, klen, 4, XLNetAttnType::Uni);
  auto ids = from_vector<int64_t>({0, 1, 1, 1, 0, 1}, {B, qlen});
  auto seg = nn::xlnet_segment_matrix<double>(ids, mlen);
  auto pad = from_vector<uint8_t>({0, 0, 0, 0, 0, 1}, {B, qlen});
  auto masks = nn::xlnet_attention_masks(qlen, mlen, XLNetAttnType::Uni, true, pad);
  auto w = rnd({B, qlen, 4}, 5);
  auto h0 = rnd({B, qlen, 4}, 6);
  // inputs h and r
  auto f = [&](const std::vector<TD>& in) { return attn->forward(in[0], {}, masks.h, masks.g, in[1], seg, mems).h; };
  REQUIRE_GRAD(f, h0, r);
  // every parameter
  relpos::require_module_grads(*attn, [&] {
    return sum(mul(attn->forward(h0, {}, masks.h, masks.g, r, seg, mems).h, w));
  });
}

TEST_CASE("XLNetRelativeAttention: finite differences, two streams with target_mapping", "[attention][relpos][xlnet]") {
  auto attn = small_layer(7);
  const int64_t B = 2, qlen = 3, mlen = 1, klen = mlen + qlen, M = 2;
  auto mems = rnd({B, mlen, 4}, 8);
  auto r = xlnet_relative_positional_encoding<double>(qlen, klen, 4, XLNetAttnType::Bi, true, -1, B);
  auto seg = nn::xlnet_segment_matrix<double>(from_vector<int64_t>({0, 0, 1, 1, 0, 0}, {B, qlen}), mlen);
  auto perm = from_vector<uint8_t>({0, 1, 1, 0, 0, 1, 0, 0, 0,  //
                                    0, 0, 0, 1, 0, 0, 1, 1, 0},
                                   {B, qlen, qlen});
  auto masks = nn::xlnet_attention_masks(qlen, mlen, XLNetAttnType::Bi, false, {}, perm);
  auto tm = from_vector<double>({0, 1, 0, 0, 0, 1,  //
                                 1, 0, 0, 0, 1, 0},
                                {B, M, qlen});
  auto wh = rnd({B, qlen, 4}, 9), wg = rnd({B, M, 4}, 10);
  auto h0 = rnd({B, qlen, 4}, 11), g0 = rnd({B, M, 4}, 12);
  auto f = [&](const std::vector<TD>& in) {
    auto o = attn->forward(in[0], in[1], masks.h, masks.g, in[2], seg, mems, in[3]);
    return concat({o.h, o.g}, 1);
  };
  REQUIRE_GRAD(f, h0, g0, r, tm);
  relpos::require_module_grads(*attn, [&] {
    auto o = attn->forward(h0, g0, masks.h, masks.g, r, seg, mems, tm);
    return add(sum(mul(o.h, wh)), sum(mul(o.g, wg)));
  });
  // the probabilities respect the masks
  auto o = attn->forward(h0, g0, masks.h, masks.g, r, seg, mems, tm);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t i = 0; i < qlen; ++i)
        for (int64_t j = 0; j < klen; ++j) {
          // exp(-1e30) underflows: 0, or a denormal from Eigen's clamped vectorised exp
          if (masks.g.at({b, 0, i, j})) REQUIRE(o.attn_prob_g.at({b, n, i, j}) <= 1e-300);
          if (masks.h.at({b, 0, i, j})) REQUIRE(o.attn_prob_h.at({b, n, i, j}) <= 1e-300);
        }
}

TEST_CASE("XLNetRelativeAttention: dropout is reproducible and differentiable", "[attention][relpos][xlnet]") {
  auto attn = small_layer(13, 4, 2, 2, 0.3);
  const int64_t B = 2, qlen = 3;
  auto r = xlnet_relative_positional_encoding<double>(qlen, qlen, 4, XLNetAttnType::Bi);
  auto h0 = rnd({B, qlen, 4}, 14);
  attn->eval();
  auto eval_out = attn->forward(h0, {}, {}, {}, r).h;
  attn->train();
  auto run = [&](const std::vector<TD>& in) {
    Generator gen(99);  // the same masks on every call
    attn->dropout->set_generator(&gen);
    auto y = attn->forward(in[0], {}, {}, {}, r).h;
    attn->dropout->set_generator(nullptr);
    return y;
  };
  auto a = run({h0}), b = run({h0});
  REQUIRE(a.to_vector() == b.to_vector());
  REQUIRE(relpos::rel_err(a, eval_out) > 1e-3);
  REQUIRE_GRAD(run, h0);
}

TEST_CASE("XLNetRelativeAttention: no gradient reaches the memory or earlier segments", "[attention][relpos][xlnet]") {
  auto attn = small_layer(21, 8, 2, 4);
  const int64_t B = 2, qlen = 3, mem_len = 4;
  auto w1 = rnd({B, qlen, 8}, 22), w2 = rnd({B, qlen, 8}, 23);
  auto r1 = xlnet_relative_positional_encoding<double>(qlen, qlen, 8, XLNetAttnType::Bi);
  auto param_grads = [&] {
    std::vector<std::vector<double>> gs;
    for (auto& p : attn->parameters()) gs.push_back(p.grad().defined() ? p.grad().to_vector() : std::vector<double>());
    return gs;
  };
  // segment 1, then its memory (mem_len 4 keeps all 3 states), then segment 2 over it
  auto h1 = rnd({B, qlen, 8}, 24).set_requires_grad(true);
  auto h2 = rnd({B, qlen, 8}, 25).set_requires_grad(true);
  auto segment1 = [&] { return attn->forward(h1, {}, {}, {}, r1).h; };
  auto segment2 = [&](const TD& mem) {
    const int64_t klen = mem.size(1) + qlen;
    auto r2 = xlnet_relative_positional_encoding<double>(qlen, klen, 8, XLNetAttnType::Bi);
    return attn->forward(h2, {}, {}, {}, r2, {}, mem).h;
  };

  // (a) the memory carries segment 1's graph, but loss2 sends nothing into it
  attn->zero_grad();
  auto out1 = segment1();
  auto mem = nn::xlnet_cache_mem(out1, TD(), mem_len);
  REQUIRE(!mem.requires_grad());
  REQUIRE(mem.shape() == Shape{B, 3, 8});
  auto loss2 = sum(mul(segment2(mem), w2));
  loss2.backward();
  REQUIRE(!h1.grad().defined());
  auto grads_a = param_grads();
  auto h2_a = h2.grad().to_vector();

  // (b) the same memory values without any history: identical gradients
  attn->zero_grad();
  h2.zero_grad();
  auto plain = from_vector<double>(mem.to_vector(), mem.shape());
  sum(mul(segment2(plain), w2)).backward();
  REQUIRE(param_grads() == grads_a);
  REQUIRE(h2.grad().to_vector() == h2_a);

  // (c) a memory that itself requires grad is detached inside the layer
  attn->zero_grad();
  auto leaf = plain.clone().detach().set_requires_grad(true);
  sum(mul(segment2(leaf), w2)).backward();
  REQUIRE(!leaf.grad().defined());
  REQUIRE(param_grads() == grads_a);

  // (d) training both segments at once: segment 1's gradients are those of its own loss alone,
  // whether or not segment 2 read its memory
  attn->zero_grad();
  h1.zero_grad();
  sum(mul(segment1(), w1)).backward();
  auto grads_1 = param_grads();
  auto h1_alone = h1.grad().to_vector();
  attn->zero_grad();
  h1.zero_grad();
  h2.zero_grad();
  auto o1 = segment1();
  auto o2 = segment2(nn::xlnet_cache_mem(o1, TD(), mem_len));
  add(sum(mul(o1, w1)), sum(mul(o2, w2))).backward();
  REQUIRE(h1.grad().to_vector() == h1_alone);
  REQUIRE(h2.grad().to_vector() == h2_a);
  auto both = param_grads();
  for (size_t k = 0; k < both.size(); ++k)
    for (size_t i = 0; i < both[k].size(); ++i) REQUIRE(std::abs(both[k][i] - (grads_1[k][i] + grads_a[k][i])) <= 1e-13);
}

TEST_CASE("xlnet_cache_mem: mem_len and reuse_len", "[attention][relpos][xlnet]") {
  auto cur = arange<double>(0, 4).reshape({1, 4, 1});
  auto prev = from_vector<double>({10, 11}, {1, 2, 1});
  require_close(nn::xlnet_cache_mem(cur, prev, 3), {1, 2, 3});
  require_close(nn::xlnet_cache_mem(cur, prev, 3, 2), {11, 0, 1});
  require_close(nn::xlnet_cache_mem(cur, prev, 0), {10, 11, 0, 1, 2, 3});
  require_close(nn::xlnet_cache_mem(cur, prev, 10), {10, 11, 0, 1, 2, 3});
  require_close(nn::xlnet_cache_mem(cur, TD(), 3), {1, 2, 3});
  require_close(nn::xlnet_cache_mem(cur, TD(), 0, 2), {0, 1});
  REQUIRE_THROWS_WITH(nn::xlnet_cache_mem(cur, rnd({1, 2, 3}, 1), 3),
                      Catch::Contains("xlnet_cache_mem: memory [1, 2, 3] does not match hidden states [1, 4, 1]"));
  REQUIRE_THROWS_WITH(nn::xlnet_cache_mem(cur, prev, -1), Catch::Contains("xlnet_cache_mem: mem_len -1"));
}

TEST_CASE("xlnet masks and segments: hand-worked", "[attention][relpos][xlnet]") {
  // causal over a memory of 1: query i (position 1 + i) sees keys j <= 1 + i
  REQUIRE(nn::xlnet_causal_mask(2, 1, false).to_vector() == std::vector<uint8_t>{0, 0, 1, 0, 0, 0});
  // same_length: query 1 also loses column 0, so both see two keys
  REQUIRE(nn::xlnet_causal_mask(2, 1, true).to_vector() == std::vector<uint8_t>{0, 0, 1, 1, 0, 0});
  // bi without data masks: nothing masked
  auto none = nn::xlnet_attention_masks(3, 2, XLNetAttnType::Bi);
  REQUIRE(!none.h.defined());
  REQUIRE(!none.g.defined());
  // padding: key 1 of the segment (column mlen + 1) is hidden from every query in the g mask;
  // the h mask shows each query itself, padded or not
  auto pad = from_vector<uint8_t>({0, 1}, {1, 2});
  auto m = nn::xlnet_attention_masks(2, 1, XLNetAttnType::Bi, false, pad);
  REQUIRE(m.g.shape() == Shape{1, 1, 2, 3});
  REQUIRE(m.g.to_vector() == std::vector<uint8_t>{0, 0, 1, 0, 0, 1});
  REQUIRE(m.h.to_vector() == std::vector<uint8_t>{0, 0, 1, 0, 0, 0});
  // uni with a perm mask and a batch of 2 (HF fails here: its in-place add cannot broadcast)
  auto perm = from_vector<uint8_t>({0, 1, 0, 0, 0, 0, 1, 0}, {2, 2, 2});
  auto u = nn::xlnet_attention_masks(2, 0, XLNetAttnType::Uni, false, {}, perm);
  REQUIRE(u.g.shape() == Shape{2, 1, 2, 2});
  REQUIRE(u.g.to_vector() == std::vector<uint8_t>{0, 1, 0, 0, 0, 1, 1, 0});
  REQUIRE(u.h.to_vector() == std::vector<uint8_t>{0, 1, 0, 0, 0, 1, 1, 0});
  // strided inputs read like their contiguous copies
  auto perm_t = perm.transpose(1, 2);
  auto ut = nn::xlnet_attention_masks(2, 1, XLNetAttnType::Uni, true, pad.expand({2, 2}), perm_t);
  auto uc = nn::xlnet_attention_masks(2, 1, XLNetAttnType::Uni, true, pad.expand({2, 2}).contiguous(), perm_t.contiguous());
  REQUIRE(ut.g.to_vector() == uc.g.to_vector());
  REQUIRE(ut.h.to_vector() == uc.h.to_vector());
  REQUIRE(nn::xlnet_segment_matrix<double>(from_vector<int64_t>({0, 1, 1, 0}, {2, 2}).t(), 1).to_vector() ==
          nn::xlnet_segment_matrix<double>(from_vector<int64_t>({0, 1, 1, 0}, {2, 2}).t().contiguous(), 1).to_vector());
  REQUIRE_THROWS_WITH(nn::xlnet_attention_masks(3, 0, XLNetAttnType::Bi, false, pad),
                      Catch::Contains("xlnet_attention_masks: input_mask must be [B, qlen = 3]"));
  // segments: memory counts as segment 0
  auto seg = nn::xlnet_segment_matrix<float>(from_vector<int64_t>({1, 0}, {1, 2}), 1);
  REQUIRE(seg.shape() == Shape{1, 2, 3, 2});
  // query 0 (type 1) vs keys (0, 1, 0): different, same, different; query 1 (type 0): same, different, same
  REQUIRE(seg.to_vector() == std::vector<float>{0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0});
}

TEST_CASE("XLNetRelativeAttention: shape errors name the layer and shapes", "[attention][relpos][xlnet]") {
  auto attn = small_layer(1);
  auto h = rnd({2, 3, 4}, 1);
  auto r = xlnet_relative_positional_encoding<double>(3, 3, 4, XLNetAttnType::Bi);
  REQUIRE_THROWS_WITH(attn->forward(rnd({2, 3, 5}, 1), {}, {}, {}, r),
                      Catch::Contains("XLNetRelativeAttention: h must be [B, qlen, 4], got [2, 3, 5]"));
  REQUIRE_THROWS_WITH(attn->forward(h, {}, {}, {}, r.slice(1, 0, 3)),
                      Catch::Contains("positional encoding r must be [1 or B = 2, P > klen = 3, 4], got [1, 3, 4]"));
  REQUIRE_THROWS_WITH(attn->forward(h, {}, {}, {}, r, {}, rnd({3, 2, 4}, 1)), Catch::Contains("mems [3, 2, 4] do not match h"));
  REQUIRE_THROWS_WITH(attn->forward(h, {}, zeros<uint8_t>({2, 1, 3, 4}), {}, r),
                      Catch::Contains("attn_mask_h of shape [2, 1, 3, 4] does not broadcast to the scores"));
  REQUIRE_THROWS_WITH(attn->forward(h, {}, {}, {}, r, zeros<double>({2, 3, 3, 3})),
                      Catch::Contains("seg_mat must be [B, qlen, klen, 2]"));
  REQUIRE_THROWS_WITH(attn->forward(h, rnd({2, 2, 4}, 1), {}, {}, r),
                      Catch::Contains("without target_mapping g must have h's shape"));
}
