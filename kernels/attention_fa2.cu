// Fused attention on tensor cores organised as FlashAttention-2, for bfloat16 and float16 operands
// (mma.sync m16n8k16) and for float ones rounded to TF32 (m16n8k8, under cuda::set_allow_tf32):
// products whose fp32 accumulators stay in registers, the online softmax applied to
// them in place (each row is spread over the four lanes of a quad), the probabilities rounded
// into the A fragments of P V without a trip through shared memory, and K/V (or Q/dO) blocks
// streamed through double-buffered shared tiles by cp.async. Tile traits: Fa2Tile
// (attention_tiles.cuh); warp primitives: warp_mma.cuh.
//
// The contract is attention.cu's (the CPU op's): every score term (bias, additive mask, boolean
// mask), key lengths, causal alignment, the empty-row rule, dropout by the CPU's counters, the
// optional bias gradient; the per-element rules come from attention_common.cuh. A block that no
// term, padding or diagonal touches skips them. The backward is FlashAttention-2's recomputation,
// split as in attention_mma.cu into dK/dV over key blocks and dQ over query blocks, so that no
// gradient needs atomics and results are bit-for-bit repeatable.

#include <cmath>
#include <cstdint>

#include "attention_common.cuh"
#include "attention_mma.cuh"
#include "attention_tiles.cuh"
#include "launch.cuh"
#include "warp_mma.cuh"

// mma.sync on 16-bit and TF32 operands and cp.async need compute capability 8.0: other targets keep the
// kernels' names with a trap for a body (attention_has_tensor_cores() keeps the host from
// launching them there).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define TXTCLS_ATTENTION_FA2 0
#else
#define TXTCLS_ATTENTION_FA2 1
#endif

