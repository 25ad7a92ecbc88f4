// Cross entropy fused with log-softmax: one block per row computes the row's max, sum of exp
// (warp shuffles, then shared memory) and loss; the backward writes the softmax-based gradient
// in one pass per row, from the saved log-sum-exp. Accumulation is in double, as on the CPU.
#include <cmath>
#include <cstdint>

#include "launch.cuh"
#include "txtcls/cuda/loss.hpp"

namespace txtcls::cuda {
namespace {

// Block-wide reduction of v with op; every thread gets the result.
template <class Op>
__device__ double block_reduce(double v, Op op) {
  __shared__ double part[32];
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  __syncthreads();  // part[] may still be read by a previous call
  if (lane == 0) part[warp] = v;
  __syncthreads();
  double r = part[0];
  for (int w = 1; w < warps; ++w) r = op(r, part[w]);
  return r;
}

struct MaxOp {
  __device__ double operator()(double a, double b) const { return a > b ? a : b; }
};
struct SumOp {
  __device__ double operator()(double a, double b) const { return a + b; }
};

template <class T>
__global__ void ce_forward(const T* __restrict__ x, const int64_t* __restrict__ target, int64_t C, int64_t ignore_index,
                           double eps, T* __restrict__ row_loss, double* __restrict__ lse) {
  const int64_t i = blockIdx.x;
  const T* row = x + i * C;
  const int64_t t = target[i];
  if (t == ignore_index) {  // uniform per block: every thread returns
    if (threadIdx.x == 0) row_loss[i] = T(0), lse[i] = 0.0;
    return;
  }
  double m = -INFINITY;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) m = max(m, static_cast<double>(row[c]));
  m = block_reduce(m, MaxOp{});
  double s = 0, sx = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    s += exp(static_cast<double>(row[c]) - m);
    sx += static_cast<double>(row[c]);
  }
  s = block_reduce(s, SumOp{});
  sx = block_reduce(sx, SumOp{});
  if (threadIdx.x == 0) {
    const double l = m + log(s);
    lse[i] = l;
    row_loss[i] = static_cast<T>(l - (1.0 - eps) * static_cast<double>(row[t]) -
                                 (eps > 0 ? eps * sx / static_cast<double>(C) : 0.0));
  }
}

template <class T>
__global__ void ce_backward(const T* __restrict__ x, const int64_t* __restrict__ target, const double* __restrict__ lse,
                            const T* __restrict__ g, int64_t g_stride, double scale, int64_t N, int64_t C,
                            int64_t ignore_index, double eps, T* __restrict__ gx) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < N * C; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / C, c = e % C, t = target[i];
    if (t == ignore_index) {
      gx[e] = T(0);
      continue;
    }
    const double w = static_cast<double>(g[i * g_stride]) * scale;
    T v = static_cast<T>(w) * exp(x[e] - static_cast<T>(lse[i])) - static_cast<T>(w * eps / static_cast<double>(C));
    if (c == t) v -= static_cast<T>(w * (1.0 - eps));
    gx[e] = v;
  }
}

}  // namespace

template <class T>
void cross_entropy_forward(const T* x, const int64_t* target, int64_t N, int64_t C, int64_t ignore_index, double eps,
                           T* row_loss, double* lse) {
  if (N == 0) return;
  TXTCLS_CHECK(N < (int64_t(1) << 31), "cross_entropy: ", N, " rows is more than one launch takes");
  int threads = 32;
  while (threads < 256 && threads < C) threads *= 2;
  ce_forward<T><<<static_cast<unsigned>(N), threads, 0, active_stream()>>>(x, target, C, ignore_index, eps, row_loss, lse);
  TXTCLS_KERNEL_CHECK("cross_entropy_forward");
}

template <class T>
void cross_entropy_backward(const T* x, const int64_t* target, const double* lse, const T* g, int64_t g_stride,
                            double scale, int64_t N, int64_t C, int64_t ignore_index, double eps, T* gx) {
  if (N * C == 0) return;
  ce_backward<T><<<grid_for(N * C), kBlock, 0, active_stream()>>>(x, target, lse, g, g_stride, scale, N, C,
                                                                  ignore_index, eps, gx);
  TXTCLS_KERNEL_CHECK("cross_entropy_backward");
}

template void cross_entropy_forward<float>(const float*, const int64_t*, int64_t, int64_t, int64_t, double, float*,
                                           double*);
template void cross_entropy_forward<double>(const double*, const int64_t*, int64_t, int64_t, int64_t, double, double*,
                                            double*);
template void cross_entropy_backward<float>(const float*, const int64_t*, const double*, const float*, int64_t, double,
                                            int64_t, int64_t, int64_t, double, float*);
template void cross_entropy_backward<double>(const double*, const int64_t*, const double*, const double*, int64_t,
                                             double, int64_t, int64_t, int64_t, double, double*);

}  // namespace txtcls::cuda
