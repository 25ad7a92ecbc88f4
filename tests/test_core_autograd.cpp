#include "test_util.hpp"

using namespace txtcls;
using namespace tt;

TEST_CASE("autograd: chain rule, accumulation, leaves", "[autograd]") {
  auto x = from_vector<double>({1, 2, 3}, {3}).set_requires_grad();
  auto y = sum(mul(x, x));  // dy/dx = 2x
  y.backward();
  require_close(x.grad(), {2, 4, 6});
  // gradients accumulate across backward calls until zeroed
  sum(mul(x, 3.0)).backward();
  require_close(x.grad(), {5, 7, 9});
  x.zero_grad();
  REQUIRE(!x.grad().defined());
  // a tensor used twice gets both contributions
  auto z = sum(add(mul(x, x), x));
  z.backward();
  require_close(x.grad(), {3, 5, 7});
}

TEST_CASE("autograd: no-grad guard, detach, errors", "[autograd]") {
  auto x = from_vector<double>({1, 2}, {2}).set_requires_grad();
  {
    NoGradGuard ng;
    auto y = mul(x, x);
    REQUIRE(!y.requires_grad());
  }
  auto d = x.detach();
  REQUIRE(!d.requires_grad());
  REQUIRE(d.data() == x.data());
  auto y = sum(mul(x, x));
  y.backward();
  REQUIRE_THROWS_WITH(y.backward(), Catch::Contains("already freed"));
  REQUIRE_THROWS_WITH(mul(x, x).backward(), Catch::Contains("not a scalar"));
  REQUIRE_THROWS_WITH(sum(ones<double>({2})).backward(), Catch::Contains("does not require grad"));
  auto h = mul(x, x);
  REQUIRE_THROWS_WITH(h.set_requires_grad(true), Catch::Contains("only leaf tensors"));
}

TEST_CASE("autograd: non-scalar backward with explicit gradient; deep graphs", "[autograd]") {
  auto x = from_vector<double>({1, 2, 3}, {3}).set_requires_grad();
  auto y = mul(x, 2.0);
  y.backward(from_vector<double>({1, 10, 100}, {3}));
  require_close(x.grad(), {2, 20, 200});
  // 20000 chained ops must not overflow the stack (long recurrences)
  auto w = scalar<double>(1.0).set_requires_grad();
  Tensor<double> h = scalar<double>(0.0);
  for (int i = 0; i < 20000; ++i) h = add(h, w);
  h.backward();
  REQUIRE(w.grad().item() == 20000.0);
}

TEST_CASE("autograd through views", "[autograd]") {
  auto f = [](const std::vector<TD>& v) {
    auto x = v[0];
    return add(x.transpose(0, 1).slice(0, 1, 3), x.permute({1, 0}).select(0, 0).unsqueeze(0).expand({2, 3}));
  };
  REQUIRE_GRAD(f, rnd({3, 4}, 1));
  auto g = [](const std::vector<TD>& v) { return v[0].slice(1, 0, 5, 2).reshape({-1}).contiguous(); };
  REQUIRE_GRAD(g, rnd({2, 5}, 2));
  auto h = [](const std::vector<TD>& v) { return v[0].transpose(0, 1).flatten(); };
  REQUIRE_GRAD(h, rnd({3, 2}, 3));
}
