#pragma once
// Tile traits of the fused attention kernels (kernels/attention.cu): block sizes, the thread
// layout of the register tiles, and the shared-memory layout, kept apart from the kernel bodies.
//
// Every kernel runs kThreads = 128 threads viewed as a kTY x kTX = 8 x 16 grid. A product tile
// C [M, N] is spread over them strided: thread (ty, tx) holds rows ty + 8 r and columns tx + 16 c,
// so M / 8 x N / 16 values in registers, and a warp reads 16 consecutive columns of the right
// operand (no bank conflict) and two rows of the left one (broadcast).
//
// Head-dim columns are compiled for DMAX = 64 or 128 (smaller dims are zero-padded). Shared rows
// of DMAX values are padded to DMAX + 1 and score rows to BK + 1, an odd stride, so reading down a
// column of them (the transposed operands) hits distinct banks.
//
// Sizes keep the registers of the accumulators at 64 floats or 32 doubles per thread and the
// shared memory under 110 KB (A100: 163 KB per block, two blocks per SM for most of them).
#include <cstdint>

namespace txtcls::cuda::attn {

inline constexpr int kThreads = 128, kTY = 8, kTX = 16;

// Query rows (BQ) and keys (BK) per tile, per kernel: forward, dK/dV (over key blocks) and dQ
// (over query blocks).
template <class T>
struct Blocks;
template <>
struct Blocks<float> {
  static constexpr int kFwdQ = 64, kFwdK = 32;
  static constexpr int kKvQ = 32, kKvK = 32;
  static constexpr int kDqQ = 64, kDqK = 32;
};
template <>
struct Blocks<double> {
  static constexpr int kFwdQ = 32, kFwdK = 32;
  static constexpr int kKvQ = 32, kKvK = 16;
  static constexpr int kDqQ = 32, kDqK = 16;
};

// Shared memory of one kernel: `rows_wide` rows of DMAX + 1 values (q, k, v, dO tiles),
// `rows_scores` rows of BK + 1 (score tiles), `small` single values (row statistics).
template <class T, int DMAX>
constexpr int smem_bytes(int rows_wide, int rows_scores, int bk, int small) {
  return static_cast<int>(sizeof(T)) * (rows_wide * (DMAX + 1) + rows_scores * (bk + 1) + small);
}

// Forward: Q [BQ], K [BK], V [BK] wide rows; S [BQ] score rows; m, l, alpha per query row.
template <class T, int DMAX>
struct FwdTile {
  static constexpr int BQ = Blocks<T>::kFwdQ, BK = Blocks<T>::kFwdK, DP = DMAX + 1, SP = BK + 1;
  static constexpr int kQ = 0, kK = kQ + BQ * DP, kV = kK + BK * DP, kS = kV + BK * DP, kM = kS + BQ * SP,
                       kL = kM + BQ, kAlpha = kL + BQ, kEnd = kAlpha + BQ;
  static constexpr int kSmem = smem_bytes<T, DMAX>(BQ + 2 * BK, BQ, BK, 3 * BQ);
  static_assert(kEnd * static_cast<int>(sizeof(T)) == kSmem);
  static constexpr int kRowThreads = kThreads / BQ;  // threads sharing one row's softmax step
};

// dK/dV: K, V [BK]; Q, dO [BQ] wide rows; P Z and dS [BQ] score rows; lse, delta per query row;
// the column sums of dS when the bias is broadcast over queries ([kTY][BK]).
template <class T, int DMAX>
struct KvTile {
  static constexpr int BQ = Blocks<T>::kKvQ, BK = Blocks<T>::kKvK, DP = DMAX + 1, SP = BK + 1;
  static constexpr int kK = 0, kV = kK + BK * DP, kQ = kV + BK * DP, kDo = kQ + BQ * DP, kP = kDo + BQ * DP,
                       kDs = kP + BQ * SP, kLse = kDs + BQ * SP, kDelta = kLse + BQ, kColSum = kDelta + BQ,
                       kEnd = kColSum + kTY * BK;
  static constexpr int kSmem = smem_bytes<T, DMAX>(2 * BK + 2 * BQ, 2 * BQ, BK, 2 * BQ + kTY * BK);
  static_assert(kEnd * static_cast<int>(sizeof(T)) == kSmem);
};

// dQ: Q, dO [BQ]; K, V [BK] wide rows; dS [BQ] score rows; lse, delta per query row.
template <class T, int DMAX>
struct DqTile {
  static constexpr int BQ = Blocks<T>::kDqQ, BK = Blocks<T>::kDqK, DP = DMAX + 1, SP = BK + 1;
  static constexpr int kQ = 0, kDo = kQ + BQ * DP, kK = kDo + BQ * DP, kV = kK + BK * DP, kDs = kV + BK * DP,
                       kLse = kDs + BQ * SP, kDelta = kLse + BQ, kEnd = kDelta + BQ;
  static constexpr int kSmem = smem_bytes<T, DMAX>(2 * BQ + 2 * BK, BQ, BK, 2 * BQ);
  static_assert(kEnd * static_cast<int>(sizeof(T)) == kSmem);
};

// ---------------------------------------------------------------- tensor cores (attention_mma.cu)
// Four warps per block, each owning 16 rows of every tile (queries in the forward and dQ, keys in
// dK/dV), so that after a block-wide load of the streamed operand everything a warp computes,
// softmax included, stays within the warp. Products are wmma 16 x 16 tiles with K steps of 16
// (half, bfloat16) or 8 (TF32); the element type E is the operands' (float for TF32).
// wmma wants 32-byte aligned tile pointers and row strides of 16 bytes: rows of E are padded by
// 16 bytes, rows of float by 16 bytes, and every region starts on a 128-byte boundary.
inline constexpr int kMmaWarps = 4, kMmaThreads = 32 * kMmaWarps;

constexpr int align128(int bytes) { return (bytes + 127) / 128 * 128; }

template <class E, int DMAX>
struct MmaTile {
  static constexpr bool kTf32 = sizeof(E) == 4;
  static constexpr int KS = kTf32 ? 8 : 16;     // K step of one mma
  static constexpr int kPadE = 16 / static_cast<int>(sizeof(E)), kPadF = 4;
  static constexpr int DP = DMAX + kPadE;        // row stride of q, k, v, dO tiles (E)
  static constexpr int OP = DMAX + kPadF;        // row stride of the forward's O accumulator (float)
  // Rows per tile: 16 per warp on the warp side; the streamed side is halved for TF32 (4-byte
  // operands) to stay within an A100's 163 KB of shared memory.
  static constexpr int kWarpRows = 16 * kMmaWarps, kStream = kTf32 ? 32 : 64;
  static constexpr int SPF = kStream + kPadF;    // float score rows (warp side x streamed side)
  static constexpr int SPE = kStream + kPadE;    // E score rows
  static constexpr int kWide = align128(kWarpRows * DP * static_cast<int>(sizeof(E)));
  static constexpr int kWideS = align128(kStream * DP * static_cast<int>(sizeof(E)));
  static constexpr int kScoreF = align128(kWarpRows * SPF * 4);
  static constexpr int kScoreE = align128(kWarpRows * SPE * static_cast<int>(sizeof(E)));
  static constexpr int kRowStats = align128(kWarpRows * 4), kStreamStats = align128(kStream * 4);

