#pragma once
// Elementwise ops: broadcasting binary arithmetic, scalar forms and unary math, each with its
// backward beside its forward. The arithmetic lives in ops/functors.hpp, shared with CUDA.
#include "txtcls/ops/functors.hpp"
#include "txtcls/ops/reduce.hpp"
#include "txtcls/tensor/views.hpp"

namespace txtcls {

namespace detail {

// out = f(a, b) with broadcasting, CPU.
template <class T, class F>
Tensor<T> binary_kernel(const Tensor<T>& a, const Tensor<T>& b, F f, const char* op) {
  require_cpu(a, op);
  require_cpu(b, op);
  Shape os = broadcast_shapes(a.shape(), b.shape(), op);
  Tensor<T> out(os);
  T* o = out.data();
  const T* pa = a.data();
  const T* pb = b.data();
  const int64_t n = out.numel();
  if (a.shape() == os && b.shape() == os && a.is_contiguous() && b.is_contiguous()) {
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) o[i] = f(pa[i], pb[i]);
    return out;
  }
  if (a.shape() == os && a.is_contiguous() && b.numel() == 1) {
    const T s = pb[0];
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) o[i] = f(pa[i], s);
    return out;
  }
  Shape sa = broadcast_strides(a.shape(), a.strides(), os);
  Shape sb = broadcast_strides(b.shape(), b.strides(), os);
  for_each_strided<2>(os, {&sa, &sb}, [&](int64_t i, const std::array<int64_t, 2>& off) {
    o[i] = f(pa[off[0]], pb[off[1]]);
  });
  return out;
}

template <class T, class F>
Tensor<T> unary_kernel(const Tensor<T>& x, F f, const char* op) {
  require_cpu(x, op);
  Tensor<T> out(x.shape());
  T* o = out.data();
  const T* p = x.data();
  const int64_t n = x.numel();
  if (x.is_contiguous()) {
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain / 4)
    for (int64_t i = 0; i < n; ++i) o[i] = f(p[i]);
  } else {
    for_each_strided<1>(x.shape(), {&x.strides()},
                        [&](int64_t i, const std::array<int64_t, 1>& off) { o[i] = f(p[off[0]]); });
  }
  return out;
}

}  // namespace detail

// ---------------------------------------------------------------- binary, broadcasting
template <class T>
Tensor<T> add(const Tensor<T>& a, const Tensor<T>& b) {
  Tensor<T> out = detail::binary_kernel(a, b, fn::Add{}, "add");
  autograd::record<T>(out, "add", {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor<T>& g, const std::vector<bool>& n) {
    return std::vector<Tensor<T>>{n[0] ? sum_to(g, sa) : Tensor<T>(), n[1] ? sum_to(g, sb) : Tensor<T>()};
  });
  return out;
}

template <class T>
Tensor<T> sub(const Tensor<T>& a, const Tensor<T>& b) {
  Tensor<T> out = detail::binary_kernel(a, b, fn::Sub{}, "sub");
  autograd::record<T>(out, "sub", {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor<T>& g, const std::vector<bool>& n) {
    return std::vector<Tensor<T>>{n[0] ? sum_to(g, sa) : Tensor<T>(), n[1] ? sum_to(neg(g), sb) : Tensor<T>()};
  });
  return out;
}

template <class T>
Tensor<T> mul(const Tensor<T>& a, const Tensor<T>& b) {
  Tensor<T> out = detail::binary_kernel(a, b, fn::Mul{}, "mul");
  autograd::record<T>(out, "mul", {a, b}, [a = a.detach(), b = b.detach()](const Tensor<T>& g, const std::vector<bool>& n) {
    return std::vector<Tensor<T>>{n[0] ? sum_to(mul(g, b), a.shape()) : Tensor<T>(),
                                  n[1] ? sum_to(mul(g, a), b.shape()) : Tensor<T>()};
  });
  return out;
}

template <class T>
Tensor<T> div(const Tensor<T>& a, const Tensor<T>& b) {
  Tensor<T> out = detail::binary_kernel(a, b, fn::Div{}, "div");
  autograd::record<T>(out, "div", {a, b}, [a = a.detach(), b = b.detach()](const Tensor<T>& g, const std::vector<bool>& n) {
    Tensor<T> ga, gb;
    if (n[0]) ga = sum_to(div(g, b), a.shape());
    if (n[1]) gb = sum_to(neg(div(mul(g, a), mul(b, b))), b.shape());
    return std::vector<Tensor<T>>{ga, gb};
  });
  return out;
}

// Accumulates src into dst in place (dst contiguous, src broadcastable to dst). No autograd.
template <class T>
void add_inplace(Tensor<T>& dst, const Tensor<T>& src) {
  detail::require_cpu(dst, "add_inplace");
  TXTCLS_CHECK(dst.is_contiguous(), "add_inplace: destination must be contiguous");
  TXTCLS_CHECK(broadcast_shapes(dst.shape(), src.shape(), "add_inplace") == dst.shape(), "add_inplace: ",
               shape_str(src.shape()), " does not broadcast to ", shape_str(dst.shape()));
  T* d = dst.data();
  const T* s = src.data();
  const int64_t n = dst.numel();
  if (src.shape() == dst.shape() && src.is_contiguous()) {
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) d[i] += s[i];
    return;
  }
  Shape ss = detail::broadcast_strides(src.shape(), src.strides(), dst.shape());
  detail::for_each_strided<1>(dst.shape(), {&ss}, [&](int64_t i, const std::array<int64_t, 1>& off) { d[i] += s[off[0]]; });
}

