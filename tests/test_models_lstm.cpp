// The LSTM: the fused op (ops/lstm.hpp) against PyTorch fixtures, an autograd reference built
// from core ops, closed forms and finite differences; the module (nn/lstm.hpp) with PyTorch's
// parameter names, weight drop and locked dropout; the packed GEMM it runs on.
#include <fstream>
#include <numeric>
#include <nlohmann/json.hpp>

#include "test_util.hpp"
#include "txtcls/nn/lstm.hpp"
#include "txtcls/ops/indexing.hpp"

using namespace txtcls;
using namespace tt;
using json = nlohmann::ordered_json;
using TI = Tensor<int64_t>;

namespace {

const json& fixture_cases() {
  static const json cases = [] {
    const std::string path = std::string(TXTCLS_SOURCE_DIR) + "/tests/fixtures/lstm/lstm_cases.json";
    std::ifstream f(path);
    if (!f) FAIL("missing fixture " << path << " (run tools/make_lstm_fixtures.py)");
    return json::parse(f)["cases"];
  }();
  return cases;
}

template <class T>
Tensor<T> from_json(const json& e) {
  Shape s = e["shape"].get<Shape>();
  std::vector<double> v = e["data"].get<std::vector<double>>();
  std::vector<T> c(v.begin(), v.end());
  return from_vector<T>(c, s);
}

TI lengths_tensor(const std::vector<int64_t>& l) { return from_vector<int64_t>(l); }

// |a - e| <= tol * (1 + |e|) elementwise.
template <class T, class U>
void require_near(const Tensor<T>& a, const Tensor<U>& e, double tol, const std::string& what) {
  INFO(what);
  REQUIRE(a.defined());
  REQUIRE(a.shape() == e.shape());
  auto va = a.to_vector();
  auto ve = e.to_vector();
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    const double err = std::abs(double(va[i]) - double(ve[i])) / (1 + std::abs(double(ve[i])));
    if (err > worst) worst = err, at = i;
  }
  INFO("worst relative error " << worst << " at element " << at);
  REQUIRE(worst <= tol);
}

template <class T>
void require_equal(const Tensor<T>& a, const Tensor<T>& b, const std::string& what) {
  INFO(what);
  REQUIRE(a.shape() == b.shape());
  REQUIRE(a.to_vector() == b.to_vector());
}

template <class F>
auto with_threads(int n, F f) {
  const int prev = num_threads();
  set_num_threads(n);
  auto r = f();
  set_num_threads(prev);
  return r;
}

std::string param_name(const std::string& kind, int64_t layer, int64_t dir) {
  return kind + "_l" + std::to_string(layer) + (dir ? "_reverse" : "");
}

// Runs a fixture case through the op, layer by layer, and checks output and gradients.
template <class T>
void check_case_with_op(const json& c, double tol) {
  const int64_t layers = c["num_layers"], dirs = c["bidirectional"].get<bool>() ? 2 : 1;
  const bool bias = c["bias"];
  INFO("case " << c["name"].get<std::string>());
  Tensor<T> x = from_json<T>(c["x"]).set_requires_grad(true);
  TI len = lengths_tensor(c["lengths"].get<std::vector<int64_t>>());
  std::map<std::string, Tensor<T>> p;
  for (auto& [name, e] : c["params"].items()) p[name] = from_json<T>(e).set_requires_grad(true);
  Tensor<T> h0, c0;
  if (c.contains("h0")) {
    h0 = from_json<T>(c["h0"]).select(0, 0).contiguous().set_requires_grad(true);
    c0 = from_json<T>(c["c0"]).select(0, 0).contiguous().set_requires_grad(true);
  }
  Tensor<T> h = x;
  for (int64_t l = 0; l < layers; ++l) {
    auto w = [&](int64_t d) {
      return LstmWeights<T>{p[param_name("weight_ih", l, d)], p[param_name("weight_hh", l, d)],
                            bias ? p[param_name("bias_ih", l, d)] : Tensor<T>(),
                            bias ? p[param_name("bias_hh", l, d)] : Tensor<T>()};
    };
    if (dirs == 2) {
      h = lstm_bidirectional_layer(h, len, w(0), w(1));
    } else {
      auto w0 = w(0);
      h = lstm_layer(h, len, w0.w_ih, w0.w_hh, w0.b_ih, w0.b_hh, false, h0, c0);
    }
  }
  require_near(h, from_json<double>(c["output"]), tol, "output");
  h.backward(from_json<T>(c["w_out"]));
  require_near(x.grad(), from_json<double>(c["grads"]["x"]), tol, "grad x");
  for (auto& [name, t] : p) require_near(t.grad(), from_json<double>(c["grads"][name]), tol, "grad " + name);
  if (h0.defined()) {
    require_near(h0.grad(), from_json<double>(c["grads"]["h0"]).select(0, 0), tol, "grad h0");
    require_near(c0.grad(), from_json<double>(c["grads"]["c0"]).select(0, 0), tol, "grad c0");
  }
}

