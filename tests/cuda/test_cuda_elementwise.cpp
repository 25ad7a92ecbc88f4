// Elementwise ops and sum reductions on the GPU against the CPU ops, forward and backward, on
// awkward sizes (1, 31, 1025, 4099, odd broadcasts, transposed and offset views that defeat the
// vector path), with every output allocation poisoned (cuda_main.cpp).
#include <functional>

#include "cuda_test_util.hpp"

// In a namespace of its own: test files are compiled several to a unit (TXTCLS_UNITY_BUILD).
namespace test_cuda_elementwise {

using namespace txtcls;
using ct::gpu;

namespace {

const std::vector<Shape> kShapes = {{1}, {31}, {1025}, {4099}, {3, 5, 7}, {2, 1, 33}};

// Runs f on CPU and GPU copies of x (with an upstream gradient), compares outputs and dx.
template <class T>
void check_unary(const std::function<Tensor<T>(const Tensor<T>&)>& f, const Tensor<T>& x0, uint64_t seed) {
  Tensor<T> x = x0.detach().set_requires_grad();
  Tensor<T> y = f(x);
  Tensor<T> gy = ct::rnd<T>(y.shape(), seed + 1);
  y.backward(gy);
  Tensor<T> xg = x0.detach().to(gpu()).set_requires_grad();
  Tensor<T> yg = f(xg);
  REQUIRE(yg.device() == gpu());
  yg.backward(gy.to(gpu()));
  CT_REQUIRE_CLOSE(yg.cpu(), y, T);
  REQUIRE(xg.grad().defined());
  CT_REQUIRE_CLOSE(xg.grad().cpu(), x.grad(), T);
}

template <class T>
void unary_suite() {
  using F = std::function<Tensor<T>(const Tensor<T>&)>;
  const std::vector<std::pair<std::string, F>> ops = {
      {"neg", [](const Tensor<T>& x) { return neg(x); }},
      {"exp", [](const Tensor<T>& x) { return exp(x); }},
      {"tanh", [](const Tensor<T>& x) { return tanh(x); }},
      {"sigmoid", [](const Tensor<T>& x) { return sigmoid(x); }},
      {"relu", [](const Tensor<T>& x) { return relu(x); }},
      {"abs", [](const Tensor<T>& x) { return abs(x); }},
      {"softplus", [](const Tensor<T>& x) { return softplus(x); }},
      {"gelu", [](const Tensor<T>& x) { return gelu(x); }},
      {"gelu_tanh", [](const Tensor<T>& x) { return gelu(x, GeluForm::Tanh); }},
      {"affine", [](const Tensor<T>& x) { return affine(x, T(-1.75), T(0.5)); }},
      // positive domains
      {"log", [](const Tensor<T>& x) { return log(add(abs(x), T(0.1))); }},
      {"sqrt", [](const Tensor<T>& x) { return sqrt(add(abs(x), T(0.1))); }},
      {"rsqrt", [](const Tensor<T>& x) { return rsqrt(add(abs(x), T(0.1))); }},
      {"pow", [](const Tensor<T>& x) { return pow(add(abs(x), T(0.1)), 1.5); }},
      {"rdiv", [](const Tensor<T>& x) { return rdiv(T(3), add(abs(x), T(0.5))); }},
  };
  uint64_t seed = 100;
  for (const auto& [name, f] : ops)
    for (const Shape& s : kShapes) {
      INFO(name << " on " << shape_str(s));
      ++seed;
      check_unary<T>(f, ct::rnd<T>(s, seed), seed * 7);
    }
  // Strided inputs: a transposed view and a view offset by one element (unaligned for float4).
  for (const auto& [name, f] : ops) {
    INFO(name << " on views");
    Tensor<T> base = ct::rnd<T>({33, 65}, ++seed);
    check_unary<T>([&f](const Tensor<T>& x) { return f(x.t()); }, base, seed);
    check_unary<T>([&f](const Tensor<T>& x) { return f(x.reshape({33 * 65}).slice(0, 1, 33 * 65)); }, base, seed);
  }
}

template <class T>
void binary_suite() {
  using F = std::function<Tensor<T>(const Tensor<T>&, const Tensor<T>&)>;
  const std::vector<std::pair<std::string, F>> ops = {
      {"add", [](const Tensor<T>& a, const Tensor<T>& b) { return add(a, b); }},
      {"sub", [](const Tensor<T>& a, const Tensor<T>& b) { return sub(a, b); }},
      {"mul", [](const Tensor<T>& a, const Tensor<T>& b) { return mul(a, b); }},
      {"div", [](const Tensor<T>& a, const Tensor<T>& b) { return div(a, add(abs(b), T(0.5))); }},
  };
  const std::vector<std::pair<Shape, Shape>> shapes = {
      {{1}, {1}}, {{31}, {1}}, {{1025}, {1025}}, {{4099}, {4099}}, {{7, 1, 5}, {3, 5}},
      {{1, 31}, {33, 1}}, {{2, 3, 4, 5, 6}, {5, 1}}, {{1025, 3}, {3}}, {{3}, {1025, 3}}};
  uint64_t seed = 500;
  for (const auto& [name, f] : ops)
    for (const auto& [sa, sb] : shapes) {
      INFO(name << " " << shape_str(sa) << " x " << shape_str(sb));
      Tensor<T> a0 = ct::rnd<T>(sa, ++seed), b0 = ct::rnd<T>(sb, ++seed);
      Tensor<T> a = a0.detach().set_requires_grad(), b = b0.detach().set_requires_grad();
      Tensor<T> y = f(a, b);
      Tensor<T> gy = ct::rnd<T>(y.shape(), ++seed);
      y.backward(gy);
      Tensor<T> ag = a0.to(gpu()).set_requires_grad(), bg = b0.to(gpu()).set_requires_grad();
      Tensor<T> yg = f(ag, bg);
      yg.backward(gy.to(gpu()));
      CT_REQUIRE_CLOSE(yg.cpu(), y, T);
      CT_REQUIRE_CLOSE(ag.grad().cpu(), a.grad(), T);
      CT_REQUIRE_CLOSE(bg.grad().cpu(), b.grad(), T);
    }
}

template <class T>
void sum_suite() {
  struct Case {
    Shape shape;
    std::vector<int64_t> dims;
  };
  const std::vector<Case> cases = {
      {{1}, {}}, {{31}, {}}, {{1025}, {0}}, {{3, 1025}, {1}}, {{1025, 3}, {0}}, {{4, 5, 6}, {0, 2}},
      {{4, 5, 6}, {1}}, {{2, 3, 4, 5}, {0, 3}}, {{1 << 20}, {}}, {{3, 300001}, {1}}, {{300001, 3}, {0}},
      {{8192, 33}, {0}}, {{33, 8192}, {0}}, {{3, 4, 5, 6}, {0, 2}}, {{5, 0, 3}, {1}}};
  uint64_t seed = 900;
  for (const auto& c : cases) {
    INFO("sum of " << shape_str(c.shape) << " over " << c.dims.size() << " dims");
    Tensor<T> x = ct::rnd<T>(c.shape, ++seed);
    Tensor<T> xg = x.to(gpu());
    CT_REQUIRE_CLOSE(sum(xg, c.dims).cpu(), sum(x, c.dims), T);
    CT_REQUIRE_CLOSE(sum(xg, c.dims, true).cpu(), sum(x, c.dims, true), T);
    if (x.dim() >= 2) {  // the same reduction of a transposed (non-contiguous) input
      Tensor<T> xt = x.transpose(0, x.dim() - 1);
      CT_REQUIRE_CLOSE(sum(xg.transpose(0, x.dim() - 1), c.dims).cpu(), sum(xt, c.dims), T);
    }
  }
  // mean goes through sum and affine.
  Tensor<T> x = ct::rnd<T>({17, 129}, 7);
  CT_REQUIRE_CLOSE(mean(x.to(gpu()), {1}).cpu(), mean(x, {1}), T);
}

}  // namespace

TEST_CASE("cuda unary ops match the CPU, forward and backward", "[cuda][elementwise]") {
  unary_suite<float>();
  unary_suite<double>();
}

TEST_CASE("cuda broadcasting binary ops match the CPU, forward and backward", "[cuda][elementwise]") {
  binary_suite<float>();
  binary_suite<double>();
}

TEST_CASE("cuda sum reductions match the CPU", "[cuda][reduce]") {
  sum_suite<float>();
  sum_suite<double>();
}

TEST_CASE("cuda fill, copy, clone and transfers", "[cuda][elementwise]") {
  Tensor<float> z = zeros<float>({3, 1027}, gpu());
  for (float v : z.to_vector()) REQUIRE(v == 0.0f);
  Tensor<double> f = full<double>({1025}, 2.5, gpu());
  for (double v : f.to_vector()) REQUIRE(v == 2.5);
  // fill_ of a strided view writes exactly the view.
  Tensor<float> m = zeros<float>({5, 7}, gpu());
  {
    NoGradGuard ng;
    Tensor<float> col = m.slice(1, 2, 3);
    col.fill_(4.0f);
  }
  auto mv = m.to_vector();
  for (int i = 0; i < 5; ++i)
    for (int j = 0; j < 7; ++j) REQUIRE(mv[i * 7 + j] == (j == 2 ? 4.0f : 0.0f));
  // clone / contiguous of a transposed GPU tensor equals the CPU one exactly.
  Tensor<double> x = ct::rnd<double>({31, 17}, 3);
  Tensor<double> xt = x.to(gpu()).t().contiguous();
  REQUIRE(xt.device() == gpu());
  REQUIRE(xt.cpu().to_vector() == x.t().contiguous().to_vector());
  // copy_ from the CPU into a GPU view.
  Tensor<double> dst = zeros<double>({31, 17}, gpu());
  {
    NoGradGuard ng;
    dst.copy_(x);
  }
  REQUIRE(dst.cpu().to_vector() == x.to_vector());
}

TEST_CASE("cuda ops refuse mixed devices and ops without a kernel, naming them", "[cuda][errors]") {
  Tensor<float> a = ct::rnd<float>({4}, 1).to(gpu());
  Tensor<float> b = ct::rnd<float>({4}, 2);
  REQUIRE_THROWS_WITH(add(a, b), Catch::Contains("add") && Catch::Contains("different devices"));
  REQUIRE_THROWS_WITH(a.at({0}), Catch::Contains("at") && Catch::Contains("cuda:0"));
}

}  // namespace test_cuda_elementwise
