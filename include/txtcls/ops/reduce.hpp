#pragma once
// Sum-type reductions over dims (sum, mean) and sum_to, the reduction that undoes broadcasting
// in every binary op's backward.
#include <algorithm>
#include <vector>

#include "txtcls/cuda/elementwise.hpp"
#include "txtcls/tensor/views.hpp"

namespace txtcls {

template <class T> Tensor<T> affine(const Tensor<T>& x, T alpha, T beta);  // ops/elementwise.hpp

namespace detail {

// Normalises a dim list (negative dims, duplicates, empty = all dims) into a mask.
inline std::vector<bool> reduce_mask(const std::vector<int64_t>& dims, int64_t nd, const char* op) {
  std::vector<bool> m(nd, dims.empty());
  for (auto d : dims) {
    int64_t w = wrap_dim(d, nd, op);
    TXTCLS_CHECK(!m[w] || dims.empty(), op, ": dim ", d, " repeated");
    m[w] = true;
  }
  return m;
}

inline Shape reduced_shape(const Shape& s, const std::vector<bool>& m, bool keepdim) {
  Shape r;
  for (size_t i = 0; i < s.size(); ++i) {
    if (!m[i]) r.push_back(s[i]);
    else if (keepdim) r.push_back(1);
  }
  return r;
}

// Sum over the masked dims; returns the keepdim-shaped result.
template <class T>
Tensor<T> sum_kernel(const Tensor<T>& x, const std::vector<bool>& m) {
  const int64_t nd = x.dim();
  Shape kept_shape = reduced_shape(x.shape(), m, true);
#ifdef TXTCLS_WITH_CUDA
  if (x.device().is_cuda()) {
    // The kept dims (x's strides with the reduced ones at size 1) and the reduced dims.
    Shape ks, kx, rs, rx;
    for (int64_t i = 0; i < nd; ++i) {
      (m[i] ? rs : ks).push_back(x.shape()[i]);
      (m[i] ? rx : kx).push_back(x.strides()[i]);
    }
    Tensor<T> out(kept_shape, x.device());
    auto kept = cuda::make_geometry(ks, {contiguous_strides(ks), kx}, "sum");
    auto red = cuda::make_geometry(rs, {rx}, "sum");
    cuda::sum<T>(x.data(), out.data(), kept, red);
    return out;
  }
#endif
  require_cpu(x, "sum");
  Tensor<T> out = zeros<T>(kept_shape);
  // Order dims: kept first, reduced last, then treat as K x R.
  std::vector<int64_t> perm;
  int64_t K = 1, R = 1;
  for (int64_t i = 0; i < nd; ++i)
    if (!m[i]) perm.push_back(i), K *= x.shape()[i];
  for (int64_t i = 0; i < nd; ++i)
    if (m[i]) perm.push_back(i), R *= x.shape()[i];
  if (K == 0) return out;
  T* o = out.data();
  Tensor<T> xp = x.detach().permute(perm);
  using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  if (xp.is_contiguous()) {  // reduced dims innermost: row sums
    Eigen::Map<const Mat> a(xp.data(), K, R);
    Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, 1>> r(o, K);
    if (K * R > kParallelGrain && K > 1) {
#pragma omp parallel for schedule(static)
      for (int64_t k = 0; k < K; ++k) o[k] = a.row(k).sum();
    } else {
      r = a.rowwise().sum();
    }
    return out;
  }
  // Reduced dims outermost in memory (e.g. bias gradients): column sums of an R x K matrix.
  std::vector<int64_t> perm2;
  for (int64_t i = 0; i < nd; ++i)
    if (m[i]) perm2.push_back(i);
  for (int64_t i = 0; i < nd; ++i)
    if (!m[i]) perm2.push_back(i);
  Tensor<T> xq = x.detach().permute(perm2);
  if (xq.is_contiguous()) {
    Eigen::Map<const Mat> a(xq.data(), R, K);
    Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>> r(o, K);
    r = a.colwise().sum();
    return out;
  }
  // General strided case: one output element per task, strided walk over the reduced block.
  Shape rshape(xp.shape().begin() + (nd - std::count(m.begin(), m.end(), true)), xp.shape().end());
  Shape rstrides(xp.strides().begin() + (nd - std::count(m.begin(), m.end(), true)), xp.strides().end());
  const int64_t nk = static_cast<int64_t>(xp.dim() - rshape.size());
  const T* px = xp.data();
#pragma omp parallel for schedule(static) if (K * R > kParallelGrain)
  for (int64_t k = 0; k < K; ++k) {
    int64_t base = 0, rem = k;
    for (int64_t d = nk - 1; d >= 0; --d) {
      base += (rem % xp.shape()[d]) * xp.strides()[d];
      rem /= xp.shape()[d];
    }
    T acc = T(0);
    for (int64_t r = 0; r < R; ++r) {
      int64_t off = base, rr = r;
      for (int64_t d = static_cast<int64_t>(rshape.size()) - 1; d >= 0; --d) {
        off += (rr % rshape[d]) * rstrides[d];
        rr /= rshape[d];
      }
      acc += px[off];
    }
    o[k] = acc;
  }
  return out;
}

}  // namespace detail

// Sum over `dims` (all dims when empty).
template <class T>
Tensor<T> sum(const Tensor<T>& x, const std::vector<int64_t>& dims = {}, bool keepdim = false) {
  auto m = detail::reduce_mask(dims, x.dim(), "sum");
  Tensor<T> kept = detail::sum_kernel(x, m);
  Shape out_shape = detail::reduced_shape(x.shape(), m, keepdim);
  Tensor<T> out = make_view(kept, out_shape, contiguous_strides(out_shape), 0);
  autograd::record<T>(out, "sum", {x}, [xs = x.shape(), ks = kept.shape()](const Tensor<T>& g, const std::vector<bool>&) {
    return std::vector<Tensor<T>>{g.reshape(ks).expand(xs).contiguous()};
  });
  return out;
}

template <class T>
Tensor<T> mean(const Tensor<T>& x, const std::vector<int64_t>& dims = {}, bool keepdim = false) {
  auto m = detail::reduce_mask(dims, x.dim(), "mean");
  int64_t count = 1;
  for (int64_t i = 0; i < x.dim(); ++i)
    if (m[i]) count *= x.shape()[i];
  TXTCLS_CHECK(count > 0, "mean: reducing ", shape_str(x.shape()), " over an empty dim");
  return affine(sum(x, dims, keepdim), T(1) / static_cast<T>(count), T(0));
}

// Sums g down to `shape` (the inverse of broadcasting `shape` to g.shape()).
template <class T>
Tensor<T> sum_to(const Tensor<T>& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  const int64_t nd = g.dim(), lead = nd - static_cast<int64_t>(shape.size());
  TXTCLS_CHECK(lead >= 0, "sum_to: cannot reduce ", shape_str(g.shape()), " to ", shape_str(shape));
  std::vector<int64_t> dims;
  for (int64_t i = 0; i < nd; ++i)
    if (i < lead || (shape[i - lead] == 1 && g.shape()[i] != 1)) dims.push_back(i);
  if (dims.empty()) return g.reshape(shape);
  return sum(g, dims, false).reshape(shape);
}

}  // namespace txtcls
