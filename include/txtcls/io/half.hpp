#pragma once
// IEEE binary16 (F16) and bfloat16 (BF16) <-> float/double, bit-exact, for file formats.
// There is no 16-bit tensor type: half data is widened on load and narrowed on save.
// Narrowing rounds to nearest, ties to even (as PyTorch and NumPy do); NaN stays NaN (quiet,
// sign kept), values past the largest finite one become infinities.
#include <bit>
#include <cmath>
#include <cstdint>

namespace txtcls::half {

namespace detail {

// A 16-bit float layout: kExpBits exponent bits, kManBits stored mantissa bits.
template <int kExpBits, int kManBits>
struct Format {
  static constexpr int kMan = kManBits;
  static constexpr int kBias = (1 << (kExpBits - 1)) - 1;
  static constexpr uint32_t kExpMask = (1u << kExpBits) - 1;
  static constexpr uint32_t kManMask = (1u << kManBits) - 1;
  static constexpr uint16_t kInf = static_cast<uint16_t>(kExpMask << kManBits);
};
using F16 = Format<5, 10>;
using BF16 = Format<8, 7>;

// Rounds the 53-bit significand `m` right by `shift` bits, ties to even.
inline uint64_t shift_round_even(uint64_t m, int shift) {
  if (shift <= 0) return m;
  if (shift > 63) return 0;  // m < 2^53 is then below half of the last kept unit
  const uint64_t q = m >> shift;
  const uint64_t rem = m & ((uint64_t{1} << shift) - 1);
  const uint64_t half = uint64_t{1} << (shift - 1);
  return (rem > half || (rem == half && (q & 1))) ? q + 1 : q;
}

// Narrowing from double covers float inputs too (float -> double is exact), so every input
// is rounded exactly once; going through float first would round twice.
template <class F>
uint16_t from_double(double x) {
  const uint64_t bits = std::bit_cast<uint64_t>(x);
  const uint16_t sign = static_cast<uint16_t>((bits >> 63) << 15);
  const int exp = static_cast<int>((bits >> 52) & 0x7ff);
  const uint64_t frac = bits & ((uint64_t{1} << 52) - 1);
  if (exp == 0x7ff) {
    if (frac == 0) return sign | F::kInf;
    // Keep the top payload bits and force the quiet bit so the result is never an infinity.
    const uint16_t payload = static_cast<uint16_t>(frac >> (52 - F::kMan));
    return sign | F::kInf | payload | static_cast<uint16_t>(1u << (F::kMan - 1));
  }
  if (exp == 0) return sign;  // zero or a double subnormal: far below the 16-bit subnormals
  const uint64_t m = (uint64_t{1} << 52) | frac;
  const int target_exp = exp - 1023 + F::kBias;
  uint64_t out;
  if (target_exp >= 1) {
    // Adding the rounded significand (implicit bit included) to (exp - 1) << M carries a
    // mantissa overflow into the exponent, which is exactly what rounding up must do.
    const uint64_t r = shift_round_even(m, 52 - F::kMan);
    out = (static_cast<uint64_t>(target_exp - 1) << F::kMan) + r;
  } else {
    // Subnormal result: the significand counted in units of the smallest subnormal. A result
    // that rounds up to 1 << M is the smallest normal number, which this encoding also gives.
    out = shift_round_even(m, 52 - F::kMan + (1 - target_exp));
  }
  if (out >= F::kInf) return sign | F::kInf;
  return sign | static_cast<uint16_t>(out);
}

template <class F>
double to_double(uint16_t h) {
  const bool neg = (h >> 15) != 0;
  const uint32_t exp = (h >> F::kMan) & F::kExpMask;
  const uint32_t man = h & F::kManMask;
  double v;
  if (exp == F::kExpMask) {
    v = man ? std::nan("") : INFINITY;
  } else if (exp == 0) {
    v = std::ldexp(static_cast<double>(man), 1 - F::kBias - F::kMan);
  } else {
    v = std::ldexp(static_cast<double>(man | (1u << F::kMan)), static_cast<int>(exp) - F::kBias - F::kMan);
  }
  return neg ? -v : v;
}

}  // namespace detail

inline uint16_t double_to_f16(double x) { return detail::from_double<detail::F16>(x); }
inline uint16_t float_to_f16(float x) { return detail::from_double<detail::F16>(static_cast<double>(x)); }
inline uint16_t double_to_bf16(double x) { return detail::from_double<detail::BF16>(x); }
inline uint16_t float_to_bf16(float x) { return detail::from_double<detail::BF16>(static_cast<double>(x)); }

// Widening is exact: every F16 and BF16 value is a float.
inline double f16_to_double(uint16_t h) { return detail::to_double<detail::F16>(h); }
inline float f16_to_float(uint16_t h) { return static_cast<float>(f16_to_double(h)); }
inline double bf16_to_double(uint16_t h) { return detail::to_double<detail::BF16>(h); }
// BF16 is the top half of a float, so widening (NaN payloads included) is a shift.
inline float bf16_to_float(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

}  // namespace txtcls::half
