#pragma once
// From examples to padded batches: encode (tokenize, look up, truncate to max_len), then a
// BatchIterator that serves [B, T] id tensors with their lengths and labels in one of four
// orders. The random orders are a pure function of (seed, epoch), drawn from a Philox Generator,
// so the iterator's whole state is (seed, epoch, position): a resumed run continues identically.
//
// Bucketing (BatchOrder::bucketed), as torchtext's BucketIterator used by hedwig: shuffle all
// examples, cut the permutation into pools of bucket_batches * batch_size, sort each pool by
// length and cut it into batches (so a batch holds similar lengths and little padding), then
// shuffle the order of all batches. Within a batch, rows are sorted by length, longest first
// (sort_within_batch), the order packed RNN kernels expect; Batch::indices says which example
// each row is.
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "txtcls/data/example.hpp"
#include "txtcls/data/labels.hpp"
#include "txtcls/data/tokenizer.hpp"
#include "txtcls/data/vocab.hpp"
#include "txtcls/tensor/creation.hpp"
#include "txtcls/tensor/views.hpp"

namespace txtcls::data {

// The vocabulary of the training examples' tokens.
inline Vocab build_vocab(const std::vector<Example>& examples, const Tokenizer& tok, const VocabOptions& opt = {}) {
  TokenCounter counter;
  for (const auto& ex : examples) tok.for_each(ex.text, [&](std::string_view t) { counter.add(t); });
  return Vocab::build(counter, opt);
}

// What to do with a text that has no tokens (empty, or only characters the tokenizer drops).
// `unk` (default) keeps it as the one-token sequence [<unk>]: dropping test examples would change
// the denominator of test accuracy, and a zero-length sequence has no RNN output to pool.
enum class EmptyText { unk, skip, error };

struct EncodeOptions {
  int64_t max_len = 0;  // keep the first max_len tokens; 0 = no limit
  EmptyText empty = EmptyText::unk;
};

struct EncodeReport {
  static constexpr size_t kMaxNotes = 20;
  size_t examples = 0;       // sequences produced
  size_t tokens = 0;         // tokens kept (after truncation)
  size_t unknown = 0;        // of which mapped to <unk>
  size_t truncated = 0;      // sequences cut to max_len
  size_t empty_as_unk = 0;   // empty texts encoded as [<unk>]
  size_t empty_skipped = 0;  // empty texts left out (EmptyText::skip)
  std::vector<std::string> notes;
  void note(std::string s) {
    if (notes.size() < kMaxNotes) notes.push_back(std::move(s));
  }
  std::string summary() const {
    std::string s = std::to_string(examples) + " sequences, " + std::to_string(tokens) + " tokens (" +
                    std::to_string(unknown) + " unknown)";
    if (truncated) s += ", " + std::to_string(truncated) + " truncated";
    if (empty_as_unk) s += ", " + std::to_string(empty_as_unk) + " empty text(s) encoded as <unk>";
    if (empty_skipped) s += ", " + std::to_string(empty_skipped) + " empty text(s) skipped";
    return s;
  }
};

struct EncodedDataset {
  std::vector<std::vector<int64_t>> ids;
  std::vector<int64_t> labels;        // label ids; -1 for unlabelled texts
  std::vector<size_t> example_index;  // position of each sequence in the input examples
  int64_t pad_id = 0;
  EncodeReport report;
  size_t size() const { return ids.size(); }
  int64_t length(size_t i) const { return static_cast<int64_t>(ids[i].size()); }
};

namespace detail {

inline bool encode_one(std::string_view text, const std::string& source, const Tokenizer& tok, const Vocab& vocab,
                       const EncodeOptions& opt, std::vector<int64_t>& ids, EncodeReport& rep) {
  ids.clear();
  size_t total = 0;
  const size_t cap = opt.max_len > 0 ? static_cast<size_t>(opt.max_len) : SIZE_MAX;
  tok.for_each(text, [&](std::string_view t) {
    if (total++ < cap) ids.push_back(vocab.id(t));
  });
  if (ids.empty()) {
    switch (opt.empty) {
      case EmptyText::error: ::txtcls::detail::fail(source, ": the text has no tokens");
      case EmptyText::skip:
        ++rep.empty_skipped;
        rep.note(source + ": no tokens, skipped");
        return false;
      case EmptyText::unk:
        ids.push_back(vocab.unk_id());
        ++rep.empty_as_unk;
        rep.note(source + ": no tokens, encoded as <unk>");
        break;
    }
  }
  if (total > cap) ++rep.truncated;
  rep.tokens += ids.size();
  if (vocab.has_unk()) rep.unknown += static_cast<size_t>(std::count(ids.begin(), ids.end(), vocab.unk_id()));
  return true;
}

}  // namespace detail

// Token ids and label ids of labelled examples. A label missing from `labels` is an error naming
// the example's file:line.
inline EncodedDataset encode_examples(const std::vector<Example>& examples, const Tokenizer& tok, const Vocab& vocab,
                                      const LabelSet& labels, const EncodeOptions& opt = {}) {
  TXTCLS_CHECK(opt.max_len >= 0, "encode_examples: max_len ", opt.max_len, " is negative");
  EncodedDataset d;
  d.pad_id = vocab.pad_id();
  std::vector<int64_t> ids;
  for (size_t i = 0; i < examples.size(); ++i) {
    const int64_t y = labels.id_of(examples[i]);
    if (!detail::encode_one(examples[i].text, examples[i].source, tok, vocab, opt, ids, d.report)) continue;
    d.ids.push_back(ids);
    d.labels.push_back(y);
    d.example_index.push_back(i);
  }
  d.report.examples = d.ids.size();
  return d;
}

// Unlabelled texts (prediction): labels are -1.
inline EncodedDataset encode_texts(const std::vector<std::string>& texts, const Tokenizer& tok, const Vocab& vocab,
                                   const EncodeOptions& opt = {}) {
  TXTCLS_CHECK(opt.max_len >= 0, "encode_texts: max_len ", opt.max_len, " is negative");
  EncodedDataset d;
  d.pad_id = vocab.pad_id();
  std::vector<int64_t> ids;
  for (size_t i = 0; i < texts.size(); ++i) {
    if (!detail::encode_one(texts[i], "text " + std::to_string(i), tok, vocab, opt, ids, d.report)) continue;
    d.ids.push_back(ids);
    d.labels.push_back(-1);
    d.example_index.push_back(i);
  }
  d.report.examples = d.ids.size();
  return d;
}

struct Batch {
  Tensor<int64_t> ids;      // [B, T], T = longest sequence in the batch, padded with the pad id
  Tensor<int64_t> lengths;  // [B]
  Tensor<int64_t> labels;   // [B]
  std::vector<size_t> indices;  // row b is sequence indices[b] of the EncodedDataset
  int64_t size() const { return static_cast<int64_t>(indices.size()); }
  // [B, T], 1 where t < length (a real token), 0 on padding.
  Tensor<uint8_t> mask() const {
    const int64_t B = ids.size(0), T = ids.size(1);
    Tensor<uint8_t> m({B, T});
    const int64_t* len = lengths.data();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) m.data()[b * T + t] = t < len[b] ? 1 : 0;
    return m;
  }
};

