#pragma once
// The per-element Adam(W) update, written once for the CPU loop (train/optim.hpp) and the CUDA
// multi-tensor kernel (kernels/adam.cu). Coefficients are computed on the host per step.
#include <cmath>

#include "txtcls/core/config.hpp"

namespace txtcls::train {

template <class T>
struct AdamStepMath {
  T step_size;   // lr / (1 - beta1^t)
  T bc2_sqrt;    // sqrt(1 - beta2^t)
  T w1, b2, w2;  // 1 - beta1, beta2, 1 - beta2
  T eps;
  T l2;          // Adam: weight decay added to the gradient (0 for AdamW)
  T shrink;      // AdamW: p *= 1 - lr wd (1 for Adam)
  bool lerp_low; // torch's lerp(a, b, w) switches formula at |w| = 0.5 for accuracy; match it

  static AdamStepMath make(int64_t step, double lr, double beta1, double beta2, double eps, double wd, bool decoupled) {
    AdamStepMath s;
    const double bc1 = 1 - std::pow(beta1, static_cast<double>(step));
    const double bc2 = 1 - std::pow(beta2, static_cast<double>(step));
    s.step_size = static_cast<T>(lr / bc1);
    s.bc2_sqrt = static_cast<T>(std::sqrt(bc2));
    s.w1 = static_cast<T>(1 - beta1);
    s.b2 = static_cast<T>(beta2);
    s.w2 = static_cast<T>(1 - beta2);
    s.eps = static_cast<T>(eps);
    s.l2 = static_cast<T>(decoupled ? 0.0 : wd);
    s.shrink = static_cast<T>(decoupled ? 1 - lr * wd : 1.0);
    s.lerp_low = std::abs(1 - beta1) < 0.5;
    return s;
  }

  // p, m, v updated in place from gradient g.
  TXTCLS_HD void operator()(T& p, T g, T& m, T& v) const {
    const T pj = p * shrink;
    const T gj = g + l2 * pj;
    m = lerp_low ? m + w1 * (gj - m) : gj - (gj - m) * (T(1) - w1);
    v = v * b2 + w2 * gj * gj;
    const T denom = std::sqrt(v) / bc2_sqrt + eps;
    p = pj + (-step_size) * (m / denom);
  }
};

}  // namespace txtcls::train
