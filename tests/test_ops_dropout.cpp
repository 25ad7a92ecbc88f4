#include "test_util.hpp"
#include "txtcls/ops/dropout.hpp"
#include "txtcls/ops/embedding.hpp"

using namespace txtcls;
using namespace tt;

namespace {

// Runs f with n OpenMP threads, then restores the previous count.
template <class F>
auto with_threads(int n, F f) {
  const int prev = num_threads();
  set_num_threads(n);
  auto r = f();
  set_num_threads(prev);
  return r;
}

int64_t count_nonzero(const TD& t) {
  int64_t k = 0;
  for (double v : t.to_vector()) k += v != 0.0;
  return k;
}

}  // namespace

TEST_CASE("dropout: keep rate and scale over 1e5 samples", "[ops][dropout]") {
  const int64_t n = 100000;
  for (double p : {0.1, 0.5, 0.9}) {
    INFO("p = " << p);
    Generator g(123);
    auto y = dropout(ones<double>({n}), p, g);
    const double keep = static_cast<double>(count_nonzero(y)) / n;
    // 5 standard deviations of a binomial proportion.
    REQUIRE(std::abs(keep - (1 - p)) < 5 * std::sqrt(p * (1 - p) / n));
    for (double v : y.to_vector()) REQUIRE((v == 0.0 || v == 1.0 / (1.0 - p)));
    REQUIRE(g.offset() == static_cast<uint64_t>(n));
  }
}

TEST_CASE("dropout: the mask is the documented function of (seed, offset, index)", "[ops][dropout]") {
  Generator g(42);
  g.reserve(17);  // start mid-stream
  const uint64_t base = g.offset();
  const double p = 0.3;
  auto x = rnd({6, 7}, 1, 1.0, 2.0);  // nonzero everywhere
  auto y = dropout(x, p, g);
  auto xv = x.to_vector(), yv = y.to_vector();
  for (size_t i = 0; i < xv.size(); ++i) {
    const bool keep = philox_uniform(42, base, i) >= p;
    REQUIRE(yv[i] == (keep ? xv[i] * (1.0 / (1.0 - p)) : 0.0));
  }
}

TEST_CASE("dropout: reproducible per seed, fresh masks per call, independent of threads and layout", "[ops][dropout]") {
  const auto x = ones<double>({300, 250});  // larger than the parallel grain
  Generator a(7), b(7);
  auto ya = dropout(x, 0.5, a), yb = dropout(x, 0.5, b);
  REQUIRE(ya.to_vector() == yb.to_vector());
  auto ya2 = dropout(x, 0.5, a);
  REQUIRE(ya2.to_vector() != ya.to_vector());
  REQUIRE(a.offset() == 2 * static_cast<uint64_t>(x.numel()));
  Generator c(8);
  REQUIRE(dropout(x, 0.5, c).to_vector() != ya.to_vector());

  auto one = with_threads(1, [&] { Generator g(9); return dropout(x, 0.4, g).to_vector(); });
  auto many = with_threads(4, [&] { Generator g(9); return dropout(x, 0.4, g).to_vector(); });
  REQUIRE(one == many);

  // A strided input gets the mask of its logical (row-major) order.
  auto s = rnd({5, 4}, 3);
  Generator g1(10), g2(10);
  REQUIRE(dropout(s.t(), 0.5, g1).to_vector() == dropout(s.t().contiguous(), 0.5, g2).to_vector());
}

TEST_CASE("dropout: identity, p = 1, errors", "[ops][dropout]") {
  auto x = rnd({3, 4}, 1);
  Generator g(1);
  REQUIRE(dropout(x, 0.5, g, false).same(x));
  REQUIRE(g.offset() == 0);  // evaluation draws nothing
  REQUIRE(dropout(x, 0.0, g).same(x));
  REQUIRE(g.offset() == 12);  // a training call always reserves its counters
  auto z = dropout(x, 1.0, g);
  REQUIRE(z.to_vector() == std::vector<double>(12, 0.0));
  REQUIRE_THROWS_WITH(dropout(x, 1.5, g), Catch::Contains("dropout: drop probability p must be in [0, 1], got 1.5"));
  REQUIRE_THROWS_WITH(dropout(x, -0.1, g), Catch::Contains("dropout: drop probability"));
  REQUIRE_THROWS_WITH(dropout(x, std::nan(""), g), Catch::Contains("dropout: drop probability"));
  REQUIRE(dropout(zeros<double>({0, 3}), 0.5, g).shape() == Shape{0, 3});
}

