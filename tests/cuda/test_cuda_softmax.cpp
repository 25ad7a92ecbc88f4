// softmax and log_softmax on the GPU against the CPU: rows of awkward lengths, a middle dim,
// additive masks with -inf (partly and fully masked rows), NaN propagation, and gradients
// (input and mask).
#include <limits>

#include "cuda_test_util.hpp"

// In a namespace of its own: test files are compiled several to a unit (TXTCLS_UNITY_BUILD).
namespace test_cuda_softmax {

using namespace txtcls;
using ct::gpu;

namespace {

template <class T>
void check(const Tensor<T>& x0, int64_t dim, const Tensor<T>& mask0, bool log, uint64_t seed,
           double mask_grad_floor = 0) {
  auto f = [&](const Tensor<T>& x, const Tensor<T>& m) { return log ? log_softmax(x, dim, m) : softmax(x, dim, m); };
  Tensor<T> x = x0.detach().set_requires_grad();
  Tensor<T> m = mask0.defined() ? mask0.detach().set_requires_grad() : Tensor<T>();
  Tensor<T> y = f(x, m);
  Tensor<T> gy = ct::rnd<T>(y.shape(), seed);
  y.backward(gy);
  Tensor<T> xg = x0.to(gpu()).set_requires_grad();
  Tensor<T> mg = mask0.defined() ? mask0.to(gpu()).set_requires_grad() : Tensor<T>();
  Tensor<T> yg = f(xg, mg);
  yg.backward(gy.to(gpu()));
  // -inf outputs (log_softmax of masked entries) must agree exactly; compare the rest.
  auto finite = [](const Tensor<T>& t) {
    auto v = t.to_vector();
    for (auto& e : v) e = std::isinf(e) ? T(-1e3) : e;
    return from_vector<T>(v, t.shape());
  };
  CT_REQUIRE_CLOSE(finite(yg.cpu()), finite(y), T);
  INFO("input gradient");
  CT_REQUIRE_CLOSE(xg.grad().cpu(), x.grad(), T);
  INFO("mask gradient");
  if (mask0.defined()) CT_CHECK_CLOSE_TOL(mg.grad().cpu(), m.grad(), ct::tol<T>(), mask_grad_floor);
}

template <class T>
void suite() {
  const T inf = std::numeric_limits<T>::infinity();
  uint64_t seed = 70;
  for (bool log : {false, true}) {
    INFO((log ? "log_softmax" : "softmax"));
    // Row lengths for every kernel: a warp per row (n <= 512), a block per row held in registers
    // (n <= 8192), the online two-sweep kernel beyond.
    for (const Shape& s : std::vector<Shape>{{1, 1}, {3, 31}, {9, 300}, {5, 1025}, {2, 4099}, {2, 9000}, {7, 1}}) {
      INFO((log ? "log_softmax " : "softmax ") << shape_str(s));
      ++seed;
      check<T>(ct::rnd<T>(s, seed, -8, 8), -1, Tensor<T>(), log, seed);
    }
    INFO("middle and first dims");
    seed += 2;
    check<T>(ct::rnd<T>({4, 33, 7}, seed - 1, -8, 8), 1, Tensor<T>(), log, seed);
    check<T>(ct::rnd<T>({33, 5}, seed, -8, 8), 0, Tensor<T>(), log, seed + 1);
    // Attention-style mask [B, 1, 1, L]: batch 0 keeps 5 keys, batch 1 none (empty rows).
    std::vector<T> mv(2 * 37, T(0));
    for (int j = 5; j < 37; ++j) mv[j] = -inf;
    for (int j = 0; j < 37; ++j) mv[37 + j] = -inf;
    Tensor<T> mask = from_vector<T>(mv, {2, 1, 1, 37});
    INFO("masked keys");
    ++seed;
    check<T>(ct::rnd<T>({2, 3, 4, 37}, seed, -8, 8), -1, mask, log, seed);
    // A finite mask varying along a middle dim (not the softmax dim). It shifts whole rows, which
    // leaves the softmax unchanged: its gradient is zero in exact arithmetic and both sides hold
    // rounding noise, so it is compared on the scale of the input gradient (O(1)).
    INFO("mask constant along the softmax dim");
    ++seed;
    check<T>(ct::rnd<T>({3, 6, 9}, seed), 2, ct::rnd<T>({6, 1}, seed + 1, -3, 0), log, seed, 1.0);
    INFO("mask varying along a middle dim and the softmax dim");
    ++seed;
    check<T>(ct::rnd<T>({3, 6, 9}, seed), 2, ct::rnd<T>({6, 9}, seed + 1, -3, 0), log, seed);
  }
  // A NaN turns its row into NaN and leaves the other rows alone.
  Tensor<T> x = ct::rnd<T>({2, 40}, 9);
  {
    NoGradGuard ng;
    x.set({1, 17}, std::numeric_limits<T>::quiet_NaN());
  }
  auto y = softmax(x.to(gpu()), -1).to_vector();
  auto yc = softmax(x, -1).to_vector();
  for (int j = 0; j < 40; ++j) {
    REQUIRE(std::isnan(y[40 + j]));
    REQUIRE(std::abs(y[j] - yc[j]) <= ct::tol<T>());
  }
}

}  // namespace

TEST_CASE("cuda softmax and log_softmax match the CPU", "[cuda][softmax]") {
  suite<float>();
  suite<double>();
}

}  // namespace test_cuda_softmax
