#pragma once
// An autograd node: the backward of one op application. It holds the op's inputs (to route
// gradients) and a closure that maps the gradient of the output to gradients of the inputs.
// Ops create nodes through record(); nothing else in the library builds graphs.
#include <functional>
#include <memory>
#include <vector>

#include "txtcls/autograd/grad_mode.hpp"
#include "txtcls/tensor/tensor_decl.hpp"

namespace txtcls::autograd {

template <class T>
struct Node {
  // Given d(loss)/d(output), returns d(loss)/d(input_i) for every input; entries whose
  // needs[i] is false may be left undefined. Returned gradients have the input's shape.
  using BackwardFn = std::function<std::vector<Tensor<T>>(const Tensor<T>& grad_out, const std::vector<bool>& needs)>;

  const char* op = "";
  std::vector<std::shared_ptr<TensorImpl<T>>> inputs;
  std::vector<bool> needs;
  BackwardFn backward;
  bool released = false;  // set after backward: saved tensors are freed
};

// True when any of the inputs needs a gradient and grad mode is on.
template <class T>
bool any_requires_grad(std::initializer_list<const Tensor<T>*> ins) {
  if (!grad_enabled()) return false;
  for (auto* t : ins)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

// Attaches history to `out`. Call after computing the forward; `fn` captures what it needs.
template <class T>
void record(Tensor<T>& out, const char* op, const std::vector<Tensor<T>>& inputs, typename Node<T>::BackwardFn fn) {
  if (!grad_enabled()) return;
  bool any = false;
  for (auto& t : inputs) any = any || (t.defined() && t.requires_grad());
  if (!any) return;
  auto node = std::make_shared<Node<T>>();
  node->op = op;
  for (auto& t : inputs) {
    node->inputs.push_back(t.defined() ? t.impl_ptr() : nullptr);
    node->needs.push_back(t.defined() && t.requires_grad());
  }
  node->backward = std::move(fn);
  out.impl().requires_grad = true;
  out.impl().grad_fn = std::move(node);
}

}  // namespace txtcls::autograd
