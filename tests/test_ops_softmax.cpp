#include <cmath>
#include <limits>

#include "test_util.hpp"
#include "txtcls/ops/softmax.hpp"

using namespace txtcls;
using namespace tt;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Straightforward reference: z = x + mask, then per slice along `dim` the textbook formula in
// long double; a slice that is all -inf gives zeros (softmax) or -inf (log_softmax).
TD ref_softmax(const TD& x, int64_t dim, const TD& mask, bool log) {
  TD z = (mask.defined() ? add(x, mask) : x).detach().contiguous();
  const int64_t nd = z.dim();
  dim = dim < 0 ? dim + nd : dim;
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < dim; ++i) outer *= z.size(i);
  for (int64_t i = dim + 1; i < nd; ++i) inner *= z.size(i);
  const int64_t n = z.size(dim);
  std::vector<double> v = z.to_vector(), out(v.size());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      auto at = [&](int64_t j) { return (o * n + j) * inner + i; };
      long double mx = -kInf;
      for (int64_t j = 0; j < n; ++j) mx = std::max<long double>(mx, v[at(j)]);
      if (mx == -kInf) {
        for (int64_t j = 0; j < n; ++j) out[at(j)] = log ? -kInf : 0.0;
        continue;
      }
      long double s = 0;
      for (int64_t j = 0; j < n; ++j) s += std::exp(static_cast<long double>(v[at(j)]) - mx);
      for (int64_t j = 0; j < n; ++j) {
        const long double zj = static_cast<long double>(v[at(j)]) - mx;
        out[at(j)] = static_cast<double>(log ? zj - std::log(s) : std::exp(zj) / s);
      }
    }
  return from_vector(out, z.shape());
}

// Equal values, with -inf == -inf.
void require_same(const TD& a, const TD& b, double tol = 1e-12) {
  REQUIRE(a.shape() == b.shape());
  auto va = a.to_vector(), vb = b.to_vector();
  for (size_t i = 0; i < va.size(); ++i) {
    INFO("element " << i << ": " << va[i] << " vs " << vb[i]);
    if (std::isinf(vb[i])) REQUIRE(va[i] == vb[i]);
    else REQUIRE(std::abs(va[i] - vb[i]) <= tol * (1 + std::abs(vb[i])));
  }
}

// A 0 / -inf padding mask [B, 1, L]: position l of batch b is masked when l >= len[b].
TD padding_mask(const std::vector<int64_t>& len, int64_t L, double neg = -kInf) {
  TD m = zeros<double>({static_cast<int64_t>(len.size()), 1, L});
  for (size_t b = 0; b < len.size(); ++b)
    for (int64_t l = len[b]; l < L; ++l) m.set({static_cast<int64_t>(b), 0, l}, neg);
  return m;
}

}  // namespace

TEST_CASE("softmax: closed-form values and stability", "[ops][softmax]") {
  auto x = from_vector<double>({1, 2, 3}, {3});
  const double s = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  require_close(softmax(x, 0), {std::exp(1.0) / s, std::exp(2.0) / s, std::exp(3.0) / s});
  require_close(log_softmax(x, -1), {1 - std::log(s), 2 - std::log(s), 3 - std::log(s)});
  // torch.softmax(torch.tensor([1., 2., 3.]), 0)
  require_close(softmax(x, 0), {0.09003057317038046, 0.24472847105479767, 0.6652409557748219}, 1e-14);
  // shifting by a huge constant changes nothing (max subtraction), in float as well
  require_close(softmax(add(x, 1000.0), 0), softmax(x, 0).to_vector(), 1e-12);
  require_close(log_softmax(add(x, -1000.0), 0), log_softmax(x, 0).to_vector(), 1e-12);
  auto xf = from_vector<float>({1000, 1001, 1002}, {3});
  require_close(softmax(xf, 0), {0.09003057f, 0.24472847f, 0.66524096f}, 1e-6);
  // size-1 rows: softmax 1, log_softmax 0
  require_close(softmax(rnd({4, 1}, 3), -1), {1, 1, 1, 1});
  require_close(log_softmax(rnd({4, 1}, 3), 1), {0, 0, 0, 0});
  // 0-d input counts as one element
  REQUIRE(softmax(scalar<double>(5.0), 0).item() == 1.0);
  // empty batch
  REQUIRE(softmax(zeros<double>({0, 5}), -1).shape() == Shape{0, 5});
  REQUIRE(log_softmax(zeros<double>({3, 0}), -1).shape() == Shape{3, 0});
}

