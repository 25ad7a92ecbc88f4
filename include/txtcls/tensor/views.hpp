#pragma once
// View operations, element access, copies and device transfer for Tensor<T>.
#include <numeric>
#include <type_traits>

#include "txtcls/autograd/engine.hpp"
#include "txtcls/cuda/elementwise.hpp"
#include "txtcls/ops/functors.hpp"
#include "txtcls/tensor/creation.hpp"

namespace txtcls {

template <class T> Tensor<T> sum_to(const Tensor<T>& g, const Shape& shape);
template <class T> Tensor<T> zeros_like_shape(const Tensor<T>& like, const Shape& s);

namespace detail {
// Strided copy src -> dst (same shape, same device).
template <class T>
void strided_copy(Tensor<T>& dst, const Tensor<T>& src) {
#ifdef TXTCLS_WITH_CUDA
  if (dst.device().is_cuda()) {
    TXTCLS_CHECK(src.device() == dst.device(), "copy: source on ", src.device().str(), ", destination on ",
                 dst.device().str());
    if constexpr (std::is_floating_point_v<T>) {
      cuda::unary<T>(fn::Identity{}, src.data(), dst.data(),
                     cuda::make_geometry(dst.shape(), {dst.strides(), src.strides()}, "copy"));
      return;
    }
  }
#endif
  require_cpu(dst, "copy");
  T* d = dst.data();
  const T* s = src.data();
  if (dst.is_contiguous() && src.is_contiguous()) {
    const int64_t n = dst.numel();
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) d[i] = s[i];
    return;
  }
  for_each_strided<2>(dst.shape(), {&dst.strides(), &src.strides()},
                      [&](int64_t, const std::array<int64_t, 2>& o) { d[o[0]] = s[o[1]]; });
}

inline int64_t linear_offset(const Shape& shape, const Shape& strides, std::initializer_list<int64_t> idx,
                             const char* op) {
  TXTCLS_CHECK(idx.size() == shape.size(), op, ": ", idx.size(), " indices for a tensor of shape ", shape_str(shape));
  int64_t off = 0, d = 0;
  for (int64_t i : idx) {
    TXTCLS_CHECK(i >= -shape[d] && i < shape[d], op, ": index ", i, " out of range for dim ", d, " of shape ",
                 shape_str(shape));
    off += (i < 0 ? i + shape[d] : i) * strides[d];
    ++d;
  }
  return off;
}
}  // namespace detail

template <class T>
T Tensor<T>::item() const {
  TXTCLS_CHECK(numel() == 1, "item: tensor of shape ", shape_str(shape()), " is not a single value");
  Tensor<T> c = device().is_cpu() ? *this : cpu();
  return c.data()[0];
}

template <class T>
T Tensor<T>::at(std::initializer_list<int64_t> idx) const {
  detail::require_cpu(*this, "at");
  return data()[detail::linear_offset(shape(), strides(), idx, "at")];
}

template <class T>
void Tensor<T>::set(std::initializer_list<int64_t> idx, T v) {
  detail::require_cpu(*this, "set");
  data()[detail::linear_offset(shape(), strides(), idx, "set")] = v;
}

template <class T>
std::vector<T> Tensor<T>::to_vector() const {
  Tensor<T> c = cpu().contiguous();
  return std::vector<T>(c.data(), c.data() + c.numel());
}

template <class T>
Tensor<T> Tensor<T>::to(Device d) const {
  if (device() == d) return *this;
  Tensor<T> src = device().is_cpu() ? contiguous() : *this;
  TXTCLS_CHECK(src.is_contiguous(), "to(", d.str(), "): make the tensor contiguous on its device first");
  Tensor<T> out(shape(), d);
  Allocator& a = allocator_for(d.is_cpu() ? device() : d);
  a.copy(out.data(), d, src.data(), device(), static_cast<size_t>(numel()) * sizeof(T));
  Device from = device();
  autograd::record<T>(out, "to", {*this}, [from](const Tensor<T>& g, const std::vector<bool>&) {
    return std::vector<Tensor<T>>{g.to(from)};
  });
  return out;
}

template <class T>
Tensor<T> Tensor<T>::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

template <class T>
Tensor<T> Tensor<T>::clone() const {
  Tensor<T> out(shape(), device());
  detail::strided_copy(out, *this);
  autograd::record<T>(out, "clone", {*this}, [](const Tensor<T>& g, const std::vector<bool>&) {
    return std::vector<Tensor<T>>{g};
  });
  return out;
}

