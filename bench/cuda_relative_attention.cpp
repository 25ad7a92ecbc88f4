// GPU Transformer-XL / XLNet relative attention core (Google Benchmark, manual timing with CUDA
// events): the fused op (relative_attention on CUDA tensors, kernels/relative_attention.cu)
// against the unfused composition (relative_attention_reference: content and position scores
// as GEMMs, the relative shift, the segment term, a stored softmax), float32, batch 4 x 8 heads,
// head dim 64, attn_type "bi" with the segment term as XLNetModel hands it over (seg_mat),
// queries L, and either no memory or a memory of L / 2 (klen = 3L / 2), forward alone and
// forward + backward with every input that needs a gradient in the layer.
// bench/compare_relative_torch_cuda.py times PyTorch on the same composition (Hugging Face's
// formulation) and prints the ratio. Without a GPU it says so and exits 0.
//   build/bin/bench_cuda_relative_attention [--benchmark_filter=relattn/fused]
// Names: relattn/<fused|unfused>/<fwd|fwd+bwd>/B:4/H:8/D:64/L:<l>/mem:<m>.
#include <benchmark/benchmark.h>

#include <exception>
#include <string>

#include "cuda_timing.hpp"
#include "relative_inputs.hpp"
#include "txtcls/cuda/runtime.hpp"

using namespace txtcls;

namespace {

constexpr int64_t kBatch = 4, kHeads = 8, kDim = 64;

struct Case {
  bool fused, backward;
  int64_t L, mlen;
};

void run(benchmark::State& state, const Case& c) {
  const Device dev = Device::cuda(0);
  bench::RelativeInputs in = bench::relative_inputs(kBatch, kHeads, kDim, c.L, c.mlen, dev);
  if (c.backward)  // else no graph is recorded: no input needs a gradient
    for (auto* t : in.leaves()) t->set_requires_grad(true);
  Generator g(4);
  const Tensor<float> gout = randn<float>({kBatch, kHeads, c.L, kDim}, g, 0.0, 1.0, dev);
  try {
    txtcls::bench::time_gpu_events(state, [&] {
      Tensor<float> out = c.fused ? relative_attention(in.q, in.k, in.v, in.kr, in.rw, in.rr, in.o)
                                  : relative_attention_reference(in.q, in.k, in.v, in.kr, in.rw, in.rr, in.o);
      if (c.backward) {
        out.backward(gout);
        for (auto* t : in.leaves()) t->zero_grad();
      }
      benchmark::DoNotOptimize(out);
    });
  } catch (const std::exception& e) {  // e.g. an op of the unfused path without a CUDA kernel
    state.SkipWithError(e.what());
    return;
  }
  state.counters["tokens/s"] = benchmark::Counter(double(kBatch * c.L), benchmark::Counter::kIsIterationInvariantRate);
}

void register_all() {
  for (int64_t L : {512, 1024, 2048})
    for (bool memory : {false, true})
      for (bool backward : {false, true})
        for (bool fused : {false, true}) {
          const Case c{fused, backward, L, memory ? L / 2 : 0};
          const std::string name = std::string("relattn/") + (fused ? "fused" : "unfused") + "/" +
                                   (backward ? "fwd+bwd" : "fwd") + "/B:" + std::to_string(kBatch) +
                                   "/H:" + std::to_string(kHeads) + "/D:" + std::to_string(kDim) +
                                   "/L:" + std::to_string(L) + "/mem:" + std::to_string(c.mlen);
          benchmark::RegisterBenchmark(name.c_str(), [c](benchmark::State& s) { run(s, c); })
              ->UseManualTime()
              ->Unit(benchmark::kMillisecond);
        }
}

}  // namespace

int main(int argc, char** argv) { return txtcls::bench::gpu_benchmark_main(argc, argv, register_all); }
