// The ops a text classifier is made of, on the GPU against the CPU: embedding (with a padding
// row and repeated ids: the deterministic segment-sum backward), max and mean pooling over time
// with lengths (strided inputs too), cross entropy (reductions, ignore_index, smoothing), and
// layer_norm / rms_norm (with and without weight and bias, rows of awkward widths).
#include "cuda_test_util.hpp"

// In a namespace of its own: test files are compiled several to a unit (TXTCLS_UNITY_BUILD).
namespace test_cuda_model_ops {

using namespace txtcls;
using ct::gpu;

namespace {

template <class T>
void embedding_suite() {
  for (int64_t V : {1, 31, 1025}) {
    for (int64_t D : {1, 33, 300}) {
      INFO("V " << V << " D " << D);
      Tensor<T> w0 = ct::rnd<T>({V, D}, V * 7 + D);
      std::vector<int64_t> idv;
      Generator g(V + D);
      for (int i = 0; i < 3 * 37; ++i) idv.push_back(static_cast<int64_t>(g.uniform() * double(V)) % V);
      idv[5] = idv[6] = idv[7] = 0;  // repeats, and the padding row
      Tensor<int64_t> ids = from_vector<int64_t>(idv, {3, 37});
      const int64_t pad = V > 1 ? 0 : -1;
      Tensor<T> w = w0.detach().set_requires_grad(), wg = w0.to(gpu()).set_requires_grad();
      Tensor<T> y = embedding(w, ids, pad), yg = embedding(wg, ids.to(gpu()), pad);
      Tensor<T> gy = ct::rnd<T>(y.shape(), 3);
      y.backward(gy);
      yg.backward(gy.to(gpu()));
      REQUIRE(yg.cpu().to_vector() == y.to_vector());  // a copy: exact
      CT_REQUIRE_CLOSE(wg.grad().cpu(), w.grad(), T);
    }
  }
  Tensor<T> w = ct::rnd<T>({5, 3}, 1).to(gpu());
  REQUIRE_THROWS_WITH(embedding(w, from_vector<int64_t>({1, 7}, {2})), Catch::Contains("id 7"));
}

template <class T>
void pooling_suite() {
  const std::vector<int64_t> lens = {1, 37, 5, 20};
  Tensor<int64_t> len = from_vector<int64_t>(lens, {4});
  for (bool transposed : {false, true}) {
    INFO((transposed ? "[T, B, D] input viewed batch first" : "[B, T, D] input"));
    Tensor<T> base = transposed ? ct::rnd<T>({37, 4, 33}, 4) : ct::rnd<T>({4, 37, 33}, 4);
    for (bool is_max : {true, false}) {
      auto f = [&](const Tensor<T>& x) {
        Tensor<T> v = transposed ? x.transpose(0, 1) : x;
        return is_max ? max_pool_time(v, len) : mean_pool_time(v, len);
      };
      Tensor<T> x = base.detach().set_requires_grad(), xg = base.to(gpu()).set_requires_grad();
      Tensor<T> y = f(x), yg = f(xg);
      Tensor<T> gy = ct::rnd<T>(y.shape(), 5);
      y.backward(gy);
      yg.backward(gy.to(gpu()));
      CT_REQUIRE_CLOSE(yg.cpu(), y, T);
      CT_REQUIRE_CLOSE(xg.grad().cpu(), x.grad(), T);
    }
  }
}

template <class T>
void cross_entropy_suite() {
  for (int64_t C : {1, 2, 6, 50, 1025}) {
    for (Reduction r : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
      for (double eps : {0.0, 0.1}) {
        INFO("C " << C << " reduction " << int(r) << " smoothing " << eps);
        const int64_t N = 37;
        Tensor<T> x0 = ct::rnd<T>({N, C}, C, -5, 5);
        std::vector<int64_t> tv;
        for (int64_t i = 0; i < N; ++i) tv.push_back(i % 5 == 3 ? -100 : (i * 7) % C);
        Tensor<int64_t> tgt = from_vector<int64_t>(tv, {N});
        Tensor<T> x = x0.detach().set_requires_grad(), xg = x0.to(gpu()).set_requires_grad();
        Tensor<T> y = cross_entropy(x, tgt, r, -100, eps), yg = cross_entropy(xg, tgt.to(gpu()), r, -100, eps);
        Tensor<T> gy = r == Reduction::None ? ct::rnd<T>({N}, 9) : scalar<T>(T(1.5));
        y.backward(gy);
        yg.backward(gy.to(gpu()));
        // One class: loss and gradient are zero in exact arithmetic (log_softmax of one logit
        // is 0), and both sides hold rounding noise; compare on the scale of an O(1) loss.
        const double floor = C == 1 ? 1.0 : 0.0;
        CT_CHECK_CLOSE_TOL(yg.cpu(), y, ct::tol<T>(), floor);
        CT_CHECK_CLOSE_TOL(xg.grad().cpu(), x.grad(), ct::tol<T>(), floor);
      }
    }
  }
}

template <class T>
void norm_suite() {
  for (const Shape& s : std::vector<Shape>{{1, 1}, {3, 31}, {5, 1025}, {2, 3, 4099}, {70, 64}}) {
    const int64_t D = s.back();
    for (int variant = 0; variant < 4; ++variant) {  // bit 0: weight, bit 1: bias
      for (bool rms : {false, true}) {
        if (rms && (variant & 2)) continue;  // rms_norm has no bias
        INFO((rms ? "rms_norm " : "layer_norm ") << shape_str(s) << " variant " << variant);
        // A mean far from zero: the one-pass Welford statistics must not cancel.
        Tensor<T> x0 = ct::rnd<T>(s, D + variant, 9, 11);
        Tensor<T> w0 = ct::rnd<T>({D}, 2), b0 = ct::rnd<T>({D}, 3);
        auto prep = [](const Tensor<T>& t, bool on, bool gpu_side) {
          if (!on) return Tensor<T>();
          return (gpu_side ? t.to(ct::gpu()) : t.detach()).set_requires_grad();
        };
        Tensor<T> x = x0.detach().set_requires_grad(), xg = x0.to(gpu()).set_requires_grad();
        Tensor<T> w = prep(w0, variant & 1, false), wg = prep(w0, variant & 1, true);
        Tensor<T> b = prep(b0, variant & 2, false), bg = prep(b0, variant & 2, true);
        Tensor<T> y = rms ? rms_norm(x, w) : layer_norm(x, w, b), yg = rms ? rms_norm(xg, wg) : layer_norm(xg, wg, bg);
        Tensor<T> gy = ct::rnd<T>(y.shape(), 4);
        y.backward(gy);
        yg.backward(gy.to(gpu()));
        CT_REQUIRE_CLOSE(yg.cpu(), y, T);
        // rms_norm of one element: the input gradient w*g*eps/(x^2+eps)^1.5 (~1e-9 here) is what
        // is left of two terms of size ~0.1 that cancel, so both sides hold rounding noise of
        // those terms: compare on their scale.
        CT_CHECK_CLOSE_TOL(xg.grad().cpu(), x.grad(), ct::tol<T>(), rms && D == 1 ? 1.0 : 0.0);
        if (w.defined()) CT_REQUIRE_CLOSE(wg.grad().cpu(), w.grad(), T);
        if (b.defined()) CT_REQUIRE_CLOSE(bg.grad().cpu(), b.grad(), T);
      }
    }
  }
}

}  // namespace

TEST_CASE("cuda layer_norm and rms_norm match the CPU", "[cuda][norm]") {
  norm_suite<float>();
  norm_suite<double>();
}

TEST_CASE("cuda embedding matches the CPU, with a deterministic backward", "[cuda][embedding]") {
  embedding_suite<float>();
  embedding_suite<double>();
}

TEST_CASE("cuda max and mean pooling over time match the CPU", "[cuda][pooling]") {
  pooling_suite<float>();
  pooling_suite<double>();
}

TEST_CASE("cuda cross entropy matches the CPU", "[cuda][loss]") {
  cross_entropy_suite<float>();
  cross_entropy_suite<double>();
}

}  // namespace test_cuda_model_ops
