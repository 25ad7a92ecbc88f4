#pragma once
// Helpers of the CUDA attention tests (test_cuda_attention*.cpp); their configurations and inputs
// are in attention_cases.hpp.
#include "attention_cases.hpp"
#include "cuda_test_util.hpp"
#include "txtcls/cuda/attention.hpp"
#include "txtcls/ops/attention.hpp"

namespace ct {

using namespace txtcls;

// The comparison of CT_CHECK_CLOSE_TOL for an error already computed (CHECK: the loops over
// configurations go on after a failure).
inline void require_close(double err, double tol) {
  INFO("relative error " << err << ", tolerance " << tol);
  CHECK(err <= tol);
}

// Selects the tensor-core attention design for a scope and restores the previous one afterwards,
// even when a check throws.
struct MmaKernelScope {
  txtcls::cuda::AttnMmaKernel prev = txtcls::cuda::attention_mma_kernel();
  explicit MmaKernelScope(txtcls::cuda::AttnMmaKernel k) { txtcls::cuda::set_attention_mma_kernel(k); }
  ~MmaKernelScope() { txtcls::cuda::set_attention_mma_kernel(prev); }
  MmaKernelScope(const MmaKernelScope&) = delete;
  MmaKernelScope& operator=(const MmaKernelScope&) = delete;
};

}  // namespace ct
