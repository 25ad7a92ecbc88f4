// Fused attention on tensor cores (wmma 16 x 16 tiles, fp32 accumulation, fp32 softmax
// statistics): bfloat16 and float16 operands through the raw API of txtcls/cuda/attention.hpp,
// and float in TF32 when cuda::set_allow_tf32(true) is on. Same algorithm and contract as
// attention.cu (forward with online softmax; delta; dK/dV over key blocks; dQ over query blocks,
// no atomics); tiles of attention_tiles.cuh (MmaTile): a warp owns 16 rows of every tile, so after
// the block loads the streamed operand, the products, the softmax and the gradients of a warp's
// rows need only warp barriers. Scores are scaled in fp32 (Q is not rounded after scaling);
// P and dS are rounded to E for the products that take them.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <atomic>
#include <cmath>
#include <cstdint>

#include "attention_common.cuh"
#include "attention_mma.cuh"
#include "attention_tiles.cuh"
#include "launch.cuh"

// bfloat16 and TF32 tensor-core tiles need compute capability 8.0: the device code of other
// targets keeps the kernels' names with a trap for a body, and the host does not launch them
// there (attention_has_tensor_cores, mma_compiled).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define TXTCLS_ATTENTION_MMA 0
#else
#define TXTCLS_ATTENTION_MMA 1
#endif

