// BP-Transformer graph attention (ops/graph_attention.hpp on nn/bpt_graph.hpp graphs) against
// full dense attention, forward and forward + backward, as the sequence grows: float32, 8 heads,
// head dim 64, k = 4 (clip_dist 10, the authors' default), batch 1 and 4.
//
//   bench_attention --benchmark_filter='^bpt/' [--threads N] [google-benchmark flags]
//
// bpt/graph_attention runs on all 2n-ish nodes of each sequence's graph (tokens and spans) with
// a shared relative position table; bpt/dense is softmax(Q K^T / sqrt(d)) V over the n tokens,
// written inline with Eigen GEMMs one (sequence, head) at a time (so its memory is one n x n
// score matrix per thread, not B * H of them), OpenMP over (sequence, head); its backward
// recomputes nothing (the probabilities of the head are kept between the two halves).
// Counters: tokens/s; E/token (edges per token), E/node; E/(n k log2(n/k)), which stays flat
// for BPT if its edges grow as O(k n log(n/k)). bpt/graph times build_bpt_graph alone.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "txtcls/nn/bpt_graph.hpp"
#include "txtcls/ops/graph_attention.hpp"
#include "txtcls/txtcls.hpp"

using namespace txtcls;

namespace {

constexpr int64_t kHeads = 8, kDim = 64, kK = 4;
const std::vector<int64_t> kLengths = {128, 256, 512, 1024, 2048, 4096, 8192};

void set_scaling_counters(benchmark::State& st, int64_t B, int64_t n, int64_t edges, int64_t nodes) {
  st.counters["tokens/s"] = benchmark::Counter(static_cast<double>(B * n), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["E/token"] = static_cast<double>(edges) / static_cast<double>(B * n);
  st.counters["E/node"] = static_cast<double>(edges) / static_cast<double>(nodes);
  const double nk_log = static_cast<double>(B * n) * kK * std::log2(std::max(2.0, static_cast<double>(n) / kK));
  st.counters["E/(nk.log2(n/k))"] = static_cast<double>(edges) / nk_log;
}

// ---------------------------------------------------------------- BPT
void BM_bpt(benchmark::State& st, bool backward) {
  const int64_t n = st.range(0), B = st.range(1);
  nn::BPTGraphOptions opt;
  opt.k = kK;
  const nn::BPTGraph g = nn::build_bpt_graph(std::vector<int64_t>(static_cast<size_t>(B), n), opt);
  const int64_t N = g.num_nodes();
  Generator gen(1);
  auto q = randn<float>({N, kHeads, kDim}, gen), k = randn<float>({N, kHeads, kDim}, gen),
       v = randn<float>({N, kHeads, kDim}, gen), r = randn<float>({g.num_positions(), kDim}, gen, 0.0, 0.1);
  GraphAttentionOptions ao;
  ao.training = false;
  if (!backward) {
    for (auto _ : st) benchmark::DoNotOptimize(graph_attention(q, k, v, g.csr, r, ao).data());
  } else {
    for (auto* t : {&q, &k, &v, &r}) t->set_requires_grad(true);
    auto go = randn<float>({N, kHeads, kDim}, gen);
    for (auto _ : st) {
      for (auto* t : {&q, &k, &v, &r}) t->zero_grad();
      Tensor<float> o = graph_attention(q, k, v, g.csr, r, ao);
      o.backward(go);
      benchmark::DoNotOptimize(q.grad().data());
    }
  }
  set_scaling_counters(st, B, n, g.num_edges(), N);
}

void BM_bpt_graph(benchmark::State& st) {
  const int64_t n = st.range(0), B = st.range(1);
  nn::BPTGraphOptions opt;
  opt.k = kK;
  int64_t edges = 0, nodes = 0;
  for (auto _ : st) {
    nn::BPTGraph g = nn::build_bpt_graph(std::vector<int64_t>(static_cast<size_t>(B), n), opt);
    edges = g.num_edges();
    nodes = g.num_nodes();
    benchmark::DoNotOptimize(g.csr.indices.data());
  }
  set_scaling_counters(st, B, n, edges, nodes);
}

// ---------------------------------------------------------------- dense baseline
using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using OuterMap = Eigen::Map<const Mat, 0, Eigen::OuterStride<>>;
using OuterMapMut = Eigen::Map<Mat, 0, Eigen::OuterStride<>>;

// x [B, n, H, D]: head h of sequence b is an n x D matrix with row stride H * D.
void BM_dense(benchmark::State& st, bool backward) {
  const int64_t n = st.range(0), B = st.range(1), H = kHeads, D = kDim, HD = H * D;
  Generator gen(2);
  auto q = randn<float>({B, n, H, D}, gen), k = randn<float>({B, n, H, D}, gen), v = randn<float>({B, n, H, D}, gen),
       go = randn<float>({B, n, H, D}, gen);
  Tensor<float> o({B, n, H, D}), gq({B, n, H, D}), gk({B, n, H, D}), gv({B, n, H, D});
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  for (auto _ : st) {
#pragma omp parallel
    {
      Mat s(n, n), dp(backward ? n : 0, backward ? n : 0);
#pragma omp for schedule(dynamic, 1)
      for (int64_t bh = 0; bh < B * H; ++bh) {
        const int64_t off = (bh / H) * n * HD + (bh % H) * D;
        const Eigen::OuterStride<> os(HD);
        OuterMap Q(q.data() + off, n, D, os), K(k.data() + off, n, D, os), V(v.data() + off, n, D, os);
        OuterMapMut O(o.data() + off, n, D, os);
        s.noalias() = Q * K.transpose();
        s *= scale;
        // row softmax
        for (int64_t i = 0; i < n; ++i) {
          auto row = s.row(i).array();
          row = (row - row.maxCoeff()).exp();
          row /= row.sum();
        }
        O.noalias() = s * V;
        if (!backward) continue;
        OuterMap G(go.data() + off, n, D, os);
        OuterMapMut GQ(gq.data() + off, n, D, os), GK(gk.data() + off, n, D, os), GV(gv.data() + off, n, D, os);
        GV.noalias() = s.transpose() * G;
        dp.noalias() = G * V.transpose();
        for (int64_t i = 0; i < n; ++i) {  // ds = p * (dp - sum(dp * p)) * scale, in place in dp
          auto p = s.row(i).array();
          auto d = dp.row(i).array();
          const float c = (p * d).sum();
          d = p * (d - c) * scale;
        }
        GQ.noalias() = dp * K;
        GK.noalias() = dp.transpose() * Q;
      }
    }
    benchmark::DoNotOptimize(o.data());
    benchmark::DoNotOptimize(gk.data());
  }
  set_scaling_counters(st, B, n, B * n * n, B * n);
}

void lengths_and_batches(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "B"});
  for (int64_t B : {1, 4})
    for (int64_t n : kLengths) b->Args({n, B});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

}  // namespace

BENCHMARK_CAPTURE(BM_bpt, fwd, false)->Name("bpt/graph_attention/fwd")->Apply(lengths_and_batches);
BENCHMARK_CAPTURE(BM_bpt, fwd_bwd, true)->Name("bpt/graph_attention/fwd_bwd")->Apply(lengths_and_batches);
BENCHMARK_CAPTURE(BM_dense, fwd, false)->Name("bpt/dense/fwd")->Apply(lengths_and_batches);
BENCHMARK_CAPTURE(BM_dense, fwd_bwd, true)->Name("bpt/dense/fwd_bwd")->Apply(lengths_and_batches);
BENCHMARK(BM_bpt_graph)->Name("bpt/graph")->Apply(lengths_and_batches);

// bench_attention is every bench/attention_*.cpp linked into one program: a file with its own
// main (flags and all) replaces this weak one, which serves when no other file brings one.
__attribute__((weak)) int main(int argc, char** argv) {
  int threads = 0, out = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = std::stoi(argv[++i]);
    else argv[out++] = argv[i];
  }
  argc = out;
  if (threads > 0) set_num_threads(threads);
  benchmark::AddCustomContext("txtcls_threads", std::to_string(num_threads()));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
