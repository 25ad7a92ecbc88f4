#include <iostream>
#include <txtcls/txtcls.hpp>

using namespace txtcls;

// A small MLP trained with Adam on toy data: the parts every model in txtcls is made of.
int main() {
  Generator gen(0);
  Tensor<float> x = randn<float>({512, 8}, gen);                        // 512 points, 8 features
  Tensor<int64_t> y = argmax(matmul(x, randn<float>({8, 3}, gen)), 1);  // 3 classes
  auto model = std::make_shared<nn::Sequential<float>>();
  model->push_back(std::make_shared<nn::Linear<float>>(8, 32, true, gen));
  model->push_back(std::make_shared<nn::Lambda<float>>([](const Tensor<float>& h) { return relu(h); }));
  model->push_back(std::make_shared<nn::Linear<float>>(32, 3, true, gen));
  train::Adam<float> opt(model->named_parameters(), {.lr = 0.01});
  for (int step = 1; step <= 300; ++step) {
    Tensor<float> loss = cross_entropy(model->forward(x), y);
    opt.zero_grad();
    loss.backward();
    opt.step();
    if (step % 100 == 0) std::cout << "step " << step << "  loss " << loss.item() << "\n";
  }
  NoGradGuard no_grad;
  auto pred = argmax(model->forward(x), 1).to_vector(), gold = y.to_vector();
  int correct = 0;
  for (size_t i = 0; i < gold.size(); ++i) correct += pred[i] == gold[i];
  std::cout << "training accuracy " << correct / 512.0 << "\n";
  return correct > 450 ? 0 : 1;
}
