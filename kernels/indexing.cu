// The indexing ops on the GPU: gather and index_select with their backwards, the row copy of
// concat, the select of masked_fill / where, and scalar comparisons that produce masks. The
// backwards never race: a thread owns whole gradient lines (gather) or elements (index_select)
// and adds into them in index order, as the CPU op does, so the results do not depend on the
// launch and match the CPU's summation order.
#include <cstdint>

#include "geometry.cuh"
#include "launch.cuh"
#include "txtcls/cuda/indexing.hpp"

namespace txtcls::cuda {
namespace {

// The input's shape for gather's backward, by value as a kernel argument.
struct GatherShape {
  int64_t size[kMaxDims] = {};
};

#define GRID_STRIDE(e, n) \
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < (n); e += int64_t(gridDim.x) * blockDim.x)

// Offset into x of output element e (row-major in g.size), without the gathered dim's term.
__device__ __forceinline__ int64_t gather_base(int64_t e, const GatherGeometry& g) {
  int64_t off = 0;
  for (int k = g.nd - 1; k >= 0; --k) {
    const int64_t i = e % g.size[k];
    e /= g.size[k];
    if (k != g.dim) off += i * g.xstride[k];
  }
  return off;
}

template <class T>
__global__ void gather_kernel(const T* __restrict__ x, const int64_t* __restrict__ idx, T* __restrict__ out,
                              int64_t n, GatherGeometry g) {
  GRID_STRIDE(e, n) out[e] = x[gather_base(e, g) + idx[e] * g.xstride[g.dim]];
}

// One thread per line of gx along dim (the lines are gx's elements with dim's index fixed to 0):
// zero the line, then, if the line lies inside the index's extent, add g along the index's line
// in order. xshape: gx's shape (contiguous), g.size: the index's.
template <class T>
__global__ void gather_backward_kernel(const T* __restrict__ grad, const int64_t* __restrict__ idx, T* __restrict__ gx,
                                       int64_t lines, GatherShape xs, GatherGeometry g) {
  GRID_STRIDE(line, lines) {
    // Multi-index of the line over xs with dim removed, the offsets in gx and in g / idx.
    int64_t rest = line, gx_off = 0, g_off = 0, gx_stride = 1, g_stride = 1;
    int64_t gx_dim_stride = 1, g_dim_stride = 1;
    bool inside = true;
    for (int k = g.nd - 1; k >= 0; --k) {
      if (k == g.dim) {
        gx_dim_stride = gx_stride;
        g_dim_stride = g_stride;
      } else {
        const int64_t i = rest % xs.size[k];
        rest /= xs.size[k];
        inside = inside && i < g.size[k];
        gx_off += i * gx_stride;
        g_off += i * g_stride;
      }
      gx_stride *= xs.size[k];
      g_stride *= g.size[k];
    }
    T* dst = gx + gx_off;
    for (int64_t s = 0; s < xs.size[g.dim]; ++s) dst[s * gx_dim_stride] = T(0);
    if (!inside) continue;
    for (int64_t j = 0; j < g.size[g.dim]; ++j) {
      const int64_t p = g_off + j * g_dim_stride;
      dst[idx[p] * gx_dim_stride] += grad[p];
    }
  }
}

template <class T>
__global__ void index_select_kernel(const T* __restrict__ x, const int64_t* __restrict__ idx, T* __restrict__ out,
                                    int64_t outer, int64_t S, int64_t n, int64_t inner) {
  GRID_STRIDE(e, outer * n * inner) {
    const int64_t k = e % inner, j = (e / inner) % n, o = e / (inner * n);
    out[e] = x[(o * S + idx[j]) * inner + k];
  }
}

template <class T>
__global__ void index_select_backward_kernel(const T* __restrict__ grad, const int64_t* __restrict__ order,
                                             const int64_t* __restrict__ starts, T* __restrict__ gx, int64_t outer,
                                             int64_t S, int64_t n, int64_t inner) {
  GRID_STRIDE(e, outer * S * inner) {
    const int64_t k = e % inner, s = (e / inner) % S, o = e / (inner * S);
    T acc = T(0);
    for (int64_t p = starts[s]; p < starts[s + 1]; ++p) acc += grad[(o * n + order[p]) * inner + k];
    gx[e] = acc;
  }
}

template <class T>
__global__ void copy_rows_kernel(const T* __restrict__ src, int64_t src_pitch, T* __restrict__ dst, int64_t dst_pitch,
                                 int64_t rows, int64_t width) {
  GRID_STRIDE(e, rows * width) {
    const int64_t r = e / width, c = e % width;
    dst[r * dst_pitch + c] = src[r * src_pitch + c];
  }
}

// Offsets in I (geometry.cuh): uint32_t where fits_32bit(g), int64_t otherwise.
template <class I, class T>
__global__ void select_kernel(const uint8_t* __restrict__ c, const T* __restrict__ a, const T* __restrict__ b,
                              T* __restrict__ out, Geometry g) {
  const I n = static_cast<I>(g.numel);
  for (I e = grid_first<I>(); e < n; e += grid_step<I>()) {
    I off[4];
    geometry_offsets<I, 4>(e, g, off);
    out[off[0]] = c[off[1]] != 0 ? a[off[2]] : b[off[3]];
  }
}

template <class I, class T>
__global__ void compare_kernel(const T* __restrict__ x, T v, Compare op, uint8_t* __restrict__ out, Geometry g) {
  const I n = static_cast<I>(g.numel);
  for (I e = grid_first<I>(); e < n; e += grid_step<I>()) {
    I off[2];
    geometry_offsets<I, 2>(e, g, off);
    const T a = x[off[1]];
    bool r = false;
    switch (op) {
      case Compare::Lt: r = a < v; break;
      case Compare::Le: r = a <= v; break;
      case Compare::Gt: r = a > v; break;
      case Compare::Ge: r = a >= v; break;
      case Compare::Eq: r = a == v; break;
      case Compare::Ne: r = a != v; break;
    }
    out[off[0]] = r ? 1 : 0;
  }
}

#undef GRID_STRIDE

}  // namespace

