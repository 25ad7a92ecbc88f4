// Fused Transformer-XL / XLNet relative attention on the GPU against the CPU fused op and the
// reference composition on the same inputs, over the configurations of
// relative_attention_cases.hpp (shared with the kernels' host emulation): the output, the
// probabilities and all eight gradients, the dropout counters; the reference composition run on
// the GPU against the same; bit-for-bit repeatability and the refusals.
#include <string>
#include <vector>

#include "cuda_test_util.hpp"
#include "relative_attention_cases.hpp"

// In a namespace of its own: test files are compiled several to a unit (TXTCLS_UNITY_BUILD).
namespace test_cuda_relative_attention {

using namespace txtcls;
using namespace ct;

namespace {

template <class T>
void compare(const Run<T>& got, const Run<T>& want, double tol) {
  {
    INFO("output");
    CT_CHECK_CLOSE_TOL(got.out, want.out, tol, 0.0);
  }
  {
    INFO("probabilities");
    CT_CHECK_CLOSE_TOL(got.probs, want.probs, tol, 0.0);
  }
  REQUIRE(got.grads.size() == want.grads.size());
  // The segment gradients sum dS over a row's keys of one segment, which vanishes in exact
  // arithmetic where every key of the row is in one segment: compared on the scale of dq.
  double floor = 0;
  for (T g : want.grads[0].to_vector()) floor = std::max(floor, std::abs(double(g)));
  for (size_t i = 0; i < got.grads.size(); ++i) {
    INFO("gradient of " << kGradNames[i]);
    CT_CHECK_CLOSE_TOL(got.grads[i], want.grads[i], tol, i >= 6 ? floor : 0.0);
  }
}

template <class T>
void check(const Case& c, uint64_t seed) {
  INFO(c.label() << (sizeof(T) == 4 ? " float" : " double"));
  const Inputs in = make_inputs(c, seed);
  const Run<T> g = run<T>(c, in, gpu(), fused_op);
  REQUIRE(g.counters == expected_counters(c));
  {
    INFO("against the CPU fused op");
    compare(g, run<T>(c, in, Device::cpu(), fused_op), ct::tol<T>());
  }
  const Run<T> want = run<T>(c, in, Device::cpu(), reference_op);
  {
    INFO("against the CPU reference");
    compare(g, want, ct::tol<T>());
  }
  {
    INFO("the reference composition itself on the GPU (cuBLAS products, the shift as views)");
    compare(run<T>(c, in, gpu(), reference_op), want, ct::tol<T>());
  }
}

template <class T>
void suite() {
  uint64_t seed = 300;
  for (const Case& c : cases()) check<T>(c, seed += 20);
}

}  // namespace

TEST_CASE("cuda relative attention matches the CPU op and the reference (double)", "[cuda][relative_attention]") {
  suite<double>();
}

TEST_CASE("cuda relative attention matches the CPU op and the reference (float)", "[cuda][relative_attention]") {
  suite<float>();
}

// Small, every option: what compute-sanitizer's racecheck and synccheck run.
TEST_CASE("cuda relative attention, one small case with every option", "[cuda][relative_attention_sanitize]") {
  Case c{.name = "everything", .qlen = 19, .mlen = 5, .D = 20, .Dv = 12, .type = XLNetAttnType::Uni,
         .shared_kr = false, .seg = Case::SegMat, .mask = true, .padding = true, .perm = true, .empty_row = true,
         .causal = true, .dropout = 0.25, .strided = true};
  check<float>(c, 77);
  check<double>(c, 78);
  c.seg = Case::Ids, c.shared_kr = true, c.causal = false, c.type = XLNetAttnType::Bi;
  check<float>(c, 79);
}

TEST_CASE("cuda relative attention is repeatable and refuses what it cannot run", "[cuda][relative_attention]") {
  // Parameter gradients summed over the batch (k_r shared, the biases, seg_embed) come from
  // per-sequence parts and ordered reductions: two runs agree bit for bit.
  const Case c{.name = "repeatability", .B = 4, .qlen = 45, .mlen = 20, .D = 32, .Dv = 32,
                .type = XLNetAttnType::Uni, .seg = Case::Ids, .mask = true, .dropout = 0.1};
  const Inputs in = make_inputs(c, 5);
  const Run<float> r1 = run<float>(c, in, gpu(), fused_op), r2 = run<float>(c, in, gpu(), fused_op);
  REQUIRE(r1.out.to_vector() == r2.out.to_vector());
  REQUIRE(r1.probs.to_vector() == r2.probs.to_vector());
  for (size_t i = 0; i < r1.grads.size(); ++i) {
    INFO("gradient of " << kGradNames[i]);
    REQUIRE(r1.grads[i].to_vector() == r2.grads[i].to_vector());
  }

  auto dev = [](const Shape& s, uint64_t seed) { return rnd<float>(s, seed).to(gpu()); };
  const Tensor<float> q = dev({1, 1, 4, 160}, 1), kr = dev({1, 1, 5, 160}, 2), bias = dev({1, 160}, 3);
  REQUIRE_THROWS_WITH(relative_attention(q, q, q, kr, bias, bias),
                      Catch::Contains("relative_attention: head dims D = 160, Dv = 160 are not supported on CUDA"));
  const Tensor<float> qs = dev({1, 1, 4, 8}, 4), krs = dev({1, 1, 5, 8}, 5), bs = dev({1, 8}, 6);
  REQUIRE_THROWS_WITH(relative_attention(qs, qs, qs, krs.cpu(), bs, bs),
                      Catch::Contains("relative_attention: every operand must be on q's device"));
}

}  // namespace test_cuda_relative_attention
