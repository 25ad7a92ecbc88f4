// The bfloat16 / float16 attention of the raw API (cuda::attention_forward_half and
// attention_backward_half, tensor cores) against the CPU fused op in float on the same inputs
// rounded to 16 bits: awkward sizes, every option, the output and every gradient. P and dS enter
// the products rounded to 16 bits and the outputs are rounded once more, so the tolerance is
// 1e-2 (float16, 10-bit mantissa) and 2e-2 (bfloat16, 7-bit mantissa) of the largest reference
// value.
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <memory>

#include "attention_test_util.hpp"
#include "txtcls/io/half.hpp"

// In a namespace of its own: test files are compiled several to a unit (TXTCLS_UNITY_BUILD).
namespace test_cuda_attention_half {

using namespace txtcls;
using namespace ct;

namespace {

// Raw device memory (the Tensor class has no 16-bit element type), poisoned with 0xFF bytes:
// NaN in float16, bfloat16 and float, so an element a kernel leaves unwritten fails the check.
struct DeviceBuf {
  void* p = nullptr;
  size_t bytes = 0;
  explicit DeviceBuf(size_t n, bool zero = false) : bytes(n) {
    REQUIRE(cudaMalloc(&p, std::max<size_t>(n, 1)) == cudaSuccess);
    REQUIRE(cudaMemset(p, zero ? 0 : 0xFF, n) == cudaSuccess);
  }
  DeviceBuf(const DeviceBuf&) = delete;
  DeviceBuf& operator=(const DeviceBuf&) = delete;
  ~DeviceBuf() { cudaFree(p); }
  void upload(const void* src) { REQUIRE(cudaMemcpy(p, src, bytes, cudaMemcpyHostToDevice) == cudaSuccess); }
  template <class U>
  std::vector<U> download() const {
    std::vector<U> v(bytes / sizeof(U));
    REQUIRE(cudaMemcpy(v.data(), p, bytes, cudaMemcpyDeviceToHost) == cudaSuccess);
    return v;
  }
};

// A float tensor's values (row-major) as 16-bit values on the device.
std::unique_ptr<DeviceBuf> upload16(const Tensor<float>& x, cuda::AttnHalf t) {
  std::vector<float> v = x.to_vector();
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = narrow(v[i], t);
  auto buf = std::make_unique<DeviceBuf>(h.size() * 2);
  buf->upload(h.data());
  return buf;
}

Tensor<float> download16(const DeviceBuf& b, const Shape& s, cuda::AttnHalf t) {
  std::vector<uint16_t> h = b.download<uint16_t>();
  std::vector<float> v(h.size());
  for (size_t i = 0; i < h.size(); ++i) v[i] = widen(h[i], t);
  return from_vector<float>(v, s);
}

void check_half(const Config& c, uint64_t seed, cuda::AttnHalf t, double tol) {
  INFO(describe(c) << (t == cuda::AttnHalf::F16 ? " float16" : " bfloat16"));
  Inputs<float> in = make_inputs<float>(c, seed);
  in.q = rounded(in.q, t), in.k = rounded(in.k, t), in.v = rounded(in.v, t), in.go = rounded(in.go, t);
  const int64_t B = c.B, H = c.H, Lq = c.Lq, Lk = c.Lk, D = c.D, Dv = c.Dv;

  // The CPU fused op in float on the rounded inputs.
  Tensor<float> q = in.q.detach().set_requires_grad(), k = in.k.detach().set_requires_grad();
  Tensor<float> v = in.v.detach().set_requires_grad();
  AttentionOptions<float> o = in.o;
  Generator gen(1234);
  o.generator = &gen;
  if (in.o.bias.defined()) o.bias = in.o.bias.detach().set_requires_grad();
  Tensor<float> y = scaled_dot_product_attention(q, k, v, o);
  y.backward(in.go);

  // The raw API: the op's own view of the options (score terms on the GPU, the dropout
  // reservation from the CPU op's generator state); q is uploaded as [B, Lq, H, D] when the
  // configuration asks for strided rows.
  Tensor<float> bias, mask;
  Tensor<uint8_t> allowed;
  if (in.o.bias.defined()) bias = in.o.bias.to(gpu());
  if (in.o.mask.defined()) mask = in.o.mask.to(gpu());
  if (in.o.allowed.defined()) allowed = in.o.allowed.to(gpu());
  AttentionOptions<float> og = in.o;
  Generator g2(1234);
  og.generator = &g2;
  cuda::AttentionHalfArgs a;
  a.opts = detail::cuda_attention_args(og, {B, H, Lq, Lk, D, Dv}, bias, mask, allowed);
  cuda::AttentionArgs<float>& opt = a.opts;
  a.dtype = t;
  auto qb = upload16(c.permuted ? in.q.permute({0, 2, 1, 3}).contiguous() : in.q, t);
  auto kb = upload16(in.k, t), vb = upload16(in.v, t), gb = upload16(in.go, t);
  a.q = c.permuted ? cuda::AttnRows<const void>{qb->p, Lq * H * D, D, H * D}
                   : cuda::AttnRows<const void>{qb->p, H * Lq * D, Lq * D, D};
  a.k = {kb->p, H * Lk * D, Lk * D, D};
  a.v = {vb->p, H * Lk * Dv, Lk * Dv, Dv};
  std::unique_ptr<DeviceBuf> lengths;
  if (in.o.key_lengths.defined()) {
    std::vector<int64_t> len = in.o.key_lengths.to_vector();
    lengths = std::make_unique<DeviceBuf>(len.size() * sizeof(int64_t));
    lengths->upload(len.data());
    opt.key_lengths = static_cast<const int64_t*>(lengths->p);
  }
  DeviceBuf out(B * H * Lq * Dv * 2), lse(B * H * Lq * 4);
  cuda::attention_forward_half(a, out.p, static_cast<float*>(lse.p));
  DeviceBuf dq(B * H * Lq * D * 2), dk(B * H * Lk * D * 2), dv(B * H * Lk * Dv * 2), delta(B * H * Lq * 4);
  cuda::AttentionHalfGrads g;
  g.dq = dq.p, g.dk = dk.p, g.dv = dv.p, g.delta = static_cast<float*>(delta.p);
  std::unique_ptr<DeviceBuf> partial;
  Shape partial_shape;
  if (bias.defined()) {
    g.dbias_per_query = opt.bias.si != 0;
    partial_shape = {B, H, g.dbias_per_query ? Lq : 1, Lk};
    partial = std::make_unique<DeviceBuf>(numel_of(partial_shape) * 4, true);
    g.dbias = static_cast<float*>(partial->p);
  }
  cuda::attention_backward_half(a, out.p, {gb->p, H * Lq * Dv, Lq * Dv, Dv}, static_cast<const float*>(lse.p), g);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);

