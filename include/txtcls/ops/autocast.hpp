#pragma once
// Autocast: float32 matmuls with 16-bit operands, the numerics of bf16 / fp16 tensor-core GEMMs.
//
//   { AutocastGuard ac(DType::BF16);  y = model.forward(x); }   // matmuls take bf16 operands
//
// Inside the guard (per thread, nestable), every float matmul -- hence linear() and the modules
// built on it -- rounds both operands to the nearest 16-bit float (ties to even), multiplies and
// accumulates in float32 and returns float32. Weights stay float32 (the "master" copy the
// optimizer updates); only the products see 16 bits. The backward of such a matmul rounds the
// incoming gradient and the saved operands the same way, whatever mode is active when backward
// runs (as PyTorch's autocast: an op's backward runs in the precision of its forward).
//
// The output stays float32 (PyTorch's autocast returns bf16 there): cuBLAS writes a float C for
// free, and the next op then needs no cast. Double tensors are never autocast.
//
// CPU: the operands are rounded into float tensors and the ordinary float GEMM runs; every
// product of two 16-bit values is exact in float32, so this is the GPU's result up to the order
// of the float additions, and it is the reference the CUDA path is tested against. CUDA: the
// operands are converted to real 16-bit buffers and cuBLAS multiplies them on tensor cores.
//
// What autocast covers today: matmul / linear. The LSTM, attention and graph-attention kernels
// run in float32 under the guard.
#include <cstdint>
#include <cstring>
#include <string>

#include "txtcls/core/config.hpp"
#include "txtcls/core/error.hpp"
#include "txtcls/tensor/dtype.hpp"

namespace txtcls {

// Nearest bfloat16 value, as a float (round to nearest, ties to even; NaN stays NaN; values past
// the largest finite bf16 become infinities). bf16 is the top half of a float, so rounding is an
// integer add on the bits: the carry of a round-up moves into the exponent as it should.
TXTCLS_HD float round_to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return x;  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  std::memcpy(&x, &u, sizeof u);
  return x;
}

// Nearest IEEE binary16 value, as a float (ties to even; overflow to infinity; subnormals kept).
TXTCLS_HD float round_to_f16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  const uint32_t sign = u & 0x80000000u, a = u ^ sign;
  if (a >= 0x7f800000u) return x;  // infinity or NaN
  if (a >= 0x477ff000u) {          // >= 65520, the midpoint past 65504 (odd mantissa: ties go up)
    u = sign | 0x7f800000u;
  } else if (a >= 0x38800000u) {   // a normal binary16 (>= 2^-14): keep 10 of the 23 mantissa bits
    u = sign | ((a + 0xfffu + ((a >> 13) & 1u)) & ~0x1fffu);
  } else {
    // Subnormal range, multiples of 2^-24: adding 0.5 (whose float ulp is 2^-24) makes the FPU
    // round the magnitude to that grid, ties to even; subtracting 0.5 again is exact.
    float m;
    std::memcpy(&m, &a, sizeof a);
    m = (m + 0.5f) - 0.5f;
    std::memcpy(&u, &m, sizeof u);
    u |= sign;
  }
  std::memcpy(&x, &u, sizeof u);
  return x;
}

// The operand precision of autocast matmuls on this thread: F32 (autocast off), BF16 or F16.
namespace detail {
inline DType& autocast_flag() {
  thread_local DType d = DType::F32;
  return d;
}
}  // namespace detail

inline DType autocast_dtype() { return detail::autocast_flag(); }

class AutocastGuard {
 public:
  explicit AutocastGuard(DType d) : prev_(detail::autocast_flag()) {
    TXTCLS_CHECK(d == DType::F32 || d == DType::BF16 || d == DType::F16, "AutocastGuard: ", dtype_name(d),
                 " is not an autocast precision (F32, BF16 or F16)");
    detail::autocast_flag() = d;
  }
  ~AutocastGuard() { detail::autocast_flag() = prev_; }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  DType prev_;
};

// "bf16" / "fp16" / "fp32" (the spellings of the training program's --precision).
inline DType parse_precision(const std::string& s) {
  if (s == "fp32" || s == "f32" || s == "float32") return DType::F32;
  if (s == "bf16" || s == "bfloat16") return DType::BF16;
  if (s == "fp16" || s == "f16" || s == "float16") return DType::F16;
  ::txtcls::detail::fail("precision '", s, "' is not one of fp32, bf16, fp16");
}

}  // namespace txtcls
