// Training throughput of the LSTM_reg encoder: a bidirectional LSTM (hidden 512) over 300-d
// embeddings, batch 32, float32. One iteration = forward, backward (gradient of a fixed random
// weighting of the padded output, the input included) and an Adam step. Reports tokens/s (valid
// steps per second). bench/compare_lstm_torch.py times PyTorch on the same configurations.
//   bench_lstm --threads N [google-benchmark flags]
// Arguments of BM_lstm_train: T, ragged (0: every length T; 1: lengths uniform in [T/2, T]),
// x_grad (1: the input needs a gradient, as with trainable embeddings). BM_lstm_gemm times the
// layer's matrix products alone, one thread, as GFLOP/s.
#include <benchmark/benchmark.h>

#include <cstring>
#include <numeric>
#include <string>

#include "txtcls/nn/lstm.hpp"
#include "txtcls/ops/packed_gemm.hpp"
#include "txtcls/train/optim.hpp"

using namespace txtcls;

namespace {
constexpr int64_t kBatch = 32, kEmbed = 300, kHidden = 512;

std::vector<int64_t> bench_lengths(int64_t T, bool ragged) {
  // The same lengths as compare_lstm_torch.py: T - (b * 37) % (T/2 + 1) when ragged.
  std::vector<int64_t> len(kBatch, T);
  if (ragged)
    for (int64_t b = 0; b < kBatch; ++b) len[b] = T - (b * 37) % (T / 2 + 1);
  return len;
}
}  // namespace

static void BM_lstm_train(benchmark::State& st) {
  const int64_t T = st.range(0);
  const bool ragged = st.range(1) != 0, x_grad = st.range(2) != 0;
  Generator g(1);
  nn::LSTM<float> lstm(kEmbed, kHidden, 1, true, 0.0, 0.0, g);
  train::Adam<float> opt(lstm.named_parameters(), train::AdamOptions{});
  const auto len = bench_lengths(T, ragged);
  const Tensor<int64_t> lengths = from_vector<int64_t>(len);
  Tensor<float> x = randn<float>({kBatch, T, kEmbed}, g);
  const Tensor<float> w = randn<float>({kBatch, T, 2 * kHidden}, g);
  for (auto _ : st) {
    Tensor<float> xi = x_grad ? x.detach().set_requires_grad(true) : x;
    opt.zero_grad();
    Tensor<float> out = lstm(xi, lengths);
    out.backward(w);
    opt.step();
    benchmark::DoNotOptimize(lstm.layer_weights(0).w_hh.data());
  }
  const int64_t tokens = std::accumulate(len.begin(), len.end(), int64_t(0));
  st.counters["tokens/s"] = benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_lstm_train)
    ->ArgNames({"T", "ragged", "x_grad"})
    ->Args({128, 0, 1})
    ->Args({512, 0, 1})
    ->Args({128, 1, 1})
    ->Args({128, 0, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Forward only (no graph), the evaluation path.
static void BM_lstm_forward(benchmark::State& st) {
  const int64_t T = st.range(0);
  Generator g(2);
  nn::LSTM<float> lstm(kEmbed, kHidden, 1, true, 0.0, 0.0, g);
  lstm.eval();
  const auto len = bench_lengths(T, false);
  const Tensor<int64_t> lengths = from_vector<int64_t>(len);
  Tensor<float> x = randn<float>({kBatch, T, kEmbed}, g);
  for (auto _ : st) {
    NoGradGuard ng;
    benchmark::DoNotOptimize(lstm(x, lengths).data());
  }
  st.counters["tokens/s"] = benchmark::Counter(static_cast<double>(kBatch * T), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_lstm_forward)->ArgNames({"T"})->Arg(128)->Unit(benchmark::kMillisecond)->UseRealTime();

// The single-threaded products an LSTM layer of this configuration runs (ops/packed_gemm.hpp),
// one direction on one thread, as GFLOP/s; each writes over its result as the layer does.
//   shape 0 "input projection": gates [4H, B*T] = W_ih [4H, E] x X^T [E, B*T]
//   shape 1 "weight gradient":  [dW_ih | dW_hh]^T [E+H, 4H] = [X | H_prev]^T [E+H, B*T] x dG [B*T, 4H]
//   shape 2 "input gradient":   dX^T [E, B*T/2] = W_ih^T [E, 4H] x dG^T [4H, B*T/2] (half: one thread's rows)
//   shape 3 "recurrent step":   T steps of gates [4H, B] += W_hh [4H, H] (packed once) x h^T [H, B]
// Operand layouts are the layer's (detail::lstm_forward_cpu / lstm_backward_cpu).
static void BM_lstm_gemm(benchmark::State& st) {
  using namespace txtcls::detail;
  const int64_t shape = st.range(0), T = st.range(1), N = kBatch * T, G4 = 4 * kHidden;
  Generator g(3);
  auto buf = [&](int64_t n) { return rand_uniform<float>({n}, g, -1, 1); };  // 64-byte aligned
  double flops = 0;
  if (shape == 3) {
    auto w = buf(G4 * kHidden), h = buf(kHidden * kBatch), c = buf(G4 * kBatch);
    PackedLhs<float> pl(row_major_ref<float>(w.data(), G4, kHidden, kHidden));
    AlignedVec<float> scratch(static_cast<size_t>(pl.scratch_size(kBatch)));
    for (auto _ : st)
      for (int64_t s = 0; s < T; ++s)
        pl.multiply_add({c.data(), G4}, col_major_ref<float>(h.data(), kHidden, kBatch, kHidden), scratch.data());
    flops = 2.0 * G4 * kHidden * kBatch * T;
  } else {
    const int64_t M = shape == 0 ? G4 : shape == 1 ? kEmbed + kHidden : kEmbed;
    const int64_t K = shape == 0 ? kEmbed : shape == 1 ? N : G4;
    const int64_t Nc = shape == 0 ? N : shape == 1 ? G4 : N / 2;
    auto a = buf(M * K), b = buf(K * Nc), c = buf(M * Nc);
    const MatRef<float> A = shape == 0 ? row_major_ref<float>(a.data(), M, K, K) : col_major_ref<float>(a.data(), M, K, M);
    const MatRef<float> Bm = shape == 1 ? row_major_ref<float>(b.data(), K, Nc, Nc) : col_major_ref<float>(b.data(), K, Nc, K);
    for (auto _ : st) gemm<float>({c.data(), M}, A, Bm, false);
    flops = 2.0 * M * K * Nc;
  }
  st.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_lstm_gemm)
    ->ArgNames({"shape", "T"})
    ->ArgsProduct({{0, 1, 2, 3}, {128, 512}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

int main(int argc, char** argv) {
  int threads = 0;
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = std::stoi(argv[i + 1]);
  if (threads > 0) set_num_threads(threads);
  int out = 1;  // drop our flag before Google Benchmark parses the rest
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--threads") == 0) {
      ++i;
      continue;
    }
    argv[out++] = argv[i];
  }
  argc = out;
  benchmark::AddCustomContext("txtcls_threads", std::to_string(num_threads()));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
