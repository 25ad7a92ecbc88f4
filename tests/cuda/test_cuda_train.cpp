// LSTM_reg trained end to end on the GPU against the same run on the CPU: a tiny synthetic
// dataset, the same initial weights and generator state, two epochs (ten Adam steps with every
// regulariser on: embedding dropout with the frozen row, weight drop, dropout, the average), then
// the epoch losses, the dev loss under the averaged weights, every parameter and every average
// compared; and a run saved after one epoch and resumed on the GPU reproduces the uninterrupted
// GPU run bit for bit.
//
// Tolerance: 1e-4 of the largest value, where one op agrees to about 1e-6 in float. The devices
// sum in different orders (cuBLAS tiles against the CPU's blocked GEMM, the reductions, the
// LSTM's per-step GEMMs), and those rounding differences pass through ten Adam steps, whose
// normalised update m / sqrt(v) does not amplify them but lets them accumulate step by step.
// The resumed run is compared exactly: on one device every kernel is deterministic.
#include <unistd.h>

#include <filesystem>

#include "cuda_test_util.hpp"
#include "txtcls/models/lstm_reg.hpp"
#include "txtcls/train/classifier.hpp"

// In a namespace of its own: test files are compiled several to a unit (TXTCLS_UNITY_BUILD).
namespace test_cuda_train {

using namespace txtcls;
using ct::gpu;

namespace {

// 40 sequences of lengths 1..12 over 30 ids (id 0 the padding id); the class is fixed by which
// third of the vocabulary most of a sequence's ids come from, so the task is learnable.
data::EncodedDataset synthetic(uint64_t seed, size_t n) {
  data::EncodedDataset d;
  Generator g(seed);
  for (size_t i = 0; i < n; ++i) {
    const int64_t label = static_cast<int64_t>(i % 3);
    const int64_t len = 1 + static_cast<int64_t>(g.uniform() * 12) % 12;
    std::vector<int64_t> ids;
    for (int64_t t = 0; t < len; ++t) {
      const bool on_topic = g.uniform() < 0.7;
      const int64_t third = on_topic ? label : static_cast<int64_t>(g.uniform() * 3) % 3;
      ids.push_back(1 + third * 9 + static_cast<int64_t>(g.uniform() * 9) % 9);
    }
    d.ids.push_back(ids);
    d.labels.push_back(label);
    d.example_index.push_back(i);
  }
  return d;
}

models::LSTMRegConfig tiny_config() {
  models::LSTMRegConfig c;
  c.words_num = 30;
  c.words_dim = 16;
  c.hidden_dim = 12;
  c.target_class = 3;
  return c;  // hedwig's rates: dropout 0.5, wdrop 0.1, embedding dropout 0.2, average 0.99
}

train::TrainerOptions options(Device d, int64_t epochs) {
  train::TrainerOptions o;
  o.epochs = epochs;
  o.batch_size = 8;
  o.lr = 1e-2;
  o.patience = 0;
  o.seed = 11;
  o.quiet = true;
  o.device = d;
  return o;
}

using Trainer = train::ClassifierTrainer<float, models::LSTMReg<float>>;

struct Data {
  data::EncodedDataset train = synthetic(1, 40), dev = synthetic(2, 13), test;
};

double rel(double got, double want) { return std::abs(got - want) / std::max(std::abs(want), 1e-30); }

}  // namespace

TEST_CASE("cuda LSTM_reg training matches the CPU run from the same state", "[cuda][train]") {
  Data data;
  Generator gc(5), gg(5);
  models::LSTMReg<float> cpu_model(tiny_config(), gc), gpu_model(tiny_config(), gg);
  Trainer cpu(cpu_model, data.train, data.dev, data.test, 3, options(Device::cpu(), 2));
  Trainer gpu_run(gpu_model, data.train, data.dev, data.test, 3, options(gpu(), 2));
  REQUIRE(gpu_model.embed->weight.device() == gpu());
  cpu.fit();
  gpu_run.fit();
  REQUIRE(gpu_run.history().size() == 2);
  for (size_t e = 0; e < 2; ++e) {
    INFO("epoch " << e + 1);
    CHECK(rel(gpu_run.history()[e].train_loss, cpu.history()[e].train_loss) <= 1e-4);
    CHECK(rel(gpu_run.history()[e].dev_loss, cpu.history()[e].dev_loss) <= 1e-4);
  }
  const auto cp = cpu_model.named_parameters(), gp = gpu_model.named_parameters();
  REQUIRE(cp.size() == gp.size());
  for (size_t i = 0; i < cp.size(); ++i) {
    INFO(cp[i].first);
    REQUIRE(gp[i].second.device() == gpu());
    const double e = ct::rel_err(gp[i].second.cpu(), cp[i].second);
    INFO("relative error " << e);
    CHECK(e <= 1e-4);
  }
  REQUIRE(gpu_run.ema() != nullptr);
  for (size_t i = 0; i < cp.size(); ++i) {
    INFO("average of " << cp[i].first);
    CHECK(ct::rel_err(gpu_run.ema()->averaged(i).cpu(), cpu.ema()->averaged(i)) <= 1e-4);
  }
  // Evaluation on the device returns host predictions that agree with the CPU's on this data
  // (no logit of this model is within rounding of a tie).
  auto ec = train::evaluate<float>(cpu_model, data.dev, 3), eg = train::evaluate<float>(gpu_model, data.dev, 3);
  CHECK(eg.predictions == ec.predictions);
  CHECK(rel(eg.loss, ec.loss) <= 1e-4);
}

TEST_CASE("cuda LSTM_reg training resumed from a saved state reproduces the run", "[cuda][train]") {
  namespace fs = std::filesystem;
  Data data;
  const fs::path dir = fs::temp_directory_path() / ("txtcls_cuda_resume_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string whole = (dir / "whole.safetensors").string(), half = (dir / "half.safetensors").string();

  Generator g1(5), g2(5), g3(99);
  models::LSTMReg<float> m1(tiny_config(), g1), m2(tiny_config(), g2), m3(tiny_config(), g3);
  Trainer straight(m1, data.train, data.dev, data.test, 3, options(gpu(), 3));
  straight.fit(whole);
  {
    Trainer first(m2, data.train, data.dev, data.test, 3, options(gpu(), 1));
    first.fit(half);
  }
  // Another initialisation and generator seed: everything must come from the saved state.
  Trainer resumed(m3, data.train, data.dev, data.test, 3, options(gpu(), 3));
  resumed.load_state(half);
  REQUIRE(resumed.epoch() == 1);
  resumed.fit();
  REQUIRE(resumed.history().size() == 3);
  for (size_t e = 0; e < 3; ++e) CHECK(resumed.history()[e].train_loss == straight.history()[e].train_loss);
  const auto a = m1.named_parameters(), b = m3.named_parameters();
  for (size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].first);
    REQUIRE(b[i].second.device() == gpu());
    CHECK(b[i].second.cpu().to_vector() == a[i].second.cpu().to_vector());
    CHECK(resumed.ema()->averaged(i).cpu().to_vector() == straight.ema()->averaged(i).cpu().to_vector());
  }
  // The saved state holds host copies: it reloads into a CPU trainer too.
  Generator g4(1);
  models::LSTMReg<float> m4(tiny_config(), g4);
  Trainer on_cpu(m4, data.train, data.dev, data.test, 3, options(Device::cpu(), 3));
  on_cpu.load_state(whole);
  CHECK(m4.embed->weight.to_vector() == m1.embed->weight.cpu().to_vector());
  fs::remove_all(dir);
}

}  // namespace test_cuda_train