TEST_CASE("softmax: every dim, masks and views against a reference", "[ops][softmax]") {
  auto x = rnd({3, 4, 5}, 1, -3, 3);
  for (bool log : {false, true}) {
    auto f = [log](const TD& a, int64_t d, const TD& m) { return log ? log_softmax(a, d, m) : softmax(a, d, m); };
    for (int64_t d : {0, 1, 2, -1, -2}) {
      INFO("log " << log << " dim " << d);
      require_same(f(x, d, TD()), ref_softmax(x, d, TD(), log));
      for (Shape ms : {Shape{3, 4, 5}, Shape{3, 1, 5}, Shape{4, 1}, Shape{5}, Shape{3, 4, 1}, Shape{1}, Shape{}}) {
        INFO("mask " << shape_str(ms));
        auto m = rnd(ms, 2, -2, 2);
        require_same(f(x, d, m), ref_softmax(x, d, m, log));
      }
      // a transposed (non-contiguous) input and an expanded mask view
      auto xt = rnd({5, 4, 3}, 4).transpose(0, 2);
      require_same(f(xt, d, TD()), ref_softmax(xt, d, TD(), log));
      auto me = rnd({3, 1, 5}, 5).expand({3, 4, 5});
      require_same(f(x, d, me), ref_softmax(x, d, me, log));
      // mask strided along the row (read through a transposed view)
      auto mt = rnd({5, 4}, 6).t();
      auto x45 = rnd({2, 4, 5}, 7);
      require_same(f(x45, d, mt), ref_softmax(x45, d, mt, log));
    }
  }
  // rows of a softmax sum to one
  auto y = softmax(rnd({6, 7, 8}, 9, -5, 5), 1);
  require_close(sum(y, {1}), std::vector<double>(48, 1.0), 1e-12);
}

TEST_CASE("softmax: large inputs take the parallel paths", "[ops][softmax]") {
  auto x = rnd({7, 10, 600}, 11, -8, 8);
  auto m = padding_mask({600, 1, 300, 599, 17, 2, 450}, 600);
  for (bool log : {false, true}) {
    INFO("log " << log);
    auto f = [log](const TD& a, int64_t d, const TD& mm) { return log ? log_softmax(a, d, mm) : softmax(a, d, mm); };
    require_same(f(x, -1, m), ref_softmax(x, -1, m, log));
    require_same(f(x, 0, TD()), ref_softmax(x, 0, TD(), log));
    require_same(f(x, 1, m), ref_softmax(x, 1, m, log));
  }
}

