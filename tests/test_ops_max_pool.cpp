#include <cmath>

#include "test_util.hpp"
#include "txtcls/ops/max.hpp"
#include "txtcls/ops/pooling.hpp"

using namespace txtcls;
using namespace tt;

namespace {

Tensor<int64_t> lens(const std::vector<int64_t>& v) { return from_vector<int64_t>(v); }

// max/min along `dim` of a 3-d tensor by plain loops: {values, indices} in row-major order of the rest.
std::pair<std::vector<double>, std::vector<int64_t>> ref_extreme(const TD& x, int64_t dim, bool is_max) {
  std::vector<double> vals;
  std::vector<int64_t> idx;
  const Shape s = x.shape();
  std::vector<int64_t> rest;
  for (int64_t d = 0; d < 3; ++d)
    if (d != dim) rest.push_back(d);
  for (int64_t a = 0; a < s[rest[0]]; ++a)
    for (int64_t b = 0; b < s[rest[1]]; ++b) {
      double best = 0;
      int64_t at = -1;
      for (int64_t j = 0; j < s[dim]; ++j) {
        int64_t i3[3];
        i3[rest[0]] = a, i3[rest[1]] = b, i3[dim] = j;
        const double v = x.at({i3[0], i3[1], i3[2]});
        if (at < 0 || (is_max ? v > best : v < best)) best = v, at = j;
      }
      vals.push_back(best);
      idx.push_back(at);
    }
  return {vals, idx};
}

}  // namespace

TEST_CASE("max/min/argmax/argmin: values against loops", "[ops][max]") {
  auto x = rnd({3, 4, 5}, 1);
  for (int64_t d : {0, 1, 2}) {
    INFO("dim " << d);
    auto [mv, mi] = ref_extreme(x, d, true);
    auto [nv, ni] = ref_extreme(x, d, false);
    require_close(max(x, d), mv);
    require_close(min(x, d - 3), nv);  // negative dim
    REQUIRE(argmax(x, d).to_vector() == mi);
    REQUIRE(argmin(x, d).to_vector() == ni);
    // a permuted view gives the same as its contiguous copy
    auto xp = rnd({5, 3, 4}, 2).permute({1, 2, 0});
    REQUIRE(max(xp, d).to_vector() == max(xp.contiguous(), d).to_vector());
    REQUIRE(argmin(xp, d).to_vector() == argmin(xp.contiguous(), d).to_vector());
  }
  REQUIRE(max(x, 1).shape() == Shape{3, 5});
  REQUIRE(max(x, 1, true).shape() == Shape{3, 1, 5});
  REQUIRE(argmax(x, -1, true).shape() == Shape{3, 4, 1});
  // hand-checked: ties go to the first occurrence
  auto t = from_vector<double>({1, 3, 3, -2, 5, 5, 5, -2}, {2, 4});
  require_close(max(t, 1), {3, 5});
  REQUIRE(argmax(t, 1).to_vector() == std::vector<int64_t>{1, 0});
  REQUIRE(argmin(t, 1).to_vector() == std::vector<int64_t>{3, 3});
  REQUIRE(argmax(t, 0).to_vector() == std::vector<int64_t>{1, 1, 1, 0});
  require_close(min(t, 0), {1, 3, 3, -2});
  // 0-d input and an empty batch
  REQUIRE(max(scalar<double>(4.0), 0).item() == 4.0);
  REQUIRE(argmax(scalar<double>(4.0), -1).item() == 0);
  REQUIRE(max(zeros<double>({0, 3}), 1).shape() == Shape{0});
  // a column slab boundary and the parallel path: dim 0 of [40, 1000]
  auto big = rnd({40, 1000}, 3);
  big.set({17, 999}, 5.0);
  big.set({39, 256}, 5.0);
  REQUIRE(argmax(big, 0).at({999}) == 17);
  REQUIRE(argmax(big, 0).at({256}) == 39);
  REQUIRE(max(big, 0).to_vector() == max(big.t().contiguous(), 1).to_vector());
  REQUIRE(argmax(big, 0).to_vector() == argmax(big.t().contiguous(), 1).to_vector());
}

