#pragma once
// max / min over one dim (values, differentiable) and argmax / argmin (indices, no autograd), as
// torch.max(x, dim). Ties go to the first occurrence, and the backward routes the whole gradient
// to that one element, as PyTorch does.
//
// NaN: a NaN beats every number (it is "larger" for max and "smaller" for min), so a NaN in a
// slice propagates into the value and the index is that of the first NaN. This is PyTorch's
// convention and keeps a diverged model visibly diverged instead of silently picking a number.
#include <limits>

#include "txtcls/cuda/max.hpp"
#include "txtcls/ops/elementwise.hpp"

namespace txtcls {

namespace detail {

// A tensor seen as [outer, n, inner] around one dim; a 0-d tensor counts as [1].
struct DimSplit {
  int64_t dim = 0, outer = 1, n = 1, inner = 1;
};

inline DimSplit split_at_dim(const Shape& s, int64_t dim, const char* op) {
  const int64_t nd = static_cast<int64_t>(s.size());
  DimSplit g;
  g.dim = wrap_dim(dim, std::max<int64_t>(nd, 1), op);
  if (nd == 0) return g;
  for (int64_t i = 0; i < g.dim; ++i) g.outer *= s[i];
  g.n = s[g.dim];
  for (int64_t i = g.dim + 1; i < nd; ++i) g.inner *= s[i];
  return g;
}

// Kernels that reduce over a non-innermost dim work on column slabs of this many elements, so that
// a task's running state fits on the stack and dim-0 reductions still spread over threads.
inline constexpr int64_t kColumnSlab = 256;

// Whether v replaces best as the running max (IsMax) or min; NaN wins once and then stays.
template <bool IsMax, class T>
inline bool beats(T v, T best) {
  const bool better = IsMax ? (v > best) : (v < best);
  return better || (v != v && best == best);
}

// vals[o*inner + i], idx[o*inner + i] = extreme of x[o, :, i] over n >= 1 for a contiguous x.
template <bool IsMax, class T>
void arg_extreme_kernel(const T* x, const DimSplit& g, T* vals, int64_t* idx) {
  const int64_t outer = g.outer, n = g.n, inner = g.inner, total = outer * n * inner;
  if (inner == 1) {
#pragma omp parallel for schedule(static) if (total > kParallelGrain)
    for (int64_t o = 0; o < outer; ++o) {
      const T* row = x + o * n;
      T best = row[0];
      int64_t at = 0;
      for (int64_t j = 1; j < n; ++j) {
        if (beats<IsMax>(row[j], best)) {
          best = row[j];
          at = j;
        }
      }
      vals[o] = best;
      idx[o] = at;
    }
    return;
  }
  const int64_t slabs = (inner + kColumnSlab - 1) / kColumnSlab;
#pragma omp parallel for schedule(static) if (total > kParallelGrain)
  for (int64_t task = 0; task < outer * slabs; ++task) {
    const int64_t o = task / slabs, i0 = (task % slabs) * kColumnSlab, w = std::min(kColumnSlab, inner - i0);
    const T* base = x + o * n * inner + i0;
    T* bv = vals + o * inner + i0;
    int64_t* bi = idx + o * inner + i0;
    for (int64_t i = 0; i < w; ++i) {
      bv[i] = base[i];
      bi[i] = 0;
    }
    for (int64_t j = 1; j < n; ++j) {
      const T* row = base + j * inner;
      for (int64_t i = 0; i < w; ++i) {
        const bool b = beats<IsMax>(row[i], bv[i]);
        bv[i] = b ? row[i] : bv[i];
        bi[i] = b ? j : bi[i];
      }
    }
  }
}

template <class T>
Shape shape_without_dim(const Tensor<T>& x, const DimSplit& g, bool keepdim) {
  if (x.dim() == 0) return {};
  Shape s = x.shape();
  if (keepdim) s[g.dim] = 1;
  else s.erase(s.begin() + g.dim);
  return s;
}

// Values and indices of the extreme along `dim`; both contiguous with the reduced shape.
template <bool IsMax, class T>
std::pair<Tensor<T>, Tensor<int64_t>> arg_extreme(const Tensor<T>& x, int64_t dim, bool keepdim, const char* op) {
  const DimSplit g = split_at_dim(x.shape(), dim, op);
  TXTCLS_CHECK(g.n > 0, op, ": cannot reduce over dim ", g.dim, " of size 0 in a tensor of shape ",
               shape_str(x.shape()));
  const Shape os = shape_without_dim(x, g, keepdim);
#ifdef TXTCLS_WITH_CUDA
  if (x.device().is_cuda()) {
    Tensor<T> vals(os, x.device());
    Tensor<int64_t> idx(os, x.device());
    if (vals.numel() > 0) {
      Tensor<T> xc = x.detach().contiguous();
      cuda::arg_extreme<T>(xc.data(), g.outer, g.n, g.inner, IsMax, vals.data(), idx.data());
    }
    return {vals, idx};
  }
#endif
  require_cpu(x, op);
  Tensor<T> vals(os);
  Tensor<int64_t> idx(os);
  if (vals.numel() > 0) {
    Tensor<T> xc = x.detach().contiguous();
    arg_extreme_kernel<IsMax>(xc.data(), g, vals.data(), idx.data());
  }
  return {vals, idx};
}

// Gradient of a max/min value: g lands on the winning element of each slice, zero elsewhere.
template <class T>
Tensor<T> scatter_to_winners(const Tensor<T>& g, const Tensor<int64_t>& idx, const Shape& xs, const DimSplit& s) {
  Tensor<T> gc = g.contiguous();
#ifdef TXTCLS_WITH_CUDA
  if (gc.device().is_cuda()) {
    Tensor<T> gx(xs, gc.device());
    cuda::scatter_to_winners<T>(gc.data(), idx.data(), gx.data(), s.outer, s.n, s.inner);
    return gx;
  }
#endif
  Tensor<T> gx = zeros<T>(xs);
  const T* pg = gc.data();
  const int64_t* pi = idx.data();
  T* px = gx.data();
  const int64_t n = s.n, inner = s.inner;
#pragma omp parallel for schedule(static) if (s.outer * inner > kParallelGrain)
  for (int64_t o = 0; o < s.outer; ++o)
    for (int64_t i = 0; i < inner; ++i) px[(o * n + pi[o * inner + i]) * inner + i] = pg[o * inner + i];
  return gx;
}

template <bool IsMax, class T>
Tensor<T> extreme_values(const Tensor<T>& x, int64_t dim, bool keepdim, const char* op) {
  auto [vals, idx] = arg_extreme<IsMax>(x, dim, keepdim, op);
  const DimSplit s = split_at_dim(x.shape(), dim, op);
  autograd::record<T>(vals, op, {x}, [idx = idx, xs = x.shape(), s](const Tensor<T>& g, const std::vector<bool>&) {
    return std::vector<Tensor<T>>{scatter_to_winners(g, idx, xs, s)};
  });
  return vals;
}

}  // namespace detail

// Largest value along `dim` (NaN counts as largest); gradient to the first maximal element.
template <class T>
Tensor<T> max(const Tensor<T>& x, int64_t dim, bool keepdim = false) {
  return detail::extreme_values<true>(x, dim, keepdim, "max");
}

// Smallest value along `dim` (NaN counts as smallest); gradient to the first minimal element.
template <class T>
Tensor<T> min(const Tensor<T>& x, int64_t dim, bool keepdim = false) {
  return detail::extreme_values<false>(x, dim, keepdim, "min");
}

// Index of the first maximal element along `dim` (of the first NaN, if any).
template <class T>
Tensor<int64_t> argmax(const Tensor<T>& x, int64_t dim, bool keepdim = false) {
  return detail::arg_extreme<true>(x, dim, keepdim, "argmax").second;
}

// Index of the first minimal element along `dim` (of the first NaN, if any).
template <class T>
Tensor<int64_t> argmin(const Tensor<T>& x, int64_t dim, bool keepdim = false) {
  return detail::arg_extreme<false>(x, dim, keepdim, "argmin").second;
}

}  // namespace txtcls
