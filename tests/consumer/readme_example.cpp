#include <iostream>
#include <txtcls/txtcls.hpp>

using namespace txtcls;

int main() {
  Generator gen(0);
  // Toy data: 256 points in 2-D; the label says whether x0 + x1 > 0.
  Tensor<float> x = randn<float>({256, 2}, gen);
  Tensor<float> y = cast<float>(sum(x, {1}, true).cpu());
  for (int64_t i = 0; i < 256; ++i) y.set({i, 0}, y.at({i, 0}) > 0 ? 1.f : 0.f);
  // Logistic regression trained by plain gradient descent through autograd.
  Tensor<float> w = zeros<float>({2, 1}).set_requires_grad();
  Tensor<float> b = zeros<float>({1}).set_requires_grad();
  for (int step = 0; step < 200; ++step) {
    Tensor<float> p = sigmoid(add(matmul(x, w), b));
    Tensor<float> loss = neg(mean(add(mul(y, log(p)), mul(1.f - y, log(1.f - p)))));
    loss.backward();
    NoGradGuard no_grad;
    w.copy_(sub(w, mul(w.grad(), 0.5f)));
    b.copy_(sub(b, mul(b.grad(), 0.5f)));
    w.zero_grad();
    b.zero_grad();
    if (step % 50 == 0) std::cout << "step " << step << " loss " << loss.item() << "\n";
  }
}