TEST_CASE("max/min: NaN wins and propagates", "[ops][max]") {
  const double nan = std::nan("");
  auto x = from_vector<double>({1, nan, 7, nan, 2, 0, 9, -1}, {2, 4});
  auto m = max(x, 1);
  REQUIRE(std::isnan(m.at({0})));
  REQUIRE(m.at({1}) == 9);
  REQUIRE(argmax(x, 1).to_vector() == std::vector<int64_t>{1, 2});
  REQUIRE(argmin(x, 1).to_vector() == std::vector<int64_t>{1, 3});
  auto c = max(x, 0);  // the column path
  REQUIRE(c.at({0}) == 2);
  REQUIRE(std::isnan(c.at({1})));
  REQUIRE(std::isnan(c.at({3})));
  REQUIRE(argmin(x, 0).to_vector() == std::vector<int64_t>{0, 0, 0, 0});
  REQUIRE(argmax(x, 0).to_vector() == std::vector<int64_t>{1, 0, 1, 0});
  auto first = from_vector<double>({nan, 5, nan}, {3});
  REQUIRE(argmax(first, 0).item() == 0);
}

TEST_CASE("max/min gradients", "[ops][max][grad]") {
  for (int64_t d : {0, 1, -1}) {
    for (bool keep : {false, true}) {
      INFO("dim " << d << " keepdim " << keep);
      REQUIRE_GRAD([&](auto& v) { return max(v[0], d, keep); }, rnd({3, 4, 5}, 1));
      REQUIRE_GRAD([&](auto& v) { return min(v[0], d, keep); }, rnd({3, 4, 5}, 2));
    }
    REQUIRE_GRAD([&](auto& v) { return max(v[0].transpose(0, 2), d); }, rnd({5, 4, 3}, 3));
  }
  REQUIRE_GRAD([](auto& v) { return max(v[0], 0); }, rnd({1, 3}, 4));
  REQUIRE_GRAD([](auto& v) { return max(v[0], 0); }, rnd({}, 4));
  REQUIRE_GRAD([](auto& v) { return max(v[0], 1); }, rnd({0, 3}, 4));
  // a tie sends the whole gradient to the first maximal element, as torch.max(dim)
  auto t = from_vector<double>({2, 5, 5, 1}, {4}).set_requires_grad(true);
  max(t, 0).backward();
  require_close(t.grad(), {0, 1, 0, 0});
}

TEST_CASE("max/min: errors", "[ops][max]") {
  REQUIRE_THROWS_WITH(max(rnd({2, 3}, 1), 2), Catch::Contains("max: dim 2 out of range for a tensor of 2 dims"));
  REQUIRE_THROWS_WITH(argmin(zeros<double>({2, 0}), 1),
                      Catch::Contains("argmin: cannot reduce over dim 1 of size 0 in a tensor of shape [2, 0]"));
}

TEST_CASE("max_pool_time and mean_pool_time: values", "[ops][pooling]") {
  // batch 0 uses 2 steps, batch 1 all 3; the padding step of batch 0 holds the largest values
  auto x = from_vector<double>({1, -4, 3, 2, 100, 100,    //
                                -1, 0, -5, -2, -3, 9},  //
                               {2, 3, 2});
  auto l = lens({2, 3});
  require_close(max_pool_time(x, l), {3, 2, -1, 9});
  require_close(mean_pool_time(x, l), {2, -1, -3, 7.0 / 3});

  // random shapes against loops, contiguous and non-contiguous views
  auto ref = [](const TD& a, const std::vector<int64_t>& len, bool mx) {
    std::vector<double> out;
    for (int64_t b = 0; b < a.size(0); ++b)
      for (int64_t d = 0; d < a.size(2); ++d) {
        double acc = mx ? -1e300 : 0;
        for (int64_t t = 0; t < len[b]; ++t) acc = mx ? std::max(acc, a.at({b, t, d})) : acc + a.at({b, t, d});
        out.push_back(mx ? acc : acc / len[b]);
      }
    return out;
  };
  std::vector<int64_t> len = {5, 1, 3, 4};
  auto xc = rnd({4, 5, 6}, 1);
  auto xt = rnd({5, 4, 6}, 2).transpose(0, 1);     // time-major storage, unit stride along D
  auto xd = rnd({4, 6, 5}, 3).transpose(1, 2);     // unit stride along time
  auto xs = rnd({4, 5, 12}, 4).slice(2, 0, 12, 2);  // stride 2 along D
  for (const TD& a : {xc, xt, xd, xs}) {
    INFO("strides " << shape_str(a.strides()));
    require_close(max_pool_time(a, lens(len)), ref(a, len, true));
    require_close(mean_pool_time(a, lens(len)), ref(a, len, false), 1e-14);
  }
  // large enough for the parallel path
  std::vector<int64_t> biglen = {50, 1, 17, 33, 49, 2, 50, 8};
  auto big = rnd({8, 50, 300}, 5);
  require_close(max_pool_time(big, lens(biglen)), ref(big, biglen, true));
  require_close(mean_pool_time(big, lens(biglen)), ref(big, biglen, false), 1e-13);
  auto bigt = rnd({8, 300, 50}, 6).transpose(1, 2);
  require_close(max_pool_time(bigt, lens(biglen)), ref(bigt, biglen, true));
  require_close(mean_pool_time(bigt, lens(biglen)), ref(bigt, biglen, false), 1e-13);
  // empty batch
  REQUIRE(max_pool_time(zeros<double>({0, 3, 2}), Tensor<int64_t>(Shape{0})).shape() == Shape{0, 2});
  REQUIRE(mean_pool_time(zeros<double>({0, 3, 2}), Tensor<int64_t>(Shape{0})).shape() == Shape{0, 2});
  // float agrees with double
  auto mf = max_pool_time(cast<float>(xt), lens(len)).to_vector();
  auto af = mean_pool_time(cast<float>(xt), lens(len)).to_vector();
  auto md = ref(xt, len, true), ad = ref(xt, len, false);
  for (size_t i = 0; i < md.size(); ++i) {
    REQUIRE(std::abs(mf[i] - md[i]) <= 1e-6);
    REQUIRE(std::abs(af[i] - ad[i]) <= 1e-6);
  }
}