namespace txtcls::cuda::attn {
namespace {

namespace wmma = nvcuda::wmma;

template <class E> __device__ __forceinline__ float to_f(E x);
template <> __device__ __forceinline__ float to_f(float x) { return x; }
template <> __device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
template <> __device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

#if TXTCLS_ATTENTION_MMA

template <class E> __device__ __forceinline__ E from_f(float x);
template <> __device__ __forceinline__ float from_f(float x) { return x; }
template <> __device__ __forceinline__ __half from_f(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f(float x) { return __float2bfloat16_rn(x); }

template <class E> struct FragType { using type = E; };
template <> struct FragType<float> { using type = wmma::precision::tf32; };

template <class E, int KS>
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, KS, typename FragType<E>::type, wmma::row_major>;
template <class E, int KS>
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, KS, typename FragType<E>::type, wmma::row_major>;
template <class E, int KS>
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, KS, typename FragType<E>::type, wmma::col_major>;
template <int KS> using FragC = wmma::fragment<wmma::accumulator, 16, 16, KS, float>;

// Loads an operand fragment; float operands are rounded to TF32 as the mma requires.
template <class Frag, class E>
__device__ __forceinline__ void load(Frag& f, const E* p, int ldm) {
  wmma::load_matrix_sync(f, p, ldm);
  if constexpr (sizeof(E) == 4)
#pragma unroll
    for (int t = 0; t < f.num_elements; ++t) f.x[t] = wmma::__float_to_tf32(f.x[t]);
}

// c += A B over `steps` K steps: A (16 x K, row-major at a, row stride lda), B (K x 16) row-major
// at b (row stride ldb) or, with `b_col`, the transpose of a row-major 16 x K block (B(k, n) at
// b[n * ldb + k]).
template <class E, int KS, bool kBCol>
__device__ __forceinline__ void mma_steps(FragC<KS>& c, const E* a, int lda, const E* b, int ldb, int steps) {
  for (int kk = 0; kk < steps; ++kk) {
    FragA<E, KS> fa;
    load(fa, a + kk * KS, lda);
    if constexpr (kBCol) {
      FragBCol<E, KS> fb;
      load(fb, b + kk * KS, ldb);
      wmma::mma_sync(c, fa, fb, c);
    } else {
      FragBRow<E, KS> fb;
      load(fb, b + kk * KS * ldb, ldb);
      wmma::mma_sync(c, fa, fb, c);
    }
  }
}

// Copies rows [r0, r0 + valid) of width w of head (b, h) into NR shared rows of stride ld (E);
// the rest of the NR x DMAX tile is zero (padded rows and columns add nothing to a product).
template <class E, int NR, int DMAX>
__device__ __forceinline__ void load_rows(E* dst, int ld, AttnRows<const E> src, int64_t b, int64_t h, int64_t r0,
                                          int64_t valid, int64_t w) {
  const E* base = src.p + b * src.sb + h * src.sh;
  for (int e = threadIdx.x; e < NR * DMAX; e += kMmaThreads) {
    const int r = e / DMAX, c = e % DMAX;
    dst[r * ld + c] = (r < valid && c < w) ? base[(r0 + r) * src.si + c] : from_f<E>(0.0f);
  }
}

template <int NR>
__device__ __forceinline__ void load_row_stats(float* lse_s, float* delta_s, const float* lse, const float* delta,
                                               int64_t off, int64_t valid) {
  for (int r = threadIdx.x; r < NR; r += kMmaThreads) {
    lse_s[r] = r < valid ? lse[off + r] : neg_inf<float>();
    delta_s[r] = r < valid ? delta[off + r] : 0.0f;
  }
}

// Writes accumulator tiles (16 rows of the warp, columns [16 nt, 16 nt + 16)) times `mul` to rows
// of a contiguous [rows, w] output: staged through 256 floats of shared memory per warp.
template <class E, int KS, int N>
__device__ __forceinline__ void store_acc(FragC<KS> (&acc)[N], float* stage, E* dst, int64_t valid, int64_t w,
                                          float mul) {
  const int lane = threadIdx.x % 32;
  // Unrolled with compile-time indices: the accumulators stay in registers.
#pragma unroll
  for (int nt = 0; nt < N; ++nt) {
    if (nt * 16 >= w) continue;
    wmma::store_matrix_sync(stage, acc[nt], 16, wmma::mem_row_major);
    __syncwarp();
    for (int e = lane; e < 256; e += 32) {
      const int r = e / 16, c = nt * 16 + e % 16;
      if (r < valid && c < w) dst[r * w + c] = from_f<E>(stage[e] * mul);
    }
    __syncwarp();
  }
}

#endif  // TXTCLS_ATTENTION_MMA

// ---------------------------------------------------------------- forward
template <class E, int DMAX>
__global__ void __launch_bounds__(kMmaThreads) mma_forward_kernel(const AttentionArgs<float> a, AttnRows<const E> gq,
                                                                  AttnRows<const E> gk, AttnRows<const E> gv,
                                                                  E* __restrict__ out, float* __restrict__ lse) {
#if TXTCLS_ATTENTION_MMA
  using Tl = MmaTile<E, DMAX>;
  using L = typename Tl::Fwd;
  constexpr int KS = Tl::KS, BQ = Tl::kWarpRows, BK = Tl::kStream, DP = Tl::DP, OP = Tl::OP, SPF = Tl::SPF,
                SPE = Tl::SPE;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  E* qs = reinterpret_cast<E*>(smem_raw + L::kQ);
  E* ks = reinterpret_cast<E*>(smem_raw + L::kK);
  E* vs = reinterpret_cast<E*>(smem_raw + L::kV);
  float* ss = reinterpret_cast<float*>(smem_raw + L::kS);
  E* ps = reinterpret_cast<E*>(smem_raw + L::kP);
  float* os = reinterpret_cast<float*>(smem_raw + L::kO);
  float *ms = reinterpret_cast<float*>(smem_raw + L::kM), *ls = reinterpret_cast<float*>(smem_raw + L::kL);

  const int64_t head = blockIdx.x, b = head / a.H, h = head % a.H, i0 = int64_t(blockIdx.y) * BQ;
  const int64_t rows = lmin(BQ, a.Lq - i0), klen = key_len(a, b);
  const int64_t kend = visible_keys(a, i0, rows, klen);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, w0 = 16 * warp;
  const int dsteps = static_cast<int>((a.D + KS - 1) / KS), vtiles = static_cast<int>((a.Dv + 15) / 16);

  load_rows<E, BQ, DMAX>(qs, DP, gq, b, h, i0, rows, a.D);
  for (int e = threadIdx.x; e < BQ * OP; e += kMmaThreads) os[e] = 0.0f;
  for (int r = threadIdx.x; r < BQ; r += kMmaThreads) ms[r] = neg_inf<float>(), ls[r] = 0.0f;

  for (int64_t j0 = 0; j0 < kend; j0 += BK) {
    __syncthreads();  // every warp is done with the previous K, V
    load_rows<E, BK, DMAX>(ks, DP, gk, b, h, j0, lmin(BK, klen - j0), a.D);
    load_rows<E, BK, DMAX>(vs, DP, gv, b, h, j0, lmin(BK, klen - j0), a.Dv);
    __syncthreads();
    for (int nt = 0; nt < BK / 16; ++nt) {  // S = Q K^T, this warp's 16 rows
      FragC<KS> c;
      wmma::fill_fragment(c, 0.0f);
      mma_steps<E, KS, true>(c, qs + w0 * DP, DP, ks + nt * 16 * DP, DP, dsteps);
      wmma::store_matrix_sync(ss + w0 * SPF + nt * 16, c, SPF, wmma::mem_row_major);
    }
    __syncwarp();
    {  // online softmax: two lanes per row
      const int row = w0 + lane / 2, part = lane % 2;
      float* sr = ss + row * SPF;
      const float m_old = ms[row];
      float mx = m_old;
      for (int j = part; j < BK; j += 2) {
        sr[j] = score(a, b, h, i0 + row, j0 + j, klen, sr[j] * a.scale);
        mx = fmaxf(mx, sr[j]);
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      const float alpha = mx == m_old ? 1.0f : expf(m_old - mx);
      const float mu = mx == neg_inf<float>() ? 0.0f : mx;
      float sum = 0.0f;
      for (int j = part; j < BK; j += 2) {
        const float p = exp_or_zero(sr[j] - mu);
        sum += p;
        ps[row * SPE + j] = from_f<E>(a.dropout_p > 0 ? p * drop_factor(a, b, h, i0 + row, j0 + j) : p);
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      if (alpha != 1.0f)
        for (int c = part; c < DMAX; c += 2) os[row * OP + c] *= alpha;
      __syncwarp();  // both lanes have read m, l
      if (part == 0) ms[row] = mx, ls[row] = ls[row] * alpha + sum;
    }
    __syncwarp();
    for (int nt = 0; nt < vtiles; ++nt) {  // O += P V
      FragC<KS> c;
      wmma::load_matrix_sync(c, os + w0 * OP + nt * 16, OP, wmma::mem_row_major);
      mma_steps<E, KS, false>(c, ps + w0 * SPE, SPE, vs + nt * 16, DP, BK / KS);
      wmma::store_matrix_sync(os + w0 * OP + nt * 16, c, OP, wmma::mem_row_major);
    }
    __syncwarp();
  }
  __syncthreads();  // with no key block at all, the initialisation above is the last write
  const int64_t head_row = head * a.Lq + i0;
  for (int r = 0; r < 16; ++r) {
    const int row = w0 + r;
    if (row >= rows) break;
    const float l = ls[row], inv = l > 0.0f ? 1.0f / l : 0.0f;  // l == 0: an empty row
    for (int c = lane; c < a.Dv; c += 32) out[(head_row + row) * a.Dv + c] = from_f<E>(os[row * OP + c] * inv);
  }
  if (lane < 16 && w0 + lane < rows)
    lse[head_row + w0 + lane] = ls[w0 + lane] > 0.0f ? ms[w0 + lane] + logf(ls[w0 + lane]) : neg_inf<float>();
#else
  __trap();
#endif
}

// ---------------------------------------------------------------- backward
template <class E>
__global__ void mma_delta_kernel(const E* __restrict__ o, AttnRows<const E> go, float* __restrict__ delta, int64_t H,
                                 int64_t Lq, int64_t Dv, int64_t n) {
  const int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= n) return;  // whole warps leave together
  const int64_t b = row / (H * Lq), h = (row / Lq) % H, i = row % Lq;
  const E* g = go.p + b * go.sb + h * go.sh + i * go.si;
  const E* x = o + row * Dv;
  float acc = 0.0f;
  for (int64_t d = lane; d < Dv; d += 32) acc = fmaf(to_f(g[d]), to_f(x[d]), acc);
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (lane == 0) delta[row] = acc;
}

template <class E, int DMAX>
__global__ void __launch_bounds__(kMmaThreads) mma_dkdv_kernel(const AttentionArgs<float> a, AttnRows<const E> gq,
                                                               AttnRows<const E> gk, AttnRows<const E> gv,
                                                               AttnRows<const E> go, const float* __restrict__ lse,
                                                               const float* __restrict__ delta, E* __restrict__ dk_out,
                                                               E* __restrict__ dv_out, float* __restrict__ dbias,
                                                               bool per_query) {
#if TXTCLS_ATTENTION_MMA
  using Tl = MmaTile<E, DMAX>;
  using L = typename Tl::Kv;
  constexpr int KS = Tl::KS, BK = Tl::kWarpRows, BQ = Tl::kStream, DP = Tl::DP, SPF = Tl::SPF, SPE = Tl::SPE,
                NT = DMAX / 16;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  E* ks = reinterpret_cast<E*>(smem_raw + L::kK);
  E* vs = reinterpret_cast<E*>(smem_raw + L::kV);
  E* qs = reinterpret_cast<E*>(smem_raw + L::kQ);
  E* dos = reinterpret_cast<E*>(smem_raw + L::kDo);
  float* st = reinterpret_cast<float*>(smem_raw + L::kS);
  float* dpt = reinterpret_cast<float*>(smem_raw + L::kDp);
  E* pt = reinterpret_cast<E*>(smem_raw + L::kP);
  E* dst = reinterpret_cast<E*>(smem_raw + L::kDs);
  float *lses = reinterpret_cast<float*>(smem_raw + L::kLse), *deltas = reinterpret_cast<float*>(smem_raw + L::kDelta);

  const int64_t head = blockIdx.x, b = head / a.H, h = head % a.H, j0 = int64_t(blockIdx.y) * BK;
  const int64_t cols = lmin(BK, a.Lk - j0), klen = key_len(a, b);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, w0 = 16 * warp;
  const int dsteps = static_cast<int>((a.D + KS - 1) / KS), vsteps = static_cast<int>((a.Dv + KS - 1) / KS);
  const int dtiles = static_cast<int>((a.D + 15) / 16), vtiles = static_cast<int>((a.Dv + 15) / 16);
  FragC<KS> dk[NT], dv[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) wmma::fill_fragment(dk[t], 0.0f), wmma::fill_fragment(dv[t], 0.0f);
  float bsum = 0.0f;  // this lane's share of its key's dS column sum (bias broadcast over queries)
  const int key = w0 + lane / 2, part = lane % 2;

  if (j0 < klen) {
    load_rows<E, BK, DMAX>(ks, DP, gk, b, h, j0, lmin(BK, klen - j0), a.D);
    load_rows<E, BK, DMAX>(vs, DP, gv, b, h, j0, lmin(BK, klen - j0), a.Dv);
    const int64_t first = first_seeing_query(a, j0);
    for (int64_t i0 = first / BQ * BQ; i0 < a.Lq; i0 += BQ) {
      const int64_t rows = lmin(BQ, a.Lq - i0);
      __syncthreads();  // every warp is done with the previous Q, dO
      load_rows<E, BQ, DMAX>(qs, DP, gq, b, h, i0, rows, a.D);
      load_rows<E, BQ, DMAX>(dos, DP, go, b, h, i0, rows, a.Dv);
      load_row_stats<BQ>(lses, deltas, lse, delta, head * a.Lq + i0, rows);
      __syncthreads();
      for (int nt = 0; nt < BQ / 16; ++nt) {  // S^T = K Q^T and dP^T = V dO^T, this warp's 16 keys
        FragC<KS> c;
        wmma::fill_fragment(c, 0.0f);
        mma_steps<E, KS, true>(c, ks + w0 * DP, DP, qs + nt * 16 * DP, DP, dsteps);
        wmma::store_matrix_sync(st + w0 * SPF + nt * 16, c, SPF, wmma::mem_row_major);
        wmma::fill_fragment(c, 0.0f);
        mma_steps<E, KS, true>(c, vs + w0 * DP, DP, dos + nt * 16 * DP, DP, vsteps);
        wmma::store_matrix_sync(dpt + w0 * SPF + nt * 16, c, SPF, wmma::mem_row_major);
      }
      __syncwarp();
      {
        const int64_t j = j0 + key;
        for (int c = part; c < BQ; c += 2) {
          const int64_t i = i0 + c;
          float pz, ds;
          probs_and_grad(a, b, h, i, j, score(a, b, h, i, j, klen, st[key * SPF + c] * a.scale), lses[c],
                         dpt[key * SPF + c], deltas[c], pz, ds);
          pt[key * SPE + c] = from_f<E>(pz);
          dst[key * SPE + c] = from_f<E>(ds);
          if (dbias) {
            if (!per_query) bsum += ds;
            else if (i < a.Lq && j < a.Lk) dbias[(head * a.Lq + i) * a.Lk + j] = ds;
          }
        }
      }
      __syncwarp();
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {  // compile-time indices: the accumulators stay in registers
        if (nt < vtiles)  // dV += (P Z)^T dO
          mma_steps<E, KS, false>(dv[nt], pt + w0 * SPE, SPE, dos + nt * 16, DP, BQ / KS);
        if (nt < dtiles)  // dK += dS^T Q (scaled at the end)
          mma_steps<E, KS, false>(dk[nt], dst + w0 * SPE, SPE, qs + nt * 16, DP, BQ / KS);
      }
    }
  }
  __syncthreads();  // the score region becomes the staging area
  float* stage = st + warp * 256;
  const int64_t valid = lmax(0, lmin(16, cols - w0));
  store_acc<E>(dk, stage, dk_out + (head * a.Lk + j0 + w0) * a.D, valid, a.D, a.scale);
  store_acc<E>(dv, stage, dv_out + (head * a.Lk + j0 + w0) * a.Dv, valid, a.Dv, 1.0f);
  if (dbias && !per_query) {
    const float total = bsum + __shfl_xor_sync(0xffffffffu, bsum, 1);  // the two halves of the key's queries
    if (part == 0 && key < cols) dbias[head * a.Lk + j0 + key] = total;
  }
#else
  __trap();
#endif
}

template <class E, int DMAX>
__global__ void __launch_bounds__(kMmaThreads) mma_dq_kernel(const AttentionArgs<float> a, AttnRows<const E> gq,
                                                             AttnRows<const E> gk, AttnRows<const E> gv,
                                                             AttnRows<const E> go, const float* __restrict__ lse,
                                                             const float* __restrict__ delta, E* __restrict__ dq_out) {
#if TXTCLS_ATTENTION_MMA
  using Tl = MmaTile<E, DMAX>;
  using L = typename Tl::Dq;
  constexpr int KS = Tl::KS, BQ = Tl::kWarpRows, BK = Tl::kStream, DP = Tl::DP, SPF = Tl::SPF, SPE = Tl::SPE,
                NT = DMAX / 16;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  E* qs = reinterpret_cast<E*>(smem_raw + L::kQ);
  E* dos = reinterpret_cast<E*>(smem_raw + L::kDo);
  E* ks = reinterpret_cast<E*>(smem_raw + L::kK);
  E* vs = reinterpret_cast<E*>(smem_raw + L::kV);
  float* ss = reinterpret_cast<float*>(smem_raw + L::kS);
  float* dps = reinterpret_cast<float*>(smem_raw + L::kDp);
  E* dss = reinterpret_cast<E*>(smem_raw + L::kDs);
  float *lses = reinterpret_cast<float*>(smem_raw + L::kLse), *deltas = reinterpret_cast<float*>(smem_raw + L::kDelta);

  const int64_t head = blockIdx.x, b = head / a.H, h = head % a.H, i0 = int64_t(blockIdx.y) * BQ;
  const int64_t rows = lmin(BQ, a.Lq - i0), klen = key_len(a, b);
  const int64_t kend = visible_keys(a, i0, rows, klen);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, w0 = 16 * warp;
  const int dsteps = static_cast<int>((a.D + KS - 1) / KS), vsteps = static_cast<int>((a.Dv + KS - 1) / KS);
  const int dtiles = static_cast<int>((a.D + 15) / 16);
  FragC<KS> dq[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) wmma::fill_fragment(dq[t], 0.0f);

  load_rows<E, BQ, DMAX>(qs, DP, gq, b, h, i0, rows, a.D);
  load_rows<E, BQ, DMAX>(dos, DP, go, b, h, i0, rows, a.Dv);
  load_row_stats<BQ>(lses, deltas, lse, delta, head * a.Lq + i0, rows);
  for (int64_t j0 = 0; j0 < kend; j0 += BK) {
    __syncthreads();  // every warp is done with the previous K, V (first: Q, dO are loaded)
    load_rows<E, BK, DMAX>(ks, DP, gk, b, h, j0, lmin(BK, klen - j0), a.D);
    load_rows<E, BK, DMAX>(vs, DP, gv, b, h, j0, lmin(BK, klen - j0), a.Dv);
    __syncthreads();
    for (int nt = 0; nt < BK / 16; ++nt) {  // S = Q K^T, dP = dO V^T, this warp's 16 queries
      FragC<KS> c;
      wmma::fill_fragment(c, 0.0f);
      mma_steps<E, KS, true>(c, qs + w0 * DP, DP, ks + nt * 16 * DP, DP, dsteps);
      wmma::store_matrix_sync(ss + w0 * SPF + nt * 16, c, SPF, wmma::mem_row_major);
      wmma::fill_fragment(c, 0.0f);
      mma_steps<E, KS, true>(c, dos + w0 * DP, DP, vs + nt * 16 * DP, DP, vsteps);
      wmma::store_matrix_sync(dps + w0 * SPF + nt * 16, c, SPF, wmma::mem_row_major);
    }
    __syncwarp();
    {
      const int row = w0 + lane / 2, part = lane % 2;
      const int64_t i = i0 + row;
      for (int c = part; c < BK; c += 2) {
        const int64_t j = j0 + c;
        float pz, ds;
        probs_and_grad(a, b, h, i, j, score(a, b, h, i, j, klen, ss[row * SPF + c] * a.scale), lses[row],
                       dps[row * SPF + c], deltas[row], pz, ds);
        dss[row * SPE + c] = from_f<E>(ds);
      }
    }
    __syncwarp();
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)  // dQ += dS K (scaled at the end); compile-time indices
      if (nt < dtiles) mma_steps<E, KS, false>(dq[nt], dss + w0 * SPE, SPE, ks + nt * 16, DP, BK / KS);
  }
  __syncthreads();  // the score region becomes the staging area
  const int64_t valid = lmax(0, lmin(16, rows - w0));
  store_acc<E>(dq, ss + warp * 256, dq_out + (head * a.Lq + i0 + w0) * a.D, valid, a.D, a.scale);
#else
  __trap();
#endif
}

// ---------------------------------------------------------------- launches
dim3 grid_of(int64_t heads, int64_t len, int block, const char* what) {
  const int64_t blocks = (len + block - 1) / block;
  TXTCLS_CHECK(heads < (int64_t(1) << 31) && blocks <= 65535, "scaled_dot_product_attention: ", heads,
               " heads and ", blocks, " ", what, " blocks are more than one launch takes");
  return dim3(static_cast<unsigned>(heads), static_cast<unsigned>(blocks));
}

template <class E, int DMAX>
void forward_dmax(const AttentionArgs<float>& a, AttnRows<const E> q, AttnRows<const E> k, AttnRows<const E> v, E* out,
                  float* lse) {
  using Tl = MmaTile<E, DMAX>;
  constexpr int bytes = Tl::Fwd::kBytes;
  auto kernel = mma_forward_kernel<E, DMAX>;
  allow_dynamic_smem(kernel, bytes);
  kernel<<<grid_of(a.B * a.H, a.Lq, Tl::kWarpRows, "query"), kMmaThreads, bytes, active_stream()>>>(a, q, k, v, out,
                                                                                                      lse);
  TXTCLS_KERNEL_CHECK("attention_mma_forward");
}

template <class E, int DMAX>
void backward_dmax(const AttentionArgs<float>& a, AttnRows<const E> q, AttnRows<const E> k, AttnRows<const E> v,
                   AttnRows<const E> go, const float* lse, const float* delta, E* dq, E* dk, E* dv, float* dbias,
                   bool per_query) {
  using Tl = MmaTile<E, DMAX>;
  cudaStream_t stream = active_stream();
  if (a.Lk > 0) {
    constexpr int bytes = Tl::Kv::kBytes;
    auto kernel = mma_dkdv_kernel<E, DMAX>;
    allow_dynamic_smem(kernel, bytes);
    kernel<<<grid_of(a.B * a.H, a.Lk, Tl::kWarpRows, "key"), kMmaThreads, bytes, stream>>>(a, q, k, v, go, lse, delta,
                                                                                           dk, dv, dbias, per_query);
    TXTCLS_KERNEL_CHECK("attention_mma_dkdv");
  }
  if (a.Lq > 0) {
    constexpr int bytes = Tl::Dq::kBytes;
    auto kernel = mma_dq_kernel<E, DMAX>;
    allow_dynamic_smem(kernel, bytes);
    kernel<<<grid_of(a.B * a.H, a.Lq, Tl::kWarpRows, "query"), kMmaThreads, bytes, stream>>>(a, q, k, v, go, lse,
                                                                                             delta, dq);
    TXTCLS_KERNEL_CHECK("attention_mma_dq");
  }
}

// The CUDA element type of a 16-bit dtype.
template <class F>
void with_half_type(AttnHalf dtype, F f) {
  if (dtype == AttnHalf::F16) f(__half());
  else f(__nv_bfloat16());
}

template <class E>
AttnRows<const E> rows_as(AttnRows<const void> r) {
  return {static_cast<const E*>(r.p), r.sb, r.sh, r.si};
}

}  // namespace

// A build whose device code for this GPU came from a target below 8.0 (say compute_75 PTX,
// JIT-compiled on an H100) holds the trap bodies: ask the loaded kernel which PTX it came from.
bool mma_compiled() {
  cudaFuncAttributes fa;
  TXTCLS_CUDA_CHECK(cudaFuncGetAttributes(&fa, mma_forward_kernel<__half, 64>));
  return fa.ptxVersion >= 80;
}

template <class E>
void mma_forward(const AttentionArgs<float>& a, AttnRows<const E> q, AttnRows<const E> k, AttnRows<const E> v, E* out,
                 float* lse) {
  check_attention_head_dims(a.D, a.Dv, "scaled_dot_product_attention");
  if (a.B * a.H * a.Lq == 0) return;
  if (a.D <= 64 && a.Dv <= 64) forward_dmax<E, 64>(a, q, k, v, out, lse);
  else forward_dmax<E, 128>(a, q, k, v, out, lse);
}

template <class E>
void mma_delta(const AttentionArgs<float>& a, const E* out, AttnRows<const E> dout, float* delta) {
  const int64_t rows = a.B * a.H * a.Lq;
  if (rows == 0) return;
  const int64_t blocks = (rows * 32 + kBlock - 1) / kBlock;  // a warp per row
  TXTCLS_CHECK(blocks < (int64_t(1) << 31), "scaled_dot_product_attention: ", rows,
               " query rows are more than one launch takes");
  mma_delta_kernel<E><<<static_cast<unsigned>(blocks), kBlock, 0, active_stream()>>>(out, dout, delta, a.H, a.Lq, a.Dv,
                                                                                     rows);
  TXTCLS_KERNEL_CHECK("attention_mma_delta");
}

template <class E>
void mma_backward(const AttentionArgs<float>& a, AttnRows<const E> q, AttnRows<const E> k, AttnRows<const E> v,
                  const E* out, AttnRows<const E> dout, const float* lse, E* dq, E* dk, E* dv, float* dbias,
                  bool dbias_per_query, float* delta) {
  check_attention_head_dims(a.D, a.Dv, "scaled_dot_product_attention");
  if (a.B * a.H == 0) return;
  mma_delta<E>(a, out, dout, delta);
  if (a.D <= 64 && a.Dv <= 64)
    backward_dmax<E, 64>(a, q, k, v, dout, lse, delta, dq, dk, dv, dbias, dbias_per_query);
  else
    backward_dmax<E, 128>(a, q, k, v, dout, lse, delta, dq, dk, dv, dbias, dbias_per_query);
}

template void mma_forward<float>(const AttentionArgs<float>&, AttnRows<const float>, AttnRows<const float>,
                                 AttnRows<const float>, float*, float*);
template void mma_delta<float>(const AttentionArgs<float>&, const float*, AttnRows<const float>, float*);
template void mma_delta<__half>(const AttentionArgs<float>&, const __half*, AttnRows<const __half>, float*);
template void mma_delta<__nv_bfloat16>(const AttentionArgs<float>&, const __nv_bfloat16*,
                                       AttnRows<const __nv_bfloat16>, float*);
template void mma_backward<float>(const AttentionArgs<float>&, AttnRows<const float>, AttnRows<const float>,
                                  AttnRows<const float>, const float*, AttnRows<const float>, const float*, float*,
                                  float*, float*, float*, bool, float*);

}  // namespace txtcls::cuda::attn

namespace txtcls::cuda {

namespace {
std::atomic<AttnMmaKernel> g_mma_kernel{AttnMmaKernel::Registers};
}

void set_attention_mma_kernel(AttnMmaKernel k) { g_mma_kernel.store(k); }
AttnMmaKernel attention_mma_kernel() { return g_mma_kernel.load(); }

void attention_forward_half(const AttentionHalfArgs& h, void* out, float* lse) {
  TXTCLS_CHECK(attention_has_tensor_cores(), "attention_forward_half: 16-bit attention needs a GPU of compute "
               "capability 8.0 or later and a build for it (TXTCLS_CUDA_ARCHITECTURES 80 or more)");
  attn::with_half_type(h.dtype, [&](auto e) {
    using E = decltype(e);
    attn::chosen_forward<E>()(h.opts, attn::rows_as<E>(h.q), attn::rows_as<E>(h.k), attn::rows_as<E>(h.v),
                              static_cast<E*>(out), lse);
  });
}

void attention_backward_half(const AttentionHalfArgs& h, const void* out, AttnRows<const void> dout, const float* lse,
                             const AttentionHalfGrads& g) {
  TXTCLS_CHECK(attention_has_tensor_cores(), "attention_backward_half: 16-bit attention needs a GPU of compute "
               "capability 8.0 or later and a build for it (TXTCLS_CUDA_ARCHITECTURES 80 or more)");
  attn::with_half_type(h.dtype, [&](auto e) {
    using E = decltype(e);
    attn::chosen_backward<E>()(h.opts, attn::rows_as<E>(h.q), attn::rows_as<E>(h.k), attn::rows_as<E>(h.v),
                               static_cast<const E*>(out), attn::rows_as<E>(dout), lse, static_cast<E*>(g.dq),
                               static_cast<E*>(g.dk), static_cast<E*>(g.dv), g.dbias, g.dbias_per_query, g.delta);
  });
}

}  // namespace txtcls::cuda