  // Forward: Q (warp side), K, V (streamed), S (float), P (E), O (float), m, l, alpha.
  struct Fwd {
    static constexpr int kQ = 0, kK = kQ + kWide, kV = kK + kWideS, kS = kV + kWideS, kP = kS + kScoreF,
                         kO = kP + kScoreE, kM = kO + align128(kWarpRows * OP * 4), kL = kM + kRowStats,
                         kAlpha = kL + kRowStats, kBytes = kAlpha + kRowStats;
  };
  // dK/dV: K, V (warp side), Q, dO (streamed), S^T and dP^T (float), P^T Z and dS^T (E), lse
  // and delta of the streamed queries.
  struct Kv {
    static constexpr int kK = 0, kV = kK + kWide, kQ = kV + kWide, kDo = kQ + kWideS, kS = kDo + kWideS,
                         kDp = kS + kScoreF, kP = kDp + kScoreF, kDs = kP + kScoreE, kLse = kDs + kScoreE,
                         kDelta = kLse + kStreamStats, kBytes = kDelta + kStreamStats;
  };
  // dQ: Q, dO (warp side), K, V (streamed), S and dP (float), dS (E), lse and delta.
  struct Dq {
    static constexpr int kQ = 0, kDo = kQ + kWide, kK = kDo + kWide, kV = kK + kWideS, kS = kV + kWideS,
                         kDp = kS + kScoreF, kDs = kDp + kScoreF, kLse = kDs + kScoreE, kDelta = kLse + kRowStats,
                         kBytes = kDelta + kRowStats;
  };
  static_assert(Fwd::kBytes <= 160 * 1024 && Kv::kBytes <= 160 * 1024 && Dq::kBytes <= 160 * 1024,
                "attention tiles exceed an A100's shared memory");
  // After the loop, a warp stages one 16 x 16 float tile of its accumulators in the score region.
  static_assert(kWarpRows * SPF >= kMmaWarps * 256, "no room to stage the accumulators");
};

}  // namespace txtcls::cuda::attn

