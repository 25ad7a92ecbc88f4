#pragma once
// Index-driven ops, forward and backward side by side: gather, index_select, concat, stack,
// split, masked_fill, where, and scalar comparisons that produce masks.
//
// Index tensors are Tensor<int64_t>, masks Tensor<uint8_t> (nonzero = true); neither carries
// gradients. Scatter-style backwards (gather, index_select) never race: each thread owns whole
// lines of the gradient and adds into them in index order, so results do not depend on the
// thread count.
#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <type_traits>
#include <vector>

#include "txtcls/cuda/indexing.hpp"
#include "txtcls/ops/reduce.hpp"

namespace txtcls {

namespace detail {

// "[i, j, k]": the multi-index of flat position `flat` in `shape`, for error messages.
inline std::string index_position_str(int64_t flat, const Shape& shape) {
  Shape idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    if (shape[d] == 0) continue;
    idx[d] = flat % shape[d];
    flat /= shape[d];
  }
  return shape_str(idx);
}

// Every index in [0, size), else an error naming the value and its position.
inline void check_indices(const Tensor<int64_t>& index, int64_t size, const char* op, const std::string& what) {
  const int64_t* p = index.data();
  for (int64_t i = 0; i < index.numel(); ++i)
    TXTCLS_CHECK(p[i] >= 0 && p[i] < size, op, ": index ", p[i], " at position ",
                 index_position_str(i, index.shape()), " of index ", shape_str(index.shape()), " is out of range for ",
                 what, " (size ", size, ")");
}

inline int64_t prod(const Shape& s, int64_t from, int64_t to) {
  int64_t n = 1;
  for (int64_t i = from; i < to; ++i) n *= s[i];
  return n;
}

// `s` with dim d moved last: the loops of gather run along d in their innermost dimension.
inline Shape move_dim_last(const Shape& s, int64_t d) {
  Shape r;
  for (int64_t i = 0; i < static_cast<int64_t>(s.size()); ++i)
    if (i != d) r.push_back(s[i]);
  r.push_back(s[d]);
  return r;
}

// Strides of `strides` with dim d moved last and zeroed there (the index supplies that offset).
inline Shape strides_without_dim(const Shape& strides, int64_t d) {
  Shape r = move_dim_last(strides, d);
  r.back() = 0;
  return r;
}

}  // namespace detail

// ---------------------------------------------------------------- gather
// out[i][j][k] = x[i][index[i][j][k]][k] for dim = 1 (torch.gather): index has x's number of
// dims, index.size(k) <= x.size(k) for k != dim, and the output has index's shape.
namespace detail {
#ifdef TXTCLS_WITH_CUDA
// The GPU path of gather (shapes checked by the caller): the index is checked on the host, then
// uploaded; x is read in place through its strides.
template <class T>
Tensor<T> gather_cuda(const Tensor<T>& x, int64_t d, const Tensor<int64_t>& index) {
  Tensor<int64_t> host = index.cpu().contiguous().clone();
  check_indices(host, x.size(d), "gather", "dim " + std::to_string(d) + " of input " + shape_str(x.shape()));
  TXTCLS_CHECK(x.dim() <= cuda::kMaxDims, "gather: input ", shape_str(x.shape()), " has ", x.dim(),
               " dims; the CUDA kernel takes at most ", cuda::kMaxDims);
  const Device dev = x.device();
  cuda::GatherGeometry geo;
  geo.nd = static_cast<int>(x.dim());
  geo.dim = static_cast<int>(d);
  for (int64_t k = 0; k < x.dim(); ++k) {
    geo.size[k] = host.size(k);
    geo.xstride[k] = x.stride(k);
  }
  Tensor<int64_t> di = host.to(dev);
  Tensor<T> out(host.shape(), dev);
  cuda::gather<T>(x.data(), di.data(), out.data(), geo);
  autograd::record<T>(out, "gather", {x}, [di, geo, xshape = x.shape()](const Tensor<T>& g, const std::vector<bool>&) {
    Tensor<T> gc = g.contiguous();
    Tensor<T> gx(xshape, gc.device());
    cuda::gather_backward<T>(gc.data(), di.data(), gx.data(), xshape.data(), geo);
    return std::vector<Tensor<T>>{gx};
  });
  return out;
}
#endif
}  // namespace detail

