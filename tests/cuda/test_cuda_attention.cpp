// Fused attention on the GPU against the CPU fused op and the unfused reference on the same
// inputs: awkward lengths (query and key blocks cut anywhere), Lq != Lk, Dv != D, strided views,
// every option (padding lengths including 0, causal, bias of several broadcast shapes with its
// gradient, additive mask with -inf, boolean mask, dropout with the CPU's mask), the output and
// every gradient; the same under TF32 (tensor cores); the refusal of unsupported head dims;
// bit-for-bit repeatability.
#include "attention_test_util.hpp"
#include "txtcls/cuda/blas.hpp"

// In a namespace of its own: test files are compiled several to a unit (TXTCLS_UNITY_BUILD).
namespace test_cuda_attention {

using namespace txtcls;
using namespace ct;

namespace {

template <class T>
struct Run {
  Tensor<T> out, dq, dk, dv, dbias;
};

// Runs `f` (one of the attention ops) on copies of the inputs placed on `dev` and backpropagates
// `go`; the dropout generator starts from the same seed for every run, so all draw one mask.
// Every run gets its own copies: to() on the tensor's own device returns the tensor itself, and
// gradients accumulated into the caller's inputs would add up from one run to the next.
template <class T, class F>
Run<T> run(F f, const Config& c, Device dev, const Tensor<T>& q0, const Tensor<T>& k0, const Tensor<T>& v0,
           const AttentionOptions<T>& o0, const Tensor<T>& go) {
  auto place = [&](const Tensor<T>& t) { return t.to(dev).detach().clone(); };
  Tensor<T> q = place(q0), k = place(k0), v = place(v0);
  if (c.permuted) q = place(q0.permute({0, 2, 1, 3}).contiguous()).permute({0, 2, 1, 3});
  if (c.transposed) k = place(k0.transpose(-1, -2).contiguous()).transpose(-1, -2);
  q.set_requires_grad();
  k.set_requires_grad();
  v.set_requires_grad();
  AttentionOptions<T> o = o0;
  Generator gen(1234);
  o.generator = &gen;
  if (o0.bias.defined()) o.bias = place(o0.bias).set_requires_grad();
  if (o0.mask.defined()) o.mask = place(o0.mask);
  if (o0.allowed.defined()) o.allowed = o0.allowed.to(dev);
  if (o0.key_lengths.defined()) o.key_lengths = o0.key_lengths.to(dev);
  Tensor<T> y = f(q, k, v, o);
  y.backward(place(go));
  Run<T> r{y.cpu(), q.grad().cpu(), k.grad().cpu(), v.grad().cpu(), {}};
  if (o.bias.defined()) r.dbias = o.bias.grad().cpu();
  return r;
}

template <class T>
void compare(const Run<T>& got, const Run<T>& want, const Config& c, double tol, double bias_floor) {
  {
    INFO("output");
    CT_CHECK_CLOSE_TOL(got.out, want.out, tol, 0.0);
  }
  {
    INFO("dv");
    CT_CHECK_CLOSE_TOL(got.dv, want.dv, tol, 0.0);
  }
  if (c.Lk > 1) {  // with one key the softmax is constant: dq, dk are rounding noise around 0
    INFO("dq, dk");
    CT_CHECK_CLOSE_TOL(got.dq, want.dq, tol, 0.0);
    CT_CHECK_CLOSE_TOL(got.dk, want.dk, tol, 0.0);
  }
  if (want.dbias.defined()) {
    INFO("dbias");
    CT_CHECK_CLOSE_TOL(got.dbias, want.dbias, tol, bias_floor);
  }
}

template <class T>
void check(const Config& c, uint64_t seed, double tol = ct::tol<T>()) {
  INFO(describe(c));
  const Inputs<T> in = make_inputs<T>(c, seed);
  const Tensor<T> &q = in.q, &k = in.k, &v = in.v, &go = in.go;
  const AttentionOptions<T>& o = in.o;
  auto fused = [](const Tensor<T>& a, const Tensor<T>& b, const Tensor<T>& d, const AttentionOptions<T>& op) {
    return scaled_dot_product_attention(a, b, d, op);
  };
  auto reference = [](const Tensor<T>& a, const Tensor<T>& b, const Tensor<T>& d, const AttentionOptions<T>& op) {
    return attention_reference(a, b, d, op);
  };
  const Device cpu = Device::cpu();
  const Run<T> g = run<T>(fused, c, gpu(), q, k, v, o, go), f = run<T>(fused, c, cpu, q, k, v, o, go);
  const double bias_floor = dbias_floor(c, f.out, go);
  {
    INFO("against the CPU fused op");
    compare(g, f, c, tol, bias_floor);
  }
  {
    INFO("against the CPU reference");
    compare(g, run<T>(reference, c, cpu, q, k, v, o, go), c, tol, bias_floor);
  }
}


// Turns TF32 on for a scope, and off again even when a check fails.
struct Tf32 {
  Tf32() { cuda::set_allow_tf32(true); }
  ~Tf32() { cuda::set_allow_tf32(false); }
  Tf32(const Tf32&) = delete;
  Tf32& operator=(const Tf32&) = delete;
};

template <class T>
void suite() {
  uint64_t seed = 500;
  for (const Config& c : float_configs()) check<T>(c, seed += 10);
}

}  // namespace

TEST_CASE("cuda fused attention matches the CPU op and the reference (double)", "[cuda][attention]") {
  suite<double>();
}

TEST_CASE("cuda fused attention matches the CPU op and the reference (float)", "[cuda][attention]") {
  suite<float>();
}

// TF32: float on tensor cores under set_allow_tf32(true). q, k, v, P and dS enter the products
// with 10-bit mantissas (accumulation and softmax statistics in fp32): 1e-2 of the largest
// reference value, against the exact CPU results.
TEST_CASE("cuda fused attention in TF32 matches the CPU op and the reference", "[cuda][attention]") {
  if (!cuda::attention_has_tensor_cores()) {
    WARN("no tensor cores here (device or build below compute capability 8.0): TF32 not tested");
    return;
  }
  const Tf32 on;
  for (const auto kernel : {cuda::AttnMmaKernel::Registers, cuda::AttnMmaKernel::SharedTiles}) {
    const MmaKernelScope scope(kernel);
    INFO((kernel == cuda::AttnMmaKernel::Registers ? "register-resident kernel" : "shared-tile kernel"));
    uint64_t seed = 900;
    for (const Config& c : float_configs()) check<float>(c, seed += 10, 1e-2);
  }
}

// Small, every option: what compute-sanitizer's racecheck and synccheck run (tools/gpu_check.sh).
TEST_CASE("cuda fused attention, one small case per type", "[cuda][attention_sanitize]") {
  Config c = dims(2, 2, 40, 70, 72, 24);
  c.causal = true;
  c.bias = {2, 1, 1, 70};
  c.lengths = true;
  c.mask = true;
  c.allowed = true;
  c.p = 0.25;
  check<float>(c, 77);
  check<double>(c, 78);
  c.bias = {2, 40, 70};
  c.D = c.Dv = 32;
  check<float>(c, 79);
  if (cuda::attention_has_tensor_cores()) {  // the tensor-core kernels too, both designs
    const Tf32 on;
    check<float>(c, 80, 1e-2);
    const MmaKernelScope scope(cuda::AttnMmaKernel::SharedTiles);
    check<float>(c, 81, 1e-2);
  }
}

TEST_CASE("cuda fused attention is repeatable and refuses unsupported head dims", "[cuda][attention]") {
  // The bias gradient of a broadcast bias is a per-head buffer and an ordered sum: two runs agree
  // bit for bit, as do dq (a pass of its own, no atomics) and dk, dv.
  Config c = dims(4, 2, 130, 97, 64, 64);
  c.bias = {1, 2, 130, 97};
  c.causal = true;
  Tensor<float> q = ct::rnd<float>({4, 2, 130, 64}, 1), k = ct::rnd<float>({4, 2, 97, 64}, 2);
  Tensor<float> v = ct::rnd<float>({4, 2, 97, 64}, 3), go = ct::rnd<float>({4, 2, 130, 64}, 4);
  AttentionOptions<float> o;
  o.causal = true;
  o.bias = ct::rnd<float>(c.bias, 5);
  auto fused = [](const Tensor<float>& a, const Tensor<float>& b, const Tensor<float>& d,
                  const AttentionOptions<float>& op) { return scaled_dot_product_attention(a, b, d, op); };
  const Run<float> r1 = run<float>(fused, c, gpu(), q, k, v, o, go), r2 = run<float>(fused, c, gpu(), q, k, v, o, go);
  REQUIRE(r1.out.to_vector() == r2.out.to_vector());
  REQUIRE(r1.dq.to_vector() == r2.dq.to_vector());
  REQUIRE(r1.dk.to_vector() == r2.dk.to_vector());
  REQUIRE(r1.dv.to_vector() == r2.dv.to_vector());
  REQUIRE(r1.dbias.to_vector() == r2.dbias.to_vector());

  Tensor<float> big = ct::rnd<float>({1, 1, 4, 160}, 6).to(gpu());
  REQUIRE_THROWS_WITH(scaled_dot_product_attention(big, big, big),
                      Catch::Contains("scaled_dot_product_attention: head dims D = 160, Dv = 160 are not supported"));
  Tensor<float> qs = ct::rnd<float>({1, 1, 4, 8}, 7).to(gpu());
  Tensor<float> vs = ct::rnd<float>({1, 1, 4, 200}, 8).to(gpu());
  REQUIRE_THROWS_WITH(scaled_dot_product_attention(qs, qs, vs), Catch::Contains("D = 8, Dv = 200"));
  // Operands on different devices are refused by name.
  REQUIRE_THROWS_WITH(scaled_dot_product_attention(qs, qs.cpu(), qs), Catch::Contains("k is on cpu"));
}

}  // namespace test_cuda_attention
