// Elementwise kernels: map an ops/functors.hpp functor over 0-3 inputs into an output, with
// broadcasting and arbitrary strides. Two paths:
//   contiguous  every operand flat and dense: 16-byte vector loads and stores when the pointers
//               allow it (float4 / double2), a scalar loop for the head and tail;
//   strided     offsets from the merged geometry (at most kMaxDims dims; geometry.cuh), one
//               division per dim, in 32 bits where every offset fits.
// Both are grid-stride loops, so any n runs with a bounded grid.
#include <cstdint>

#include "geometry.cuh"
#include "launch.cuh"
#include "txtcls/cuda/elementwise.hpp"
#include "txtcls/ops/functors.hpp"

namespace txtcls::cuda {
namespace {

// The per-element operation of each entry point: a functor of N inputs.
template <class F> struct ApplyF {
  F f;
  template <class T> __device__ __forceinline__ T operator()(T x) const { return f.template f<T>(x); }
};
template <class F> struct ApplyBinary {
  F f;
  template <class T> __device__ __forceinline__ T operator()(T a, T b) const { return f(a, b); }
};
template <class F> struct ApplyGrad {
  F f;
  template <class T> __device__ __forceinline__ T operator()(T g, T x, T y) const { return g * f.template df<T>(x, y); }
};
template <class T> struct Constant {
  T v;
  __device__ __forceinline__ T operator()() const { return v; }
};

template <class T, int N> struct Inputs {
  const T* p[N > 0 ? N : 1];
};

template <class T, int N, class Op>
__device__ __forceinline__ T apply(const Op& op, const T (&v)[N > 0 ? N : 1]) {
  if constexpr (N == 0) return op();
  else if constexpr (N == 1) return op(v[0]);
  else if constexpr (N == 2) return op(v[0], v[1]);
  else return op(v[0], v[1], v[2]);
}

template <class T, int N, class Op>
__global__ void map_contiguous(Op op, Inputs<T, N> in, T* __restrict__ out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    T v[N > 0 ? N : 1];
    for (int k = 0; k < N; ++k) v[k] = in.p[k][i];
    out[i] = apply<T, N>(op, v);
  }
}

// 16-byte packs: every pointer must be 16-byte aligned (checked by the launcher).
template <class T> struct alignas(16) Pack {
  static constexpr int kWidth = 16 / sizeof(T);
  T v[kWidth];
};

template <class T, int N, class Op>
__global__ void map_vectorized(Op op, Inputs<T, N> in, T* __restrict__ out, int64_t npacks) {
  constexpr int W = Pack<T>::kWidth;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < npacks; i += int64_t(gridDim.x) * blockDim.x) {
    Pack<T> x[N > 0 ? N : 1];
    for (int k = 0; k < N; ++k) x[k] = reinterpret_cast<const Pack<T>*>(in.p[k])[i];
    Pack<T> r;
#pragma unroll
    for (int w = 0; w < W; ++w) {
      T v[N > 0 ? N : 1];
      for (int k = 0; k < N; ++k) v[k] = x[k].v[w];
      r.v[w] = apply<T, N>(op, v);
    }
    reinterpret_cast<Pack<T>*>(out)[i] = r;
  }
}