namespace txtcls::cuda::attn {
namespace {

using warp::cp_async_16;
using warp::ldsm_x4;
using warp::ldsm_x4_trans;
using warp::mma_16816;
using warp::mma_1688_tf32;
using warp::pack2;
using warp::to_tf32;

#if TXTCLS_ATTENTION_FA2

template <class E> __device__ __forceinline__ E round_to(float x);
template <> __device__ __forceinline__ __half round_to(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 round_to(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ float round_to(float x) { return x; }

// Rows [r0, r0 + valid) of width w of head (b, h) into NR shared rows of stride DP; the rest of
// the NR x DMAX tile is zero, so padded rows and columns add nothing to a product. `vec`: every
// row starts 16-byte aligned and w is a multiple of 16 bytes, so 16-byte chunks go by cp.async
// (the caller commits and waits); else element by element.
template <class E, int NR, int DMAX>
__device__ __forceinline__ void load_tile(E* dst, AttnRows<const E> src, int64_t b, int64_t h, int64_t r0,
                                          int64_t valid, int64_t w, bool vec) {
  using Tl = Fa2Tile<E, DMAX>;
  constexpr int DP = Tl::DP, kThreads = Tl::kThreads, W = Tl::kChunk, CH = DMAX / W;
  const E* base = src.p + b * src.sb + h * src.sh;
  if (vec) {
    // A thread copies the same 16-byte column c of rows r, r + kStep, ...: its addresses are
    // worked out once, not per chunk (the generic index arithmetic cost ~30 instructions per
    // copy, a quarter of the forward's instructions in the loop).
    static_assert(NR * CH % kThreads == 0 && kThreads % CH == 0, "a tile is whole rounds of the block's chunks");
    constexpr int kStep = kThreads / CH;
    const int r = threadIdx.x / CH, c = (threadIdx.x % CH) * W;
    const bool col_ok = c < w;
    const E* from = base + (r0 + r) * src.si + c;
    const int64_t step = kStep * src.si;
    E* to = dst + r * DP + c;
#pragma unroll
    for (int k = 0; k < NR * CH / kThreads; ++k) {
      const bool ok = col_ok && r + k * kStep < valid;
      cp_async_16(to + k * kStep * DP, ok ? from + k * step : base, ok);
    }
  } else {
    for (int e = threadIdx.x; e < NR * DMAX; e += kThreads) {
      const int r = e / DMAX, c = e % DMAX;
      dst[r * DP + c] = (r < valid && c < w) ? base[(r0 + r) * src.si + c] : round_to<E>(0.0f);
    }
  }
}

// K and V rows of the key block at j0 (keys past klen zero) into one stage of their tiles.
template <class E, int BK, int DMAX>
__device__ __forceinline__ void load_kv(E* kdst, E* vdst, const AttentionArgs<float>& a, AttnRows<const E> gk,
                                        AttnRows<const E> gv, int64_t b, int64_t h, int64_t j0, int64_t klen,
                                        bool vec) {
  load_tile<E, BK, DMAX>(kdst, gk, b, h, j0, lmin(BK, klen - j0), a.D, vec);
  load_tile<E, BK, DMAX>(vdst, gv, b, h, j0, lmin(BK, klen - j0), a.Dv, vec);
}

// This lane's ldmatrix.x4 row address for the 16 x 16 block at rows r0.., columns c0.. of a
// shared tile of stride DP, read as blocks (rows 0-7, cols 0-7), (8-15, 0-7), (0-7, 8-15),
// (8-15, 8-15): plain, the A fragment of the block; transposed (ldmatrix.trans), two B fragments
// (k16 x n8, k = the rows, n = columns c0.. and c0 + 8..) of a tile that holds B as it is, as V
// does for P V.
template <class E, int DP>
__device__ __forceinline__ const E* x4_row(const E* tile, int r0, int c0, int lane) {
  return tile + (r0 + lane % 8 + ((lane / 8) % 2) * 8) * DP + c0 + (lane / 16) * 8;
}

// ... for two B fragments (k16 x n8 each, n = rows r0..r0+15 of the tile, k = columns c0..c0+15)
// read plainly: the tile holds B transposed (rows are n), as K does for Q K^T.
template <class E, int DP>
__device__ __forceinline__ const E* bt_row(const E* tile, int r0, int c0, int lane) {
  return tile + (r0 + (lane / 16) * 8 + lane % 8) * DP + c0 + ((lane / 8) % 2) * 8;
}

// acc[NT][4] += A B^T: A is 16 rows of `a_tile` from row ra, B^T is NT * 8 rows of `bt_tile`,
// both over their first `width` columns (zero-padded to DMAX): S = Q K^T and its relatives.
// 16-bit operands: ldmatrix and m16n8k16; float: scalar loads rounded to TF32 and m16n8k8.
template <class E, int DMAX, int NT>
__device__ __forceinline__ void mma_abt(float (&acc)[NT][4], const E* a_tile, int ra, const E* bt_tile, int64_t width,
                                        int lane) {
  constexpr int DP = Fa2Tile<E, DMAX>::DP;
  if constexpr (sizeof(E) == 2) {
#pragma unroll
    for (int kd = 0; kd < DMAX / 16; ++kd) {
      if (kd * 16 >= width) break;
      uint32_t af[4];
      ldsm_x4(af, x4_row<E, DP>(a_tile, ra, kd * 16, lane));
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        uint32_t r[4];
        ldsm_x4(r, bt_row<E, DP>(bt_tile, np * 16, kd * 16, lane));
        mma_16816<E>(acc[2 * np], af, r[0], r[1]);
        mma_16816<E>(acc[2 * np + 1], af, r[2], r[3]);
      }
    }
  } else {
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int k0 = 0; k0 < DMAX; k0 += 8) {
      if (k0 >= width) break;
      const float* ar = a_tile + (ra + g) * DP + k0 + t;
      const uint32_t af[4] = {to_tf32(ar[0]), to_tf32(ar[8 * DP]), to_tf32(ar[4]), to_tf32(ar[8 * DP + 4])};
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const float* br = bt_tile + (nt * 8 + g) * DP + k0 + t;
        mma_1688_tf32(acc[nt], af, to_tf32(br[0]), to_tf32(br[4]));
      }
    }
  }
}

// acc[ND][4] += P B: P (16 x NP * 8) is given as fp32 C tiles p[NP][4] and becomes A fragments
// without leaving registers (rounded to E, or to TF32); B is NP * 8 rows of `b_tile`, columns
// [0, width): O += P V and its relatives. For TF32 the lane's two C columns 2t, 2t+1 of an n8
// block serve as the k indices t, t+4 of the m16n8k8 A fragment, so B's rows are read in that
// order (k = t is row 2t, k = t+4 row 2t+1): the sum over k does not care.
template <class E, int DMAX, int NP, int ND>
__device__ __forceinline__ void mma_pb(float (&acc)[ND][4], const float (&p)[NP][4], const E* b_tile, int64_t width,
                                       int lane) {
  constexpr int DP = Fa2Tile<E, DMAX>::DP;
  if constexpr (sizeof(E) == 2) {
#pragma unroll
    for (int kk = 0; kk < NP / 2; ++kk) {
      const uint32_t pa[4] = {pack2<E>(p[2 * kk][0], p[2 * kk][1]), pack2<E>(p[2 * kk][2], p[2 * kk][3]),
                              pack2<E>(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                              pack2<E>(p[2 * kk + 1][2], p[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < ND / 2; ++dp) {
        if (dp * 16 >= width) break;
        uint32_t r[4];
        ldsm_x4_trans(r, x4_row<E, DP>(b_tile, kk * 16, dp * 16, lane));
        mma_16816<E>(acc[2 * dp], pa, r[0], r[1]);
        mma_16816<E>(acc[2 * dp + 1], pa, r[2], r[3]);
      }
    }
  } else {
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int j = 0; j < NP; ++j) {
      const uint32_t pa[4] = {to_tf32(p[j][0]), to_tf32(p[j][2]), to_tf32(p[j][1]), to_tf32(p[j][3])};
      const float* br = b_tile + (j * 8 + 2 * t) * DP + g;
#pragma unroll
      for (int dn = 0; dn < ND; ++dn) {
        if (dn * 8 >= width) break;
        mma_1688_tf32(acc[dn], pa, to_tf32(br[dn * 8]), to_tf32(br[DP + dn * 8]));
      }
    }
  }
}

constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;

// 2^x, exactly 0 below the smallest normal result (exp_or_zero's rule in base 2): ex2.approx.ftz
// flushes the subnormal results of x < -126 to 0 itself, so no test is needed.
__device__ __forceinline__ float exp2_or_zero(float x) { return warp::ex2_approx(x); }

template <int N>
__device__ __forceinline__ void zero_acc(float (&acc)[N][4]) {
#pragma unroll
  for (int n = 0; n < N; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
}

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// Writes a warp's 16 x (ND * 8) accumulator (rows r < valid, columns < w) to a contiguous [*, w]
// output whose row 0 is at dst, the lane's rows g and g + 8 times mul[0] and mul[1].
template <class E, int ND>
__device__ __forceinline__ void store_rows(const float (&acc)[ND][4], E* dst, int64_t valid, int64_t w,
                                           const float (&mul)[2], int lane) {
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = g + 8 * half;
    if (r >= valid) continue;
#pragma unroll
    for (int n = 0; n < ND; ++n) {
      const int c = n * 8 + 2 * t;
      if (c < w) dst[r * w + c] = round_to<E>(acc[n][2 * half] * mul[half]);
      if (c + 1 < w) dst[r * w + c + 1] = round_to<E>(acc[n][2 * half + 1] * mul[half]);
    }
  }
}

// Whether the scores of queries [i0, i0 + nq) and keys [j0, j0 + nk) need no term, padding or
// diagonal: then they are the scaled products as they are (rows past Lq are never stored).
__device__ __forceinline__ bool interior(const AttentionArgs<float>& a, int64_t i0, int64_t j0, int64_t nk,
                                         int64_t klen) {
  return !a.bias.p && !a.mask.p && !a.allowed.p && j0 + nk <= klen &&
         (!a.causal || j0 + nk - 1 <= i0 + (a.Lk - a.Lq));
}

// ... and, in the backward, whether their probabilities need neither dropout nor the empty-row
// rule: then p = 2^(S log2 e - lse log2 e) directly (every row there sees a key, so lse is finite).
__device__ __forceinline__ bool plain_backward(const AttentionArgs<float>& a, int64_t i0, int64_t nq, int64_t j0,
                                               int64_t nk, int64_t klen) {
  return a.dropout_p == 0 && i0 + nq <= a.Lq && interior(a, i0, j0, nk, klen);
}

// P Z and dS of one score element from its product qk: in a plain block from qk alone, in base 2;
// elsewhere by attention_common's rules (terms, hidden keys, empty rows, dropout).
//
// The kernels test "plain" once per block and run one of two unrolled loops over the tile (the
// callers' `plain ? f<true>(...) : f<false>(...)`), not a test per element: with the test inside
// the unrolled loop, the plain path jumped over an inlined copy of the general rules at every
// element, and on an H200 a third of the forward's stalls were instruction fetches.
template <bool Plain>
__device__ __forceinline__ void element_grad(const AttentionArgs<float>& a, int64_t b, int64_t h, int64_t i,
                                             int64_t j, int64_t klen, float qk, float lse_i, float dp, float delta_i,
                                             float& pz, float& ds) {
  if constexpr (Plain) {
    pz = exp2_or_zero(fmaf(qk, a.scale * kLog2e, -lse_i * kLog2e));
    ds = pz * (dp - delta_i);
  } else {
    probs_and_grad(a, b, h, i, j, score(a, b, h, i, j, klen, qk * a.scale), lse_i, dp, delta_i, pz, ds);
  }
}

// The forward's scores of a warp's 16 x (NK * 8) tile in base 2 (times log2 e), in place, and the
// running row maxima mx of rows g, g + 8 (this lane's columns): one multiply in a plain block.
template <bool Plain, int NK>
__device__ __forceinline__ void scores_base2(const AttentionArgs<float>& a, int64_t b, int64_t h, int64_t i0,
                                             int64_t j0, int64_t klen, float (&s)[NK][4], float (&mx)[2], int lane) {
  const int g = lane / 4, t = lane % 4;
  const float scale2 = a.scale * kLog2e;
#pragma unroll
  for (int n = 0; n < NK; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      float x;
      if constexpr (Plain) x = s[n][e] * scale2;
      else x = score(a, b, h, i0 + g + 8 * (e / 2), j0 + n * 8 + 2 * t + e % 2, klen, s[n][e] * a.scale) * kLog2e;
      s[n][e] = x;
      mx[e / 2] = fmaxf(mx[e / 2], x);
    }
}

// ... then the probabilities 2^(x - mu) in place, their row sums (before dropout) into sum, and
// with Dropout the kept ones scaled by 1 / (1 - p), the others zero.
template <bool Dropout, int NK>
__device__ __forceinline__ void probs_base2(const AttentionArgs<float>& a, int64_t b, int64_t h, int64_t i0,
                                            int64_t j0, float (&s)[NK][4], const float (&mu)[2], float (&sum)[2],
                                            int lane) {
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int n = 0; n < NK; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float p = exp2_or_zero(s[n][e] - mu[e / 2]);
      sum[e / 2] += p;
      if constexpr (Dropout) s[n][e] = p * drop_factor(a, b, h, i0 + g + 8 * (e / 2), j0 + n * 8 + 2 * t + e % 2);
      else s[n][e] = p;
    }
}

// P Z and dS of a warp's tile, in place of its products s and dp: the backward kernels' loop.
// query_key(n, e, i, j) names element (n, e)'s query and key (dK/dV holds the tile transposed);
// stats(n, e, lse, delta) gives its query's statistics, after begin(n) at each column block n.
template <bool Plain, int N, class QueryKey, class Begin, class Stats>
__device__ __forceinline__ void tile_grads(const AttentionArgs<float>& a, int64_t b, int64_t h, int64_t klen,
                                           float (&s)[N][4], float (&dp)[N][4], QueryKey&& query_key, Begin&& begin,
                                           Stats&& stats) {
#pragma unroll
  for (int n = 0; n < N; ++n) {
    begin(n);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      int64_t i, j;
      query_key(n, e, i, j);
      float lse_i, delta_i, pz, ds;
      stats(n, e, lse_i, delta_i);
      element_grad<Plain>(a, b, h, i, j, klen, s[n][e], lse_i, dp[n][e], delta_i, pz, ds);
      s[n][e] = pz;
      dp[n][e] = ds;
    }
  }
}

#endif  // TXTCLS_ATTENTION_FA2

// ---------------------------------------------------------------- forward
template <class E, int DMAX>
__global__ void __launch_bounds__(Fa2Tile<E, DMAX>::kThreads)
    fa2_forward_kernel(const AttentionArgs<float> a, AttnRows<const E> gq, AttnRows<const E> gk, AttnRows<const E> gv,
                       E* __restrict__ out, float* __restrict__ lse, bool vec) {
#if TXTCLS_ATTENTION_FA2
  using Tl = Fa2Tile<E, DMAX>;
  constexpr int BQ = Tl::kRows, BK = Tl::kFwdK, DP = Tl::DP, ND = DMAX / 8, NK = BK / 8;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  E* qs = reinterpret_cast<E*>(smem_raw);
  E* ks = qs + BQ * DP;      // [2][BK][DP]
  E* vs = ks + 2 * BK * DP;  // [2][BK][DP]

  const int64_t nblk = (a.Lq + BQ - 1) / BQ, head = blockIdx.x / nblk, b = head / a.H, h = head % a.H,
                i0 = (blockIdx.x % nblk) * BQ;
  const int64_t rows = lmin(BQ, a.Lq - i0), klen = key_len(a, b), kend = visible_keys(a, i0, rows, klen);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4, w0 = 16 * warp;

  load_tile<E, BQ, DMAX>(qs, gq, b, h, i0, rows, a.D, vec);
  if (kend > 0) load_kv<E, BK, DMAX>(ks, vs, a, gk, gv, b, h, 0, klen, vec);
  warp::cp_async_commit();
  warp::cp_async_wait_all();
  __syncthreads();

  float o[ND][4];
  zero_acc(o);
  // Rows g, g + 8: running max m (base 2) and sum l (this lane's columns; the quad adds at the end).
  float m[2] = {neg_inf<float>(), neg_inf<float>()}, l[2] = {0.0f, 0.0f};
  int stage = 0;
  for (int64_t j0 = 0; j0 < kend; j0 += BK, stage ^= 1) {
    const bool more = j0 + BK < kend;
    if (more) {  // the other stage was last read before the previous iteration's barrier
      load_kv<E, BK, DMAX>(ks + (stage ^ 1) * BK * DP, vs + (stage ^ 1) * BK * DP, a, gk, gv, b, h, j0 + BK, klen, vec);
      warp::cp_async_commit();
    }
    const E* kt = ks + stage * BK * DP;
    const E* vt = vs + stage * BK * DP;
    float s[NK][4];
    zero_acc(s);
    mma_abt<E, DMAX, NK>(s, qs, w0, kt, a.D, lane);

    // Scores in base 2 (times log2 e): one multiply and one exp2 per element in the common case.
    float mx[2] = {m[0], m[1]};
    if (interior(a, i0 + w0, j0, BK, klen)) scores_base2<true>(a, b, h, i0 + w0, j0, klen, s, mx, lane);
    else scores_base2<false>(a, b, h, i0 + w0, j0, klen, s, mx, lane);
    float alpha[2], mu[2], sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = quad_max(mx[r]);
      alpha[r] = mx[r] == m[r] ? 1.0f : exp2_or_zero(m[r] - mx[r]);
      mu[r] = mx[r] == neg_inf<float>() ? 0.0f : mx[r];
      m[r] = mx[r];
    }
    if (a.dropout_p > 0) probs_base2<true>(a, b, h, i0 + w0, j0, s, mu, sum, lane);
    else probs_base2<false>(a, b, h, i0 + w0, j0, s, mu, sum, lane);
#pragma unroll
    for (int r = 0; r < 2; ++r) l[r] = l[r] * alpha[r] + sum[r];
#pragma unroll
    for (int n = 0; n < ND; ++n) o[n][0] *= alpha[0], o[n][1] *= alpha[0], o[n][2] *= alpha[1], o[n][3] *= alpha[1];
    mma_pb<E, DMAX, NK, ND>(o, s, vt, a.Dv, lane);

    if (more) warp::cp_async_wait_all();
    __syncthreads();  // the next block is visible; every warp is done with this one
  }

