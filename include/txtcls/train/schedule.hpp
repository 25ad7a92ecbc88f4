#pragma once
// Learning-rate schedules as multipliers of the base rate, functions of the number of optimizer
// steps taken, with the semantics of Hugging Face transformers' get_*_schedule_with_warmup, and
// LambdaLR, the driver that applies one to an optimizer the way torch.optim.lr_scheduler.LambdaLR
// does: lr = base_lr * f(0) on construction, then lr = base_lr * f(k) after the k-th step().
#include <cmath>
#include <functional>
#include <numbers>

#include "txtcls/train/optim.hpp"

namespace txtcls::train {

using LrLambda = std::function<double(int64_t step)>;

inline LrLambda constant_schedule() {
  return [](int64_t) { return 1.0; };
}

// Linear ramp 0 -> 1 over `warmup` steps, then 1.
inline LrLambda constant_schedule_with_warmup(int64_t warmup) {
  TXTCLS_CHECK(warmup >= 0, "constant_schedule_with_warmup: negative warmup ", warmup);
  return [warmup](int64_t s) {
    return s < warmup ? static_cast<double>(s) / static_cast<double>(std::max<int64_t>(1, warmup)) : 1.0;
  };
}

// Linear ramp 0 -> 1 over `warmup` steps, then linear decay to 0 at `total` (0 afterwards).
inline LrLambda linear_schedule_with_warmup(int64_t warmup, int64_t total) {
  TXTCLS_CHECK(warmup >= 0 && total >= 0, "linear_schedule_with_warmup: negative warmup (", warmup, ") or total (",
               total, ")");
  return [warmup, total](int64_t s) {
    if (s < warmup) return static_cast<double>(s) / static_cast<double>(std::max<int64_t>(1, warmup));
    return std::max(0.0, static_cast<double>(total - s) / static_cast<double>(std::max<int64_t>(1, total - warmup)));
  };
}

// Linear warmup, then 0.5 (1 + cos(2 pi cycles progress)) with progress 0 -> 1 from `warmup` to
// `total`; the default half cycle decays from 1 to 0. Clamped at 0.
inline LrLambda cosine_schedule_with_warmup(int64_t warmup, int64_t total, double num_cycles = 0.5) {
  TXTCLS_CHECK(warmup >= 0 && total >= 0, "cosine_schedule_with_warmup: negative warmup (", warmup, ") or total (",
               total, ")");
  return [warmup, total, num_cycles](int64_t s) {
    if (s < warmup) return static_cast<double>(s) / static_cast<double>(std::max<int64_t>(1, warmup));
    const double progress =
        static_cast<double>(s - warmup) / static_cast<double>(std::max<int64_t>(1, total - warmup));
    return std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * num_cycles * 2.0 * progress)));
  };
}

// Call step() once after each optimizer.step(). The only state is the step count: save
// last_step() with a checkpoint and pass it to set_last_step() on resume.
template <class T>
class LambdaLR {
 public:
  LambdaLR(Optimizer<T>& opt, LrLambda f) : opt_(opt), f_(std::move(f)), base_lr_(opt.lr()) {
    TXTCLS_CHECK(f_, "LambdaLR: empty schedule function");
    apply();
  }

  void step() {
    ++last_step_;
    apply();
  }
  void set_last_step(int64_t s) {
    TXTCLS_CHECK(s >= 0, "LambdaLR: negative step ", s);
    last_step_ = s;
    apply();
  }
  int64_t last_step() const { return last_step_; }
  double base_lr() const { return base_lr_; }
  double lr() const { return opt_.lr(); }

 private:
  void apply() {
    const double m = f_(last_step_);
    TXTCLS_CHECK(m >= 0 && std::isfinite(m), "LambdaLR: the schedule returned ", m, " at step ", last_step_);
    opt_.set_lr(base_lr_ * m);
  }

  Optimizer<T>& opt_;
  LrLambda f_;
  double base_lr_;
  int64_t last_step_ = 0;
};

}  // namespace txtcls::train
