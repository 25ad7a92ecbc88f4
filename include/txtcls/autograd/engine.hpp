#pragma once
// Reverse-mode engine: topological order over the graph reachable from the output, gradients
// accumulated per tensor, leaves receive .grad, and every visited node is released afterwards
// (saved tensors freed; a second backward through it is an error, as in PyTorch without
// retain_graph).
#include <unordered_map>
#include <unordered_set>

#include "txtcls/autograd/node.hpp"

namespace txtcls {

template <class T> Tensor<T> ones_like(const Tensor<T>& t);
template <class T> Tensor<T> add(const Tensor<T>& a, const Tensor<T>& b);
template <class T> void add_inplace(Tensor<T>& dst, const Tensor<T>& src);

namespace autograd {

template <class T>
void run_backward(const Tensor<T>& root, const Tensor<T>& seed) {
  using ImplPtr = TensorImpl<T>*;
  TXTCLS_CHECK(root.requires_grad(), "backward: the tensor does not require grad (no parameter in its history)");
  TXTCLS_CHECK(seed.shape() == root.shape(), "backward: gradient shape ", shape_str(seed.shape()),
               " does not match output shape ", shape_str(root.shape()));

  // Iterative DFS post-order (graphs of long recurrences are deep).
  std::vector<ImplPtr> order;
  std::unordered_set<ImplPtr> seen;
  std::vector<std::pair<ImplPtr, size_t>> stack;
  stack.push_back({root.impl_ptr().get(), 0});
  seen.insert(root.impl_ptr().get());
  while (!stack.empty()) {
    auto& [impl, next] = stack.back();
    auto* node = impl->grad_fn.get();
    if (node && next < node->inputs.size()) {
      ImplPtr in = node->inputs[next++].get();
      if (in && node->needs[next - 1] && in->grad_fn && !seen.count(in)) {
        seen.insert(in);
        stack.push_back({in, 0});
      }
      continue;
    }
    order.push_back(impl);
    stack.pop_back();
  }

  NoGradGuard no_grad;  // no double backward
  std::unordered_map<ImplPtr, Tensor<T>> grads;
  grads[root.impl_ptr().get()] = seed;
  for (size_t k = order.size(); k-- > 0;) {
    ImplPtr impl = order[k];
    auto node = impl->grad_fn;
    auto it = grads.find(impl);
    if (it == grads.end()) continue;
    Tensor<T> g = std::move(it->second);
    grads.erase(it);
    TXTCLS_CHECK(!node->released, "backward: the graph through op '", node->op,
                 "' was already freed by an earlier backward(); recompute the forward");
    std::vector<Tensor<T>> gin = node->backward(g, node->needs);
    TXTCLS_CHECK(gin.size() == node->inputs.size(), "backward of '", node->op, "' returned ", gin.size(),
                 " gradients for ", node->inputs.size(), " inputs");
    for (size_t i = 0; i < gin.size(); ++i) {
      auto& in = node->inputs[i];
      if (!in || !node->needs[i] || !gin[i].defined()) continue;
      TXTCLS_CHECK(gin[i].shape() == in->shape, "backward of '", node->op, "': gradient ", i, " has shape ",
                   shape_str(gin[i].shape()), ", input has ", shape_str(in->shape));
      if (in->grad_fn) {
        auto jt = grads.find(in.get());
        if (jt == grads.end()) grads.emplace(in.get(), gin[i]);
        else jt->second = add(jt->second, gin[i]);
      } else if (in->requires_grad) {
        if (!in->grad) {
          // The leaf keeps the gradient tensor itself when nothing else shares its storage (a
          // fresh result, e.g. embedding's [V, D] table); otherwise its own copy, since later
          // contributions are added into .grad in place.
          const bool sole_owner = gin[i].is_sole_owner() && gin[i].is_contiguous() && gin[i].offset() == 0 &&
                                  static_cast<int64_t>(gin[i].impl().storage->size()) == gin[i].numel();
          in->grad = sole_owner ? gin[i].impl_ptr() : gin[i].clone().impl_ptr();
        } else {
          Tensor<T> acc(in->grad);
          add_inplace(acc, gin[i]);
        }
      }
    }
    node->backward = nullptr;  // frees saved tensors
    node->released = true;
  }
}

}  // namespace autograd

template <class T>
void Tensor<T>::backward(const Tensor<T>& grad_output) const {
  if (grad_output.defined()) {
    autograd::run_backward(*this, grad_output);
  } else {
    TXTCLS_CHECK(numel() == 1, "backward: output of shape ", shape_str(shape()),
                 " is not a scalar; pass the gradient of the output explicitly");
    autograd::run_backward(*this, ones_like(*this));
  }
}

}  // namespace txtcls
