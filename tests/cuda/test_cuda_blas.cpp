// matmul and linear on the GPU (cuBLAS) against the CPU, forward and backward: transposed views
// passed as cuBLAS arguments, batch broadcasting, batches with no single stride, K = 0, TF32.
#include "cuda_test_util.hpp"

// In a namespace of its own: test files are compiled several to a unit (TXTCLS_UNITY_BUILD).
namespace test_cuda_blas {

using namespace txtcls;
using ct::gpu;

namespace {

template <class T>
void check_matmul(const Tensor<T>& a0, const Tensor<T>& b0, uint64_t seed, bool ta = false, bool tb = false) {
  auto prep = [](const Tensor<T>& t, bool tr) { return tr ? t.transpose(-1, -2) : t; };
  Tensor<T> a = a0.detach().set_requires_grad(), b = b0.detach().set_requires_grad();
  Tensor<T> y = matmul(prep(a, ta), prep(b, tb));
  Tensor<T> gy = ct::rnd<T>(y.shape(), seed);
  y.backward(gy);
  Tensor<T> ag = a0.to(gpu()).set_requires_grad(), bg = b0.to(gpu()).set_requires_grad();
  Tensor<T> yg = matmul(prep(ag, ta), prep(bg, tb));
  yg.backward(gy.to(gpu()));
  CT_REQUIRE_CLOSE(yg.cpu(), y, T);
  CT_REQUIRE_CLOSE(ag.grad().cpu(), a.grad(), T);
  CT_REQUIRE_CLOSE(bg.grad().cpu(), b.grad(), T);
}

template <class T>
void matmul_suite() {
  struct Case {
    Shape a, b;
    bool ta, tb;
  };
  const std::vector<Case> cases = {
      {{1, 1}, {1, 1}, false, false},       {{31, 17}, {17, 33}, false, false},  {{17, 31}, {17, 33}, true, false},
      {{31, 17}, {33, 17}, false, true},    {{17, 31}, {33, 17}, true, true},    {{1025, 3}, {3, 1}, false, false},
      {{2, 3, 5, 7}, {7, 4}, false, false}, {{5, 7}, {2, 1, 7, 4}, false, false}, {{3, 1, 5, 7}, {4, 7, 6}, false, false},
      {{2, 3, 7, 5}, {3, 6, 7}, true, true}, {{1, 129}, {129, 257}, false, false}};
  uint64_t seed = 40;
  for (const auto& c : cases) {
    INFO("matmul " << shape_str(c.a) << (c.ta ? "^T" : "") << " @ " << shape_str(c.b) << (c.tb ? "^T" : ""));
    check_matmul<T>(ct::rnd<T>(c.a, seed + 1), ct::rnd<T>(c.b, seed + 2), seed + 3, c.ta, c.tb);
    seed += 3;
  }
  // A batch that is broadcast along a middle dim only: no single batch stride, so it is copied.
  {
    Tensor<T> a = ct::rnd<T>({4, 1, 5, 6}, 1).expand({4, 3, 5, 6});
    Tensor<T> b = ct::rnd<T>({4, 3, 6, 2}, 2);
    CT_REQUIRE_CLOSE(matmul(a.to(gpu()), b.to(gpu())).cpu(), matmul(a, b), T);
    // An operand with neither unit stride (every other column).
    Tensor<T> w = ct::rnd<T>({6, 8}, 3);
    auto every_other = [](const Tensor<T>& t) { return t.slice(1, 0, 8, 2).slice(0, 0, 6, 2); };  // [3, 4], strides (16, 2)
    Tensor<T> x = ct::rnd<T>({5, 3}, 4);
    CT_REQUIRE_CLOSE(matmul(x.to(gpu()), every_other(w.to(gpu()))).cpu(), matmul(x, every_other(w)), T);
  }
  // K = 0 gives zeros.
  Tensor<T> z = matmul(zeros<T>({3, 0}, gpu()), zeros<T>({0, 5}, gpu()));
  for (T v : z.to_vector()) REQUIRE(v == T(0));
  // linear with bias, backward through the bias's sum_to.
  Tensor<T> x0 = ct::rnd<T>({7, 9, 33}, 5), w0 = ct::rnd<T>({17, 33}, 6), b0 = ct::rnd<T>({17}, 7);
  Tensor<T> x = x0.detach().set_requires_grad(), w = w0.detach().set_requires_grad(), b = b0.detach().set_requires_grad();
  Tensor<T> xg = x0.to(gpu()).set_requires_grad(), wg = w0.to(gpu()).set_requires_grad(), bg = b0.to(gpu()).set_requires_grad();
  Tensor<T> gy = ct::rnd<T>({7, 9, 17}, 8);
  Tensor<T> y = linear(x, w, b), yg = linear(xg, wg, bg);
  y.backward(gy);
  yg.backward(gy.to(gpu()));
  CT_REQUIRE_CLOSE(yg.cpu(), y, T);
  CT_REQUIRE_CLOSE(xg.grad().cpu(), x.grad(), T);
  CT_REQUIRE_CLOSE(wg.grad().cpu(), w.grad(), T);
  CT_REQUIRE_CLOSE(bg.grad().cpu(), b.grad(), T);
}

}  // namespace

TEST_CASE("cuda matmul and linear match the CPU", "[cuda][blas]") {
  matmul_suite<float>();
  matmul_suite<double>();
}

TEST_CASE("cuda TF32 matmul stays within TF32 precision", "[cuda][blas]") {
  // TF32 rounds inputs to 10 mantissa bits: relative error up to about 1e-3 per product, so the
  // documented tolerance is 1e-2 of the largest value; full float32 is back when switched off.
  Tensor<float> a = ct::rnd<float>({257, 513}, 11), b = ct::rnd<float>({513, 129}, 12);
  Tensor<float> ref = matmul(a, b);
  cuda::set_allow_tf32(true);
  const double e_tf32 = ct::rel_err(matmul(a.to(gpu()), b.to(gpu())).cpu(), ref);
  cuda::set_allow_tf32(false);
  const double e_fp32 = ct::rel_err(matmul(a.to(gpu()), b.to(gpu())).cpu(), ref);
  INFO("TF32 " << e_tf32 << ", FP32 " << e_fp32);
  REQUIRE(e_tf32 <= 1e-2);
  REQUIRE(e_fp32 <= 1e-5);
}

}  // namespace test_cuda_blas