// The module loaded with PyTorch's state dict.
template <class T>
void check_case_with_module(const json& c, double tol) {
  INFO("case " << c["name"].get<std::string>());
  nn::LSTM<T> lstm(c["input_size"], c["hidden_size"], c["num_layers"], c["bidirectional"]);
  nn::StateDict<T> sd;
  for (auto& [name, e] : c["params"].items()) sd[name] = from_json<T>(e);
  lstm.load_state_dict(sd);
  // Same names in the same order as torch.nn.LSTM.named_parameters().
  std::vector<std::string> names, expect;
  for (auto& [n, t] : lstm.named_parameters()) names.push_back(n);
  for (auto& [n, e] : c["params"].items()) expect.push_back(n);
  REQUIRE(names == expect);

  Tensor<T> x = from_json<T>(c["x"]).set_requires_grad(true);
  Tensor<T> out = lstm(x, lengths_tensor(c["lengths"].get<std::vector<int64_t>>()));
  require_near(out, from_json<double>(c["output"]), tol, "module output");
  out.backward(from_json<T>(c["w_out"]));
  require_near(x.grad(), from_json<double>(c["grads"]["x"]), tol, "module grad x");
  for (auto& [n, t] : lstm.named_parameters())
    require_near(t.grad(), from_json<double>(c["grads"][n]), tol, "module grad " + n);
}

// An LSTM direction from core ops, one sequence and one step at a time: slow and obviously
// right. Returns the outputs per (b, t) (undefined at padding); gradients flow through autograd.
std::vector<std::vector<TD>> reference_lstm(const TD& x, const std::vector<int64_t>& len, const TD& w_ih, const TD& w_hh,
                                            const TD& b_ih, const TD& b_hh, bool reverse, const TD& h0 = TD(),
                                            const TD& c0 = TD()) {
  const int64_t B = x.size(0), T = x.size(1), H = w_hh.size(1);
  std::vector<std::vector<TD>> out(B, std::vector<TD>(T));
  for (int64_t b = 0; b < B; ++b) {
    TD h = h0.defined() ? h0.select(0, b).unsqueeze(0) : zeros<double>({1, H});
    TD c = c0.defined() ? c0.select(0, b).unsqueeze(0) : zeros<double>({1, H});
    for (int64_t s = 0; s < len[b]; ++s) {
      const int64_t t = reverse ? len[b] - 1 - s : s;
      TD g = add(linear(x.select(0, b).select(0, t).unsqueeze(0), w_ih, b_ih), linear(h, w_hh, b_hh));
      TD i = sigmoid(g.slice(1, 0, H)), f = sigmoid(g.slice(1, H, 2 * H));
      TD gg = tanh(g.slice(1, 2 * H, 3 * H)), o = sigmoid(g.slice(1, 3 * H, 4 * H));
      c = add(mul(f, c), mul(i, gg));
      h = mul(o, tanh(c));
      out[b][t] = h.squeeze(0);
    }
  }
  return out;
}

struct OpCase {
  int64_t I, H;
  std::vector<int64_t> len;
  int64_t T;
};

}  // namespace

// ------------------------------------------------------------------ PyTorch parity
TEST_CASE("lstm op: PyTorch parity in double (outputs and every gradient)", "[models][lstm]") {
  for (const auto& c : fixture_cases()) check_case_with_op<double>(c, 1e-10);
}

TEST_CASE("lstm op: PyTorch parity in float32", "[models][lstm]") {
  for (const auto& c : fixture_cases()) check_case_with_op<float>(c, 1e-5);
}

TEST_CASE("nn::LSTM: loads PyTorch's state dict and matches its outputs and gradients", "[models][lstm]") {
  for (const auto& c : fixture_cases()) {
    if (!c["bias"].get<bool>() || c.contains("h0")) continue;  // the module has biases and zero initial state
    check_case_with_module<double>(c, 1e-10);
    check_case_with_module<float>(c, 1e-5);
  }
}

// ------------------------------------------------------------------ independent references
TEST_CASE("lstm op: matches an autograd reference built from core ops", "[models][lstm]") {
  const std::vector<OpCase> cases = {{3, 4, {6, 2, 1, 4}, 6}, {2, 5, {3, 3}, 5}, {4, 3, {1}, 1}, {5, 2, {0, 3, 2}, 4}};
  uint64_t seed = 100;
  for (const auto& oc : cases)
    for (bool reverse : {false, true})
      for (bool with_state : {false, true}) {
        INFO("I=" << oc.I << " H=" << oc.H << " T=" << oc.T << " reverse=" << reverse << " state=" << with_state);
        const int64_t B = static_cast<int64_t>(oc.len.size()), H = oc.H;
        TD x = rnd({B, oc.T, oc.I}, ++seed).set_requires_grad(true);
        TD w_ih = rnd({4 * H, oc.I}, ++seed, -0.9, 0.9).set_requires_grad(true);
        TD w_hh = rnd({4 * H, H}, ++seed, -0.9, 0.9).set_requires_grad(true);
        TD b_ih = rnd({4 * H}, ++seed).set_requires_grad(true), b_hh = rnd({4 * H}, ++seed).set_requires_grad(true);
        TD h0, c0;
        if (with_state) {
          h0 = rnd({B, H}, ++seed).set_requires_grad(true);
          c0 = rnd({B, H}, ++seed).set_requires_grad(true);
        }
        TD w_out = rnd({B, oc.T, H}, ++seed);
        TD out = lstm_layer(x, lengths_tensor(oc.len), w_ih, w_hh, b_ih, b_hh, reverse, h0, c0);
        out.backward(w_out);
        std::vector<TD> params{x, w_ih, w_hh, b_ih, b_hh};
        if (with_state) params.insert(params.end(), {h0, c0});
        std::vector<TD> fused;
        for (auto& p : params) {
          fused.push_back(p.grad());
          p.zero_grad();
        }

        auto ref = reference_lstm(x, oc.len, w_ih, w_hh, b_ih, b_hh, reverse, h0, c0);
        TD loss = zeros<double>({});
        for (int64_t b = 0; b < B; ++b)
          for (int64_t t = 0; t < oc.T; ++t) {
            TD o = out.select(0, b).select(0, t).detach();
            if (t >= oc.len[b]) {
              for (double v : o.to_vector()) REQUIRE(v == 0.0);
              continue;
            }
            require_near(o, ref[b][t], 1e-12, "output");
            loss = add(loss, sum(mul(ref[b][t], w_out.select(0, b).select(0, t))));
          }
        if (!loss.requires_grad()) continue;  // every length is zero
        loss.backward();
        for (size_t k = 0; k < params.size(); ++k) {
          TD g = params[k].grad().defined() ? params[k].grad() : zeros_like(params[k]);
          require_near(fused[k], g, 1e-12, "gradient of input " + std::to_string(k));
        }
      }
}

