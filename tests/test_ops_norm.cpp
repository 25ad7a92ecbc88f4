#include <cmath>

#include "test_util.hpp"
#include "txtcls/ops/norm.hpp"

using namespace txtcls;
using namespace tt;

namespace {

// layer_norm composed from core ops (mean, sub, mul, rsqrt), differentiable through them.
TD composed_layer_norm(const TD& x, const TD& w, const TD& b, double eps) {
  TD c = sub(x, mean(x, {-1}, true));
  TD y = mul(c, rsqrt(add(mean(mul(c, c), {-1}, true), eps)));
  if (w.defined()) y = mul(y, w);
  if (b.defined()) y = add(y, b);
  return y;
}

TD composed_rms_norm(const TD& x, const TD& w, double eps) {
  TD y = mul(x, rsqrt(add(mean(mul(x, x), {-1}, true), eps)));
  return w.defined() ? mul(y, w) : y;
}

// Gradients of sum(f(inputs) * w) wrt every input, via backward.
std::vector<TD> grads_of(const std::function<TD(const std::vector<TD>&)>& f, std::vector<TD> in, const TD& w) {
  for (auto& t : in)
    if (t.defined()) t = t.detach().clone().set_requires_grad(true);
  f(in).backward(w);
  std::vector<TD> g;
  for (auto& t : in) g.push_back(t.defined() ? t.grad() : TD());
  return g;
}

}  // namespace

TEST_CASE("layer_norm: values", "[ops][norm]") {
  // F.layer_norm(torch.tensor([1., 2., 3., 4.]), (4,)): mean 2.5, biased variance 1.25
  auto x = from_vector<double>({1, 2, 3, 4}, {4});
  const double r = 1 / std::sqrt(1.25 + 1e-5);
  require_close(layer_norm(x, TD(), TD()), {-1.5 * r, -0.5 * r, 0.5 * r, 1.5 * r});
  require_close(layer_norm(x, TD(), TD()), {-1.3416354, -0.4472118, 0.4472118, 1.3416354}, 1e-7);
  auto w = from_vector<double>({1, -2, 0.5, 3}, {4}), b = from_vector<double>({0, 1, 2, 3}, {4});
  require_close(layer_norm(x, w, b, 0.0),
                {-1.5 / std::sqrt(1.25), 1 + 1 / std::sqrt(1.25), 2 + 0.25 / std::sqrt(1.25), 3 + 4.5 / std::sqrt(1.25)});

  for (Shape s : {Shape{3, 5}, Shape{2, 3, 7}, Shape{4, 1}, Shape{1, 9}}) {
    INFO(shape_str(s));
    auto xs = rnd(s, 1, -3, 3);
    const int64_t D = s.back();
    auto ws = rnd({D}, 2), bs = rnd({D}, 3);
    require_close(layer_norm(xs, ws, bs), composed_layer_norm(xs, ws, bs, 1e-5).to_vector(), 1e-12);
    require_close(layer_norm(xs, ws, TD()), composed_layer_norm(xs, ws, TD(), 1e-5).to_vector(), 1e-12);
    require_close(layer_norm(xs, TD(), bs, 1e-3), composed_layer_norm(xs, TD(), bs, 1e-3).to_vector(), 1e-12);
    require_close(layer_norm(xs, TD(), TD()), composed_layer_norm(xs, TD(), TD(), 1e-5).to_vector(), 1e-12);
  }
  // non-contiguous input
  auto xt = rnd({6, 4}, 4).t();
  require_close(layer_norm(xt, TD(), TD()), composed_layer_norm(xt.contiguous(), TD(), TD(), 1e-5).to_vector(), 1e-12);
  // a large common offset does not destroy the variance (centred two-sweep variance), even in float
  auto xo = add(rnd({3, 64}, 5), 1e4);
  auto yd = layer_norm(xo, TD(), TD());
  auto yf = layer_norm(cast<float>(xo), Tensor<float>(), Tensor<float>());
  auto vd = yd.to_vector();
  auto vf = yf.to_vector();
  for (size_t i = 0; i < vd.size(); ++i) REQUIRE(std::abs(vf[i] - vd[i]) < 5e-3);
  // empty batch
  REQUIRE(layer_norm(zeros<double>({0, 4}), rnd({4}, 1), rnd({4}, 2)).shape() == Shape{0, 4});
}

