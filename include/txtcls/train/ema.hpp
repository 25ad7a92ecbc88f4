#pragma once
// Exponential moving average of the weights ("temporal averaging"), as hedwig's RegLSTM does it:
//   on construction  avg = copy of the weights, steps = 0
//   update()         steps += 1; avg = beta avg + (1 - beta) w      (after each optimizer step)
//   apply()          w = avg / (1 - beta^steps)  for evaluation, the raw weights saved
//   restore()        w = the saved raw weights                     (training continues)
// Because avg starts from the weights rather than from zero, this "bias correction" over-scales
// early on (after one step it gives (w0 beta + w1 (1 - beta)) / (1 - beta)); it vanishes once
// beta^steps is negligible (beta = 0.99: a few hundred steps). EmaStart::Zeros starts avg at
// zero instead, which makes the correction exact (a normalised weighted mean of the iterates).
#include <cmath>
#include <string>
#include <vector>

#include "txtcls/nn/module.hpp"

namespace txtcls::train {

enum class EmaStart { Weights, Zeros };

template <class T>
class Ema {
 public:
  explicit Ema(nn::NamedTensors<T> params, double beta = 0.99, EmaStart start = EmaStart::Weights)
      : params_(std::move(params)), beta_(beta), start_(start) {
    TXTCLS_CHECK(beta > 0 && beta < 1, "Ema: beta must lie in (0, 1), got ", beta);
    NoGradGuard ng;
    for (auto& [n, p] : params_) {
      TXTCLS_CHECK(p.defined(), "Ema: parameter '", n, "' is undefined");
      TXTCLS_CHECK(p.is_contiguous(), "Ema: parameter '", n, "' is not contiguous");
      avg_.push_back(start == EmaStart::Weights ? p.detach().clone() : zeros<T>(p.shape(), p.device()));
    }
  }
  explicit Ema(const nn::Module<T>& m, double beta = 0.99, EmaStart start = EmaStart::Weights)
      : Ema(m.named_parameters(), beta, start) {}
  Ema(const Ema&) = delete;
  Ema& operator=(const Ema&) = delete;
  ~Ema() {
    if (applied()) restore();  // never leave a model holding averaged weights by accident
  }

  void update() {
    TXTCLS_CHECK(!applied(), "Ema::update: the averaged weights are swapped in; call restore() first");
    ++steps_;
    const T b = static_cast<T>(beta_), w = static_cast<T>(1 - beta_);
    for (size_t i = 0; i < params_.size(); ++i) {
#ifdef TXTCLS_WITH_CUDA
      if (avg_[i].device().is_cuda()) {  // the same step, in place, as one kernel
        const Shape& st = avg_[i].strides();
        cuda::binary<T>(fn::EmaStep{beta_, 1 - beta_}, avg_[i].data(), params_[i].second.data(), avg_[i].data(),
                        cuda::make_geometry(avg_[i].shape(), {st, st, params_[i].second.strides()}, "Ema::update"));
        continue;
      }
#endif
      T* a = avg_[i].data();
      const T* p = params_[i].second.data();
      const int64_t n = avg_[i].numel();
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
      for (int64_t j = 0; j < n; ++j) a[j] = a[j] * b + w * p[j];
    }
  }

  // The bias-corrected average of parameter i (a new tensor): what apply() writes. Before any
  // update it is the starting average, or the current weights for EmaStart::Zeros.
  Tensor<T> averaged(size_t i) const {
    TXTCLS_CHECK(i < params_.size(), "Ema::averaged: index ", i, " out of range for ", params_.size(), " parameters");
    NoGradGuard ng;
    if (steps_ == 0) return (start_ == EmaStart::Zeros ? params_[i].second.detach() : avg_[i]).clone();
    const T denom = static_cast<T>(1 - std::pow(beta_, static_cast<double>(steps_)));
#ifdef TXTCLS_WITH_CUDA
    if (avg_[i].device().is_cuda()) return txtcls::detail::map_unary(avg_[i], fn::DivBy{static_cast<double>(denom)}, "Ema");
#endif
    Tensor<T> out(avg_[i].shape());
    const T* a = avg_[i].data();
    T* o = out.data();
    const int64_t n = out.numel();
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
    for (int64_t j = 0; j < n; ++j) o[j] = a[j] / denom;
    return out;
  }

