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
#include <vector>

#include "cuda_timing.hpp"
#include "txtcls/cuda/runtime.hpp"
#include "txtcls/ops/relative_attention_fused.hpp"
#include "txtcls/txtcls.hpp"

using namespace txtcls;

namespace {

constexpr int64_t kBatch = 4, kHeads = 8, kDim = 64;

struct Case {
  bool fused, backward;
  int64_t L, mlen;
};

void run(benchmark::State& state, const Case& c) {
  const Device dev = Device::cuda(0);
  const int64_t B = kBatch, H = kHeads, D = kDim, Lq = c.L, Lk = c.mlen + c.L, P = Lk + Lq;
  Generator g(3);
  auto make = [&](const Shape& s, double sd) { return randn<float>(s, g, 0.0, sd, dev); };
  Tensor<float> q = make({B, H, Lq, D}, 1), k = make({B, H, Lk, D}, 1), v = make({B, H, Lk, D}, 1);
  Tensor<float> kr = make({1, H, P, D}, 1), rw = make({H, D}, 0.1), rr = make({H, D}, 0.1);
  RelativeAttentionOptions<float> o;
  o.r_s_bias = make({H, D}, 0.1);
  o.seg_embed = make({2, H, D}, 0.1);
  // Two segments in the current input, the memory in segment 0 (XLNetModel's seg_mat).
  std::vector<int64_t> ids(static_cast<size_t>(B * Lq));
  for (int64_t i = 0; i < B * Lq; ++i) ids[static_cast<size_t>(i)] = (i % Lq) >= Lq / 2;
  o.seg_mat = nn::xlnet_segment_matrix<float>(from_vector<int64_t>(ids, {B, Lq}), c.mlen).to(dev);
  std::vector<Tensor<float>*> leaves{&q, &k, &v, &kr, &rw, &rr, &o.r_s_bias, &o.seg_embed};
  if (c.backward)  // else no graph is recorded: no input needs a gradient
    for (auto* t : leaves) t->set_requires_grad(true);
  const Tensor<float> gout = make({B, H, Lq, D}, 1);
  try {
    txtcls::bench::time_gpu_events(state, [&] {
      Tensor<float> out = c.fused ? relative_attention(q, k, v, kr, rw, rr, o)
                                  : relative_attention_reference(q, k, v, kr, rw, rr, o);
      if (c.backward) {
        out.backward(gout);
        for (auto* t : leaves) t->zero_grad();
      }
      benchmark::DoNotOptimize(out);
    });
  } catch (const std::exception& e) {  // e.g. an op of the unfused path without a CUDA kernel
    state.SkipWithError(e.what());
    return;
  }
  state.counters["tokens/s"] = benchmark::Counter(double(B * Lq), benchmark::Counter::kIsIterationInvariantRate);
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
