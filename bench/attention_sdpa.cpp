// Multi-head attention on the CPU: attention_reference (naive: the [B, H, L, L] scores are
// materialised) against the fused scaled_dot_product_attention, forward and forward+backward,
// float32. bench/compare_attention_torch.py runs this program beside PyTorch's SDPA.
//
//   bench_attention [--threads N] [--batch B] [--heads H] [--seqs 128,512] [--dims 64,128]
//                   [--impls naive,fused] [--naive-max-gib G] [--block-q N --block-k N]
//                   [google-benchmark flags]
//
// Defaults: batch 32, 8 heads, sequences 128..2048, head dims 64 and 128, both implementations.
// FLOPs are counted as FlashAttention's benchmarks do: 4 * B * H * L * L * D for the forward,
// 2.5 times that for the backward alone (five products instead of two), so 3.5 times for
// forward + backward; halved when causal. The naive path is skipped where its scores
// would exceed --naive-max-gib (default 2 GiB per score-sized tensor).
#include <benchmark/benchmark.h>

#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "txtcls/ops/attention.hpp"
#include "txtcls/txtcls.hpp"

using namespace txtcls;

namespace {

struct Shape5 {
  int64_t B, H, L, D;
  bool causal;
};

double attention_flops(const Shape5& s, bool backward) {
  const double fwd = 4.0 * s.B * s.H * s.L * s.L * s.D;
  return fwd * (backward ? 3.5 : 1.0) * (s.causal ? 0.5 : 1.0);  // backward: forward + backward
}

int64_t g_block_q = 0, g_block_k = 0;  // --block-q / --block-k: tile sizes (0: the op's default)

void run(benchmark::State& st, const Shape5& s, bool fused, bool backward) {
  Generator g(1);
  auto q = randn<float>({s.B, s.H, s.L, s.D}, g), k = randn<float>({s.B, s.H, s.L, s.D}, g),
       v = randn<float>({s.B, s.H, s.L, s.D}, g), gout = randn<float>({s.B, s.H, s.L, s.D}, g);
  AttentionOptions<float> o;
  o.causal = s.causal;
  o.block_q = g_block_q;
  o.block_k = g_block_k;
  auto attend = [&] { return fused ? scaled_dot_product_attention(q, k, v, o) : attention_reference(q, k, v, o); };
  if (backward) {
    for (auto* t : {&q, &k, &v}) t->set_requires_grad(true);
    for (auto _ : st) {
      Tensor<float> out = attend();
      out.backward(gout);
      benchmark::DoNotOptimize(q.grad().data());
      for (auto* t : {&q, &k, &v}) t->zero_grad();
    }
  } else {
    NoGradGuard ng;
    for (auto _ : st) benchmark::DoNotOptimize(attend().data());
  }
  // Shown as "TFLOP=x/s": TFLOP per second.
  st.counters["TFLOP"] = benchmark::Counter(attention_flops(s, backward) / 1e12,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

std::vector<int64_t> int_list(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) out.push_back(std::stoll(item));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 0;
  int64_t batch = 32, heads = 8;
  std::vector<int64_t> seqs{128, 256, 512, 1024, 2048}, dims{64, 128};
  std::string impls = "naive,fused";
  double naive_max_gib = 2.0;
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    auto flag = [&](const char* name) { return std::strcmp(argv[i], name) == 0 && i + 1 < argc; };
    if (flag("--threads")) threads = std::stoi(argv[++i]);
    else if (flag("--batch")) batch = std::stoll(argv[++i]);
    else if (flag("--heads")) heads = std::stoll(argv[++i]);
    else if (flag("--seqs")) seqs = int_list(argv[++i]);
    else if (flag("--dims")) dims = int_list(argv[++i]);
    else if (flag("--impls")) impls = argv[++i];
    else if (flag("--naive-max-gib")) naive_max_gib = std::stod(argv[++i]);
    else if (flag("--block-q")) g_block_q = std::stoll(argv[++i]);
    else if (flag("--block-k")) g_block_k = std::stoll(argv[++i]);
    else argv[out++] = argv[i];  // Google Benchmark's own flags
  }
  argc = out;
  if (threads > 0) set_num_threads(threads);

  for (int64_t D : dims)
    for (int64_t L : seqs)
      for (bool causal : {false, true})
        for (bool backward : {false, true})
          for (bool fused : {false, true}) {
            if (impls.find(fused ? "fused" : "naive") == std::string::npos) continue;
            const Shape5 s{batch, heads, L, D, causal};
            const double score_gib = 4.0 * batch * heads * L * L / (1024.0 * 1024.0 * 1024.0);
            if (!fused && score_gib > naive_max_gib) continue;
            const std::string name = std::string("sdpa/") + (fused ? "fused" : "naive") + "/" +
                                     (backward ? "fwd_bwd" : "fwd") + "/B:" + std::to_string(batch) +
                                     "/H:" + std::to_string(heads) + "/L:" + std::to_string(L) +
                                     "/D:" + std::to_string(D) + "/causal:" + std::to_string(causal);
            benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& st) { run(st, s, fused, backward); })
                ->Unit(benchmark::kMillisecond)
                ->UseRealTime();
          }
  benchmark::AddCustomContext("txtcls_threads", std::to_string(num_threads()));
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