  require_close(rel_err(download16(out, {B, H, Lq, Dv}, t), y.detach()), tol);
  require_close(rel_err(download16(dv, {B, H, Lk, Dv}, t), v.grad()), tol);
  if (Lk > 1) {  // with one key, dq and dk are rounding noise around 0
    require_close(rel_err(download16(dq, {B, H, Lq, D}, t), q.grad()), tol);
    require_close(rel_err(download16(dk, {B, H, Lk, D}, t), k.grad()), tol);
  }
  if (bias.defined()) {
    const Tensor<float> part = from_vector<float>(partial->download<float>(), partial_shape);
    require_close(rel_err(sum_to(part, in.o.bias.shape()), o.bias.grad(), dbias_floor(c, y.detach(), in.go)), tol);
  }
}


}  // namespace

TEST_CASE("cuda bfloat16 / float16 attention matches the CPU op on rounded inputs", "[cuda][attention]") {
  if (!cuda::attention_has_tensor_cores()) {
    WARN("no tensor cores here (device or build below compute capability 8.0): 16-bit attention refused");
    REQUIRE_THROWS_WITH(cuda::attention_forward_half({}, nullptr, nullptr), Catch::Contains("compute capability"));
    return;
  }
  for (const auto kernel : {cuda::AttnMmaKernel::Registers, cuda::AttnMmaKernel::SharedTiles}) {
    MmaKernelScope scope(kernel);
    INFO((kernel == cuda::AttnMmaKernel::Registers ? "register-resident kernel" : "shared-tile kernel"));
    uint64_t seed = 1300;
    for (const Config& c : half_configs()) {
      check_half(c, seed += 10, cuda::AttnHalf::F16, 1e-2);
      check_half(c, seed, cuda::AttnHalf::BF16, 2e-2);
    }
  }
}

// Small enough for compute-sanitizer's racecheck and synccheck (tools/gpu_check.sh): both designs,
// several streamed blocks each way (the register kernel's double buffering), padding and causal.
TEST_CASE("cuda 16-bit attention, a small case for the sanitizers", "[cuda][attention_half_sanitize]") {
  if (!cuda::attention_has_tensor_cores()) {
    WARN("no tensor cores here: nothing to sanitize");
    return;
  }
  Config causal = dims(1, 2, 70, 150, 64, 64);
  causal.causal = true;
  Config padded = dims(2, 1, 40, 72, 128, 128);
  padded.lengths = true;
  for (const auto kernel : {cuda::AttnMmaKernel::Registers, cuda::AttnMmaKernel::SharedTiles}) {
    MmaKernelScope scope(kernel);
    check_half(causal, 1700, cuda::AttnHalf::BF16, 2e-2);
    check_half(padded, 1710, cuda::AttnHalf::F16, 1e-2);
  }
}

}  // namespace test_cuda_attention_half