template <class T>
Tensor<T> Tensor<T>::detach() const {
  return make_view(*this, shape(), strides(), offset());
}

template <class T>
Tensor<T>& Tensor<T>::set_requires_grad(bool r) {
  TXTCLS_CHECK(!r || is_leaf(), "set_requires_grad: only leaf tensors can be marked (this one comes from op '",
               grad_fn()->op, "'); use detach() first");
  impl().requires_grad = r;
  return *this;
}

template <class T>
Tensor<T> Tensor<T>::view(const Shape& s_in) const {
  Shape s = s_in;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      TXTCLS_CHECK(infer < 0, "view: more than one -1 in ", shape_str(s_in));
      infer = static_cast<int64_t>(i);
    } else {
      TXTCLS_CHECK(s[i] >= 0, "view: invalid size in ", shape_str(s_in));
      known *= s[i];
    }
  }
  if (infer >= 0) {
    TXTCLS_CHECK(known != 0 && numel() % known == 0, "view: cannot infer -1 in ", shape_str(s_in), " for ",
                 numel(), " elements");
    s[infer] = numel() / known;
  }
  TXTCLS_CHECK(numel_of(s) == numel(), "view: shape ", shape_str(s_in), " is invalid for a tensor of shape ",
               shape_str(shape()));
  TXTCLS_CHECK(is_contiguous(), "view: tensor of shape ", shape_str(shape()), " with strides ",
               shape_str(strides()), " is not contiguous; use reshape() or contiguous()");
  Tensor<T> out = make_view(*this, s, contiguous_strides(s), offset());
  Shape orig = shape();
  autograd::record<T>(out, "view", {*this}, [orig](const Tensor<T>& g, const std::vector<bool>&) {
    return std::vector<Tensor<T>>{g.reshape(orig)};
  });
  return out;
}

template <class T>
Tensor<T> Tensor<T>::reshape(const Shape& s) const {
  return is_contiguous() ? view(s) : contiguous().view(s);
}

template <class T>
Tensor<T> Tensor<T>::flatten(int64_t start, int64_t end) const {
  if (dim() == 0) return reshape({1});
  start = wrap_dim(start, dim(), "flatten");
  end = wrap_dim(end, dim(), "flatten");
  Shape s;
  for (int64_t i = 0; i < start; ++i) s.push_back(shape()[i]);
  int64_t m = 1;
  for (int64_t i = start; i <= end; ++i) m *= shape()[i];
  s.push_back(m);
  for (int64_t i = end + 1; i < dim(); ++i) s.push_back(shape()[i]);
  return reshape(s);
}

template <class T>
Tensor<T> Tensor<T>::permute(const std::vector<int64_t>& dims) const {
  TXTCLS_CHECK(static_cast<int64_t>(dims.size()) == dim(), "permute: ", dims.size(), " dims given for a tensor of ",
               dim(), " dims");
  Shape s(dims.size()), st(dims.size());
  std::vector<int64_t> inv(dims.size(), -1);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = wrap_dim(dims[i], dim(), "permute");
    TXTCLS_CHECK(inv[d] < 0, "permute: dim ", d, " repeated");
    inv[d] = static_cast<int64_t>(i);
    s[i] = shape()[d];
    st[i] = strides()[d];
  }
  Tensor<T> out = make_view(*this, s, st, offset());
  autograd::record<T>(out, "permute", {*this}, [inv](const Tensor<T>& g, const std::vector<bool>&) {
    return std::vector<Tensor<T>>{g.permute(inv)};
  });
  return out;
}

template <class T>
Tensor<T> Tensor<T>::transpose(int64_t d0, int64_t d1) const {
  std::vector<int64_t> p(dim());
  std::iota(p.begin(), p.end(), 0);
  std::swap(p[wrap_dim(d0, dim(), "transpose")], p[wrap_dim(d1, dim(), "transpose")]);
  return permute(p);
}

template <class T>
Tensor<T> Tensor<T>::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim(d, dim(), "slice");
  const int64_t n = shape()[d];
  TXTCLS_CHECK(step > 0, "slice: step must be positive, got ", step);
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape s = shape(), st = strides();
  s[d] = (end - start + step - 1) / step;
  st[d] *= step;
  Tensor<T> out = make_view(*this, s, st, offset() + start * strides()[d]);
  Shape orig = shape();
  autograd::record<T>(out, "slice", {*this}, [orig, d, start, end, step](const Tensor<T>& g, const std::vector<bool>&) {
    Tensor<T> gi = zeros_like_shape(g, orig);
    Tensor<T> dst = gi.detach().slice(d, start, end, step);
    dst.copy_(g);
    return std::vector<Tensor<T>>{gi};
  });
  return out;
}