TEST_CASE("layer_norm: gradients", "[ops][norm][grad]") {
  for (Shape s : {Shape{3, 5}, Shape{2, 3, 4}, Shape{4, 1}, Shape{1, 6}, Shape{5}}) {
    INFO(shape_str(s));
    const int64_t D = s.back();
    auto x = rnd(s, 1, -2, 2), w = rnd({D}, 2), b = rnd({D}, 3);
    REQUIRE_GRAD([](auto& v) { return layer_norm(v[0], v[1], v[2]); }, x, w, b);
    REQUIRE_GRAD([](auto& v) { return layer_norm(v[0], v[1], TD()); }, x, w);
    REQUIRE_GRAD([](auto& v) { return layer_norm(v[0], TD(), v[1]); }, x, b);
    REQUIRE_GRAD([](auto& v) { return layer_norm(v[0], TD(), TD(), 0.1); }, x);
    // only the parameters need a gradient
    REQUIRE_GRAD([x](auto& v) { return layer_norm(x, v[0], v[1]); }, w, b);
  }
  REQUIRE_GRAD([](auto& v) { return layer_norm(v[0].transpose(0, 1), v[1], v[2]); }, rnd({5, 3}, 4), rnd({5}, 5),
               rnd({5}, 6));
  // empty batch: gradients exist with the right shapes, the parameters' are zero
  auto x0 = zeros<double>({0, 4}).set_requires_grad(true);
  auto w0 = rnd({4}, 1).set_requires_grad(true), b0 = rnd({4}, 2).set_requires_grad(true);
  sum(layer_norm(x0, w0, b0)).backward();
  REQUIRE(x0.grad().shape() == Shape{0, 4});
  require_close(w0.grad(), {0, 0, 0, 0});
  require_close(b0.grad(), {0, 0, 0, 0});
}

TEST_CASE("layer_norm and rms_norm: large inputs match the composed ops, values and gradients", "[ops][norm]") {
  // 150 x 300 crosses the parallel threshold and spreads rows over the reduction partitions
  auto x = rnd({150, 300}, 1, -2, 2), w = rnd({300}, 2), b = rnd({300}, 3), gy = rnd({150, 300}, 4);
  auto ours = grads_of([](auto& v) { return layer_norm(v[0], v[1], v[2]); }, {x, w, b}, gy);
  auto ref = grads_of([](auto& v) { return composed_layer_norm(v[0], v[1], v[2], 1e-5); }, {x, w, b}, gy);
  require_close(layer_norm(x, w, b), composed_layer_norm(x, w, b, 1e-5).to_vector(), 1e-12);
  for (int k = 0; k < 3; ++k) {
    INFO("input " << k);
    require_close(ours[k], ref[k].to_vector(), 1e-10);
  }
  auto ro = grads_of([](auto& v) { return rms_norm(v[0], v[1]); }, {x, w}, gy);
  auto rr = grads_of([](auto& v) { return composed_rms_norm(v[0], v[1], 1e-6); }, {x, w}, gy);
  require_close(rms_norm(x, w), composed_rms_norm(x, w, 1e-6).to_vector(), 1e-12);
  for (int k = 0; k < 2; ++k) {
    INFO("input " << k);
    require_close(ro[k], rr[k].to_vector(), 1e-10);
  }
  // the weight gradient does not depend on the thread count
  const int saved_threads = num_threads();
  set_num_threads(1);
  auto one = grads_of([](auto& v) { return layer_norm(v[0], v[1], v[2]); }, {x, w, b}, gy);
  set_num_threads(3);
  auto three = grads_of([](auto& v) { return layer_norm(v[0], v[1], v[2]); }, {x, w, b}, gy);
  set_num_threads(saved_threads);
  REQUIRE(one[1].to_vector() == three[1].to_vector());
  REQUIRE(one[2].to_vector() == three[2].to_vector());
}

