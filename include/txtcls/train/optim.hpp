#pragma once
// Optimizers with the exact update rules of torch.optim.SGD, Adam and AdamW (single-tensor CPU
// path of PyTorch 2.x, same operation order), so hyperparameters transfer and a run resumed from
// state_dict() continues bit for bit. Updates are in place on the parameters' storage; a
// parameter whose .grad is undefined is skipped and its state left untouched.
#include <cmath>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <unordered_set>
#include <vector>

#include "txtcls/cuda/adam.hpp"
#include "txtcls/cuda/optim.hpp"
#include "txtcls/nn/module.hpp"
#include "txtcls/train/adam_math.hpp"
#include "txtcls/train/sgd_math.hpp"

namespace txtcls::train {

using nn::NamedTensors;
using nn::StateDict;

template <class T>
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  const std::string& type_name() const { return name_; }
  virtual void step() = 0;

  // Drops the gradients of all parameters (set to none, PyTorch's default).
  void zero_grad() {
    for (auto& [n, p] : params_) p.zero_grad();
  }

  double lr() const { return lr_; }
  void set_lr(double lr) {
    TXTCLS_CHECK(lr >= 0 && std::isfinite(lr), type_name(), ": invalid learning rate ", lr);
    lr_ = lr;
  }

  // Parameters whose name satisfies `pred` get no weight decay (e.g. biases and LayerNorm
  // weights when fine-tuning transformers). Replaces any earlier exclusion.
  void exclude_from_weight_decay(const std::function<bool(const std::string&)>& pred) {
    for (size_t i = 0; i < params_.size(); ++i) decay_[i] = !pred(params_[i].first);
  }
  bool weight_decay_applies(size_t i) const { return decay_.at(i); }

  const NamedTensors<T>& named_parameters() const { return params_; }
  // Number of updates parameter i has received.
  int64_t step_count(size_t i) const { return state_.at(i).step; }

  // Internal state as named tensors: "<param>.step" (a scalar) and "<param>.<buffer>" for each
  // parameter that has state. Values are copies. Hyperparameters are not included: they come
  // from the constructor and the learning-rate schedule.
  StateDict<T> state_dict() const {
    StateDict<T> out;
    NoGradGuard ng;
    for (size_t i = 0; i < params_.size(); ++i) {
      const auto& st = state_[i];
      if (st.bufs.empty()) continue;
      const std::string& name = params_[i].first;
      TXTCLS_CHECK(static_cast<int64_t>(static_cast<T>(st.step)) == st.step, type_name(),
                   ".state_dict: step count ", st.step, " of '", name, "' is not exactly representable in this dtype");
      out.emplace(name + ".step", scalar<T>(static_cast<T>(st.step)));
      for (size_t k = 0; k < buf_names_.size(); ++k) out.emplace(name + "." + buf_names_[k], st.bufs[k].clone());
    }
    return out;
  }

