// nn::T5Attention and t5_attention_mask (include/txtcls/nn/relative_attention.hpp): parity with
// Hugging Face's T5Attention (encoder, causal decoder, cross-attention; the first layer's position
// bias shared by the second) on the fixtures of tools/make_attention_fixtures.py, finite
// differences, incremental decoding with a key/value cache.
#include "test_attention_relpos_fixture.hpp"
#include "txtcls/nn/relative_attention.hpp"

using namespace txtcls;
using namespace tt;

namespace {

template <class T>
void t5_parity(const std::string& name, bool f64) {
  relpos::Fixture fx(name + (f64 ? "_f64" : "_f32") + ".safetensors");
  relpos::ParityLog log{name + (f64 ? "_f64" : "_f32")};
  const double tol = relpos::parity_tol(f64);
  const int64_t d_model = fx.meta_int("d_model"), d_kv = fx.meta_int("d_kv"), H = fx.meta_int("num_heads");
  const int64_t nb = fx.meta_int("num_buckets"), md = fx.meta_int("max_distance"), layers = fx.meta_int("layers");
  const int64_t Lq = fx.meta_int("Lq"), Lk = fx.meta_int("Lk");
  const bool decoder = fx.meta_int("is_decoder") != 0, cross = fx.meta_int("cross") != 0;

  std::vector<std::shared_ptr<nn::T5Attention<T>>> attn;
  for (int64_t i = 0; i < layers; ++i) {
    attn.push_back(std::make_shared<nn::T5Attention<T>>(d_model, d_kv, H, i == 0 && !cross, decoder, nb, md, 0.1));
    attn.back()->eval();
    attn.back()->load_state_dict(fx.under<T>("weights/" + std::to_string(i) + "/"));  // strict
  }
  // our mask is HF's, bit for bit (0 / lowest finite value)
  Tensor<T> mask = nn::t5_attention_mask<T>(fx.mask("inputs/key_padding_mask"), Lq, Lk, decoder && !cross);
  REQUIRE(mask.shape() == fx.get<T>("inputs/mask").shape());
  REQUIRE(mask.to_vector() == fx.get<T>("inputs/mask").to_vector());

  std::vector<Tensor<T>> xs, outs;
  for (int64_t i = 0; i < layers; ++i) xs.push_back(fx.get<T>("inputs/x" + std::to_string(i)).set_requires_grad(true));
  Tensor<T> enc = fx.get_opt<T>("inputs/encoder");
  if (enc.defined()) enc.set_requires_grad(true);
  Tensor<T> bias;
  for (int64_t i = 0; i < layers; ++i) {
    auto o = attn[i]->forward(xs[i], mask, bias, enc);
    if (i == 0) bias = o.position_bias;
    outs.push_back(o.output);
  }
  Tensor<T> loss;
  for (int64_t i = 0; i < layers; ++i) {
    Tensor<T> li = sum(mul(outs[i], fx.get<T>("inputs/loss_w/" + std::to_string(i))));
    loss = loss.defined() ? add(loss, li) : li;
  }
  loss.backward();

  auto out_cmp = [&](const Tensor<T>& got, const std::string& n) {
    log.worst_out = std::max(log.worst_out, relpos::require_parity(got, fx.get<double>(n), tol, fx.path + ": " + n));
  };
  auto grad_cmp = [&](const Tensor<T>& got, const std::string& n) {
    log.worst_grad = std::max(log.worst_grad, relpos::require_parity(got, fx.get<double>(n), tol, fx.path + ": " + n));
  };
  int grads = 0;
  for (int64_t i = 0; i < layers; ++i) {
    const std::string si = std::to_string(i);
    out_cmp(outs[i], "outputs/" + si);
    for (auto& [pname, p] : attn[i]->named_parameters()) {
      grad_cmp(p.grad(), "grads/" + si + "/" + pname);
      ++grads;
    }
    grad_cmp(xs[i].grad(), "grads/inputs/x" + si);
  }
  REQUIRE(grads == (cross ? 4 : 9));
  out_cmp(bias, "outputs/position_bias");
  if (enc.defined()) grad_cmp(enc.grad(), "grads/inputs/encoder");
  if (fx.has("outputs/bias_offset5")) {  // queries after 5 cached positions
    NoGradGuard ng;
    out_cmp(attn[0]->compute_bias(3, 8, 5), "outputs/bias_offset5");
  }
}

std::shared_ptr<nn::T5Attention<double>> small_t5(uint64_t seed, bool bias, bool decoder, double dropout = 0.0) {
  Generator gen(seed);
  // initializer_factor 3: softmaxes far from uniform
  return std::make_shared<nn::T5Attention<double>>(6, 3, 2, bias, decoder, 8, 6, dropout, 3.0, gen);
}

}  // namespace

