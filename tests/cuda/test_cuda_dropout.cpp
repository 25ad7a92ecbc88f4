// Dropout on the GPU draws the CPU's mask exactly (same Philox counters), forward and backward:
// elementwise dropout, embedding (row) dropout and locked (variational) dropout.
#include "cuda_test_util.hpp"

// In a namespace of its own: test files are compiled several to a unit (TXTCLS_UNITY_BUILD).
namespace test_cuda_dropout {

using namespace txtcls;
using ct::gpu;

namespace {

template <class T, class F>
void check_same_mask(F f, const Shape& s, uint64_t seed) {
  Tensor<T> x0 = ct::rnd<T>(s, seed);
  Generator gc(seed), gg(seed);
  Tensor<T> x = x0.detach().set_requires_grad(), xg = x0.to(gpu()).set_requires_grad();
  Tensor<T> y = f(x, gc), yg = f(xg, gg);
  Tensor<T> gy = ct::rnd<T>(y.shape(), seed + 1);
  y.backward(gy);
  yg.backward(gy.to(gpu()));
  // The same multiplications by the same factors: equal to the last bit.
  REQUIRE(yg.cpu().to_vector() == y.to_vector());
  REQUIRE(xg.grad().cpu().to_vector() == x.grad().to_vector());
  // The generators advanced alike.
  REQUIRE(gc.uniform() == gg.uniform());
}

template <class T>
void suite() {
  for (double p : {0.1, 0.5, 0.9, 1.0}) {
    INFO("p = " << p);
    for (const Shape& s : std::vector<Shape>{{1}, {31}, {1025}, {3, 4099}}) {
      check_same_mask<T>([p](const Tensor<T>& x, Generator& g) { return dropout(x, p, g); }, s, 17);
    }
    check_same_mask<T>([p](const Tensor<T>& x, Generator& g) { return embedding_dropout(x, p, g); }, {1025, 33}, 18);
    check_same_mask<T>([p](const Tensor<T>& x, Generator& g) { return locked_dropout(x, p, g); }, {3, 31, 65}, 19);
  }
  // Some elements kept and some dropped at p = 0.5 (the comparison above could pass vacuously).
  Generator g(5);
  auto v = dropout(ones<T>({4096}, gpu()), 0.5, g).to_vector();
  const auto kept = std::count(v.begin(), v.end(), T(2));
  const auto dropped = std::count(v.begin(), v.end(), T(0));
  REQUIRE(kept + dropped == 4096);
  REQUIRE(kept > 1800);
  REQUIRE(kept < 2300);
}

}  // namespace

TEST_CASE("cuda dropout draws the CPU's masks", "[cuda][dropout]") {
  suite<float>();
  suite<double>();
}

}  // namespace test_cuda_dropout
