#include "test_util.hpp"

using namespace txtcls;
using namespace tt;

TEST_CASE("creation: shapes, values, arange, from_vector", "[tensor]") {
  auto z = zeros<float>({2, 3});
  REQUIRE(z.shape() == Shape{2, 3});
  REQUIRE(z.numel() == 6);
  REQUIRE(z.is_contiguous());
  require_close(ones<double>({2}), {1.0, 1.0});
  require_close(full<double>({3}, 2.5), {2.5, 2.5, 2.5});
  require_close(arange<double>(0, 1, 0.25), {0, 0.25, 0.5, 0.75});
  REQUIRE(arange<int64_t>(5, 0, -2).to_vector() == std::vector<int64_t>{5, 3, 1});
  auto t = from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3});
  REQUIRE(t.at({1, 2}) == 6);
  REQUIRE(t.at({-1, 0}) == 4);
  REQUIRE_THROWS_WITH(from_vector<double>({1, 2}, {3}), Catch::Contains("do not fill shape [3]"));
  REQUIRE_THROWS_WITH(t.at({2, 0}), Catch::Contains("out of range"));
  REQUIRE(zeros<double>({0, 4}).numel() == 0);
}

TEST_CASE("random: seeded, reproducible, independent of thread count", "[tensor]") {
  Generator g1(42), g2(42);
  auto a = randn<double>({1000}, g1);
  set_num_threads(1);
  auto b = randn<double>({1000}, g2);
  set_num_threads(2);
  REQUIRE(a.to_vector() == b.to_vector());
  auto c = randn<double>({1000}, g1);  // next draw differs
  REQUIRE(a.to_vector() != c.to_vector());
  double m = mean(a).item(), v = mean(mul(a, a)).item() - m * m;
  REQUIRE(std::abs(m) < 0.1);
  REQUIRE(std::abs(v - 1.0) < 0.1);
  Generator g3(1);
  auto u = rand_uniform<double>({5000}, g3, -2, 3);
  for (double x : u.to_vector()) REQUIRE((x >= -2 && x <= 3));
}

TEST_CASE("views share storage and compute correct offsets", "[tensor]") {
  auto t = arange<double>(0, 24).reshape({2, 3, 4});
  auto tr = t.transpose(0, 2);  // [4,3,2]
  REQUIRE(tr.shape() == Shape{4, 3, 2});
  REQUIRE(!tr.is_contiguous());
  REQUIRE(tr.at({3, 1, 1}) == t.at({1, 1, 3}));
  auto p = t.permute({1, 2, 0});
  REQUIRE(p.at({2, 3, 1}) == t.at({1, 2, 3}));
  auto s = t.slice(2, 1, 4, 2);  // cols 1, 3
  REQUIRE(s.shape() == Shape{2, 3, 2});
  require_close(s.select(0, 1).select(0, 2), {21.0, 23.0});
  auto n = t.narrow(1, 1, 2);
  REQUIRE(n.at({0, 0, 0}) == 4);
  auto e = from_vector<double>({1, 2, 3}, {3, 1}).expand({3, 4});
  REQUIRE(e.strides()[1] == 0);
  REQUIRE(e.at({2, 3}) == 3);
  auto c = tr.contiguous();
  REQUIRE(c.is_contiguous());
  REQUIRE(c.at({3, 1, 1}) == 19);
  // writes through a view are visible in the base
  auto base = zeros<double>({2, 2});
  auto col = base.select(1, 1);
  col.fill_(5);
  require_close(base, {0, 5, 0, 5});
  REQUIRE(t.reshape({6, -1}).shape() == Shape{6, 4});
  REQUIRE(t.unsqueeze(0).shape() == Shape{1, 2, 3, 4});
  REQUIRE(t.unsqueeze(-1).shape() == Shape{2, 3, 4, 1});
  REQUIRE(t.unsqueeze(1).squeeze(1).shape() == Shape{2, 3, 4});
  REQUIRE(t.flatten(1).shape() == Shape{2, 12});
  REQUIRE_THROWS_WITH(tr.view({24}), Catch::Contains("not contiguous"));
  REQUIRE_THROWS_WITH(t.reshape({5, -1}), Catch::Contains("cannot infer"));
  REQUIRE_THROWS_WITH(t.permute({0, 0, 1}), Catch::Contains("repeated"));
  REQUIRE_THROWS_WITH(t.select(3, 0), Catch::Contains("out of range"));
  REQUIRE_THROWS_WITH(e.expand({4}), Catch::Contains("fewer dims"));
  REQUIRE_THROWS_WITH(e.expand({2, 4}), Catch::Contains("cannot expand [3, 4] to [2, 4]"));
  REQUIRE_THROWS_WITH(t.squeeze(0), Catch::Contains("is not 1"));
}

TEST_CASE("cast, printing, device errors", "[tensor]") {
  auto t = from_vector<double>({1.5, -2.25}, {2});
  auto f = cast<float>(t);
  REQUIRE(f.at({1}) == -2.25f);
  std::ostringstream os;
  os << from_vector<double>({1, 2, 3, 4}, {2, 2});
  REQUIRE(os.str().find("[[1, 2],\n [3, 4]]") != std::string::npos);
  REQUIRE(os.str().find("F64") != std::string::npos);
  REQUIRE(Device::parse("cuda:1") == Device::cuda(1));
  REQUIRE_THROWS_WITH(Device::parse("tpu"), Catch::Contains("unknown device"));
#ifndef TXTCLS_WITH_CUDA
  REQUIRE_THROWS_WITH(zeros<float>({2}, Device::cuda(0)), Catch::Contains("without the CUDA backend"));
#endif
}
