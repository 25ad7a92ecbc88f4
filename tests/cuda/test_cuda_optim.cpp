// The fused multi-tensor Adam/AdamW step on the GPU against the CPU optimizer: more parameters
// than one launch's table holds, a parameter longer than one launch's chunks, empty and size-1
// parameters, several steps with weight decay.
#include "cuda_test_util.hpp"

// In a namespace of its own: test files are compiled several to a unit (TXTCLS_UNITY_BUILD).
namespace test_cuda_optim {

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

TEST_CASE("cuda weight average (EMA) matches the CPU, apply and restore included", "[cuda][optim]") {
  std::vector<Shape> shapes = {{1}, {31}, {1025, 3}};
  nn::NamedTensors<float> cpu_params, gpu_params;
  for (size_t i = 0; i < shapes.size(); ++i) {
    Tensor<float> p = ct::rnd<float>(shapes[i], 300 + i);
    std::string name = "p";  // built by +=: GCC 12 warns (-Wrestrict) on "p" + std::string
    name += std::to_string(i);
    cpu_params.emplace_back(name, p.clone().detach());
    gpu_params.emplace_back(name, p.to(gpu()).detach());
  }
  train::Ema<float> cpu_ema(cpu_params, 0.99), gpu_ema(gpu_params, 0.99);
  for (int step = 0; step < 5; ++step) {
    NoGradGuard ng;
    for (size_t i = 0; i < shapes.size(); ++i) {
      Tensor<float> next = ct::rnd<float>(shapes[i], 400 + 10 * step + i);
      cpu_params[i].second.copy_(next);
      gpu_params[i].second.copy_(next);
    }
    cpu_ema.update();
    gpu_ema.update();
  }
  for (size_t i = 0; i < shapes.size(); ++i) {
    // The same arithmetic, up to the compilers' choice of fused multiply-adds.
    CT_REQUIRE_CLOSE(gpu_ema.averaged(i).cpu(), cpu_ema.averaged(i), float);
  }
  const auto raw = gpu_params[2].second.cpu().to_vector();
  {
    auto scope = gpu_ema.scope();
    CT_REQUIRE_CLOSE(gpu_params[2].second.cpu(), cpu_ema.averaged(2), float);
  }
  REQUIRE(gpu_params[2].second.cpu().to_vector() == raw);
}

}  // namespace test_cuda_optim
