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
#include <vector>

#include "txtcls/ops/relative_attention_fused.hpp"
#include "txtcls/txtcls.hpp"

using namespace txtcls;

namespace {

constexpr int64_t kHeads = 8, kDim = 64;

struct RelCase {
  int64_t B, L, mlen;
};

void BM_relative(benchmark::State& st, RelCase c, bool fused, bool backward) {
  const int64_t B = c.B, H = kHeads, D = kDim, Lq = c.L, Lk = c.mlen + c.L, P = Lk + Lq;
  Generator g(3);
  auto q = randn<float>({B, H, Lq, D}, g), k = randn<float>({B, H, Lk, D}, g), v = randn<float>({B, H, Lk, D}, g);
  auto kr = randn<float>({1, H, P, D}, g);
  auto rw = randn<float>({H, D}, g, 0.0, 0.1), rr = randn<float>({H, D}, g, 0.0, 0.1);
  RelativeAttentionOptions<float> o;
  o.r_s_bias = randn<float>({H, D}, g, 0.0, 0.1);
  o.seg_embed = randn<float>({2, H, D}, g, 0.0, 0.1);
  // Two segments of the current input, the memory in segment 0 (XLNetModel's seg_mat).
  std::vector<int64_t> ids(static_cast<size_t>(B * Lq));
  for (int64_t i = 0; i < B * Lq; ++i) ids[static_cast<size_t>(i)] = (i % Lq) >= Lq / 2;
  o.seg_mat = nn::xlnet_segment_matrix<float>(from_vector<int64_t>(ids, {B, Lq}), c.mlen);
  std::vector<Tensor<float>*> leaves{&q, &k, &v, &kr, &rw, &rr, &o.r_s_bias, &o.seg_embed};
  auto attend = [&] {
    return fused ? relative_attention(q, k, v, kr, rw, rr, o) : relative_attention_reference(q, k, v, kr, rw, rr, o);
  };
  if (backward) {
    for (auto* t : leaves) t->set_requires_grad(true);
    auto gout = randn<float>({B, H, Lq, D}, g);
    for (auto _ : st) {
      Tensor<float> out = attend();
      out.backward(gout);
      benchmark::DoNotOptimize(kr.grad().data());
      for (auto* t : leaves) t->zero_grad();
    }
  } else {
    NoGradGuard ng;
    for (auto _ : st) benchmark::DoNotOptimize(attend().data());
  }
  st.counters["tokens/s"] = benchmark::Counter(static_cast<double>(B * Lq), benchmark::Counter::kIsIterationInvariantRate);
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