TEST_CASE("T5Attention: HF parameter names and shapes", "[attention][relpos][t5]") {
  nn::T5Attention<float> a(8, 3, 2, true, false, 32, 128);
  std::vector<std::string> names;
  for (auto& [n, p] : a.named_parameters()) names.push_back(n + shape_str(p.shape()));
  REQUIRE(names == std::vector<std::string>{"q.weight[6, 8]", "k.weight[6, 8]", "v.weight[6, 8]", "o.weight[8, 6]",
                                            "relative_attention_bias.weight[32, 2]"});
  nn::T5Attention<float> b(8, 3, 2);
  REQUIRE(b.named_parameters().size() == 4);
  REQUIRE(!b.has_relative_attention_bias());
  REQUIRE_THROWS_WITH(b.compute_bias(2, 2), Catch::Contains("T5Attention.compute_bias: this layer has no relative_attention_bias"));
  REQUIRE_THROWS_WITH(nn::T5Attention<float>(8, 3, 2, true, false, 2, 128), Catch::Contains("T5Attention: num_buckets 2 is too small"));
}

TEST_CASE("T5Attention: parity with Hugging Face, float64", "[attention][relpos][t5][parity]") {
  for (const std::string name : {"t5_encoder", "t5_decoder", "t5_cross"}) {
    SECTION(name) { t5_parity<double>(name, true); }
  }
}

TEST_CASE("T5Attention: parity with Hugging Face, float32", "[attention][relpos][t5][parity]") {
  for (const std::string name : {"t5_encoder", "t5_decoder", "t5_cross"}) {
    SECTION(name) { t5_parity<float>(name, false); }
  }
}

TEST_CASE("t5_attention_mask: padding and causality", "[attention][relpos][t5]") {
  const double lo = std::numeric_limits<double>::lowest();
  auto pad = from_vector<uint8_t>({0, 0, 1}, {1, 3});
  using V = std::vector<double>;
  REQUIRE(nn::t5_attention_mask<double>(pad, 2, 3, false).to_vector() == V{0, 0, lo, 0, 0, lo});
  REQUIRE(nn::t5_attention_mask<double>(pad, 2, 3, false).shape() == Shape{1, 1, 2, 3});
  REQUIRE(nn::t5_attention_mask<double>(Tensor<uint8_t>(), 2, 2, true).to_vector() == V{0, lo, 0, 0});
  // one cached position: query 0 sits at position 1 and sees keys 0 and 1
  REQUIRE(nn::t5_attention_mask<double>(pad, 2, 3, true, 1).to_vector() == V{0, 0, lo, 0, 0, lo});
  REQUIRE(nn::t5_attention_mask<double>(Tensor<uint8_t>(), 2, 4, true, 2).to_vector() ==
          V{0, 0, 0, lo, 0, 0, 0, 0});
  REQUIRE_THROWS_WITH(nn::t5_attention_mask<double>(pad, 2, 4, false),
                      Catch::Contains("t5_attention_mask: key_padding_mask must be [B, key_length = 4]"));
}

TEST_CASE("T5Attention: finite differences", "[attention][relpos][t5]") {
  const int64_t B = 2, L = 5;
  auto pad = from_vector<uint8_t>({0, 0, 0, 0, 0, 0, 0, 0, 1, 1}, {B, L});
  for (bool decoder : {false, true}) {
    INFO("decoder " << decoder);
    auto first = small_t5(31 + decoder, true, decoder), second = small_t5(41 + decoder, false, decoder);
    auto mask = nn::t5_attention_mask<double>(pad, L, L, decoder);
    auto x0 = rnd({B, L, 6}, 1), x1 = rnd({B, L, 6}, 2), w = rnd({B, L, 6}, 3);
    // the second layer reuses the first's bias: its gradient reaches the first layer's table
    auto f = [&](const std::vector<TD>& in) {
      auto a = first->forward(in[0], mask);
      return concat({a.output, second->forward(in[1], mask, a.position_bias).output}, 1);
    };
    REQUIRE_GRAD(f, x0, x1);
    relpos::require_module_grads(*first, [&] {
      auto a = first->forward(x0, mask);
      return add(sum(mul(a.output, w)), sum(mul(second->forward(x1, mask, a.position_bias).output, w)));
    });
    relpos::require_module_grads(*second, [&] {
      auto a = first->forward(x0, mask);
      return sum(mul(second->forward(x1, mask, a.position_bias).output, w));
    });
  }
  // cross-attention: gradients into the encoder states
  auto cross = small_t5(51, false, true);
  auto enc_pad = from_vector<uint8_t>({0, 0, 0, 0, 0, 1}, {B, 3});
  auto cmask = nn::t5_attention_mask<double>(enc_pad, 4, 3, false);
  auto fc = [&](const std::vector<TD>& in) { return cross->forward(in[0], cmask, {}, in[1]).output; };
  REQUIRE_GRAD(fc, rnd({B, 4, 6}, 4), rnd({B, 3, 6}, 5));
  auto out = cross->forward(rnd({B, 4, 6}, 4), cmask, {}, rnd({B, 3, 6}, 5));
  REQUIRE(out.position_bias.shape() == Shape{1, 2, 4, 3});
  REQUIRE(out.position_bias.to_vector() == std::vector<double>(24, 0.0));
  REQUIRE(out.attn_weights.at({1, 0, 2, 2}) == 0.0);  // padded encoder position
}

