#pragma once
// Elementwise ops: broadcasting binary arithmetic, scalar forms and unary math, each with its
// backward beside its forward. The arithmetic lives in ops/functors.hpp, shared with CUDA.
#include <type_traits>

#include "txtcls/cuda/elementwise.hpp"
#include "txtcls/ops/functors.hpp"
#include "txtcls/ops/reduce.hpp"
#include "txtcls/tensor/views.hpp"

namespace txtcls {

namespace detail {

// The functors with CUDA kernels (instantiated in kernels/elementwise.cu). Other callables (the
// lambdas of a few CPU-only paths) are refused on a CUDA tensor by require_cpu.
template <class F>
inline constexpr bool kCudaBinary = std::is_same_v<F, fn::Add> || std::is_same_v<F, fn::Sub> ||
                                    std::is_same_v<F, fn::Mul> || std::is_same_v<F, fn::Div>;

#ifdef TXTCLS_WITH_CUDA
template <class T>
void require_same_device(const Tensor<T>& a, const Tensor<T>& b, const char* op) {
  TXTCLS_CHECK(a.device() == b.device(), op, ": operands on different devices (", a.device().str(), " and ",
               b.device().str(), ")");
}

template <class T, class F>
Tensor<T> binary_cuda(const Tensor<T>& a, const Tensor<T>& b, F f, const char* op) {
  require_same_device(a, b, op);
  Shape os = broadcast_shapes(a.shape(), b.shape(), op);
  Tensor<T> out(os, a.device());
  auto g = cuda::make_geometry(os, {out.strides(), broadcast_strides(a.shape(), a.strides(), os),
                                    broadcast_strides(b.shape(), b.strides(), os)}, op);
  cuda::binary<T>(f, a.data(), b.data(), out.data(), g);
  return out;
}

template <class T, class F>
Tensor<T> unary_cuda(const Tensor<T>& x, const F& f, const char* op) {
  Tensor<T> out(x.shape(), x.device());
  cuda::unary<T>(f, x.data(), out.data(), cuda::make_geometry(x.shape(), {out.strides(), x.strides()}, op));
  return out;
}

// g * f.df(x, y) in one kernel.
template <class T, class F>
Tensor<T> unary_grad_cuda(const Tensor<T>& g, const Tensor<T>& x, const Tensor<T>& y, const F& f, const char* op) {
  require_same_device(g, x, op);
  Tensor<T> out(x.shape(), x.device());
  auto geo = cuda::make_geometry(x.shape(), {out.strides(), g.strides(), x.strides(), y.strides()}, op);
  cuda::unary_grad<T>(f, g.data(), x.data(), y.data(), out.data(), geo);
  return out;
}
#endif

// out = f(a, b) with broadcasting.
template <class T, class F>
Tensor<T> binary_kernel(const Tensor<T>& a, const Tensor<T>& b, F f, const char* op) {
#ifdef TXTCLS_WITH_CUDA
  if constexpr (kCudaBinary<F>)
    if (a.device().is_cuda()) return binary_cuda(a, b, f, op);
#endif
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

// out = f(x) for a callable f (CPU only).
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

// out = f.f(x) for a functor of ops/functors.hpp, on the tensor's device.
template <class T, class F>
Tensor<T> map_unary(const Tensor<T>& x, const F& f, const char* op) {
#ifdef TXTCLS_WITH_CUDA
  if (x.device().is_cuda()) return unary_cuda(x, f, op);
#endif
  return unary_kernel(x, [f](T v) { return f.template f<T>(v); }, op);
}

// g * f.df(x, y), where y = f.f(x).
template <class T, class F>
Tensor<T> map_unary_grad(const Tensor<T>& g, const Tensor<T>& x, const Tensor<T>& y, const F& f, const char* op) {
#ifdef TXTCLS_WITH_CUDA
  if (x.device().is_cuda()) return unary_grad_cuda(g, x, y, f, op);
#endif
  Tensor<T> d = binary_kernel(x, y, [f](T xv, T yv) { return f.template df<T>(xv, yv); }, op);
  return mul(g, d);
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
  TXTCLS_CHECK(dst.is_contiguous(), "add_inplace: destination must be contiguous");
  TXTCLS_CHECK(broadcast_shapes(dst.shape(), src.shape(), "add_inplace") == dst.shape(), "add_inplace: ",
               shape_str(src.shape()), " does not broadcast to ", shape_str(dst.shape()));
#ifdef TXTCLS_WITH_CUDA
  if (dst.device().is_cuda()) {
    detail::require_same_device(dst, src, "add_inplace");
    auto g = cuda::make_geometry(dst.shape(), {dst.strides(), dst.strides(),
                                               detail::broadcast_strides(src.shape(), src.strides(), dst.shape())},
                                 "add_inplace");
    cuda::binary<T>(fn::Add{}, dst.data(), src.data(), dst.data(), g);
    return;
  }
#endif
  detail::require_cpu(dst, "add_inplace");
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
// y = f.f(x), dy/dx = f.df(x, y): any functor of ops/functors.hpp (those the CUDA kernels are
// instantiated for run on the GPU too).
template <class T, class F>
Tensor<T> unary(const Tensor<T>& x, F f, const char* op) {
  Tensor<T> out = detail::map_unary(x, f, op);
  autograd::record<T>(out, op, {x}, [f, x = x.detach(), y = out.detach(), op](const Tensor<T>& g, const std::vector<bool>&) {
    return std::vector<Tensor<T>>{detail::map_unary_grad(g, x, y, f, op)};
  });
  return out;
}

template <class T> Tensor<T> neg(const Tensor<T>& x) {
  Tensor<T> out = detail::map_unary(x, fn::Neg{}, "neg");
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
  Tensor<T> out = detail::map_unary(x, fn::Affine{static_cast<double>(alpha), static_cast<double>(beta)}, "affine");
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
  const fn::Rdiv f{static_cast<double>(s)};
  Tensor<T> out = detail::map_unary(x, f, "rdiv");
  autograd::record<T>(out, "rdiv", {x}, [x = x.detach(), y = out.detach(), f](const Tensor<T>& g, const std::vector<bool>&) {
    return std::vector<Tensor<T>>{detail::map_unary_grad(g, x, y, f, "rdiv")};
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
