// The txtcls program end to end on the bundled TREC data: a short training run that must clearly
// beat the majority class, bit-identical resume, eval and predict on the saved checkpoint, and
// clear errors for bad input.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "test_util.hpp"
#include "txtcls/io/safetensors.hpp"
#include "txtcls/models/checkpoint.hpp"

// In a namespace of its own: test files are compiled several to a unit (TXTCLS_UNITY_BUILD).
namespace test_models_train_cli {

namespace fs = std::filesystem;

namespace {

struct Run {
  int rc;
  std::string output;
};

Run run(const std::string& args, const std::string& stdin_file = "") {
  static int n = 0;
  const fs::path log = fs::temp_directory_path() / ("txtcls_cli_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
  std::string cmd = std::string(TXTCLS_CLI) + " " + args + (stdin_file.empty() ? "" : " < " + stdin_file) + " > " +
                    log.string() + " 2>&1";
  int rc = std::system(cmd.c_str());
  std::ifstream f(log);
  std::string out((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  fs::remove(log);
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, out};
}

fs::path scratch(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("txtcls_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// A small BiLSTM so the run fits the default suite; everything else is the default recipe.
const std::string kSmall = " --data " + std::string(TXTCLS_SOURCE_DIR) +
                           "/data/trec --hidden-dim 48 --words-dim 48 --threads 2 --quiet";

}  // namespace

TEST_CASE("txtcls train on TREC beats the majority class; resume is bit-identical", "[models][cli][train]") {
  const fs::path a = scratch("train_a"), b = scratch("train_b");
  Run r = run("train" + kSmall + " --epochs 3 --out " + a.string());
  INFO(r.output);
  REQUIRE(r.rc == 0);
  for (const char* f : {"model.safetensors", "config.json", "vocab.txt", "labels.txt", "metrics.json"})
    REQUIRE(fs::exists(a / f));
  auto m = txtcls::models::read_json_file((a / "metrics.json").string());
  const double acc = m["test"]["accuracy"], f1 = m["test"]["macro_f1"];
  // The majority class of TREC's test set (DESC) is 138 / 500 = 0.276.
  CAPTURE(acc, f1);
  REQUIRE(acc >= 0.276 + 0.40);
  REQUIRE(f1 >= 0.5);

  // 1 epoch, then resume to 3: the same model, byte for byte.
  REQUIRE(run("train" + kSmall + " --epochs 1 --out " + b.string()).rc == 0);
  Run res = run("train --resume " + b.string() + " --epochs 3 --quiet");
  INFO(res.output);
  REQUIRE(res.rc == 0);
  REQUIRE(slurp(a / "model.safetensors") == slurp(b / "model.safetensors"));

  // eval agrees with what training reported for the saved model
  Run e = run("eval --checkpoint " + a.string() + " --data " + std::string(TXTCLS_SOURCE_DIR) + "/data/trec --json");
  REQUIRE(e.rc == 0);
  auto ej = nlohmann::json::parse(e.output);
  REQUIRE(ej["accuracy"].get<double>() == Approx(acc).epsilon(1e-12));
  REQUIRE(ej["examples"] == 500);

  // predict: one line out per line in, LABEL<TAB>probability
  const fs::path in = a / "questions.txt";
  std::ofstream(in) << "How far is it from Denver to Aspen ?\nWho wrote Hamlet ?\n\nWhat does NASA stand for ?\n";
  Run p = run("predict --checkpoint " + a.string(), in.string());
  REQUIRE(p.rc == 0);
  std::istringstream lines(p.output);
  std::string line;
  int count = 0;
  while (std::getline(lines, line)) {
    auto tab = line.find('\t');
    REQUIRE(tab != std::string::npos);
    double prob = std::stod(line.substr(tab + 1));
    REQUIRE((prob > 0 && prob <= 1));
    ++count;
  }
  REQUIRE(count == 4);
  fs::remove_all(a);
  fs::remove_all(b);
}

TEST_CASE("txtcls refuses bad input with one clear line", "[models][cli]") {
  const fs::path d = scratch("bad_input");
  fs::create_directories(d);
  std::ofstream(d / "train.tsv") << "A\tgood line\nthis line has no tab\n";
  Run r = run("train --data " + (d / "train.tsv").string() + " --epochs 1 --quiet --out " + (d / "out").string());
  REQUIRE(r.rc == 1);
  REQUIRE(r.output.find("train.tsv:2") != std::string::npos);
  Run e = run("eval --checkpoint " + d.string() + " --data " + (d / "train.tsv").string());
  REQUIRE(e.rc != 0);
  REQUIRE(e.output.find("config.json") != std::string::npos);
  Run u = run("train --model nosuchmodel");
  REQUIRE(u.rc != 0);
  fs::remove_all(d);
}

// --invalid-utf8: refused by default with file:line and the flag that repairs it; with
// `replace` or `latin1` the run goes on and says how many lines were repaired.
TEST_CASE("txtcls --invalid-utf8: refused by default, repaired and counted on request", "[models][cli]") {
  const fs::path d = scratch("utf8");
  fs::create_directories(d);
  {
    std::ofstream f(d / "train.tsv", std::ios::binary);
    for (int i = 0; i < 12; ++i) f << (i % 2 ? "A\tgood thing " : "B\tbad thing ") << i << "\n";
    f << "A\tcaf\xe9 au lait\n";  // Latin-1 e-acute: line 13
  }
  const std::string base = "train --data " + (d / "train.tsv").string() +
                           " --epochs 1 --hidden-dim 8 --words-dim 8 --threads 1 --out " + (d / "out").string();
  Run e = run(base);
  INFO(e.output);
  REQUIRE(e.rc == 1);
  REQUIRE(e.output.find("train.tsv:13: invalid UTF-8") != std::string::npos);
  REQUIRE(e.output.find("--invalid-utf8") != std::string::npos);
  for (const char* policy : {"replace", "latin1"}) {
    Run r = run(base + " --invalid-utf8 " + policy);
    INFO(policy << ": " << r.output);
    REQUIRE(r.rc == 0);
    REQUIRE(r.output.find("1 line(s) with invalid UTF-8 repaired") != std::string::npos);
  }
  Run bad = run(base + " --invalid-utf8 ignore");
  REQUIRE(bad.rc != 0);
  REQUIRE(bad.output.find("--invalid-utf8") != std::string::npos);
  Run ev = run("eval --checkpoint " + (d / "out").string() + " --data " + (d / "train.tsv").string() +
               " --invalid-utf8 latin1");
  INFO(ev.output);
  REQUIRE(ev.rc == 0);
  REQUIRE(ev.output.find("13 examples") != std::string::npos);
  fs::remove_all(d);
}

// --device: a GPU that this build or this machine cannot give is refused before any work, with
// one line that names the flag and the reason, whichever kind of build runs the test: without
// the CUDA backend ("no CUDA support"), with it but no GPU ("no CUDA device"), or with GPUs, none
// of which is cuda:99 ("no such device").
TEST_CASE("txtcls --device refuses a GPU it cannot use with one clear line", "[models][cli]") {
  const fs::path d = scratch("device");
  fs::create_directories(d);
  auto refused = [](const Run& r, const std::string& cmd, const std::string& value) {
    INFO(r.output);
    REQUIRE(r.rc == 1);  // an error report, not a crash (a signal) or a usage error (2)
    REQUIRE(std::count(r.output.begin(), r.output.end(), '\n') == 1);
    REQUIRE(r.output.find("txtcls: error: " + cmd + ": --device " + value + ": ") == 0);
    const bool no_build = r.output.find("this build has no CUDA support; rebuild with nvcc found or -DTXTCLS_CUDA=ON") !=
                          std::string::npos;
    const bool no_gpu = r.output.find("no CUDA device") != std::string::npos;
    const bool no_such = r.output.find("no such device") != std::string::npos;
    REQUIRE(int(no_build) + int(no_gpu) + int(no_such) == 1);
    return no_build || no_gpu;
  };
  const std::string out = " --out " + (d / "out").string();
  const bool no_cuda = refused(run("train" + kSmall + " --epochs 1 --device cuda:99" + out), "train", "cuda:99");
  REQUIRE(!fs::exists(d / "out"));  // refused before anything was written
  refused(run("eval --checkpoint " + d.string() + " --data " + (d / "none.tsv").string() + " --device cuda:99"), "eval",
          "cuda:99");
  refused(run("predict --checkpoint " + d.string() + " --device cuda:99", "/dev/null"), "predict", "cuda:99");
  // Plain `cuda` is refused for the same reason where there is no GPU to use (elsewhere it
  // trains: that run belongs to the CUDA suite).
  if (no_cuda) refused(run("train" + kSmall + " --epochs 1 --device cuda" + out), "train", "cuda");
  Run bad = run("train" + kSmall + " --epochs 1 --device tpu" + out);
  REQUIRE(bad.rc == 1);
  REQUIRE(bad.output.find("train: --device tpu: unknown device 'tpu' (expected cpu, cuda or cuda:N)") != std::string::npos);
  // --lstm-backend: cuDNN needs a GPU; an unknown name is refused.
  Run cudnn_on_cpu = run("train" + kSmall + " --epochs 1 --lstm-backend cudnn" + out);
  REQUIRE(cudnn_on_cpu.rc == 1);
  REQUIRE(cudnn_on_cpu.output.find("train: --lstm-backend cudnn: cuDNN runs on a GPU; add --device cuda") !=
          std::string::npos);
  Run unknown = run("train" + kSmall + " --epochs 1 --lstm-backend fast" + out);
  REQUIRE(unknown.rc == 1);
  REQUIRE(unknown.output.find("train: --lstm-backend fast: unknown backend (expected own or cudnn)") != std::string::npos);
  REQUIRE(!fs::exists(d / "out"));
  fs::remove_all(d);
}

// The README's main job: hedwig's full recipe on TREC-6 (BiLSTM 512, 30 epochs, patience 5).
// About 10 minutes on 2 cores, hence [slow] (ctest -L slow). Measured: 0.894-0.898 with 1 or 2
// threads (the summation order, hence the run, depends on the thread count); fastText (bigrams,
// tuned on dev) 0.896. The bound leaves room for that spread; docs/results.md has the figures.
TEST_CASE("txtcls train with the default recipe on TREC", "[models][cli][slow]") {
  const fs::path out = scratch("trec_default");
  Run r = run("train --data " + std::string(TXTCLS_SOURCE_DIR) + "/data/trec --quiet --out " + out.string());
  INFO(r.output);
  REQUIRE(r.rc == 0);
  auto m = txtcls::models::read_json_file((out / "metrics.json").string());
  const double acc = m["test"]["accuracy"];
  CAPTURE(acc);
  REQUIRE(acc >= 0.88);
  fs::remove_all(out);
}

}  // namespace test_models_train_cli
