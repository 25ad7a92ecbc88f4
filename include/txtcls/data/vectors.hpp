#pragma once
// Pretrained word vectors in the text formats of GloVe (`word v1 ... vD` per line) and word2vec
// (the same, after a "count dim" header line), plain or gzip. The result is a [V, D] matrix in the
// order of a Vocab: rows of words found in the file hold their vectors, the others are drawn from
// uniform(-a, a) (a = 0.25 as in Kim 2014, "so that the unknown vectors have approximately the same
// variance as the pretrained ones"), and the padding row is zero.
//
// Every line is validated, whether its word is in the vocabulary or not: a wrong number of
// fields or a value that is not a finite number is an error naming file:line. A word listed twice
// keeps its first vector (counted). Words are compared byte for byte and may be any bytes (binary
// word2vec dumps converted to text often hold invalid UTF-8 in words nobody will look up).
#include <charconv>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "txtcls/data/text_file.hpp"
#include "txtcls/data/vocab.hpp"
#include "txtcls/tensor/creation.hpp"
#include "txtcls/tensor/views.hpp"

namespace txtcls::data {

struct VectorsOptions {
  double unknown_range = 0.25;     // words not in the file: uniform(-a, a)
  bool zero_pad = true;            // the <pad> row is zero (whatever the file says)
  bool words_with_spaces = false;  // GloVe 840B has a few words with spaces: take the last D fields as the vector
};

template <class T = float>
struct PretrainedVectors {
  Tensor<T> matrix;        // [V, D]
  int64_t dim = 0;
  size_t found = 0;        // vocabulary words that the file has
  size_t file_words = 0;   // vectors in the file
  size_t duplicates = 0;   // later copies of a word, ignored
  std::vector<bool> in_file;  // per vocabulary id
  std::string summary() const {
    return std::to_string(found) + " of " + std::to_string(in_file.size()) + " vocabulary words found among " +
           std::to_string(file_words) + " vectors of dimension " + std::to_string(dim);
  }
};

namespace detail {

// Splits on spaces and tabs, dropping empty fields (trailing spaces are common in GloVe files).
inline void split_fields(std::string_view line, std::vector<std::string_view>& out) {
  out.clear();
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    size_t b = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > b) out.push_back(line.substr(b, i - b));
  }
}

inline bool parse_count(std::string_view s, int64_t& v) {
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  return r.ec == std::errc() && r.ptr == s.data() + s.size() && v >= 0;
}

}  // namespace detail

template <class T = float>
PretrainedVectors<T> load_vectors(const std::string& path, const Vocab& vocab, Generator& gen,
                                  const VectorsOptions& opt = {}) {
  LineReader in(path);
  std::vector<std::string_view> f;
  std::string_view line;
  PretrainedVectors<T> out;
  int64_t header_count = -1, D = 0;
  std::vector<T> rows;  // found vectors, appended
  std::vector<int64_t> row_of(vocab.size(), -1);
  std::vector<double> vals;

  while (in.next(line)) {
    detail::split_fields(line, f);
    if (f.empty()) continue;  // blank lines carry nothing
    if (D == 0) {
      int64_t a, b;
      if (f.size() == 2 && detail::parse_count(f[0], a) && detail::parse_count(f[1], b)) {
        TXTCLS_CHECK(b > 0, in.here(), ": header announces dimension 0");
        header_count = a;
        D = b;
        continue;
      }
      TXTCLS_CHECK(f.size() >= 2, in.here(), ": expected a word followed by its vector, found ", f.size(), " field");
      D = static_cast<int64_t>(f.size()) - 1;
    }
    const size_t want = static_cast<size_t>(D) + 1;
    TXTCLS_CHECK(f.size() == want || (opt.words_with_spaces && f.size() > want), in.here(), ": expected ", want,
                 " fields (a word and ", D, " numbers), found ", f.size());
    const size_t first_num = f.size() - static_cast<size_t>(D);
    vals.resize(static_cast<size_t>(D));
    for (size_t k = 0; k < static_cast<size_t>(D); ++k) {
      std::string_view s = f[first_num + k];
      const char* b = s.data();
      if (*b == '+') ++b;  // from_chars rejects a leading '+', which some writers emit
      auto r = std::from_chars(b, s.data() + s.size(), vals[k]);
      TXTCLS_CHECK(r.ec == std::errc() && r.ptr == s.data() + s.size() && std::isfinite(vals[k]), in.here(),
                   ": value ", k + 1, " ('", s, "') is not a finite number");
    }
    // The word: the first field, or everything before the numbers when words may hold spaces.
    std::string_view word = f[0];
    if (first_num > 1) word = std::string_view(f[0].data(), static_cast<size_t>(f[first_num - 1].data() +
                                                                                 f[first_num - 1].size() - f[0].data()));
    ++out.file_words;
    auto id = vocab.find(word);
    if (!id) continue;
    if (row_of[static_cast<size_t>(*id)] >= 0) {
      ++out.duplicates;
      continue;
    }
    row_of[static_cast<size_t>(*id)] = static_cast<int64_t>(rows.size() / static_cast<size_t>(D));
    for (double v : vals) rows.push_back(static_cast<T>(v));
  }
  TXTCLS_CHECK(D > 0, path, ": no vectors in the file");
  TXTCLS_CHECK(header_count < 0 || header_count == static_cast<int64_t>(out.file_words), path, ": the header announces ",
               header_count, " vectors, the file has ", out.file_words);

  const int64_t V = static_cast<int64_t>(vocab.size());
  out.dim = D;
  out.matrix = rand_uniform<T>({V, D}, gen, -opt.unknown_range, opt.unknown_range);
  out.in_file.assign(vocab.size(), false);
  T* m = out.matrix.data();
  for (int64_t i = 0; i < V; ++i) {
    int64_t r = row_of[static_cast<size_t>(i)];
    if (r < 0) continue;
    std::copy(rows.begin() + r * D, rows.begin() + (r + 1) * D, m + i * D);
    out.in_file[static_cast<size_t>(i)] = true;
    ++out.found;
  }
  if (opt.zero_pad && vocab.has_pad()) std::fill(m + vocab.pad_id() * D, m + (vocab.pad_id() + 1) * D, T(0));
  return out;
}

}  // namespace txtcls::data
