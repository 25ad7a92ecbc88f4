#pragma once
// Dynamic loss scaling for fp16 autocast (ops/autocast.hpp), with torch.cuda.amp.GradScaler's
// rule: the loss is multiplied by `scale` before backward, so that gradients which fp16 would
// flush to zero survive the 16-bit products; before the optimizer step the gradients are divided
// by `scale` and checked. If any is inf or NaN the step is skipped and the scale halves; after
// `growth_interval` clean steps in a row it doubles.
//
//   train::GradScaler<float> scaler;
//   scaler.scale(loss).backward();
//   if (scaler.unscale_and_check(params)) opt.step();   // false: overflow, step skipped
//   scaler.update();
//
// bf16 has float's exponent range and needs no scaling. Works on CPU and CUDA parameters: the
// check is one reduction per gradient (a sum of g * 0, NaN iff some element is not finite),
// added up on the parameters' device and read back once per step.
#include <cmath>
#include <vector>

#include "txtcls/autograd/grad_mode.hpp"
#include "txtcls/ops/elementwise.hpp"
#include "txtcls/ops/reduce.hpp"

namespace txtcls::train {

struct GradScalerOptions {
  double init_scale = 65536.0;  // 2^16, as PyTorch
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
};

// What a resumed run needs to continue bit for bit.
struct GradScalerState {
  double scale = 65536.0;
  int64_t growth_tracker = 0;  // clean steps since the scale last changed
};

template <class T>
class GradScaler {
 public:
  explicit GradScaler(GradScalerOptions o = {}) : opt_(o) {
    TXTCLS_CHECK(o.init_scale > 0 && std::isfinite(o.init_scale), "GradScaler: init_scale must be positive and finite, got ",
                 o.init_scale);
    TXTCLS_CHECK(o.growth_factor > 1, "GradScaler: growth_factor must exceed 1, got ", o.growth_factor);
    TXTCLS_CHECK(o.backoff_factor > 0 && o.backoff_factor < 1, "GradScaler: backoff_factor must be in (0, 1), got ",
                 o.backoff_factor);
    TXTCLS_CHECK(o.growth_interval > 0, "GradScaler: growth_interval must be positive, got ", o.growth_interval);
    state_.scale = o.init_scale;
  }

  // loss * scale (differentiable; call backward on it).
  Tensor<T> scale(const Tensor<T>& loss) const { return mul(loss, static_cast<T>(state_.scale)); }

  // Divides every gradient of `params` by the scale, in place, and returns true when all are
  // finite (the optimizer may step). Parameters without a gradient are skipped. Remembers the
  // outcome for update().
  bool unscale_and_check(const std::vector<Tensor<T>>& params) {
    NoGradGuard ng;
    const T inv = static_cast<T>(1.0 / state_.scale);
    Tensor<T> probe;  // sum over all gradients of sum(g * 0): 0, or NaN after an inf or a NaN
    for (const auto& p : params) {
      Tensor<T> g = p.grad();
      if (!g.defined()) continue;
      g.copy_(mul(g, inv));
      Tensor<T> s = sum(mul(g, T(0)));
      probe = probe.defined() ? add(probe, s) : s;
    }
    found_inf_ = probe.defined() && !std::isfinite(static_cast<double>(probe.item()));
    checked_ = true;
    return !found_inf_;
  }

  // After the step (taken or skipped): back off on overflow, grow after growth_interval clean steps.
  void update() {
    TXTCLS_CHECK(checked_, "GradScaler::update: call unscale_and_check first");
    checked_ = false;
    if (found_inf_) {
      state_.scale *= opt_.backoff_factor;
      state_.growth_tracker = 0;
    } else if (++state_.growth_tracker == opt_.growth_interval) {
      state_.scale *= opt_.growth_factor;
      state_.growth_tracker = 0;
    }
  }

  double current_scale() const { return state_.scale; }
  bool found_inf() const { return found_inf_; }
  const GradScalerState& state() const { return state_; }
  void load_state(const GradScalerState& s) {
    TXTCLS_CHECK(s.scale > 0 && std::isfinite(s.scale), "GradScaler::load_state: scale ", s.scale, " is not positive and finite");
    TXTCLS_CHECK(s.growth_tracker >= 0 && s.growth_tracker < opt_.growth_interval, "GradScaler::load_state: growth tracker ",
                 s.growth_tracker, " outside [0, ", opt_.growth_interval, ")");
    state_ = s;
    checked_ = false;
  }

 private:
  GradScalerOptions opt_;
  GradScalerState state_;
  bool found_inf_ = false, checked_ = false;
};

}  // namespace txtcls::train