// ---------------------------------------------------------------- unary
template <class T, class F>
Tensor<T> unary(const Tensor<T>& x, F f, const char* op) {
  Tensor<T> out = detail::unary_kernel(x, [f](T v) { return f.f(v); }, op);
  autograd::record<T>(out, op, {x}, [f, x = x.detach(), y = out.detach(), op](const Tensor<T>& g, const std::vector<bool>&) {
    Tensor<T> gx = detail::binary_kernel(x, y, [f](T xv, T yv) { return f.df(xv, yv); }, op);
    return std::vector<Tensor<T>>{mul(g, gx)};
  });
  return out;
}

template <class T> Tensor<T> neg(const Tensor<T>& x) {
  Tensor<T> out = detail::unary_kernel(x, [](T v) { return -v; }, "neg");
  autograd::record<T>(out, "neg", {x}, [](const Tensor<T>& g, const std::vector<bool>&) {
    return std::vector<Tensor<T>>{neg(g)};
  });
  return out;
}
template <class T> Tensor<T> exp(const Tensor<T>& x) { return unary(x, fn::Exp{}, "exp"); }
template <class T> Tensor<T> log(const Tensor<T>& x) { return unary(x, fn::Log{}, "log"); }
template <class T> Tensor<T> sqrt(const Tensor<T>& x) { return unary(x, fn::Sqrt{}, "sqrt"); }
template <class T> Tensor<T> rsqrt(const Tensor<T>& x) { return unary(x, fn::Rsqrt{}, "rsqrt"); }
template <class T> Tensor<T> pow(const Tensor<T>& x, double p) { return unary(x, fn::Pow{p}, "pow"); }
template <class T> Tensor<T> tanh(const Tensor<T>& x) { return unary(x, fn::Tanh{}, "tanh"); }
template <class T> Tensor<T> sigmoid(const Tensor<T>& x) { return unary(x, fn::Sigmoid{}, "sigmoid"); }
template <class T> Tensor<T> relu(const Tensor<T>& x) { return unary(x, fn::Relu{}, "relu"); }
template <class T> Tensor<T> abs(const Tensor<T>& x) { return unary(x, fn::Abs{}, "abs"); }
template <class T> Tensor<T> softplus(const Tensor<T>& x) { return unary(x, fn::Softplus{}, "softplus"); }
enum class GeluForm { Erf, Tanh };
template <class T> Tensor<T> gelu(const Tensor<T>& x, GeluForm form = GeluForm::Erf) {
  return form == GeluForm::Erf ? unary(x, fn::GeluErf{}, "gelu") : unary(x, fn::GeluTanh{}, "gelu_tanh");
}

// ---------------------------------------------------------------- scalar forms
// y = alpha * x + beta: the one kernel behind x + s, x - s, s - x, x * s, x / s.
template <class T>
Tensor<T> affine(const Tensor<T>& x, T alpha, T beta) {
  Tensor<T> out = detail::unary_kernel(x, [alpha, beta](T v) { return alpha * v + beta; }, "affine");
  autograd::record<T>(out, "affine", {x}, [alpha](const Tensor<T>& g, const std::vector<bool>&) {
    return std::vector<Tensor<T>>{affine(g, alpha, T(0))};
  });
  return out;
}
template <class T> Tensor<T> add(const Tensor<T>& x, T s) { return affine(x, T(1), s); }
template <class T> Tensor<T> sub(const Tensor<T>& x, T s) { return affine(x, T(1), -s); }
template <class T> Tensor<T> mul(const Tensor<T>& x, T s) { return affine(x, s, T(0)); }
template <class T> Tensor<T> div(const Tensor<T>& x, T s) { return affine(x, T(1) / s, T(0)); }

// s / x
template <class T>
Tensor<T> rdiv(T s, const Tensor<T>& x) {
  Tensor<T> out = detail::unary_kernel(x, [s](T v) { return s / v; }, "rdiv");
  autograd::record<T>(out, "rdiv", {x}, [x = x.detach(), s](const Tensor<T>& g, const std::vector<bool>&) {
    Tensor<T> d = detail::unary_kernel(x, [s](T v) { return -s / (v * v); }, "rdiv");
    return std::vector<Tensor<T>>{mul(g, d)};
  });
  return out;
}

template <class T> Tensor<T> operator+(const Tensor<T>& a, const Tensor<T>& b) { return add(a, b); }
template <class T> Tensor<T> operator-(const Tensor<T>& a, const Tensor<T>& b) { return sub(a, b); }
template <class T> Tensor<T> operator*(const Tensor<T>& a, const Tensor<T>& b) { return mul(a, b); }
template <class T> Tensor<T> operator/(const Tensor<T>& a, const Tensor<T>& b) { return div(a, b); }
template <class T> Tensor<T> operator-(const Tensor<T>& a) { return neg(a); }
template <class T> Tensor<T> operator+(const Tensor<T>& a, T s) { return add(a, s); }
template <class T> Tensor<T> operator-(const Tensor<T>& a, T s) { return sub(a, s); }
template <class T> Tensor<T> operator*(const Tensor<T>& a, T s) { return mul(a, s); }
template <class T> Tensor<T> operator/(const Tensor<T>& a, T s) { return div(a, s); }
template <class T> Tensor<T> operator+(T s, const Tensor<T>& a) { return add(a, s); }
template <class T> Tensor<T> operator-(T s, const Tensor<T>& a) { return affine(a, T(-1), s); }
template <class T> Tensor<T> operator*(T s, const Tensor<T>& a) { return mul(a, s); }
template <class T> Tensor<T> operator/(T s, const Tensor<T>& a) { return rdiv(s, a); }

}  // namespace txtcls
