#pragma once
// Elementwise functors: one definition serves the CPU loops and the CUDA kernels.
// Unary functors give f(x) and the derivative df(x, y) where y = f(x) (whichever is cheaper).
#include <cmath>

#include "txtcls/core/config.hpp"

namespace txtcls::fn {

struct Add { template <class T> TXTCLS_HD T operator()(T a, T b) const { return a + b; } };
struct Sub { template <class T> TXTCLS_HD T operator()(T a, T b) const { return a - b; } };
struct Mul { template <class T> TXTCLS_HD T operator()(T a, T b) const { return a * b; } };
struct Div { template <class T> TXTCLS_HD T operator()(T a, T b) const { return a / b; } };

struct Neg {
  template <class T> TXTCLS_HD T f(T x) const { return -x; }
  template <class T> TXTCLS_HD T df(T, T) const { return T(-1); }
};
struct Exp {
  template <class T> TXTCLS_HD T f(T x) const { return std::exp(x); }
  template <class T> TXTCLS_HD T df(T, T y) const { return y; }
};
struct Log {
  template <class T> TXTCLS_HD T f(T x) const { return std::log(x); }
  template <class T> TXTCLS_HD T df(T x, T) const { return T(1) / x; }
};
struct Sqrt {
  template <class T> TXTCLS_HD T f(T x) const { return std::sqrt(x); }
  template <class T> TXTCLS_HD T df(T, T y) const { return T(0.5) / y; }
};
struct Rsqrt {
  template <class T> TXTCLS_HD T f(T x) const { return T(1) / std::sqrt(x); }
  template <class T> TXTCLS_HD T df(T, T y) const { return T(-0.5) * y * y * y; }
};
struct Pow {
  double p;
  template <class T> TXTCLS_HD T f(T x) const { return static_cast<T>(std::pow(x, static_cast<T>(p))); }
  template <class T> TXTCLS_HD T df(T x, T) const { return static_cast<T>(p * std::pow(x, static_cast<T>(p - 1))); }
};
struct Tanh {
  template <class T> TXTCLS_HD T f(T x) const { return std::tanh(x); }
  template <class T> TXTCLS_HD T df(T, T y) const { return T(1) - y * y; }
};
struct Sigmoid {
  template <class T> TXTCLS_HD T f(T x) const {
    // Split by sign so exp never overflows.
    if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
    T e = std::exp(x);
    return e / (T(1) + e);
  }
  template <class T> TXTCLS_HD T df(T, T y) const { return y * (T(1) - y); }
};
struct Relu {
  template <class T> TXTCLS_HD T f(T x) const { return x > T(0) ? x : T(0); }
  template <class T> TXTCLS_HD T df(T x, T) const { return x > T(0) ? T(1) : T(0); }
};
// GELU, exact form: x * Phi(x).
struct GeluErf {
  template <class T> TXTCLS_HD T f(T x) const { return T(0.5) * x * (T(1) + std::erf(x * T(0.70710678118654752440))); }
  template <class T> TXTCLS_HD T df(T x, T) const {
    T cdf = T(0.5) * (T(1) + std::erf(x * T(0.70710678118654752440)));
    T pdf = T(0.39894228040143267794) * std::exp(T(-0.5) * x * x);
    return cdf + x * pdf;
  }
};
// GELU, tanh approximation (GPT-2 / "gelu_new").
struct GeluTanh {
  template <class T> TXTCLS_HD T f(T x) const {
    T u = T(0.79788456080286535588) * (x + T(0.044715) * x * x * x);
    return T(0.5) * x * (T(1) + std::tanh(u));
  }
  template <class T> TXTCLS_HD T df(T x, T) const {
    T u = T(0.79788456080286535588) * (x + T(0.044715) * x * x * x);
    T th = std::tanh(u);
    T du = T(0.79788456080286535588) * (T(1) + T(3 * 0.044715) * x * x);
    return T(0.5) * (T(1) + th) + T(0.5) * x * (T(1) - th * th) * du;
  }
};
// softplus(x) = log(1 + exp(x)), computed without overflow.
struct Softplus {
  template <class T> TXTCLS_HD T f(T x) const { return (x > T(0) ? x : T(0)) + std::log1p(std::exp(-std::fabs(x))); }
  template <class T> TXTCLS_HD T df(T x, T) const { return Sigmoid{}.f(x); }
};
struct Abs {
  template <class T> TXTCLS_HD T f(T x) const { return std::fabs(x); }
  template <class T> TXTCLS_HD T df(T x, T) const { return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0)); }
};
// Copies (strided -> contiguous, device -> device).
struct Identity {
  template <class T> TXTCLS_HD T f(T x) const { return x; }
  template <class T> TXTCLS_HD T df(T, T) const { return T(1); }
};
// alpha * x + beta: x + s, x - s, s - x, x * s, x / s. The coefficients are kept in double and
// cast back to T, which gives the T value they were made from exactly.
struct Affine {
  double alpha = 1, beta = 0;
  template <class T> TXTCLS_HD T f(T x) const { return static_cast<T>(alpha) * x + static_cast<T>(beta); }
  template <class T> TXTCLS_HD T df(T, T) const { return static_cast<T>(alpha); }
};
// x / d (the weight average's bias correction divides, as the CPU loop always did).
struct DivBy {
  double d = 1;
  template <class T> TXTCLS_HD T f(T x) const { return x / static_cast<T>(d); }
  template <class T> TXTCLS_HD T df(T, T) const { return T(1) / static_cast<T>(d); }
};
// The weight average's step: avg * beta + (1 - beta) * w, with both factors given.
struct EmaStep {
  double beta = 0, weight = 1;
  template <class T> TXTCLS_HD T operator()(T avg, T w) const {
    return avg * static_cast<T>(beta) + static_cast<T>(weight) * w;
  }
};
// s / x
struct Rdiv {
  double s = 1;
  template <class T> TXTCLS_HD T f(T x) const { return static_cast<T>(s) / x; }
  template <class T> TXTCLS_HD T df(T x, T) const { return -static_cast<T>(s) / (x * x); }
};

}  // namespace txtcls::fn