  const int64_t head_row = head * a.Lq + i0 + w0;
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] = quad_sum(l[r]);
    inv[r] = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;  // l == 0: an empty row, output 0
  }
  const int64_t valid = lmax(0, lmin(16, rows - w0));
  store_rows<E, ND>(o, out + head_row * a.Dv, valid, a.Dv, inv, lane);
  if (t == 0)
#pragma unroll
    for (int r = 0; r < 2; ++r)
      if (g + 8 * r < valid)
        lse[head_row + g + 8 * r] = l[r] > 0.0f ? (m[r] + log2f(l[r])) * kLn2 : neg_inf<float>();
#else
  __trap();
#endif
}

// ---------------------------------------------------------------- backward
// dK, dV of 64 keys (16 per warp) over the query blocks that can see them.
template <class E, int DMAX>
__global__ void __launch_bounds__(Fa2Tile<E, DMAX>::kThreads)
    fa2_dkdv_kernel(const AttentionArgs<float> a, AttnRows<const E> gq, AttnRows<const E> gk, AttnRows<const E> gv,
                    AttnRows<const E> go, const float* __restrict__ lse, const float* __restrict__ delta,
                    E* __restrict__ dk_out, E* __restrict__ dv_out, float* __restrict__ dbias, bool per_query,
                    bool vec) {
#if TXTCLS_ATTENTION_FA2
  using Tl = Fa2Tile<E, DMAX>;
  constexpr int BK = Tl::kRows, BQ = Tl::kKvQ, DP = Tl::DP, ND = DMAX / 8, NQ = BQ / 8;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  E* ks = reinterpret_cast<E*>(smem_raw);
  E* vs = ks + BK * DP;
  E* qs = vs + BK * DP;       // [2][BQ][DP]
  E* dos = qs + 2 * BQ * DP;  // [2][BQ][DP]

  const int64_t nblk = (a.Lk + BK - 1) / BK, head = blockIdx.x / nblk, b = head / a.H, h = head % a.H,
                j0 = (blockIdx.x % nblk) * BK;
  const int64_t cols = lmin(BK, a.Lk - j0), klen = key_len(a, b);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4, w0 = 16 * warp;
  float dk[ND][4], dv[ND][4];
  zero_acc(dk);
  zero_acc(dv);
  float bsum[2] = {0.0f, 0.0f};  // this lane's part of the dS column sums of keys g, g + 8

  if (j0 < klen) {
    const int64_t first = first_seeing_query(a, j0);
    const int64_t istart = first / BQ * BQ;
    load_tile<E, BK, DMAX>(ks, gk, b, h, j0, lmin(BK, klen - j0), a.D, vec);
    load_tile<E, BK, DMAX>(vs, gv, b, h, j0, lmin(BK, klen - j0), a.Dv, vec);
    if (istart < a.Lq) {
      load_tile<E, BQ, DMAX>(qs, gq, b, h, istart, lmin(BQ, a.Lq - istart), a.D, vec);
      load_tile<E, BQ, DMAX>(dos, go, b, h, istart, lmin(BQ, a.Lq - istart), a.Dv, vec);
    }
    warp::cp_async_commit();
    warp::cp_async_wait_all();
    __syncthreads();
    int stage = 0;
    for (int64_t i0 = istart; i0 < a.Lq; i0 += BQ, stage ^= 1) {
      const bool more = i0 + BQ < a.Lq;
      if (more) {
        const int64_t nx = i0 + BQ, nrows = lmin(BQ, a.Lq - nx);
        load_tile<E, BQ, DMAX>(qs + (stage ^ 1) * BQ * DP, gq, b, h, nx, nrows, a.D, vec);
        load_tile<E, BQ, DMAX>(dos + (stage ^ 1) * BQ * DP, go, b, h, nx, nrows, a.Dv, vec);
        warp::cp_async_commit();
      }
      const E* qt = qs + stage * BQ * DP;
      const E* dot = dos + stage * BQ * DP;
      float s[NQ][4], dp[NQ][4];  // S^T and dP^T: this warp's 16 keys x BQ queries
      zero_acc(s);
      zero_acc(dp);
      mma_abt<E, DMAX, NQ>(s, ks, w0, qt, a.D, lane);
      mma_abt<E, DMAX, NQ>(dp, vs, w0, dot, a.Dv, lane);
      // The statistics of the lane's two query columns, straight from global memory: rows past
      // Lq get lse -inf, so p = 0. Kept out of shared memory, which TF32 at D = 128 fills to
      // exactly the 99 KB of consumer GPUs.
      float lse_c[2], delta_c[2];
      auto begin = [&](int n) {
#pragma unroll
        for (int cc = 0; cc < 2; ++cc) {
          const int64_t i = i0 + n * 8 + 2 * t + cc;
          lse_c[cc] = i < a.Lq ? lse[head * a.Lq + i] : neg_inf<float>();
          delta_c[cc] = i < a.Lq ? delta[head * a.Lq + i] : 0.0f;
        }
      };
      auto query_key = [&](int n, int e, int64_t& i, int64_t& j) {
        i = i0 + n * 8 + 2 * t + e % 2, j = j0 + w0 + g + 8 * (e / 2);
      };
      auto stats = [&](int, int e, float& l, float& d) { l = lse_c[e % 2], d = delta_c[e % 2]; };
      if (plain_backward(a, i0, BQ, j0 + w0, 16, klen)) tile_grads<true>(a, b, h, klen, s, dp, query_key, begin, stats);
      else tile_grads<false>(a, b, h, klen, s, dp, query_key, begin, stats);
      if (dbias)
#pragma unroll
        for (int n = 0; n < NQ; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            int64_t i, j;
            query_key(n, e, i, j);
            if (!per_query) bsum[e / 2] += dp[n][e];
            else if (i < a.Lq && j < a.Lk) dbias[(head * a.Lq + i) * a.Lk + j] = dp[n][e];
          }
      mma_pb<E, DMAX, NQ, ND>(dv, s, dot, a.Dv, lane);  // dV += (P Z)^T dO
      mma_pb<E, DMAX, NQ, ND>(dk, dp, qt, a.D, lane);   // dK += dS^T Q (scaled below)

      if (more) warp::cp_async_wait_all();
      __syncthreads();
    }
  }
  const int64_t valid = lmax(0, lmin(16, cols - w0));
  store_rows<E, ND>(dk, dk_out + (head * a.Lk + j0 + w0) * a.D, valid, a.D, {a.scale, a.scale}, lane);
  store_rows<E, ND>(dv, dv_out + (head * a.Lk + j0 + w0) * a.Dv, valid, a.Dv, {1.0f, 1.0f}, lane);
  if (dbias && !per_query)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float total = quad_sum(bsum[r]);
      if (t == 0 && g + 8 * r < valid) dbias[head * a.Lk + j0 + w0 + g + 8 * r] = total;
    }