TEST_CASE("dropout: backward is the same mask times the scale", "[ops][dropout][grad]") {
  auto x = ones<double>({40, 30}).set_requires_grad();
  Generator g(5);
  auto y = dropout(x, 0.25, g);
  sum(y).backward();
  REQUIRE(x.grad().to_vector() == y.to_vector());  // d sum / dx_i = mask_i * scale = y_i for x = 1

  auto x1 = ones<double>({4}).set_requires_grad();
  Generator g1(5);
  sum(dropout(x1, 1.0, g1)).backward();
  REQUIRE(x1.grad().to_vector() == std::vector<double>(4, 0.0));
}

TEST_CASE("dropout gradients (fixed generator state)", "[ops][dropout][grad]") {
  for (Shape s : {Shape{3, 4}, Shape{1}, Shape{2, 1, 3}, Shape{0, 3}, Shape{}}) {
    INFO("shape " << shape_str(s));
    REQUIRE_GRAD([](auto& v) { Generator g(11); return dropout(v[0], 0.4, g); }, rnd(s, 1));
  }
  REQUIRE_GRAD([](auto& v) { Generator g(11); return dropout(v[0].t(), 0.6, g); }, rnd({4, 3}, 2));
  REQUIRE_GRAD([](auto& v) { Generator g(12); return embedding_dropout(v[0], 0.5, g); }, rnd({6, 3}, 3));
  REQUIRE_GRAD([](auto& v) { Generator g(12); return embedding_dropout(v[0].t(), 0.5, g); }, rnd({3, 6}, 3));
  REQUIRE_GRAD([](auto& v) { Generator g(12); return embedding_dropout(v[0], 0.5, g); }, rnd({1, 1}, 3));
  REQUIRE_GRAD([](auto& v) { Generator g(12); return embedding_dropout(v[0], 0.5, g); }, rnd({0, 3}, 3));
  REQUIRE_GRAD([](auto& v) { Generator g(13); return locked_dropout(v[0], 0.5, g); }, rnd({2, 0, 3}, 4));
  REQUIRE_GRAD([](auto& v) { Generator g(13); return locked_dropout(v[0], 0.5, g); }, rnd({2, 3, 4}, 4));
  REQUIRE_GRAD([](auto& v) { Generator g(13); return locked_dropout(v[0], 0.3, g); }, rnd({1, 1, 5}, 5));
  REQUIRE_GRAD([](auto& v) { Generator g(13); return locked_dropout(v[0].transpose(0, 1), 0.5, g); }, rnd({3, 2, 4}, 6));
}

