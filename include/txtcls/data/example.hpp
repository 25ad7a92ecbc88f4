#pragma once
// Example, the unit every reader produces, and ReadReport, the account of what a reader skipped
// or repaired instead of failing (the policy is in docs/data.md).
#include <algorithm>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "txtcls/data/text_file.hpp"

namespace txtcls::data {

struct Example {
  std::string label;
  std::string text;
  std::string source;  // "file:line", or the file's path for one-file-per-example folders
};

// What to do with bytes that are not UTF-8. `error` (default) stops at the first one, naming
// file:line; `replace` writes U+FFFD for each bad byte; `latin1` decodes the offending line (or
// file) as ISO-8859-1, the encoding of e.g. the 20 Newsgroups originals. Both repairs are counted.
enum class InvalidUtf8 { error, replace, latin1 };

struct ReadOptions {
  InvalidUtf8 invalid_utf8 = InvalidUtf8::error;
};

inline std::string_view invalid_utf8_name(InvalidUtf8 p) {
  switch (p) {
    case InvalidUtf8::error: return "error";
    case InvalidUtf8::replace: return "replace";
    case InvalidUtf8::latin1: return "latin1";
  }
  return "?";
}

// "error", "replace" or "latin1" (the txtcls program's --invalid-utf8).
inline InvalidUtf8 parse_invalid_utf8(std::string_view s) {
  for (InvalidUtf8 p : {InvalidUtf8::error, InvalidUtf8::replace, InvalidUtf8::latin1})
    if (s == invalid_utf8_name(p)) return p;
  ::txtcls::detail::fail("invalid UTF-8 policy '", s, "': expected error, replace or latin1");
}

struct ReadReport {
  static constexpr size_t kMaxNotes = 20;

  std::string path;
  size_t lines = 0;          // lines read (files, for a folder-per-class dataset)
  size_t examples = 0;       // examples returned
  size_t blank_lines = 0;    // skipped: empty or whitespace-only lines
  size_t empty_texts = 0;    // kept: a label whose text is empty or whitespace
  size_t repaired_utf8 = 0;  // lines (or files) decoded under InvalidUtf8::replace / latin1
  size_t skipped_classes = 0;  // folder layouts: class folders present in one split only
  std::vector<std::string> notes;  // the first kMaxNotes places, "file:line: what happened"

  void note(std::string s) {
    if (notes.size() < kMaxNotes) notes.push_back(std::move(s));
  }
  bool clean() const { return blank_lines == 0 && empty_texts == 0 && repaired_utf8 == 0 && skipped_classes == 0; }
  void merge(const ReadReport& o) {
    lines += o.lines;
    examples += o.examples;
    blank_lines += o.blank_lines;
    empty_texts += o.empty_texts;
    repaired_utf8 += o.repaired_utf8;
    skipped_classes += o.skipped_classes;
    for (const auto& n : o.notes) note(n);
  }
  // One line for logs, e.g. "train.tsv: 5452 examples from 5452 lines; 1 blank line skipped".
  std::string summary() const {
    std::ostringstream os;
    os << path << ": " << examples << " examples from " << lines << " lines";
    if (blank_lines) os << "; " << blank_lines << " blank line(s) skipped";
    if (empty_texts) os << "; " << empty_texts << " empty text(s) kept";
    if (repaired_utf8) os << "; " << repaired_utf8 << " line(s) with invalid UTF-8 repaired";
    if (skipped_classes) os << "; " << skipped_classes << " class folder(s) ignored";
    return os.str();
  }
};

struct ReadResult {
  std::vector<Example> examples;
  ReadReport report;
};

namespace detail {

inline bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

inline bool is_blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return is_space(c); });
}

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

[[noreturn]] inline void fail_utf8(const std::string& place, std::string_view s, size_t bad) {
  ::txtcls::detail::fail(place, ": invalid UTF-8 at byte ", bad + 1, " of the line (bytes ", hex_bytes(s, bad),
       "); convert the file to UTF-8, or read it with invalid UTF-8 replaced or as Latin-1 (txtcls: ",
       "--invalid-utf8 replace or latin1; the library: ReadOptions::invalid_utf8)");
}

// Applies the UTF-8 policy to one line. Returns the line itself or its repaired copy in `scratch`.
inline std::string_view checked_line(std::string_view line, const std::string& place, const ReadOptions& opt,
                                     ReadReport& rep, std::string& scratch) {
  size_t bad = invalid_utf8_at(line);
  if (bad == kValidUtf8) return line;
  if (opt.invalid_utf8 == InvalidUtf8::error) fail_utf8(place, line, bad);
  scratch = opt.invalid_utf8 == InvalidUtf8::replace ? repair_utf8(line) : latin1_to_utf8(line);
  ++rep.repaired_utf8;
  rep.note(place + ": invalid UTF-8 " + (opt.invalid_utf8 == InvalidUtf8::replace ? "replaced" : "read as Latin-1"));
  return scratch;
}

// The same for a whole file's content (one example per file): errors name the line in the file.
inline void check_file_text(std::string& text, const std::string& path, const ReadOptions& opt, ReadReport& rep) {
  size_t bad = invalid_utf8_at(text);
  if (bad == kValidUtf8) return;
  if (opt.invalid_utf8 == InvalidUtf8::error) {
    size_t line = 1 + static_cast<size_t>(std::count(text.begin(), text.begin() + bad, '\n'));
    size_t start = text.rfind('\n', bad == 0 ? 0 : bad - 1);
    start = (start == std::string::npos || bad == 0) ? 0 : start + 1;
    std::string_view l(text.data() + start, text.size() - start);
    fail_utf8(where(path, line), l, bad - start);
  }
  text = opt.invalid_utf8 == InvalidUtf8::replace ? repair_utf8(text) : latin1_to_utf8(text);
  ++rep.repaired_utf8;
  rep.note(path + ": invalid UTF-8 " + (opt.invalid_utf8 == InvalidUtf8::replace ? "replaced" : "read as Latin-1"));
}

}  // namespace detail
}  // namespace txtcls::data
