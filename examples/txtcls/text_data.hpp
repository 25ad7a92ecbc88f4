#pragma once
// Shared by train / eval / predict: reading a dataset into encoded splits with one pipeline.
#include <CLI/CLI.hpp>
#include <string>

#include "txtcls/data/batching.hpp"
#include "txtcls/data/reader.hpp"

namespace txtcls_cli {

// --invalid-utf8: what reading a dataset does with bytes that are not UTF-8 (the library's
// data::ReadOptions): stop at the first with file:line (error), or repair and count them.
inline void add_invalid_utf8_option(CLI::App& sub, std::string& policy) {
  sub.add_option("--invalid-utf8", policy,
                 "Bytes that are not UTF-8: error (stop, naming file and line), replace (U+FFFD) or latin1 "
                 "(decode the line as ISO-8859-1); repairs are counted in the data summary")
      ->capture_default_str()
      ->check([](const std::string& s) {  // the library's names, and its message for others
        try {
          txtcls::data::parse_invalid_utf8(s);
          return std::string();
        } catch (const std::exception& e) {
          return std::string(e.what());
        }
      });
}

inline txtcls::data::ReadOptions read_options(const std::string& invalid_utf8) {
  txtcls::data::ReadOptions o;
  o.invalid_utf8 = txtcls::data::parse_invalid_utf8(invalid_utf8);
  return o;
}

struct EncodedSplits {
  txtcls::data::EncodedDataset train, dev, test;
  std::string dev_source;  // "dev file" or "10% of train (seed N)"
};

// A deterministic dev split carved from the training examples: a seeded permutation, the first
// `fraction` of it goes to dev. Returns the dev examples and removes them from `train`.
inline std::vector<txtcls::data::Example> carve_dev(std::vector<txtcls::data::Example>& train, double fraction,
                                                   uint64_t seed) {
  const size_t n = train.size(), k = static_cast<size_t>(static_cast<double>(n) * fraction);
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  txtcls::Generator g(seed ^ 0x64657673706c6974ull);  // "devsplit": a stream of its own
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[static_cast<size_t>(g.randint(i))]);
  std::vector<bool> is_dev(n, false);
  for (size_t i = 0; i < k; ++i) is_dev[order[i]] = true;
  std::vector<txtcls::data::Example> dev, rest;
  for (size_t i = 0; i < n; ++i) (is_dev[i] ? dev : rest).push_back(std::move(train[i]));
  train = std::move(rest);
  return dev;
}

}  // namespace txtcls_cli
