// LSTM_reg parity with hedwig's module in PyTorch, through `txtcls forward`, on the fixtures made
// by tools/make_lstm_reg_fixtures.py: logits, loss and every weight's gradient, float64 to 1e-10
// and float32 to 1e-5 relative to the largest reference value.
#include <cstdlib>
#include <filesystem>

#include "test_util.hpp"
#include "txtcls/io/safetensors.hpp"
#include "txtcls/models/lstm_reg.hpp"

using namespace txtcls;
namespace fs = std::filesystem;

namespace {

int run(const std::string& cmd) {
  int rc = std::system((cmd + " 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

double max_abs(const io::RawTensor& r) {
  auto t = io::to_tensor_converting<double>(r, "ref");
  double m = 0;
  for (double v : t.to_vector()) m = std::max(m, std::abs(v));
  return m;
}

}  // namespace

TEST_CASE("lstm_reg: txtcls forward matches hedwig's PyTorch module", "[models][lstm_reg][parity]") {
  const fs::path root = fs::path(TXTCLS_SOURCE_DIR) / "tests" / "fixtures" / "lstm_reg";
  const fs::path work = fs::temp_directory_path() / ("txtcls_lstm_reg_parity_" + std::to_string(::getpid()));
  fs::create_directories(work);
  int cases = 0;
  for (const auto& entry : fs::directory_iterator(root)) {
    const fs::path d = entry.path();
    const std::string name = d.filename().string();
    const bool f64 = name.size() > 4 && name.substr(name.size() - 3) == "f64";
    const double tol = f64 ? 1e-10 : 1e-5;
    const fs::path out = work / (name + ".safetensors");
    std::string cmd = std::string(TXTCLS_CLI) + " forward --model lstm_reg --config " + (d / "config.json").string() +
                      " --weights " + (d / "weights.safetensors").string() + " --inputs " +
                      (d / "inputs.safetensors").string() + " --out " + out.string() + " --grads";
    INFO(cmd);
    REQUIRE(run(cmd) == 0);
    io::TensorFile expected = io::read_safetensors((d / "expected.safetensors").string());
    io::TensorFile got = io::read_safetensors(out.string());
    REQUIRE(got.tensors.size() == expected.tensors.size());
    for (const auto& [tname, ref] : expected.tensors) {
      INFO(name << ": " << tname);
      const io::RawTensor* mine = got.find(tname);
      REQUIRE(mine != nullptr);
      REQUIRE(mine->dtype == ref.dtype);
      REQUIRE(mine->shape == ref.shape);
      auto a = io::to_tensor_converting<double>(*mine, tname).to_vector();
      auto b = io::to_tensor_converting<double>(ref, tname).to_vector();
      const double scale = std::max(max_abs(ref), 1e-30);
      double worst = 0;
      for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]) / scale);
      CAPTURE(worst);
      REQUIRE(worst <= tol);
    }
    ++cases;
  }
  REQUIRE(cases == 8);
  fs::remove_all(work);
}

TEST_CASE("lstm_reg: forward refuses mismatched weights with a clear message", "[models][lstm_reg]") {
  const fs::path d = fs::path(TXTCLS_SOURCE_DIR) / "tests" / "fixtures" / "lstm_reg" / "bilstm_1layer_f64";
  const fs::path work = fs::temp_directory_path() / ("txtcls_lstm_reg_bad_" + std::to_string(::getpid()));
  fs::create_directories(work);
  // A config whose hidden size disagrees with the weights.
  auto cfg = models::LSTMRegConfig::load((d / "config.json").string());
  cfg.hidden_dim += 1;
  cfg.save((work / "config.json").string());
  const std::string log = (work / "log.txt").string();
  std::string cmd = std::string(TXTCLS_CLI) + " forward --model lstm_reg --config " + (work / "config.json").string() +
                    " --weights " + (d / "weights.safetensors").string() + " --inputs " +
                    (d / "inputs.safetensors").string() + " --out " + (work / "out.safetensors").string() + " > " + log;
  REQUIRE(run(cmd) == 1);
  std::ifstream f(log);
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  REQUIRE(text.find("weights.safetensors") != std::string::npos);
  REQUIRE(text.find("lstm.weight_hh_l0") != std::string::npos);
  REQUIRE(!fs::exists(work / "out.safetensors"));
  fs::remove_all(work);
}

TEST_CASE("lstm_reg: hedwig checkpoint names map onto ours", "[models][lstm_reg]") {
  using M = models::LSTMReg<double>;
  REQUIRE(M::canonical_name("lstm.module.weight_hh_l0_raw") == "lstm.weight_hh_l0");
  REQUIRE(M::canonical_name("lstm.module.weight_ih_l0") == "lstm.weight_ih_l0");
  REQUIRE(M::canonical_name("non_static_embed.weight") == "embed.weight");
  REQUIRE(M::canonical_name("fc1.weight") == "fc1.weight");
}
