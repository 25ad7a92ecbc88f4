#pragma once
// nn::Linear: y = x W^T + b with W [out, in] and b [out], the layout of torch.nn.Linear, so its
// `weight` and `bias` load unchanged from PyTorch checkpoints.
#include <cmath>

#include "txtcls/nn/module.hpp"
#include "txtcls/ops/matmul.hpp"

namespace txtcls::nn {

template <class T>
class Linear : public UnaryModule<T> {
 public:
  // PyTorch's default initialisation: kaiming_uniform_(a = sqrt(5)) on W reduces to
  // U(-1/sqrt(in), 1/sqrt(in)), and the bias uses the same bound (0 when in == 0).
  Linear(int64_t in_features, int64_t out_features, bool bias = true, Generator& gen = default_generator())
      : in_features_(in_features), out_features_(out_features) {
    TXTCLS_CHECK(in_features >= 0 && out_features >= 0, "Linear: negative size (in ", in_features, ", out ",
                 out_features, ")");
    const double bound = in_features > 0 ? 1.0 / std::sqrt(static_cast<double>(in_features)) : 0.0;
    weight = this->register_parameter("weight", rand_uniform<T>({out_features, in_features}, gen, -bound, bound));
    if (bias) this->bias = this->register_parameter("bias", rand_uniform<T>({out_features}, gen, -bound, bound));
  }

  std::string type_name() const override { return "Linear"; }

  // x [..., in] -> [..., out]
  Tensor<T> forward(const Tensor<T>& x) override {
    TXTCLS_CHECK(x.dim() >= 1 && x.size(-1) == in_features_, "Linear(", in_features_, " -> ", out_features_,
                 "): input of shape ", shape_str(x.shape()), " does not end in ", in_features_);
    return linear(x, weight, bias);
  }

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }

  Tensor<T> weight;  // [out, in]
  Tensor<T> bias;    // [out], undefined when built without bias

 private:
  int64_t in_features_, out_features_;
};

}  // namespace txtcls::nn