#else
  __trap();
#endif
}

// dQ of 64 queries (16 per warp) over the key blocks they can see.
template <class E, int DMAX>
__global__ void __launch_bounds__(Fa2Tile<E, DMAX>::kThreads)
    fa2_dq_kernel(const AttentionArgs<float> a, AttnRows<const E> gq, AttnRows<const E> gk, AttnRows<const E> gv,
                  AttnRows<const E> go, const float* __restrict__ lse, const float* __restrict__ delta,
                  E* __restrict__ dq_out, bool vec) {
#if TXTCLS_ATTENTION_FA2
  using Tl = Fa2Tile<E, DMAX>;
  constexpr int BQ = Tl::kRows, BK = Tl::kDqK, DP = Tl::DP, ND = DMAX / 8, NK = BK / 8;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  E* qs = reinterpret_cast<E*>(smem_raw);
  E* dos = qs + BQ * DP;
  E* ks = dos + BQ * DP;      // [2][BK][DP]
  E* vs = ks + 2 * BK * DP;   // [2][BK][DP]

  const int64_t nblk = (a.Lq + BQ - 1) / BQ, head = blockIdx.x / nblk, b = head / a.H, h = head % a.H,
                i0 = (blockIdx.x % nblk) * BQ;
  const int64_t rows = lmin(BQ, a.Lq - i0), klen = key_len(a, b), kend = visible_keys(a, i0, rows, klen);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4, w0 = 16 * warp;
  float lr[2], dr[2];  // lse and delta of rows g, g + 8
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t i = i0 + w0 + g + 8 * r;
    lr[r] = i < a.Lq ? lse[head * a.Lq + i] : neg_inf<float>();
    dr[r] = i < a.Lq ? delta[head * a.Lq + i] : 0.0f;
  }

  load_tile<E, BQ, DMAX>(qs, gq, b, h, i0, rows, a.D, vec);
  load_tile<E, BQ, DMAX>(dos, go, b, h, i0, rows, a.Dv, vec);
  if (kend > 0) load_kv<E, BK, DMAX>(ks, vs, a, gk, gv, b, h, 0, klen, vec);
  warp::cp_async_commit();
  warp::cp_async_wait_all();
  __syncthreads();

  float dq[ND][4];
  zero_acc(dq);
  int stage = 0;
  for (int64_t j0 = 0; j0 < kend; j0 += BK, stage ^= 1) {
    const bool more = j0 + BK < kend;
    if (more) {
      load_kv<E, BK, DMAX>(ks + (stage ^ 1) * BK * DP, vs + (stage ^ 1) * BK * DP, a, gk, gv, b, h, j0 + BK, klen, vec);
      warp::cp_async_commit();
    }
    const E* kt = ks + stage * BK * DP;
    const E* vt = vs + stage * BK * DP;
    float s[NK][4], dp[NK][4];
    zero_acc(s);
    zero_acc(dp);
    mma_abt<E, DMAX, NK>(s, qs, w0, kt, a.D, lane);
    mma_abt<E, DMAX, NK>(dp, dos, w0, vt, a.Dv, lane);
    auto query_key = [&](int n, int e, int64_t& i, int64_t& j) {
      i = i0 + w0 + g + 8 * (e / 2), j = j0 + n * 8 + 2 * t + e % 2;
    };
    auto begin = [](int) {};
    auto stats = [&](int, int e, float& l, float& d) { l = lr[e / 2], d = dr[e / 2]; };
    if (plain_backward(a, i0 + w0, 16, j0, BK, klen)) tile_grads<true>(a, b, h, klen, s, dp, query_key, begin, stats);
    else tile_grads<false>(a, b, h, klen, s, dp, query_key, begin, stats);
    mma_pb<E, DMAX, NK, ND>(dq, dp, kt, a.D, lane);  // dQ += dS K (scaled below)

    if (more) warp::cp_async_wait_all();
    __syncthreads();
  }
  const int64_t valid = lmax(0, lmin(16, rows - w0));
  store_rows<E, ND>(dq, dq_out + (head * a.Lq + i0 + w0) * a.D, valid, a.D, {a.scale, a.scale}, lane);