TEST_CASE("lstm op: closed form of a single step from a zero state, both directions", "[models][lstm]") {
  // x [1, 3, 2] of which only the first 2 steps are valid; the reverse direction's first step
  // is t = 1 (the sequence's own end), so its output there is one cell update of x[1].
  const int64_t H = 2, I = 2;
  TD x = from_vector<double>({0.5, -1.0, 0.25, 0.75, 9.0, 9.0}, {1, 3, I});
  TD w_ih = rnd({4 * H, I}, 1), w_hh = rnd({4 * H, H}, 2), b_ih = rnd({4 * H}, 3), b_hh = rnd({4 * H}, 4);
  auto one_step = [&](int64_t t, int64_t u) {
    auto gate = [&](int64_t q) {
      double z = b_ih.at({q * H + u}) + b_hh.at({q * H + u});
      for (int64_t k = 0; k < I; ++k) z += w_ih.at({q * H + u, k}) * x.at({0, t, k});
      return z;
    };
    auto sig = [](double z) { return 1 / (1 + std::exp(-z)); };
    const double c = sig(gate(0)) * std::tanh(gate(2));
    return sig(gate(3)) * std::tanh(c);
  };
  TD fwd = lstm_layer(x, lengths_tensor({2}), w_ih, w_hh, b_ih, b_hh, false);
  TD rev = lstm_layer(x, lengths_tensor({2}), w_ih, w_hh, b_ih, b_hh, true);
  for (int64_t u = 0; u < H; ++u) {
    REQUIRE(fwd.at({0, 0, u}) == Approx(one_step(0, u)).epsilon(1e-14));
    REQUIRE(rev.at({0, 1, u}) == Approx(one_step(1, u)).epsilon(1e-14));
    REQUIRE(fwd.at({0, 2, u}) == 0.0);
    REQUIRE(rev.at({0, 2, u}) == 0.0);
  }
}

TEST_CASE("lstm op: a sequence's output does not depend on the rest of the batch", "[models][lstm]") {
  const std::vector<int64_t> len{2, 7, 4, 7, 1};
  const int64_t B = 5, T = 7, I = 3, H = 4;
  TD x = rnd({B, T, I}, 11);
  LstmWeights<double> f{rnd({4 * H, I}, 12), rnd({4 * H, H}, 13), rnd({4 * H}, 14), rnd({4 * H}, 15)};
  LstmWeights<double> r{rnd({4 * H, I}, 16), rnd({4 * H, H}, 17), rnd({4 * H}, 18), rnd({4 * H}, 19)};
  TD all = lstm_bidirectional_layer(x, lengths_tensor(len), f, r);
  for (int64_t b = 0; b < B; ++b) {
    TD xb = x.slice(0, b, b + 1).slice(1, 0, len[b]).contiguous();
    TD alone = lstm_bidirectional_layer(xb, lengths_tensor({len[b]}), f, r);
    require_near(all.slice(0, b, b + 1).slice(1, 0, len[b]), alone, 1e-14, "sequence " + std::to_string(b));
  }
}

// ------------------------------------------------------------------ finite differences
TEST_CASE("lstm op: gradcheck of every input, both directions, ragged lengths", "[models][lstm]") {
  const std::vector<OpCase> cases = {{3, 2, {4, 1, 3}, 4}, {2, 3, {1}, 1}, {2, 2, {2, 0, 3}, 3}, {1, 3, {5, 5}, 5}};
  uint64_t seed = 300;
  for (const auto& oc : cases)
    for (bool reverse : {false, true}) {
      INFO("I=" << oc.I << " H=" << oc.H << " reverse=" << reverse);
      const int64_t B = static_cast<int64_t>(oc.len.size()), H = oc.H;
      TI len = lengths_tensor(oc.len);
      auto f = [&](const std::vector<TD>& in) {
        return lstm_layer(in[0], len, in[1], in[2], in[3], in[4], reverse, in[5], in[6]);
      };
      REQUIRE_GRAD(f, rnd({B, oc.T, oc.I}, ++seed), rnd({4 * H, oc.I}, ++seed), rnd({4 * H, H}, ++seed),
                   rnd({4 * H}, ++seed), rnd({4 * H}, ++seed), rnd({B, H}, ++seed), rnd({B, H}, ++seed));
    }
}

