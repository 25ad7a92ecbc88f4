// GPU LSTM benchmark (Google Benchmark, manual timing with CUDA events): one bidirectional
// layer of hidden size 512 over inputs of 300 (LSTM_reg's shape), batch 32, T = 128 and 512,
// every sequence full length; forward alone and forward + backward; the own kernels against
// cuDNN's RNN (cuda::set_lstm_backend; skipped in builds without cuDNN). tokens/s counts B*T
// tokens per iteration. Without a GPU it says so and exits 0.
//   build/bin/bench_cuda_lstm [--benchmark_filter=...] [--benchmark_format=json]
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <cmath>
#include <functional>

#include "cuda_timing.hpp"
#include "txtcls/cuda/lstm.hpp"
#include "txtcls/cuda/runtime.hpp"
#include "txtcls/ops/lstm.hpp"

using namespace txtcls;

namespace {

// args: T, backend (0 own, 1 cuDNN), 1 = forward and backward / 0 = forward only.
void BM_bilstm(benchmark::State& state) {
  const int64_t B = 32, I = 300, H = 512, T = state.range(0);
  const bool cudnn = state.range(1) != 0, with_backward = state.range(2) != 0;
  state.SetLabel(std::string(cudnn ? "cudnn" : "own") + (with_backward ? " fwd+bwd" : " fwd"));
  if (cudnn && !cuda::cudnn_available()) {
    state.SkipWithError("this build has no cuDNN");
    return;
  }
  cuda::set_lstm_backend(cudnn ? cuda::LstmBackend::Cudnn : cuda::LstmBackend::Own);
  const Device dev = Device::cuda(0);
  const double k = 1.0 / std::sqrt(double(H));
  Generator g(7);
  auto param = [&](const Shape& s) { return rand_uniform<float>(s, g, -k, k, dev).set_requires_grad(); };
  LstmWeights<float> fwd{param({4 * H, I}), param({4 * H, H}), param({4 * H}), param({4 * H})};
  LstmWeights<float> rev{param({4 * H, I}), param({4 * H, H}), param({4 * H}), param({4 * H})};
  Tensor<float> x = rand_uniform<float>({B, T, I}, g, -1, 1, dev).set_requires_grad();
  Tensor<float> grad_out = rand_uniform<float>({B, T, 2 * H}, g, -1, 1, dev);
  Tensor<int64_t> lengths = full<int64_t>({B}, T).to(dev);
  std::vector<Tensor<float>> leaves{x, fwd.w_ih, fwd.w_hh, fwd.b_ih, fwd.b_hh, rev.w_ih, rev.w_hh, rev.b_ih, rev.b_hh};
  txtcls::bench::time_gpu_events(state, [&] {
    Tensor<float> out = lstm_bidirectional_layer(x, lengths, fwd, rev);
    if (with_backward) {
      out.backward(grad_out);
      for (auto& t : leaves) t.zero_grad();
    }
  });
  cuda::set_lstm_backend(cuda::LstmBackend::Own);
  state.counters["tokens/s"] = benchmark::Counter(double(B * T), benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

BENCHMARK(BM_bilstm)
    ->ArgNames({"T", "cudnn", "bwd"})
    ->Args({128, 0, 0})
    ->Args({128, 1, 0})
    ->Args({128, 0, 1})
    ->Args({128, 1, 1})
    ->Args({512, 0, 0})
    ->Args({512, 1, 0})
    ->Args({512, 0, 1})
    ->Args({512, 1, 1})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

int main(int argc, char** argv) { return txtcls::bench::gpu_benchmark_main(argc, argv); }
