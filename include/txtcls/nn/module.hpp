#pragma once
// nn::Module: a node of the model tree. It owns named parameters, buffers and child modules,
// and names them hierarchically with '.' exactly as PyTorch does, so a Hugging Face / PyTorch
// state_dict maps one to one onto a txtcls model ("encoder.layer.0.attention.query.weight").
// Modules are not copyable and live behind std::shared_ptr (a child can be shared by parents).
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

#include "txtcls/tensor.hpp"

namespace txtcls::nn {

template <class T>
using NamedTensors = std::vector<std::pair<std::string, Tensor<T>>>;
template <class T>
using StateDict = std::map<std::string, Tensor<T>>;

// What a non-strict load_state_dict skipped (a strict load throws instead).
struct LoadResult {
  std::vector<std::string> missing_keys;
  std::vector<std::string> unexpected_keys;
};

template <class T>
class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Shown in error messages ("Linear", "Sequential", ...).
  virtual std::string type_name() const { return "Module"; }

  // ---- registration. Names are local (no '.'), unique among this module's parameters,
  // buffers and children. The stored tensor shares its impl with the returned handle.
  Tensor<T> register_parameter(const std::string& name, Tensor<T> t) {
    check_new_name(name, "register_parameter");
    TXTCLS_CHECK(t.defined(), type_name(), ".register_parameter('", name, "'): undefined tensor");
    TXTCLS_CHECK(t.is_leaf(), type_name(), ".register_parameter('", name, "'): the tensor comes from op '",
                 t.grad_fn()->op, "'; parameters must be leaves (detach() it)");
    t.set_requires_grad(true);
    params_.emplace_back(name, t);
    return t;
  }

