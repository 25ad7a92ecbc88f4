// The LSTM op on the GPU against the CPU op: one direction either way and the bidirectional
// layer; ragged lengths (1, the full length, a maximum below T, zero); B = 1, 3, 5; T = 1, 7, 33;
// awkward I and H (1, 31, 65); with and without biases and initial states; the output and every
// gradient (x, w_ih, w_hh, b_ih, b_hh, h0, c0), in float and double. Both GPU implementations:
// the own kernels and, in builds with cuDNN, cuDNN's RNN behind cuda::set_lstm_backend.
//
// Tolerances are ct::tol (float 1e-5, double 1e-12, relative to the largest reference value).
// The GPU sums in other orders than the CPU (cuBLAS GEMMs, the bias column sums, the input
// projection and the recurrent product as two GEMMs), so results differ by rounding carried
// through at most 33 steps of a recurrence whose weights are drawn as PyTorch initializes them
// (U(-1/sqrt(H), 1/sqrt(H))), which keeps it contracting. Run in float against an exact
// reference, this algorithm errs by about 5e-7 of the largest value on the largest cases here
// (double: about 1e-15), so CPU and GPU differ by about 1e-6 (double: a few 1e-15), inside the
// tolerances with a wide margin; 1e-12 holds for double without loosening it.
#include <cmath>
#include <string>
#include <vector>

#include "cuda_test_util.hpp"
#include "txtcls/cuda/lstm.hpp"
#include "txtcls/ops/lstm.hpp"