TEST_CASE("lstm op: gradcheck of the bidirectional layer", "[models][lstm]") {
  TI len = lengths_tensor({3, 1, 4});
  auto f = [&](const std::vector<TD>& in) {
    return lstm_bidirectional_layer(in[0], len, {in[1], in[2], in[3], in[4]}, {in[5], in[6], in[7], in[8]});
  };
  REQUIRE_GRAD(f, rnd({3, 4, 2}, 1), rnd({12, 2}, 2), rnd({12, 3}, 3), rnd({12}, 4), rnd({12}, 5), rnd({12, 2}, 6),
               rnd({12, 3}, 7), rnd({12}, 8), rnd({12}, 9));
}

TEST_CASE("lstm op: without biases", "[models][lstm]") {
  TI len = lengths_tensor({2, 3});
  auto f = [&](const std::vector<TD>& in) { return lstm_layer(in[0], len, in[1], in[2], TD(), TD(), true); };
  REQUIRE_GRAD(f, rnd({2, 3, 2}, 1), rnd({8, 2}, 2), rnd({8, 2}, 3));
}

// ------------------------------------------------------------------ padding
TEST_CASE("lstm op: padding never leaks into outputs or gradients", "[models][lstm]") {
  const std::vector<int64_t> len{5, 2, 3};
  const int64_t B = 3, T = 6, I = 3, H = 3;
  TI lengths = lengths_tensor(len);
  LstmWeights<double> f{rnd({4 * H, I}, 1), rnd({4 * H, H}, 2), rnd({4 * H}, 3), rnd({4 * H}, 4)};
  LstmWeights<double> r{rnd({4 * H, I}, 5), rnd({4 * H, H}, 6), rnd({4 * H}, 7), rnd({4 * H}, 8)};
  auto run = [&](TD x, TD w_out) {
    x.set_requires_grad(true);
    std::vector<TD> ps;
    for (auto* w : {&f, &r})
      for (auto* t : {&w->w_ih, &w->w_hh, &w->b_ih, &w->b_hh}) {
        t->zero_grad();
        t->set_requires_grad(true);
        ps.push_back(*t);
      }
    TD out = lstm_bidirectional_layer(x, lengths, f, r);
    out.backward(w_out);
    std::vector<TD> res{out.detach(), x.grad()};
    for (auto& p : ps) res.push_back(p.grad().clone());
    return res;
  };
  TD x = rnd({B, T, I}, 20), w_out = rnd({B, T, 2 * H}, 21);
  TD x2 = x.clone(), w_out2 = w_out.clone();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = len[b]; t < T; ++t) {
      for (int64_t i = 0; i < I; ++i) x2.set({b, t, i}, 1e3 * (i + 1));
      for (int64_t j = 0; j < 2 * H; ++j) w_out2.set({b, t, j}, -7.0);
    }
  auto a = run(x, w_out), b = run(x2, w_out2);
  require_equal(a[0], b[0], "output");
  for (size_t k = 2; k < a.size(); ++k) require_equal(a[k], b[k], "weight gradient " + std::to_string(k - 2));
  require_equal(a[1], b[1], "input gradient");
  for (int64_t bb = 0; bb < B; ++bb)
    for (int64_t t = len[bb]; t < T; ++t)
      for (int64_t i = 0; i < I; ++i) REQUIRE(a[1].at({bb, t, i}) == 0.0);
}

TEST_CASE("lstm op: degenerate batches", "[models][lstm]") {
  const int64_t H = 2;
  LstmWeights<double> w{rnd({4 * H, 3}, 1).set_requires_grad(true), rnd({4 * H, H}, 2).set_requires_grad(true),
                        rnd({4 * H}, 3).set_requires_grad(true), rnd({4 * H}, 4).set_requires_grad(true)};
  SECTION("every length zero: zero output, zero gradients") {
    TD x = rnd({2, 3, 3}, 5).set_requires_grad(true);
    TD out = lstm_layer(x, lengths_tensor({0, 0}), w.w_ih, w.w_hh, w.b_ih, w.b_hh, false);
    for (double v : out.to_vector()) REQUIRE(v == 0.0);
    out.backward(ones<double>(out.shape()));
    for (TD g : {x.grad(), w.w_ih.grad(), w.w_hh.grad(), w.b_ih.grad()})
      for (double v : g.to_vector()) REQUIRE(v == 0.0);
  }
  SECTION("empty batch") {
    TD out = lstm_bidirectional_layer(zeros<double>({0, 4, 3}), lengths_tensor({}), w, w);
    REQUIRE(out.shape() == Shape{0, 4, 2 * H});
  }
  SECTION("no history under NoGradGuard") {
    NoGradGuard ng;
    TD out = lstm_layer(rnd({1, 2, 3}, 6), lengths_tensor({2}), w.w_ih, w.w_hh, w.b_ih, w.b_hh, false);
    REQUIRE_FALSE(out.requires_grad());
  }
}

