#include "test_util.hpp"

using namespace txtcls;
using namespace tt;

TEST_CASE("binary ops: values and broadcasting", "[ops][elementwise]") {
  auto a = from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3});
  auto b = from_vector<double>({10, 20, 30}, {3});
  require_close(add(a, b), {11, 22, 33, 14, 25, 36});
  require_close(sub(a, b), {-9, -18, -27, -6, -15, -24});
  require_close(mul(a, from_vector<double>({2, 3}, {2, 1})), {2, 4, 6, 12, 15, 18});
  require_close(div(a, b), {0.1, 0.1, 0.1, 0.4, 0.25, 0.2});
  require_close(a + 1.0, {2, 3, 4, 5, 6, 7});
  require_close(2.0 - a, {1, 0, -1, -2, -3, -4});
  require_close(12.0 / a, {12, 6, 4, 3, 2.4, 2});
  require_close(add(a.t(), from_vector<double>({1, 2}, {2})), {2, 6, 3, 7, 4, 8});
  REQUIRE(add(zeros<double>({0, 3}), b).shape() == Shape{0, 3});
  REQUIRE_THROWS_WITH(add(a, from_vector<double>({1, 2}, {2})),
                      Catch::Contains("add: shapes [2, 3] and [2] cannot be broadcast"));
}

TEST_CASE("unary ops: closed-form values", "[ops][elementwise]") {
  auto x = from_vector<double>({-2, -0.5, 0, 0.5, 2}, {5});
  require_close(relu(x), {0, 0, 0, 0.5, 2});
  require_close(sigmoid(x), {1 / (1 + std::exp(2.0)), 1 / (1 + std::exp(0.5)), 0.5, 1 / (1 + std::exp(-0.5)),
                             1 / (1 + std::exp(-2.0))});
  require_close(tanh(x), {std::tanh(-2.0), std::tanh(-0.5), 0, std::tanh(0.5), std::tanh(2.0)});
  require_close(softplus(x), {std::log1p(std::exp(-2.0)), std::log1p(std::exp(-0.5)), std::log(2.0),
                              std::log1p(std::exp(0.5)), std::log1p(std::exp(2.0))});
  // GELU reference values (PyTorch: F.gelu(x) and F.gelu(x, approximate='tanh'))
  require_close(gelu(from_vector<double>({1.0}, {1})), {0.8413447460685429}, 1e-12);
  require_close(gelu(from_vector<double>({1.0}, {1}), GeluForm::Tanh), {0.8411919906082768}, 1e-12);
  auto p = from_vector<double>({0.25, 1, 4}, {3});
  require_close(sqrt(p), {0.5, 1, 2});
  require_close(rsqrt(p), {2, 1, 0.5});
  require_close(pow(p, 1.5), {0.125, 1, 8});
  require_close(log(exp(p)), {0.25, 1, 4});
  require_close(abs(x), {2, 0.5, 0, 0.5, 2});
  // large inputs stay finite
  auto big = from_vector<double>({-800, 800}, {2});
  require_close(sigmoid(big), {0, 1});
  require_close(softplus(big), {0, 800});
}

TEST_CASE("elementwise gradients (finite differences)", "[ops][elementwise][grad]") {
  using F = std::function<TD(const std::vector<TD>&)>;
  std::vector<std::pair<const char*, F>> binary = {
      {"add", [](auto& v) { return add(v[0], v[1]); }},
      {"sub", [](auto& v) { return sub(v[0], v[1]); }},
      {"mul", [](auto& v) { return mul(v[0], v[1]); }},
      {"div", [](auto& v) { return div(v[0], add(v[1], 3.0)); }},
  };
  std::vector<std::pair<Shape, Shape>> shapes = {{{3, 4}, {3, 4}}, {{3, 4}, {4}}, {{2, 1, 4}, {3, 1}},
                                                 {{1}, {2, 3}},    {{}, {2}},     {{0, 3}, {3}}};
  for (auto& [name, f] : binary)
    for (auto& [sa, sb] : shapes) {
      INFO(name << " " << shape_str(sa) << " " << shape_str(sb));
      REQUIRE_GRAD(f, rnd(sa, 11), rnd(sb, 12));
    }
  std::vector<std::pair<const char*, F>> unary = {
      {"neg", [](auto& v) { return neg(v[0]); }},
      {"exp", [](auto& v) { return exp(v[0]); }},
      {"log", [](auto& v) { return log(add(v[0], 2.0)); }},
      {"sqrt", [](auto& v) { return sqrt(add(v[0], 2.0)); }},
      {"rsqrt", [](auto& v) { return rsqrt(add(v[0], 2.0)); }},
      {"pow", [](auto& v) { return pow(add(v[0], 2.0), 2.7); }},
      {"tanh", [](auto& v) { return tanh(v[0]); }},
      {"sigmoid", [](auto& v) { return sigmoid(v[0]); }},
      {"relu", [](auto& v) { return relu(v[0]); }},
      {"gelu", [](auto& v) { return gelu(v[0]); }},
      {"gelu_tanh", [](auto& v) { return gelu(v[0], GeluForm::Tanh); }},
      {"softplus", [](auto& v) { return softplus(mul(v[0], 4.0)); }},
      {"abs", [](auto& v) { return abs(v[0]); }},
      {"affine", [](auto& v) { return 3.0 - v[0] * 2.0 + 1.0; }},
      {"rdiv", [](auto& v) { return 2.0 / add(v[0], 3.0); }},
  };
  for (auto& [name, f] : unary)
    for (Shape s : {Shape{5, 3}, Shape{1}, Shape{}, Shape{0}}) {
      INFO(name << " " << shape_str(s));
      REQUIRE_GRAD(f, rnd(s, 21));
    }
  // strided (transposed) input
  REQUIRE_GRAD([](auto& v) { return tanh(v[0].t()); }, rnd({3, 5}, 5));
}