TEST_CASE("softmax: fully masked rows are empty, not NaN", "[ops][softmax]") {
  // batch 1 has length 0: every key masked
  auto x = rnd({2, 3, 4}, 1);
  auto m = padding_mask({2, 0}, 4);
  auto y = softmax(x, -1, m);
  auto ly = log_softmax(x, -1, m);
  for (int64_t q = 0; q < 3; ++q)
    for (int64_t l = 0; l < 4; ++l) {
      REQUIRE(y.at({1, q, l}) == 0.0);
      REQUIRE(ly.at({1, q, l}) == -kInf);
      if (l >= 2) REQUIRE(y.at({0, q, l}) == 0.0);
    }
  require_close(sum(y.select(0, 0), {-1}), {1, 1, 1});
  // the same along a middle dim (strided path): column 1 of batch 0 is all -inf
  auto xm = rnd({2, 3, 4}, 2);
  auto mm = zeros<double>({1, 3, 4});
  for (int64_t q = 0; q < 3; ++q) mm.set({0, q, 1}, -kInf);
  auto ys = softmax(xm, 1, mm), lys = log_softmax(xm, 1, mm);
  require_same(ys, ref_softmax(xm, 1, mm, false));
  require_same(lys, ref_softmax(xm, 1, mm, true));
  REQUIRE(ys.at({0, 2, 1}) == 0.0);
  REQUIRE(lys.at({1, 0, 1}) == -kInf);

  // no gradient flows into a dead row; the live batch gets exactly the gradient it gets alone
  for (bool log : {false, true}) {
    for (int64_t dim : {-1, 1}) {
      INFO("log " << log << " dim " << dim);
      auto mask = dim == -1 ? m : mm;
      auto sm = [&](const TD& a, const TD& mk) { return log ? log_softmax(a, dim, mk) : softmax(a, dim, mk); };
      auto xv = rnd({2, 3, 4}, 3).set_requires_grad(true);
      auto w = rnd({2, 3, 4}, 4);
      sm(xv, mask).backward(w);
      auto g = xv.grad();
      for (int64_t i = 0; i < 24; ++i) REQUIRE(std::isfinite(g.data()[i]));
      if (dim == -1) {
        for (int64_t q = 0; q < 3; ++q)
          for (int64_t l = 0; l < 4; ++l) REQUIRE(g.at({1, q, l}) == 0.0);
        auto x0 = xv.detach().slice(0, 0, 1).contiguous().set_requires_grad(true);
        sm(x0, mask.slice(0, 0, 1)).backward(w.slice(0, 0, 1).contiguous());
        require_close(g.slice(0, 0, 1), x0.grad().to_vector(), 1e-14);
      } else {
        for (int64_t b = 0; b < 2; ++b)
          for (int64_t q = 0; q < 3; ++q) REQUIRE(g.at({b, q, 1}) == 0.0);
        auto x0 = xv.detach().select(2, 0).contiguous().set_requires_grad(true);
        sm(x0, TD()).backward(w.select(2, 0).contiguous());
        require_close(g.select(2, 0), x0.grad().to_vector(), 1e-14);
      }
    }
  }

  // a large finite negative mask shifts a fully masked row by a constant: plain softmax of x
  // (1e9 + x keeps x to ~1e-7)
  auto mu = padding_mask({2, 0}, 4, -1e9);
  require_close(softmax(x, -1, mu).select(0, 1), softmax(x.select(0, 1), -1).to_vector(), 1e-6);
}

TEST_CASE("softmax: NaN stays in its row", "[ops][softmax]") {
  auto x = rnd({3, 4}, 1);
  x.set({1, 2}, std::nan(""));
  for (bool log : {false, true}) {
    auto y = log ? log_softmax(x, -1) : softmax(x, -1);
    for (int64_t j = 0; j < 4; ++j) {
      REQUIRE(std::isnan(y.at({1, j})));
      REQUIRE(std::isfinite(y.at({0, j})));
      REQUIRE(std::isfinite(y.at({2, j})));
    }
    auto yc = log ? log_softmax(x, 0) : softmax(x, 0);
    REQUIRE(std::isnan(yc.at({0, 2})));
    REQUIRE(std::isfinite(yc.at({0, 1})));
  }
  // a NaN in an otherwise fully masked row is not hidden
  auto xn = from_vector<double>({std::nan(""), 1.0}, {1, 2});
  auto mn = from_vector<double>({0.0, -kInf}, {2});
  auto mall = from_vector<double>({-kInf, -kInf}, {2});
  REQUIRE(std::isnan(softmax(xn, -1, mall).at({0, 0})));
  for (bool log : {false, true}) {
    INFO("log " << log);
    auto f = [log](const TD& a, int64_t d, const TD& mm) { return log ? log_softmax(a, d, mm) : softmax(a, d, mm); };
    REQUIRE(std::isnan(f(xn, -1, mall).at({0, 1})));
    REQUIRE(std::isnan(f(xn, -1, mn).at({0, 1})));
    // the strided path: column 0 holds the NaN, column 1 is clean
    auto xs = from_vector<double>({std::nan(""), 0, 1, 0}, {2, 2});
    auto partial = f(xs, 0, mn.reshape({2, 1})), dead = f(xs, 0, mall.reshape({2, 1}));
    REQUIRE(std::isnan(partial.at({1, 0})));
    REQUIRE(partial.at({0, 1}) == (log ? 0.0 : 1.0));
    REQUIRE(partial.at({1, 1}) == (log ? -kInf : 0.0));
    REQUIRE(std::isnan(dead.at({1, 0})));
    REQUIRE(dead.at({0, 1}) == (log ? -kInf : 0.0));
  }
}