  void apply() {
    TXTCLS_CHECK(!applied(), "Ema::apply: the averaged weights are already swapped in");
    NoGradGuard ng;
    for (size_t i = 0; i < params_.size(); ++i) {
      raw_.push_back(params_[i].second.detach().clone());
      Tensor<T> dst = params_[i].second;
      dst.copy_(averaged(i));
    }
    applied_ = true;
  }

  void restore() {
    TXTCLS_CHECK(applied(), "Ema::restore: the averaged weights are not swapped in");
    NoGradGuard ng;
    for (size_t i = 0; i < params_.size(); ++i) {
      Tensor<T> dst = params_[i].second;
      dst.copy_(raw_[i]);
    }
    raw_.clear();
    applied_ = false;
  }

  bool applied() const { return applied_; }
  int64_t steps() const { return steps_; }
  double beta() const { return beta_; }

  // apply() now, restore() when the scope ends: `{ auto avg = ema.scope(); evaluate(model); }`
  class Scope {
   public:
    explicit Scope(Ema& e) : e_(&e) { e.apply(); }
    Scope(Scope&& o) noexcept : e_(o.e_) { o.e_ = nullptr; }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
    Scope& operator=(Scope&&) = delete;
    ~Scope() {
      if (e_ && e_->applied()) e_->restore();
    }

   private:
    Ema* e_;
  };
  [[nodiscard]] Scope scope() { return Scope(*this); }

  // "avg.<param>" (the uncorrected running averages) and "steps" (a scalar).
  nn::StateDict<T> state_dict() const {
    TXTCLS_CHECK(static_cast<int64_t>(static_cast<T>(steps_)) == steps_, "Ema::state_dict: step count ", steps_,
                 " is not exactly representable in this dtype");
    NoGradGuard ng;
    nn::StateDict<T> out;
    out.emplace("steps", scalar<T>(static_cast<T>(steps_)));
    for (size_t i = 0; i < params_.size(); ++i) out.emplace("avg." + params_[i].first, avg_[i].clone());
    return out;
  }

  // Requires exactly the keys state_dict() writes; reports every problem at once.
  void load_state_dict(const nn::StateDict<T>& sd) {
    TXTCLS_CHECK(!applied(), "Ema::load_state_dict: restore() the raw weights first");
    std::vector<std::string> problems;
    std::map<std::string, size_t> index;
    for (size_t i = 0; i < params_.size(); ++i) index.emplace("avg." + params_[i].first, i);
    std::vector<Tensor<T>> next(params_.size());
    int64_t steps = -1;
    for (auto& [k, t] : sd) {
      if (k == "steps") {
        const double v = t.defined() && t.numel() == 1 ? static_cast<double>(t.item()) : -1.0;
        if (v < 0 || v != std::floor(v)) problems.push_back("'steps' must be one non-negative integer");
        else steps = static_cast<int64_t>(v);
        continue;
      }
      auto it = index.find(k);
      if (it == index.end()) {
        problems.push_back("unexpected '" + k + "'");
      } else if (!t.defined() || t.shape() != params_[it->second].second.shape()) {
        problems.push_back("'" + k + "': checkpoint " + (t.defined() ? shape_str(t.shape()) : std::string("undefined")) +
                           " vs parameter " + shape_str(params_[it->second].second.shape()));
      } else {
        NoGradGuard ng;
        // On the parameter's device: a state saved from (or for) another device loads as well.
        next[it->second] = t.detach().to(params_[it->second].second.device()).contiguous().clone();
      }
    }
    if (!sd.count("steps")) problems.push_back("missing 'steps'");
    for (auto& [k, i] : index)
      if (!sd.count(k)) problems.push_back("missing '" + k + "'");
    if (!problems.empty()) {
      std::string msg = "Ema::load_state_dict: " + std::to_string(problems.size()) + " problem(s): ";
      for (size_t i = 0; i < problems.size(); ++i) msg += (i ? "; " : "") + problems[i];
      throw Error(msg);
    }
    avg_ = std::move(next);
    steps_ = steps;
  }

 private:
  nn::NamedTensors<T> params_;
  std::vector<Tensor<T>> avg_;
  std::vector<Tensor<T>> raw_;  // the raw weights while the averages are swapped in
  double beta_;
  EmaStart start_;
  int64_t steps_ = 0;
  bool applied_ = false;
};

}  // namespace txtcls::train