// Offsets in I (geometry.cuh): uint32_t where fits_32bit(g), int64_t otherwise.
template <class I, class T, int N, class Op>
__global__ void map_strided(Op op, Inputs<T, N> in, T* out, Geometry g) {
  const I n = static_cast<I>(g.numel);
  for (I i = grid_first<I>(); i < n; i += grid_step<I>()) {
    I off[N + 1];
    geometry_offsets<I, N + 1>(i, g, off);
    T v[N > 0 ? N : 1];
    for (int k = 0; k < N; ++k) v[k] = in.p[k][off[k + 1]];
    out[off[0]] = apply<T, N>(op, v);
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <class T, int N, class Op>
void launch_map(const Op& op, Inputs<T, N> in, T* out, const Geometry& g, const char* name) {
  TXTCLS_CHECK(g.operands == N + 1, name, ": geometry has ", g.operands, " operands, expected ", N + 1);
  if (g.numel == 0) return;
  cudaStream_t stream = active_stream();
  if (!g.contiguous()) {
    if (fits_32bit(g)) map_strided<uint32_t, T, N><<<grid_for(g.numel), kBlock, 0, stream>>>(op, in, out, g);
    else map_strided<int64_t, T, N><<<grid_for(g.numel), kBlock, 0, stream>>>(op, in, out, g);
    TXTCLS_KERNEL_CHECK(name);
    return;
  }
  constexpr int W = Pack<T>::kWidth;
  bool vec = g.numel >= 4 * W && aligned16(out);
  for (int k = 0; k < N; ++k) vec = vec && aligned16(in.p[k]);
  int64_t done = 0;
  if (vec) {
    const int64_t npacks = g.numel / W;
    map_vectorized<T, N><<<grid_for(npacks), kBlock, 0, stream>>>(op, in, out, npacks);
    TXTCLS_KERNEL_CHECK(name);
    done = npacks * W;
  }
  if (done < g.numel) {  // the tail after the packs, or everything when unaligned
    Inputs<T, N> rest = in;
    for (int k = 0; k < N; ++k) rest.p[k] += done;
    map_contiguous<T, N><<<grid_for(g.numel - done), kBlock, 0, stream>>>(op, rest, out + done, g.numel - done);
    TXTCLS_KERNEL_CHECK(name);
  }
}

}  // namespace

template <class T, class F>
void unary(const F& f, const T* x, T* out, const Geometry& g) {
  launch_map<T, 1>(ApplyF<F>{f}, Inputs<T, 1>{{x}}, out, g, "unary");
}

template <class T, class F>
void binary(const F& f, const T* a, const T* b, T* out, const Geometry& g) {
  launch_map<T, 2>(ApplyBinary<F>{f}, Inputs<T, 2>{{a, b}}, out, g, "binary");
}

template <class T, class F>
void unary_grad(const F& f, const T* grad, const T* x, const T* y, T* out, const Geometry& g) {
  launch_map<T, 3>(ApplyGrad<F>{f}, Inputs<T, 3>{{grad, x, y}}, out, g, "unary_grad");
}

template <class T>
void fill(T v, T* out, const Geometry& g) {
  launch_map<T, 0>(Constant<T>{v}, Inputs<T, 0>{{nullptr}}, out, g, "fill");
}

// ---------------------------------------------------------------- instantiations
// The functors the ops dispatch to the GPU; a new one is added here and in ops/elementwise.hpp.
#define TXTCLS_UNARY(T, F)                                                    \
  template void unary<T, fn::F>(const fn::F&, const T*, T*, const Geometry&); \
  template void unary_grad<T, fn::F>(const fn::F&, const T*, const T*, const T*, T*, const Geometry&);
#define TXTCLS_BINARY(T, F) template void binary<T, fn::F>(const fn::F&, const T*, const T*, T*, const Geometry&);
#define TXTCLS_ELEMENTWISE(T)                                                                                   \
  TXTCLS_UNARY(T, Neg) TXTCLS_UNARY(T, Exp) TXTCLS_UNARY(T, Log) TXTCLS_UNARY(T, Sqrt) TXTCLS_UNARY(T, Rsqrt) \
  TXTCLS_UNARY(T, Pow) TXTCLS_UNARY(T, Tanh) TXTCLS_UNARY(T, Sigmoid) TXTCLS_UNARY(T, Relu)                  \
  TXTCLS_UNARY(T, GeluErf) TXTCLS_UNARY(T, GeluTanh) TXTCLS_UNARY(T, Softplus) TXTCLS_UNARY(T, Abs)          \
  TXTCLS_UNARY(T, Identity) TXTCLS_UNARY(T, Affine) TXTCLS_UNARY(T, Rdiv) TXTCLS_UNARY(T, DivBy)            \
  TXTCLS_BINARY(T, Add) TXTCLS_BINARY(T, Sub) TXTCLS_BINARY(T, Mul) TXTCLS_BINARY(T, Div)                    \
  TXTCLS_BINARY(T, EmaStep)                                                                                   \
  template void fill<T>(T, T*, const Geometry&);

TXTCLS_ELEMENTWISE(float)
TXTCLS_ELEMENTWISE(double)

}  // namespace txtcls::cuda
