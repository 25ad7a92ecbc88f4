#include "test_util.hpp"
#include "txtcls/ops/indexing.hpp"

using namespace txtcls;
using namespace tt;

namespace {

using TI = Tensor<int64_t>;
using TM = Tensor<uint8_t>;

TI ids(const std::vector<int64_t>& v, const Shape& s) { return from_vector<int64_t>(v, s); }
TM mask(const std::vector<uint8_t>& v, const Shape& s) { return from_vector<uint8_t>(v, s); }

TI random_index(const Shape& s, int64_t n, uint64_t seed) {
  Generator g(seed);
  TI t(s);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = static_cast<int64_t>(g.randint(static_cast<uint64_t>(n)));
  return t;
}

}  // namespace

TEST_CASE("gather: torch.gather semantics", "[ops][indexing]") {
  auto t = from_vector<double>({1, 2, 3, 4}, {2, 2});
  require_close(gather(t, 1, ids({0, 0, 1, 0}, {2, 2})), {1, 1, 4, 3});
  require_close(gather(t, 0, ids({1, 0, 0, 0}, {2, 2})), {3, 2, 1, 2});
  require_close(gather(t, -1, ids({1, 1, 1}, {1, 3})), {2, 2, 2});  // index smaller in dim 0
  // 3-D against the definition out[i][j][k] = x[i][j][index[i][j][k]] (dim 2), on a strided input.
  auto x = rnd({4, 3, 2}, 1).permute({1, 0, 2});  // [3, 4, 2], non-contiguous
  auto idx = random_index({3, 2, 5}, 2, 2);
  auto out = gather(x, 2, idx);
  REQUIRE(out.shape() == Shape{3, 2, 5});
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 2; ++j)
      for (int64_t k = 0; k < 5; ++k) REQUIRE(out.at({i, j, k}) == x.at({i, j, idx.at({i, j, k})}));
  REQUIRE(gather(x, 1, TI(Shape{3, 0, 2})).shape() == Shape{3, 0, 2});
}

TEST_CASE("gather gradients, repeated indices collide", "[ops][indexing][grad]") {
  for (int64_t d : {0, 1, 2, -1}) {
    INFO("dim " << d);
    const int64_t n = Shape{3, 4, 2}[d < 0 ? d + 3 : d];
    Shape is = {2, 4, 2};
    is[d < 0 ? d + 3 : d] = 6;  // more picks than entries: repeats are certain
    const auto index = random_index(is, n, 3 + d);
    REQUIRE_GRAD([&](auto& v) { return gather(v[0], d, index); }, rnd({3, 4, 2}, 4));
  }
  REQUIRE_GRAD([](auto& v) { return gather(v[0].t(), 0, random_index({5, 2}, 3, 1)); }, rnd({2, 3}, 5));
  REQUIRE_GRAD([](auto& v) { return gather(v[0], 0, random_index({1}, 1, 1)); }, rnd({1}, 6));
  REQUIRE_GRAD([](auto& v) { return add(gather(v[0], 1, TI(Shape{2, 0})), 1.0); }, rnd({2, 3}, 7));
}