  Tensor<T> register_buffer(const std::string& name, Tensor<T> t) {
    check_new_name(name, "register_buffer");
    TXTCLS_CHECK(t.defined(), type_name(), ".register_buffer('", name, "'): undefined tensor");
    buffers_.emplace_back(name, t);
    return t;
  }

  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    static_assert(std::is_base_of_v<Module<T>, M>, "register_module: M must derive from nn::Module<T>");
    check_new_name(name, "register_module");
    TXTCLS_CHECK(m, type_name(), ".register_module('", name, "'): null module");
    TXTCLS_CHECK(static_cast<const Module<T>*>(m.get()) != this, type_name(), ".register_module('", name,
                 "'): a module cannot be its own child");
    children_.emplace_back(name, m);
    return m;
  }

  // ---- traversal, in registration order, depth first (PyTorch's order).
  // A tensor reachable under several names (tied weights) is listed once, under its first name.
  NamedTensors<T> named_parameters(bool recurse = true) const {
    NamedTensors<T> out;
    std::unordered_set<const void*> seen;
    collect(out, seen, "", recurse, &Module::params_);
    return out;
  }
  std::vector<Tensor<T>> parameters(bool recurse = true) const {
    std::vector<Tensor<T>> out;
    for (auto& [n, p] : named_parameters(recurse)) out.push_back(p);
    return out;
  }
  NamedTensors<T> named_buffers(bool recurse = true) const {
    NamedTensors<T> out;
    std::unordered_set<const void*> seen;
    collect(out, seen, "", recurse, &Module::buffers_);
    return out;
  }
  const std::vector<std::pair<std::string, std::shared_ptr<Module<T>>>>& named_children() const { return children_; }
  // This module (name "") and all descendants, each once.
  std::vector<std::pair<std::string, Module<T>*>> named_modules() {
    std::vector<std::pair<std::string, Module<T>*>> out;
    std::unordered_set<const Module<T>*> seen;
    collect_modules(out, seen, "");
    return out;
  }

  // ---- modes
  virtual void train(bool on = true) {
    training_ = on;
    for (auto& [n, c] : children_) c->train(on);
  }
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Drops every parameter's gradient (PyTorch's set_to_none behaviour).
  void zero_grad() {
    for (auto& [n, p] : named_parameters()) p.zero_grad();
  }

  int64_t num_parameters() const {
    int64_t n = 0;
    for (auto& [name, p] : named_parameters()) n += p.numel();
    return n;
  }

  // ---- state dict: parameters and buffers under their full names, detached (sharing storage;
  // clone the values to snapshot them). Tied tensors appear under every name, as in PyTorch.
  StateDict<T> state_dict() const {
    StateDict<T> out;
    for (auto& [n, t] : all_entries()) out.emplace(n, t.detach());
    return out;
  }

  // Copies values in place (no tensor is replaced, so optimizers and views stay valid).
  // Nothing is written unless every check passes. Shape mismatches are always errors; with
  // strict, missing and unexpected names are too. One error lists every problem.
  LoadResult load_state_dict(const StateDict<T>& sd, bool strict = true) {
    LoadResult res;
    std::vector<std::string> shape_errors;
    std::vector<std::pair<Tensor<T>, const Tensor<T>*>> copies;
    std::unordered_set<std::string> expected;
    for (auto& [name, t] : all_entries()) {
      expected.insert(name);
      auto it = sd.find(name);
      if (it == sd.end()) {
        res.missing_keys.push_back(name);
      } else if (!it->second.defined() || it->second.shape() != t.shape()) {
        shape_errors.push_back(name + ": checkpoint " +
                               (it->second.defined() ? shape_str(it->second.shape()) : std::string("undefined")) +
                               " vs model " + shape_str(t.shape()));
      } else {
        copies.emplace_back(t, &it->second);
      }
    }
    for (auto& [name, t] : sd)
      if (!expected.count(name)) res.unexpected_keys.push_back(name);

    const bool fail = !shape_errors.empty() || (strict && (!res.missing_keys.empty() || !res.unexpected_keys.empty()));
    if (fail) {
      std::ostringstream os;
      os << type_name() << ".load_state_dict:";
      const char* sep = " ";
      auto list = [&](const char* what, const std::vector<std::string>& v) {
        if (v.empty()) return;
        os << sep << v.size() << ' ' << what << " [";
        for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << v[i];
        os << ']';
        sep = "; ";
      };
      if (strict) {
        list("missing", res.missing_keys);
        list("unexpected", res.unexpected_keys);
      }
      list("shape mismatch", shape_errors);
      throw Error(os.str());
    }
    NoGradGuard ng;
    for (auto& [dst, src] : copies) dst.copy_(*src);
    return res;
  }

  // Moves every parameter, buffer and gradient to `d`. The tensors' impls are rebound to the new
  // storage (like PyTorch's param.data = ...), so handles held by modules and optimizers follow.
  // All copies are made before any rebinding: on error the module is unchanged.
  void to(Device d) {
    std::vector<std::pair<TensorImpl<T>*, Tensor<T>>> moves;
    std::unordered_set<const void*> seen;
    auto plan = [&](const Tensor<T>& t) {
      if (!seen.insert(t.impl_ptr().get()).second || t.device() == d) return;
      NoGradGuard ng;
      moves.emplace_back(t.impl_ptr().get(), t.detach().to(d));
      Tensor<T> g = t.grad();
      if (g.defined() && g.device() != d) moves.emplace_back(g.impl_ptr().get(), g.detach().to(d));
    };
    for (auto& [n, t] : all_entries()) plan(t);
    for (auto& [impl, moved] : moves) {
      impl->storage = moved.impl().storage;
      impl->strides = moved.strides();
      impl->offset = moved.offset();
    }
  }

 private:
  using Slot = NamedTensors<T> Module::*;

  void check_new_name(const std::string& name, const char* what) const {
    TXTCLS_CHECK(!name.empty() && name.find('.') == std::string::npos, type_name(), ".", what, "('", name,
                 "'): names must be non-empty and contain no '.'");
    auto taken = [&](const auto& v) {
      for (auto& e : v)
        if (e.first == name) return true;
      return false;
    };
    TXTCLS_CHECK(!taken(params_) && !taken(buffers_) && !taken(children_), type_name(), ".", what, "('", name,
                 "'): the name is already used in this module");
  }

  void collect(NamedTensors<T>& out, std::unordered_set<const void*>& seen, const std::string& prefix, bool recurse,
               Slot slot) const {
    for (auto& [n, t] : this->*slot)
      if (seen.insert(t.impl_ptr().get()).second) out.emplace_back(prefix + n, t);
    if (!recurse) return;
    for (auto& [n, c] : children_) c->collect(out, seen, prefix + n + ".", true, slot);
  }

  void collect_modules(std::vector<std::pair<std::string, Module<T>*>>& out, std::unordered_set<const Module<T>*>& seen,
                       const std::string& name) {
    if (!seen.insert(this).second) return;
    out.emplace_back(name, this);
    for (auto& [n, c] : children_) c->collect_modules(out, seen, name.empty() ? n : name + "." + n);
  }

  // Parameters then buffers of each module, every name (no de-duplication).
  void collect_all(NamedTensors<T>& out, const std::string& prefix) const {
    for (auto& [n, t] : params_) out.emplace_back(prefix + n, t);
    for (auto& [n, t] : buffers_) out.emplace_back(prefix + n, t);
    for (auto& [n, c] : children_) c->collect_all(out, prefix + n + ".");
  }
  NamedTensors<T> all_entries() const {
    NamedTensors<T> out;
    collect_all(out, "");
    return out;
  }

  NamedTensors<T> params_;
  NamedTensors<T> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module<T>>>> children_;
  bool training_ = true;
};

// A module mapping one tensor to one tensor: what Sequential chains.
template <class T>
class UnaryModule : public Module<T> {
 public:
  virtual Tensor<T> forward(const Tensor<T>& x) = 0;
  Tensor<T> operator()(const Tensor<T>& x) { return forward(x); }
};

}  // namespace txtcls::nn
