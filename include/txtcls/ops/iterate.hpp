#pragma once
// Strided loops for CPU kernels. Operand 0 is usually a fresh contiguous output; the others
// are arbitrary strided views (broadcast dims have stride 0). Rows of the innermost dim are
// the unit of work for OpenMP.
#include <array>

#include "txtcls/core/config.hpp"
#include "txtcls/tensor/shape.hpp"

namespace txtcls::detail {

// Calls body(linear_index, offsets) for every element of `shape` in row-major order, where
// offsets[k] is the element offset in operand k with strides strides[k].
template <size_t N, class Body>
void for_each_strided(const Shape& shape, const std::array<const Shape*, N>& strides, Body&& body) {
  const int64_t nd = static_cast<int64_t>(shape.size());
  const int64_t total = numel_of(shape);
  if (total == 0) return;
  if (nd == 0) {
    std::array<int64_t, N> offs{};
    body(int64_t{0}, offs);
    return;
  }
  const int64_t inner = shape[nd - 1];
  const int64_t rows = total / inner;
  std::array<int64_t, N> inner_stride;
  for (size_t k = 0; k < N; ++k) inner_stride[k] = (*strides[k])[nd - 1];
#pragma omp parallel for schedule(static) if (total > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    std::array<int64_t, N> offs{};
    int64_t rem = r;
    for (int64_t d = nd - 2; d >= 0; --d) {
      int64_t i = rem % shape[d];
      rem /= shape[d];
      for (size_t k = 0; k < N; ++k) offs[k] += i * (*strides[k])[d];
    }
    std::array<int64_t, N> o = offs;
    for (int64_t j = 0; j < inner; ++j) {
      body(r * inner + j, o);
      for (size_t k = 0; k < N; ++k) o[k] += inner_stride[k];
    }
  }
}

// Strides of `s` broadcast (expanded) to `out` shape: stride 0 on broadcast dims.
inline Shape broadcast_strides(const Shape& s, const Shape& strides, const Shape& out) {
  Shape r(out.size(), 0);
  size_t lead = out.size() - s.size();
  for (size_t i = 0; i < s.size(); ++i) r[lead + i] = (s[i] == 1 && out[lead + i] != 1) ? 0 : strides[i];
  return r;
}

}  // namespace txtcls::detail