TEST_CASE("lstm op: errors name the op and the shapes", "[models][lstm]") {
  const int64_t H = 2;
  TD w_ih = rnd({4 * H, 3}, 1), w_hh = rnd({4 * H, H}, 2), b = rnd({4 * H}, 3);
  TD x = rnd({2, 4, 3}, 4);
  using Catch::Matchers::Contains;
  REQUIRE_THROWS_WITH(lstm_layer(rnd({2, 3}, 1), lengths_tensor({1, 1}), w_ih, w_hh, b, b, false),
                      Contains("lstm_layer") && Contains("[B, T, I]"));
  REQUIRE_THROWS_WITH(lstm_layer(x, lengths_tensor({1, 5}), w_ih, w_hh, b, b, false),
                      Contains("lstm_layer") && Contains("lengths[1] = 5"));
  REQUIRE_THROWS_WITH(lstm_layer(x, lengths_tensor({1}), w_ih, w_hh, b, b, false), Contains("lengths must be [B]"));
  REQUIRE_THROWS_WITH(lstm_layer(x, lengths_tensor({1, 1}), rnd({4 * H, 2}, 1), w_hh, b, b, false),
                      Contains("w_ih must be [4H, I]"));
  REQUIRE_THROWS_WITH(lstm_layer(x, lengths_tensor({1, 1}), w_ih, rnd({4 * H, 3}, 1), b, b, false),
                      Contains("w_hh must be [4H, H]"));
  REQUIRE_THROWS_WITH(lstm_layer(x, lengths_tensor({1, 1}), w_ih, w_hh, rnd({H}, 1), b, false), Contains("biases"));
  REQUIRE_THROWS_WITH(lstm_layer(x, lengths_tensor({1, 1}), w_ih, w_hh, b, b, false, rnd({2, 3}, 1)),
                      Contains("initial states"));
  REQUIRE_THROWS_WITH(
      lstm_bidirectional_layer(x, lengths_tensor({1, 1}), {w_ih, w_hh, b, b}, {rnd({12, 3}, 1), rnd({12, 3}, 2), TD(), TD()}),
      Contains("lstm_bidirectional_layer") && Contains("hidden size"));
}

// ------------------------------------------------------------------ threads and float32
TEST_CASE("lstm op: results do not depend on the thread count (chunked hidden units)", "[models][lstm]") {
  const int64_t B = 16, T = 24, I = 12, H = 40;
  std::vector<int64_t> len(B);
  for (int64_t b = 0; b < B; ++b) len[b] = 24 - (b * 7) % 23;
  TI lengths = lengths_tensor(len);
  LstmWeights<double> f{rnd({4 * H, I}, 1, -0.3, 0.3), rnd({4 * H, H}, 2, -0.3, 0.3), rnd({4 * H}, 3), rnd({4 * H}, 4)};
  LstmWeights<double> r{rnd({4 * H, I}, 5, -0.3, 0.3), rnd({4 * H, H}, 6, -0.3, 0.3), rnd({4 * H}, 7), rnd({4 * H}, 8)};
  TD x = rnd({B, T, I}, 9), w_out = rnd({B, T, 2 * H}, 10);
  auto run = [&](bool bidir) {
    TD xx = x.clone().set_requires_grad(true);
    std::vector<TD> ps;
    for (auto* w : {&f, &r})
      for (auto* t : {&w->w_ih, &w->w_hh, &w->b_ih}) {
        t->zero_grad();
        t->set_requires_grad(true);
        ps.push_back(*t);
      }
    TD out = bidir ? lstm_bidirectional_layer(xx, lengths, f, r)
                   : lstm_layer(xx, lengths, f.w_ih, f.w_hh, f.b_ih, f.b_hh, false);
    out.backward(bidir ? w_out : w_out.slice(2, 0, H).contiguous());
    std::vector<TD> res{out.detach(), xx.grad()};
    for (auto& p : ps) res.push_back(p.grad().defined() ? p.grad().clone() : TD());
    return res;
  };
  for (bool bidir : {false, true}) {
    INFO("bidirectional " << bidir);
    auto one = with_threads(1, [&] { return run(bidir); });
    for (int n : {2, 3, 4}) {
      INFO(n << " threads");
      // The multi-threaded, chunked path is the one under test.
      const int64_t rows = std::accumulate(len.begin(), len.end(), int64_t(0));
      auto team = with_threads(n, [&] { return detail::lstm_team(bidir ? 2 : 1, H, rows); });
      REQUIRE(team.first > 1);
      auto many = with_threads(n, [&] { return run(bidir); });
      for (size_t k = 0; k < one.size(); ++k)
        if (one[k].defined()) require_near(many[k], one[k], 1e-12, "tensor " + std::to_string(k));
    }
  }
}

