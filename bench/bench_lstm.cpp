// Training throughput of the LSTM_reg encoder: a bidirectional LSTM (hidden 512) over 300-d
// embeddings, batch 32, float32. One iteration = forward, backward (gradient of a fixed random
// weighting of the padded output, the input included) and an Adam step. Reports tokens/s (valid
// steps per second). bench/compare_lstm_torch.py times PyTorch on the same configurations.
//   bench_lstm --threads N [google-benchmark flags]
// Arguments of BM_lstm_train: T, ragged (0: every length T; 1: lengths uniform in [T/2, T]),
// x_grad (1: the input needs a gradient, as with trainable embeddings).
#include <benchmark/benchmark.h>

#include <cstring>
#include <numeric>
#include <string>

#include "txtcls/nn/lstm.hpp"
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
