#pragma once
// Factory functions. Random tensors draw from a Generator (Philox), so a seed fixes them
// regardless of thread count.
#include <type_traits>
#include <vector>

#include "txtcls/ops/iterate.hpp"
#include "txtcls/tensor/random.hpp"
#include "txtcls/tensor/tensor_decl.hpp"

namespace txtcls {

namespace detail {
template <class T>
void require_cpu(const Tensor<T>& t, const char* op) {
  TXTCLS_CHECK(t.device().is_cpu(), op, ": tensor on ", t.device().str(),
               " has no kernel here (CPU only; move it with .cpu() or use a CUDA-enabled build)");
}
}  // namespace detail

template <class T>
Tensor<T> empty(const Shape& s, Device d = Device::cpu()) {
  return Tensor<T>(s, d);
}

template <class T>
Tensor<T> full(const Shape& s, T v, Device d = Device::cpu()) {
#ifdef TXTCLS_WITH_CUDA
  if constexpr (std::is_floating_point_v<T>) {
    if (d.is_cuda()) {
      Tensor<T> t(s, d);
      return t.fill_(v);
    }
  }
#endif
  Tensor<T> t(s, Device::cpu());
  T* p = t.data();
  const int64_t n = t.numel();
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) p[i] = v;
  return d.is_cpu() ? t : t.to(d);
}

template <class T> Tensor<T> zeros(const Shape& s, Device d = Device::cpu()) { return full<T>(s, T(0), d); }
template <class T> Tensor<T> ones(const Shape& s, Device d = Device::cpu()) { return full<T>(s, T(1), d); }
template <class T> Tensor<T> zeros_like(const Tensor<T>& t) { return zeros<T>(t.shape(), t.device()); }
template <class T> Tensor<T> ones_like(const Tensor<T>& t) { return ones<T>(t.shape(), t.device()); }
template <class T> Tensor<T> scalar(T v, Device d = Device::cpu()) { return full<T>({}, v, d); }

// [start, end) with step.
template <class T>
Tensor<T> arange(T start, T end, T step = T(1), Device d = Device::cpu()) {
  TXTCLS_CHECK(step != T(0), "arange: step must be non-zero");
  double n = static_cast<double>(end - start) / static_cast<double>(step);
  int64_t count = n > 0 ? static_cast<int64_t>(std::ceil(n)) : 0;
  Tensor<T> t({count});
  for (int64_t i = 0; i < count; ++i) t.data()[i] = static_cast<T>(start + step * static_cast<T>(i));
  return d.is_cpu() ? t : t.to(d);
}

template <class T>
Tensor<T> from_vector(const std::vector<T>& v, const Shape& s, Device d = Device::cpu()) {
  TXTCLS_CHECK(static_cast<int64_t>(v.size()) == numel_of(s), "from_vector: ", v.size(),
               " values do not fill shape ", shape_str(s));
  Tensor<T> t(s);
  std::copy(v.begin(), v.end(), t.data());
  return d.is_cpu() ? t : t.to(d);
}

template <class T>
Tensor<T> from_vector(const std::vector<T>& v) {
  return from_vector(v, {static_cast<int64_t>(v.size())});
}

template <class T>
Tensor<T> randn(const Shape& s, Generator& g, double mean = 0.0, double stddev = 1.0, Device d = Device::cpu()) {
  Tensor<T> t(s);
  const int64_t n = t.numel();
  const uint64_t seed = g.seed(), base = g.reserve(static_cast<uint64_t>(n));
  T* p = t.data();
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(mean + stddev * philox_normal(seed, base, i));
  return d.is_cpu() ? t : t.to(d);
}

template <class T>
Tensor<T> rand_uniform(const Shape& s, Generator& g, double lo = 0.0, double hi = 1.0, Device d = Device::cpu()) {
  Tensor<T> t(s);
  const int64_t n = t.numel();
  const uint64_t seed = g.seed(), base = g.reserve(static_cast<uint64_t>(n));
  T* p = t.data();
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(lo + (hi - lo) * philox_uniform(seed, base, i));
  return d.is_cpu() ? t : t.to(d);
}

// Element type conversion (CPU), e.g. cast<float>(double_tensor). No autograd across dtypes.
template <class U, class T>
Tensor<U> cast(const Tensor<T>& x) {
  detail::require_cpu(x, "cast");
  Tensor<U> out(x.shape());
  U* o = out.data();
  const T* p = x.data();
  detail::for_each_strided<1>(x.shape(), {&x.strides()},
                              [&](int64_t i, const std::array<int64_t, 1>& off) { o[i] = static_cast<U>(p[off[0]]); });
  return out;
}

}  // namespace txtcls
