#pragma once
// operator<< for tensors: shape, device and values (abbreviated past 6 per dim).
#include <iomanip>
#include <ostream>

#include "txtcls/tensor/views.hpp"

namespace txtcls {

namespace detail {
template <class T>
void print_rec(std::ostream& os, const Tensor<T>& t, int64_t d, int64_t off) {
  const int64_t n = t.shape()[d];
  os << '[';
  for (int64_t i = 0; i < n; ++i) {
    if (n > 6 && i == 3) {
      os << "..., ";
      i = n - 3;
    }
    int64_t o = off + i * t.strides()[d];
    if (d + 1 == t.dim()) os << t.data()[o];
    else print_rec(os, t, d + 1, o);
    if (i + 1 < n) os << (d + 1 == t.dim() ? ", " : ",\n ");
  }
  os << ']';
}
}  // namespace detail

template <class T>
std::ostream& operator<<(std::ostream& os, const Tensor<T>& t) {
  if (!t.defined()) return os << "Tensor(undefined)";
  Tensor<T> c = t.cpu();
  os << "Tensor<" << dtype_name(dtype_of<T>) << ">" << shape_str(t.shape()) << " on " << t.device().str() << "\n";
  if (c.dim() == 0) return os << c.data()[0];
  if (c.numel() == 0) return os << "[]";
  detail::print_rec(os, c, 0, 0);
  return os;
}

}  // namespace txtcls
