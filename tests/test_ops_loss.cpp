#include "test_util.hpp"
#include "txtcls/ops/loss.hpp"

using namespace txtcls;
using namespace tt;

namespace {

using TI = Tensor<int64_t>;

TI targets(const std::vector<int64_t>& v) { return from_vector<int64_t>(v); }

// Logits shared by the reference values below (computed with PyTorch 2.x in float64):
//   x = torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.0, -2.0, 3.0, 1.5], [2.5, 2.5, -0.5, 0.0]], dtype=torch.float64)
TD ref_logits() { return from_vector<double>({1.0, 2.0, 0.5, -1.0, 0.0, -2.0, 3.0, 1.5, 2.5, 2.5, -0.5, 0.0}, {3, 4}); }

}  // namespace

TEST_CASE("cross_entropy: PyTorch reference values", "[ops][loss]") {
  const auto x = ref_logits();
  const auto t = targets({1, 0, 3});
  // F.cross_entropy(x, torch.tensor([1, 0, 3]), reduction=r)
  require_close(cross_entropy(x, t, Reduction::None), {0.49518189808585605, 3.2465906475097994, 3.2570004984017356});
  require_close(cross_entropy(x, t), {2.3329243479991306});
  require_close(cross_entropy(x, t, Reduction::Sum), {6.998773043997391});
  REQUIRE(cross_entropy(x, t).shape() == Shape{});
  // ... label_smoothing=0.1
  require_close(cross_entropy(x, t, Reduction::None, -100, 0.1), {0.6326818980858561, 3.1840906475098, 3.1445004984017353});
  require_close(cross_entropy(x, t, Reduction::Mean, -100, 0.1), {2.3204243479991304});
  require_close(cross_entropy(x, t, Reduction::Sum, -100, 0.1), {6.961273043997392});
  // ... target [1, -100, 3], label_smoothing=0.2: ignored rows are 0 and leave the mean's denominator
  const auto ti = targets({1, -100, 3});
  require_close(cross_entropy(x, ti, Reduction::None, -100, 0.2), {0.7701818980858561, 0.0, 3.032000498401736});
  require_close(cross_entropy(x, ti, Reduction::Mean, -100, 0.2), {1.901091198243796});
  require_close(cross_entropy(x, ti, Reduction::Sum, -100, 0.2), {3.802182396487592});
  // ... target [2, 2, 0], ignore_index=2 (an ignored class inside [0, C))
  require_close(cross_entropy(x, targets({2, 2, 0}), Reduction::Mean, 2), {0.7570004984017354});
  // ... everything ignored, or no rows at all: the mean is NaN
  REQUIRE(std::isnan(cross_entropy(x, targets({-100, -100, -100})).item()));
  REQUIRE(std::isnan(cross_entropy(TD(Shape{0, 3}), TI(Shape{0})).item()));
  REQUIRE(cross_entropy(TD(Shape{0, 3}), TI(Shape{0}), Reduction::Sum).item() == 0.0);
  REQUIRE(cross_entropy(TD(Shape{0, 3}), TI(Shape{0}), Reduction::None).shape() == Shape{0});
}

TEST_CASE("cross_entropy: PyTorch reference gradient, closed forms, stability", "[ops][loss][grad]") {
  // xr.grad after F.cross_entropy(xr, torch.tensor([1, -100, 3]), label_smoothing=0.2).backward()
  auto x = ref_logits().set_requires_grad();
  cross_entropy(x, targets({1, -100, 3}), Reduction::Mean, -100, 0.2).backward();
  require_close(x.grad(), {0.08710390902410059, -0.12026998120056141, 0.042994457896752776, -0.009828385720291885, 0, 0,
                           0, 0, 0.20953564955496548, 0.20953564955496548, -0.013323157580905558, -0.4057481415290255},
                1e-12);
  // Uniform logits: loss = log C, gradient (1/C - onehot) / N.
  auto u = zeros<double>({2, 4}).set_requires_grad();
  auto l = cross_entropy(u, targets({0, 3}));
  REQUIRE(l.item() == Approx(std::log(4.0)).epsilon(1e-15));
  l.backward();
  require_close(u.grad(), {-0.375, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125, -0.375});
  // Large logits stay finite: log(exp(1000) + exp(0)) - 1000 = log1p(exp(-1000)) = 0.
  auto big = from_vector<double>({1000, 0, -1000, 1000}, {2, 2});
  require_close(cross_entropy(big, targets({0, 1}), Reduction::None), {0, 0});
  require_close(cross_entropy(big, targets({1, 0}), Reduction::None), {1000, 2000});
  // eps = 1: only the uniform term remains, so the target does not matter.
  require_close(cross_entropy(ref_logits(), targets({0, 0, 0}), Reduction::None, -100, 1.0),
                cross_entropy(ref_logits(), targets({3, 2, 1}), Reduction::None, -100, 1.0).to_vector(), 1e-14);
}

