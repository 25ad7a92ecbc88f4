// F16/BF16 conversions: exact widening, round-to-nearest-even narrowing, specials.
#include <catch2/catch.hpp>
#include <cmath>
#include <bit>
#include <cstring>
#include <limits>

#include "txtcls/io/half.hpp"

using namespace txtcls::half;

namespace {

uint32_t float_bits(float f) { return std::bit_cast<uint32_t>(f); }

// Independent decoding of binary16 from its definition, for checking the library's.
double f16_reference(uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v = e == 0 ? m * std::pow(2.0, -24) : (1024 + m) * std::pow(2.0, e - 25);
  if (e == 31) v = m ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  return s ? -v : v;
}

bool is_nan16(uint16_t h, int exp_bits) {
  const int man_bits = 15 - exp_bits;
  const uint32_t exp = (h >> man_bits) & ((1u << exp_bits) - 1);
  return exp == (1u << exp_bits) - 1 && (h & ((1u << man_bits) - 1)) != 0;
}

}  // namespace

TEST_CASE("half: every F16 pattern widens exactly and narrows back to itself", "[half]") {
  for (uint32_t b = 0; b < 65536; ++b) {
    const auto h = static_cast<uint16_t>(b);
    const double ref = f16_reference(h);
    const double d = f16_to_double(h);
    const float f = f16_to_float(h);
    INFO("bits 0x" << std::hex << b);
    if (std::isnan(ref)) {
      REQUIRE(std::isnan(d));
      REQUIRE(std::isnan(f));
      REQUIRE(is_nan16(float_to_f16(f), 5));
      REQUIRE((float_to_f16(f) >> 15) == (h >> 15));  // sign kept
      continue;
    }
    REQUIRE(d == ref);
    REQUIRE(std::signbit(d) == std::signbit(ref));
    REQUIRE(static_cast<double>(f) == ref);
    REQUIRE(float_to_f16(f) == h);
    REQUIRE(double_to_f16(d) == h);
  }
}

TEST_CASE("half: every BF16 pattern widens exactly and narrows back to itself", "[half]") {
  for (uint32_t b = 0; b < 65536; ++b) {
    const auto h = static_cast<uint16_t>(b);
    const float f = bf16_to_float(h);
    INFO("bits 0x" << std::hex << b);
    REQUIRE(float_bits(f) == b << 16);  // bf16 is the top half of a float
    const double d = bf16_to_double(h);
    if (std::isnan(f)) {
      REQUIRE(std::isnan(d));
      REQUIRE(is_nan16(float_to_bf16(f), 8));
      continue;
    }
    REQUIRE(d == static_cast<double>(f));
    REQUIRE(float_to_bf16(f) == h);
    REQUIRE(double_to_bf16(d) == h);
  }
}

// Between two adjacent finite values a < b: the midpoint goes to the one with the even
// pattern, anything strictly nearer goes to the nearer one.
template <class Narrow, class Widen>
void check_round_to_nearest_even(Narrow narrow, Widen widen, uint16_t max_finite_bits) {
  for (uint32_t b = 0; b < max_finite_bits; ++b) {
    const auto lo = static_cast<uint16_t>(b), hi = static_cast<uint16_t>(b + 1);
    const double a = widen(lo), c = widen(hi);
    const double mid = (a + c) / 2;  // exact in double: 16-bit values have few significant bits
    const double quarter = (c - a) / 4;
    INFO("between 0x" << std::hex << b << " and 0x" << b + 1);
    REQUIRE(narrow(mid) == ((lo & 1) == 0 ? lo : hi));
    REQUIRE(narrow(a + quarter) == lo);
    REQUIRE(narrow(c - quarter) == hi);
    REQUIRE(narrow(-mid) == static_cast<uint16_t>(((lo & 1) == 0 ? lo : hi) | 0x8000));
  }
}

TEST_CASE("half: narrowing rounds to nearest, ties to even, at every F16 and BF16 gap", "[half]") {
  check_round_to_nearest_even([](double x) { return double_to_f16(x); }, f16_to_double, 0x7bff);
  check_round_to_nearest_even([](double x) { return double_to_bf16(x); }, bf16_to_double, 0x7f7f);
}

TEST_CASE("half: overflow, underflow and specials", "[half]") {
  const double inf = std::numeric_limits<double>::infinity();
  REQUIRE(float_to_f16(65504.0f) == 0x7bff);
  REQUIRE(float_to_f16(65519.0f) == 0x7bff);  // below the midpoint to infinity
  REQUIRE(float_to_f16(65520.0f) == 0x7c00);  // the midpoint: max finite is odd, so infinity
  REQUIRE(double_to_f16(1e300) == 0x7c00);
  REQUIRE(double_to_f16(-1e300) == 0xfc00);
  REQUIRE(double_to_f16(inf) == 0x7c00);
  REQUIRE(double_to_f16(-inf) == 0xfc00);
  REQUIRE(double_to_f16(std::ldexp(1.0, -24)) == 0x0001);       // smallest subnormal
  REQUIRE(double_to_f16(std::ldexp(1.0, -25)) == 0x0000);       // half of it: tie to even zero
  REQUIRE(double_to_f16(std::ldexp(1.5, -25)) == 0x0001);
  REQUIRE(double_to_f16(-std::ldexp(1.0, -26)) == 0x8000);      // signed zero
  REQUIRE(double_to_f16(std::numeric_limits<double>::denorm_min()) == 0);
  REQUIRE(double_to_f16(std::ldexp(1.0, -14) - std::ldexp(1.0, -25)) == 0x0400);  // up into the normals
  REQUIRE(float_to_bf16(std::numeric_limits<float>::max()) == 0x7f80);  // rounds past bf16 max
  REQUIRE(float_to_bf16(std::numeric_limits<float>::denorm_min()) == 0x0000);
  REQUIRE(float_to_bf16(-0.0f) == 0x8000);
  // Narrowing through float would round twice and end at 0x3c00; a single rounding gives 0x3c01.
  const double just_above_tie = 1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40);
  REQUIRE(static_cast<float>(just_above_tie) == 1.0f + std::ldexp(1.0f, -11));  // float lands on the tie
  REQUIRE(double_to_f16(just_above_tie) == 0x3c01);
  REQUIRE(float_to_f16(static_cast<float>(just_above_tie)) == 0x3c00);  // the float itself is a tie
  // NaN stays NaN with its sign, even when the payload sits only in low bits.
  const float nan_low = std::bit_cast<float>(0x7f800001u);
  REQUIRE(is_nan16(float_to_f16(nan_low), 5));
  REQUIRE(is_nan16(float_to_bf16(nan_low), 8));
  REQUIRE(is_nan16(double_to_f16(-std::nan("")), 5));
  REQUIRE((double_to_f16(-std::nan("")) & 0x8000) != 0);
}