#else
  __trap();
#endif
}

// ---------------------------------------------------------------- launches
// One dimension: block x is (head, row block) with the row blocks of a head adjacent, so that the
// blocks of one head run together and share its K/V (or Q/dO) in L2.
dim3 fa2_grid(int64_t heads, int64_t len, int block, const char* what) {
  const int64_t blocks = heads * ((len + block - 1) / block);
  TXTCLS_CHECK(blocks < (int64_t(1) << 31), "scaled_dot_product_attention: ", heads, " heads of ", len, " ", what,
               "s are more blocks than one launch takes");
  return dim3(static_cast<unsigned>(blocks));
}

// Rows that start on 16-byte boundaries (cp.async's unit).
template <class E>
bool aligned_rows(AttnRows<const E> r) {
  constexpr int64_t W = 16 / sizeof(E);
  return reinterpret_cast<uintptr_t>(r.p) % 16 == 0 && r.sb % W == 0 && r.sh % W == 0 && r.si % W == 0;
}

template <class E>
bool whole_chunks(const AttentionArgs<float>& a) {
  constexpr int64_t W = 16 / sizeof(E);
  return a.D % W == 0 && a.Dv % W == 0;
}

template <class E, int DMAX>
void fa2_forward_dmax(const AttentionArgs<float>& a, AttnRows<const E> q, AttnRows<const E> k, AttnRows<const E> v,
                      E* out, float* lse, bool vec) {
  using Tl = Fa2Tile<E, DMAX>;
  auto kernel = fa2_forward_kernel<E, DMAX>;
  allow_dynamic_smem(kernel, Tl::kFwdBytes);
  kernel<<<fa2_grid(a.B * a.H, a.Lq, Tl::kRows, "query"), Tl::kThreads, Tl::kFwdBytes, active_stream()>>>(
      a, q, k, v, out, lse, vec);
  TXTCLS_KERNEL_CHECK("attention_fa2_forward");
}

