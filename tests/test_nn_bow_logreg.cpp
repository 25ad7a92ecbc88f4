// End to end: bag-of-words logistic regression on TREC question classification, trained with
// Adam through nn::Linear, cross_entropy and backward. Small enough for the default suite.
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <unordered_map>

#include "test_util.hpp"
#include "txtcls/nn/linear.hpp"
#include "txtcls/ops/loss.hpp"
#include "txtcls/train/optim.hpp"

using namespace txtcls;

namespace {

struct Example {
  int64_t label;
  std::vector<std::string> tokens;
};

std::vector<std::string> lowercase_tokens(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream is(text);
  std::string w;
  while (is >> w) {
    for (auto& c : w) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out.push_back(w);
  }
  return out;
}

// LABEL<TAB>TEXT lines of a gzip file.
std::vector<Example> read_tsv_gz(const std::string& path, const std::vector<std::string>& labels) {
  gzFile f = gzopen(path.c_str(), "rb");
  REQUIRE(f != nullptr);
  std::vector<Example> out;
  std::string line;
  char buf[4096];
  while (gzgets(f, buf, sizeof buf)) {
    line += buf;
    if (line.empty() || line.back() != '\n') continue;  // a line longer than the buffer
    line.pop_back();
    const auto tab = line.find('\t');
    const auto it = std::find(labels.begin(), labels.end(), line.substr(0, tab == std::string::npos ? 0 : tab));
    if (tab == std::string::npos || it == labels.end()) FAIL(path << ": malformed line '" << line << "'");
    out.push_back({it - labels.begin(), lowercase_tokens(line.substr(tab + 1))});
    line.clear();
  }
  gzclose(f);
  return out;
}

// Dense [B, V] word counts of examples order[lo, hi); words outside the vocabulary are dropped.
Tensor<float> count_matrix(const std::vector<Example>& data, const std::vector<size_t>& order, size_t lo, size_t hi,
                           const std::unordered_map<std::string, int64_t>& vocab) {
  const int64_t V = static_cast<int64_t>(vocab.size());
  Tensor<float> x = zeros<float>({static_cast<int64_t>(hi - lo), V});
  float* p = x.data();
  for (size_t i = lo; i < hi; ++i)
    for (auto& w : data[order[i]].tokens) {
      auto it = vocab.find(w);
      if (it != vocab.end()) p[static_cast<int64_t>(i - lo) * V + it->second] += 1.0f;
    }
  return x;
}

}  // namespace

TEST_CASE("bag-of-words logistic regression learns TREC", "[nn][e2e]") {
  const std::string root = tt::shared_data_dir();
  const std::filesystem::path dir = std::filesystem::path(root) / "trec";
  if (root.empty() || !std::filesystem::exists(dir / "train.tsv.gz")) {
    WARN("skipped: TREC not found (expected ../shared/data/trec or $TXTCLS_SHARED_DATA/trec)");
    return;
  }
  // One thread: this test is about learning, and results do not depend on the thread count.
  // On an oversubscribed machine Eigen's multi-threaded GEMM busy-waits between its workers and
  // runs this test 50-100x slower.
  struct OneThread {
    int prev = num_threads();
    OneThread() { set_num_threads(1); }
    ~OneThread() { set_num_threads(prev); }
  } one_thread;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> labels;
  {
    std::ifstream in(dir / "labels.txt");
    for (std::string l; std::getline(in, l);)
      if (!l.empty()) labels.push_back(l);
  }
  REQUIRE(labels.size() == 6);
  const auto train_set = read_tsv_gz((dir / "train.tsv.gz").string(), labels);
  const auto test_set = read_tsv_gz((dir / "test.tsv.gz").string(), labels);
  REQUIRE(train_set.size() == 5452);
  REQUIRE(test_set.size() == 500);

  std::unordered_map<std::string, int64_t> vocab;
  for (auto& e : train_set)
    for (auto& w : e.tokens) vocab.emplace(w, static_cast<int64_t>(vocab.size()));
  const int64_t V = static_cast<int64_t>(vocab.size()), C = static_cast<int64_t>(labels.size());

  Generator gen(2024);
  nn::Linear<float> model(V, C, true, gen);
  train::Adam<float> opt(model.named_parameters(), {.lr = 0.01});

  std::vector<size_t> order(train_set.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  const size_t batch = 64;
  double first_epoch_loss = 0, last_epoch_loss = 0;
  const int epochs = 6;
  for (int epoch = 0; epoch < epochs; ++epoch) {
    for (size_t i = order.size(); i-- > 1;) std::swap(order[i], order[gen.randint(i + 1)]);
    double total = 0;
    for (size_t lo = 0; lo < order.size(); lo += batch) {
      const size_t hi = std::min(order.size(), lo + batch);
      Tensor<float> x = count_matrix(train_set, order, lo, hi, vocab);
      Tensor<int64_t> y({static_cast<int64_t>(hi - lo)});
      for (size_t i = lo; i < hi; ++i) y.data()[i - lo] = train_set[order[i]].label;
      opt.zero_grad();
      Tensor<float> loss = cross_entropy(model(x), y);
      loss.backward();
      opt.step();
      total += loss.item() * static_cast<double>(hi - lo);
    }
    total /= static_cast<double>(order.size());
    if (epoch == 0) first_epoch_loss = total;
    last_epoch_loss = total;
  }

  // accuracy on the test set
  model.eval();
  std::vector<size_t> test_order(test_set.size());
  for (size_t i = 0; i < test_order.size(); ++i) test_order[i] = i;
  int64_t correct = 0;
  std::vector<int64_t> test_counts(C, 0), train_counts(C, 0);
  {
    NoGradGuard ng;
    auto logits = model(count_matrix(test_set, test_order, 0, test_set.size(), vocab)).to_vector();
    for (size_t i = 0; i < test_set.size(); ++i) {
      const float* row = logits.data() + i * C;
      const int64_t pred = std::max_element(row, row + C) - row;
      correct += pred == test_set[i].label;
      ++test_counts[test_set[i].label];
    }
  }
  for (auto& e : train_set) ++train_counts[e.label];
  const double acc = static_cast<double>(correct) / static_cast<double>(test_set.size());
  // the best constant prediction on the test set (stricter than the training majority class)
  const double majority =
      static_cast<double>(*std::max_element(test_counts.begin(), test_counts.end())) / static_cast<double>(test_set.size());
  const double train_majority =
      static_cast<double>(test_counts[std::max_element(train_counts.begin(), train_counts.end()) - train_counts.begin()]) /
      static_cast<double>(test_set.size());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "TREC bag-of-words logistic regression: V=" << V << ", test accuracy " << acc
            << " (best constant " << majority << ", training majority class " << train_majority << "), loss "
            << first_epoch_loss << " -> " << last_epoch_loss << " over " << epochs << " epochs, " << secs << " s\n";
  REQUIRE(last_epoch_loss < 0.5 * first_epoch_loss);
  REQUIRE(acc >= majority + 0.25);
  REQUIRE(acc >= 0.75);
}