  // Replaces the whole state: parameters absent from `sd` start fresh. Checks everything first
  // and reports every problem (unknown names, wrong shapes, incomplete or invalid entries) at once.
  void load_state_dict(const StateDict<T>& sd) {
    std::vector<std::string> problems;
    std::vector<ParamState> next(params_.size());
    std::vector<std::vector<bool>> seen(params_.size(), std::vector<bool>(buf_names_.size() + 1, false));
    std::map<std::string, size_t> index;
    for (size_t i = 0; i < params_.size(); ++i) index.emplace(params_[i].first, i);
    for (auto& [key, t] : sd) {
      const auto dot = key.rfind('.');
      const std::string pname = dot == std::string::npos ? std::string() : key.substr(0, dot);
      const std::string slot = dot == std::string::npos ? key : key.substr(dot + 1);
      auto it = index.find(pname);
      int64_t k = -1;
      if (slot == "step") k = 0;
      for (size_t b = 0; b < buf_names_.size(); ++b)
        if (slot == buf_names_[b]) k = static_cast<int64_t>(b) + 1;
      if (it == index.end() || k < 0) {
        problems.push_back("unexpected '" + key + "'");
        continue;
      }
      const size_t i = it->second;
      const Tensor<T>& p = params_[i].second;
      if (!t.defined()) {
        problems.push_back("'" + key + "' is undefined");
      } else if (k == 0) {
        const double v = t.numel() == 1 ? static_cast<double>(t.item()) : -1.0;
        if (t.numel() != 1 || v < 0 || v != std::floor(v))
          problems.push_back("'" + key + "' must be one non-negative integer, got shape " + shape_str(t.shape()));
        else
          next[i].step = static_cast<int64_t>(v);
      } else if (t.shape() != p.shape()) {
        problems.push_back("'" + key + "': checkpoint " + shape_str(t.shape()) + " vs parameter " + shape_str(p.shape()));
      } else {
        if (next[i].bufs.empty()) next[i].bufs.resize(buf_names_.size());
        NoGradGuard ng;
        next[i].bufs[k - 1] = t.detach().to(p.device()).contiguous().clone();
      }
      seen[i][k] = true;
    }
    for (size_t i = 0; i < params_.size(); ++i) {
      bool any = false, all = true;
      for (bool s : seen[i]) any = any || s, all = all && s;
      if (any && !all) {
        std::string miss;
        for (size_t k = 0; k < seen[i].size(); ++k)
          if (!seen[i][k]) miss += (miss.empty() ? "" : ", ") + (k == 0 ? std::string("step") : buf_names_[k - 1]);
        problems.push_back("incomplete state for '" + params_[i].first + "' (missing " + miss + ")");
      }
    }
    if (!problems.empty()) {
      std::ostringstream os;
      os << type_name() << ".load_state_dict: " << problems.size() << " problem(s): ";
      for (size_t i = 0; i < problems.size(); ++i) os << (i ? "; " : "") << problems[i];
      throw Error(os.str());
    }
    for (size_t i = 0; i < params_.size(); ++i)
      if (next[i].bufs.empty()) next[i].step = 0;
    state_ = std::move(next);
  }

 protected:
  struct ParamState {
    int64_t step = 0;
    std::vector<Tensor<T>> bufs;  // empty until the first update, then one per buf_names_ entry
  };

  Optimizer(std::string name, NamedTensors<T> params, double lr, std::vector<std::string> buf_names)
      : params_(std::move(params)), name_(std::move(name)), buf_names_(std::move(buf_names)) {
    set_lr(lr);
    std::unordered_set<const void*> impls;
    std::unordered_set<std::string> names;
    for (auto& [n, p] : params_) {
      TXTCLS_CHECK(p.defined(), name_, ": parameter '", n, "' is undefined");
      TXTCLS_CHECK(p.is_leaf(), name_, ": parameter '", n, "' is not a leaf tensor");
      TXTCLS_CHECK(impls.insert(p.impl_ptr().get()).second, name_, ": parameter '", n,
                   "' is the same tensor as an earlier one");
      TXTCLS_CHECK(names.insert(n).second, name_, ": parameter name '", n, "' is used twice");
    }
    state_.resize(params_.size());
    decay_.assign(params_.size(), true);
  }

  static NamedTensors<T> number(const std::vector<Tensor<T>>& ps) {
    NamedTensors<T> out;
    for (size_t i = 0; i < ps.size(); ++i) out.emplace_back(std::to_string(i), ps[i]);
    return out;
  }

