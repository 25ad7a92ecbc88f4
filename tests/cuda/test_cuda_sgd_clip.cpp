// SGD (plain, momentum with dampening, Nesterov, weight decay) and gradient clipping by global
// norm (2, 1, infinity and a fractional norm; clipping and non-clipping) on GPU parameters against
// the CPU, on parameters of awkward sizes including one longer than a norm chunk.
#include <limits>

#include "cuda_test_util.hpp"
#include "txtcls/train/clip.hpp"

// In a namespace of its own: test files are compiled several to a unit (TXTCLS_UNITY_BUILD).
namespace test_cuda_sgd_clip {

using namespace txtcls;
using ct::gpu;

namespace {

const std::vector<Shape> kShapes = {{1}, {0}, {31}, {1025, 3}, {(1 << 16) + 5}, {7, 4099}};

template <class T>
void check_sgd(train::SGDOptions o) {
  std::vector<Tensor<T>> cpu_params, gpu_params;
  for (size_t i = 0; i < kShapes.size(); ++i) {
    Tensor<T> p = ct::rnd<T>(kShapes[i], 10 + i);
    cpu_params.push_back(p.clone().detach().set_requires_grad());
    gpu_params.push_back(p.to(gpu()).detach().set_requires_grad());
  }
  train::SGD<T> cpu_opt(cpu_params, o), gpu_opt(gpu_params, o);
  for (int step = 0; step < 3; ++step) {
    for (size_t i = 0; i < kShapes.size(); ++i) {
      if (step == 1 && i == 2) {  // a parameter without gradient is skipped on both
        cpu_params[i].zero_grad();
        gpu_params[i].zero_grad();
        continue;
      }
      Tensor<T> g = ct::rnd<T>(kShapes[i], 100 * step + i);
      cpu_params[i].set_grad(g);
      gpu_params[i].set_grad(g.to(gpu()));
    }
    cpu_opt.step();
    gpu_opt.step();
  }
  for (size_t i = 0; i < kShapes.size(); ++i) {
    INFO("parameter " << i << " " << shape_str(kShapes[i]));
    CT_REQUIRE_CLOSE(gpu_params[i].cpu(), cpu_params[i], T);
  }
  // The momentum buffers are saved from the device and reload onto it.
  auto sd = gpu_opt.state_dict();
  if (o.momentum != 0) REQUIRE(sd.size() == 2 * kShapes.size());  // step and momentum_buffer of each
  gpu_opt.load_state_dict(sd);
}

template <class T>
void check_clip(double max_norm, double norm_type) {
  INFO("max_norm " << max_norm << " norm_type " << norm_type);
  std::vector<Tensor<T>> cpu_params, gpu_params;
  for (size_t i = 0; i < kShapes.size(); ++i) {
    Tensor<T> p = ct::rnd<T>(kShapes[i], 20 + i);
    Tensor<T> g = ct::rnd<T>(kShapes[i], 30 + i, -0.01, 0.01);
    cpu_params.push_back(p.clone().detach().set_requires_grad());
    gpu_params.push_back(p.to(gpu()).detach().set_requires_grad());
    cpu_params.back().set_grad(g);
    gpu_params.back().set_grad(g.to(gpu()));
  }
  const double want = train::clip_grad_norm(cpu_params, max_norm, norm_type);
  const double got = train::clip_grad_norm(gpu_params, max_norm, norm_type);
  // Double accumulation in another order: far below the float gradients' own precision.
  REQUIRE(std::abs(got - want) <= 1e-12 * std::max(1.0, std::abs(want)));
  for (size_t i = 0; i < kShapes.size(); ++i) {
    INFO("gradient " << i);
    CT_REQUIRE_CLOSE(gpu_params[i].grad().cpu(), cpu_params[i].grad(), T);
  }
}

}  // namespace

TEST_CASE("cuda SGD matches the CPU optimizer", "[cuda][optim]") {
  train::SGDOptions o;
  o.lr = 0.05;
  check_sgd<float>(o);
  o.weight_decay = 0.1;
  check_sgd<double>(o);
  o.momentum = 0.9;
  o.dampening = 0.2;
  check_sgd<float>(o);
  o.dampening = 0;
  o.nesterov = true;
  check_sgd<double>(o);
}

TEST_CASE("cuda clip_grad_norm matches the CPU", "[cuda][optim][clip]") {
  const double inf = std::numeric_limits<double>::infinity();
  for (double norm_type : {2.0, 1.0, inf, 1.5}) {
    check_clip<float>(0.05, norm_type);   // clips
    check_clip<double>(0.05, norm_type);
    check_clip<float>(1e6, norm_type);    // leaves the gradients as they are
  }
  // Gradients on two devices are refused.
  Tensor<float> a = ct::rnd<float>({3}, 1).detach().set_requires_grad();
  Tensor<float> b = ct::rnd<float>({3}, 2).to(gpu()).detach().set_requires_grad();
  a.set_grad(ct::rnd<float>({3}, 3));
  b.set_grad(ct::rnd<float>({3}, 4).to(gpu()));
  REQUIRE_THROWS_WITH(train::clip_grad_norm(std::vector<Tensor<float>>{b, a}, 1.0), Catch::Contains("one device"));
}

}  // namespace test_cuda_sgd_clip