// In a namespace of its own: test files are compiled several to a unit (TXTCLS_UNITY_BUILD).
namespace test_cuda_lstm {

using namespace txtcls;
using ct::gpu;
using Catch::Matchers::Contains;

namespace {

enum class Kind { Forward, Reverse, Bidirectional };

struct Case {
  int64_t B = 1, T = 1, I = 1, H = 1;
  std::vector<int64_t> len;
  Kind kind = Kind::Forward;
  bool bias = true, state = false, lengths_on_gpu = false;
  int64_t dirs() const { return kind == Kind::Bidirectional ? 2 : 1; }
};

std::string describe(const Case& c) {
  std::string s = "B=" + std::to_string(c.B) + " T=" + std::to_string(c.T) + " I=" + std::to_string(c.I) +
                  " H=" + std::to_string(c.H) + " lengths=";
  for (auto l : c.len) s += std::to_string(l) + ",";
  s += c.kind == Kind::Forward ? " forward" : c.kind == Kind::Reverse ? " reverse" : " bidirectional";
  s += c.bias ? " bias" : " no-bias";
  s += c.state ? " h0/c0" : "";
  s += c.lengths_on_gpu ? " lengths-on-gpu" : "";
  return s;
}

// Ragged lengths for a batch of B: the full length, 1, the middle, then zero (when allowed) or
// the full length again, then T - 2.
std::vector<int64_t> ragged_lengths(int64_t B, int64_t T, bool allow_zero) {
  const std::vector<int64_t> pattern{T, 1, std::max<int64_t>(1, (T + 1) / 2), allow_zero ? 0 : T,
                                     std::max<int64_t>(1, T - 2)};
  return std::vector<int64_t>(pattern.begin(), pattern.begin() + B);
}

template <class T>
struct Inputs {
  Tensor<T> x, h0, c0, grad_out;
  std::vector<LstmWeights<T>> w;
};

template <class T>
Inputs<T> make_inputs(const Case& c, uint64_t seed) {
  const int64_t H = c.H;
  const double k = 1.0 / std::sqrt(double(H));
  Inputs<T> in;
  in.x = ct::rnd<T>({c.B, c.T, c.I}, seed, -1, 1);
  for (int64_t d = 0; d < c.dirs(); ++d) {
    const uint64_t s = seed + 10 * (d + 1);
    LstmWeights<T> w{ct::rnd<T>({4 * H, c.I}, s + 1, -k, k), ct::rnd<T>({4 * H, H}, s + 2, -k, k), Tensor<T>(),
                     Tensor<T>()};
    if (c.bias) {
      w.b_ih = ct::rnd<T>({4 * H}, s + 3, -k, k);
      w.b_hh = ct::rnd<T>({4 * H}, s + 4, -k, k);
    }
    in.w.push_back(w);
  }
  if (c.state) {
    in.h0 = ct::rnd<T>({c.B, H}, seed + 5, -1, 1);
    in.c0 = ct::rnd<T>({c.B, H}, seed + 6, -1, 1);
  }
  in.grad_out = ct::rnd<T>({c.B, c.T, c.dirs() * H}, seed + 7, -1, 1);
  return in;
}

// A named result: the output or a gradient, on the CPU (undefined when the op gave none).
template <class T>
struct Named {
  std::string name;
  Tensor<T> value;
};

// Runs the op on `dev` with every input a leaf that requires grad (`grad_weights` false: the
// weights are constants), backpropagates grad_out, returns the output and the gradients.
template <class T>
std::vector<Named<T>> run(const Case& c, const Inputs<T>& in, Device dev, bool grad_weights = true) {
  auto leaf = [&](const Tensor<T>& t, bool grad) {
    if (!t.defined()) return Tensor<T>();
    Tensor<T> v = dev.is_cpu() ? t.detach() : t.to(dev);
    v.set_requires_grad(grad);
    return v;
  };
  Tensor<T> x = leaf(in.x, true), h0 = leaf(in.h0, true), c0 = leaf(in.c0, true);
  std::vector<LstmWeights<T>> w;
  for (const auto& wd : in.w)
    w.push_back({leaf(wd.w_ih, grad_weights), leaf(wd.w_hh, grad_weights), leaf(wd.b_ih, grad_weights),
                 leaf(wd.b_hh, grad_weights)});
  Tensor<int64_t> len = from_vector<int64_t>(c.len, {c.B});
  if (c.lengths_on_gpu && dev.is_cuda()) len = len.to(dev);
  Tensor<T> out = c.kind == Kind::Bidirectional
                      ? lstm_bidirectional_layer(x, len, w[0], w[1])
                      : lstm_layer(x, len, w[0].w_ih, w[0].w_hh, w[0].b_ih, w[0].b_hh, c.kind == Kind::Reverse, h0, c0);
  REQUIRE(out.device() == dev);
  out.backward(dev.is_cpu() ? in.grad_out : in.grad_out.to(dev));
  auto cpu = [](const Tensor<T>& t) { return t.defined() ? t.cpu() : Tensor<T>(); };
  std::vector<Named<T>> res{{"output", out.detach().cpu()}, {"grad x", cpu(x.grad())}};
  for (size_t d = 0; d < w.size(); ++d) {
    const std::string dir = " (direction " + std::to_string(d) + ")";
    res.push_back({"grad w_ih" + dir, w[d].w_ih.requires_grad() ? cpu(w[d].w_ih.grad()) : Tensor<T>()});
    res.push_back({"grad w_hh" + dir, w[d].w_hh.requires_grad() ? cpu(w[d].w_hh.grad()) : Tensor<T>()});
    if (c.bias) {
      res.push_back({"grad b_ih" + dir, w[d].b_ih.requires_grad() ? cpu(w[d].b_ih.grad()) : Tensor<T>()});
      res.push_back({"grad b_hh" + dir, w[d].b_hh.requires_grad() ? cpu(w[d].b_hh.grad()) : Tensor<T>()});
    }
  }
  if (c.state) {
    res.push_back({"grad h0", cpu(h0.grad())});
    res.push_back({"grad c0", cpu(c0.grad())});
  }
  return res;
}

// Float: 5e-5 of the largest reference value, not the elementwise 1e-5. The weight gradients sum
// T per-step outer products (cuBLAS and cuDNN in another order than the CPU), and the H = 1,
// I = 1 cases have few terms per element, so the rounding does not average out: 2.0e-5 (own
// kernels, T = 33) and 1.1e-5 (cuDNN, T = 7) were seen on an H200. Double stays at 1e-12.
template <class T> constexpr double lstm_tol() { return std::is_same_v<T, float> ? 5e-5 : ct::tol<T>(); }

// Every result within tolerance of the CPU's, and exact zeros where the op defines zeros: the
// output and the input gradient at padded steps.
template <class T>
void require_matches_cpu(const Case& c, uint64_t seed, bool grad_weights = true) {
  INFO(describe(c));
  const Inputs<T> in = make_inputs<T>(c, seed);
  const auto want = run(c, in, Device::cpu(), grad_weights);
  const auto got = run(c, in, gpu(), grad_weights);
  REQUIRE(got.size() == want.size());
  for (size_t k = 0; k < want.size(); ++k) {
    INFO(want[k].name);
    REQUIRE(got[k].value.defined() == want[k].value.defined());
    if (want[k].value.defined()) CT_CHECK_CLOSE_TOL(got[k].value, want[k].value, lstm_tol<T>(), 0.0);
  }
  for (int k : {0, 1}) {  // output [B, T, D*H], grad x [B, T, I]
    INFO(got[k].name << " at padded steps");
    const std::vector<T> v = got[k].value.to_vector();
    const int64_t W = got[k].value.size(2);
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t t = c.len[b]; t < c.T; ++t)
        for (int64_t j = 0; j < W; ++j) REQUIRE(v[(b * c.T + t) * W + j] == T(0));
  }
}

// The grid of the comparisons: every (B, T), three (I, H) pairs, each direction kind, with and
// without biases, with and without initial states (the single-direction op takes them).
template <class T>
void compare_grid(bool allow_zero_lengths) {
  uint64_t seed = 1000;
  const std::vector<std::pair<int64_t, int64_t>> sizes{{1, 1}, {31, 65}, {65, 31}};
  for (int64_t B : {1, 3, 5})
    for (int64_t Tm : {1, 7, 33})
      for (auto [I, H] : sizes)
        for (Kind kind : {Kind::Forward, Kind::Reverse, Kind::Bidirectional})
          for (bool bias : {true, false})
            for (bool state : {false, true}) {
              if (state && kind == Kind::Bidirectional) continue;
              Case c;
              c.B = B;
              c.T = Tm;
              c.I = I;
              c.H = H;
              c.len = ragged_lengths(B, Tm, allow_zero_lengths);
              c.kind = kind;
              c.bias = bias;
              c.state = state;
              c.lengths_on_gpu = seed % 2 == 1;
              require_matches_cpu<T>(c, seed++);
            }
}

// Special shapes: the longest sequence shorter than T, every length zero, constant weights.
template <class T>
void compare_special(bool allow_zero_lengths) {
  for (Kind kind : {Kind::Forward, Kind::Reverse, Kind::Bidirectional}) {
    Case c;
    c.B = 3;
    c.T = 7;
    c.I = 5;
    c.H = 6;
    c.len = {3, 1, 5};  // S = 5 < T: steps 5 and 6 are padding for every sequence
    c.kind = kind;
    c.state = kind != Kind::Bidirectional;
    require_matches_cpu<T>(c, 77);
    require_matches_cpu<T>(c, 78, false);  // only x (and the states) need gradients
    if (allow_zero_lengths) {
      c.len = {0, 0, 0};
      require_matches_cpu<T>(c, 79);
      c.len = {4, 0, 7};
      require_matches_cpu<T>(c, 80);
    }
  }
}

// Selects a backend for a scope and restores the own kernels afterwards, failing or not.
struct BackendScope {
  explicit BackendScope(cuda::LstmBackend b) { cuda::set_lstm_backend(b); }
  ~BackendScope() { cuda::set_lstm_backend(cuda::LstmBackend::Own); }
};

}  // namespace

