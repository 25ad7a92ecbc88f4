// Autocast (16-bit matmul operands, float accumulation) and dynamic loss scaling.
#include <bit>
#include <cmath>
#include <limits>

#include "test_util.hpp"
#include "txtcls/io/half.hpp"

using namespace txtcls;
using namespace tt;

namespace {

// The reference rounding: txtcls::half's narrowing (bit-exact, tested against NumPy) and back.
float ref_bf16(float x) { return half::bf16_to_float(half::float_to_bf16(x)); }
float ref_f16(float x) { return half::f16_to_float(half::float_to_f16(x)); }

bool same_value(float a, float b) { return (std::isnan(a) && std::isnan(b)) || std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b); }

TF rndf(const Shape& s, uint64_t seed, double scale = 1.0) {
  Generator g(seed);
  return rand_uniform<float>(s, g, -scale, scale);
}

}  // namespace

TEST_CASE("round_to_bf16 / round_to_f16 agree with the file-format conversions bit for bit", "[autocast]") {
  // Edge cases: ties both ways, the largest finite values and the overflow midpoints, subnormal
  // boundaries, signed zeros, infinities.
  const float edges[] = {0.0f, -0.0f, 1.0f, 1.0f + 0x1p-8f, 1.0f + 0x3p-9f, 1.0f + 0x1p-11f, 1.0f + 0x3p-12f,
                         65504.0f, 65519.99f, 65520.0f, -65520.0f, 65536.0f, 0x1p-14f, 0x1p-24f, 0x1p-25f,
                         0x3p-26f, 0x1.ffcp-15f, 0x1.ffep-15f, 3.3895314e38f, 3.4028235e38f, -3.4028235e38f,
                         std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                         std::numeric_limits<float>::denorm_min(), 1e-40f};
  for (float x : edges) {
    INFO("x = " << x);
    REQUIRE(same_value(round_to_bf16(x), ref_bf16(x)));
    REQUIRE(same_value(round_to_f16(x), ref_f16(x)));
  }
  REQUIRE(round_to_f16(65520.0f) == std::numeric_limits<float>::infinity());
  REQUIRE(round_to_f16(65519.0f) == 65504.0f);
  REQUIRE(round_to_bf16(1.0f + 0x1p-8f) == 1.0f);           // a tie goes to the even neighbour
  REQUIRE(round_to_bf16(1.0f + 0x3p-8f) == 1.0f + 0x1p-6f);  // ... up when that one is even
  REQUIRE(std::isnan(round_to_bf16(std::numeric_limits<float>::quiet_NaN())));
  REQUIRE(std::isnan(round_to_f16(std::numeric_limits<float>::quiet_NaN())));
  // Random bit patterns over the whole float range (NaNs included).
  std::mt19937_64 rng(12345);
  int64_t bad_bf16 = 0, bad_f16 = 0;
  for (int i = 0; i < 2000000; ++i) {
    const float x = std::bit_cast<float>(static_cast<uint32_t>(rng()));
    bad_bf16 += !same_value(round_to_bf16(x), ref_bf16(x));
    bad_f16 += !same_value(round_to_f16(x), ref_f16(x));
  }
  // And values in binary16's range, where its rounding cases live.
  for (int i = 0; i < 2000000; ++i) {
    const float x = std::ldexp(static_cast<float>(rng() % (1u << 24)) / float(1u << 24), static_cast<int>(rng() % 46) - 30);
    bad_f16 += !same_value(round_to_f16(x), ref_f16(x));
  }
  REQUIRE(bad_bf16 == 0);
  REQUIRE(bad_f16 == 0);
}

