// kernels/warp_mma.cuh on the host (see cuda_shim.hpp): mma.sync and ldmatrix as warp-collective
// exchanges through per-lane slots, following the fragment layouts that warp_mma.cuh documents;
// cp.async copies are held back until the wait and their destinations read as NaN until then, so
// a read before the wait (or before the barrier after it) shows.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#include "cuda_shim.hpp"
namespace txtcls::cuda::warp {
struct Slot { uint32_t a[4]; uint32_t b[2]; const void* p; };
inline Slot g_slot[1024];
template <class E> inline float dec(uint16_t u) {
  if constexpr (std::is_same_v<E, __half>) return txtcls::half::f16_to_float(u);
  else return txtcls::half::bf16_to_float(u);
}
template <class E> inline uint16_t enc(float x) {
  if constexpr (std::is_same_v<E, __half>) return txtcls::half::float_to_f16(x);
  else return txtcls::half::float_to_bf16(x);
}
// One warp-wide m16n8kK product: every lane posts its fragments, each lane rebuilds A (16 x K) and
// B (K x 8) from all 32 with `unpack(slot, g, t, A, B)` (the instruction's fragment layout) and
// adds its four elements of A B to d.
template <int K, class Unpack>
inline void warp_product(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, Unpack unpack) {
  const int lane = threadIdx.x % 32, base = threadIdx.x - lane;
  Slot& me = g_slot[threadIdx.x];
  std::memcpy(me.a, a, sizeof me.a);
  me.b[0] = b0, me.b[1] = b1;
  __syncwarp();
  float A[16][K], B[K][8];
  for (int l = 0; l < 32; ++l) unpack(g_slot[base + l], l / 4, l % 4, A, B);
  __syncwarp();
  const int g = lane / 4, t = lane % 4;
  for (int e = 0; e < 4; ++e) {
    const int r = g + 8 * (e / 2), c = 2 * t + e % 2;
    float acc = d[e];
    for (int k = 0; k < K; ++k) acc += A[r][k] * B[k][c];
    d[e] = acc;
  }
}
template <class E>
inline void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  warp_product<16>(d, a, b0, b1, [](const Slot& s, int g, int t, float (&A)[16][16], float (&B)[16][8]) {
    auto lo = [](uint32_t w) { return dec<E>(uint16_t(w & 0xFFFF)); };
    auto hi = [](uint32_t w) { return dec<E>(uint16_t(w >> 16)); };
    A[g][2 * t] = lo(s.a[0]), A[g][2 * t + 1] = hi(s.a[0]);
    A[g + 8][2 * t] = lo(s.a[1]), A[g + 8][2 * t + 1] = hi(s.a[1]);
    A[g][2 * t + 8] = lo(s.a[2]), A[g][2 * t + 9] = hi(s.a[2]);
    A[g + 8][2 * t + 8] = lo(s.a[3]), A[g + 8][2 * t + 9] = hi(s.a[3]);
    B[2 * t][g] = lo(s.b[0]), B[2 * t + 1][g] = hi(s.b[0]);
    B[2 * t + 8][g] = lo(s.b[1]), B[2 * t + 9][g] = hi(s.b[1]);
  });
}
// m16n8k8 on TF32 registers (the float bits, rounded by to_tf32).
inline void mma_1688_tf32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  warp_product<8>(d, a, b0, b1, [](const Slot& s, int g, int t, float (&A)[16][8], float (&B)[8][8]) {
    auto f = [](uint32_t u) { float x; std::memcpy(&x, &u, 4); return x; };
    A[g][t] = f(s.a[0]), A[g + 8][t] = f(s.a[1]), A[g][t + 4] = f(s.a[2]), A[g + 8][t + 4] = f(s.a[3]);
    B[t][g] = f(s.b[0]), B[t + 4][g] = f(s.b[1]);
  });
}
// Rounds to 10 mantissa bits, to nearest with ties away from zero (cvt.rna.tf32.f32).
inline uint32_t to_tf32(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7F800000u) != 0x7F800000u) u = (u + 0x1000u) & ~0x1FFFu;
  return u;
}
inline void ldsm_impl(uint32_t (&r)[4], const void* row, bool trans) {
  const int lane = threadIdx.x % 32, base = threadIdx.x - lane, g = lane / 4, t = lane % 4;
  g_slot[threadIdx.x].p = row;
  if (reinterpret_cast<uintptr_t>(row) % 16 != 0) { std::fprintf(stderr, "ldmatrix: unaligned row\n"); std::abort(); }
  __syncwarp();
  for (int m = 0; m < 4; ++m) {
    uint16_t lo, hi;
    if (!trans) {
      const uint16_t* p = static_cast<const uint16_t*>(g_slot[base + 8 * m + g].p);
      lo = p[2 * t]; hi = p[2 * t + 1];
    } else {
      lo = static_cast<const uint16_t*>(g_slot[base + 8 * m + 2 * t].p)[g];
      hi = static_cast<const uint16_t*>(g_slot[base + 8 * m + 2 * t + 1].p)[g];
    }
    r[m] = uint32_t(lo) | (uint32_t(hi) << 16);
  }
  __syncwarp();
}
inline void ldsm_x4(uint32_t (&r)[4], const void* row) { ldsm_impl(r, row, false); }
inline void ldsm_x4_trans(uint32_t (&r)[4], const void* row) { ldsm_impl(r, row, true); }
struct Pending { void* dst; unsigned char data[16]; };
inline std::vector<Pending> g_pending[1024];  // per CUDA thread of the running block
inline long g_cp_count = 0;
inline void cp_async_16(void* dst, const void* src, bool valid) {
  if (reinterpret_cast<uintptr_t>(dst) % 16 || (valid && reinterpret_cast<uintptr_t>(src) % 16)) {
    std::fprintf(stderr, "cp.async: unaligned\n"); std::abort();
  }
  Pending p; p.dst = dst;
  if (valid) std::memcpy(p.data, src, 16); else std::memset(p.data, 0, 16);
  std::memset(dst, 0xFF, 16);  // NaN until the wait
  g_pending[threadIdx.x].push_back(p);
}
inline void cp_async_commit() {}
inline void cp_async_wait_all() {
  for (auto& p : g_pending[threadIdx.x]) std::memcpy(p.dst, p.data, 16);
  g_pending[threadIdx.x].clear();
}
// ex2.approx.ftz: subnormal results are flushed to 0 (the kernels rely on it for exp_or_zero's rule).
inline float ex2_approx(float x) {
  const float y = std::exp2(x);
  return std::fpclassify(y) == FP_SUBNORMAL ? 0.0f : y;
}
template <class E> inline uint32_t pack2(float lo, float hi) {
  return uint32_t(enc<E>(lo)) | (uint32_t(enc<E>(hi)) << 16);
}
}  // namespace txtcls::cuda::warp