TEST_CASE("embedding_dropout: whole rows dropped, rate over 1e5 words, lookups", "[ops][dropout][embedding]") {
  const int64_t V = 100000, D = 3;
  const double p = 0.2;
  Generator g(3);
  const uint64_t base = g.offset();
  auto w = rnd({V, D}, 1, 1.0, 2.0);
  auto m = embedding_dropout(w, p, g);
  REQUIRE(g.offset() == static_cast<uint64_t>(V));
  REQUIRE(m.shape() == w.shape());
  auto wv = w.to_vector(), mv = m.to_vector();
  int64_t kept = 0;
  for (int64_t r = 0; r < V; ++r) {
    const bool keep = philox_uniform(3, base, r) >= p;
    kept += keep;
    for (int64_t d = 0; d < D; ++d) REQUIRE(mv[r * D + d] == (keep ? wv[r * D + d] * (1.0 / (1.0 - p)) : 0.0));
  }
  REQUIRE(std::abs(static_cast<double>(kept) / V - (1 - p)) < 5 * std::sqrt(p * (1 - p) / V));

  // Every occurrence of a dropped word is zero after the lookup, as in AWD-LSTM.
  Generator g2(4);
  auto small = rnd({8, 2}, 2, 1.0, 2.0);
  auto ms = embedding_dropout(small, 0.5, g2);
  auto ids = from_vector<int64_t>({0, 1, 2, 3, 4, 5, 6, 7, 7, 6, 5, 4, 3, 2, 1, 0}, {2, 8});
  auto e = embedding(ms, ids);
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < 8; ++t) {
      const int64_t id = ids.at({b, t});
      const bool dropped = ms.at({id, 0}) == 0.0;
      REQUIRE((e.at({b, t, 0}) == 0.0) == dropped);
      REQUIRE((e.at({b, t, 1}) == 0.0) == dropped);
    }

  auto one = with_threads(1, [&] { Generator q(5); return embedding_dropout(w, 0.5, q).to_vector(); });
  auto many = with_threads(4, [&] { Generator q(5); return embedding_dropout(w, 0.5, q).to_vector(); });
  REQUIRE(one == many);

  Generator ge(6);
  REQUIRE(embedding_dropout(w, 0.5, ge, false).same(w));
  REQUIRE(ge.offset() == 0);
  REQUIRE(embedding_dropout(w, 0.0, ge).same(w));
  REQUIRE(embedding_dropout(small, 1.0, ge).to_vector() == std::vector<double>(16, 0.0));
  REQUIRE_THROWS_WITH(embedding_dropout(rnd({2, 3, 4}, 1), 0.5, ge),
                      Catch::Contains("embedding_dropout: weight must be [V, D], got [2, 3, 4]"));
  REQUIRE_THROWS_WITH(embedding_dropout(small, 2.0, ge), Catch::Contains("embedding_dropout: drop probability"));
}

TEST_CASE("locked_dropout: one mask per (b, d) shared over time", "[ops][dropout]") {
  const int64_t B = 100, Tn = 3, D = 1000;
  const double p = 0.3;
  Generator g(21);
  const uint64_t base = g.offset();
  auto x = ones<double>({B, Tn, D});
  auto y = locked_dropout(x, p, g);
  REQUIRE(g.offset() == static_cast<uint64_t>(B * D));
  auto yv = y.to_vector();
  int64_t kept = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t d = 0; d < D; ++d) {
      const bool keep = philox_uniform(21, base, b * D + d) >= p;
      kept += keep;
      for (int64_t t = 0; t < Tn; ++t) REQUIRE(yv[(b * Tn + t) * D + d] == (keep ? 1.0 / (1.0 - p) : 0.0));
    }
  REQUIRE(std::abs(static_cast<double>(kept) / (B * D) - (1 - p)) < 5 * std::sqrt(p * (1 - p) / (B * D)));

  auto one = with_threads(1, [&] { Generator q(2); return locked_dropout(x, 0.5, q).to_vector(); });
  auto many = with_threads(4, [&] { Generator q(2); return locked_dropout(x, 0.5, q).to_vector(); });
  REQUIRE(one == many);

  Generator ge(1);
  REQUIRE(locked_dropout(x, 0.5, ge, false).same(x));
  REQUIRE(locked_dropout(zeros<double>({0, 4, 2}), 0.5, ge).shape() == Shape{0, 4, 2});
  REQUIRE(locked_dropout(zeros<double>({2, 0, 2}), 0.5, ge).shape() == Shape{2, 0, 2});
  REQUIRE_THROWS_WITH(locked_dropout(ones<double>({3, 4}), 0.5, ge),
                      Catch::Contains("locked_dropout: input must be [B, T, D], got [3, 4]"));
}

TEST_CASE("dropout family in float32", "[ops][dropout]") {
  Generator g(1), h(1);
  auto xf = ones<float>({50, 20});
  auto yf = dropout(xf, 0.5, g);
  auto yd = dropout(ones<double>({50, 20}), 0.5, h);
  auto vf = yf.to_vector();
  auto vd = yd.to_vector();
  for (size_t i = 0; i < vf.size(); ++i) REQUIRE(static_cast<double>(vf[i]) == vd[i]);  // same mask, exact scale 2
  REQUIRE(embedding_dropout(ones<float>({5, 2}), 0.5, g).shape() == Shape{5, 2});
  REQUIRE(locked_dropout(ones<float>({2, 3, 4}), 0.5, g).shape() == Shape{2, 3, 4});
}