  // The gradient of parameter i as a contiguous tensor on the parameter's device, or undefined
  // when it has none. Each optimizer's step dispatches on that device.
  Tensor<T> grad_of(size_t i) const {
    const auto& [name, p] = params_[i];
    Tensor<T> g = p.grad();
    if (!g.defined()) return g;
    TXTCLS_CHECK(g.device() == p.device(), type_name(), ": parameter '", name, "' is on ", p.device().str(),
                 " but its gradient on ", g.device().str());
    TXTCLS_CHECK(p.is_contiguous(), type_name(), ": parameter '", name, "' of shape ", shape_str(p.shape()),
                 " is not contiguous");
    TXTCLS_CHECK(g.shape() == p.shape(), type_name(), ": gradient of '", name, "' has shape ", shape_str(g.shape()),
                 ", parameter ", shape_str(p.shape()));
    NoGradGuard ng;
    return g.detach().contiguous();
  }

  // State of parameter i, allocated (zeros, step 0) on first use.
  ParamState& state_for(size_t i) {
    ParamState& st = state_[i];
    if (st.bufs.empty())
      for (size_t k = 0; k < buf_names_.size(); ++k) st.bufs.push_back(zeros<T>(params_[i].second.shape(), params_[i].second.device()));
    return st;
  }
  bool has_state(size_t i) const { return !state_[i].bufs.empty(); }

  NamedTensors<T> params_;

 private:
  std::string name_;
  double lr_ = 0;
  std::vector<std::string> buf_names_;
  std::vector<ParamState> state_;
  std::vector<bool> decay_;
};

// ---------------------------------------------------------------- SGD
struct SGDOptions {
  double lr = 0.01;
  double momentum = 0;
  double dampening = 0;
  double weight_decay = 0;
  bool nesterov = false;
};

// torch.optim.SGD: d = g + wd p; with momentum, b = d on the first step, else
// b = momentum b + (1 - dampening) d; d = nesterov ? d + momentum b : b; p -= lr d.
template <class T>
class SGD : public Optimizer<T> {
 public:
  SGD(NamedTensors<T> params, SGDOptions o)
      : Optimizer<T>("SGD", std::move(params), o.lr, o.momentum != 0 ? std::vector<std::string>{"momentum_buffer"}
                                                              : std::vector<std::string>{}),
        o_(o) {
    TXTCLS_CHECK(o.momentum >= 0 && o.dampening >= 0 && o.weight_decay >= 0, "SGD: negative momentum (", o.momentum,
                 "), dampening (", o.dampening, ") or weight_decay (", o.weight_decay, ")");
    TXTCLS_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0),
                 "SGD: Nesterov momentum requires momentum > 0 and dampening == 0");
  }
  SGD(const std::vector<Tensor<T>>& params, SGDOptions o) : SGD(Optimizer<T>::number(params), o) {}

  const SGDOptions& options() const { return o_; }

  void step() override {
    NoGradGuard ng;
    const T lr = static_cast<T>(this->lr()), mom = static_cast<T>(o_.momentum),
            one_minus_damp = static_cast<T>(1 - o_.dampening);
    const bool use_mom = o_.momentum != 0, nesterov = o_.nesterov;
    for (size_t i = 0; i < this->params_.size(); ++i) {
      Tensor<T> g = this->grad_of(i);
      if (!g.defined()) continue;
      const T wd = static_cast<T>(this->weight_decay_applies(i) ? o_.weight_decay : 0.0);
      Tensor<T>& param = this->params_[i].second;
      T* p = param.data();
      const T* gp = g.data();
      const int64_t n = g.numel();
      const bool first = use_mom && !this->has_state(i);
      T* b = nullptr;
      if (use_mom) {
        auto& st = this->state_for(i);
        ++st.step;
        b = st.bufs[0].data();
      }
      const SgdStepMath<T> f{lr, wd, mom, one_minus_damp, first, nesterov};
#ifdef TXTCLS_WITH_CUDA
      if (param.device().is_cuda()) {
        cuda::sgd_step<T>(p, gp, b, n, f);
        continue;
      }
#endif
      txtcls::detail::require_cpu(param, "SGD::step");
      if (!use_mom) {
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
        for (int64_t j = 0; j < n; ++j) f.plain(p[j], gp[j]);
        continue;
      }
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
      for (int64_t j = 0; j < n; ++j) f.momentum(p[j], gp[j], b[j]);
    }
  }

 private:
  SGDOptions o_;
};

