#pragma once
// Host-side face of the fused attention kernels (kernels/attention.cu). Compiles without nvcc.
// The semantics are those of scaled_dot_product_attention (ops/attention.hpp), which calls these
// for CUDA tensors: the same score terms, hidden keys, empty-row rule and dropout counters, so a
// GPU result equals the CPU one up to rounding (dropout masks bit for bit).
//
// Operands are device pointers with element strides. q, k, v, out and the gradients have a unit
// stride along their last dim; a score term (bias, additive mask, boolean mask) is addressed by
// its strides broadcast to [B, H, Lq, Lk] (0 on broadcast dims).
#include <cstdint>

#include "txtcls/core/error.hpp"

namespace txtcls::cuda {

// Head dims (D of q and k, Dv of v) the kernels take: 1 to 128. Tiles are compiled for 64 and
// 128 columns; a smaller dim runs in the next one with zero-padded columns.
inline constexpr int64_t kAttentionMaxHeadDim = 128;

inline void check_attention_head_dims(int64_t D, int64_t Dv, const char* op) {
  TXTCLS_CHECK(D >= 1 && D <= kAttentionMaxHeadDim && Dv >= 1 && Dv <= kAttentionMaxHeadDim, op,
               ": head dims D = ", D, ", Dv = ", Dv, " are not supported on CUDA (each must be in [1, ",
               kAttentionMaxHeadDim, "])");
}

// A [B, H, L, W] operand with unit stride along W: row (b, h, i) at p + b*sb + h*sh + i*si.
template <class U>
struct AttnRows {
  U* p = nullptr;
  int64_t sb = 0, sh = 0, si = 0;
};

// A term broadcast to the scores [B, H, Lq, Lk]: element (b, h, i, j) at p[b*sb + h*sh + i*si + j*sj].
template <class U>
struct AttnTerm {
  const U* p = nullptr;  // null: absent
  int64_t sb = 0, sh = 0, si = 0, sj = 0;
};

template <class T>
struct AttentionArgs {
  int64_t B = 0, H = 0, Lq = 0, Lk = 0, D = 0, Dv = 0;
  AttnRows<const T> q, k, v;
  T scale = 1;
  const int64_t* key_lengths = nullptr;  // device [B], values in [0, Lk]; null: all Lk
  bool causal = false;                   // query i sees keys j <= i + (Lk - Lq)
  AttnTerm<T> bias, mask;
  AttnTerm<uint8_t> allowed;
  double dropout_p = 0;  // keep (b, h, i, j) iff dropout_keep(seed, base, ((b*H + h)*Lq + i)*Lk + j, p)
  uint64_t seed = 0, base = 0;
  T drop_scale = 1;  // 1 / (1 - p)
};

// out: contiguous [B, H, Lq, Dv]; lse: contiguous [B, H, Lq] (-inf for an empty row).
template <class T>
void attention_forward(const AttentionArgs<T>& a, T* out, T* lse);

template <class T>
struct AttentionGrads {
  T* dq = nullptr;  // contiguous [B, H, Lq, D]
  T* dk = nullptr;  // contiguous [B, H, Lk, D]
  T* dv = nullptr;  // contiguous [B, H, Lk, Dv]
  // Optional: the per-head bias gradient, contiguous [B, H, Lq, Lk] (per_query) or [B, H, 1, Lk]
  // (the bias is broadcast over queries: each head's column sums). Must be zero on entry; the
  // caller sums it over the bias's broadcast dims.
  T* dbias = nullptr;
  bool dbias_per_query = true;
  T* delta = nullptr;  // workspace [B, H, Lq]
};

// Gradients from the forward's output `out` (contiguous), its gradient `dout` and `lse`.
template <class T>
void attention_backward(const AttentionArgs<T>& a, const T* out, AttnRows<const T> dout, const T* lse,
                        const AttentionGrads<T>& g);

// ---------------------------------------------------------------- 16-bit operands
// bfloat16 or IEEE float16 q, k, v (and out, dout, the gradients) on tensor cores (compute
// capability 8.0 or later), fp32 accumulation and softmax statistics. The Tensor class has no
// 16-bit element type yet: these take raw device pointers to the 16-bit values. Score terms
// (bias, mask), lse, delta and the bias gradient are fp32. Head dims as above.
enum class AttnHalf { F16, BF16 };

struct AttentionHalfArgs {
  AttentionArgs<float> opts;  // dims, scale, lengths, causal, terms, dropout; its q, k, v are unused
  AttnHalf dtype = AttnHalf::BF16;
  AttnRows<const void> q, k, v;  // 16-bit elements; strides in elements
};

// out: contiguous [B, H, Lq, Dv] of dtype; lse: [B, H, Lq] fp32.
void attention_forward_half(const AttentionHalfArgs& a, void* out, float* lse);

struct AttentionHalfGrads {
  void *dq = nullptr, *dk = nullptr, *dv = nullptr;  // contiguous, dtype
  float* dbias = nullptr;                            // as AttentionGrads::dbias
  bool dbias_per_query = true;
  float* delta = nullptr;                            // workspace [B, H, Lq]
};

void attention_backward_half(const AttentionHalfArgs& a, const void* out, AttnRows<const void> dout, const float* lse,
                             const AttentionHalfGrads& g);

// The tensor-core design that 16-bit attention and float attention under TF32
// (set_allow_tf32(true)) run. Registers (the default): FlashAttention-2's organisation on
// mma.sync, accumulators, softmax and probabilities in registers, operand tiles streamed through
// double-buffered shared memory (kernels/attention_fa2.cu). SharedTiles: the first design, wmma
// 16 x 16 tiles with scores and accumulators staged through shared memory
// (kernels/attention_mma.cu), kept to cross-check and compare against. Both follow the same
// contract; the setting is process-wide.
enum class AttnMmaKernel { Registers, SharedTiles };
void set_attention_mma_kernel(AttnMmaKernel k);
AttnMmaKernel attention_mma_kernel();

// Whether the tensor-core paths above (and TF32) run here: a device of compute capability 8.0 or
// later, and kernels compiled for one (TXTCLS_CUDA_ARCHITECTURES 80 or more).
bool attention_has_tensor_cores();

}  // namespace txtcls::cuda
