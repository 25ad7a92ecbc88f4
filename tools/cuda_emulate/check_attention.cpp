// The tensor-core attention kernels (kernels/attention_fa2.cu and attention_mma.cu), emulated on
// the host (cuda_shim.hpp), against the CPU fused op in float, over the CUDA tests' own
// configurations, inputs and tolerances (tests/cuda/attention_cases.hpp): 16-bit operands on
// inputs rounded to 16 bits (half_configs, as test_cuda_attention_half.cpp) and float under TF32
// through attention_forward/backward (float_configs, as test_cuda_attention.cpp's TF32 case),
// both designs; and float on the FMA kernels (kernels/attention.cu, TF32 off: float_configs as the
// test's float case, tolerance 1e-5), for a machine without a GPU.
//   check_attention [f16|bf16|tf32|fp32|all] [regs|tiles|all] [case index]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "attention_cases.hpp"
#include "txtcls/cuda/attention.hpp"
#include "txtcls/cuda/blas.hpp"
#include "txtcls/io/half.hpp"
#include "txtcls/ops/attention.hpp"
#include "txtcls/ops/reduce.hpp"
#include "host_backend.hpp"

// Normally in kernels/blas.cu (the only backend piece the checks need besides the emulated
// kernels; host_backend.hpp refuses the others): the TF32 switch the float path reads.
namespace txtcls::cuda {
namespace {
bool g_tf32 = false;
}
void set_allow_tf32(bool on) { g_tf32 = on; }
bool allow_tf32() { return g_tf32; }
}  // namespace txtcls::cuda

using namespace txtcls;

