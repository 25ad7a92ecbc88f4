#pragma once
// Host-side face of the indexing kernels (kernels/indexing.cu): gather, index_select, the copy
// behind concat, the select behind masked_fill / where, and scalar comparisons. Compiles without
// nvcc. Index arrays are device pointers, checked (and for backwards sorted) on the host by the
// ops in ops/indexing.hpp. No backward uses atomics: every gradient element is written by one
// thread, which adds its contributions in index order (the CPU op's order), so results are
// reproducible bit for bit.
#include <cstdint>

#include "txtcls/cuda/elementwise.hpp"

namespace txtcls::cuda {

// Up to kMaxDims dims of an index tensor and the strides of the tensor it indexes.
struct GatherGeometry {
  int nd = 0;
  int dim = 0;                    // the gathered dim
  int64_t size[kMaxDims] = {};    // the index's (and output's) shape
  int64_t xstride[kMaxDims] = {}; // the input's strides (any view)
};

// out (contiguous, the index's shape) = x at index along g.dim; idx contiguous.
template <class T>
void gather(const T* x, const int64_t* idx, T* out, const GatherGeometry& g);

// gx contiguous with shape xshape, every element written: zero, plus g (contiguous, the index's
// shape) added along g.dim at the indexed positions, in index order per line.
template <class T>
void gather_backward(const T* grad, const int64_t* idx, T* gx, const int64_t* xshape, const GatherGeometry& g);

// out [outer, n, inner] = x [outer, S, inner] at rows idx[n] (x contiguous).
template <class T>
void index_select(const T* x, const int64_t* idx, T* out, int64_t outer, int64_t S, int64_t n, int64_t inner);

// gx [outer, S, inner], every element written: row s = sum of g [outer, n, inner] rows j with
// idx[j] == s in increasing j; order: the positions j sorted by idx (stable); starts[S + 1]: the
// positions of row s are order[starts[s] .. starts[s + 1]).
template <class T>
void index_select_backward(const T* grad, const int64_t* order, const int64_t* starts, T* gx, int64_t outer,
                           int64_t S, int64_t n, int64_t inner);

// dst[r * dst_pitch + c] = src[r * src_pitch + c] for r < rows, c < width (elements).
template <class T>
void copy_rows(const T* src, int64_t src_pitch, T* dst, int64_t dst_pitch, int64_t rows, int64_t width);

// out = cond ? a : b; operands out, cond, a, b by their strides over out's shape (make_geometry).
template <class T>
void select(const uint8_t* cond, const T* a, const T* b, T* out, const Geometry& g);

enum class Compare { Lt, Le, Gt, Ge, Eq, Ne };
// out (uint8) = x <op> v ? 1 : 0; operands out, x.
template <class T>
void compare_scalar(const T* x, T v, Compare op, uint8_t* out, const Geometry& g);

}  // namespace txtcls::cuda
