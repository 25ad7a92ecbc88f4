#pragma once
// Host-side face of the CUDA elementwise and reduction kernels (kernels/elementwise.cu,
// kernels/reduce.cu). Compiles without nvcc: the ops in include/txtcls/ops/ call these when a
// tensor lives on a CUDA device and the build defines TXTCLS_WITH_CUDA.
//
// The kernels are templates over the value type (float, double) and the functor of
// ops/functors.hpp, explicitly instantiated in the .cu files for the functors the library uses:
// the arithmetic is written once and runs in the CPU loops and the CUDA kernels alike.
//
// Geometry: every operand (operand 0 is the output) is described by its strides over the
// output's shape (0 on broadcast dims). make_geometry merges dims that are contiguous for every
// operand, so most calls reach the kernels as one flat dim and take the vectorized path.
#include <array>
#include <cstdint>
#include <initializer_list>

#include "txtcls/core/error.hpp"
#include "txtcls/tensor/shape.hpp"

namespace txtcls::cuda {

inline constexpr int kMaxDims = 8;      // after merging; more is refused with an error
inline constexpr int kMaxOperands = 4;  // the output and up to three inputs

struct Geometry {
  int nd = 0;          // 0: a single element
  int operands = 0;
  int64_t numel = 1;
  int64_t size[kMaxDims] = {};
  int64_t stride[kMaxOperands][kMaxDims] = {};
  // Every operand walks memory contiguously in output order (strides 1 over the merged dim).
  bool contiguous() const {
    if (nd == 0) return true;
    if (nd != 1) return false;
    for (int k = 0; k < operands; ++k)
      if (stride[k][0] != 1) return false;
    return true;
  }
};

// Whether a kernel may walk g in 32 bits (kernels/geometry.cuh, uint32_t): the element count and
// every operand's furthest offset below 2^31 (so that e + grid_step, < 2^32, cannot wrap either),
// strides non-negative.
inline bool fits_32bit(const Geometry& g) {
  constexpr int64_t kMax = (int64_t(1) << 31) - 1;
  if (g.numel > kMax) return false;
  for (int k = 0; k < g.operands; ++k) {
    int64_t furthest = 0;
    for (int d = 0; d < g.nd; ++d) {
      if (g.stride[k][d] < 0) return false;
      furthest += (g.size[d] - 1) * g.stride[k][d];
    }
    if (furthest > kMax) return false;
  }
  return true;
}

// shape: the output's shape; strides: one stride list per operand over that shape (operand 0:
// the output's own strides).
inline Geometry make_geometry(const Shape& shape, std::initializer_list<Shape> strides, const char* op) {
  Geometry g;
  g.operands = static_cast<int>(strides.size());
  TXTCLS_CHECK(g.operands >= 1 && g.operands <= kMaxOperands, op, ": ", g.operands, " operands (at most ",
               kMaxOperands, ")");
  std::array<const Shape*, kMaxOperands> st{};
  int k = 0;
  for (const Shape& s : strides) st[k++] = &s;
  g.numel = numel_of(shape);
  // Walk from the innermost dim outwards, dropping size-1 dims and merging a dim into the one
  // inside it when every operand steps over the inner one exactly.
  int64_t rsize[64];
  int64_t rstride[kMaxOperands][64];
  int n = 0;
  for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
    if (shape[d] == 1) continue;
    bool merge = n > 0;
    for (int o = 0; o < g.operands && merge; ++o) merge = (*st[o])[d] == rstride[o][n - 1] * rsize[n - 1];
    if (merge) {
      rsize[n - 1] *= shape[d];
      continue;
    }
    TXTCLS_CHECK(n < 64, op, ": too many dims in ", shape_str(shape));
    rsize[n] = shape[d];
    for (int o = 0; o < g.operands; ++o) rstride[o][n] = (*st[o])[d];
    ++n;
  }
  TXTCLS_CHECK(n <= kMaxDims, op, ": shape ", shape_str(shape), " has ", n,
               " dims that cannot be merged; the CUDA kernels take at most ", kMaxDims, " (make an operand contiguous)");
  g.nd = n;
  for (int i = 0; i < n; ++i) {  // back to outermost-first order
    g.size[i] = rsize[n - 1 - i];
    for (int o = 0; o < g.operands; ++o) g.stride[o][i] = rstride[o][n - 1 - i];
  }
  return g;
}

// out = f.f(x)                      (operands: out, x)
template <class T, class F> void unary(const F& f, const T* x, T* out, const Geometry& g);
// out = f(a, b)                     (operands: out, a, b)
template <class T, class F> void binary(const F& f, const T* a, const T* b, T* out, const Geometry& g);
// out = g * f.df(x, y), y = f.f(x)  (operands: out, grad, x, y)
template <class T, class F> void unary_grad(const F& f, const T* grad, const T* x, const T* y, T* out, const Geometry& g);
// out = v                           (operands: out)
template <class T> void fill(T v, T* out, const Geometry& g);

// Sum reduction: out[k] = sum over r of x at kept offset k and reduced offset r. `kept` is the
// geometry of the K outputs (operand 0: out, contiguous; operand 1: x's strides over the kept
// dims), `reduced` the geometry of the R summed elements (operand 0: x's strides over the
// reduced dims). Summation order is fixed by the shapes alone, so results are reproducible.
template <class T> void sum(const T* x, T* out, const Geometry& kept, const Geometry& reduced);

}  // namespace txtcls::cuda
