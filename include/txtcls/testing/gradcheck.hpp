#pragma once
// Finite-difference gradient checking (central differences, double precision), in the spirit
// of DyNet's checker: every op's backward is tested against its own forward.
#include <functional>
#include <string>
#include <vector>

#include "txtcls/tensor.hpp"

namespace txtcls::testing {

struct GradCheckResult {
  bool ok = true;
  double max_abs_err = 0, max_rel_err = 0;
  std::string where;  // first failing input/element
};

// f maps the inputs to any tensor; the scalar checked is sum(f(x) * w) for a fixed random w,
// so every output element contributes with a distinct weight.
inline GradCheckResult gradcheck(const std::function<Tensor<double>(const std::vector<Tensor<double>>&)>& f,
                                 std::vector<Tensor<double>> inputs, double eps = 1e-6, double atol = 1e-7,
                                 double rtol = 1e-5, uint64_t seed = 7) {
  for (auto& x : inputs) x = x.detach().contiguous().clone().set_requires_grad(true);
  Tensor<double> y0 = f(inputs);
  Generator g(seed);
  Tensor<double> w = randn<double>(y0.shape(), g);
  auto scalar = [&](const std::vector<Tensor<double>>& xs) {
    NoGradGuard ng;
    Tensor<double> y = f(xs);
    return sum(mul(y, w)).item();
  };
  Tensor<double> loss = sum(mul(y0, w));
  GradCheckResult res;
  if (!loss.requires_grad()) {
    res.ok = false;
    res.where = "output does not depend on any input";
    return res;
  }
  loss.backward();
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor<double> x = inputs[k];
    Tensor<double> ga = x.grad();
    double* p = x.data();
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double orig = p[i];
      p[i] = orig + eps;
      double fp = scalar(inputs);
      p[i] = orig - eps;
      double fm = scalar(inputs);
      p[i] = orig;
      const double num = (fp - fm) / (2 * eps);
      const double ana = ga.defined() ? ga.data()[i] : 0.0;
      const double err = std::abs(num - ana);
      res.max_abs_err = std::max(res.max_abs_err, err);
      res.max_rel_err = std::max(res.max_rel_err, err / std::max(std::abs(num), 1e-12));
      if (err > atol + rtol * std::abs(num) && res.ok) {
        res.ok = false;
        res.where = "input " + std::to_string(k) + " element " + std::to_string(i) + ": analytic " +
                    std::to_string(ana) + " vs numeric " + std::to_string(num);
      }
    }
  }
  return res;
}

}  // namespace txtcls::testing