TEST_CASE("AutocastGuard: per thread, nestable, restored; bad precisions refused", "[autocast]") {
  REQUIRE(autocast_dtype() == DType::F32);
  {
    AutocastGuard a(DType::BF16);
    REQUIRE(autocast_dtype() == DType::BF16);
    {
      AutocastGuard b(DType::F16);
      REQUIRE(autocast_dtype() == DType::F16);
    }
    REQUIRE(autocast_dtype() == DType::BF16);
  }
  REQUIRE(autocast_dtype() == DType::F32);
  REQUIRE_THROWS_WITH(AutocastGuard(DType::F64), Catch::Contains("F64 is not an autocast precision"));
  REQUIRE(parse_precision("bf16") == DType::BF16);
  REQUIRE(parse_precision("fp16") == DType::F16);
  REQUIRE(parse_precision("fp32") == DType::F32);
  REQUIRE_THROWS_WITH(parse_precision("int8"), Catch::Contains("precision 'int8' is not one of fp32, bf16, fp16"));
}

TEST_CASE("autocast matmul: the float product of the rounded operands, forward and backward", "[autocast][matmul]") {
  for (DType d : {DType::BF16, DType::F16}) {
    INFO(dtype_name(d));
    auto round = [d](const TF& t) {
      std::vector<float> vals = t.contiguous().to_vector();
      for (float& v : vals) v = d == DType::BF16 ? ref_bf16(v) : ref_f16(v);
      return from_vector<float>(vals, t.shape());
    };
    // Batched, broadcast and transposed operands, sizes that are not multiples of anything.
    TF a = rndf({2, 3, 17, 33}, 1).set_requires_grad(), b = rndf({3, 19, 33}, 2).set_requires_grad();
    TF ga = rndf({2, 3, 17, 19}, 3, 0.01);
    TF out;
    {
      AutocastGuard ac(d);
      out = matmul(a, b.transpose(-1, -2));
    }
    // Expected: the exact float product of rounded operands, computed by the same float GEMM.
    TF ra = round(a.detach()), rb = round(b.detach());
    TF expect = matmul(ra, rb.transpose(-1, -2));
    REQUIRE(out.to_vector() == expect.to_vector());
    // ... which differs from the float32 product by about the 16-bit rounding, not more.
    TF full = matmul(a.detach(), b.detach().transpose(-1, -2));
    double maxdiff = 0, maxval = 0;
    for (size_t i = 0; i < full.to_vector().size(); ++i) {
      maxdiff = std::max(maxdiff, std::abs(double(full.to_vector()[i]) - double(out.to_vector()[i])));
      maxval = std::max(maxval, std::abs(double(full.to_vector()[i])));
    }
    const double unit = d == DType::BF16 ? 0x1p-8 : 0x1p-11;  // half an ulp at 1
    REQUIRE(maxdiff > 0);
    REQUIRE(maxdiff <= 33 * 2 * unit * 1.0);  // K products, each operand off by <= unit relatively, |x| <= 1
    // Backward outside the guard still runs in the forward's precision.
    out.backward(ga);
    TF rg = round(ga);
    TF ea = matmul(rg, rb);                                          // dA = dC B
    TF eb = sum_to(matmul(rg.transpose(-1, -2), ra), b.shape());     // dB = sum_batch dC^T A
    REQUIRE(a.grad().to_vector() == ea.to_vector());
    require_close(b.grad(), eb.to_vector(), 1e-6);
  }
  // The folded form (x [B, T, in] @ W^T) and linear(): the same rule.
  TF x = rndf({4, 5, 24}, 7), w = rndf({10, 24}, 8), bias = rndf({10}, 9);
  TF y;
  {
    AutocastGuard ac(DType::BF16);
    y = linear(x, w, bias);
  }
  std::vector<float> xv = x.to_vector(), wv = w.to_vector();
  for (float& v : xv) v = ref_bf16(v);
  for (float& v : wv) v = ref_bf16(v);
  TF e = linear(from_vector<float>(xv, x.shape()), from_vector<float>(wv, w.shape()), bias);
  REQUIRE(y.to_vector() == e.to_vector());
  // Doubles are never autocast.
  TD p = rnd({3, 4}, 1), q = rnd({4, 2}, 2);
  TD r1 = matmul(p, q), r2;
  {
    AutocastGuard ac(DType::F16);
    r2 = matmul(p, q);
  }
  REQUIRE(r1.to_vector() == r2.to_vector());
}