template <class T>
Tensor<T> gather(const Tensor<T>& x, int64_t dim, const Tensor<int64_t>& index) {
  TXTCLS_CHECK(x.dim() >= 1 && index.dim() == x.dim(), "gather: index ", shape_str(index.shape()),
               " must have as many dims as the input ", shape_str(x.shape()), " (at least one)");
  const int64_t d = wrap_dim(dim, x.dim(), "gather");
  for (int64_t k = 0; k < x.dim(); ++k)
    TXTCLS_CHECK(k == d || index.size(k) <= x.size(k), "gather: index ", shape_str(index.shape()),
                 " is larger than the input ", shape_str(x.shape()), " in dim ", k, " (dim ", d, " is gathered)");
#ifdef TXTCLS_WITH_CUDA
  if (x.device().is_cuda()) return detail::gather_cuda(x, d, index);
#endif
  detail::require_cpu(x, "gather");
  detail::require_cpu(index, "gather");
  Tensor<int64_t> ic = index.clone();  // own copy, saved for backward
  detail::check_indices(ic, x.size(d), "gather", "dim " + std::to_string(d) + " of input " + shape_str(x.shape()));

  Tensor<T> out(ic.shape());
  const Shape loop = detail::move_dim_last(ic.shape(), d);
  const Shape dense = detail::move_dim_last(contiguous_strides(ic.shape()), d);  // out and ic
  const Shape xs = detail::strides_without_dim(x.strides(), d);
  const int64_t xsd = x.stride(d);
  const T* px = x.data();
  const int64_t* pi = ic.data();
  T* po = out.data();
  detail::for_each_strided<2>(loop, {&dense, &xs}, [&](int64_t, const std::array<int64_t, 2>& o) {
    po[o[0]] = px[o[1] + pi[o[0]] * xsd];
  });

  autograd::record<T>(out, "gather", {x}, [ic, d, xshape = x.shape()](const Tensor<T>& g, const std::vector<bool>&) {
    Tensor<T> gx = zeros<T>(xshape);
    const Shape loop = detail::move_dim_last(ic.shape(), d);
    const Shape dense = detail::move_dim_last(contiguous_strides(ic.shape()), d);
    const Shape gs = detail::move_dim_last(g.strides(), d);
    const Shape gxs = detail::strides_without_dim(gx.strides(), d);
    const int64_t gxsd = gx.stride(d);
    const T* pg = g.data();
    const int64_t* pi = ic.data();
    T* pgx = gx.data();
    // One OpenMP row of this loop is one line along d: a thread owns every gradient element that
    // line can reach, and adds in index order.
    detail::for_each_strided<3>(loop, {&dense, &gs, &gxs}, [&](int64_t, const std::array<int64_t, 3>& o) {
      pgx[o[2] + pi[o[0]] * gxsd] += pg[o[1]];
    });
    return std::vector<Tensor<T>>{gx};
  });
  return out;
}

