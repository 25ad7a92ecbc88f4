#pragma once
// The tensor-core attention kernels (attention_mma.cu) as attention.cu calls them for float under
// TF32: operands of element type E (float here), fp32 score terms, fp32 lse, delta and bias
// gradient. The 16-bit entry points are declared in txtcls/cuda/attention.hpp.
#include <cstdint>

#include "txtcls/cuda/attention.hpp"

namespace txtcls::cuda::attn {

// Whether the kernels were compiled for compute capability 8.0 or later (else they trap).
bool mma_compiled();

template <class E>
void mma_forward(const AttentionArgs<float>& a, AttnRows<const E> q, AttnRows<const E> k, AttnRows<const E> v, E* out,
                 float* lse);

template <class E>
void mma_backward(const AttentionArgs<float>& a, AttnRows<const E> q, AttnRows<const E> k, AttnRows<const E> v,
                  const E* out, AttnRows<const E> dout, const float* lse, E* dq, E* dk, E* dv, float* dbias,
                  bool dbias_per_query, float* delta);

}  // namespace txtcls::cuda::attn
