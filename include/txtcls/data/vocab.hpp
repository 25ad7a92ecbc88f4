#pragma once
// Vocabulary: tokens <-> ids, specials first (<pad> = 0, <unk> = 1 by default), then the corpus
// tokens by frequency. Saved with a model as one token per line (line i = id i).
//
// Building (torchtext's build_vocab, which hedwig uses, does the same): count every occurrence,
// drop tokens seen fewer than min_freq times, order by frequency descending with ties broken by
// byte-wise (= code point) order of the token — TieBreak::first_seen breaks them by first
// occurrence instead — and keep the first max_size (0 = all; the specials do not count).
// Lexicographic ties make the vocabulary independent of the order of the training examples.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "txtcls/data/text_file.hpp"

namespace txtcls::data {

namespace detail {

// 64-bit hash of a short string, 8 bytes per step (tokens are mostly shorter than 16 bytes).
inline uint64_t token_hash(std::string_view s) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (s.size() * 0xC2B2AE3D27D4EB4Full);
  size_t i = 0;
  auto mix = [&h](uint64_t w) {
    h ^= w * 0x87C37B91114253D5ull;
    h = (h << 31 | h >> 33) * 0x4CF5AD432745937Full;
  };
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    mix(w);
  }
  if (i < s.size()) {
    uint64_t w = 0;
    std::memcpy(&w, s.data() + i, s.size() - i);
    mix(w);
  }
  h ^= h >> 29;
  h *= 0xBF58476D1CE4E5B9ull;
  return h ^ (h >> 32);
}

// Open-addressing index from strings to their positions in an external array of strings (the
// vocabulary's tokens, the counter's entries). One probe usually settles a lookup, which matters
// when counting the six million tokens of IMDb.
class TokenIndex {
 public:
  // Position of `s`, or -1. key(i) returns the string at position i.
  template <class Key>
  int64_t find(std::string_view s, uint64_t h, const Key& key) const {
    if (slots_.empty()) return -1;
    for (size_t j = h & mask_;; j = (j + 1) & mask_) {
      const Slot& sl = slots_[j];
      if (sl.pos < 0) return -1;
      if (sl.hash == h && key(static_cast<size_t>(sl.pos)) == s) return sl.pos;
    }
  }
  // Records that the string with hash h is at position pos (it must not be present yet).
  void insert(uint64_t h, int64_t pos) {
    if ((size_ + 1) * 2 > slots_.size()) grow();
    place(h, pos);
    ++size_;
  }

 private:
  struct Slot {
    uint64_t hash = 0;
    int64_t pos = -1;
  };
  void place(uint64_t h, int64_t pos) {
    size_t j = h & mask_;
    while (slots_[j].pos >= 0) j = (j + 1) & mask_;
    slots_[j] = {h, pos};
  }
  void grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(old.empty() ? 1024 : old.size() * 2, Slot{});
    mask_ = slots_.size() - 1;
    for (const auto& sl : old)
      if (sl.pos >= 0) place(sl.hash, sl.pos);
  }
  std::vector<Slot> slots_;
  size_t mask_ = 0, size_ = 0;
};

}  // namespace detail

enum class TieBreak { lexicographic, first_seen };

struct VocabOptions {
  size_t min_freq = 1;
  size_t max_size = 0;                    // regular tokens kept at most; 0 = no limit
  std::string pad_token = "<pad>";        // id 0; empty = none
  std::string unk_token = "<unk>";        // id 1 (0 without pad); empty = none (unknown tokens are errors)
  std::vector<std::string> extra_specials;  // after pad and unk, e.g. "<cls>"
  TieBreak ties = TieBreak::lexicographic;
};

// Token frequencies, with the order of first occurrence.
class TokenCounter {
 public:
  void add(std::string_view token) {
    TXTCLS_CHECK(!token.empty(), "vocab: empty token");
    const uint64_t h = detail::token_hash(token);
    int64_t at = index_.find(token, h, key());
    if (at < 0) {
      index_.insert(h, static_cast<int64_t>(entries_.size()));
      entries_.push_back({std::string(token), 1});
    } else {
      ++entries_[static_cast<size_t>(at)].count;
    }
    ++total_;
  }
  void add(const std::vector<std::string>& tokens) {
    for (const auto& t : tokens) add(t);
  }
  uint64_t count(std::string_view token) const {
    int64_t at = index_.find(token, detail::token_hash(token), key());
    return at < 0 ? 0 : entries_[static_cast<size_t>(at)].count;
  }
  size_t distinct() const { return entries_.size(); }
  uint64_t total() const { return total_; }

  struct Entry {
    std::string token;
    uint64_t count;
  };
  const std::vector<Entry>& entries() const { return entries_; }  // in first-seen order

 private:
  struct Key {
    const TokenCounter* c;
    std::string_view operator()(size_t i) const { return c->entries_[i].token; }
  };
  Key key() const { return Key{this}; }
  std::vector<Entry> entries_;
  detail::TokenIndex index_;
  uint64_t total_ = 0;
};

class Vocab {
 public:
  Vocab() = default;

  // From an explicit token list (id = position). pad/unk name the special tokens to look up;
  // a name not in the list means the vocabulary has no such special.
  explicit Vocab(std::vector<std::string> tokens, std::string pad_token = "<pad>", std::string unk_token = "<unk>")
      : pad_token_(std::move(pad_token)), unk_token_(std::move(unk_token)) {
    for (auto& t : tokens) push(std::move(t), "vocab");
    resolve_specials();
  }

