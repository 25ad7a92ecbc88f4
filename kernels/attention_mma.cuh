#pragma once
// The tensor-core attention kernels between their files: attention_mma.cu (wmma tiles staged
// through shared memory) and attention_fa2.cu (mma.sync with register-resident accumulators),
// both for float under TF32 and the 16-bit types. Operands of element type E, fp32 score
// terms, fp32 lse, delta and bias gradient. The public entry points are in txtcls/cuda/attention.hpp.
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

// delta[row] = dot(dout[row], out[row]) over the Dv columns of every query row (the backward's
// first step in both designs).
template <class E>
void mma_delta(const AttentionArgs<float>& a, const E* out, AttnRows<const E> dout, float* delta);

// attention_fa2.cu, E = __half, __nv_bfloat16 or float (TF32); same arguments as mma_forward /
// mma_backward.
template <class E>
void fa2_forward(const AttentionArgs<float>& a, AttnRows<const E> q, AttnRows<const E> k, AttnRows<const E> v, E* out,
                 float* lse);

template <class E>
void fa2_backward(const AttentionArgs<float>& a, AttnRows<const E> q, AttnRows<const E> k, AttnRows<const E> v,
                  const E* out, AttnRows<const E> dout, const float* lse, E* dq, E* dk, E* dv, float* dbias,
                  bool dbias_per_query, float* delta);

// The design set_attention_mma_kernel chose, as the forward / backward to call.
template <class E>
auto chosen_forward() {
  return attention_mma_kernel() == AttnMmaKernel::Registers ? &fa2_forward<E> : &mma_forward<E>;
}
template <class E>
auto chosen_backward() {
  return attention_mma_kernel() == AttnMmaKernel::Registers ? &fa2_backward<E> : &mma_backward<E>;
}

}  // namespace txtcls::cuda::attn