// ---------------------------------------------------------------- register-resident (attention_fa2.cu)
// FlashAttention-2's organisation on mma.sync (warp_mma.cuh: m16n8k16 for 16-bit operands,
// m16n8k8 TF32 for float): four warps, each owning 16 warp-side rows (queries in the forward and
// dQ, keys in dK/dV); products, softmax statistics, probabilities and the output/gradient
// accumulators live in registers, and shared memory holds only the operand tiles, the streamed
// ones double-buffered (cp.async fills the next block while the warps compute on this one).
template <class E, int DMAX>
struct Fa2Tile {
  static constexpr int kWarps = 4, kThreads = 32 * kWarps, kRows = 16 * kWarps;
  static constexpr bool kTf32 = sizeof(E) == 4;
  // Shared row stride in elements: 16 bytes of padding. For 16-bit rows (144 or 272 bytes, 16 mod
  // 128) the 8 rows of an ldmatrix block fall in distinct bank groups; for float rows (DMAX + 4,
  // 4 mod 32 words) the scalar fragment loads of a warp hit 32 distinct banks both along rows
  // (4 g + t) and down pairs of rows (8 t + g).
  static constexpr int kChunk = 16 / static_cast<int>(sizeof(E));  // elements per 16-byte copy
  static constexpr int DP = DMAX + kChunk;
  // Streamed rows per block: keys in the forward and dQ, queries in dK/dV. Smaller where the
  // accumulators take many registers (D = 128) and where float tiles would not fit.
  static constexpr int kFwdK = kTf32 && DMAX == 128 ? 32 : 64;
  static constexpr int kKvQ = kTf32 ? (DMAX == 128 ? 16 : 32) : (DMAX == 128 ? 32 : 64);
  static constexpr int kDqK = kKvQ;
  static constexpr int kTile = DP * static_cast<int>(sizeof(E));  // bytes of one shared row
  static constexpr int kFwdBytes = (kRows + 2 * 2 * kFwdK) * kTile;
  static constexpr int kKvBytes = (2 * kRows + 2 * 2 * kKvQ) * kTile;
  static constexpr int kDqBytes = (2 * kRows + 2 * 2 * kDqK) * kTile;
  // Within the 99 KB per block of consumer Ampere/Ada GPUs (sm_86, sm_89), hence an A100/H100's too.
  static_assert(kFwdBytes <= 99 * 1024 && kKvBytes <= 99 * 1024 && kDqBytes <= 99 * 1024,
                "attention tiles exceed 99 KB of shared memory");
};