TEST_CASE("cross_entropy gradients (finite differences)", "[ops][loss][grad]") {
  struct Case {
    Shape shape;
    std::vector<int64_t> target;
  };
  const std::vector<Case> cases = {{{4, 5}, {0, 4, 2, 2}}, {{1, 1}, {0}},         {{1, 3}, {2}},
                                   {{3, 2}, {1, -100, 0}}, {{5, 3}, {7, 7, 0, 7, 2}}};
  for (const auto& c : cases)
    for (Reduction r : {Reduction::None, Reduction::Mean, Reduction::Sum})
      for (double eps : {0.0, 0.1, 1.0}) {
        const int64_t ignore = c.target.size() == 5 ? 7 : -100;
        INFO("shape " << shape_str(c.shape) << " reduction " << static_cast<int>(r) << " eps " << eps);
        const auto t = targets(c.target);
        REQUIRE_GRAD([&](auto& v) { return cross_entropy(v[0], t, r, ignore, eps); }, rnd(c.shape, 3, -3, 3));
      }
  REQUIRE_GRAD([](auto& v) { return cross_entropy(v[0].t(), targets({1, 0, 1})); }, rnd({2, 3}, 4, -3, 3));
  REQUIRE_GRAD([](auto& v) { return add(cross_entropy(v[0], TI(Shape{0}), Reduction::Sum), v[1]); },
               rnd({0, 4}, 5), rnd({}, 6));
}

TEST_CASE("cross_entropy: errors name the row and value", "[ops][loss]") {
  const auto x = ref_logits();
  REQUIRE_THROWS_WITH(cross_entropy(x, targets({1, 4, 0})),
                      Catch::Contains("cross_entropy: target 4 in row 1 is out of range for 4 classes"));
  REQUIRE_THROWS_WITH(cross_entropy(x, targets({1, 0, -1})), Catch::Contains("cross_entropy: target -1 in row 2"));
  REQUIRE_THROWS_WITH(cross_entropy(x, targets({1, 0})),
                      Catch::Contains("cross_entropy: target must be [N] = [3] for logits [3, 4], got [2]"));
  REQUIRE_THROWS_WITH(cross_entropy(rnd({3}, 1), targets({1})), Catch::Contains("cross_entropy: logits must be [N, C]"));
  REQUIRE_THROWS_WITH(cross_entropy(TD(Shape{2, 0}), targets({0, 0})), Catch::Contains("have no classes"));
  REQUIRE_THROWS_WITH(cross_entropy(x, targets({1, 0, 3}), Reduction::Mean, -100, 1.5),
                      Catch::Contains("cross_entropy: label_smoothing must be in [0, 1], got 1.5"));
}

TEST_CASE("cross_entropy in float32 agrees with float64", "[ops][loss]") {
  Generator g(1);
  auto xd = randn<double>({64, 10}, g, 0.0, 3.0);
  TI t(Shape{64});
  for (int64_t i = 0; i < 64; ++i) t.data()[i] = (i * 7) % 10;
  auto xf = cast<float>(xd).set_requires_grad();
  auto lf = cross_entropy(xf, t, Reduction::Mean, -100, 0.1);
  auto xdd = xd.clone().detach().set_requires_grad();
  auto ld = cross_entropy(xdd, t, Reduction::Mean, -100, 0.1);
  REQUIRE(static_cast<double>(lf.item()) == Approx(ld.item()).epsilon(1e-6));
  lf.backward();
  ld.backward();
  auto gf = xf.grad().to_vector();
  auto gd = xdd.grad().to_vector();
  for (size_t i = 0; i < gf.size(); ++i) REQUIRE(std::abs(static_cast<double>(gf[i]) - gd[i]) < 1e-7);
}