  static Vocab build(const TokenCounter& counter, const VocabOptions& opt = {}) {
    Vocab v;
    v.pad_token_ = opt.pad_token;
    v.unk_token_ = opt.unk_token;
    for (const auto& s : {opt.pad_token, opt.unk_token})
      if (!s.empty()) v.push(s, "vocab: special");
    for (const auto& s : opt.extra_specials) v.push(s, "vocab: special");
    const size_t nspecial = v.size();
    std::vector<const TokenCounter::Entry*> kept;
    for (const auto& e : counter.entries())
      if (e.count >= opt.min_freq && !v.contains(e.token)) kept.push_back(&e);
    auto by_freq = [&](const TokenCounter::Entry* a, const TokenCounter::Entry* b) {
      if (a->count != b->count) return a->count > b->count;
      return opt.ties == TieBreak::lexicographic ? a->token < b->token : a < b;  // entries are in first-seen order
    };
    std::sort(kept.begin(), kept.end(), by_freq);
    if (opt.max_size > 0 && kept.size() > opt.max_size) kept.resize(opt.max_size);
    v.tokens_.reserve(nspecial + kept.size());
    for (const auto* e : kept) v.push(e->token, "vocab");
    v.resolve_specials();
    return v;
  }

  // One token per line. Empty lines and duplicates are errors naming file:line.
  static Vocab load(const std::string& path, std::string pad_token = "<pad>", std::string unk_token = "<unk>") {
    Vocab v;
    v.pad_token_ = std::move(pad_token);
    v.unk_token_ = std::move(unk_token);
    LineReader in(path);
    std::string_view line;
    while (in.next(line)) {
      TXTCLS_CHECK(!line.empty(), in.here(), ": empty line in the vocabulary (line i holds the token of id i-1)");
      TXTCLS_CHECK(invalid_utf8_at(line) == kValidUtf8, in.here(), ": invalid UTF-8 in the vocabulary");
      TXTCLS_CHECK(!v.contains(line), in.here(), ": token '", line, "' appears twice (first as id ",
                   *v.find(line), ")");
      v.push(std::string(line), in.here());
    }
    TXTCLS_CHECK(v.size() > 0, path, ": empty vocabulary");
    v.resolve_specials();
    return v;
  }

  // Written through a temporary file and a rename.
  void save(const std::string& path) const {
    std::string out;
    for (const auto& t : tokens_) {
      TXTCLS_CHECK(t.find('\n') == std::string::npos && t.find('\r') == std::string::npos, path,
                   ": token with a line break cannot be saved one per line");
      out += t;
      out += '\n';
    }
    write_file_atomic(path, out);
  }

  size_t size() const { return tokens_.size(); }
  const std::vector<std::string>& tokens() const { return tokens_; }
  const std::string& token(int64_t id) const {
    TXTCLS_CHECK(id >= 0 && id < static_cast<int64_t>(tokens_.size()), "vocab: id ", id, " out of range for ",
                 tokens_.size(), " tokens");
    return tokens_[static_cast<size_t>(id)];
  }
  std::optional<int64_t> find(std::string_view t) const {
    int64_t at = lookup(t);
    if (at < 0) return std::nullopt;
    return at;
  }
  bool contains(std::string_view t) const { return lookup(t) >= 0; }
  // The token's id, or unk_id() for an unknown token (an error when there is no <unk>).
  int64_t id(std::string_view t) const {
    int64_t at = lookup(t);
    if (at >= 0) return at;
    TXTCLS_CHECK(unk_id_ >= 0, "vocab: unknown token '", t, "' and the vocabulary has no unknown token");
    return unk_id_;
  }
  bool has_pad() const { return pad_id_ >= 0; }
  bool has_unk() const { return unk_id_ >= 0; }
  int64_t pad_id() const {
    TXTCLS_CHECK(pad_id_ >= 0, "vocab: no padding token '", pad_token_, "'");
    return pad_id_;
  }
  int64_t unk_id() const {
    TXTCLS_CHECK(unk_id_ >= 0, "vocab: no unknown token '", unk_token_, "'");
    return unk_id_;
  }
  const std::string& pad_token() const { return pad_token_; }
  const std::string& unk_token() const { return unk_token_; }

  std::vector<int64_t> encode(const std::vector<std::string>& tokens) const {
    std::vector<int64_t> ids;
    ids.reserve(tokens.size());
    for (const auto& t : tokens) ids.push_back(id(t));
    return ids;
  }
  std::vector<std::string> decode(const std::vector<int64_t>& ids) const {
    std::vector<std::string> out;
    out.reserve(ids.size());
    for (auto i : ids) out.push_back(token(i));
    return out;
  }
  bool operator==(const Vocab& o) const {
    return tokens_ == o.tokens_ && pad_id_ == o.pad_id_ && unk_id_ == o.unk_id_;
  }

 private:
  void push(std::string t, const std::string& place) {
    TXTCLS_CHECK(!t.empty(), place, ": empty token");
    const uint64_t h = detail::token_hash(t);
    TXTCLS_CHECK(index_.find(t, h, key()) < 0, place, ": token '", t, "' appears twice");
    index_.insert(h, static_cast<int64_t>(tokens_.size()));
    tokens_.push_back(std::move(t));
  }
  void resolve_specials() {
    pad_id_ = pad_token_.empty() ? -1 : find(pad_token_).value_or(-1);
    unk_id_ = unk_token_.empty() ? -1 : find(unk_token_).value_or(-1);
  }

  struct Key {
    const Vocab* v;
    std::string_view operator()(size_t i) const { return v->tokens_[i]; }
  };
  Key key() const { return Key{this}; }
  int64_t lookup(std::string_view t) const { return index_.find(t, detail::token_hash(t), key()); }

  std::vector<std::string> tokens_;
  detail::TokenIndex index_;
  std::string pad_token_ = "<pad>", unk_token_ = "<unk>";
  int64_t pad_id_ = -1, unk_id_ = -1;
};

}  // namespace txtcls::data