TEST_CASE("softmax and log_softmax gradients", "[ops][softmax][grad]") {
  for (bool log : {false, true}) {
    auto sm = [log](const TD& a, int64_t d, const TD& m = TD()) { return log ? log_softmax(a, d, m) : softmax(a, d, m); };
    for (int64_t d : {0, 1, -1}) {
      INFO("log " << log << " dim " << d);
      REQUIRE_GRAD([&](auto& v) { return sm(v[0], d); }, rnd({3, 4, 5}, 1, -2, 2));
      // masks broadcast from [B, 1, L], [L], [B, T, 1] (a per-row constant), with a mask gradient
      for (Shape ms : {Shape{3, 1, 5}, Shape{5}, Shape{3, 4, 1}, Shape{1, 4, 1}, Shape{3, 4, 5}}) {
        INFO("mask " << shape_str(ms));
        REQUIRE_GRAD([&](auto& v) { return sm(v[0], d, v[1]); }, rnd({3, 4, 5}, 2, -2, 2), rnd(ms, 3, -2, 2));
      }
      // transposed input
      REQUIRE_GRAD([&](auto& v) { return sm(v[0].transpose(0, 2), d); }, rnd({5, 4, 3}, 4));
      // padding masks as constants: -inf for softmax, a large finite negative for log_softmax
      // (whose -inf outputs would make the finite-difference loss infinite)
      auto pm = padding_mask({5, 2, 1}, 5, log ? -30.0 : -kInf);
      REQUIRE_GRAD([&](auto& v) { return sm(v[0], d, pm); }, rnd({3, 4, 5}, 5));
    }
    REQUIRE_GRAD([&](auto& v) { return sm(v[0], -1); }, rnd({4, 1}, 6));    // size-1 rows
    REQUIRE_GRAD([&](auto& v) { return sm(v[0], 0); }, rnd({1, 3}, 6));     // size-1 dim
    REQUIRE_GRAD([&](auto& v) { return sm(v[0], -1); }, rnd({7}, 7));       // 1-d
    REQUIRE_GRAD([&](auto& v) { return sm(v[0], -1); }, rnd({0, 4}, 8));    // empty batch
    REQUIRE_GRAD([&](auto& v) { return sm(v[0], 1); }, rnd({2, 40, 3}, 9, -3, 3));   // a long strided column
    REQUIRE_GRAD([&](auto& v) { return sm(v[0], 0); }, rnd({3, 260}, 10, -3, 3));    // two column slabs
  }
}

TEST_CASE("softmax: float32 agrees with float64", "[ops][softmax]") {
  auto x = rnd({4, 6, 33}, 1, -6, 6);
  auto m = padding_mask({33, 10, 1, 0}, 33).reshape({4, 1, 33});
  for (int64_t d : {0, 1, -1}) {
    for (bool log : {false, true}) {
      INFO("dim " << d << " log " << log);
      auto yd = log ? log_softmax(x, d, m) : softmax(x, d, m);
      auto xf = cast<float>(x), mf = cast<float>(m);
      auto yf = log ? log_softmax(xf, d, mf) : softmax(xf, d, mf);
      auto vd = yd.to_vector();
      auto vf = yf.to_vector();
      for (size_t i = 0; i < vd.size(); ++i) {
        INFO("element " << i);
        if (std::isinf(vd[i])) REQUIRE(double(vf[i]) == vd[i]);
        else REQUIRE(std::abs(double(vf[i]) - vd[i]) <= 1e-5 * (1 + std::abs(vd[i])));
      }
    }
  }
}

TEST_CASE("softmax: errors", "[ops][softmax]") {
  auto x = rnd({2, 3, 4}, 1);
  REQUIRE_THROWS_WITH(softmax(x, 3), Catch::Contains("softmax: dim 3 out of range for a tensor of 3 dims"));
  REQUIRE_THROWS_WITH(log_softmax(x, -1, rnd({3, 1, 4}, 2)),
                      Catch::Contains("log_softmax: shapes [2, 3, 4] and [3, 1, 4] cannot be broadcast"));
  REQUIRE_THROWS_WITH(softmax(x, -1, rnd({2, 2, 3, 4}, 2)),
                      Catch::Contains("softmax: mask of shape [2, 2, 3, 4] does not broadcast to the input's shape [2, 3, 4]"));
  REQUIRE_THROWS_WITH(softmax(x, -1, from_vector<double>({1, 2}, {2}).to(Device::cpu()).reshape({1, 2})),
                      Catch::Contains("softmax: shapes [2, 3, 4] and [1, 2] cannot be broadcast"));
}
