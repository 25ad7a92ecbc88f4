#pragma once
// Classification metrics from a confusion matrix: accuracy, per-class precision/recall/F1,
// macro-F1 (unweighted mean over classes, a class absent from both gold and predictions counts
// as F1 = 0 only if it has gold examples; classes with no gold and no predictions are left out,
// as scikit-learn does with labels= restricted to those present).
#include <cstdint>
#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

#include "txtcls/core/error.hpp"

namespace txtcls::train {

class ConfusionMatrix {
 public:
  explicit ConfusionMatrix(int64_t num_classes) : k_(num_classes), m_(num_classes * num_classes, 0) {
    TXTCLS_CHECK(num_classes > 0, "ConfusionMatrix: needs at least one class");
  }
  void add(int64_t gold, int64_t pred) {
    TXTCLS_CHECK(gold >= 0 && gold < k_ && pred >= 0 && pred < k_, "ConfusionMatrix: class out of range (gold ", gold,
                 ", predicted ", pred, ", classes ", k_, ")");
    m_[gold * k_ + pred]++;
  }
  int64_t num_classes() const { return k_; }
  int64_t count(int64_t gold, int64_t pred) const { return m_[gold * k_ + pred]; }
  int64_t total() const {
    int64_t s = 0;
    for (auto v : m_) s += v;
    return s;
  }
  int64_t gold_count(int64_t c) const {
    int64_t s = 0;
    for (int64_t p = 0; p < k_; ++p) s += count(c, p);
    return s;
  }
  int64_t pred_count(int64_t c) const {
    int64_t s = 0;
    for (int64_t g = 0; g < k_; ++g) s += count(g, c);
    return s;
  }
  double accuracy() const {
    int64_t t = total(), c = 0;
    for (int64_t i = 0; i < k_; ++i) c += count(i, i);
    return t ? static_cast<double>(c) / static_cast<double>(t) : 0.0;
  }
  double precision(int64_t c) const {
    int64_t p = pred_count(c);
    return p ? static_cast<double>(count(c, c)) / static_cast<double>(p) : 0.0;
  }
  double recall(int64_t c) const {
    int64_t g = gold_count(c);
    return g ? static_cast<double>(count(c, c)) / static_cast<double>(g) : 0.0;
  }
  double f1(int64_t c) const {
    double p = precision(c), r = recall(c);
    return p + r > 0 ? 2 * p * r / (p + r) : 0.0;
  }
  double macro_f1() const {
    double s = 0;
    int64_t n = 0;
    for (int64_t c = 0; c < k_; ++c) {
      if (gold_count(c) == 0 && pred_count(c) == 0) continue;
      s += f1(c);
      ++n;
    }
    return n ? s / static_cast<double>(n) : 0.0;
  }

  // A per-class table (precision, recall, F1, support) followed by the matrix, rows = gold.
  std::string report(const std::vector<std::string>& names) const {
    TXTCLS_CHECK(static_cast<int64_t>(names.size()) == k_, "ConfusionMatrix::report: ", names.size(),
                 " names for ", k_, " classes");
    size_t w = 5;
    for (auto& n : names) w = std::max(w, n.size());
    std::ostringstream os;
    os << std::fixed << std::setprecision(4);
    os << std::left << std::setw(static_cast<int>(w)) << "class" << std::right << "  precision     recall         f1   support\n";
    for (int64_t c = 0; c < k_; ++c)
      os << std::left << std::setw(static_cast<int>(w)) << names[c] << std::right << std::setw(11) << precision(c)
         << std::setw(11) << recall(c) << std::setw(11) << f1(c) << std::setw(10) << gold_count(c) << "\n";
    os << "accuracy " << accuracy() << "  macro-F1 " << macro_f1() << "  (" << total() << " examples)\n\n";
    os << "confusion matrix (rows: gold, columns: predicted)\n" << std::setw(static_cast<int>(w)) << "";
    for (int64_t c = 0; c < k_; ++c) os << std::setw(static_cast<int>(std::max<size_t>(names[c].size(), 5)) + 1) << names[c];
    os << "\n";
    for (int64_t g = 0; g < k_; ++g) {
      os << std::left << std::setw(static_cast<int>(w)) << names[g] << std::right;
      for (int64_t p = 0; p < k_; ++p) os << std::setw(static_cast<int>(std::max<size_t>(names[p].size(), 5)) + 1) << count(g, p);
      os << "\n";
    }
    return os.str();
  }

 private:
  int64_t k_;
  std::vector<int64_t> m_;
};

}  // namespace txtcls::train
