#pragma once
// Host-side face of the max / min / argmax / argmin kernels (kernels/max.cu). Compiles without
// nvcc. The rule is ops/max.hpp's: the first extreme wins, and a NaN beats every number.
#include <cstdint>

namespace txtcls::cuda {

// x contiguous, seen as [outer, n, inner] (n >= 1); vals and idx [outer, inner]: the extreme of
// x[o, :, i] (max when is_max, else min) and the index of its first occurrence.
template <class T>
void arg_extreme(const T* x, int64_t outer, int64_t n, int64_t inner, bool is_max, T* vals, int64_t* idx);

// gx [outer, n, inner], every element written: g[o, i] where j == idx[o, i], else 0.
template <class T>
void scatter_to_winners(const T* g, const int64_t* idx, T* gx, int64_t outer, int64_t n, int64_t inner);

}  // namespace txtcls::cuda
