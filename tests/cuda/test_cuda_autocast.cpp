// Autocast matmuls on the GPU (16-bit operands on tensor cores, float accumulation) against the
// CPU's autocast matmul, which multiplies the same rounded operands with the float GEMM: every
// product is exact in float on both sides, so they differ only by the order of the float
// additions (1e-5 of the largest value, the float tolerance). Also the GPU's float->16-bit
// conversion against the CPU rounding, and GradScaler on GPU gradients.
#include <bit>

#include "cuda_test_util.hpp"
#include "txtcls/io/half.hpp"
#include "txtcls/ops/reduce.hpp"
#include "txtcls/train/grad_scaler.hpp"

// In a namespace of its own: test files are compiled several to a unit (TXTCLS_UNITY_BUILD).
namespace test_cuda_autocast {

using namespace txtcls;
using ct::gpu;

namespace {

void check_autocast_matmul(DType d, const Tensor<float>& a0, const Tensor<float>& b0, bool ta, bool tb, uint64_t seed) {
  auto prep = [](const Tensor<float>& t, bool tr) { return tr ? t.transpose(-1, -2) : t; };
  Tensor<float> a = a0.detach().set_requires_grad(), b = b0.detach().set_requires_grad();
  Tensor<float> ag = a0.to(gpu()).set_requires_grad(), bg = b0.to(gpu()).set_requires_grad();
  Tensor<float> y, yg;
  {
    AutocastGuard ac(d);
    y = matmul(prep(a, ta), prep(b, tb));
    yg = matmul(prep(ag, ta), prep(bg, tb));
  }
  Tensor<float> gy = ct::rnd<float>(y.shape(), seed);
  y.backward(gy);
  yg.backward(gy.to(gpu()));
  CT_REQUIRE_CLOSE(yg.cpu(), y, float);
  CT_REQUIRE_CLOSE(ag.grad().cpu(), a.grad(), float);
  CT_REQUIRE_CLOSE(bg.grad().cpu(), b.grad(), float);
}

}  // namespace

TEST_CASE("cuda autocast: float -> bf16 / f16 conversion equals the CPU rounding", "[cuda][autocast]") {
  // Awkward length; values across binary16's whole range and past it (overflow), plus specials.
  std::vector<float> v = ct::rnd<float>({1025}, 1, -70000.0, 70000.0).to_vector();
  Tensor<float> small = ct::rnd<float>({1031}, 2, -1e-4, 1e-4);
  for (float x : small.to_vector()) v.push_back(x);
  for (float x : {0.0f, -0.0f, 65504.0f, 65520.0f, 0x1p-24f, 0x1p-25f, 0x3p-26f, 1.0f + 0x1p-8f, 3.4028235e38f,
                  INFINITY, -INFINITY})
    v.push_back(x);
  Tensor<float> x = from_vector<float>(v).to(gpu());
  for (DType d : {DType::BF16, DType::F16}) {
    INFO(dtype_name(d));
    Tensor<int16_t> h({x.numel()}, gpu());
    cuda::convert_to_16bit(x.data(), h.data(), x.numel(), d);
    std::vector<int16_t> bits = h.cpu().to_vector();
    for (size_t i = 0; i < v.size(); ++i) {
      const uint16_t u = static_cast<uint16_t>(bits[i]);
      const float got = d == DType::BF16 ? half::bf16_to_float(u) : half::f16_to_float(u);
      const float want = d == DType::BF16 ? round_to_bf16(v[i]) : round_to_f16(v[i]);
      INFO("element " << i << " = " << v[i]);
      REQUIRE(std::bit_cast<uint32_t>(got) == std::bit_cast<uint32_t>(want));
    }
  }
}

TEST_CASE("cuda autocast: matmul with bf16 / f16 operands equals the CPU's autocast matmul", "[cuda][autocast]") {
  struct Case {
    Shape a, b;
    bool ta, tb;
  };
  const std::vector<Case> cases = {{{1, 1}, {1, 1}, false, false},       {{31, 17}, {17, 33}, false, false},
                                   {{17, 31}, {17, 33}, true, false},    {{31, 17}, {33, 17}, false, true},
                                   {{2, 3, 5, 7}, {7, 4}, false, false}, {{3, 1, 5, 7}, {4, 7, 6}, false, false},
                                   {{2, 3, 7, 5}, {3, 6, 7}, true, true}, {{129, 1025}, {1025, 65}, false, false}};
  uint64_t seed = 10;
  for (DType d : {DType::BF16, DType::F16})
    for (const auto& c : cases) {
      INFO(dtype_name(d) << " matmul " << shape_str(c.a) << (c.ta ? "^T" : "") << " @ " << shape_str(c.b)
                         << (c.tb ? "^T" : ""));
      check_autocast_matmul(d, ct::rnd<float>(c.a, seed), ct::rnd<float>(c.b, seed + 1), c.ta, c.tb, seed + 2);
      seed += 3;
    }
  // An operand with neither unit stride is made dense before conversion.
  Tensor<float> w = ct::rnd<float>({6, 8}, 3), x = ct::rnd<float>({5, 3}, 4);
  auto every_other = [](const Tensor<float>& t) { return t.slice(1, 0, 8, 2).slice(0, 0, 6, 2); };
  AutocastGuard ac(DType::BF16);
  CT_REQUIRE_CLOSE(matmul(x.to(gpu()), every_other(w.to(gpu()))).cpu(), matmul(x, every_other(w)), float);
}

TEST_CASE("cuda GradScaler: unscale and the overflow check on GPU gradients", "[cuda][autocast][scaler]") {
  train::GradScalerOptions o;
  o.init_scale = 256;
  train::GradScaler<float> s(o);
  Tensor<float> p = ct::rnd<float>({1025}, 5).to(gpu()).set_requires_grad();
  s.scale(sum(mul(p, 3.0f))).backward();
  REQUIRE(s.unscale_and_check({p}));
  for (float g : p.grad().cpu().to_vector()) REQUIRE(g == 3.0f);
  s.update();
  p.zero_grad();
  s.scale(sum(mul(p, INFINITY))).backward();
  REQUIRE(!s.unscale_and_check({p}));
  s.update();
  REQUIRE(s.current_scale() == 128);
}

}  // namespace test_cuda_autocast
