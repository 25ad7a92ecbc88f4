// Vocabulary (build rules, file round trip, errors), pretrained vectors, encoding with truncation
// and the empty-text policy, batches and the BatchIterator's orders and resumability.
#include <map>
#include <numeric>
#include <set>

#include "test_util.hpp"
#include "txtcls/data/batching.hpp"
#include "txtcls/data/reader.hpp"
#include "txtcls/data/vectors.hpp"

// In a namespace of its own: test files are compiled several to a unit (TXTCLS_UNITY_BUILD).
namespace test_data_vocab_batching {

using namespace txtcls;
using namespace txtcls::data;
using Catch::Contains;
using Strings = std::vector<std::string>;

namespace {

std::string fx(const std::string& name) { return std::string(TXTCLS_SOURCE_DIR) + "/tests/fixtures/data/" + name; }

std::filesystem::path temp_dir(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() / ("txtcls_test_" + name);
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

TokenCounter count(const Strings& tokens) {
  TokenCounter c;
  c.add(tokens);
  return c;
}

Tokenizer whitespace() {
  TokenizerOptions o;
  o.style = TokenizerStyle::whitespace;
  return Tokenizer(o);
}

// n examples whose lengths spread over 1..23 tokens, labels alternating.
std::vector<Example> spread_examples(size_t n) {
  std::vector<Example> ex;
  for (size_t i = 0; i < n; ++i) {
    const size_t len = 1 + (i * 37) % 23;
    std::string text;
    for (size_t k = 0; k < len; ++k) {
      text += 'w';
      text += std::to_string((i + k) % 7);
      text += ' ';
    }
    ex.push_back({i % 2 ? "b" : "a", text, "mem:" + std::to_string(i + 1)});
  }
  return ex;
}

std::vector<size_t> sorted_concat(const std::vector<PlannedBatch>& plan) {
  std::vector<size_t> all;
  for (const auto& b : plan) all.insert(all.end(), b.indices.begin(), b.indices.end());
  std::sort(all.begin(), all.end());
  return all;
}

std::vector<std::vector<size_t>> indices_of(const std::vector<PlannedBatch>& plan) {
  std::vector<std::vector<size_t>> out;
  for (const auto& b : plan) out.push_back(b.indices);
  return out;
}

}  // namespace

TEST_CASE("vocab: specials first, then frequency, ties by token or first occurrence", "[data][vocab]") {
  auto c = count({"z", "y", "z", "y", "x", "w", "q", "q", "q"});
  REQUIRE(c.count("z") == 2);
  REQUIRE(c.count("nope") == 0);
  REQUIRE(c.distinct() == 5);
  REQUIRE(c.total() == 9);
  auto v = Vocab::build(c);
  REQUIRE(v.tokens() == Strings{"<pad>", "<unk>", "q", "y", "z", "w", "x"});
  REQUIRE(v.pad_id() == 0);
  REQUIRE(v.unk_id() == 1);
  VocabOptions first;
  first.ties = TieBreak::first_seen;
  REQUIRE(Vocab::build(c, first).tokens() == Strings{"<pad>", "<unk>", "q", "z", "y", "x", "w"});
  VocabOptions o;
  o.min_freq = 2;
  REQUIRE(Vocab::build(c, o).tokens() == Strings{"<pad>", "<unk>", "q", "y", "z"});
  o.max_size = 2;  // the specials do not count
  REQUIRE(Vocab::build(c, o).tokens() == Strings{"<pad>", "<unk>", "q", "y"});
  VocabOptions extra;
  extra.extra_specials = {"<cls>"};
  extra.pad_token = "";
  auto e = Vocab::build(c, extra);
  REQUIRE(e.tokens().at(0) == "<unk>");
  REQUIRE(e.tokens().at(1) == "<cls>");
  REQUIRE(e.unk_id() == 0);
  REQUIRE_FALSE(e.has_pad());
  REQUIRE_THROWS_WITH(e.pad_id(), Contains("no padding token"));
  // A corpus token equal to a special is not added twice.
  REQUIRE(Vocab::build(count({"<unk>", "a"})).tokens() == Strings{"<pad>", "<unk>", "a"});
  REQUIRE_THROWS_WITH(count({""}), Contains("vocab: empty token"));
}

TEST_CASE("vocab: encode, decode, unknown tokens", "[data][vocab]") {
  auto v = Vocab::build(count({"good", "film", "good"}));
  REQUIRE(v.encode({"good", "unseen", "film"}) == std::vector<int64_t>{2, 1, 3});
  REQUIRE(v.decode({2, 1, 3}) == Strings{"good", "<unk>", "film"});
  REQUIRE(v.find("film") == 3);
  REQUIRE_FALSE(v.find("unseen").has_value());
  REQUIRE_THROWS_WITH(v.token(4), Contains("id 4 out of range for 4 tokens"));
  Vocab no_unk(Strings{"<pad>", "a"});
  REQUIRE(no_unk.pad_id() == 0);
  REQUIRE_FALSE(no_unk.has_unk());
  REQUIRE_THROWS_WITH(no_unk.id("b"), Contains("unknown token 'b' and the vocabulary has no unknown token"));
  REQUIRE_THROWS_WITH(Vocab(Strings{"a", "b", "a"}), Contains("token 'a' appears twice"));
  // Many tokens: every one found at its id (exercises the index's growth).
  Strings many;
  // (std::string("t") +, not "t" +: g++ 12 warns falsely (-Wrestrict) on the latter when inlined)
  for (int i = 0; i < 5000; ++i) many.push_back(std::string("t") + std::to_string(i));
  Vocab big(many);
  for (int i = 0; i < 5000; i += 7) REQUIRE(big.id(std::string("t") + std::to_string(i)) == i);
}

TEST_CASE("vocab: save and load round trip, load errors name file and line", "[data][vocab]") {
  auto dir = temp_dir("vocab");
  auto v = Vocab::build(count({"caf\xc3\xa9", "b", "b", "a"}));
  const std::string path = (dir / "vocab.txt").string();
  v.save(path);
  REQUIRE_FALSE(std::filesystem::exists(path + ".tmp"));
  REQUIRE(read_file(path) == "<pad>\n<unk>\nb\na\ncaf\xc3\xa9\n");
  auto back = Vocab::load(path);
  REQUIRE(back == v);
  REQUIRE(back.unk_id() == 1);
  v.save(path);  // replacing an existing file
  REQUIRE(Vocab::load(path) == v);
  std::filesystem::remove_all(dir);

  REQUIRE_THROWS_WITH(Vocab::load(fx("vocab_dup.txt")), Contains("vocab_dup.txt:5: token 'the' appears twice (first as id 2)"));
  REQUIRE_THROWS_WITH(Vocab::load(fx("vocab_empty_line.txt")), Contains("vocab_empty_line.txt:4: empty line"));
  REQUIRE_THROWS_WITH(Vocab(Strings{"a\nb"}).save((std::filesystem::temp_directory_path() / "x.txt").string()),
                      Contains("line break"));
}

TEST_CASE("vectors: GloVe text aligned to a vocabulary, random rows for the rest", "[data][vectors]") {
  Vocab v(Strings{"<pad>", "<unk>", "the", "good", "film", "bad"});
  Generator g(3);
  auto pv = load_vectors<double>(fx("glove.txt"), v, g);
  REQUIRE(pv.dim == 3);
  REQUIRE(pv.matrix.shape() == Shape{6, 3});
  REQUIRE(pv.found == 3);
  REQUIRE(pv.file_words == 5);
  REQUIRE(pv.duplicates == 1);
  REQUIRE(pv.in_file == std::vector<bool>{false, false, true, true, true, false});
  auto m = pv.matrix;
  tt::require_close(m.select(0, 2), {0.1, 0.2, 0.3});
  tt::require_close(m.select(0, 3), {-1, 0.25, 3});  // first copy wins; "+3" accepted
  tt::require_close(m.select(0, 4), {1, 1, 1});
  tt::require_close(m.select(0, 0), {0, 0, 0});  // <pad>
  for (int64_t r : {1, 5})
    for (int64_t k = 0; k < 3; ++k) {
      const double x = m.at({r, k});
      REQUIRE((x != 0.0 && std::abs(x) <= 0.25));
    }
  // Same generator state, same matrix; the draw advanced the generator by V*D.
  REQUIRE(g.offset() == 18);
  Generator g2(3);
  REQUIRE(load_vectors<double>(fx("glove.txt"), v, g2).matrix.to_vector() == m.to_vector());
  REQUIRE(load_vectors<double>(fx("glove.txt"), v, g).matrix.to_vector() != m.to_vector());
  REQUIRE_THAT(pv.summary(), Contains("3 of 6 vocabulary words found among 5 vectors of dimension 3"));
  // float and a gzip file.
  Generator g3(1);
  auto f = load_vectors(fx("glove_small.txt.gz"), v, g3);
  REQUIRE(f.found == 2);
  REQUIRE(f.matrix.at({3, 1}) == 0.25f);
}

TEST_CASE("vectors: word2vec header, malformed lines name file and line", "[data][vectors]") {
  Vocab v(Strings{"<pad>", "<unk>", "good", "bad"});
  Generator g(0);
  auto w = load_vectors<double>(fx("w2v.txt"), v, g);
  REQUIRE(w.dim == 2);
  REQUIRE(w.file_words == 3);
  REQUIRE(w.found == 2);
  tt::require_close(w.matrix.select(0, 3), {1, 2});
  REQUIRE_THROWS_WITH(load_vectors<double>(fx("w2v_short.txt"), v, g), Contains("header announces 3 vectors, the file has 2"));
  REQUIRE_THROWS_WITH(load_vectors<double>(fx("vectors_bad_cols.txt"), v, g),
                      Contains("vectors_bad_cols.txt:2: expected 4 fields (a word and 3 numbers), found 3"));
  REQUIRE_THROWS_WITH(load_vectors<double>(fx("vectors_bad_num.txt"), v, g),
                      Contains("vectors_bad_num.txt:2: value 2 ('abc') is not a finite number"));
  REQUIRE_THROWS_WITH(load_vectors<double>(fx("vectors_nan.txt"), v, g), Contains("vectors_nan.txt:2: value 2 ('nan')"));
  Vocab sv(Strings{"<pad>", "<unk>", ". . ."});
  REQUIRE_THROWS_WITH(load_vectors<double>(fx("vectors_spaces.txt"), sv, g), Contains("vectors_spaces.txt:2: expected 3 fields"));
  VectorsOptions spaced;
  spaced.words_with_spaces = true;
  auto s = load_vectors<double>(fx("vectors_spaces.txt"), sv, g, spaced);
  REQUIRE(s.found == 1);
  tt::require_close(s.matrix.select(0, 2), {0.5, 0.5});
}

TEST_CASE("encode: truncation, unknown tokens, the empty-text policy", "[data][batching]") {
  auto ex = spread_examples(50);
  auto tok = whitespace();
  auto vocab = build_vocab(ex, tok);
  REQUIRE(vocab.size() == 2 + 7);
  auto labels = LabelSet::from_examples(ex);
  EncodeOptions o;
  o.max_len = 10;
  auto d = encode_examples(ex, tok, vocab, labels, o);
  REQUIRE(d.size() == 50);
  size_t longer = 0;
  for (size_t i = 0; i < ex.size(); ++i) {
    auto full = vocab.encode(tok(ex[i].text));
    longer += full.size() > 10;
    const size_t keep = std::min<size_t>(full.size(), 10);
    REQUIRE(d.ids[i] == std::vector<int64_t>(full.begin(), full.begin() + static_cast<long>(keep)));
    REQUIRE(d.labels[i] == static_cast<int64_t>(i % 2));
  }
  REQUIRE(longer > 0);
  REQUIRE(d.report.truncated == longer);
  REQUIRE(d.report.unknown == 0);

  std::vector<Example> odd = {{"a", "w1 zzz", "f:1"}, {"b", "", "f:2"}, {"a", "  \t", "f:3"}, {"a", "w2", "f:4"}};
  auto e = encode_examples(odd, tok, vocab, labels);
  REQUIRE(e.size() == 4);
  REQUIRE(e.ids[0] == std::vector<int64_t>{vocab.id("w1"), 1});
  REQUIRE(e.ids[1] == std::vector<int64_t>{1});  // [<unk>]
  REQUIRE(e.report.empty_as_unk == 2);
  REQUIRE(e.report.unknown == 3);
  REQUIRE_THAT(e.report.notes.at(0), Contains("f:2: no tokens, encoded as <unk>"));
  EncodeOptions skip;
  skip.empty = EmptyText::skip;
  auto s = encode_examples(odd, tok, vocab, labels, skip);
  REQUIRE(s.size() == 2);
  REQUIRE(s.example_index == std::vector<size_t>{0, 3});
  REQUIRE(s.report.empty_skipped == 2);
  EncodeOptions err;
  err.empty = EmptyText::error;
  REQUIRE_THROWS_WITH(encode_examples(odd, tok, vocab, labels, err), Contains("f:2: the text has no tokens"));
  std::vector<Example> bad_label = {{"c", "w1", "test.tsv:7"}};
  REQUIRE_THROWS_WITH(encode_examples(bad_label, tok, vocab, labels), Contains("test.tsv:7: label 'c' is not one of"));
  auto t = encode_texts({"w3 w4", "q"}, tok, vocab);
  REQUIRE(t.labels == std::vector<int64_t>{-1, -1});
  REQUIRE(t.ids[1] == std::vector<int64_t>{1});
}

TEST_CASE("make_batch: padding, lengths, labels, mask", "[data][batching]") {
  EncodedDataset d;
  d.pad_id = 0;
  d.ids = {{5, 6, 7}, {8}, {9, 10}};
  d.labels = {2, 0, 1};
  auto b = make_batch(d, {1, 0, 2});
  REQUIRE(b.ids.shape() == Shape{3, 3});
  REQUIRE(b.ids.to_vector() == std::vector<int64_t>{8, 0, 0, 5, 6, 7, 9, 10, 0});
  REQUIRE(b.lengths.to_vector() == std::vector<int64_t>{1, 3, 2});
  REQUIRE(b.labels.to_vector() == std::vector<int64_t>{0, 2, 1});
  REQUIRE(b.mask().to_vector() == std::vector<uint8_t>{1, 0, 0, 1, 1, 1, 1, 1, 0});
  REQUIRE(b.size() == 3);
  REQUIRE_THROWS_WITH(make_batch(d, {3}), Contains("index 3 out of range for 3 sequences"));
}

TEST_CASE("BatchIterator: every example once per epoch, seeded and reproducible", "[data][batching]") {
  auto ex = spread_examples(103);
  auto tok = whitespace();
  auto vocab = build_vocab(ex, tok);
  auto d = encode_examples(ex, tok, vocab, LabelSet::from_examples(ex));
  std::vector<size_t> all(103);
  std::iota(all.begin(), all.end(), size_t(0));
  for (auto order : {BatchOrder::in_order, BatchOrder::by_length, BatchOrder::shuffled, BatchOrder::bucketed}) {
    BatchOptions o;
    o.batch_size = 4;
    o.bucket_batches = 3;
    o.order = order;
    o.seed = 11;
    BatchIterator it(d, o);
    REQUIRE(it.batches_per_epoch() == 26);
    for (uint64_t epoch : {0, 1, 2}) {
      auto plan = it.plan(epoch);
      REQUIRE(plan.size() == 26);
      REQUIRE(sorted_concat(plan) == all);
      for (const auto& b : plan) {
        REQUIRE(b.indices.size() <= 4);
        for (size_t k = 1; k < b.indices.size(); ++k) REQUIRE(d.length(b.indices[k - 1]) >= d.length(b.indices[k]));
      }
    }
    const bool random = order == BatchOrder::shuffled || order == BatchOrder::bucketed;
    BatchOptions o2 = o;
    o2.seed = 12;
    REQUIRE((indices_of(it.plan(0)) != indices_of(it.plan(1))) == random);
    REQUIRE((indices_of(BatchIterator(d, o2).plan(0)) != indices_of(it.plan(0))) == random);
    REQUIRE(indices_of(BatchIterator(d, o).plan(1)) == indices_of(it.plan(1)));
  }
}

TEST_CASE("BatchIterator: in-order, by-length, drop_last", "[data][batching]") {
  auto ex = spread_examples(10);
  auto tok = whitespace();
  auto vocab = build_vocab(ex, tok);
  auto d = encode_examples(ex, tok, vocab, LabelSet::from_examples(ex));
  BatchOptions o;
  o.batch_size = 4;
  o.order = BatchOrder::in_order;
  o.sort_within_batch = false;
  REQUIRE(indices_of(BatchIterator(d, o).plan(0)) ==
          std::vector<std::vector<size_t>>{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9}});
  o.drop_last = true;
  REQUIRE(indices_of(BatchIterator(d, o).plan(0)) == std::vector<std::vector<size_t>>{{0, 1, 2, 3}, {4, 5, 6, 7}});
  REQUIRE(BatchIterator(d, o).batches_per_epoch() == 2);
  o.order = BatchOrder::by_length;
  o.drop_last = false;
  std::vector<int64_t> lengths;
  for (const auto& b : BatchIterator(d, o).plan(0))
    for (size_t i : b.indices) lengths.push_back(d.length(i));
  REQUIRE(std::is_sorted(lengths.rbegin(), lengths.rend()));
  o.batch_size = 0;
  REQUIRE_THROWS_WITH(BatchIterator(d, o), Contains("batch_size 0 must be positive"));
}

TEST_CASE("BatchIterator: bucketing sorts by length within each pool, then mixes the batches", "[data][batching]") {
  auto ex = spread_examples(103);
  auto tok = whitespace();
  auto vocab = build_vocab(ex, tok);
  auto d = encode_examples(ex, tok, vocab, LabelSet::from_examples(ex));
  BatchOptions o;
  o.batch_size = 4;
  o.bucket_batches = 3;
  o.seed = 5;
  BatchIterator it(d, o);
  auto plan = it.plan(0);
  std::map<size_t, std::vector<std::pair<int64_t, int64_t>>> pools;  // pool -> (min, max) length per batch
  std::vector<size_t> pool_sequence;
  for (const auto& b : plan) {
    int64_t lo = INT64_MAX, hi = 0;
    for (size_t i : b.indices) lo = std::min(lo, d.length(i)), hi = std::max(hi, d.length(i));
    pools[b.pool].push_back({lo, hi});
    pool_sequence.push_back(b.pool);
  }
  REQUIRE(pools.size() == 9);  // 103 examples in pools of 12
  for (auto& [p, ranges] : pools) {
    INFO("pool " << p);
    REQUIRE(ranges.size() == (p < 8 ? 3u : 2u));
    std::sort(ranges.begin(), ranges.end());
    for (size_t k = 1; k < ranges.size(); ++k) REQUIRE(ranges[k - 1].second <= ranges[k].first);
  }
  REQUIRE_FALSE(std::is_sorted(pool_sequence.begin(), pool_sequence.end()));
  // Less padding than a plain shuffle.
  auto padded = [&](const std::vector<PlannedBatch>& p) {
    int64_t cells = 0;
    for (const auto& b : p) {
      int64_t hi = 0;
      for (size_t i : b.indices) hi = std::max(hi, d.length(i));
      cells += hi * static_cast<int64_t>(b.indices.size());
    }
    return cells;
  };
  BatchOptions sh = o;
  sh.order = BatchOrder::shuffled;
  REQUIRE(padded(plan) < padded(BatchIterator(d, sh).plan(0)));
}

TEST_CASE("BatchIterator: next() walks epochs, a restored state continues identically", "[data][batching]") {
  auto ex = spread_examples(37);
  auto tok = whitespace();
  auto vocab = build_vocab(ex, tok);
  auto d = encode_examples(ex, tok, vocab, LabelSet::from_examples(ex));
  BatchOptions o;
  o.batch_size = 5;
  o.bucket_batches = 2;
  o.seed = 99;
  BatchIterator it(d, o);
  Batch b;
  std::set<size_t> seen;
  size_t n = 0;
  auto expect = it.plan(0);
  while (it.next(b)) {
    REQUIRE(b.indices == expect[n].indices);
    REQUIRE(b.ids.size(1) == *std::max_element(b.lengths.data(), b.lengths.data() + b.size()));
    seen.insert(b.indices.begin(), b.indices.end());
    ++n;
  }
  REQUIRE(n == 8);
  REQUIRE(seen.size() == 37);
  REQUIRE(it.state() == BatchIteratorState{99, 1, 0});
  for (int k = 0; k < 3; ++k) REQUIRE(it.next(b));
  const BatchIteratorState saved = it.state();
  REQUIRE(saved == BatchIteratorState{99, 1, 3});
  std::vector<Batch> rest;
  while (it.next(b)) rest.push_back(b);
  REQUIRE(it.next(b));  // epoch 2 begins
  const Batch first_of_epoch2 = b;

  BatchIterator resumed(d, o);
  resumed.restore(saved);
  for (const auto& want : rest) {
    REQUIRE(resumed.next(b));
    REQUIRE(b.indices == want.indices);
    REQUIRE(b.ids.to_vector() == want.ids.to_vector());
    REQUIRE(b.labels.to_vector() == want.labels.to_vector());
  }
  REQUIRE_FALSE(resumed.next(b));
  REQUIRE(resumed.next(b));
  REQUIRE(b.indices == first_of_epoch2.indices);
}

TEST_CASE("real data: TREC through the whole pipeline", "[data][batching]") {
  const std::string root = tt::shared_data_dir();
  if (root.empty() || !std::filesystem::exists(root + "/trec")) {
    WARN("skipped: ../shared/data/trec not found (set TXTCLS_SHARED_DATA)");
    return;
  }
  auto s = read_dataset(root + "/trec");
  Tokenizer tok;
  auto vocab = build_vocab(s.train, tok);
  LabelSet labels(s.labels);
  auto train = encode_examples(s.train, tok, vocab, labels);
  auto test = encode_examples(s.test, tok, vocab, labels);
  REQUIRE(train.size() == 5452);
  REQUIRE(test.size() == 500);
  REQUIRE(train.report.unknown == 0);
  REQUIRE(test.report.unknown > 0);
  REQUIRE(train.report.empty_as_unk == 0);
  BatchOptions o;
  o.batch_size = 50;
  BatchIterator it(train, o);
  Batch b;
  size_t rows = 0, batches = 0;
  while (it.next(b)) rows += static_cast<size_t>(b.size()), ++batches;
  REQUIRE(rows == 5452);
  REQUIRE(batches == 110);
}

}  // namespace test_data_vocab_batching
