// The txtcls program end to end on the bundled TREC data: a short training run that must clearly
// beat the majority class, bit-identical resume, eval and predict on the saved checkpoint, and
// clear errors for bad input.
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "test_util.hpp"
#include "txtcls/io/safetensors.hpp"
#include "txtcls/models/checkpoint.hpp"

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
