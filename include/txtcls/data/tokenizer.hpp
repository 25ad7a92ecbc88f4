#pragma once
// Word tokenizers of the text-classification literature, re-implemented as one left-to-right scan
// over the bytes (no regex, no per-character allocation), token for token equal to the Python
// originals:
//
// hedwig (default) — hedwig's `clean_string` (datasets/reuters.py), used by its reg_lstm, and Kim's
//   `clean_str_sst`, which is the same function:
//     re.sub(r"[^A-Za-z0-9(),!?\'`]", " ", s)   every other character (incl. all non-ASCII) -> space
//     re.sub(r"\s{2,}", " ", s); s.lower().strip().split()
//   So a token is a maximal run of the 70 kept characters, lowercased. Punctuation is NOT split
//   off: "great," and "(the" are tokens; "don't" stays one token; "U.S." becomes "u" and "s".
//
// kim — Kim (2014)'s `clean_str` (CNN_sentence/process_data.py): the same filter, then, applied to
//   the filtered string in this order and case-sensitively (before lowercasing):
//     "'s" "'ve" "n't" "'re" "'d" "'ll"  -> a space inserted before each occurrence, anywhere in a
//                                            word ("don't" -> "do n't", "it's" -> "it 's",
//                                            "can't" -> "ca n't", but "DON'T" -> "don't")
//     "," "!" "(" ")" "?"                -> surrounded by spaces (own tokens)
//   then whitespace collapsed, stripped, lowercased unless TREC mode (lowercase = false). The
//   apostrophe and backquote otherwise stay inside words ("'hello'" is one token). In the Python
//   source the replacements for ( ) ? are written " \( ", " \) ", " \? ", and Python keeps the
//   backslash of an unknown escape in a replacement template, so the original emits the tokens
//   "\(", "\)", "\?". kim_backslash_quirk = true reproduces that (to reuse vocabularies or
//   vectors made by that script); by default the tokens are "(", ")", "?".
//
// whitespace — for corpora tokenized at the source (SST, MR): split on ASCII whitespace, keep
//   every other byte, lowercase ASCII letters if asked.
//
// strip_html_breaks replaces each literal "<br />" with a space first, as hedwig's IMDB variant
// (datasets/imdb_torchtext.py) does; without it the hedwig filter turns "<br />" into a "br" token.
#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "txtcls/core/error.hpp"

namespace txtcls::data {

enum class TokenizerStyle { hedwig, kim, whitespace };

inline std::string_view tokenizer_style_name(TokenizerStyle s) {
  switch (s) {
    case TokenizerStyle::hedwig: return "hedwig";
    case TokenizerStyle::kim: return "kim";
    case TokenizerStyle::whitespace: return "whitespace";
  }
  return "?";
}

inline TokenizerStyle parse_tokenizer_style(std::string_view s) {
  for (auto t : {TokenizerStyle::hedwig, TokenizerStyle::kim, TokenizerStyle::whitespace})
    if (s == tokenizer_style_name(t)) return t;
  ::txtcls::detail::fail("tokenizer: unknown style '", s, "' (hedwig, kim, whitespace)");
}

struct TokenizerOptions {
  TokenizerStyle style = TokenizerStyle::hedwig;
  bool lowercase = true;             // false = Kim's TREC mode
  bool strip_html_breaks = false;    // "<br />" -> " " first
  bool kim_backslash_quirk = false;  // kim style: emit "\(", "\)", "\?" as the original script does
};

namespace detail {

enum : uint8_t { kDrop = 0, kKeep = 1, kPunct = 2, kSpace = 4 };

// Byte classes: kKeep for [A-Za-z0-9'`], kKeep|kPunct for the five that Kim splits off,
// kSpace for ASCII whitespace; everything else (incl. bytes >= 0x80) is kDrop.
constexpr std::array<uint8_t, 256> make_byte_classes() {
  std::array<uint8_t, 256> t{};
  for (int c = 'a'; c <= 'z'; ++c) t[c] = kKeep;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = kKeep;
  for (int c = '0'; c <= '9'; ++c) t[c] = kKeep;
  t['\''] = t['`'] = kKeep;
  for (char c : {',', '!', '(', ')', '?'}) t[static_cast<uint8_t>(c)] = kKeep | kPunct;
  for (char c : {' ', '\t', '\n', '\r', '\f', '\v'}) t[static_cast<uint8_t>(c)] = kSpace;
  return t;
}
inline constexpr std::array<uint8_t, 256> kByteClass = make_byte_classes();

inline char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

inline bool starts_with_at(std::string_view s, size_t i, std::string_view p) {
  return s.size() - i >= p.size() && s.compare(i, p.size(), p) == 0;
}

// Kim's contraction suffixes that follow an apostrophe: 's 've 're 'd 'll (case-sensitive).
inline bool kim_contraction_after_apostrophe(std::string_view s, size_t i) {
  return starts_with_at(s, i, "s") || starts_with_at(s, i, "ve") || starts_with_at(s, i, "re") ||
         starts_with_at(s, i, "d") || starts_with_at(s, i, "ll");
}

}  // namespace detail

class Tokenizer {
 public:
  Tokenizer() = default;
  explicit Tokenizer(TokenizerOptions opt) : opt_(opt) {}
  const TokenizerOptions& options() const { return opt_; }