// ---------------------------------------------------------------- Adam / AdamW
struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;  // Adam: L2 added to the gradient; AdamW: decoupled
};

namespace detail {

// One Adam(W) update of parameter data p with gradient g and moments m, v (CPU).
template <class T>
void adam_update(T* p, const T* g, T* m, T* v, int64_t n, const AdamStepMath<T>& f) {
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain / 4)
  for (int64_t j = 0; j < n; ++j) f(p[j], g[j], m[j], v[j]);
}

}  // namespace detail

// torch.optim.Adam (amsgrad off): g += wd p; m = lerp(m, g, 1 - b1); v = b2 v + (1 - b2) g^2;
// p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
template <class T>
class Adam : public Optimizer<T> {
 public:
  Adam(NamedTensors<T> params, AdamOptions o = {}) : Adam(std::move(params), o, false) {}
  Adam(const std::vector<Tensor<T>>& params, AdamOptions o = {}) : Adam(Optimizer<T>::number(params), o, false) {}

  const AdamOptions& options() const { return o_; }

  void step() override {
    NoGradGuard ng;
#ifdef TXTCLS_WITH_CUDA
    std::vector<cuda::AdamTensor<T>> on_gpu;  // one fused launch for every GPU parameter
    std::vector<Tensor<T>> keep;              // gradients made contiguous, alive until the launch
#endif
    for (size_t i = 0; i < this->params_.size(); ++i) {
      Tensor<T> g = this->grad_of(i);
      if (!g.defined()) continue;
      auto& st = this->state_for(i);
      ++st.step;
      const auto f = AdamStepMath<T>::make(st.step, this->lr(), o_.beta1, o_.beta2, o_.eps,
                                           this->weight_decay_applies(i) ? o_.weight_decay : 0.0, decoupled_);
      Tensor<T>& p = this->params_[i].second;
#ifdef TXTCLS_WITH_CUDA
      if (p.device().is_cuda()) {
        keep.push_back(g);
        on_gpu.push_back({p.data(), g.data(), st.bufs[0].data(), st.bufs[1].data(), g.numel(), f});
        continue;
      }
#endif
      detail::adam_update(p.data(), g.data(), st.bufs[0].data(), st.bufs[1].data(), g.numel(), f);
    }
#ifdef TXTCLS_WITH_CUDA
    if (!on_gpu.empty()) cuda::adam_step<T>(on_gpu);
#endif
  }

 protected:
  Adam(NamedTensors<T> params, AdamOptions o, bool decoupled)
      : Optimizer<T>(decoupled ? "AdamW" : "Adam", std::move(params), o.lr, {"exp_avg", "exp_avg_sq"}),
        o_(o),
        decoupled_(decoupled) {
    const char* name = decoupled ? "AdamW" : "Adam";
    TXTCLS_CHECK(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1, name, ": betas must lie in [0, 1), got (",
                 o.beta1, ", ", o.beta2, ")");
    TXTCLS_CHECK(o.eps >= 0 && o.weight_decay >= 0, name, ": negative eps (", o.eps, ") or weight_decay (",
                 o.weight_decay, ")");
  }

 private:
  AdamOptions o_;
  bool decoupled_;
};

// torch.optim.AdamW: p *= 1 - lr wd, then the Adam update without L2. Its weight_decay
// default is 0.01, as in PyTorch.
template <class T>
class AdamW : public Adam<T> {
 public:
  static AdamOptions defaults() {
    AdamOptions o;
    o.weight_decay = 1e-2;
    return o;
  }
  AdamW(NamedTensors<T> params, AdamOptions o = defaults()) : Adam<T>(std::move(params), o, true) {}
  AdamW(const std::vector<Tensor<T>>& params, AdamOptions o = defaults())
      : Adam<T>(Optimizer<T>::number(params), o, true) {}
};

}  // namespace txtcls::train
