// Fused scaled-dot-product attention (FlashAttention-2's algorithm), float and double, on FMA
// units: the contract of ops/attention.hpp, tiles of kernels/attention_tiles.cuh.
//
//   forward   a block per (head, query block): Q stays in shared memory, key blocks stream
//             past it; S = (scale Q) K^T and the score terms in registers, the online softmax
//             step per row (running max m and sum l), O = O * alpha + (P Z) V in registers;
//             finally out = O / l and lse = m + log l (0 and -inf for an empty row).
//   delta     a warp per query row: rowsum(dO * O).
//   dK, dV    a block per (head, key block), looping over the query blocks that see it: P and dS
//             recomputed from lse, dV += (P Z)^T dO, dK += dS^T (scale Q); the bias gradient of
//             the tile is written to a per-head buffer (or summed down its columns, in order).
//   dQ        a block per (head, query block), looping over its key blocks: P and dS recomputed
//             once more, dQ += dS K. A second pass instead of atomic adds into dQ from the dK/dV
//             blocks: every output element is written by one thread in a fixed order, so results
//             are the same bit for bit on every run.
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "attention_common.cuh"
#include "attention_mma.cuh"
#include "attention_tiles.cuh"
#include "launch.cuh"
#include "txtcls/cuda/attention.hpp"
#include "txtcls/cuda/blas.hpp"