// ---------------------------------------------------------------- index_select
// Slices of x along dim at the positions in index [n]; the output has size n in dim.
namespace detail {
#ifdef TXTCLS_WITH_CUDA
// The GPU path of index_select: the index is checked on the host and uploaded; the backward
// groups the positions by index on the host (a counting sort, stable), so that each gradient
// element is one thread's ordered sum.
template <class T>
Tensor<T> index_select_cuda(const Tensor<T>& x, int64_t d, const Tensor<int64_t>& index) {
  const int64_t S = x.size(d), n = index.numel();
  const int64_t outer = prod(x.shape(), 0, d), inner = prod(x.shape(), d + 1, x.dim());
  Tensor<int64_t> host = index.cpu().contiguous().clone();
  check_indices(host, S, "index_select", "dim " + std::to_string(d) + " of input " + shape_str(x.shape()));
  const Device dev = x.device();
  Tensor<int64_t> di = host.to(dev);
  Tensor<T> xc = x.detach().contiguous();
  Shape os = x.shape();
  os[d] = n;
  Tensor<T> out(os, dev);
  cuda::index_select<T>(xc.data(), di.data(), out.data(), outer, S, n, inner);
  autograd::record<T>(out, "index_select", {x}, [host, xshape = x.shape(), S, n, outer, inner](
                                                    const Tensor<T>& g, const std::vector<bool>&) {
    std::vector<int64_t> starts(static_cast<size_t>(S) + 1, 0), order(static_cast<size_t>(n));
    const int64_t* pi = host.data();
    for (int64_t j = 0; j < n; ++j) ++starts[pi[j] + 1];
    for (int64_t s = 0; s < S; ++s) starts[s + 1] += starts[s];
    std::vector<int64_t> fill(starts.begin(), starts.end() - 1);
    for (int64_t j = 0; j < n; ++j) order[fill[pi[j]]++] = j;  // increasing j within each row
    Tensor<T> gc = g.contiguous();
    Tensor<int64_t> d_order = from_vector<int64_t>(order, {n}).to(gc.device());
    Tensor<int64_t> d_starts = from_vector<int64_t>(starts, {S + 1}).to(gc.device());
    Tensor<T> gx(xshape, gc.device());
    cuda::index_select_backward<T>(gc.data(), d_order.data(), d_starts.data(), gx.data(), outer, S, n, inner);
    return std::vector<Tensor<T>>{gx};
  });
  return out;
}
#endif
}  // namespace detail

template <class T>
Tensor<T> index_select(const Tensor<T>& x, int64_t dim, const Tensor<int64_t>& index) {
  TXTCLS_CHECK(x.dim() >= 1, "index_select: input must have at least one dim, got ", shape_str(x.shape()));
  TXTCLS_CHECK(index.dim() == 1, "index_select: index must be 1-D, got ", shape_str(index.shape()));
  const int64_t d = wrap_dim(dim, x.dim(), "index_select");
#ifdef TXTCLS_WITH_CUDA
  if (x.device().is_cuda()) return detail::index_select_cuda(x, d, index);
#endif
  detail::require_cpu(x, "index_select");
  detail::require_cpu(index, "index_select");
  const int64_t S = x.size(d), n = index.numel();
  const int64_t outer = detail::prod(x.shape(), 0, d), inner = detail::prod(x.shape(), d + 1, x.dim());
  Tensor<int64_t> ic = index.clone();
  detail::check_indices(ic, S, "index_select", "dim " + std::to_string(d) + " of input " + shape_str(x.shape()));
  Tensor<T> xc = x.detach().contiguous();
  Shape os = x.shape();
  os[d] = n;
  Tensor<T> out(os);
  const T* px = xc.data();
  const int64_t* pi = ic.data();
  T* po = out.data();
  if (inner > 0) {
#pragma omp parallel for schedule(static) if (outer * n * inner > kParallelGrain)
    for (int64_t r = 0; r < outer * n; ++r) {
      const int64_t o = r / n, j = r % n;
      std::memcpy(po + r * inner, px + (o * S + pi[j]) * inner, static_cast<size_t>(inner) * sizeof(T));
    }
  }

  autograd::record<T>(out, "index_select", {x}, [ic, xshape = x.shape(), S, n, outer, inner](const Tensor<T>& g,
                                                                                             const std::vector<bool>&) {
    Tensor<T> gc = g.contiguous();
    Tensor<T> gx = zeros<T>(xshape);
    const T* pg = gc.data();
    const int64_t* pi = ic.data();
    T* pgx = gx.data();
    // Tasks are (outer slab, block of inner columns); each adds its columns over j in order.
    constexpr int64_t kBlock = 1024;
    const int64_t blocks = (inner + kBlock - 1) / kBlock, tasks = outer * blocks;
#pragma omp parallel for schedule(static) if (outer * n * inner > kParallelGrain && tasks > 1)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t o = t / blocks, k0 = (t % blocks) * kBlock, k1 = std::min(inner, k0 + kBlock);
      for (int64_t j = 0; j < n; ++j) {
        const T* src = pg + (o * n + j) * inner;
        T* dst = pgx + (o * S + pi[j]) * inner;
        for (int64_t k = k0; k < k1; ++k) dst[k] += src[k];
      }
    }
    return std::vector<Tensor<T>>{gx};
  });
  return out;
}

