#pragma once
// Containers. Sequential chains one-tensor modules; ModuleList holds modules of any kind that
// the owner calls itself (a stack of encoder layers). Both name children "0", "1", ... as
// PyTorch, so "encoder.layer.3.output.dense.weight" addresses the same tensor in both.
// Lambda wraps a parameter-free function (an activation) as a module for use in a Sequential.
#include <functional>
#include <string>

#include "txtcls/nn/module.hpp"

namespace txtcls::nn {

template <class T>
class Lambda : public UnaryModule<T> {
 public:
  using Fn = std::function<Tensor<T>(const Tensor<T>&)>;
  explicit Lambda(Fn f, std::string name = "Lambda") : f_(std::move(f)), name_(std::move(name)) {
    TXTCLS_CHECK(f_, "Lambda: empty function");
  }
  std::string type_name() const override { return name_; }
  Tensor<T> forward(const Tensor<T>& x) override { return f_(x); }

 private:
  Fn f_;
  std::string name_;
};

template <class T>
class Sequential : public UnaryModule<T> {
 public:
  Sequential() = default;
  explicit Sequential(const std::vector<std::shared_ptr<UnaryModule<T>>>& layers) {
    for (auto& l : layers) push_back(l);
  }

  std::string type_name() const override { return "Sequential"; }

  template <class M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
    static_assert(std::is_base_of_v<UnaryModule<T>, M>, "Sequential: layers must derive from nn::UnaryModule<T>");
    TXTCLS_CHECK(m, "Sequential::push_back: null module at position ", layers_.size());
    this->register_module(std::to_string(layers_.size()), m);
    layers_.push_back(m);
    return m;
  }

  Tensor<T> forward(const Tensor<T>& x) override {
    Tensor<T> h = x;
    for (auto& l : layers_) h = l->forward(h);
    return h;
  }

  size_t size() const { return layers_.size(); }
  const std::shared_ptr<UnaryModule<T>>& operator[](size_t i) const {
    TXTCLS_CHECK(i < layers_.size(), "Sequential: index ", i, " out of range for ", layers_.size(), " layers");
    return layers_[i];
  }

 private:
  std::vector<std::shared_ptr<UnaryModule<T>>> layers_;
};

template <class T>
class ModuleList : public Module<T> {
 public:
  std::string type_name() const override { return "ModuleList"; }

  template <class M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
    TXTCLS_CHECK(m, "ModuleList::push_back: null module at position ", items_.size());
    this->register_module(std::to_string(items_.size()), m);
    items_.push_back(m);
    return m;
  }

  size_t size() const { return items_.size(); }
  const std::shared_ptr<Module<T>>& operator[](size_t i) const {
    TXTCLS_CHECK(i < items_.size(), "ModuleList: index ", i, " out of range for ", items_.size(), " modules");
    return items_[i];
  }
  // The i-th module as its concrete type; errors if it is not an M.
  template <class M>
  std::shared_ptr<M> get(size_t i) const {
    auto p = std::dynamic_pointer_cast<M>((*this)[i]);
    TXTCLS_CHECK(p, "ModuleList::get: module ", i, " is a ", items_[i]->type_name(), ", not the requested type");
    return p;
  }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

 private:
  std::vector<std::shared_ptr<Module<T>>> items_;
};

}  // namespace txtcls::nn