template <class T>
void gather(const T* x, const int64_t* idx, T* out, const GatherGeometry& g) {
  int64_t n = 1;
  for (int k = 0; k < g.nd; ++k) n *= g.size[k];
  if (n == 0) return;
  gather_kernel<T><<<grid_for(n), kBlock, 0, active_stream()>>>(x, idx, out, n, g);
  TXTCLS_KERNEL_CHECK("gather");
}

template <class T>
void gather_backward(const T* grad, const int64_t* idx, T* gx, const int64_t* xshape, const GatherGeometry& g) {
  GatherShape xs;
  int64_t lines = 1;
  for (int k = 0; k < g.nd; ++k) {
    xs.size[k] = xshape[k];
    if (k != g.dim) lines *= xshape[k];
  }
  if (lines == 0 || xshape[g.dim] == 0) return;
  gather_backward_kernel<T><<<grid_for(lines), kBlock, 0, active_stream()>>>(grad, idx, gx, lines, xs, g);
  TXTCLS_KERNEL_CHECK("gather_backward");
}

template <class T>
void index_select(const T* x, const int64_t* idx, T* out, int64_t outer, int64_t S, int64_t n, int64_t inner) {
  if (outer * n * inner == 0) return;
  index_select_kernel<T><<<grid_for(outer * n * inner), kBlock, 0, active_stream()>>>(x, idx, out, outer, S, n, inner);
  TXTCLS_KERNEL_CHECK("index_select");
}

template <class T>
void index_select_backward(const T* grad, const int64_t* order, const int64_t* starts, T* gx, int64_t outer,
                           int64_t S, int64_t n, int64_t inner) {
  if (outer * S * inner == 0) return;
  index_select_backward_kernel<T><<<grid_for(outer * S * inner), kBlock, 0, active_stream()>>>(grad, order, starts, gx,
                                                                                               outer, S, n, inner);
  TXTCLS_KERNEL_CHECK("index_select_backward");
}

template <class T>
void copy_rows(const T* src, int64_t src_pitch, T* dst, int64_t dst_pitch, int64_t rows, int64_t width) {
  if (rows * width == 0) return;
  copy_rows_kernel<T><<<grid_for(rows * width), kBlock, 0, active_stream()>>>(src, src_pitch, dst, dst_pitch, rows,
                                                                              width);
  TXTCLS_KERNEL_CHECK("copy_rows");
}

template <class T>
void select(const uint8_t* cond, const T* a, const T* b, T* out, const Geometry& g) {
  if (g.numel == 0) return;
  if (fits_32bit(g)) select_kernel<uint32_t, T><<<grid_for(g.numel), kBlock, 0, active_stream()>>>(cond, a, b, out, g);
  else select_kernel<int64_t, T><<<grid_for(g.numel), kBlock, 0, active_stream()>>>(cond, a, b, out, g);
  TXTCLS_KERNEL_CHECK("select");
}

template <class T>
void compare_scalar(const T* x, T v, Compare op, uint8_t* out, const Geometry& g) {
  if (g.numel == 0) return;
  if (fits_32bit(g)) compare_kernel<uint32_t, T><<<grid_for(g.numel), kBlock, 0, active_stream()>>>(x, v, op, out, g);
  else compare_kernel<int64_t, T><<<grid_for(g.numel), kBlock, 0, active_stream()>>>(x, v, op, out, g);
  TXTCLS_KERNEL_CHECK("compare_scalar");
}

#define TXTCLS_INDEXING(T)                                                                                        \
  template void gather<T>(const T*, const int64_t*, T*, const GatherGeometry&);                                   \
  template void gather_backward<T>(const T*, const int64_t*, T*, const int64_t*, const GatherGeometry&);          \
  template void index_select<T>(const T*, const int64_t*, T*, int64_t, int64_t, int64_t, int64_t);                \
  template void index_select_backward<T>(const T*, const int64_t*, const int64_t*, T*, int64_t, int64_t, int64_t, \
                                         int64_t);                                                                \
  template void copy_rows<T>(const T*, int64_t, T*, int64_t, int64_t, int64_t);                                   \
  template void select<T>(const uint8_t*, const T*, const T*, T*, const Geometry&);                               \
  template void compare_scalar<T>(const T*, T, Compare, uint8_t*, const Geometry&);
TXTCLS_INDEXING(float)
TXTCLS_INDEXING(double)

}  // namespace txtcls::cuda