// ---------------------------------------------------------------- concat, stack
// Joins tensors along an existing dim; all other sizes must agree.
template <class T>
Tensor<T> concat(const std::vector<Tensor<T>>& xs, int64_t dim = 0) {
  TXTCLS_CHECK(!xs.empty(), "concat: no tensors given");
  const Shape& s0 = xs[0].shape();
  TXTCLS_CHECK(!s0.empty(), "concat: tensor 0 is 0-dim; zero-dimensional tensors cannot be concatenated");
  const int64_t nd = static_cast<int64_t>(s0.size());
  const int64_t d = wrap_dim(dim, nd, "concat");
  int64_t total = 0;
  const Device dev = xs[0].device();
  for (size_t i = 0; i < xs.size(); ++i) {
    TXTCLS_CHECK(xs[i].device() == dev, "concat: tensor ", i, " is on ", xs[i].device().str(), ", tensor 0 on ",
                 dev.str());
    const Shape& si = xs[i].shape();
    bool ok = static_cast<int64_t>(si.size()) == nd;
    for (int64_t k = 0; ok && k < nd; ++k) ok = k == d || si[k] == s0[k];
    TXTCLS_CHECK(ok, "concat: tensor ", i, " has shape ", shape_str(si), ", which does not match tensor 0 ",
                 shape_str(s0), " outside dim ", d);
    total += si[d];
  }
  Shape os = s0;
  os[d] = total;
#ifdef TXTCLS_WITH_CUDA
  if constexpr (!std::is_floating_point_v<T>)
#endif
    detail::require_cpu(xs[0], "concat");
  Tensor<T> out(os, dev);
  const int64_t outer = detail::prod(s0, 0, d), inner = detail::prod(s0, d + 1, nd);
  std::vector<Tensor<T>> parts;
  std::vector<int64_t> starts, lens;  // where each part lies along d
  for (auto& x : xs) {
    starts.push_back(lens.empty() ? 0 : starts.back() + lens.back());
    lens.push_back(x.size(d));
    parts.push_back(x.detach().contiguous());
  }
  const int64_t np = static_cast<int64_t>(parts.size());
  T* po = out.data();
#ifdef TXTCLS_WITH_CUDA
  if constexpr (std::is_floating_point_v<T>) {
    if (dev.is_cuda()) {  // part p fills columns [starts[p], +lens[p]) * inner of each outer row
      for (int64_t p = 0; p < np; ++p)
        cuda::copy_rows<T>(parts[p].data(), lens[p] * inner, po + starts[p] * inner, total * inner, outer,
                           lens[p] * inner);
    }
  }
#endif
  if (dev.is_cpu() && out.numel() > 0) {
#pragma omp parallel for collapse(2) schedule(static) if (out.numel() > kParallelGrain)
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t p = 0; p < np; ++p) {
        const int64_t len = lens[p] * inner;
        if (len) std::memcpy(po + (o * total + starts[p]) * inner, parts[p].data() + o * len, len * sizeof(T));
      }
  }
  autograd::record<T>(out, "concat", xs, [d, starts, lens](const Tensor<T>& g, const std::vector<bool>& needs) {
    std::vector<Tensor<T>> gs(lens.size());
    for (size_t i = 0; i < lens.size(); ++i)
      if (needs[i]) gs[i] = g.slice(d, starts[i], starts[i] + lens[i]).contiguous();
    return gs;
  });
  return out;
}

template <class T>
Tensor<T> concat(std::initializer_list<Tensor<T>> xs, int64_t dim = 0) {
  return concat(std::vector<Tensor<T>>(xs), dim);
}

// Joins equally shaped tensors along a new dim.
template <class T>
Tensor<T> stack(const std::vector<Tensor<T>>& xs, int64_t dim = 0) {
  TXTCLS_CHECK(!xs.empty(), "stack: no tensors given");
  const int64_t d = wrap_dim(dim, xs[0].dim() + 1, "stack");
  std::vector<Tensor<T>> us;
  us.reserve(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) {
    TXTCLS_CHECK(xs[i].shape() == xs[0].shape(), "stack: tensor ", i, " has shape ", shape_str(xs[i].shape()),
                 " but tensor 0 has ", shape_str(xs[0].shape()));
    us.push_back(xs[i].unsqueeze(d));
  }
  return concat(us, d);
}

