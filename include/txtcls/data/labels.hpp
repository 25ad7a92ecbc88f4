#pragma once
// LabelSet: class names <-> ids 0..K-1, from a labels.txt (one per line, line order = id) or from
// the training examples in first-seen order. Encoding another split errors on the first label the
// set does not know, naming that example's file:line.
#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "txtcls/data/example.hpp"

namespace txtcls::data {

enum class LabelOrder { first_seen, sorted };

class LabelSet {
 public:
  LabelSet() = default;
  explicit LabelSet(std::vector<std::string> names) {
    for (auto& n : names) add(std::move(n), "labels");
  }

  // labels.txt: one label per line. Empty lines and duplicates are errors naming file:line.
  static LabelSet load(const std::string& path) {
    LabelSet s;
    LineReader in(path);
    std::string_view line;
    while (in.next(line)) {
      std::string_view t = detail::trim(line);
      TXTCLS_CHECK(!t.empty(), in.here(), ": empty line in the label list");
      TXTCLS_CHECK(invalid_utf8_at(t) == kValidUtf8, in.here(), ": invalid UTF-8 in the label list");
      TXTCLS_CHECK(!s.find(t), in.here(), ": label '", t, "' listed twice");
      s.add(std::string(t), in.here());
    }
    TXTCLS_CHECK(s.size() > 0, path, ": no labels");
    return s;
  }

  // The labels of `examples` in first-seen (or sorted) order.
  static LabelSet from_examples(const std::vector<Example>& examples, LabelOrder order = LabelOrder::first_seen) {
    std::vector<std::string> names;
    std::unordered_map<std::string, bool> seen;
    for (const auto& ex : examples)
      if (seen.emplace(ex.label, true).second) names.push_back(ex.label);
    if (order == LabelOrder::sorted) std::sort(names.begin(), names.end());
    return LabelSet(std::move(names));
  }

  void save(const std::string& path) const {
    std::string out;
    for (const auto& n : names_) out += n + "\n";
    write_file_atomic(path, out);
  }

  size_t size() const { return names_.size(); }
  const std::vector<std::string>& names() const { return names_; }
  const std::string& name(int64_t id) const {
    TXTCLS_CHECK(id >= 0 && id < static_cast<int64_t>(names_.size()), "labels: id ", id, " out of range for ",
                 names_.size(), " labels");
    return names_[static_cast<size_t>(id)];
  }
  std::optional<int64_t> find(std::string_view label) const {
    auto it = ids_.find(std::string(label));
    if (it == ids_.end()) return std::nullopt;
    return it->second;
  }
  int64_t id(std::string_view label) const {
    auto i = find(label);
    TXTCLS_CHECK(i.has_value(), "labels: unknown label '", label, "' (known: ", known(), ")");
    return *i;
  }
  // The id of an example's label; an unknown label is an error naming the example's file:line.
  int64_t id_of(const Example& ex) const {
    auto i = find(ex.label);
    TXTCLS_CHECK(i.has_value(), ex.source, ": label '", ex.label, "' is not one of the ", names_.size(),
                 " training labels (", known(), ")");
    return *i;
  }
  std::vector<int64_t> encode(const std::vector<Example>& examples) const {
    std::vector<int64_t> out;
    out.reserve(examples.size());
    for (const auto& ex : examples) out.push_back(id_of(ex));
    return out;
  }
  // Examples per label id, e.g. to report the class balance of a split.
  std::vector<size_t> counts(const std::vector<Example>& examples) const {
    std::vector<size_t> c(names_.size(), 0);
    for (const auto& ex : examples) ++c[static_cast<size_t>(id_of(ex))];
    return c;
  }
  bool operator==(const LabelSet& o) const { return names_ == o.names_; }

 private:
  void add(std::string name, const std::string& place) {
    TXTCLS_CHECK(!detail::trim(name).empty(), place, ": empty label");
    TXTCLS_CHECK(ids_.emplace(name, static_cast<int64_t>(names_.size())).second, place, ": label '", name,
                 "' listed twice");
    names_.push_back(std::move(name));
  }
  std::string known() const {
    std::string s;
    for (size_t i = 0; i < names_.size() && i < 10; ++i) s += (i ? ", " : "") + names_[i];
    if (names_.size() > 10) s += ", ...";
    return s;
  }

  std::vector<std::string> names_;
  std::unordered_map<std::string, int64_t> ids_;
};

}  // namespace txtcls::data
