// The fused multi-tensor Adam/AdamW step on the GPU against the CPU optimizer: more parameters
// than one launch's table holds, a parameter longer than one launch's chunks, empty and size-1
// parameters, several steps with weight decay.
#include "cuda_test_util.hpp"

using namespace txtcls;
using ct::gpu;

namespace {

template <class T, class Opt>
void check_optimizer(train::AdamOptions o) {
  std::vector<Shape> shapes = {{1}, {0}, {31}, {1025, 3}, {7 << 20}};
  for (int i = 0; i < 14; ++i) shapes.push_back({i + 2, 5});  // 19 parameters: two tensor tables
  std::vector<Tensor<T>> cpu_params, gpu_params;
  for (size_t i = 0; i < shapes.size(); ++i) {
    Tensor<T> p = ct::rnd<T>(shapes[i], 100 + i);
    cpu_params.push_back(p.clone().detach().set_requires_grad());
    gpu_params.push_back(p.to(gpu()).detach().set_requires_grad());
  }
  Opt cpu_opt(cpu_params, o), gpu_opt(gpu_params, o);
  for (int step = 0; step < 3; ++step) {
    for (size_t i = 0; i < shapes.size(); ++i) {
      Tensor<T> g = ct::rnd<T>(shapes[i], 1000 * step + i);
      cpu_params[i].set_grad(g);
      gpu_params[i].set_grad(g.to(gpu()));
    }
    cpu_opt.step();
    gpu_opt.step();
  }
  for (size_t i = 0; i < shapes.size(); ++i) {
    INFO("parameter " << i << " " << shape_str(shapes[i]));
    CT_REQUIRE_CLOSE(gpu_params[i].cpu(), cpu_params[i], T);
  }
}

}  // namespace

TEST_CASE("cuda fused Adam and AdamW match the CPU optimizers", "[cuda][optim]") {
  train::AdamOptions o;
  o.lr = 1e-2;
  o.weight_decay = 0.1;
  check_optimizer<float, train::Adam<float>>(o);
  check_optimizer<double, train::Adam<double>>(o);
  check_optimizer<float, train::AdamW<float>>(o);
  o.beta1 = 0.3;  // the other lerp formula
  check_optimizer<double, train::AdamW<double>>(o);
}
