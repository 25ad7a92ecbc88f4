#include "test_util.hpp"

using namespace txtcls;
using namespace tt;

static TD naive_matmul(const TD& a, const TD& b) {
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  auto out = zeros<double>({M, N});
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += a.at({i, k}) * b.at({k, j});
      out.set({i, j}, s);
    }
  return out;
}

TEST_CASE("matmul: values, transposed operands, batches", "[ops][matmul]") {
  auto a = rnd({5, 7}, 1), b = rnd({7, 3}, 2);
  require_close(matmul(a, b), naive_matmul(a, b).to_vector(), 1e-12);
  auto at = rnd({7, 5}, 3), bt = rnd({3, 7}, 4);
  require_close(matmul(at.t(), bt.t()), naive_matmul(at.t().contiguous(), bt.t().contiguous()).to_vector(), 1e-12);
  auto A = rnd({2, 3, 5, 7}, 5), B = rnd({3, 7, 4}, 6);
  auto C = matmul(A, B);
  REQUIRE(C.shape() == Shape{2, 3, 5, 4});
  require_close(C.select(0, 1).select(0, 2), naive_matmul(A.select(0, 1).select(0, 2), B.select(0, 2)).to_vector(), 1e-12);
  auto D = matmul(A, b);  // folded batch
  require_close(D.select(0, 1).select(0, 0), naive_matmul(A.select(0, 1).select(0, 0), b).to_vector(), 1e-12);
  // a strided operand that is neither row- nor column-major
  auto S = rnd({6, 14}, 7).slice(1, 0, 14, 2);  // [6,7] with strides (14, 2)
  require_close(matmul(S, b), naive_matmul(S.contiguous(), b).to_vector(), 1e-12);
  REQUIRE(matmul(zeros<double>({3, 0}), zeros<double>({0, 2})).to_vector() == std::vector<double>(6, 0.0));
  REQUIRE_THROWS_WITH(matmul(a, a), Catch::Contains("inner dims differ: [5, 7] @ [5, 7]"));
  auto l = linear(rnd({4, 7}, 8), rnd({3, 7}, 9), rnd({3}, 10));
  REQUIRE(l.shape() == Shape{4, 3});
}

TEST_CASE("matmul and linear gradients", "[ops][matmul][grad]") {
  REQUIRE_GRAD([](auto& v) { return matmul(v[0], v[1]); }, rnd({3, 4}, 1), rnd({4, 2}, 2));
  REQUIRE_GRAD([](auto& v) { return matmul(v[0].t(), v[1]); }, rnd({4, 3}, 1), rnd({4, 2}, 2));
  REQUIRE_GRAD([](auto& v) { return matmul(v[0], v[1]); }, rnd({2, 3, 4}, 1), rnd({4, 2}, 2));
  REQUIRE_GRAD([](auto& v) { return matmul(v[0], v[1]); }, rnd({2, 1, 3, 4}, 1), rnd({3, 4, 2}, 2));
  REQUIRE_GRAD([](auto& v) { return matmul(v[0], v[1].transpose(-1, -2)); }, rnd({2, 3, 4}, 1), rnd({2, 5, 4}, 2));
  REQUIRE_GRAD([](auto& v) { return linear(v[0], v[1], v[2]); }, rnd({2, 3, 4}, 1), rnd({5, 4}, 2), rnd({5}, 3));
  REQUIRE_GRAD([](auto& v) { return linear(v[0], v[1]); }, rnd({4}, 1), rnd({2, 4}, 2));
}

TEST_CASE("sum and mean over dims", "[ops][reduce]") {
  auto t = arange<double>(0, 24).reshape({2, 3, 4});
  REQUIRE(sum(t).item() == 276);
  require_close(sum(t, {2}), {6, 22, 38, 54, 70, 86});
  require_close(sum(t, {0}), {12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34});
  require_close(sum(t, {0, 2}), {60, 92, 124});
  REQUIRE(sum(t, {-1}, true).shape() == Shape{2, 3, 1});
  require_close(mean(t, {1}), {4, 5, 6, 7, 16, 17, 18, 19});
  require_close(sum(t.transpose(0, 2), {1}), sum(t, {1}).t().contiguous().to_vector());
  REQUIRE(sum(zeros<double>({0, 3}), {0}).to_vector() == std::vector<double>(3, 0.0));
  REQUIRE_THROWS_WITH(mean(zeros<double>({0, 3}), {0}), Catch::Contains("empty dim"));
  REQUIRE_THROWS_WITH(sum(t, {3}), Catch::Contains("dim 3 out of range"));
  require_close(sum_to(ones<double>({2, 3, 4}), {3, 1}), {8, 8, 8});
}

TEST_CASE("reduction gradients", "[ops][reduce][grad]") {
  for (std::vector<int64_t> dims : {std::vector<int64_t>{}, {0}, {1}, {2}, {0, 2}, {-1}}) {
    for (bool keep : {false, true}) {
      INFO("dims " << dims.size() << " keep " << keep);
      REQUIRE_GRAD([&](auto& v) { return sum(v[0], dims, keep); }, rnd({2, 3, 4}, 1));
      REQUIRE_GRAD([&](auto& v) { return mean(v[0], dims, keep); }, rnd({2, 3, 4}, 2));
    }
  }
  REQUIRE_GRAD([](auto& v) { return sum(v[0].permute({2, 0, 1}), {1}); }, rnd({2, 3, 4}, 3));
}
