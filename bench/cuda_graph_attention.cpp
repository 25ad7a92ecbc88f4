// BP-Transformer graph attention on the GPU (kernels/graph_attention.cu) against dense full
// attention composed of the GPU's matmul, softmax and matmul (the scores materialised), as the
// sequence grows: float32, 8 heads, head dim 64, k = 4 (clip_dist 10), one sequence, forward and
// forward + backward. Without a GPU it says so and exits 0.
//
//   build/bin/bench_cuda_graph_attention [--benchmark_filter=...] [google-benchmark flags]
//
// gpu/bpt runs on all nodes of the graph (about 2n: tokens and spans) with a shared position
// table, without dropout; each call includes the op's host work (the CSR copied to the device;
// in the backward the edge groups built on the host and copied), as a model would pay it.
// gpu/dense is softmax(Q K^T / sqrt(d)) V over the n tokens, q, k, v [H, n, D], backward by autograd.
// Counters: edges/s (BPT: graph edges; dense: n^2 query-key pairs; per head-set, i.e. not
// times H), GB/s of the gather model below (BPT only), E/(nk.log2(n/k)) (flat if the edges grow
// as O(k n log(n/k))), tokens/s.
//
// Gather model (bytes an ideal kernel reads or writes, float): forward, per edge and head the
// key and value rows (2D) plus probs (3 values: score, exp, weight), per node and head q and out
// (2D); backward adds per edge and head v, k and the relative row in the query pass (3D), q and go
// in the key pass (2D), q in the position pass (D), ds and probs (4 values), and per node and head
// go, gq, gk, gv (4D). Rows shared by several edges are often served by L2, so the achieved
// DRAM traffic is lower; the counter compares sizes and tracks regressions.
#include <benchmark/benchmark.h>

#include <cmath>
#include <vector>

#include "cuda_timing.hpp"
#include "txtcls/nn/bpt_graph.hpp"
#include "txtcls/ops/graph_attention.hpp"
#include "txtcls/txtcls.hpp"

using namespace txtcls;

namespace {

constexpr int64_t kHeads = 8, kDim = 64, kK = 4;

Tensor<float> gpu_rand(const Shape& s, uint64_t seed, double scale = 1.0) {
  Generator g(seed);
  return rand_uniform<float>(s, g, -scale, scale, Device::cuda(0));
}

void set_counters(benchmark::State& st, int64_t n, int64_t edges, double bytes) {
  using C = benchmark::Counter;
  st.counters["edges/s"] = C(static_cast<double>(edges), C::kIsIterationInvariantRate);
  st.counters["tokens/s"] = C(static_cast<double>(n), C::kIsIterationInvariantRate);
  if (bytes > 0) st.counters["GB/s"] = C(bytes / 1e9, C::kIsIterationInvariantRate);
  const double nk_log = static_cast<double>(n) * kK * std::log2(std::max(2.0, static_cast<double>(n) / kK));
  st.counters["E/(nk.log2(n/k))"] = static_cast<double>(edges) / nk_log;
}

void BM_bpt(benchmark::State& st, bool backward) {
  const int64_t n = st.range(0), H = kHeads, D = kDim;
  nn::BPTGraphOptions opt;
  opt.k = kK;
  const nn::BPTGraph g = nn::build_bpt_graph({n}, opt);
  const int64_t N = g.num_nodes(), E = g.num_edges();
  Tensor<float> q = gpu_rand({N, H, D}, 1), k = gpu_rand({N, H, D}, 2), v = gpu_rand({N, H, D}, 3),
                r = gpu_rand({g.num_positions(), D}, 4, 0.1), go = gpu_rand({N, H, D}, 5);
  GraphAttentionOptions ao;
  ao.training = false;
  const double s = sizeof(float), EH = static_cast<double>(E * H), NH = static_cast<double>(N * H);
  double bytes = EH * (2 * D + 3) * s + NH * 2 * D * s;
  if (!backward) {
    bench::time_gpu_events(st, [&] { benchmark::DoNotOptimize(graph_attention(q, k, v, g.csr, r, ao).data()); });
  } else {
    for (auto* t : {&q, &k, &v, &r}) t->set_requires_grad(true);
    bytes += EH * (6 * D + 4) * s + NH * 4 * D * s;
    bench::time_gpu_events(st, [&] {
      for (auto* t : {&q, &k, &v, &r}) t->zero_grad();
      graph_attention(q, k, v, g.csr, r, ao).backward(go);
      benchmark::DoNotOptimize(q.grad().data());
    });
  }
  set_counters(st, n, E, bytes);
  st.counters["E/node"] = static_cast<double>(E) / static_cast<double>(N);
}

void BM_dense(benchmark::State& st, bool backward) {
  const int64_t n = st.range(0), H = kHeads, D = kDim;
  Tensor<float> q = gpu_rand({H, n, D}, 6), k = gpu_rand({H, n, D}, 7), v = gpu_rand({H, n, D}, 8),
                go = gpu_rand({H, n, D}, 9);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  auto attend = [&] { return matmul(softmax(mul(matmul(q, k.transpose(-1, -2)), scale), -1), v); };
  if (!backward) {
    bench::time_gpu_events(st, [&] { benchmark::DoNotOptimize(attend().data()); });
  } else {
    for (auto* t : {&q, &k, &v}) t->set_requires_grad(true);
    bench::time_gpu_events(st, [&] {
      for (auto* t : {&q, &k, &v}) t->zero_grad();
      attend().backward(go);
      benchmark::DoNotOptimize(q.grad().data());
    });
  }
  set_counters(st, n, n * n, 0);
}

void lengths(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n"});
  for (int64_t n : {512, 1024, 2048, 4096, 8192}) b->Args({n});
  b->Unit(benchmark::kMillisecond)->UseManualTime();
}

}  // namespace

BENCHMARK_CAPTURE(BM_bpt, fwd, false)->Name("gpu/bpt/fwd")->Apply(lengths);
BENCHMARK_CAPTURE(BM_bpt, fwd_bwd, true)->Name("gpu/bpt/fwd_bwd")->Apply(lengths);
BENCHMARK_CAPTURE(BM_dense, fwd, false)->Name("gpu/dense/fwd")->Apply(lengths);
BENCHMARK_CAPTURE(BM_dense, fwd_bwd, true)->Name("gpu/dense/fwd_bwd")->Apply(lengths);

int main(int argc, char** argv) { return txtcls::bench::gpu_benchmark_main(argc, argv); }
