#pragma once
// Host-side face of the CUDA embedding and pooling kernels (kernels/embedding.cu,
// kernels/pooling.cu). Compiles without nvcc. Index arrays (ids, lengths, segment tables) are
// device pointers; the ops check and sort them on the host, where the batch comes from.
#include <cstdint>

namespace txtcls::cuda {

// out[i, :] = w[ids[i], :] for i < n; w is [V, D] contiguous.
template <class T>
void embedding_forward(const T* w, const int64_t* ids, T* out, int64_t n, int64_t D);

// gw[V, D] (every row written): row v = sum of g[pos, :] over the positions of v's segment, in
// position order; rows with no segment are zero. order: positions sorted by id (stable);
// seg_start[s] .. seg_start[s + 1]: segment s, whose id is seg_id[s].
template <class T>
void embedding_backward(const T* g, const int64_t* order, const int64_t* seg_start, const int64_t* seg_id,
                        int64_t segments, T* gw, int64_t V, int64_t D);

// x [B, T, D] with strides (sb, st, sd); out/arg [B, D]; the max over t < len[b] (first max, NaN wins).
template <class T>
void max_pool_time(const T* x, int64_t B, int64_t D, int64_t sb, int64_t st, int64_t sd, const int64_t* len, T* out,
                   int64_t* arg);
// gx [B, T, D] contiguous, every element written: g[b, d] at t = arg[b, d], else 0.
template <class T>
void max_pool_time_backward(const T* g, const int64_t* arg, T* gx, int64_t B, int64_t Tn, int64_t D);

// out [B, D] = mean over t < len[b].
template <class T>
void mean_pool_time(const T* x, int64_t B, int64_t D, int64_t sb, int64_t st, int64_t sd, const int64_t* len, T* out);
// gx [B, T, D] contiguous: g[b, d] / len[b] for t < len[b], else 0.
template <class T>
void mean_pool_time_backward(const T* g, const int64_t* len, T* gx, int64_t B, int64_t Tn, int64_t D);

}  // namespace txtcls::cuda
