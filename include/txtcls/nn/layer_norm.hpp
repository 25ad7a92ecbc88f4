#pragma once
// Normalisation modules over the last dim. LayerNorm has torch.nn.LayerNorm's parameters
// `weight` (ones) and `bias` (zeros), both omitted when affine is false; RMSNorm has `weight`.
#include "txtcls/nn/module.hpp"
#include "txtcls/ops/norm.hpp"

namespace txtcls::nn {

template <class T>
class LayerNorm : public UnaryModule<T> {
 public:
  explicit LayerNorm(int64_t dim, double eps = 1e-5, bool affine = true) : dim_(dim), eps_(eps) {
    TXTCLS_CHECK(dim > 0, "LayerNorm: dim must be positive, got ", dim);
    TXTCLS_CHECK(eps >= 0, "LayerNorm: eps must be non-negative, got ", eps);
    if (affine) {
      weight = this->register_parameter("weight", ones<T>({dim}));
      bias = this->register_parameter("bias", zeros<T>({dim}));
    }
  }

  std::string type_name() const override { return "LayerNorm"; }

  Tensor<T> forward(const Tensor<T>& x) override {
    TXTCLS_CHECK(x.dim() >= 1 && x.size(-1) == dim_, "LayerNorm(", dim_, "): input of shape ", shape_str(x.shape()),
                 " does not end in ", dim_);
    return layer_norm(x, weight, bias, eps_);
  }

  int64_t dim() const { return dim_; }
  double eps() const { return eps_; }

  Tensor<T> weight;  // [dim], undefined without affine
  Tensor<T> bias;    // [dim], undefined without affine

 private:
  int64_t dim_;
  double eps_;
};

template <class T>
class RMSNorm : public UnaryModule<T> {
 public:
  explicit RMSNorm(int64_t dim, double eps = 1e-6) : dim_(dim), eps_(eps) {
    TXTCLS_CHECK(dim > 0, "RMSNorm: dim must be positive, got ", dim);
    TXTCLS_CHECK(eps >= 0, "RMSNorm: eps must be non-negative, got ", eps);
    weight = this->register_parameter("weight", ones<T>({dim}));
  }

  std::string type_name() const override { return "RMSNorm"; }

  Tensor<T> forward(const Tensor<T>& x) override {
    TXTCLS_CHECK(x.dim() >= 1 && x.size(-1) == dim_, "RMSNorm(", dim_, "): input of shape ", shape_str(x.shape()),
                 " does not end in ", dim_);
    return rms_norm(x, weight, eps_);
  }

  int64_t dim() const { return dim_; }
  double eps() const { return eps_; }

  Tensor<T> weight;  // [dim]

 private:
  int64_t dim_;
  double eps_;
};

}  // namespace txtcls::nn
