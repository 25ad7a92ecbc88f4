#pragma once
// Host-side face of the cuBLAS GEMMs (kernels/blas.cu). Compiles without nvcc.
// Row-major semantics, as everywhere in txtcls: C[b] = alpha * op(A[b]) op(B[b]) + beta * C[b]
// for b < batch, where each matrix is given by a pointer, its leading dimension (row stride)
// and its batch stride (0: the same matrix for every b). Transposes are cuBLAS arguments, never
// copies.
#include <cstdint>

#include "txtcls/tensor/dtype.hpp"

namespace txtcls::cuda {

struct GemmOperand {
  const void* data = nullptr;
  int64_t ld = 0;            // row stride of the stored (row-major) matrix
  int64_t batch_stride = 0;  // elements between consecutive matrices (0: broadcast)
  bool transposed = false;   // the operand is the transpose of the stored matrix
};

// C [M, N] (row-major, leading dimension ldc, batch stride stride_c) for float and double.
template <class T>
void gemm(int64_t M, int64_t N, int64_t K, const GemmOperand& a, const GemmOperand& b, T* c, int64_t ldc,
          int64_t stride_c, int64_t batch, T alpha = T(1), T beta = T(0));

// Autocast GEMMs (ops/autocast.hpp): a.data and b.data point to 16-bit floats (`operands`: BF16
// or F16), C is float; products on tensor cores, accumulation in float (CUBLAS_COMPUTE_32F).
void gemm_16bit(int64_t M, int64_t N, int64_t K, const GemmOperand& a, const GemmOperand& b, float* c, int64_t ldc,
                int64_t stride_c, int64_t batch, DType operands);

// dst[i] = src[i] rounded to the nearest BF16 / F16 (ties to even, as the CPU's round_to_bf16 /
// round_to_f16), for i < n; dst holds 2-byte elements.
void convert_to_16bit(const float* src, void* dst, int64_t n, DType to);

#ifdef TXTCLS_WITH_CUDA
// float32 GEMMs on tensor cores in TF32 (10-bit mantissa inputs, float accumulation): off by
// default, so float results match the CPU to float precision; turn on for speed.
void set_allow_tf32(bool on);
bool allow_tf32();
#endif

}  // namespace txtcls::cuda