TEST_CASE("lstm op: correct when the runtime grants fewer threads than planned", "[models][lstm]") {
  // Called from inside a parallel region the op's own region may get a single thread, which
  // then runs every (direction, chunk) item of each phase in turn.
  const int64_t B = 16, T = 40, I = 8, H = 48;
  std::vector<int64_t> len(B);
  for (int64_t b = 0; b < B; ++b) len[b] = 1 + (b * 13) % 40;
  TI lengths = lengths_tensor(len);
  LstmWeights<double> f{rnd({4 * H, I}, 1, -0.3, 0.3), rnd({4 * H, H}, 2, -0.3, 0.3), rnd({4 * H}, 3), rnd({4 * H}, 4)};
  TD x = rnd({B, T, I}, 5);
  NoGradGuard ng;
  TD serial = with_threads(1, [&] { return lstm_bidirectional_layer(x, lengths, f, f); });
  std::vector<TD> outs(2);
  with_threads(4, [&] {
#pragma omp parallel num_threads(2)
    {
      NoGradGuard inner;
      outs[detail::team_rank()] = lstm_bidirectional_layer(x, lengths, f, f);
    }
    return 0;
  });
  for (auto& o : outs)
    if (o.defined()) require_near(o, serial, 1e-12, "nested call");
}

TEST_CASE("lstm op: float32 agrees with float64 on a larger ragged batch", "[models][lstm]") {
  const int64_t B = 7, T = 33, I = 21, H = 37;
  std::vector<int64_t> len{33, 1, 17, 30, 33, 8, 2};
  TI lengths = lengths_tensor(len);
  TD x = rnd({B, T, I}, 1), w_out = rnd({B, T, 2 * H}, 2);
  std::vector<TD> wd{rnd({4 * H, I}, 3, -0.2, 0.2), rnd({4 * H, H}, 4, -0.2, 0.2), rnd({4 * H}, 5), rnd({4 * H}, 6),
                     rnd({4 * H, I}, 7, -0.2, 0.2), rnd({4 * H, H}, 8, -0.2, 0.2), rnd({4 * H}, 9), rnd({4 * H}, 10)};
  auto run = [&](auto tag) {
    using T_ = decltype(tag);
    Tensor<T_> xx = cast<T_>(x).set_requires_grad(true);
    std::vector<Tensor<T_>> w;
    for (auto& t : wd) w.push_back(cast<T_>(t).set_requires_grad(true));
    Tensor<T_> out = lstm_bidirectional_layer(xx, lengths, {w[0], w[1], w[2], w[3]}, {w[4], w[5], w[6], w[7]});
    out.backward(cast<T_>(w_out));
    std::vector<TD> res{cast<double>(out.detach()), cast<double>(xx.grad())};
    for (auto& t : w) res.push_back(cast<double>(t.grad()));
    return res;
  };
  auto d = run(0.0);
  auto f = run(0.0f);
  for (size_t k = 0; k < d.size(); ++k) {
    // Relative to the tensor's scale: gradients are sums over up to B*T steps.
    double scale = 0;
    for (double v : d[k].to_vector()) scale = std::max(scale, std::abs(v));
    auto vf = f[k].to_vector(), vd = d[k].to_vector();
    double worst = 0;
    for (size_t i = 0; i < vd.size(); ++i) worst = std::max(worst, std::abs(vf[i] - vd[i]) / (1 + scale));
    INFO("tensor " << k << " worst " << worst);
    REQUIRE(worst < 2e-5);
  }
}

// ------------------------------------------------------------------ the module
TEST_CASE("nn::LSTM: PyTorch's parameter names, shapes and initialisation range", "[models][lstm]") {
  Generator g(5);
  nn::LSTM<double> lstm(7, 5, 2, true, 0.0, 0.0, g);
  const std::vector<std::pair<std::string, Shape>> expect = {
      {"weight_ih_l0", {20, 7}},          {"weight_hh_l0", {20, 5}},         {"bias_ih_l0", {20}},
      {"bias_hh_l0", {20}},               {"weight_ih_l0_reverse", {20, 7}}, {"weight_hh_l0_reverse", {20, 5}},
      {"bias_ih_l0_reverse", {20}},       {"bias_hh_l0_reverse", {20}},      {"weight_ih_l1", {20, 10}},
      {"weight_hh_l1", {20, 5}},          {"bias_ih_l1", {20}},              {"bias_hh_l1", {20}},
      {"weight_ih_l1_reverse", {20, 10}}, {"weight_hh_l1_reverse", {20, 5}}, {"bias_ih_l1_reverse", {20}},
      {"bias_hh_l1_reverse", {20}}};
  auto named = lstm.named_parameters();
  REQUIRE(named.size() == expect.size());
  const double bound = 1 / std::sqrt(5.0);
  double lo = 1, hi = -1;
  for (size_t i = 0; i < expect.size(); ++i) {
    REQUIRE(named[i].first == expect[i].first);
    REQUIRE(named[i].second.shape() == expect[i].second);
    for (double v : named[i].second.to_vector()) lo = std::min(lo, v), hi = std::max(hi, v);
  }
  REQUIRE(lo >= -bound);
  REQUIRE(hi <= bound);
  REQUIRE(lo < -0.9 * bound);  // the whole range is used
  REQUIRE(hi > 0.9 * bound);
  REQUIRE(lstm.output_size() == 10);
  REQUIRE(lstm.weight_drop_targets() == std::vector<std::string>{"weight_hh_l0"});
}

