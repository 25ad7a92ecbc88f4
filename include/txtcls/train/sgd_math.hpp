#pragma once
// The per-element SGD update of torch.optim.SGD, written once for the CPU loop (train/optim.hpp)
// and the CUDA kernel (kernels/optim.cu). Coefficients are set on the host per parameter.
#include "txtcls/core/config.hpp"

namespace txtcls::train {

template <class T>
struct SgdStepMath {
  T lr, wd, mom, one_minus_damp;
  bool first;     // the momentum buffer starts as the first step's direction
  bool nesterov;

  // Without momentum: p -= lr (g + wd p).
  TXTCLS_HD void plain(T& p, T g) const { p = p + (-lr) * (g + wd * p); }

  // With momentum buffer b: b = first ? d : mom b + (1 - dampening) d; p -= lr (nesterov ? d + mom b : b).
  TXTCLS_HD void momentum(T& p, T g, T& b) const {
    const T d = g + wd * p;
    b = first ? d : b * mom + one_minus_damp * d;
    const T u = nesterov ? d + mom * b : b;
    p = p + (-lr) * u;
  }
};

}  // namespace txtcls::train