TEST_CASE("gather: thread count does not change the backward", "[ops][indexing]") {
  const auto index = random_index({200, 300}, 50, 1);
  Generator gg(2);
  const auto gout = randn<float>({200, 300}, gg);
  auto grad_with = [&](int threads) {
    const int prev = num_threads();
    set_num_threads(threads);
    auto x = zeros<float>({200, 50}).set_requires_grad();
    gather(x, 1, index).backward(gout);
    auto y = zeros<float>({50, 300}).set_requires_grad();
    gather(y, 0, index).backward(gout);
    set_num_threads(prev);
    auto a = x.grad().to_vector(), b = y.grad().to_vector();
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  REQUIRE(grad_with(1) == grad_with(4));
}

TEST_CASE("gather: errors", "[ops][indexing]") {
  auto x = rnd({2, 3}, 1);
  REQUIRE_THROWS_WITH(gather(x, 1, ids({0, 3}, {1, 2})),
                      Catch::Contains("gather: index 3 at position [0, 1] of index [1, 2] is out of range for dim 1") &&
                          Catch::Contains("size 3"));
  REQUIRE_THROWS_WITH(gather(x, 0, ids({-1}, {1, 1})), Catch::Contains("gather: index -1 at position [0, 0]"));
  REQUIRE_THROWS_WITH(gather(x, 1, ids({0, 0}, {2})), Catch::Contains("gather: index [2] must have as many dims"));
  REQUIRE_THROWS_WITH(gather(x, 1, ids({0, 0, 0}, {3, 1})), Catch::Contains("larger than the input [2, 3] in dim 0"));
  REQUIRE_THROWS_WITH(gather(x, 2, ids({0}, {1, 1})), Catch::Contains("dim 2 out of range"));
}

TEST_CASE("index_select: values, gradients, errors", "[ops][indexing]") {
  auto x = arange<double>(0, 24).reshape({2, 3, 4});
  require_close(index_select(x, 1, ids({2, 0, 2}, {3})),
                {8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11, 20, 21, 22, 23, 12, 13, 14, 15, 20, 21, 22, 23});
  require_close(index_select(x, -1, ids({3, 3}, {2})), {3, 3, 7, 7, 11, 11, 15, 15, 19, 19, 23, 23});
  require_close(index_select(x, 0, ids({1}, {1})), x.select(0, 1).contiguous().to_vector());
  REQUIRE(index_select(x, 1, TI(Shape{0})).shape() == Shape{2, 0, 4});
  require_close(index_select(x.transpose(0, 2), 0, ids({1}, {1})), {1, 13, 5, 17, 9, 21});

  for (int64_t d : {0, 1, 2}) {
    INFO("dim " << d);
    const auto index = random_index({7}, Shape{3, 4, 2}[d], 10 + d);
    REQUIRE_GRAD([&](auto& v) { return index_select(v[0], d, index); }, rnd({3, 4, 2}, 1));
  }
  REQUIRE_GRAD([](auto& v) { return index_select(v[0].t(), 1, ids({0, 0, 1}, {3})); }, rnd({2, 5}, 2));
  REQUIRE_GRAD([](auto& v) { return index_select(v[0], 0, ids({0, 0}, {2})); }, rnd({1}, 3));
  REQUIRE_GRAD([](auto& v) { return add(index_select(v[0], 0, TI(Shape{0})), 1.0); }, rnd({3, 2}, 4));

  REQUIRE_THROWS_WITH(index_select(x, 1, ids({0, 3}, {2})),
                      Catch::Contains("index_select: index 3 at position [1] of index [2] is out of range for dim 1 "
                                      "of input [2, 3, 4] (size 3)"));
  REQUIRE_THROWS_WITH(index_select(x, 0, ids({0, 1}, {1, 2})), Catch::Contains("index_select: index must be 1-D"));
}

TEST_CASE("concat and stack: values, gradients, errors", "[ops][indexing]") {
  auto a = from_vector<double>({1, 2, 3, 4}, {2, 2});
  auto b = from_vector<double>({5, 6}, {2, 1});
  require_close(concat({a, b}, 1), {1, 2, 5, 3, 4, 6});
  require_close(concat({a, b.t()}, 0), {1, 2, 3, 4, 5, 6});
  require_close(concat(std::vector<TD>{a, TD(Shape{2, 0}), a}, -1), {1, 2, 1, 2, 3, 4, 3, 4});
  require_close(concat({a}), {1, 2, 3, 4});
  require_close(stack({a, a.t()}, 0), {1, 2, 3, 4, 1, 3, 2, 4});
  require_close(stack({a, a.t()}, 2), {1, 1, 2, 3, 3, 2, 4, 4});
  REQUIRE(stack({a, a, a}, -1).shape() == Shape{2, 2, 3});
  REQUIRE(stack({scalar<double>(1), scalar<double>(2)}).shape() == Shape{2});

  for (int64_t d : {0, 1, 2}) {
    INFO("dim " << d);
    Shape s1 = {2, 3, 2}, s2 = {2, 3, 2}, s3 = {2, 3, 2};
    s2[d] = 1;
    s3[d] = 0;
    REQUIRE_GRAD([&](auto& v) { return concat({v[0], v[1], v[2], v[0]}, d); }, rnd(s1, 1), rnd(s2, 2), rnd(s3, 3));
    REQUIRE_GRAD([&](auto& v) { return stack({v[0], v[1].t()}, d); }, rnd({3, 2}, 4), rnd({2, 3}, 5));
  }
  // Only some inputs need a gradient.
  auto w = rnd({2, 2}, 6).set_requires_grad();
  sum(concat({a, w}, 0)).backward();
  require_close(w.grad(), {1, 1, 1, 1});

  REQUIRE_THROWS_WITH(concat({a, rnd({3, 3}, 1)}, 1),
                      Catch::Contains("concat: tensor 1 has shape [3, 3], which does not match tensor 0 [2, 2] outside dim 1"));
  REQUIRE_THROWS_WITH(concat({a, rnd({2}, 1)}, 0), Catch::Contains("concat: tensor 1 has shape [2]"));
  REQUIRE_THROWS_WITH(concat(std::vector<TD>{}, 0), Catch::Contains("concat: no tensors given"));
  REQUIRE_THROWS_WITH(stack({a, b}, 0), Catch::Contains("stack: tensor 1 has shape [2, 1] but tensor 0 has [2, 2]"));
  REQUIRE_THROWS_WITH(stack({a, a}, 3), Catch::Contains("stack: dim 3 out of range"));
}

TEST_CASE("split: views with autograd", "[ops][indexing]") {
  auto x = arange<double>(0, 12).reshape({2, 6});
  auto parts = split(x, 4, 1);
  REQUIRE(parts.size() == 2);
  require_close(parts[0], {0, 1, 2, 3, 6, 7, 8, 9});
  require_close(parts[1], {4, 5, 10, 11});
  REQUIRE(parts[1].data() == x.data() + 4);  // a view
  auto q = split(x, std::vector<int64_t>{1, 0, 5}, -1);
  REQUIRE(q.size() == 3);
  REQUIRE(q[1].shape() == Shape{2, 0});
  require_close(q[2], {1, 2, 3, 4, 5, 7, 8, 9, 10, 11});
  REQUIRE(split(x, 1, 0).size() == 2);
  REQUIRE(split(TD(Shape{0, 3}), 0, 0).size() == 1);

  REQUIRE_GRAD([](auto& v) {
    auto p = split(v[0], 2, 1);  // [3,2], [3,2], [3,1]
    return concat({mul(p[0], 2.0), mul(p[2], -3.0), p[0]}, 1);
  }, rnd({3, 5}, 1));
  REQUIRE_GRAD([](auto& v) {
    auto p = split(v[0].t(), std::vector<int64_t>{3, 1}, 0);
    return mul(p[0], p[1]);
  }, rnd({2, 4}, 2));

  REQUIRE_THROWS_WITH(split(x, std::vector<int64_t>{2, 3}, 1),
                      Catch::Contains("split: sizes add up to 5 but dim 1 of input [2, 6] has 6"));
  REQUIRE_THROWS_WITH(split(x, std::vector<int64_t>{7, -1}, 1), Catch::Contains("split: negative size -1"));
  REQUIRE_THROWS_WITH(split(x, 0, 1), Catch::Contains("split: split_size must be positive, got 0"));
}

TEST_CASE("masked_fill and where: values with broadcasting", "[ops][indexing]") {
  auto x = arange<double>(0, 6).reshape({2, 3});
  require_close(masked_fill(x, mask({1, 0, 1, 0, 0, 2}, {2, 3}), -1.0), {-1, 1, -1, 3, 4, -1});
  require_close(masked_fill(x, mask({0, 1}, {2, 1}), 9.0), {0, 1, 2, 9, 9, 9});
  require_close(masked_fill(x, mask({1, 0, 0}, {3}), 7.0), {7, 1, 2, 7, 4, 5});
  require_close(masked_fill(x.t(), mask({1, 0}, {2}), 7.0), {7, 3, 7, 4, 7, 5});
  require_close(masked_fill(x, lt(x, 2.0), -5.0), {-5, -5, 2, 3, 4, 5});
  REQUIRE_THROWS_WITH(masked_fill(x, mask({1, 0, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1}, {2, 2, 3}), 0.0),
                      Catch::Contains("masked_fill: mask [2, 2, 3] does not broadcast to the input [2, 3]"));
  REQUIRE_THROWS_WITH(masked_fill(x, mask({1, 0}, {2}), 0.0), Catch::Contains("cannot be broadcast"));

  auto a = from_vector<double>({1, 2, 3}, {3});
  auto b = from_vector<double>({10, 20}, {2, 1});
  auto c = mask({1, 0, 1, 0, 1, 1}, {2, 3});
  require_close(where(c, a, b), {1, 10, 3, 20, 2, 3});
  require_close(where(mask({0, 1}, {2, 1}), a, b), {10, 10, 10, 1, 2, 3});
  REQUIRE(where(mask({1}, {}), a, b).shape() == Shape{2, 3});
  REQUIRE_THROWS_WITH(where(mask({1, 0}, {2}), a, b), Catch::Contains("where: shapes"));

  auto f = from_vector<float>({1.5f, -2, 0}, {3});
  REQUIRE(masked_fill(f, gt(f, 0.0f), 0.0f).to_vector() == std::vector<float>{0, -2, 0});
  REQUIRE(where(ge(f, 0.0f), f, neg(f)).to_vector() == std::vector<float>{1.5f, 2, 0});
}

TEST_CASE("masked_fill and where gradients", "[ops][indexing][grad]") {
  const auto m1 = mask({1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 1}, {3, 4});
  const auto m2 = mask({0, 1, 1}, {3, 1});
  REQUIRE_GRAD([&](auto& v) { return masked_fill(v[0], m1, 3.0); }, rnd({3, 4}, 1));
  REQUIRE_GRAD([&](auto& v) { return masked_fill(v[0], m2, 3.0); }, rnd({2, 3, 4}, 2));
  REQUIRE_GRAD([&](auto& v) { return masked_fill(v[0].t(), m2, 3.0); }, rnd({4, 3}, 3));
  REQUIRE_GRAD([&](auto& v) { return masked_fill(v[0], mask({1}, {}), 3.0); }, rnd({0, 2}, 3));
  const auto c = mask({1, 0, 1, 1, 0, 0, 1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1, 0, 1, 0, 1, 1, 0}, {2, 3, 4});
  REQUIRE_GRAD([&](auto& v) { return where(c, v[0], v[1]); }, rnd({3, 1}, 4), rnd({4}, 5));
  REQUIRE_GRAD([&](auto& v) { return where(m2, v[0], v[1]); }, rnd({2, 1, 4}, 6), rnd({}, 7));
  REQUIRE_GRAD([&](auto& v) { return where(m1, v[0], v[0]); }, rnd({3, 4}, 8));
  REQUIRE_GRAD([&](auto& v) { return where(m1, v[0].t(), v[1]); }, rnd({4, 3}, 9), rnd({1, 1}, 10));
}

TEST_CASE("comparisons produce masks", "[ops][indexing]") {
  auto x = from_vector<double>({-1, 0, 2, 2}, {2, 2});
  REQUIRE(lt(x, 2.0).to_vector() == std::vector<uint8_t>{1, 1, 0, 0});
  REQUIRE(le(x, 0.0).to_vector() == std::vector<uint8_t>{1, 1, 0, 0});
  REQUIRE(gt(x, 0.0).to_vector() == std::vector<uint8_t>{0, 0, 1, 1});
  REQUIRE(ge(x, 0.0).to_vector() == std::vector<uint8_t>{0, 1, 1, 1});
  REQUIRE(eq(x, 2.0).to_vector() == std::vector<uint8_t>{0, 0, 1, 1});
  REQUIRE(ne(x.t(), 2.0).to_vector() == std::vector<uint8_t>{1, 0, 1, 0});
}

TEST_CASE("indexing ops in float32", "[ops][indexing]") {
  auto x = arange<float>(0, 6).reshape({2, 3});
  REQUIRE(gather(x, 1, ids({2, 0}, {2, 1})).to_vector() == std::vector<float>{2, 3});
  REQUIRE(index_select(x, 0, ids({1}, {1})).to_vector() == std::vector<float>{3, 4, 5});
  REQUIRE(concat({x, x}, 0).shape() == Shape{4, 3});
  REQUIRE(stack({x, x}, 1).shape() == Shape{2, 2, 3});
  REQUIRE(split(x, 2, 1).size() == 2);
}