TEST_CASE("nn::LSTM: weight drop is dropout of the raw W_hh, redrawn every training forward", "[models][lstm]") {
  Generator init(1);
  const int64_t B = 3, T = 5, I = 4, H = 3;
  nn::LSTM<double> lstm(I, H, 1, true, 0.0, 0.4, init);
  Generator g(77);
  lstm.set_generator(&g);
  TD x = rnd({B, T, I}, 2);
  TI len = lengths_tensor({5, 3, 1});
  const auto& f = lstm.layer_weights(0, 0);
  const auto& r = lstm.layer_weights(0, 1);

  SECTION("training: only weight_hh_l0 is masked, with the generator's next draw") {
    Generator same(77);
    TD dropped = dropout(f.w_hh.detach(), 0.4, same);
    TD expect = lstm_bidirectional_layer(x, len, {f.w_ih, dropped, f.b_ih, f.b_hh}, r);
    TD out = lstm(x, len);
    require_near(out, expect, 0, "output");
    REQUIRE(g.offset() == static_cast<uint64_t>(4 * H * H));
    TD again = lstm(x, len);
    REQUIRE(g.offset() == static_cast<uint64_t>(8 * H * H));
    REQUIRE(again.to_vector() != out.to_vector());  // a fresh mask
  }
  SECTION("evaluation: no mask, no draw") {
    lstm.eval();
    TD out = lstm(x, len);
    require_near(out, lstm_bidirectional_layer(x, len, f, r), 0, "output");
    REQUIRE(g.offset() == 0);
  }
  SECTION("every recurrent matrix, when asked") {
    lstm.set_weight_drop_targets({"weight_hh_l0", "weight_hh_l0_reverse"});
    Generator same(77);
    TD df = dropout(f.w_hh.detach(), 0.4, same), dr = dropout(r.w_hh.detach(), 0.4, same);
    TD out = lstm(x, len);
    require_near(out, lstm_bidirectional_layer(x, len, {f.w_ih, df, f.b_ih, f.b_hh}, {r.w_ih, dr, r.b_ih, r.b_hh}), 0,
                 "output");
    REQUIRE_THROWS_WITH(lstm.set_weight_drop_targets({"weight_hh_l1"}), Catch::Matchers::Contains("weight_hh_l1"));
  }
}

TEST_CASE("nn::LSTM: dropout between layers, locked by default or elementwise", "[models][lstm]") {
  Generator init(3);
  const int64_t B = 2, T = 4, I = 3, H = 2;
  nn::LSTM<double> lstm(I, H, 2, false, 0.5, 0.0, init);
  Generator g(9);
  lstm.set_generator(&g);
  TD x = rnd({B, T, I}, 4);
  TI len = lengths_tensor({4, 2});
  const auto& w0 = lstm.layer_weights(0);
  const auto& w1 = lstm.layer_weights(1);
  Generator same(9);
  TD h = lstm_layer(x, len, w0.w_ih, w0.w_hh, w0.b_ih, w0.b_hh, false);
  h = locked_dropout(h, 0.5, same);
  TD expect = lstm_layer(h, len, w1.w_ih, w1.w_hh, w1.b_ih, w1.b_hh, false);
  require_near(lstm(x, len), expect, 0, "output");
  REQUIRE(g.offset() == static_cast<uint64_t>(B * H));

  // Elementwise instead, as torch.nn.LSTM's own `dropout`.
  lstm.set_locked_layer_dropout(false);
  g.set_state(9, 0);
  Generator same2(9);
  TD h2 = dropout(lstm_layer(x, len, w0.w_ih, w0.w_hh, w0.b_ih, w0.b_hh, false), 0.5, same2);
  require_near(lstm(x, len), lstm_layer(h2, len, w1.w_ih, w1.w_hh, w1.b_ih, w1.b_hh, false), 0, "elementwise");
  REQUIRE(g.offset() == static_cast<uint64_t>(B * T * H));
  lstm.eval();
  TD plain = lstm_layer(lstm_layer(x, len, w0.w_ih, w0.w_hh, w0.b_ih, w0.b_hh, false), len, w1.w_ih, w1.w_hh, w1.b_ih,
                        w1.b_hh, false);
  require_near(lstm(x, len), plain, 0, "eval output");
}

TEST_CASE("nn::LSTM: finite differences through weight drop and locked dropout", "[models][lstm]") {
  // The module's parameter gradients at a fixed generator state, against central differences
  // of the same training forward (the generator is reset before every evaluation).
  Generator init(11);
  const int64_t B = 3, T = 4, I = 2, H = 2;
  nn::LSTM<double> lstm(I, H, 2, true, 0.3, 0.5, init);
  lstm.set_weight_drop_targets({"weight_hh_l0", "weight_hh_l1_reverse"});
  Generator g(0);
  lstm.set_generator(&g);
  TD x = rnd({B, T, I}, 12), w_out = rnd({B, T, 2 * H}, 13);
  TI len = lengths_tensor({4, 1, 3});
  auto loss = [&] {
    g.set_state(21, 0);
    return sum(mul(lstm(x, len), w_out));
  };
  lstm.zero_grad();
  loss().backward();
  const double eps = 1e-6;
  for (auto& [name, p] : lstm.named_parameters()) {
    TD grad = p.grad();
    REQUIRE(grad.defined());
    for (int64_t i = 0; i < p.numel(); ++i) {
      NoGradGuard ng;
      double* v = p.data() + i;
      const double orig = *v;
      *v = orig + eps;
      const double fp = loss().item();
      *v = orig - eps;
      const double fm = loss().item();
      *v = orig;
      const double num = (fp - fm) / (2 * eps);
      INFO(name << "[" << i << "]: analytic " << grad.data()[i] << " numeric " << num);
      REQUIRE(std::abs(grad.data()[i] - num) <= 1e-7 + 1e-5 * std::abs(num));
    }
  }
}