TEST_CASE("binary_cross_entropy_with_logits: PyTorch reference values", "[ops][loss]") {
  // z = torch.tensor([[-3.0, -0.5, 0.0], [0.7, 2.0, 40.0]], dtype=torch.float64)
  // y = torch.tensor([[0.0, 1.0, 0.3], [1.0, 0.0, 1.0]], dtype=torch.float64)
  // pw = torch.tensor([2.0, 0.5, 1.5], dtype=torch.float64)
  const auto z = from_vector<double>({-3.0, -0.5, 0.0, 0.7, 2.0, 40.0}, {2, 3});
  const auto y = from_vector<double>({0.0, 1.0, 0.3, 1.0, 0.0, 1.0}, {2, 3});
  const auto pw = from_vector<double>({2.0, 0.5, 1.5}, {3});
  // F.binary_cross_entropy_with_logits(z, y, reduction=r[, pos_weight=pw])
  require_close(binary_cross_entropy_with_logits(z, y, Reduction::None),
                {0.048587351573742055, 0.9740769841801067, 0.6931471805599453, 0.4031860488854579, 2.1269280110429727,
                 4.248354255291589e-18});
  require_close(binary_cross_entropy_with_logits(z, y), {0.7076542627070376});
  require_close(binary_cross_entropy_with_logits(z, y, Reduction::Sum), {4.245925576242225});
  require_close(binary_cross_entropy_with_logits(z, y, Reduction::None, pw),
                {0.048587351573742055, 0.48703849209005334, 0.797119257643937, 0.8063720977709158, 2.1269280110429727,
                 6.372531382937383e-18});
  require_close(binary_cross_entropy_with_logits(z, y, Reduction::Mean, pw), {0.7110075350202701});
  require_close(binary_cross_entropy_with_logits(z, y, Reduction::Sum, pw), {4.266045210121621});
  // Large logits: log(1 + exp(800)) - ... stays finite.
  require_close(binary_cross_entropy_with_logits(from_vector<double>({-800, 800}), from_vector<double>({1, 0}),
                                                 Reduction::None),
                {800, 800});
  REQUIRE(std::isnan(binary_cross_entropy_with_logits(TD(Shape{0}), TD(Shape{0})).item()));
  REQUIRE(binary_cross_entropy_with_logits(TD(Shape{0, 2}), TD(Shape{0, 2}), Reduction::Sum).item() == 0.0);
}

TEST_CASE("binary_cross_entropy_with_logits gradients (finite differences)", "[ops][loss][grad]") {
  for (Reduction r : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
    INFO("reduction " << static_cast<int>(r));
    REQUIRE_GRAD([&](auto& v) { return binary_cross_entropy_with_logits(v[0], v[1], r); }, rnd({3, 4}, 1, -4, 4),
                 rnd({3, 4}, 2, 0, 1));
    for (Shape ps : {Shape{4}, Shape{1}, Shape{}, Shape{3, 1}, Shape{3, 4}}) {
      INFO("pos_weight " << shape_str(ps));
      REQUIRE_GRAD([&](auto& v) { return binary_cross_entropy_with_logits(v[0], v[1], r, v[2]); },
                   rnd({3, 4}, 3, -4, 4), rnd({3, 4}, 4, 0, 1), rnd(ps, 5, 0.5, 3));
    }
    REQUIRE_GRAD([&](auto& v) { return binary_cross_entropy_with_logits(v[0], v[1], r); }, rnd({1}, 6), rnd({1}, 7, 0, 1));
    REQUIRE_GRAD([&](auto& v) { return binary_cross_entropy_with_logits(v[0].t(), v[1], r, v[2]); }, rnd({4, 2}, 8, -4, 4),
                 rnd({2, 4}, 9, 0, 1), rnd({4}, 10, 0.5, 3));
  }
  REQUIRE_GRAD([](auto& v) { return binary_cross_entropy_with_logits(v[0], v[1], Reduction::Sum, v[2]); }, rnd({0, 3}, 1),
               rnd({0, 3}, 2), rnd({3}, 3));
}

TEST_CASE("binary_cross_entropy_with_logits: errors and float32", "[ops][loss]") {
  const auto z = rnd({2, 3}, 1);
  REQUIRE_THROWS_WITH(binary_cross_entropy_with_logits(z, rnd({3, 2}, 2)),
                      Catch::Contains("binary_cross_entropy_with_logits: targets [3, 2] must have the shape of the logits [2, 3]"));
  REQUIRE_THROWS_WITH(binary_cross_entropy_with_logits(z, rnd({2, 3}, 2), Reduction::Mean, rnd({2}, 3)),
                      Catch::Contains("binary_cross_entropy_with_logits: shapes [2] and [2, 3] cannot be broadcast"));
  REQUIRE_THROWS_WITH(binary_cross_entropy_with_logits(z, rnd({2, 3}, 2), Reduction::Mean, rnd({4, 2, 3}, 3)),
                      Catch::Contains("pos_weight [4, 2, 3] does not broadcast to the logits [2, 3]"));
  auto zf = from_vector<float>({-1.0f, 2.0f});
  auto yf = from_vector<float>({0.0f, 1.0f});
  const double expect = (std::log1p(std::exp(-1.0)) + std::log1p(std::exp(-2.0))) / 2;
  REQUIRE(static_cast<double>(binary_cross_entropy_with_logits(zf, yf).item()) == Approx(expect).epsilon(1e-6));
}