template <class E, int DMAX>
void fa2_backward_dmax(const AttentionArgs<float>& a, AttnRows<const E> q, AttnRows<const E> k, AttnRows<const E> v,
                       AttnRows<const E> go, const float* lse, const float* delta, E* dq, E* dk, E* dv, float* dbias,
                       bool per_query, bool vec) {
  using Tl = Fa2Tile<E, DMAX>;
  if (a.Lk > 0) {
    auto kernel = fa2_dkdv_kernel<E, DMAX>;
    allow_dynamic_smem(kernel, Tl::kKvBytes);
    kernel<<<fa2_grid(a.B * a.H, a.Lk, Tl::kRows, "key"), Tl::kThreads, Tl::kKvBytes, active_stream()>>>(
        a, q, k, v, go, lse, delta, dk, dv, dbias, per_query, vec);
    TXTCLS_KERNEL_CHECK("attention_fa2_dkdv");
  }
  if (a.Lq > 0) {
    auto kernel = fa2_dq_kernel<E, DMAX>;
    allow_dynamic_smem(kernel, Tl::kDqBytes);
    kernel<<<fa2_grid(a.B * a.H, a.Lq, Tl::kRows, "query"), Tl::kThreads, Tl::kDqBytes, active_stream()>>>(
        a, q, k, v, go, lse, delta, dq, vec);
    TXTCLS_KERNEL_CHECK("attention_fa2_dq");
  }
}

}  // namespace