namespace {

enum class Mode { F16, BF16, Tf32, Fp32 };  // Fp32: the FMA kernels (attention.cu), TF32 off
Mode g_mode = Mode::F16;
cuda::AttnHalf g_type = cuda::AttnHalf::F16;

const char* mode_name(Mode m) {
  return m == Mode::F16 ? "f16" : m == Mode::BF16 ? "bf16" : m == Mode::Tf32 ? "tf32" : "fp32";
}

uint16_t narrow(float x) { return ct::narrow(x, g_type); }

// 16-bit modes: the inputs rounded to 16 bits, as the 16-bit test feeds both sides; float modes:
// unchanged.
Tensor<float> rounded(const Tensor<float>& t) {
  return g_mode == Mode::Tf32 || g_mode == Mode::Fp32 ? t.contiguous() : ct::rounded(t, g_type);
}

// The 16-bit image of a (possibly strided) view: same strides, NaN where the view has no element.
std::vector<uint16_t> image16(const Tensor<float>& t) {
  int64_t extent = 1;
  for (int d = 0; d < t.dim(); ++d) extent += (t.size(d) - 1) * t.stride(d);
  std::vector<uint16_t> out(static_cast<size_t>(extent), narrow(NAN));
  const auto values = t.contiguous().to_vector();
  for (size_t n = 0; n < values.size(); ++n) {
    int64_t off = 0, rest = static_cast<int64_t>(n);
    for (int d = t.dim() - 1; d >= 0; --d) off += (rest % t.size(d)) * t.stride(d), rest /= t.size(d);
    out[static_cast<size_t>(off)] = narrow(values[n]);
  }
  return out;
}

Tensor<float> widened(const std::vector<uint16_t>& v, const Shape& s) {
  std::vector<float> f(v.size());
  for (size_t i = 0; i < v.size(); ++i) f[i] = ct::widen(v[i], g_type);
  return from_vector<float>(f, s);
}

// One configuration: the kernels under test against the CPU fused op on the same (rounded) inputs.
bool run(const ct::Config& c, uint64_t seed) {
  const int64_t B = c.B, H = c.H, Lq = c.Lq, Lk = c.Lk, D = c.D, Dv = c.Dv;
  const ct::Inputs<float> in = ct::make_inputs<float>(c, seed);
  Tensor<float> q = rounded(in.q), k = rounded(in.k), v = rounded(in.v);
  // Strided rows as the test uploads them ([B, Lq, H, D] in memory). A transposed k is copied by
  // the op before the kernels (c.transposed), so the raw API gets it contiguous.
  if (c.permuted) q = q.permute({0, 2, 1, 3}).contiguous().permute({0, 2, 1, 3});
  AttentionOptions<float> o = in.o;
  const Shape bs = c.bias;
  Generator gen(1234);
  o.generator = &gen;
  const Tensor<float> go = rounded(in.go);

  Tensor<float> qc = q.detach().set_requires_grad(), kc = k.detach().set_requires_grad(),
                vc = v.detach().set_requires_grad();
  AttentionOptions<float> oc = o;
  if (!bs.empty()) oc.bias = o.bias.detach().set_requires_grad();
  const Tensor<float> y = scaled_dot_product_attention(qc, kc, vc, oc);
  y.backward(go);

  // The op's own view of the options (dropout reserved from the CPU op's generator state).
  AttentionOptions<float> oe = o;
  Generator gen2(1234);
  oe.generator = &gen2;
  cuda::AttentionHalfArgs ha;
  ha.opts = detail::cuda_attention_args(oe, {B, H, Lq, Lk, D, Dv}, o.bias, o.mask, o.allowed);
  const cuda::AttentionArgs<float>& a = ha.opts;
  std::vector<int64_t> lengths;
  if (c.lengths) lengths = o.key_lengths.to_vector(), ha.opts.key_lengths = lengths.data();
  const bool bias = !bs.empty();
  Tensor<float> got_out, got_dq, got_dk, got_dv, part;
  if (g_mode == Mode::Tf32 || g_mode == Mode::Fp32) {  // float tensors through the float entry points
    cuda::AttentionArgs<float> fa = a;
    fa.q = {q.data(), q.stride(0), q.stride(1), q.stride(2)};
    fa.k = {k.data(), k.stride(0), k.stride(1), k.stride(2)};
    fa.v = {v.data(), v.stride(0), v.stride(1), v.stride(2)};
    got_out = full<float>({B, H, Lq, Dv}, NAN), got_dq = full<float>({B, H, Lq, D}, NAN);
    got_dk = full<float>({B, H, Lk, D}, NAN), got_dv = full<float>({B, H, Lk, Dv}, NAN);
    Tensor<float> lse = full<float>({B, H, Lq}, NAN), delta = full<float>({B, H, Lq}, NAN);
    cuda::AttentionGrads<float> fg{got_dq.data(), got_dk.data(), got_dv.data(), nullptr, true, delta.data()};
    if (bias) {
      fg.dbias_per_query = a.bias.si != 0;
      part = zeros<float>({B, H, fg.dbias_per_query ? Lq : 1, Lk});
      fg.dbias = part.data();
    }
    cuda::set_allow_tf32(g_mode == Mode::Tf32);
    cuda::attention_forward<float>(fa, got_out.data(), lse.data());
    cuda::attention_backward<float>(fa, got_out.data(), {go.data(), go.stride(0), go.stride(1), go.stride(2)},
                                    lse.data(), fg);
    cuda::set_allow_tf32(false);
  } else {
    ha.dtype = g_type;
    const std::vector<uint16_t> hq = image16(q), hk = image16(k), hv = image16(v), hgo = image16(go);
    ha.q = {hq.data(), q.stride(0), q.stride(1), q.stride(2)};
    ha.k = {hk.data(), k.stride(0), k.stride(1), k.stride(2)};
    ha.v = {hv.data(), v.stride(0), v.stride(1), v.stride(2)};
    const uint16_t poison = narrow(NAN);
    std::vector<uint16_t> out(B * H * Lq * Dv, poison), dq(B * H * Lq * D, poison), dk(B * H * Lk * D, poison),
        dv(B * H * Lk * Dv, poison);
    std::vector<float> lse(B * H * Lq, NAN), delta(B * H * Lq, NAN);
    cuda::AttentionHalfGrads hg{dq.data(), dk.data(), dv.data(), nullptr, true, delta.data()};
    if (bias) {
      hg.dbias_per_query = a.bias.si != 0;
      part = zeros<float>({B, H, hg.dbias_per_query ? Lq : 1, Lk});
      hg.dbias = part.data();
    }
    cuda::attention_forward_half(ha, out.data(), lse.data());
    cuda::attention_backward_half(ha, out.data(), {hgo.data(), go.stride(0), go.stride(1), go.stride(2)}, lse.data(),
                                  hg);
    got_out = widened(out, {B, H, Lq, Dv}), got_dq = widened(dq, {B, H, Lq, D});
    got_dk = widened(dk, {B, H, Lk, D}), got_dv = widened(dv, {B, H, Lk, Dv});
  }

  const double tol = g_mode == Mode::BF16 ? 2e-2 : g_mode == Mode::Fp32 ? 1e-5 : 1e-2;
  // The tests' comparisons: error relative to the largest reference value; dq and dk only with
  // more than one key (else rounding noise around 0); the bias gradient with dbias_floor.
  double e[5] = {ct::rel_err(got_out, y), ct::rel_err(got_dv, vc.grad()), 0, 0, 0};
  if (Lk > 1) {
    e[2] = ct::rel_err(got_dq, qc.grad());
    e[3] = ct::rel_err(got_dk, kc.grad());
  }
  if (bias) e[4] = ct::rel_err(sum_to(part, bs), oc.bias.grad(), ct::dbias_floor(c, y, go));
  bool ok = true;
  for (double x : e) ok = ok && x <= tol;
  std::printf("%s %-5s %-4s %s: out %.1e dv %.1e dq %.1e dk %.1e dbias %.1e\n", ok ? "ok  " : "FAIL",
              g_mode == Mode::Fp32                                              ? "fma"
              : cuda::attention_mma_kernel() == cuda::AttnMmaKernel::Registers ? "regs"
                                                                                : "tiles",
              mode_name(g_mode), ct::describe(c).c_str(), e[0], e[1],
              e[2], e[3], e[4]);
  std::fflush(stdout);
  return ok;
}


}  // namespace

