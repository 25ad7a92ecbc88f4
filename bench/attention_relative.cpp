// Transformer-XL / XLNet relative attention core (ops/relative_attention_fused.hpp): the unfused
// composition (relative_attention_reference, what nn::XLNetRelativeAttention runs with
// fused = false) against the fused kernel (relative_attention), forward and forward + backward,
// float32, 8 heads, head dim 64, attn_type "bi" with the segment term (HF's seg_mat, as the layer
// receives it), queries L, and either no memory or a memory of L / 2 (klen = 3L / 2).
//
//   bench_attention --benchmark_filter='^relattn/' --benchmark_min_time=0.5 [--threads N]
//
// Batch 4 up to L = 1024 and 1 at L = 2048, where the unfused path's [B, 8, L, klen + L] position
// scores and their gradients alone would take several GiB. Inputs that need gradients in the
// layer (q, k, v, the position keys, the three biases, seg_embed) get them here too.
// Counters: tokens/s (B * L queries per second).
#include <benchmark/benchmark.h>

#include <string>

#include "relative_inputs.hpp"

using namespace txtcls;

namespace {

constexpr int64_t kHeads = 8, kDim = 64;

struct RelCase {
  int64_t B, L, mlen;
};

void BM_relative(benchmark::State& st, RelCase c, bool fused, bool backward) {
  bench::RelativeInputs in = bench::relative_inputs(c.B, kHeads, kDim, c.L, c.mlen, Device::cpu());
  auto attend = [&] {
    return fused ? relative_attention(in.q, in.k, in.v, in.kr, in.rw, in.rr, in.o)
                 : relative_attention_reference(in.q, in.k, in.v, in.kr, in.rw, in.rr, in.o);
  };
  if (backward) {
    for (auto* t : in.leaves()) t->set_requires_grad(true);
    Generator g(4);
    const auto gout = randn<float>({c.B, kHeads, c.L, kDim}, g);
    for (auto _ : st) {
      Tensor<float> out = attend();
      out.backward(gout);
      benchmark::DoNotOptimize(in.kr.grad().data());
      for (auto* t : in.leaves()) t->zero_grad();
    }
  } else {
    NoGradGuard ng;
    for (auto _ : st) benchmark::DoNotOptimize(attend().data());
  }
  st.counters["tokens/s"] = benchmark::Counter(static_cast<double>(c.B * c.L), benchmark::Counter::kIsIterationInvariantRate);
}

// Registered at start-up, so the program's main (bench/attention_sdpa.cpp) runs them beside its own.
const bool registered = [] {
  for (int64_t L : {128, 256, 512, 1024, 2048})
    for (bool memory : {false, true})
      for (bool backward : {false, true})
        for (bool fused : {false, true}) {
          const RelCase c{L >= 2048 ? 1 : 4, L, memory ? L / 2 : 0};
          const std::string name = std::string("relattn/") + (fused ? "fused" : "unfused") + "/" +
                                   (backward ? "fwd_bwd" : "fwd") + "/B:" + std::to_string(c.B) + "/H:8/L:" +
                                   std::to_string(L) + "/mem:" + std::to_string(c.mlen);
          benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& st) { BM_relative(st, c, fused, backward); })
              ->Unit(benchmark::kMillisecond)
              ->UseRealTime();
        }
  return true;
}();

}  // namespace