template <class E>
void fa2_forward(const AttentionArgs<float>& a, AttnRows<const E> q, AttnRows<const E> k, AttnRows<const E> v, E* out,
                 float* lse) {
  check_attention_head_dims(a.D, a.Dv, "scaled_dot_product_attention");
  if (a.B * a.H * a.Lq == 0) return;
  const bool vec = aligned_rows(q) && aligned_rows(k) && aligned_rows(v) && whole_chunks<E>(a);
  if (a.D <= 64 && a.Dv <= 64) fa2_forward_dmax<E, 64>(a, q, k, v, out, lse, vec);
  else fa2_forward_dmax<E, 128>(a, q, k, v, out, lse, vec);
}

template <class E>
void fa2_backward(const AttentionArgs<float>& a, AttnRows<const E> q, AttnRows<const E> k, AttnRows<const E> v,
                  const E* out, AttnRows<const E> dout, const float* lse, E* dq, E* dk, E* dv, float* dbias,
                  bool dbias_per_query, float* delta) {
  check_attention_head_dims(a.D, a.Dv, "scaled_dot_product_attention");
  if (a.B * a.H == 0) return;
  mma_delta<E>(a, out, dout, delta);
  const bool vec = aligned_rows(q) && aligned_rows(k) && aligned_rows(v) && aligned_rows(dout) && whole_chunks<E>(a);
  if (a.D <= 64 && a.Dv <= 64)
    fa2_backward_dmax<E, 64>(a, q, k, v, dout, lse, delta, dq, dk, dv, dbias, dbias_per_query, vec);
  else
    fa2_backward_dmax<E, 128>(a, q, k, v, dout, lse, delta, dq, dk, dv, dbias, dbias_per_query, vec);
}