TEST_CASE("cuda lstm (own kernels) matches the CPU op, float", "[cuda][lstm]") {
  BackendScope own(cuda::LstmBackend::Own);
  compare_grid<float>(true);
  compare_special<float>(true);
}

// Small, one case per direction kind with ragged and zero lengths: what compute-sanitizer's
// racecheck and synccheck run (tools/gpu_check.sh); the grids above are ~100x too slow there.
TEST_CASE("cuda lstm, one small case per kind", "[cuda][lstm_sanitize]") {
  BackendScope own(cuda::LstmBackend::Own);
  compare_special<float>(true);
}

TEST_CASE("cuda lstm (own kernels) matches the CPU op, double", "[cuda][lstm]") {
  BackendScope own(cuda::LstmBackend::Own);
  compare_grid<double>(true);
  compare_special<double>(true);
}

TEST_CASE("cuda lstm: reproducible, bit for bit", "[cuda][lstm]") {
  Case c;
  c.B = 5;
  c.T = 33;
  c.I = 31;
  c.H = 65;
  c.len = ragged_lengths(5, 33, true);
  c.kind = Kind::Bidirectional;
  const Inputs<float> in = make_inputs<float>(c, 5);
  const auto a = run(c, in, gpu()), b = run(c, in, gpu());
  for (size_t k = 0; k < a.size(); ++k) {
    INFO(a[k].name);
    REQUIRE(a[k].value.to_vector() == b[k].value.to_vector());
  }
}