namespace txtcls::cuda {
namespace {

using namespace attn;

// Copies `rows` rows of width w (from row `r0` of head (b, h)) into a shared tile of NR rows of
// DMAX + 1, times `mul`; rows past `valid` and columns past w are zero, so products over the
// padded tile add nothing and never read a NaN.
template <class T, int NR, int DMAX>
__device__ __forceinline__ void load_rows(T* dst, AttnRows<const T> src, int64_t b, int64_t h, int64_t r0,
                                          int64_t valid, int64_t w, T mul) {
  constexpr int DP = DMAX + 1;
  const T* base = src.p + b * src.sb + h * src.sh;
  for (int e = threadIdx.x; e < NR * DMAX; e += kThreads) {
    const int r = e / DMAX, c = e % DMAX;
    dst[r * DP + c] = (r < valid && c < w) ? base[(r0 + r) * src.si + c] * mul : T(0);
  }
}

// Per-row values (lse, delta) of `rows` query rows from r0; -inf / 0 past `valid`.
template <class T, int NR>
__device__ __forceinline__ void load_row_stats(T* lse_s, T* delta_s, const T* lse, const T* delta, int64_t off,
                                               int64_t valid) {
  for (int r = threadIdx.x; r < NR; r += kThreads) {
    lse_s[r] = r < valid ? lse[off + r] : neg_inf<T>();
    delta_s[r] = r < valid ? delta[off + r] : T(0);
  }
}

// acc[r][c] += sum over k < K of A(m, k) B(k, n), m = ty + 8 r, n = tx + 16 c, where A(m, k) is at
// A[m * am + k * ak] and B(k, n) at B[k * bk + n * bn] (shared memory).
template <class T, int RM, int RN>
__device__ __forceinline__ void tile_mma(T (&acc)[RM][RN], const T* A, int am, int ak, const T* B, int bk, int bn,
                                         int K) {
  const int ty = threadIdx.x / kTX, tx = threadIdx.x % kTX;
  for (int k = 0; k < K; ++k) {
    T x[RM], y[RN];
#pragma unroll
    for (int r = 0; r < RM; ++r) x[r] = A[(ty + kTY * r) * am + k * ak];
#pragma unroll
    for (int c = 0; c < RN; ++c) y[c] = B[k * bk + (tx + kTX * c) * bn];
#pragma unroll
    for (int r = 0; r < RM; ++r)
#pragma unroll
      for (int c = 0; c < RN; ++c) acc[r][c] = fma(x[r], y[c], acc[r][c]);
  }
}

// Writes a register tile [M, DMAX] to rows r0.. of a contiguous [B, H, L, w] tensor, times mul:
// rows below `valid`, columns below w.
template <class T, int RM, int RN>
__device__ __forceinline__ void store_rows(const T (&acc)[RM][RN], T* dst, int64_t valid, int64_t w, T mul) {
  const int ty = threadIdx.x / kTX, tx = threadIdx.x % kTX;
#pragma unroll
  for (int r = 0; r < RM; ++r) {
    const int row = ty + kTY * r;
    if (row >= valid) continue;
#pragma unroll
    for (int c = 0; c < RN; ++c) {
      const int col = tx + kTX * c;
      if (col < w) dst[row * w + col] = acc[r][c] * mul;
    }
  }
}

// ---------------------------------------------------------------- forward
template <class T, int DMAX>
__global__ void __launch_bounds__(kThreads) attention_forward_kernel(const AttentionArgs<T> a, T* __restrict__ out,
                                                                     T* __restrict__ lse) {
  using Tl = FwdTile<T, DMAX>;
  constexpr int BQ = Tl::BQ, BK = Tl::BK, DP = Tl::DP, SP = Tl::SP, TPR = Tl::kRowThreads;
  extern __shared__ unsigned char smem_raw[];
  T* sm = reinterpret_cast<T*>(smem_raw);
  T *qs = sm + Tl::kQ, *ks = sm + Tl::kK, *vs = sm + Tl::kV, *ss = sm + Tl::kS;
  T *ms = sm + Tl::kM, *ls = sm + Tl::kL, *alphas = sm + Tl::kAlpha;

  const int64_t head = blockIdx.x, b = head / a.H, h = head % a.H, i0 = int64_t(blockIdx.y) * BQ;
  const int64_t rows = lmin(BQ, a.Lq - i0), klen = key_len(a, b);
  const int64_t kend = visible_keys(a, i0, rows, klen);  // keys some row of the block can see
  const int ty = threadIdx.x / kTX, tx = threadIdx.x % kTX;

  load_rows<T, BQ, DMAX>(qs, a.q, b, h, i0, rows, a.D, a.scale);
  for (int r = threadIdx.x; r < BQ; r += kThreads) ms[r] = neg_inf<T>(), ls[r] = T(0);
  T o[BQ / kTY][DMAX / kTX];
  zero(o);

  for (int64_t j0 = 0; j0 < kend; j0 += BK) {
    __syncthreads();  // the previous block's K, V, P are consumed
    load_rows<T, BK, DMAX>(ks, a.k, b, h, j0, lmin(BK, klen - j0), a.D, T(1));
    load_rows<T, BK, DMAX>(vs, a.v, b, h, j0, lmin(BK, klen - j0), a.Dv, T(1));
    __syncthreads();
    T s[BQ / kTY][BK / kTX];
    zero(s);
    tile_mma(s, qs, DP, 1, ks, 1, DP, static_cast<int>(a.D));
#pragma unroll
    for (int r = 0; r < BQ / kTY; ++r)
#pragma unroll
      for (int c = 0; c < BK / kTX; ++c) {
        const int row = ty + kTY * r, col = tx + kTX * c;
        ss[row * SP + col] = score(a, b, h, i0 + row, j0 + col, klen, s[r][c]);
      }
    __syncthreads();
    {  // online softmax: TPR neighbouring threads (one warp) share a row
      const int row = threadIdx.x / TPR, part = threadIdx.x % TPR;
      T* sr = ss + row * SP;
      const T m_old = ms[row];
      T mx = m_old;
      for (int j = part; j < BK; j += TPR) mx = max(mx, sr[j]);
#pragma unroll
      for (int off = TPR / 2; off > 0; off >>= 1) mx = max(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      const T alpha = mx == m_old ? T(1) : exp(m_old - mx);  // m_old = -inf, mx finite: 0
      const T mu = mx == neg_inf<T>() ? T(0) : mx;
      T sum = 0;
      for (int j = part; j < BK; j += TPR) {
        const T p = exp_or_zero(sr[j] - mu);
        sum += p;
        // The row sum takes the probabilities before dropout, as softmax then dropout does.
        sr[j] = a.dropout_p > 0 ? p * drop_factor(a, b, h, i0 + row, j0 + j) : p;
      }
#pragma unroll
      for (int off = TPR / 2; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
      __syncwarp();
      if (part == 0) {
        ms[row] = mx;
        ls[row] = ls[row] * alpha + sum;
        alphas[row] = alpha;
      }
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < BQ / kTY; ++r) {
      const T al = alphas[ty + kTY * r];
#pragma unroll
      for (int c = 0; c < DMAX / kTX; ++c) o[r][c] *= al;
    }
    tile_mma(o, ss, SP, 1, vs, DP, 1, BK);
  }
  __syncthreads();  // m, l of the last step
  const int64_t head_row = head * a.Lq + i0;
#pragma unroll
  for (int r = 0; r < BQ / kTY; ++r) {
    const int row = ty + kTY * r;
    if (row >= rows) continue;
    const T l = ls[row], inv = l > T(0) ? T(1) / l : T(0);  // l == 0: every key hidden, an empty row
    T* dst = out + (head_row + row) * a.Dv;
#pragma unroll
    for (int c = 0; c < DMAX / kTX; ++c) {
      const int col = tx + kTX * c;
      if (col < a.Dv) dst[col] = o[r][c] * inv;
    }
  }
  for (int r = threadIdx.x; r < rows; r += kThreads)
    lse[head_row + r] = ls[r] > T(0) ? ms[r] + log(ls[r]) : neg_inf<T>();
}

// ---------------------------------------------------------------- backward
// delta[row] = sum_d dO[row, d] * O[row, d]: a warp per row.
template <class T>
__global__ void attention_delta_kernel(const T* __restrict__ o, AttnRows<const T> go, T* __restrict__ delta, int64_t H,
                                       int64_t Lq, int64_t Dv, int64_t n) {
  const int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= n) return;  // whole warps leave together: n rows, 32 lanes each
  const int64_t b = row / (H * Lq), h = (row / Lq) % H, i = row % Lq;
  const T* g = go.p + b * go.sb + h * go.sh + i * go.si;
  const T* x = o + row * Dv;
  T acc = 0;
  for (int64_t d = lane; d < Dv; d += 32) acc = fma(g[d], x[d], acc);
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (lane == 0) delta[row] = acc;
}

template <class T, int DMAX>
__global__ void __launch_bounds__(kThreads) attention_dkdv_kernel(const AttentionArgs<T> a,
                                                                  AttnRows<const T> go, const T* __restrict__ lse,
                                                                  const T* __restrict__ delta, AttentionGrads<T> g) {
  using Tl = KvTile<T, DMAX>;
  constexpr int BQ = Tl::BQ, BK = Tl::BK, DP = Tl::DP, SP = Tl::SP, RQ = BQ / kTY, RK = BK / kTX;
  extern __shared__ unsigned char smem_raw[];
  T* sm = reinterpret_cast<T*>(smem_raw);
  T *ks = sm + Tl::kK, *vs = sm + Tl::kV, *qs = sm + Tl::kQ, *dos = sm + Tl::kDo, *ps = sm + Tl::kP,
    *dss = sm + Tl::kDs, *lses = sm + Tl::kLse, *deltas = sm + Tl::kDelta, *colsum = sm + Tl::kColSum;

  const int64_t head = blockIdx.x, b = head / a.H, h = head % a.H, j0 = int64_t(blockIdx.y) * BK;
  const int64_t cols = lmin(BK, a.Lk - j0), klen = key_len(a, b);
  const int ty = threadIdx.x / kTX, tx = threadIdx.x % kTX;
  T dk[BK / kTY][DMAX / kTX], dv[BK / kTY][DMAX / kTX];
  zero(dk);
  zero(dv);
  T bsum[RK];  // this thread's share of the dS column sums (bias broadcast over queries)
#pragma unroll
  for (int c = 0; c < RK; ++c) bsum[c] = T(0);

  if (j0 < klen) {
    load_rows<T, BK, DMAX>(ks, a.k, b, h, j0, lmin(BK, klen - j0), a.D, T(1));
    load_rows<T, BK, DMAX>(vs, a.v, b, h, j0, lmin(BK, klen - j0), a.Dv, T(1));
    // Under causal, queries before j0 - (Lk - Lq) see none of these keys.
    const int64_t first = first_seeing_query(a, j0);
    for (int64_t i0 = first / BQ * BQ; i0 < a.Lq; i0 += BQ) {
      const int64_t rows = lmin(BQ, a.Lq - i0);
      __syncthreads();  // the previous query block's tiles are consumed
      load_rows<T, BQ, DMAX>(qs, a.q, b, h, i0, rows, a.D, a.scale);
      load_rows<T, BQ, DMAX>(dos, go, b, h, i0, rows, a.Dv, T(1));
      load_row_stats<T, BQ>(lses, deltas, lse, delta, head * a.Lq + i0, rows);
      __syncthreads();
      T s[RQ][RK], dp[RQ][RK];
      zero(s);
      zero(dp);
      tile_mma(s, qs, DP, 1, ks, 1, DP, static_cast<int>(a.D));
      tile_mma(dp, dos, DP, 1, vs, 1, DP, static_cast<int>(a.Dv));
#pragma unroll
      for (int r = 0; r < RQ; ++r)
#pragma unroll
        for (int c = 0; c < RK; ++c) {
          const int row = ty + kTY * r, col = tx + kTX * c;
          const int64_t i = i0 + row, j = j0 + col;
          T pz, ds;
          probs_and_grad(a, b, h, i, j, score(a, b, h, i, j, klen, s[r][c]), lses[row], dp[r][c], deltas[row], pz,
                         ds);
          ps[row * SP + col] = pz;
          dss[row * SP + col] = ds;
          if (g.dbias) {
            if (g.dbias_per_query) {
              if (i < a.Lq && j < a.Lk) g.dbias[(head * a.Lq + i) * a.Lk + j] = ds;
            } else {
              bsum[c] += ds;
            }
          }
        }
      __syncthreads();
      tile_mma(dv, ps, 1, SP, dos, DP, 1, BQ);
      tile_mma(dk, dss, 1, SP, qs, DP, 1, BQ);
    }
  }
  T* dkp = g.dk + (head * a.Lk + j0) * a.D;
  T* dvp = g.dv + (head * a.Lk + j0) * a.Dv;
  store_rows(dk, dkp, cols, a.D, T(1));
  store_rows(dv, dvp, cols, a.Dv, T(1));
  if (g.dbias && !g.dbias_per_query) {
    // Column sums: each thread summed rows ty, ty + 8, ... of every query block; the 8 partial
    // sums of a column are added in a fixed order.
    __syncthreads();
#pragma unroll
    for (int c = 0; c < RK; ++c) colsum[ty * BK + tx + kTX * c] = bsum[c];
    __syncthreads();
    for (int col = threadIdx.x; col < cols; col += kThreads) {
      T t = 0;
      for (int y = 0; y < kTY; ++y) t += colsum[y * BK + col];
      g.dbias[head * a.Lk + j0 + col] = t;
    }
  }
}

template <class T, int DMAX>
__global__ void __launch_bounds__(kThreads) attention_dq_kernel(const AttentionArgs<T> a, AttnRows<const T> go,
                                                                const T* __restrict__ lse,
                                                                const T* __restrict__ delta, T* __restrict__ dq) {
  using Tl = DqTile<T, DMAX>;
  constexpr int BQ = Tl::BQ, BK = Tl::BK, DP = Tl::DP, SP = Tl::SP, RQ = BQ / kTY, RK = BK / kTX;
  extern __shared__ unsigned char smem_raw[];
  T* sm = reinterpret_cast<T*>(smem_raw);
  T *qs = sm + Tl::kQ, *dos = sm + Tl::kDo, *ks = sm + Tl::kK, *vs = sm + Tl::kV, *dss = sm + Tl::kDs,
    *lses = sm + Tl::kLse, *deltas = sm + Tl::kDelta;

  const int64_t head = blockIdx.x, b = head / a.H, h = head % a.H, i0 = int64_t(blockIdx.y) * BQ;
  const int64_t rows = lmin(BQ, a.Lq - i0), klen = key_len(a, b);
  const int64_t kend = visible_keys(a, i0, rows, klen);
  const int ty = threadIdx.x / kTX, tx = threadIdx.x % kTX;

  load_rows<T, BQ, DMAX>(qs, a.q, b, h, i0, rows, a.D, a.scale);
  load_rows<T, BQ, DMAX>(dos, go, b, h, i0, rows, a.Dv, T(1));
  load_row_stats<T, BQ>(lses, deltas, lse, delta, head * a.Lq + i0, rows);
  T acc[RQ][DMAX / kTX];
  zero(acc);
  for (int64_t j0 = 0; j0 < kend; j0 += BK) {
    __syncthreads();  // the previous key block's tiles are consumed (and, first, Q, dO are loaded)
    load_rows<T, BK, DMAX>(ks, a.k, b, h, j0, lmin(BK, klen - j0), a.D, T(1));
    load_rows<T, BK, DMAX>(vs, a.v, b, h, j0, lmin(BK, klen - j0), a.Dv, T(1));
    __syncthreads();
    T s[RQ][RK], dp[RQ][RK];
    zero(s);
    zero(dp);
    tile_mma(s, qs, DP, 1, ks, 1, DP, static_cast<int>(a.D));
    tile_mma(dp, dos, DP, 1, vs, 1, DP, static_cast<int>(a.Dv));
#pragma unroll
    for (int r = 0; r < RQ; ++r)
#pragma unroll
      for (int c = 0; c < RK; ++c) {
        const int row = ty + kTY * r, col = tx + kTX * c;
        const int64_t i = i0 + row, j = j0 + col;
        T pz, ds;
        probs_and_grad(a, b, h, i, j, score(a, b, h, i, j, klen, s[r][c]), lses[row], dp[r][c], deltas[row], pz, ds);
        dss[row * SP + col] = ds;
      }
    __syncthreads();
    tile_mma(acc, dss, SP, 1, ks, DP, 1, BK);
  }
  store_rows(acc, dq + (head * a.Lq + i0) * a.D, rows, a.D, a.scale);
}

// ---------------------------------------------------------------- launches
// Grids: x over heads (up to 2^31 - 1), y over the blocks of one head (up to 65535).
dim3 grid_of(int64_t heads, int64_t len, int block, const char* what) {
  const int64_t blocks = (len + block - 1) / block;
  TXTCLS_CHECK(heads < (int64_t(1) << 31) && blocks <= 65535, "scaled_dot_product_attention: ", heads,
               " heads and ", blocks, " ", what, " blocks are more than one launch takes");
  return dim3(static_cast<unsigned>(heads), static_cast<unsigned>(blocks));
}

template <class T, int DMAX>
void forward_dmax(const AttentionArgs<T>& a, T* out, T* lse) {
  using Tl = FwdTile<T, DMAX>;
  auto kernel = attention_forward_kernel<T, DMAX>;
  allow_dynamic_smem(kernel, Tl::kSmem);
  kernel<<<grid_of(a.B * a.H, a.Lq, Tl::BQ, "query"), kThreads, Tl::kSmem, active_stream()>>>(a, out, lse);
  TXTCLS_KERNEL_CHECK("attention_forward");
}

template <class T, int DMAX>
void backward_dmax(const AttentionArgs<T>& a, AttnRows<const T> go, const T* lse, const AttentionGrads<T>& g) {
  cudaStream_t stream = active_stream();
  if (a.Lk > 0) {
    using Tl = KvTile<T, DMAX>;
    auto kernel = attention_dkdv_kernel<T, DMAX>;
    allow_dynamic_smem(kernel, Tl::kSmem);
    kernel<<<grid_of(a.B * a.H, a.Lk, Tl::BK, "key"), kThreads, Tl::kSmem, stream>>>(a, go, lse, g.delta, g);
    TXTCLS_KERNEL_CHECK("attention_dkdv");
  }
  if (a.Lq > 0) {
    using Tl = DqTile<T, DMAX>;
    auto kernel = attention_dq_kernel<T, DMAX>;
    allow_dynamic_smem(kernel, Tl::kSmem);
    kernel<<<grid_of(a.B * a.H, a.Lq, Tl::BQ, "query"), kThreads, Tl::kSmem, stream>>>(a, go, lse, g.delta, g.dq);
    TXTCLS_KERNEL_CHECK("attention_dq");
  }
}

// float under set_allow_tf32(true) runs on tensor cores (attention_fa2.cu, or attention_mma.cu
// when set_attention_mma_kernel chose it) where the device has them; otherwise, and for double, on
// FMA units.
template <class T>
bool use_tf32() {
  if constexpr (std::is_same_v<T, float>) return allow_tf32() && attention_has_tensor_cores();
  return false;
}

}  // namespace

bool attention_has_tensor_cores() {
  int device = 0, major = 0;
  TXTCLS_CUDA_CHECK(cudaGetDevice(&device));
  TXTCLS_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  return major >= 8 && attn::mma_compiled();
}

template <class T>
void attention_forward(const AttentionArgs<T>& a, T* out, T* lse) {
  check_attention_head_dims(a.D, a.Dv, "scaled_dot_product_attention");
  if (a.B * a.H * a.Lq == 0) return;
  if constexpr (std::is_same_v<T, float>) {
    if (use_tf32<T>()) return attn::chosen_forward<float>()(a, a.q, a.k, a.v, out, lse);
  }
  if (a.D <= 64 && a.Dv <= 64) forward_dmax<T, 64>(a, out, lse);
  else forward_dmax<T, 128>(a, out, lse);
}

template <class T>
void attention_backward(const AttentionArgs<T>& a, const T* out, AttnRows<const T> dout, const T* lse,
                        const AttentionGrads<T>& g) {
  check_attention_head_dims(a.D, a.Dv, "scaled_dot_product_attention");
  if constexpr (std::is_same_v<T, float>) {
    if (use_tf32<T>())
      return attn::chosen_backward<float>()(a, a.q, a.k, a.v, out, dout, lse, g.dq, g.dk, g.dv, g.dbias,
                                            g.dbias_per_query, g.delta);
  }
  const int64_t rows = a.B * a.H * a.Lq;
  if (a.B * a.H == 0) return;
  if (rows > 0) {
    const int64_t blocks = (rows * 32 + kBlock - 1) / kBlock;  // a warp per row
    TXTCLS_CHECK(blocks < (int64_t(1) << 31), "scaled_dot_product_attention: ", rows,
                 " query rows are more than one launch takes");
    attention_delta_kernel<T><<<static_cast<unsigned>(blocks), kBlock, 0, active_stream()>>>(out, dout, g.delta, a.H,
                                                                                            a.Lq, a.Dv, rows);
    TXTCLS_KERNEL_CHECK("attention_delta");
  }
  if (a.D <= 64 && a.Dv <= 64) backward_dmax<T, 64>(a, dout, lse, g);
  else backward_dmax<T, 128>(a, dout, lse, g);
}

template void attention_forward<float>(const AttentionArgs<float>&, float*, float*);
template void attention_forward<double>(const AttentionArgs<double>&, double*, double*);
template void attention_backward<float>(const AttentionArgs<float>&, const float*, AttnRows<const float>, const float*,
                                        const AttentionGrads<float>&);
template void attention_backward<double>(const AttentionArgs<double>&, const double*, AttnRows<const double>,
                                         const double*, const AttentionGrads<double>&);

}  // namespace txtcls::cuda