template void fa2_forward<float>(const AttentionArgs<float>&, AttnRows<const float>, AttnRows<const float>,
                                 AttnRows<const float>, float*, float*);
template void fa2_backward<float>(const AttentionArgs<float>&, AttnRows<const float>, AttnRows<const float>,
                                  AttnRows<const float>, const float*, AttnRows<const float>, const float*, float*,
                                  float*, float*, float*, bool, float*);
template void fa2_forward<__half>(const AttentionArgs<float>&, AttnRows<const __half>, AttnRows<const __half>,
                                  AttnRows<const __half>, __half*, float*);
template void fa2_forward<__nv_bfloat16>(const AttentionArgs<float>&, AttnRows<const __nv_bfloat16>,
                                         AttnRows<const __nv_bfloat16>, AttnRows<const __nv_bfloat16>,
                                         __nv_bfloat16*, float*);
template void fa2_backward<__half>(const AttentionArgs<float>&, AttnRows<const __half>, AttnRows<const __half>,
                                   AttnRows<const __half>, const __half*, AttnRows<const __half>, const float*,
                                   __half*, __half*, __half*, float*, bool, float*);
template void fa2_backward<__nv_bfloat16>(const AttentionArgs<float>&, AttnRows<const __nv_bfloat16>,
                                          AttnRows<const __nv_bfloat16>, AttnRows<const __nv_bfloat16>,
                                          const __nv_bfloat16*, AttnRows<const __nv_bfloat16>, const float*,
                                          __nv_bfloat16*, __nv_bfloat16*, __nv_bfloat16*, float*, bool, float*);

}  // namespace txtcls::cuda::attn