TEST_CASE("max_pool_time and mean_pool_time: gradients", "[ops][pooling][grad]") {
  auto l = lens({4, 1, 2});
  REQUIRE_GRAD([&](auto& v) { return max_pool_time(v[0], l); }, rnd({3, 4, 5}, 1));
  REQUIRE_GRAD([&](auto& v) { return mean_pool_time(v[0], l); }, rnd({3, 4, 5}, 2));
  REQUIRE_GRAD([&](auto& v) { return max_pool_time(v[0].transpose(0, 1), l); }, rnd({4, 3, 5}, 3));
  REQUIRE_GRAD([&](auto& v) { return mean_pool_time(v[0].transpose(0, 1), l); }, rnd({4, 3, 5}, 4));
  REQUIRE_GRAD([&](auto& v) { return max_pool_time(v[0].transpose(1, 2), l); }, rnd({3, 5, 4}, 5));
  REQUIRE_GRAD([&](auto& v) { return mean_pool_time(v[0].transpose(1, 2), l); }, rnd({3, 5, 4}, 6));
  REQUIRE_GRAD([&](auto& v) { return max_pool_time(v[0], lens({1})); }, rnd({1, 1, 3}, 7));
  // padding gets no gradient; the maximal step of each (b, d) gets all of it
  auto x = from_vector<double>({1, 2, 3, -4, 100, 100}, {1, 3, 2}).set_requires_grad(true);
  mul(max_pool_time(x, lens({2})), from_vector<double>({10, 20}, {1, 2})).backward(ones<double>({1, 2}));
  require_close(x.grad(), {0, 20, 10, 0, 0, 0});
  auto y = x.detach().clone().set_requires_grad(true);
  sum(mean_pool_time(y, lens({2}))).backward();
  require_close(y.grad(), {0.5, 0.5, 0.5, 0.5, 0, 0});
  // empty batch
  auto e = zeros<double>({0, 3, 2}).set_requires_grad(true);
  sum(max_pool_time(e, Tensor<int64_t>(Shape{0}))).backward();
  REQUIRE(e.grad().shape() == Shape{0, 3, 2});
}

TEST_CASE("pooling: errors", "[ops][pooling]") {
  auto x = rnd({3, 4, 2}, 1);
  REQUIRE_THROWS_WITH(max_pool_time(x, lens({4, 0, 1})),
                      Catch::Contains("max_pool_time: lengths[1] = 0 is outside [1, 4] for input of shape [3, 4, 2]"));
  REQUIRE_THROWS_WITH(mean_pool_time(x, lens({4, 2, 5})),
                      Catch::Contains("mean_pool_time: lengths[2] = 5 is outside [1, 4]"));
  REQUIRE_THROWS_WITH(max_pool_time(x, lens({4, 2})),
                      Catch::Contains("max_pool_time: lengths must be [B] = [3] for input of shape [3, 4, 2], got [2]"));
  REQUIRE_THROWS_WITH(mean_pool_time(rnd({3, 4}, 2), lens({1, 1, 1})),
                      Catch::Contains("mean_pool_time: input must be [B, T, D], got shape [3, 4]"));
}
