#pragma once
// Device helpers shared by the attention kernels (attention.cu on FMA units, attention_mma.cu on
// tensor cores): the score of one element with its terms and hidden keys, the dropout factor,
// the recomputed probability and score gradient. All take the problem as AttentionArgs<T>, whose
// terms (bias, mask) are of type T (float for the tensor-core kernels).
#include <cstdint>

#include "txtcls/cuda/attention.hpp"
#include "txtcls/ops/dropout_mask.hpp"

namespace txtcls::cuda::attn {

template <class T> __device__ __forceinline__ T neg_inf() { return -INFINITY; }
__device__ __forceinline__ int64_t lmin(int64_t x, int64_t y) { return x < y ? x : y; }
__device__ __forceinline__ int64_t lmax(int64_t x, int64_t y) { return x > y ? x : y; }

// exp, exactly 0 below the smallest normal result (as the CPU kernels: hidden keys give exact
// zeros and no denormal reaches the products).
template <class T> __device__ __forceinline__ T exp_or_zero(T a);
template <> __device__ __forceinline__ float exp_or_zero(float a) { return a < -87.33654475f ? 0.0f : expf(a); }
template <> __device__ __forceinline__ double exp_or_zero(double a) { return a < -708.3964185322641 ? 0.0 : exp(a); }

template <class T>
__device__ __forceinline__ int64_t key_len(const AttentionArgs<T>& a, int64_t b) {
  return a.key_lengths ? a.key_lengths[b] : a.Lk;
}

// The end of the keys that query rows [i0, i0 + rows) can see: the key length, cut at the causal
// diagonal of the last row.
template <class T>
__device__ __forceinline__ int64_t visible_keys(const AttentionArgs<T>& a, int64_t i0, int64_t rows, int64_t klen) {
  return a.causal ? lmin(klen, lmax(0, i0 + rows + a.Lk - a.Lq)) : klen;
}

// The first query that can see key j0 (causal: the diagonal; else 0).
template <class T>
__device__ __forceinline__ int64_t first_seeing_query(const AttentionArgs<T>& a, int64_t j0) {
  return a.causal ? lmin(lmax(j0 - (a.Lk - a.Lq), 0), a.Lq) : 0;
}

// The score of query i, key j from the scaled product `qk`: -inf where a key is hidden
// (padding, past the causal diagonal, a zero of `allowed`), else qk + bias + mask. Rows past Lq
// (the padding of the last block) are hidden too.
template <class T>
__device__ __forceinline__ T score(const AttentionArgs<T>& a, int64_t b, int64_t h, int64_t i, int64_t j,
                                   int64_t klen, T qk) {
  if (i >= a.Lq || j >= klen || (a.causal && j > i + (a.Lk - a.Lq))) return neg_inf<T>();
  if (a.allowed.p && !a.allowed.p[b * a.allowed.sb + h * a.allowed.sh + i * a.allowed.si + j * a.allowed.sj])
    return neg_inf<T>();
  T s = qk;
  if (a.bias.p) s += a.bias.p[b * a.bias.sb + h * a.bias.sh + i * a.bias.si + j * a.bias.sj];
  if (a.mask.p) s += a.mask.p[b * a.mask.sb + h * a.mask.sh + i * a.mask.si + j * a.mask.sj];
  return s;
}

template <class T>
__device__ __forceinline__ T drop_factor(const AttentionArgs<T>& a, int64_t b, int64_t h, int64_t i, int64_t j) {
  const uint64_t idx = static_cast<uint64_t>(((b * a.H + h) * a.Lq + i) * a.Lk + j);
  return dropout_keep(a.seed, a.base, idx, a.dropout_p) ? a.drop_scale : T(0);
}

// P Z and dS of one score element: p = exp(S - lse) (0 for a hidden key or an empty row),
// dS = p (dP z - delta), P Z = p z.
template <class T>
__device__ __forceinline__ void probs_and_grad(const AttentionArgs<T>& a, int64_t b, int64_t h, int64_t i, int64_t j,
                                               T s, T l, T dp, T delta, T& pz, T& ds) {
  T p = l == neg_inf<T>() ? T(0) : exp_or_zero(s - l);
  if (a.dropout_p > 0 && p != T(0)) {
    const T z = drop_factor(a, b, h, i, j);
    ds = p * (dp * z - delta);
    pz = p * z;
  } else {
    ds = p * (dp - delta);
    pz = p;
  }
}

// Zeroes a register tile (accumulators of the FMA kernels).
template <class T, int RM, int RN>
__device__ __forceinline__ void zero(T (&acc)[RM][RN]) {
#pragma unroll
  for (int r = 0; r < RM; ++r)
#pragma unroll
    for (int c = 0; c < RN; ++c) acc[r][c] = T(0);
}

}  // namespace txtcls::cuda::attn
