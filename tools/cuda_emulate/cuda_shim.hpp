// The CUDA constructs the attention, relative attention, graph attention and indexing kernels use,
// emulated on the host so that a kernel's source can be checked without a GPU
// (tools/cuda_emulate/run.sh): every CUDA thread of a block is a fiber with its own stack
// (fibers.hpp), __syncthreads and __syncwarp are real barriers (a warp whose lanes wait at
// different barriers is reported as the deadlock it would be), shuffles and wmma are
// warp-collective exchanges, 16-bit types keep their bits, and shared memory starts as NaN (0xFF
// bytes), so a read of anything not written first shows in the results. Blocks run one after
// another on one OS thread. Blind to timing, bank conflicts and register limits, and to races
// between threads that a barrier does not order (fibers switch only at barriers): a check of the
// logic (indexing, fragment layouts, barriers, masking), not a substitute for the GPU tests.
#pragma once
#include <cmath>
#include <math.h>
#include <cstring>
#include <type_traits>
#include <vector>
#include <functional>
#include "fibers.hpp"
#include "txtcls/io/half.hpp"
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__
#define __restrict__
#define __align__(x)
struct dim3 { unsigned x = 1, y = 1, z = 1; dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {} };
struct uint3e { unsigned x = 0, y = 0, z = 0; };
inline thread_local uint3e threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;
alignas(8) inline unsigned char g_shfl[1024][8];  // a lane's value in a shuffle, as bytes (any type up to 8)
inline void __syncthreads() { emu::wait_at(emu::State::at_block_barrier); }
inline void __syncwarp() { emu::wait_at(emu::State::at_warp_barrier); }
inline void __trap() { std::abort(); }
// Every lane posts its value, then reads lane `src` of its warp's.
template <class T> T warp_exchange(T v, unsigned src) {
  static_assert(sizeof(T) <= 8);
  std::memcpy(g_shfl[threadIdx.x], &v, sizeof v);
  __syncwarp();
  T r;
  std::memcpy(&r, g_shfl[(threadIdx.x & ~31u) + (src & 31u)], sizeof r);
  __syncwarp();
  return r;
}
template <class T> T __shfl_xor_sync(unsigned, T v, int off) { return warp_exchange(v, (threadIdx.x ^ off) & 31u); }
template <class T> T __shfl_sync(unsigned, T v, int lane) { return warp_exchange(v, unsigned(lane)); }
struct __half { uint16_t bits = 0; };
struct __nv_bfloat16 { uint16_t bits = 0; };
inline float __half2float(__half h) { return txtcls::half::f16_to_float(h.bits); }
inline float __bfloat162float(__nv_bfloat16 h) { return txtcls::half::bf16_to_float(h.bits); }
inline __half __float2half_rn(float x) { return {txtcls::half::float_to_f16(x)}; }
inline __nv_bfloat16 __float2bfloat16_rn(float x) { return {txtcls::half::float_to_bf16(x)}; }
namespace nvcuda::wmma {
struct matrix_a {}; struct matrix_b {}; struct accumulator {}; struct row_major {}; struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
namespace precision { struct tf32 {}; }
template <class Use, int M, int N, int K, class T, class Lay = void> struct fragment {
  static constexpr int R = std::is_same_v<Use, matrix_b> ? K : M;
  static constexpr int C = std::is_same_v<Use, matrix_a> ? K : N;
  static constexpr int num_elements = R * C;
  float x[R * C];
};
inline float tof(float v) { return v; }
inline float tof(__half v) { return __half2float(v); }
inline float tof(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class Use, int M, int N, int K, class T, class Lay, class P>
void load_matrix_sync(fragment<Use, M, N, K, T, Lay>& f, const P* p, unsigned ldm) {
  using F = fragment<Use, M, N, K, T, Lay>;
  for (int r = 0; r < F::R; ++r)
    for (int c = 0; c < F::C; ++c) f.x[r * F::C + c] = tof(std::is_same_v<Lay, col_major> ? p[c * ldm + r] : p[r * ldm + c]);
  __syncwarp();  // warp-collective: every lane has read before any lane writes
}
template <int K>
void load_matrix_sync(fragment<accumulator, 16, 16, K, float>& f, const float* p, unsigned ldm, layout_t) {
  for (int r = 0; r < 16; ++r) for (int c = 0; c < 16; ++c) f.x[r * 16 + c] = p[r * ldm + c];
  __syncwarp();
}
template <int K>
void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, K, float>& f, unsigned ldm, layout_t) {
  __syncwarp();
  if (threadIdx.x % 32 == 0)
    for (int r = 0; r < 16; ++r) for (int c = 0; c < 16; ++c) p[r * ldm + c] = f.x[r * 16 + c];
  __syncwarp();
}
template <class F> void fill_fragment(F& f, float v) { for (int i = 0; i < F::num_elements; ++i) f.x[i] = v; }
template <int K, class T, class LA, class LB>
void mma_sync(fragment<accumulator, 16, 16, K, float>& d, const fragment<matrix_a, 16, 16, K, T, LA>& a,
              const fragment<matrix_b, 16, 16, K, T, LB>& b, const fragment<accumulator, 16, 16, K, float>& c) {
  float out[256];
  for (int m = 0; m < 16; ++m) for (int n = 0; n < 16; ++n) {
    float s = c.x[m * 16 + n];
    for (int k = 0; k < K; ++k) s += a.x[m * K + k] * b.x[k * 16 + n];
    out[m * 16 + n] = s;
  }
  std::memcpy(d.x, out, sizeof out);
}
inline float __float_to_tf32(float x) {  // round to 10 mantissa bits, nearest
  uint32_t u; std::memcpy(&u, &x, 4); u = (u + 0x1000u) & ~0x1FFFu; std::memcpy(&x, &u, 4); return x;
}
}
using std::exp; using std::log; using std::fma;
template <class T> T max(T a, T b) { return a > b ? a : b; }
template <class T> T min(T a, T b) { return a < b ? a : b; }
typedef void* cudaStream_t;
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
enum cudaDeviceAttr { cudaDevAttrComputeCapabilityMajor };
template <class K> int cudaFuncSetAttribute(K, cudaFuncAttribute, int) { return 0; }
inline int cudaGetDevice(int* d) { *d = 0; return 0; }
struct cudaFuncAttributes { int ptxVersion = 0; };
template <class K> int cudaFuncGetAttributes(cudaFuncAttributes* a, K) { a->ptxVersion = 80; return 0; }
inline int cudaDeviceGetAttribute(int* v, cudaDeviceAttr, int) { *v = 8; return 0; }
#define TXTCLS_CUDA_CHECK(x) (void)(x)
#define TXTCLS_KERNEL_CHECK(n) (void)0
namespace txtcls::cuda {
using std::exp; using std::log; using std::fma; using ::max; using ::min;
inline cudaStream_t active_stream() { return nullptr; }
inline constexpr int kBlock = 256;
template <class K> void allow_dynamic_smem(K, int) {}
inline unsigned grid_for(int64_t n, int block = kBlock) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((n + block - 1) / block, int64_t(1) << 16)));
}
}
alignas(128) inline unsigned char g_smem[1 << 18];
inline int g_max_smem = 0;
template <class K, class... A>
void emu_launch(K kernel, dim3 grid, int block, int smem, cudaStream_t, A... args) {
  if (smem > g_max_smem) g_max_smem = smem;
  if (block > 1024) std::fprintf(stderr, "emulation: block of %d threads\n", block), std::abort();
  const std::function<void()> body = [&] { kernel(args...); };
  for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      std::memset(g_smem, 0xFF, sizeof g_smem);  // NaN garbage: an unwritten read shows
      blockIdx = {bx, by, 0};
      blockDim = dim3(block);
      gridDim = grid;
      emu::run_block(block, body, [](unsigned t) { threadIdx = {t, 0, 0}; });
    }
}