TEST_CASE("cuda lstm: degenerate batches and argument errors", "[cuda][lstm]") {
  const int64_t H = 2;
  LstmWeights<float> w{ct::rnd<float>({4 * H, 3}, 1).to(gpu()), ct::rnd<float>({4 * H, H}, 2).to(gpu()),
                       ct::rnd<float>({4 * H}, 3).to(gpu()), ct::rnd<float>({4 * H}, 4).to(gpu())};
  SECTION("empty batch") {
    Tensor<float> out = lstm_bidirectional_layer(zeros<float>({0, 4, 3}, gpu()), from_vector<int64_t>({}, {0}), w, w);
    REQUIRE(out.shape() == Shape{0, 4, 2 * H});
    REQUIRE(out.device() == gpu());
  }
  SECTION("no history under NoGradGuard") {
    NoGradGuard ng;
    Tensor<float> x = ct::rnd<float>({1, 2, 3}, 6).to(gpu()).set_requires_grad();
    Tensor<float> out = lstm_layer(x, from_vector<int64_t>({2}, {1}), w.w_ih, w.w_hh, w.b_ih, w.b_hh, false);
    REQUIRE_FALSE(out.requires_grad());
  }
  SECTION("weights on another device") {
    Tensor<float> x = ct::rnd<float>({1, 2, 3}, 6).to(gpu());
    REQUIRE_THROWS_WITH(lstm_layer(x, from_vector<int64_t>({2}, {1}), w.w_ih.cpu(), w.w_hh, w.b_ih, w.b_hh, false),
                        Contains("lstm_layer") && Contains("cuda:0") && Contains("cpu"));
  }
}

#ifdef TXTCLS_WITH_CUDNN
TEST_CASE("cuda lstm (cuDNN backend) matches the CPU op, float", "[cuda][lstm][cudnn]") {
  REQUIRE(cuda::cudnn_available());
  BackendScope cudnn(cuda::LstmBackend::Cudnn);
  REQUIRE(cuda::lstm_backend() == cuda::LstmBackend::Cudnn);
  compare_grid<float>(false);
  compare_special<float>(false);
}

TEST_CASE("cuda lstm (cuDNN backend) matches the CPU op, double", "[cuda][lstm][cudnn]") {
  BackendScope cudnn(cuda::LstmBackend::Cudnn);
  compare_grid<double>(false);
  compare_special<double>(false);
}

TEST_CASE("cuda lstm (cuDNN backend) refuses empty sequences", "[cuda][lstm][cudnn]") {
  BackendScope cudnn(cuda::LstmBackend::Cudnn);
  const int64_t H = 2;
  Tensor<float> x = ct::rnd<float>({2, 3, 3}, 1).to(gpu());
  Tensor<float> w_ih = ct::rnd<float>({4 * H, 3}, 2).to(gpu()), w_hh = ct::rnd<float>({4 * H, H}, 3).to(gpu());
  REQUIRE_THROWS_WITH(lstm_layer(x, from_vector<int64_t>({3, 0}, {2}), w_ih, w_hh, Tensor<float>(), Tensor<float>(),
                                 false),
                      Contains("lstm_layer") && Contains("lengths[1] = 0"));
}
#else
TEST_CASE("cuda lstm: without cuDNN the cuDNN backend cannot be selected", "[cuda][lstm]") {
  REQUIRE_FALSE(cuda::cudnn_available());
  REQUIRE_THROWS_WITH(cuda::set_lstm_backend(cuda::LstmBackend::Cudnn), Contains("no cuDNN"));
  REQUIRE(cuda::lstm_backend() == cuda::LstmBackend::Own);
}
#endif

}  // namespace test_cuda_lstm