// The batch of the given sequences, rows in the order given.
inline Batch make_batch(const EncodedDataset& d, const std::vector<size_t>& indices) {
  int64_t T = 0;
  for (size_t i : indices) {
    TXTCLS_CHECK(i < d.size(), "make_batch: index ", i, " out of range for ", d.size(), " sequences");
    T = std::max(T, d.length(i));
  }
  const int64_t B = static_cast<int64_t>(indices.size());
  Batch b;
  b.indices = indices;
  b.ids = full<int64_t>({B, T}, d.pad_id);
  b.lengths = Tensor<int64_t>({B});
  b.labels = Tensor<int64_t>({B});
  for (int64_t r = 0; r < B; ++r) {
    const auto& seq = d.ids[indices[static_cast<size_t>(r)]];
    std::copy(seq.begin(), seq.end(), b.ids.data() + r * T);
    b.lengths.data()[r] = static_cast<int64_t>(seq.size());
    b.labels.data()[r] = d.labels[indices[static_cast<size_t>(r)]];
  }
  return b;
}

// in_order: sequences as they are (evaluation, prediction); by_length: longest first, no
// randomness (evaluation with the least padding); shuffled: a fresh permutation per epoch;
// bucketed: see the top of this file.
enum class BatchOrder { in_order, by_length, shuffled, bucketed };

struct BatchOptions {
  int64_t batch_size = 32;
  BatchOrder order = BatchOrder::bucketed;
  int64_t bucket_batches = 100;  // batches per sorting pool
  bool sort_within_batch = true;
  bool drop_last = false;        // drop a final batch smaller than batch_size
  uint64_t seed = 0;
};