TEST_CASE("fp16 autocast loses small gradients that loss scaling keeps", "[autocast][scaler]") {
  // A gradient of 1e-8 is below fp16's smallest subnormal (6e-8): unscaled it rounds to zero.
  TF w = full<float>({1, 4}, 0.5f).set_requires_grad();
  TF x = full<float>({4, 1}, 1.0f);
  auto loss_of = [&] {
    AutocastGuard ac(DType::F16);
    return mul(sum(matmul(w, x)), 1e-8f);  // d loss / d out = 1e-8, rounded to fp16 in the backward
  };
  loss_of().backward();
  REQUIRE(w.grad().to_vector() == std::vector<float>(4, 0.0f));
  w.zero_grad();
  train::GradScaler<float> scaler;
  scaler.scale(loss_of()).backward();
  REQUIRE(scaler.unscale_and_check({w}));
  scaler.update();
  for (float g : w.grad().to_vector()) REQUIRE(std::abs(g - 1e-8f) <= 1e-8f * 1e-3f);
}

TEST_CASE("GradScaler: unscales, skips on inf or NaN, backs off, grows after the interval", "[scaler]") {
  train::GradScalerOptions o;
  o.init_scale = 1024;
  o.growth_interval = 3;
  train::GradScaler<float> s(o);
  TF p = rndf({7}, 1).set_requires_grad(), q = rndf({2, 3}, 2).set_requires_grad();
  TF unused = rndf({2}, 3).set_requires_grad();  // no gradient: skipped
  auto backward_with = [&](float gq) {  // loss whose gradient is 2 * scale for p and gq * scale for q
    p.zero_grad();
    q.zero_grad();
    s.scale(add(sum(mul(p, 2.0f)), sum(mul(q, gq)))).backward();
  };
  backward_with(0.25f);
  REQUIRE(p.grad().to_vector() == std::vector<float>(7, 2048.0f));
  REQUIRE(s.unscale_and_check({p, q, unused}));
  REQUIRE(p.grad().to_vector() == std::vector<float>(7, 2.0f));
  REQUIRE(q.grad().to_vector() == std::vector<float>(6, 0.25f));
  REQUIRE(!unused.grad().defined());
  s.update();
  REQUIRE(s.current_scale() == 1024);
  REQUIRE(s.state().growth_tracker == 1);
  // An infinite gradient: the step is to be skipped, the scale halves, the count restarts.
  backward_with(std::numeric_limits<float>::infinity());
  REQUIRE(!s.unscale_and_check({p, q}));
  REQUIRE(s.found_inf());
  s.update();
  REQUIRE(s.current_scale() == 512);
  REQUIRE(s.state().growth_tracker == 0);
  // A NaN likewise.
  backward_with(std::numeric_limits<float>::quiet_NaN());
  REQUIRE(!s.unscale_and_check({p, q}));
  s.update();
  REQUIRE(s.current_scale() == 256);
  // Three clean steps in a row double it.
  for (int i = 0; i < 3; ++i) {
    backward_with(1.0f);
    REQUIRE(s.unscale_and_check({p, q}));
    REQUIRE(q.grad().to_vector() == std::vector<float>(6, 1.0f));
    s.update();
  }
  REQUIRE(s.current_scale() == 512);
  REQUIRE(s.state().growth_tracker == 0);
  // update() without a check first, bad options and bad saved states are refused.
  REQUIRE_THROWS_WITH(s.update(), Catch::Contains("call unscale_and_check first"));
  o.backoff_factor = 1.5;
  REQUIRE_THROWS_WITH(train::GradScaler<float>(o), Catch::Contains("backoff_factor must be in (0, 1)"));
  REQUIRE_THROWS_WITH(s.load_state({-1.0, 0}), Catch::Contains("scale -1 is not positive and finite"));
  REQUIRE_THROWS_WITH(s.load_state({8.0, 3}), Catch::Contains("growth tracker 3 outside [0, 3)"));
  s.load_state({8.0, 2});
  backward_with(1.0f);
  REQUIRE(s.unscale_and_check({p, q}));
  REQUIRE(p.grad().to_vector() == std::vector<float>(7, 2.0f));
  s.update();
  REQUIRE(s.current_scale() == 16);  // the restored tracker reached the interval
}
