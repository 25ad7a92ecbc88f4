// cuBLAS GEMMs behind txtcls/cuda/blas.hpp: one handle per device and thread (cuBLAS handles
// are not thread-safe), bound to the thread's current stream at every call.
//
// Row-major to column-major: cuBLAS sees a row-major M x N matrix with row stride ld as the
// column-major N x M matrix (its transpose) with the same ld. So C = op(A) op(B) in row-major is
// computed as C^T = op(B)^T op(A)^T in column-major: the operands swap places and keep their
// transpose flags.
#include <atomic>
#include <map>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "launch.cuh"
#include "txtcls/cuda/blas.hpp"

namespace txtcls::cuda {
namespace {

std::atomic<bool> tf32_allowed{false};

thread_local std::map<int, cublasHandle_t> handles;  // by device; kept until release_resources()

void release_handles() {
  for (auto& [device, h] : handles) {
    DeviceGuard guard(device);
    cublasDestroy(h);
  }
  handles.clear();
}

cublasHandle_t handle() {
  int device = 0;
  TXTCLS_CUDA_CHECK(cudaGetDevice(&device));
  auto it = handles.find(device);
  if (it == handles.end()) {
    cublasHandle_t h = nullptr;
    TXTCLS_CUBLAS_CHECK(cublasCreate(&h));
    it = handles.emplace(device, h).first;
    on_release_resources(&release_handles);
  }
  TXTCLS_CUBLAS_CHECK(cublasSetStream(it->second, active_stream()));
  return it->second;
}

template <class T> constexpr cudaDataType_t data_type() { return std::is_same_v<T, float> ? CUDA_R_32F : CUDA_R_64F; }

}  // namespace

void set_allow_tf32(bool on) { tf32_allowed.store(on); }
bool allow_tf32() { return tf32_allowed.load(); }

template <class T>
void gemm(int64_t M, int64_t N, int64_t K, const GemmOperand& a, const GemmOperand& b, T* c, int64_t ldc,
          int64_t stride_c, int64_t batch, T alpha, T beta) {
  if (M == 0 || N == 0 || batch == 0) return;
  constexpr int64_t kMax = int64_t(1) << 31;
  TXTCLS_CHECK(M < kMax && N < kMax && K < kMax && batch < kMax, "gemm: sizes M=", M, " N=", N, " K=", K, " batch=",
               batch, " exceed cuBLAS's 32-bit limits");
  // Column-major view: C^T [N x M] = op(B)^T [N x K] * op(A)^T [K x M].
  const cublasOperation_t opb = b.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t opa = a.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  // Leading dimensions must be at least the stored matrix's column-major row count.
  const int64_t ldb = std::max<int64_t>(b.ld, b.transposed ? K : N);
  const int64_t lda = std::max<int64_t>(a.ld, a.transposed ? M : K);
  const int64_t ldcc = std::max<int64_t>(ldc, N);
  cublasComputeType_t compute = std::is_same_v<T, double> ? CUBLAS_COMPUTE_64F
                                : tf32_allowed.load()     ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                          : CUBLAS_COMPUTE_32F;
  TXTCLS_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      handle(), opb, opa, static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &alpha, b.data,
      data_type<T>(), static_cast<int>(ldb), b.batch_stride, a.data, data_type<T>(), static_cast<int>(lda),
      a.batch_stride, &beta, c, data_type<T>(), static_cast<int>(ldcc), stride_c, static_cast<int>(batch), compute,
      CUBLAS_GEMM_DEFAULT));
}

void gemm_16bit(int64_t M, int64_t N, int64_t K, const GemmOperand& a, const GemmOperand& b, float* c, int64_t ldc,
                int64_t stride_c, int64_t batch, DType operands) {
  TXTCLS_CHECK(operands == DType::BF16 || operands == DType::F16, "gemm_16bit: operands of type ",
               dtype_name(operands), " (BF16 or F16 expected)");
  if (M == 0 || N == 0 || batch == 0) return;
  constexpr int64_t kMax = int64_t(1) << 31;
  TXTCLS_CHECK(M < kMax && N < kMax && K < kMax && batch < kMax, "gemm_16bit: sizes M=", M, " N=", N, " K=", K,
               " batch=", batch, " exceed cuBLAS's 32-bit limits");
  const cublasOperation_t opb = b.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t opa = a.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int64_t ldb = std::max<int64_t>(b.ld, b.transposed ? K : N);
  const int64_t lda = std::max<int64_t>(a.ld, a.transposed ? M : K);
  const int64_t ldcc = std::max<int64_t>(ldc, N);
  const cudaDataType_t in = operands == DType::BF16 ? CUDA_R_16BF : CUDA_R_16F;
  const float alpha = 1.0f, beta = 0.0f;
  TXTCLS_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      handle(), opb, opa, static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &alpha, b.data, in,
      static_cast<int>(ldb), b.batch_stride, a.data, in, static_cast<int>(lda), a.batch_stride, &beta, c, CUDA_R_32F,
      static_cast<int>(ldcc), stride_c, static_cast<int>(batch), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

namespace {
template <class H, class Convert>
__global__ void to_16bit_kernel(const float* __restrict__ src, H* __restrict__ dst, int64_t n, Convert convert) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = convert(src[i]);
}
struct ToBf16 { __device__ __nv_bfloat16 operator()(float x) const { return __float2bfloat16_rn(x); } };
struct ToF16 { __device__ __half operator()(float x) const { return __float2half_rn(x); } };
}  // namespace

void convert_to_16bit(const float* src, void* dst, int64_t n, DType to) {
  TXTCLS_CHECK(to == DType::BF16 || to == DType::F16, "convert_to_16bit: target type ", dtype_name(to),
               " (BF16 or F16 expected)");
  if (n == 0) return;
  if (to == DType::BF16) {
    to_16bit_kernel<<<grid_for(n), kBlock, 0, active_stream()>>>(src, static_cast<__nv_bfloat16*>(dst), n, ToBf16{});
  } else {
    to_16bit_kernel<<<grid_for(n), kBlock, 0, active_stream()>>>(src, static_cast<__half*>(dst), n, ToF16{});
  }
  TXTCLS_KERNEL_CHECK("to_16bit_kernel");
}

template void gemm<float>(int64_t, int64_t, int64_t, const GemmOperand&, const GemmOperand&, float*, int64_t, int64_t,
                          int64_t, float, float);
template void gemm<double>(int64_t, int64_t, int64_t, const GemmOperand&, const GemmOperand&, double*, int64_t,
                           int64_t, int64_t, double, double);

}  // namespace txtcls::cuda