TEST_CASE("T5Attention: dropout on the attention weights", "[attention][relpos][t5]") {
  auto attn = small_t5(61, true, false, 0.4);
  auto x = rnd({2, 4, 6}, 6);
  attn->eval();
  auto eval_out = attn->forward(x).output;
  attn->train();
  auto run = [&](const std::vector<TD>& in) {
    Generator gen(7);
    attn->set_generator(&gen);
    auto y = attn->forward(in[0]).output;
    attn->set_generator(nullptr);
    return y;
  };
  REQUIRE(run({x}).to_vector() == run({x}).to_vector());
  REQUIRE(relpos::rel_err(run({x}), eval_out) > 1e-3);
  REQUIRE_GRAD(run, x);
}

TEST_CASE("T5Attention: incremental decoding with a key/value cache equals the full causal pass",
          "[attention][relpos][t5]") {
  const int64_t B = 2, L = 6;
  auto first = small_t5(71, true, true), second = small_t5(72, false, true);
  first->eval();
  second->eval();
  auto x = rnd({B, L, 6}, 8);
  auto pad = from_vector<uint8_t>({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1}, {B, L});
  NoGradGuard ng;
  auto full0 = first->forward(x, nn::t5_attention_mask<double>(pad, L, L, true));
  auto full1 = second->forward(x, nn::t5_attention_mask<double>(pad, L, L, true), full0.position_bias);
  // feed 2 tokens, then one at a time, carrying the keys and values
  TD k0, v0, k1, v1;
  int64_t done = 0;
  for (int64_t step : {2, 1, 1, 1, 1}) {
    auto xs = x.slice(1, done, done + step);
    auto kp = pad.slice(1, 0, done + step);
    auto mask = nn::t5_attention_mask<double>(kp, step, done + step, true, done);
    auto a = first->forward(xs, mask, {}, {}, k0, v0);
    REQUIRE(a.position_bias.to_vector() == first->compute_bias(step, done + step, done).to_vector());
    REQUIRE(a.position_bias.to_vector() == full0.position_bias.slice(2, done, done + step).slice(3, 0, done + step).to_vector());
    auto b = second->forward(xs, mask, a.position_bias, {}, k1, v1);
    REQUIRE(relpos::rel_err(a.output, full0.output.slice(1, done, done + step).contiguous()) <= 1e-14);
    REQUIRE(relpos::rel_err(b.output, full1.output.slice(1, done, done + step).contiguous()) <= 1e-14);
    k0 = a.key, v0 = a.value, k1 = b.key, v1 = b.value;
    done += step;
  }
  REQUIRE(k0.shape() == Shape{B, 2, L, 3});
}

TEST_CASE("T5Attention: shape errors name the layer and shapes", "[attention][relpos][t5]") {
  auto attn = small_t5(81, true, false);
  auto x = rnd({2, 4, 6}, 1);
  REQUIRE_THROWS_WITH(attn->forward(rnd({2, 4, 5}, 1)), Catch::Contains("T5Attention: hidden states must be [B, L, 6], got [2, 4, 5]"));
  REQUIRE_THROWS_WITH(attn->forward(x, {}, zeros<double>({1, 2, 4, 3})),
                      Catch::Contains("position_bias must be [1 or B, n_heads, Lq, Lk] = [1, 2, 4, 4], got [1, 2, 4, 3]"));
  REQUIRE_THROWS_WITH(attn->forward(x, zeros<double>({2, 1, 4, 5})), Catch::Contains("mask of shape [2, 1, 4, 5] does not broadcast"));
  REQUIRE_THROWS_WITH(attn->forward(x, {}, {}, {}, zeros<double>({2, 2, 3, 3})), Catch::Contains("pass both past_key and past_value"));
  REQUIRE_THROWS_WITH(attn->forward(x, {}, {}, rnd({3, 2, 6}, 1)), Catch::Contains("key_value_states [3, 2, 6] must be [B = 2, L, 6]"));
}