TEST_CASE("nn::LSTM: input shape errors name the module", "[models][lstm]") {
  nn::LSTM<double> lstm(3, 2);
  REQUIRE_THROWS_WITH(lstm(rnd({2, 4, 5}, 1), lengths_tensor({1, 1})), Catch::Matchers::Contains("LSTM(3 -> 2)"));
  REQUIRE_THROWS_WITH(nn::LSTM<double>(3, 2, 1, false, 1.5), Catch::Matchers::Contains("dropout_between_layers"));
}

// ------------------------------------------------------------------ packed GEMM
namespace {

// C = C0 + A B (or A B) through gemm() and PackedLhs, against Eigen's product and a direct sum.
template <class T>
void check_gemm_case(int64_t M, int64_t N, int64_t K, bool arm, bool brm, bool acc, Generator& g) {
  INFO("M=" << M << " N=" << N << " K=" << K << " a_row_major=" << arm << " b_row_major=" << brm
            << " accumulate=" << acc << " double=" << (sizeof(T) == 8));
  const double tol = sizeof(T) == 8 ? 1e-12 : 1e-4;
  // Leading dims larger than the matrices, to catch stride mistakes.
  const int64_t lda = (arm ? K : M) + 3, ldb = (brm ? N : K) + 2, ldc = M + 5;
  auto A = rand_uniform<T>({std::max<int64_t>(1, (arm ? M : K) * lda)}, g, -1, 1);
  auto Bm = rand_uniform<T>({std::max<int64_t>(1, (brm ? K : N) * ldb)}, g, -1, 1);
  auto C0 = rand_uniform<T>({std::max<int64_t>(1, N * ldc)}, g, -1, 1);
  auto a = arm ? detail::row_major_ref<T>(A.data(), M, K, lda) : detail::col_major_ref<T>(A.data(), M, K, lda);
  auto b = brm ? detail::row_major_ref<T>(Bm.data(), K, N, ldb) : detail::col_major_ref<T>(Bm.data(), K, N, ldb);
  Tensor<T> ref = C0.clone(), blocked = C0.clone(), packed = C0.clone();
  detail::gemm_reference<T>({ref.data(), ldc}, a, b, acc);
  detail::gemm<T>({blocked.data(), ldc}, a, b, acc);
  detail::PackedLhs<T> pl(a);
  detail::AlignedVec<T> scratch(static_cast<size_t>(pl.scratch_size(N)));
  pl.multiply_add({packed.data(), ldc}, b, scratch.data(), acc);

  double worst_blocked = 0, worst_packed = 0;
  bool outside_untouched = true;
  for (int64_t j = 0; j < N; ++j)
    for (int64_t i = 0; i < ldc; ++i) {
      const int64_t k = i + j * ldc;
      if (i >= M) {
        outside_untouched = outside_untouched && blocked.data()[k] == C0.data()[k] && packed.data()[k] == C0.data()[k];
        continue;
      }
      const double scale = 1 + std::abs(double(ref.data()[k]));
      worst_blocked = std::max(worst_blocked, std::abs(double(blocked.data()[k] - ref.data()[k])) / scale);
      worst_packed = std::max(worst_packed, std::abs(double(packed.data()[k] - ref.data()[k])) / scale);
    }
  REQUIRE(outside_untouched);
  REQUIRE(worst_blocked <= tol);
  REQUIRE(worst_packed <= tol);
  if (K > 0 && M > 0 && N > 0) {  // the reference itself, element (0, 0)
    T direct = acc ? C0.data()[0] : T(0);
    for (int64_t k = 0; k < K; ++k) direct += a.p[k * a.cs] * b.p[k * b.rs];
    REQUIRE(std::abs(ref.data()[0] - direct) <= tol * (1 + std::abs(direct)));
  }
}

}  // namespace

TEST_CASE("packed gemm: blocked and pre-packed products match Eigen's on awkward shapes", "[models][lstm][gemm]") {
  Generator g(4);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    // Every layout on small and empty shapes (N covers each way of cutting columns into panels;
    // M = 32, K = 19: whole 16-row panels packed by 8 x 8 transposes and a tail of 3 steps).
    for (auto [M, N, K] : std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {5, 3, 7}, {17, 8, 5}, {9, 13, 11}, {33, 32, 40}, {9, 21, 11}, {20, 40, 17}, {32, 48, 19}, {37, 29, 300}, {0, 4, 3}, {4, 0, 3}, {4, 5, 0}})
      for (bool arm : {false, true})
        for (bool brm : {false, true})
          for (bool acc : {false, true}) check_gemm_case<T>(M, N, K, arm, brm, acc, g);
    // Several cache blocks along each of M, N and K for every kernel; two layouts keep it quick.
    check_gemm_case<T>(1030, 780, 260, true, false, true, g);
    check_gemm_case<T>(1030, 780, 260, false, true, false, g);
  };
  run(0.0);
  run(0.0f);
}