// Everything needed to resume: the batches of epoch e depend only on (seed, e).
struct BatchIteratorState {
  uint64_t seed = 0;
  uint64_t epoch = 0;
  uint64_t position = 0;  // batches of `epoch` already served
  bool operator==(const BatchIteratorState&) const = default;
};

struct PlannedBatch {
  std::vector<size_t> indices;
  size_t pool = 0;  // bucketed: the sorting pool it was cut from (otherwise 0)
};

class BatchIterator {
 public:
  // `data` must outlive the iterator.
  BatchIterator(const EncodedDataset& data, BatchOptions opt) : data_(&data), opt_(opt) {
    TXTCLS_CHECK(opt_.batch_size > 0, "BatchIterator: batch_size ", opt_.batch_size, " must be positive");
    TXTCLS_CHECK(opt_.bucket_batches > 0, "BatchIterator: bucket_batches ", opt_.bucket_batches, " must be positive");
    state_.seed = opt_.seed;
  }

  // The batches of an epoch, a pure function of (seed, epoch).
  std::vector<PlannedBatch> plan(uint64_t epoch) const {
    const size_t n = data_->size(), bs = static_cast<size_t>(opt_.batch_size);
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), size_t(0));
    // Disjoint counter ranges per epoch: 2^40 draws each is far more than any permutation needs.
    Generator g(state_.seed);
    g.set_state(state_.seed, epoch << 40);
    auto shuffle = [&g](auto& v) {
      for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[static_cast<size_t>(g.randint(i))]);
    };
    auto len = [this](size_t i) { return data_->length(i); };
    std::vector<PlannedBatch> batches;
    auto cut = [&](size_t from, size_t to, size_t pool) {
      for (size_t b = from; b < to; b += bs)
        batches.push_back({std::vector<size_t>(order.begin() + b, order.begin() + std::min(b + bs, to)), pool});
    };
    switch (opt_.order) {
      case BatchOrder::in_order:
        cut(0, n, 0);
        break;
      case BatchOrder::by_length:
        std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return len(a) > len(b); });
        cut(0, n, 0);
        break;
      case BatchOrder::shuffled:
        shuffle(order);
        cut(0, n, 0);
        break;
      case BatchOrder::bucketed: {
        shuffle(order);
        const size_t pool = bs * static_cast<size_t>(opt_.bucket_batches);
        for (size_t p = 0, k = 0; p < n; p += pool, ++k) {
          const size_t end = std::min(p + pool, n);
          std::stable_sort(order.begin() + p, order.begin() + end, [&](size_t a, size_t b) { return len(a) < len(b); });
          cut(p, end, k);
        }
        shuffle(batches);
        break;
      }
    }
    if (opt_.drop_last)
      batches.erase(std::remove_if(batches.begin(), batches.end(), [&](const PlannedBatch& b) { return b.indices.size() < bs; }),
                    batches.end());
    if (opt_.sort_within_batch)
      for (auto& b : batches)
        std::stable_sort(b.indices.begin(), b.indices.end(), [&](size_t x, size_t y) { return len(x) > len(y); });
    return batches;
  }

  // The next batch of the current epoch. At the end of an epoch returns false and moves the state
  // to (epoch + 1, 0), so the following call starts the next epoch.
  bool next(Batch& out) {
    if (!planned_ || planned_epoch_ != state_.epoch) {
      current_ = plan(state_.epoch);
      planned_ = true;
      planned_epoch_ = state_.epoch;
    }
    if (state_.position >= current_.size()) {
      ++state_.epoch;
      state_.position = 0;
      return false;
    }
    out = make_batch(*data_, current_[static_cast<size_t>(state_.position++)].indices);
    return true;
  }

  // Pools hold whole batches, so only the epoch's last batch can be short.
  size_t batches_per_epoch() const {
    const size_t n = data_->size(), bs = static_cast<size_t>(opt_.batch_size);
    return opt_.drop_last ? n / bs : (n + bs - 1) / bs;
  }
  const BatchIteratorState& state() const { return state_; }
  void restore(const BatchIteratorState& s) {
    state_ = s;
    planned_ = false;
  }
  const BatchOptions& options() const { return opt_; }

 private:
  const EncodedDataset* data_;
  BatchOptions opt_;
  BatchIteratorState state_;
  std::vector<PlannedBatch> current_;
  bool planned_ = false;
  uint64_t planned_epoch_ = 0;
};

}  // namespace txtcls::data
