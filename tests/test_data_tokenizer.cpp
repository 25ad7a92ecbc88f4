// The tokenizers against hand-worked examples (checked against the Python originals) and, on
// random strings full of the awkward characters, against a slow reference that applies the
// original regex substitutions one after the other with std::regex.
#include <regex>

#include "test_util.hpp"
#include "txtcls/data/tokenizer.hpp"

using namespace txtcls::data;
using V = std::vector<std::string>;

namespace {

Tokenizer make(TokenizerStyle s, bool lower = true, bool br = false, bool quirk = false) {
  TokenizerOptions o;
  o.style = s;
  o.lowercase = lower;
  o.strip_html_breaks = br;
  o.kim_backslash_quirk = quirk;
  return Tokenizer(o);
}

V split_ws(const std::string& s) {
  V out;
  std::string cur;
  for (char c : s) {
    if (c == ' ') {
      if (!cur.empty()) out.push_back(cur), cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

std::string lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  return s;
}

// The Python functions, substitution by substitution.
V hedwig_reference(const std::string& in) {
  std::string s = std::regex_replace(in, std::regex("[^A-Za-z0-9(),!?'`]"), " ");
  return split_ws(lower(s));
}

V kim_reference(const std::string& in, bool lowercase, bool quirk) {
  std::string s = std::regex_replace(in, std::regex("[^A-Za-z0-9(),!?'`]"), " ");
  for (const char* c : {"'s", "'ve", "n't", "'re", "'d", "'ll"})
    s = std::regex_replace(s, std::regex(c), std::string(" ") + c);
  s = std::regex_replace(s, std::regex(","), " , ");
  s = std::regex_replace(s, std::regex("!"), " ! ");
  s = std::regex_replace(s, std::regex("\\("), quirk ? " \\( " : " ( ");
  s = std::regex_replace(s, std::regex("\\)"), quirk ? " \\) " : " ) ");
  s = std::regex_replace(s, std::regex("\\?"), quirk ? " \\? " : " ? ");
  return split_ws(lowercase ? lower(s) : s);
}

}  // namespace

TEST_CASE("tokenizer: hedwig clean_string keeps punctuation inside tokens", "[data][tokenizer]") {
  Tokenizer t;  // hedwig is the default
  REQUIRE(t("Don't panic, it's (only) a TEST!") == V{"don't", "panic,", "it's", "(only)", "a", "test!"});
  // Non-ASCII characters and other punctuation are separators; "<br />" leaves "br" unless stripped.
  REQUIRE(t("U.S. caf\xc3\xa9 \xe2\x80\x94 na\xc3\xafve <br />end") == V{"u", "s", "caf", "na", "ve", "br", "end"});
  REQUIRE(make(TokenizerStyle::hedwig, true, true)("U.S. caf\xc3\xa9 \xe2\x80\x94 na\xc3\xafve <br />end") ==
          V{"u", "s", "caf", "na", "ve", "end"});
  REQUIRE(make(TokenizerStyle::hedwig, false)("Hello World") == V{"Hello", "World"});
  REQUIRE(t("`quoted' 42") == V{"`quoted'", "42"});
  REQUIRE(t("").empty());
  REQUIRE(t(" \t\n...;:- ").empty());
  REQUIRE(t.count("a b  c") == 3);
}

TEST_CASE("tokenizer: Kim's clean_str splits contractions and punctuation", "[data][tokenizer]") {
  auto k = make(TokenizerStyle::kim);
  REQUIRE(k("Don't panic, it's (only) a TEST!") ==
          V{"do", "n't", "panic", ",", "it", "'s", "(", "only", ")", "a", "test", "!"});
  REQUIRE(k("I can't believe they've won; we'd say you'll see. They're HERE?") ==
          V{"i", "ca", "n't", "believe", "they", "'ve", "won", "we", "'d", "say", "you", "'ll", "see", "they", "'re",
            "here", "?"});
  // The contraction patterns are matched before lowercasing, so they are case-sensitive.
  REQUIRE(k("DON'T IT'S") == V{"don't", "it's"});
  REQUIRE(k("'hello' rock'n'roll n't 'sup") == V{"'hello'", "rock'n'roll", "n't", "'sup"});
  REQUIRE(k("it'sn't,won't!!(x)") == V{"it", "'s", "n't", ",", "wo", "n't", "!", "!", "(", "x", ")"});
  // TREC mode keeps the case.
  REQUIRE(make(TokenizerStyle::kim, false)("What's the Capital of France?") ==
          V{"What", "'s", "the", "Capital", "of", "France", "?"});
  // The original script's replacement templates leave a backslash before ( ) ?.
  REQUIRE(make(TokenizerStyle::kim, true, false, true)("Why (not)?, ok!") ==
          V{"why", "\\(", "not", "\\)", "\\?", ",", "ok", "!"});
}

TEST_CASE("tokenizer: whitespace style and style names", "[data][tokenizer]") {
  auto w = make(TokenizerStyle::whitespace);
  REQUIRE(w("  The  movie\tis GOOD .\n") == V{"the", "movie", "is", "good", "."});
  REQUIRE(make(TokenizerStyle::whitespace, false)("The caf\xc3\xa9 .") == V{"The", "caf\xc3\xa9", "."});
  REQUIRE(make(TokenizerStyle::whitespace, true, true)("a<br />b <br />c") == V{"a", "b", "c"});
  for (auto s : {TokenizerStyle::hedwig, TokenizerStyle::kim, TokenizerStyle::whitespace})
    REQUIRE(parse_tokenizer_style(tokenizer_style_name(s)) == s);
  REQUIRE_THROWS_WITH(parse_tokenizer_style("spacy"), Catch::Contains("unknown style 'spacy'"));
}

TEST_CASE("tokenizer: hedwig split_sents", "[data][tokenizer]") {
  REQUIRE(hedwig_split_sentences("Hi there! How are you? Fine. Bye.") == V{"Hi there  How are you  Fine", " Bye", ""});
  REQUIRE(hedwig_split_sentences("  no period here  ") == V{"no period here"});
  REQUIRE(hedwig_split_sentences("") == V{""});
}

TEST_CASE("tokenizer: equals the regex pipeline on random strings", "[data][tokenizer]") {
  // An alphabet dense in the characters the rules care about, plus multi-byte UTF-8.
  const std::vector<std::string> pieces = {"a", "N", "n", "t", "s", "v", "e", "r", "d", "l", "'", "`", ",", "!", "?",
                                           "(", ")", ".", " ", "\t", "-", "0", "\xc3\xa9", "\xe2\x80\x94", "<br />",
                                           "n't", "'s", "'ve", "'re", "'d", "'ll", "S", "L"};
  txtcls::Generator g(7);
  for (int trial = 0; trial < 1500; ++trial) {
    std::string s;
    const auto len = g.randint(30);
    for (uint64_t i = 0; i < len; ++i) s += pieces[g.randint(pieces.size())];
    INFO("input: \"" << s << "\"");
    REQUIRE(Tokenizer()(s) == hedwig_reference(s));
    const bool lowercase = trial % 2 == 0, quirk = trial % 3 == 0;
    REQUIRE(make(TokenizerStyle::kim, lowercase, false, quirk)(s) == kim_reference(s, lowercase, quirk));
    // Stripping "<br />" first equals removing it from the input.
    std::string no_br = std::regex_replace(s, std::regex("<br />"), " ");
    REQUIRE(make(TokenizerStyle::kim, true, true)(s) == kim_reference(no_br, true, false));
    REQUIRE(make(TokenizerStyle::hedwig, true, true)(s) == hedwig_reference(no_br));
  }
}