int main(int argc, char** argv) {
  const std::string types = argc > 1 ? argv[1] : "all", kernels = argc > 2 ? argv[2] : "all";
  const int which = argc > 3 ? std::atoi(argv[3]) : -1;
  int failed = 0, run_count = 0;
  for (const Mode m : {Mode::F16, Mode::BF16, Mode::Tf32, Mode::Fp32}) {
    const char* name = mode_name(m);
    if (types != "all" && types != name) continue;
    g_mode = m;
    g_type = m == Mode::BF16 ? cuda::AttnHalf::BF16 : cuda::AttnHalf::F16;
    for (const cuda::AttnMmaKernel kern : {cuda::AttnMmaKernel::Registers, cuda::AttnMmaKernel::SharedTiles}) {
      if (kernels != "all" && (kernels == "regs") != (kern == cuda::AttnMmaKernel::Registers)) continue;
      if (m == Mode::Fp32 && kern != cuda::AttnMmaKernel::Registers && kernels == "all") continue;  // no design choice
      cuda::set_attention_mma_kernel(kern);
      // The tests' lists and seeds: 1300 + 10 (i + 1) for 16 bits, 900 + 10 (i + 1) for TF32,
      // 500 + 10 (i + 1) for float on FMA units.
      const bool half = m == Mode::F16 || m == Mode::BF16;
      const std::vector<ct::Config> cases = half ? ct::half_configs() : ct::float_configs();
      const uint64_t seed0 = half ? 1300 : m == Mode::Tf32 ? 900 : 500;
      for (size_t i = 0; i < cases.size(); ++i)
        if (which < 0 || static_cast<size_t>(which) == i) failed += !run(cases[i], seed0 + 10 * (i + 1)), ++run_count;
    }
  }
  std::printf("%d of %d configurations %s\n", run_count - failed, run_count, failed ? "passed: FAILURES" : "passed");
  return failed ? 1 : 0;
}
