#pragma once
// nn::Dropout: inverted dropout while training, identity in eval mode. Masks are drawn from the
// module's generator: default_generator() of the calling thread unless set_generator() gave one.
#include "txtcls/nn/module.hpp"
#include "txtcls/ops/dropout.hpp"

namespace txtcls::nn {

template <class T>
class Dropout : public UnaryModule<T> {
 public:
  explicit Dropout(double p = 0.5) : p_(p) {
    TXTCLS_CHECK(p >= 0.0 && p <= 1.0, "Dropout: p must be in [0, 1], got ", p);
  }

  std::string type_name() const override { return "Dropout"; }

  Tensor<T> forward(const Tensor<T>& x) override {
    return dropout(x, p_, gen_ ? *gen_ : default_generator(), this->is_training());
  }

  double p() const { return p_; }
  // The generator must outlive the module; nullptr returns to default_generator().
  void set_generator(Generator* g) { gen_ = g; }
  // The generator set_generator gave, or nullptr (ops that apply this dropout themselves draw from it).
  Generator* generator() const { return gen_; }

 private:
  double p_;
  Generator* gen_ = nullptr;
};

}  // namespace txtcls::nn
