#pragma once
// Tensor<T>: a strided view (shape, strides, offset) of a shared Storage<T>, plus the autograd
// state (requires_grad, grad, the node that produced it). A Tensor is a cheap handle: copies
// share the same impl, as in PyTorch. View operations share storage; contiguous() copies.
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "txtcls/core/config.hpp"
#include "txtcls/tensor/device.hpp"
#include "txtcls/tensor/dtype.hpp"
#include "txtcls/tensor/shape.hpp"
#include "txtcls/tensor/storage.hpp"

namespace txtcls {

template <class T> class Tensor;
namespace autograd {
template <class T> struct Node;
}

template <class T>
struct TensorImpl {
  std::shared_ptr<Storage<T>> storage;
  Shape shape;
  Shape strides;
  int64_t offset = 0;
  bool requires_grad = false;
  std::shared_ptr<TensorImpl<T>> grad;          // accumulated gradient (leaves)
  std::shared_ptr<autograd::Node<T>> grad_fn;   // null for leaves
};

template <class T>
class Tensor {
 public:
  using value_type = T;
  using Impl = TensorImpl<T>;

  Tensor() = default;
  explicit Tensor(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  // Uninitialised contiguous tensor of the given shape.
  explicit Tensor(const Shape& shape, Device d = Device::cpu());

  // ---- metadata
  bool defined() const { return static_cast<bool>(impl_); }
  const Shape& shape() const { return impl().shape; }
  const Shape& strides() const { return impl().strides; }
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  int64_t size(int64_t d) const { return shape()[wrap_dim(d, dim(), "size")]; }
  int64_t stride(int64_t d) const { return strides()[wrap_dim(d, dim(), "stride")]; }
  int64_t numel() const { return numel_of(shape()); }
  int64_t offset() const { return impl().offset; }
  Device device() const { return impl().storage ? impl().storage->device() : Device::cpu(); }
  static constexpr DType dtype() { return dtype_of<T>; }
  bool is_contiguous() const;
  bool same(const Tensor& o) const { return impl_ == o.impl_; }
  // True when this handle is the only one to its impl and the impl the only user of its storage.
  bool is_sole_owner() const { return impl_ && impl_.use_count() == 1 && impl_->storage && impl_->storage.use_count() == 1; }
  std::shared_ptr<Impl> impl_ptr() const { return impl_; }
  Impl& impl() const {
    TXTCLS_CHECK(impl_, "tensor: use of an undefined (default-constructed) tensor");
    return *impl_;
  }

  // ---- data (CPU access checks the device)
  T* data() { return impl().storage ? impl().storage->data() + offset() : nullptr; }
  const T* data() const { return impl().storage ? impl().storage->data() + offset() : nullptr; }
  T item() const;
  T at(std::initializer_list<int64_t> idx) const;
  void set(std::initializer_list<int64_t> idx, T v);
  std::vector<T> to_vector() const;  // row-major copy, CPU
  Tensor to(Device d) const;         // copy to a device (no-op if already there)
  Tensor cpu() const { return to(Device::cpu()); }

  // ---- views (share storage; record autograd)
  Tensor reshape(const Shape& s) const;  // view when possible, else a copy
  Tensor view(const Shape& s) const;     // view only; errors if strides do not allow it
  Tensor flatten(int64_t start = 0, int64_t end = -1) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const { return transpose(0, 1); }
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor slice(int64_t d, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor narrow(int64_t d, int64_t start, int64_t length) const { return slice(d, start, start + length); }
  Tensor select(int64_t d, int64_t index) const;
  Tensor expand(const Shape& s) const;
  Tensor unsqueeze(int64_t d) const;
  Tensor squeeze(int64_t d) const;
  Tensor contiguous() const;  // self if already contiguous
  Tensor clone() const;       // always a copy (differentiable)

  // ---- autograd
  bool requires_grad() const { return impl().requires_grad; }
  Tensor& set_requires_grad(bool r = true);
  Tensor grad() const { return impl().grad ? Tensor(impl().grad) : Tensor(); }
  void set_grad(const Tensor& g) { impl().grad = g.impl_; }
  void zero_grad() { impl().grad.reset(); }
  bool is_leaf() const { return !impl().grad_fn; }
  std::shared_ptr<autograd::Node<T>> grad_fn() const { return impl().grad_fn; }
  Tensor detach() const;  // shares storage, no history
  // Seeds with ones for a scalar; otherwise pass the gradient of the output.
  void backward(const Tensor& grad_output = Tensor()) const;

  // ---- in-place helpers for optimizers and initialisation (no autograd; refuse on tensors in a graph)
  Tensor& fill_(T v);
  Tensor& copy_(const Tensor& src);

 private:
  std::shared_ptr<Impl> impl_;
};

template <class T>
Tensor<T> make_view(const Tensor<T>& base, Shape shape, Shape strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl<T>>();
  impl->storage = base.impl().storage;
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  return Tensor<T>(impl);
}

template <class T>
Tensor<T>::Tensor(const Shape& shape, Device d) {
  for (auto s : shape) TXTCLS_CHECK(s >= 0, "tensor: negative size in shape ", shape_str(shape));
  impl_ = std::make_shared<Impl>();
  impl_->storage = std::make_shared<Storage<T>>(static_cast<size_t>(numel_of(shape)), d);
  impl_->shape = shape;
  impl_->strides = contiguous_strides(shape);
}

template <class T>
bool Tensor<T>::is_contiguous() const {
  if (numel() == 0) return true;  // nothing to address: any strides describe it
  int64_t expect = 1;
  for (int64_t i = dim(); i-- > 0;) {
    if (shape()[i] == 1) continue;
    if (strides()[i] != expect) return false;
    expect *= shape()[i];
  }
  return true;
}

}  // namespace txtcls