template <class T>
Tensor<T> Tensor<T>::select(int64_t d, int64_t index) const {
  d = wrap_dim(d, dim(), "select");
  TXTCLS_CHECK(index >= -shape()[d] && index < shape()[d], "select: index ", index, " out of range for dim ", d,
               " of shape ", shape_str(shape()));
  if (index < 0) index += shape()[d];
  Shape s = shape(), st = strides();
  s.erase(s.begin() + d);
  st.erase(st.begin() + d);
  Tensor<T> out = make_view(*this, s, st, offset() + index * strides()[d]);
  Shape orig = shape();
  autograd::record<T>(out, "select", {*this}, [orig, d, index](const Tensor<T>& g, const std::vector<bool>&) {
    Tensor<T> gi = zeros_like_shape(g, orig);
    Tensor<T> dst = gi.detach().select(d, index);
    dst.copy_(g);
    return std::vector<Tensor<T>>{gi};
  });
  return out;
}

template <class T>
Tensor<T> Tensor<T>::expand(const Shape& s_in) const {
  TXTCLS_CHECK(s_in.size() >= shape().size(), "expand: target ", shape_str(s_in), " has fewer dims than ",
               shape_str(shape()));
  Shape s = s_in;
  const size_t lead = s.size() - shape().size();
  for (size_t i = 0; i < s.size(); ++i) {
    if (i >= lead && s[i] == -1) s[i] = shape()[i - lead];
    TXTCLS_CHECK(i < lead || shape()[i - lead] == s[i] || shape()[i - lead] == 1, "expand: cannot expand ",
                 shape_str(shape()), " to ", shape_str(s_in));
  }
  Tensor<T> out = make_view(*this, s, detail::broadcast_strides(shape(), strides(), s), offset());
  Shape orig = shape();
  autograd::record<T>(out, "expand", {*this}, [orig](const Tensor<T>& g, const std::vector<bool>&) {
    return std::vector<Tensor<T>>{sum_to(g, orig)};
  });
  return out;
}

template <class T>
Tensor<T> Tensor<T>::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape s = shape();
  s.insert(s.begin() + d, 1);
  return reshape(s);
}

template <class T>
Tensor<T> Tensor<T>::squeeze(int64_t d) const {
  d = wrap_dim(d, dim(), "squeeze");
  TXTCLS_CHECK(shape()[d] == 1, "squeeze: dim ", d, " of shape ", shape_str(shape()), " is not 1");
  Shape s = shape();
  s.erase(s.begin() + d);
  if (is_contiguous()) return reshape(s);
  Shape st = strides();
  st.erase(st.begin() + d);
  Tensor<T> out = make_view(*this, s, st, offset());
  Shape orig = shape();
  autograd::record<T>(out, "squeeze", {*this}, [orig](const Tensor<T>& g, const std::vector<bool>&) {
    return std::vector<Tensor<T>>{g.reshape(orig)};
  });
  return out;
}

template <class T>
Tensor<T>& Tensor<T>::fill_(T v) {
  TXTCLS_CHECK(!(grad_enabled() && requires_grad()), "fill_: in-place write to a tensor that requires grad; use NoGradGuard");
#ifdef TXTCLS_WITH_CUDA
  if constexpr (std::is_floating_point_v<T>) {
    if (device().is_cuda()) {
      cuda::fill<T>(v, data(), cuda::make_geometry(shape(), {strides()}, "fill_"));
      return *this;
    }
  }
#endif
  detail::require_cpu(*this, "fill_");
  T* d = data();
  detail::for_each_strided<1>(shape(), {&strides()}, [&](int64_t, const std::array<int64_t, 1>& o) { d[o[0]] = v; });
  return *this;
}

template <class T>
Tensor<T>& Tensor<T>::copy_(const Tensor<T>& src) {
  TXTCLS_CHECK(!(grad_enabled() && requires_grad()), "copy_: in-place write to a tensor that requires grad; use NoGradGuard");
  TXTCLS_CHECK(src.shape() == shape(), "copy_: source shape ", shape_str(src.shape()), " differs from destination ",
               shape_str(shape()));
  if (device() != src.device()) {
    Tensor<T> moved = src.to(device());
    return copy_(moved);
  }
  detail::strided_copy(*this, src);
  return *this;
}

template <class T>
Tensor<T> zeros_like_shape(const Tensor<T>& like, const Shape& s) {
  return zeros<T>(s, like.device());
}

}  // namespace txtcls
