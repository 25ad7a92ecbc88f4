#include "test_util.hpp"
#include "txtcls/ops/embedding.hpp"

using namespace txtcls;
using namespace tt;

namespace {

using TI = Tensor<int64_t>;

TI random_ids(const Shape& s, int64_t V, uint64_t seed) {
  Generator g(seed);
  TI ids(s);
  for (int64_t i = 0; i < ids.numel(); ++i) ids.data()[i] = static_cast<int64_t>(g.randint(static_cast<uint64_t>(V)));
  return ids;
}

// Serial reference of the backward: rows added in position order.
template <class T>
std::vector<T> naive_embedding_grad(const Tensor<T>& g, const TI& ids, int64_t V, int64_t D, int64_t pad) {
  std::vector<T> gw(static_cast<size_t>(V * D), T(0));
  auto gv = g.to_vector();
  auto iv = ids.to_vector();
  for (size_t n = 0; n < iv.size(); ++n)
    if (iv[n] != pad)
      for (int64_t d = 0; d < D; ++d) gw[iv[n] * D + d] += gv[n * D + d];
  return gw;
}

}  // namespace

TEST_CASE("embedding: rows by id, output shape ids.shape + [D]", "[ops][embedding]") {
  auto w = arange<double>(0, 15).reshape({5, 3});
  auto ids = from_vector<int64_t>({0, 4, 2, 2}, {2, 2});
  auto e = embedding(w, ids);
  REQUIRE(e.shape() == Shape{2, 2, 3});
  require_close(e, {0, 1, 2, 12, 13, 14, 6, 7, 8, 6, 7, 8});
  // 0-d ids give one row; empty ids give an empty batch.
  require_close(embedding(w, from_vector<int64_t>({3}, {})), {9, 10, 11});
  REQUIRE(embedding(w, TI(Shape{0})).shape() == Shape{0, 3});
  REQUIRE(embedding(w, TI(Shape{2, 0})).shape() == Shape{2, 0, 3});
  // Strided weight and ids.
  auto wt = arange<double>(0, 15).reshape({3, 5}).t();  // [5, 3], row r = {r, r + 5, r + 10}
  auto idt = from_vector<int64_t>({1, 3, 0, 4}, {2, 2}).t();  // [[1, 0], [3, 4]]
  require_close(embedding(wt, idt), {1, 6, 11, 0, 5, 10, 3, 8, 13, 4, 9, 14});
  // The padding row is returned as stored.
  require_close(embedding(w, from_vector<int64_t>({1, 0}, {2}), 1), {3, 4, 5, 0, 1, 2});
}

TEST_CASE("embedding: backward counts occurrences and skips the padding row", "[ops][embedding][grad]") {
  auto w = rnd({5, 2}, 1).set_requires_grad();
  auto ids = from_vector<int64_t>({1, 3, 1, 1, 0, 3}, {3, 2});
  sum(embedding(w, ids, 3)).backward();
  require_close(w.grad(), {1, 1, 3, 3, 0, 0, 0, 0, 0, 0});
  w.zero_grad();
  sum(embedding(w, ids)).backward();
  require_close(w.grad(), {1, 1, 3, 3, 0, 0, 2, 2, 0, 0});
}

TEST_CASE("embedding gradients (finite differences)", "[ops][embedding][grad]") {
  const auto ids = from_vector<int64_t>({2, 0, 2, 4, 1, 2}, {2, 3});
  REQUIRE_GRAD([&](auto& v) { return embedding(v[0], ids); }, rnd({5, 3}, 1));
  // The padding row deliberately gets no gradient although the forward reads it, so the checks
  // with padding zero the padded positions' outputs: then both derivatives are exactly 0 there.
  const auto not2 = from_vector<double>({0, 1, 0, 1, 1, 0}, {2, 3, 1});
  const auto not0 = from_vector<double>({1, 0, 1, 1, 1, 1}, {2, 3, 1});
  REQUIRE_GRAD([&](auto& v) { return mul(embedding(v[0], ids, 2), not2); }, rnd({5, 3}, 2));
  REQUIRE_GRAD([&](auto& v) { return mul(embedding(v[0], ids, 0), not0); }, rnd({5, 1}, 3));
  REQUIRE_GRAD([&](auto& v) { return embedding(v[0].t(), ids.t()); }, rnd({4, 5}, 4));
  REQUIRE_GRAD([&](auto& v) { return embedding(v[0], from_vector<int64_t>({0, 0, 0}, {3})); }, rnd({1, 4}, 5));
  REQUIRE_GRAD([&](auto& v) { return embedding(v[0], random_ids({4, 6, 2}, 7, 9)); }, rnd({7, 3}, 6));
  REQUIRE_GRAD([&](auto& v) { return add(embedding(v[0], TI(Shape{0})), 1.0); }, rnd({3, 2}, 7));
}

TEST_CASE("embedding: deterministic backward, equal to the serial sum for any thread count", "[ops][embedding]") {
  const int64_t V = 50, D = 64;
  const auto ids = random_ids({400, 25}, V, 3);  // 10000 positions, many repeats
  Generator gg(4);
  const auto gout = randn<float>({400, 25, D}, gg);
  auto grad_with = [&](int threads) {
    const int prev = num_threads();
    set_num_threads(threads);
    auto w = zeros<float>({V, D}).set_requires_grad();
    embedding(w, ids, 7).backward(gout);
    set_num_threads(prev);
    return w.grad().to_vector();
  };
  auto one = grad_with(1), many = grad_with(4);
  REQUIRE(one == many);
  REQUIRE(one == naive_embedding_grad(gout, ids, V, D, 7));
}

TEST_CASE("embedding: errors name the id, its position and V", "[ops][embedding]") {
  auto w = rnd({5, 3}, 1);
  REQUIRE_THROWS_WITH(embedding(w, from_vector<int64_t>({1, 2, 7, 0}, {2, 2})),
                      Catch::Contains("embedding: id 7 at position [1, 0] of ids [2, 2] is out of range") &&
                          Catch::Contains("V = 5"));
  REQUIRE_THROWS_WITH(embedding(w, from_vector<int64_t>({-1}, {1})), Catch::Contains("embedding: id -1 at position [0]"));
  REQUIRE_THROWS_WITH(embedding(rnd({5}, 1), from_vector<int64_t>({1}, {1})),
                      Catch::Contains("embedding: weight must be [V, D], got [5]"));
  REQUIRE_THROWS_WITH(embedding(w, from_vector<int64_t>({1}, {1}), 5), Catch::Contains("embedding: padding_idx 5"));
  REQUIRE_THROWS_WITH(embedding(w, from_vector<int64_t>({1}, {1}), -2), Catch::Contains("embedding: padding_idx -2"));
}

TEST_CASE("embedding in float32", "[ops][embedding]") {
  auto w = arange<float>(0, 6).reshape({3, 2});
  auto e = embedding(w, from_vector<int64_t>({2, 0}, {2}));
  REQUIRE(e.to_vector() == std::vector<float>{4, 5, 0, 1});
}