template <class T>
Tensor<T> stack(std::initializer_list<Tensor<T>> xs, int64_t dim = 0) {
  return stack(std::vector<Tensor<T>>(xs), dim);
}

// ---------------------------------------------------------------- split
// Views of consecutive pieces along dim, each recording its own backward.
template <class T>
std::vector<Tensor<T>> split(const Tensor<T>& x, const std::vector<int64_t>& sizes, int64_t dim = 0) {
  const int64_t d = wrap_dim(dim, x.dim(), "split");
  int64_t total = 0;
  for (auto s : sizes) {
    TXTCLS_CHECK(s >= 0, "split: negative size ", s, " in sizes for input ", shape_str(x.shape()));
    total += s;
  }
  TXTCLS_CHECK(total == x.size(d), "split: sizes add up to ", total, " but dim ", d, " of input ",
               shape_str(x.shape()), " has ", x.size(d));
  std::vector<Tensor<T>> out;
  int64_t start = 0;
  for (auto s : sizes) {
    out.push_back(x.narrow(d, start, s));
    start += s;
  }
  return out;
}

// Pieces of split_size along dim; the last one is smaller when the size does not divide.
template <class T>
std::vector<Tensor<T>> split(const Tensor<T>& x, int64_t split_size, int64_t dim = 0) {
  const int64_t d = wrap_dim(dim, x.dim(), "split");
  const int64_t n = x.size(d);
  TXTCLS_CHECK(split_size > 0 || (split_size == 0 && n == 0), "split: split_size must be positive, got ",
               split_size, " for input ", shape_str(x.shape()));
  if (n == 0) return {x.narrow(d, 0, 0)};
  std::vector<int64_t> sizes;
  for (int64_t s = 0; s < n; s += split_size) sizes.push_back(std::min(split_size, n - s));
  return split(x, sizes, d);
}

// ---------------------------------------------------------------- masks
namespace detail {
// out (contiguous, shape os) = cond ? a : b with cond, a, b broadcast to os, on a's device (b
// must be there too; a mask on the host is uploaded, so a batch's mask can be built there).
template <class T>
Tensor<T> select_kernel(const Shape& os, const Tensor<uint8_t>& cond, const Tensor<T>& a, const Tensor<T>& b,
                        const char* op) {
  const Device dev = a.device();
  TXTCLS_CHECK(b.device() == dev, op, ": operands on ", dev.str(), " and ", b.device().str());
  TXTCLS_CHECK(cond.device() == dev || cond.device().is_cpu(), op, ": mask on ", cond.device().str(),
               ", values on ", dev.str());
  const Tensor<uint8_t> c = cond.to(dev);
  Tensor<T> out(os, dev);
  const Shape sc = broadcast_strides(c.shape(), c.strides(), os);
  const Shape sa = broadcast_strides(a.shape(), a.strides(), os);
  const Shape sb = broadcast_strides(b.shape(), b.strides(), os);
#ifdef TXTCLS_WITH_CUDA
  if (dev.is_cuda()) {
    cuda::select<T>(c.data(), a.data(), b.data(), out.data(), cuda::make_geometry(os, {out.strides(), sc, sa, sb}, op));
    return out;
  }
#endif
  require_cpu(out, op);
  const uint8_t* pc = c.data();
  const T* pa = a.data();
  const T* pb = b.data();
  T* po = out.data();
  for_each_strided<3>(os, {&sc, &sa, &sb}, [&](int64_t i, const std::array<int64_t, 3>& o) {
    po[i] = pc[o[0]] != 0 ? pa[o[1]] : pb[o[2]];
  });
  return out;
}
}  // namespace detail

// x with value wherever mask (broadcastable to x) is nonzero.
template <class T>
Tensor<T> masked_fill(const Tensor<T>& x, const Tensor<uint8_t>& mask, std::type_identity_t<T> value) {
  TXTCLS_CHECK(broadcast_shapes(mask.shape(), x.shape(), "masked_fill") == x.shape(), "masked_fill: mask ",
               shape_str(mask.shape()), " does not broadcast to the input ", shape_str(x.shape()));
  const Tensor<uint8_t> m = mask.to(x.device());  // saved for backward where the gradient will be
  const Tensor<T> v = scalar<T>(value, x.device());
  Tensor<T> out = detail::select_kernel(x.shape(), m, v, x, "masked_fill");
  autograd::record<T>(out, "masked_fill", {x}, [m](const Tensor<T>& g, const std::vector<bool>&) {
    const Tensor<T> z = scalar<T>(T(0), g.device());
    return std::vector<Tensor<T>>{detail::select_kernel(g.shape(), m, z, g, "masked_fill")};
  });
  return out;
}