TEST_CASE("rms_norm: values and gradients", "[ops][norm][grad]") {
  // T5LayerNorm: x * rsqrt(mean(x^2) + eps) * w; mean([3, 4]^2) = 12.5
  auto x = from_vector<double>({3, 4}, {1, 2});
  require_close(rms_norm(x, TD(), 0.0), {3 / std::sqrt(12.5), 4 / std::sqrt(12.5)});
  require_close(rms_norm(x, from_vector<double>({2, -1}, {2}), 0.5), {6 / std::sqrt(13.0), -4 / std::sqrt(13.0)});
  for (Shape s : {Shape{3, 5}, Shape{2, 3, 4}, Shape{4, 1}, Shape{6}}) {
    INFO(shape_str(s));
    const int64_t D = s.back();
    auto xs = rnd(s, 1, -2, 2), w = rnd({D}, 2);
    require_close(rms_norm(xs, w), composed_rms_norm(xs, w, 1e-6).to_vector(), 1e-12);
    require_close(rms_norm(xs, TD(), 1e-2), composed_rms_norm(xs, TD(), 1e-2).to_vector(), 1e-12);
    REQUIRE_GRAD([](auto& v) { return rms_norm(v[0], v[1]); }, xs, w);
    REQUIRE_GRAD([](auto& v) { return rms_norm(v[0], TD(), 1e-3); }, xs);
    REQUIRE_GRAD([xs](auto& v) { return rms_norm(xs, v[0]); }, w);
  }
  REQUIRE_GRAD([](auto& v) { return rms_norm(v[0].transpose(0, 1), v[1]); }, rnd({5, 3}, 4), rnd({5}, 5));
  auto x0 = zeros<double>({0, 3}).set_requires_grad(true);
  auto w0 = rnd({3}, 1).set_requires_grad(true);
  sum(rms_norm(x0, w0)).backward();
  REQUIRE(x0.grad().shape() == Shape{0, 3});
  require_close(w0.grad(), {0, 0, 0});
}

TEST_CASE("norms: float32 agrees with float64", "[ops][norm]") {
  auto x = rnd({7, 5, 48}, 1, -3, 3), w = rnd({48}, 2), b = rnd({48}, 3), gy = rnd({7, 5, 48}, 4);
  auto xf = cast<float>(x).set_requires_grad(true), wf = cast<float>(w).set_requires_grad(true),
       bf = cast<float>(b).set_requires_grad(true);
  auto xd = x.detach().set_requires_grad(true), wd = w.detach().set_requires_grad(true),
       bd = b.detach().set_requires_grad(true);
  auto close = [](const TF& f, const TD& d) {
    auto vf = f.to_vector();
    auto vd = d.to_vector();
    REQUIRE(vf.size() == vd.size());
    for (size_t i = 0; i < vd.size(); ++i) {
      INFO("element " << i);
      REQUIRE(std::abs(double(vf[i]) - vd[i]) <= 1e-5 * (1 + std::abs(vd[i])));
    }
  };
  auto yf = layer_norm(xf, wf, bf);
  auto yd = layer_norm(xd, wd, bd);
  close(yf, yd);
  yf.backward(cast<float>(gy));
  yd.backward(gy);
  close(xf.grad(), xd.grad());
  close(bf.grad(), bd.grad());
  // the weight gradient sums 35 rows of O(3) terms: float rounding grows with it
  auto gwf = cast<double>(wf.grad()), gwd = wd.grad();
  require_close(gwf, gwd.to_vector(), 1e-5);
  auto rf = rms_norm(cast<float>(x), cast<float>(w));
  close(rf, rms_norm(x, w));
}

TEST_CASE("norms: errors", "[ops][norm]") {
  auto x = rnd({2, 4}, 1);
  REQUIRE_THROWS_WITH(layer_norm(x, rnd({3}, 2), TD()),
                      Catch::Contains("layer_norm: weight of shape [3] does not match the last dim of input shape [2, 4]"));
  REQUIRE_THROWS_WITH(layer_norm(x, TD(), rnd({4, 1}, 2)),
                      Catch::Contains("layer_norm: bias of shape [4, 1] does not match the last dim of input shape [2, 4]"));
  REQUIRE_THROWS_WITH(rms_norm(x, rnd({2}, 2)), Catch::Contains("rms_norm: weight of shape [2]"));
  REQUIRE_THROWS_WITH(layer_norm(zeros<double>({3, 0}), TD(), TD()),
                      Catch::Contains("layer_norm: the last dim of input shape [3, 0] is empty"));
  REQUIRE_THROWS_WITH(rms_norm(scalar<double>(1.0), TD()),
                      Catch::Contains("rms_norm: input must have at least 1 dim, got shape []"));
}