  // Calls emit(std::string_view token) for each token; the view is valid during the call only.
  // Tokens are substrings of the text in every style, so they are passed as views into it; only
  // a token with upper-case letters to lower is copied.
  template <class F>
  void for_each(std::string_view text, F&& emit) const {
    std::string lowered;
    auto out = [&](size_t b, size_t e) {
      if (b == e) return;
      std::string_view t = text.substr(b, e - b);
      if (opt_.lowercase && std::any_of(t.begin(), t.end(), [](char c) { return c >= 'A' && c <= 'Z'; })) {
        lowered.assign(t);
        for (char& c : lowered) c = detail::ascii_lower(c);
        emit(std::string_view(lowered));
      } else {
        emit(t);
      }
    };
    const size_t n = text.size();
    const bool strip = opt_.strip_html_breaks;
    auto cls = [&](size_t i) { return detail::kByteClass[static_cast<uint8_t>(text[i])]; };
    auto html_break = [&](size_t i) { return strip && text[i] == '<' && detail::starts_with_at(text, i, "<br />"); };
    // Skips bytes that are not in `keep` (and whole "<br />" breaks).
    auto skip = [&](size_t i, uint8_t keep_mask, bool keep_if_set) {
      while (i < n) {
        if (html_break(i)) { i += 6; continue; }
        if (((cls(i) & keep_mask) != 0) == keep_if_set) break;
        ++i;
      }
      return i;
    };
    size_t i = 0;
    switch (opt_.style) {
      case TokenizerStyle::whitespace:
        while ((i = skip(i, detail::kSpace, false)) < n) {
          size_t b = i;
          while (i < n && !(cls(i) & detail::kSpace) && !html_break(i)) ++i;
          out(b, i);
        }
        break;
      case TokenizerStyle::hedwig:
        // '<' is never kept, so a "<br />" can only start between tokens.
        while ((i = skip(i, detail::kKeep, true)) < n) {
          size_t b = i;
          while (i < n && (cls(i) & detail::kKeep)) ++i;
          out(b, i);
        }
        break;
      case TokenizerStyle::kim:
        while ((i = skip(i, detail::kKeep, true)) < n) {
          size_t b = i;
          if (cls(i) & detail::kPunct) {
            const char c = text[i++];
            if (opt_.kim_backslash_quirk && c != ',' && c != '!')
              emit(c == '(' ? std::string_view("\\(") : c == ')' ? std::string_view("\\)") : std::string_view("\\?"));
            else
              out(b, i);
            continue;
          }
          // A word runs until a dropped byte, a split-off punctuation mark, or the start of a
          // contraction; its first byte belongs to it even when a contraction starts there.
          for (++i; i < n; ++i) {
            const uint8_t k = cls(i);
            if (!(k & detail::kKeep) || (k & detail::kPunct)) break;
            if (text[i] == '\'' && detail::kim_contraction_after_apostrophe(text, i + 1)) break;
            if (text[i] == 'n' && detail::starts_with_at(text, i + 1, "'t")) break;
          }
          out(b, i);
        }
        break;
    }
  }

  std::vector<std::string> operator()(std::string_view text) const {
    std::vector<std::string> out;
    for_each(text, [&](std::string_view t) { out.emplace_back(t); });
    return out;
  }
  size_t count(std::string_view text) const {
    size_t k = 0;
    for_each(text, [&](std::string_view) { ++k; });
    return k;
  }

 private:
  TokenizerOptions opt_;
};

// hedwig's `split_sents` (datasets/reuters.py), which feeds its hierarchical models:
//   re.sub(r"[!?]", " ", s).strip().split('.')
// i.e. '!' and '?' become spaces, surrounding ASCII whitespace is stripped, and the text is cut at
// every '.', keeping empty pieces: "Hi. Bye." -> {"Hi", " Bye", ""}. Tokenize each piece after.
inline std::vector<std::string> hedwig_split_sentences(std::string_view text) {
  std::string s(text);
  for (char& c : s)
    if (c == '!' || c == '?') c = ' ';
  size_t b = 0, e = s.size();
  while (b < e && (detail::kByteClass[static_cast<uint8_t>(s[b])] & detail::kSpace)) ++b;
  while (e > b && (detail::kByteClass[static_cast<uint8_t>(s[e - 1])] & detail::kSpace)) --e;
  std::vector<std::string> out;
  size_t start = b;
  for (size_t i = b; i < e; ++i)
    if (s[i] == '.') {
      out.emplace_back(s, start, i - start);
      start = i + 1;
    }
  out.emplace_back(s, start, e - start);
  return out;
}

}  // namespace txtcls::data