// cond ? a : b elementwise, all three broadcast together.
template <class T>
Tensor<T> where(const Tensor<uint8_t>& cond, const Tensor<T>& a, const Tensor<T>& b) {
  const Shape os = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  TXTCLS_CHECK(a.device() == b.device(), "where: a on ", a.device().str(), ", b on ", b.device().str());
  const Tensor<uint8_t> c = cond.to(a.device());
  Tensor<T> out = detail::select_kernel(os, c, a, b, "where");
  autograd::record<T>(out, "where", {a, b}, [c, sa = a.shape(), sb = b.shape()](const Tensor<T>& g,
                                                                                const std::vector<bool>& needs) {
    const Tensor<T> z = scalar<T>(T(0), g.device());
    Tensor<T> ga, gb;
    if (needs[0]) ga = sum_to(detail::select_kernel(g.shape(), c, g, z, "where"), sa);
    if (needs[1]) gb = sum_to(detail::select_kernel(g.shape(), c, z, g, "where"), sb);
    return std::vector<Tensor<T>>{ga, gb};
  });
  return out;
}

// ---------------------------------------------------------------- comparisons -> masks
namespace detail {
template <class T, class F>
Tensor<uint8_t> compare_scalar(const Tensor<T>& x, F f, [[maybe_unused]] cuda::Compare code, [[maybe_unused]] T v,
                               const char* op) {
#ifdef TXTCLS_WITH_CUDA
  if constexpr (std::is_floating_point_v<T>) {
    if (x.device().is_cuda()) {
      Tensor<uint8_t> out(x.shape(), x.device());
      cuda::compare_scalar<T>(x.data(), v, code, out.data(), cuda::make_geometry(x.shape(), {out.strides(), x.strides()}, op));
      return out;
    }
  }
#endif
  require_cpu(x, op);
  Tensor<uint8_t> out(x.shape());
  uint8_t* po = out.data();
  const T* px = x.data();
  for_each_strided<1>(x.shape(), {&x.strides()},
                      [&](int64_t i, const std::array<int64_t, 1>& o) { po[i] = f(px[o[0]]) ? 1 : 0; });
  return out;
}
}  // namespace detail

template <class T> Tensor<uint8_t> lt(const Tensor<T>& x, std::type_identity_t<T> v) {
  return detail::compare_scalar(x, [v](T a) { return a < v; }, cuda::Compare::Lt, static_cast<T>(v), "lt");
}
template <class T> Tensor<uint8_t> le(const Tensor<T>& x, std::type_identity_t<T> v) {
  return detail::compare_scalar(x, [v](T a) { return a <= v; }, cuda::Compare::Le, static_cast<T>(v), "le");
}
template <class T> Tensor<uint8_t> gt(const Tensor<T>& x, std::type_identity_t<T> v) {
  return detail::compare_scalar(x, [v](T a) { return a > v; }, cuda::Compare::Gt, static_cast<T>(v), "gt");
}
template <class T> Tensor<uint8_t> ge(const Tensor<T>& x, std::type_identity_t<T> v) {
  return detail::compare_scalar(x, [v](T a) { return a >= v; }, cuda::Compare::Ge, static_cast<T>(v), "ge");
}
template <class T> Tensor<uint8_t> eq(const Tensor<T>& x, std::type_identity_t<T> v) {
  return detail::compare_scalar(x, [v](T a) { return a == v; }, cuda::Compare::Eq, static_cast<T>(v), "eq");
}
template <class T> Tensor<uint8_t> ne(const Tensor<T>& x, std::type_identity_t<T> v) {
  return detail::compare_scalar(x, [v](T a) { return a != v; }, cuda::Compare::Ne, static_cast<T>(v), "ne");
}

}  // namespace txtcls
