#pragma once
// Host-side face of the fused Transformer-XL / XLNet relative attention kernels
// (kernels/relative_attention.cu). Compiles without nvcc. The semantics are those of
// relative_attention (ops/relative_attention_fused.hpp), which calls these for CUDA tensors: the
// same score terms, relative shift (wrapped positions included), HF's -1e30 mask rule with
// uniform rows where every key is hidden, and dropout counters, so a GPU result equals the CPU
// one up to rounding (dropout masks bit for bit).
#include <cstdint>

#include "txtcls/cuda/attention.hpp"

namespace txtcls::cuda {

template <class T>
struct RelativeAttentionArgs {
  // B, H, Lq, Lk, D, Dv, q, k, v, scale, causal and dropout; its bias, mask, allowed and
  // key_lengths are unused (the mask below is XLNet's: nonzero = hidden).
  AttentionArgs<T> a;
  int64_t P = 0;
  AttnRows<const T> kr;             // [Br, H, P, D]; sb = 0 when the batch shares one set
  const T* r_w_bias = nullptr;      // [H, D], contiguous
  const T* r_r_bias = nullptr;      // [H, D]
  const T* r_s_bias = nullptr;      // [H, D]; null: no segment term
  const T* seg_embed = nullptr;     // [2, H, D]
  const int64_t* seg_q = nullptr;   // [B, Lq], [B, Lk] segment ids (contiguous), or null: then
  const int64_t* seg_k = nullptr;   //   seg_mat gives the weights
  AttnTerm<T> seg_mat;              // weight of seg_embed[0] at (b, -, i, j); + seg_mat_s: of seg_embed[1]
  int64_t seg_mat_s = 0;
  AttnTerm<uint8_t> mask;           // nonzero = hidden
  uint8_t* empty = nullptr;         // workspace [B, H, Lq]: rows that hide every key (the forward writes it)
};

// out: contiguous [B, H, Lq, Dv]; lse: [B, H, Lq]; probs: null or contiguous [B, H, Lq, Lk]
// (the probabilities after dropout). Fills a.empty.
template <class T>
void relative_attention_forward(const RelativeAttentionArgs<T>& a, T* out, T* lse, T* probs);

// The kernels' gradients, all contiguous and written whole; the op folds them into the
// parameters' gradients with deterministic reductions:
//   dqw  [B, H, Lq, D]   scale sum_j dS k_j                      (q and r_w_bias)
//   dqr  [B, H, Lq, D]   scale sum of dS kr over the raw position scores of row i (q, r_r_bias)
//   es   [B, H, Lq, 2]   scale sum_j dS w_s(i, j)                 (q, r_s_bias, seg_embed)
//   dk, dv               as their inputs
//   dkr  [B, H, P, D]    per sequence (the op sums it over the batch when Br = 1)
template <class T>
struct RelativeAttentionGrads {
  T *dqw = nullptr, *dqr = nullptr, *es = nullptr, *dk = nullptr, *dv = nullptr, *dkr = nullptr;
  const T* delta = nullptr;  // [B, H, Lq]: rowsum(dO * O)
};

template <class T>
void relative_attention_backward(const RelativeAttentionArgs<T>& a, AttnRows<const T> dout, const T* lse,
                                 const RelativeAttentionGrads<T>& g);

}  // namespace txtcls::cuda
