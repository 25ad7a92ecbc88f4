#pragma once
// Shared by train / eval / predict: reading a dataset into encoded splits with one pipeline.
#include <string>

#include "txtcls/data/batching.hpp"
#include "txtcls/data/reader.hpp"

namespace txtcls_cli {

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
