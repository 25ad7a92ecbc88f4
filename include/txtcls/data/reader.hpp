#pragma once
// Dataset readers: LABEL<TAB>TEXT (the ../shared/data format), CSV (csv.hpp), fastText
// `__label__x text`, one folder per class (aclImdb, 20 Newsgroups), and read_dataset(), which
// picks the reader from the content or the directory layout. Plain or gzip files alike.
// Malformed input is an error naming file:line; blank lines and empty texts are counted in the
// ReadReport (docs/data.md has the whole policy).
#include <algorithm>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "txtcls/data/csv.hpp"
#include "txtcls/data/example.hpp"
#include "txtcls/data/labels.hpp"

namespace txtcls::data {

namespace detail {

inline void add_example(ReadResult& r, std::string_view label, std::string_view text, const std::string& place) {
  if (is_blank(text)) {
    ++r.report.empty_texts;
    r.report.note(place + ": empty text kept");
  }
  r.examples.push_back(Example{std::string(label), std::string(text), place});
}

}  // namespace detail

// LABEL<TAB>TEXT per line. Everything after the first TAB is the text (kept as is); a non-blank
// line without a TAB or with an empty label is an error.
inline ReadResult read_tsv(const std::string& path, const ReadOptions& opt = {}) {
  ReadResult r;
  r.report.path = path;
  LineReader in(path);
  std::string_view raw;
  std::string scratch;
  while (in.next(raw)) {
    ++r.report.lines;
    const std::string place = in.here();
    std::string_view line = detail::checked_line(raw, place, opt, r.report, scratch);
    if (detail::is_blank(line)) {
      ++r.report.blank_lines;
      r.report.note(place + ": blank line skipped");
      continue;
    }
    size_t tab = line.find('\t');
    TXTCLS_CHECK(tab != std::string_view::npos, place, ": no TAB in the line (expected LABEL<TAB>TEXT): \"",
                 line.substr(0, 60), line.size() > 60 ? "...\"" : "\"");
    std::string_view label = line.substr(0, tab);
    TXTCLS_CHECK(!detail::is_blank(label), place, ": empty label before the TAB");
    detail::add_example(r, label, line.substr(tab + 1), place);
  }
  r.report.examples = r.examples.size();
  return r;
}

inline constexpr std::string_view kFastTextLabelPrefix = "__label__";

// fastText supervised format: `__label__NAME text...`. The label must be the first token; a
// second `__label__` token is an error (multi-label lines are not supported).
inline ReadResult read_fasttext(const std::string& path, const ReadOptions& opt = {}) {
  ReadResult r;
  r.report.path = path;
  LineReader in(path);
  std::string_view raw;
  std::string scratch;
  const auto P = kFastTextLabelPrefix;
  while (in.next(raw)) {
    ++r.report.lines;
    const std::string place = in.here();
    std::string_view line = detail::checked_line(raw, place, opt, r.report, scratch);
    if (detail::is_blank(line)) {
      ++r.report.blank_lines;
      r.report.note(place + ": blank line skipped");
      continue;
    }
    size_t b = 0;
    while (detail::is_space(line[b])) ++b;
    size_t e = b;
    while (e < line.size() && !detail::is_space(line[e])) ++e;
    std::string_view tok = line.substr(b, e - b);
    TXTCLS_CHECK(tok.substr(0, P.size()) == P, place, ": the line does not start with a ", P, " token");
    TXTCLS_CHECK(tok.size() > P.size(), place, ": empty label (a bare ", P, ")");
    while (e < line.size() && detail::is_space(line[e])) ++e;
    std::string_view text = line.substr(e);
    for (size_t i = 0; (i = text.find(P, i)) != std::string_view::npos; ++i)
      TXTCLS_CHECK(i > 0 && !detail::is_space(text[i - 1]), place,
                   ": more than one label on the line (multi-label data is not supported)");
    detail::add_example(r, tok.substr(P.size()), text, place);
  }
  r.report.examples = r.examples.size();
  return r;
}

namespace detail {

inline bool hidden(const std::filesystem::path& p) {
  auto n = p.filename().string();
  return n.empty() || n[0] == '.';
}

// Non-hidden entries of `dir` that are directories (or regular files), sorted by name so that the
// order never depends on the file system.
inline std::vector<std::filesystem::path> sorted_entries(const std::filesystem::path& dir, bool dirs) {
  std::vector<std::filesystem::path> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (hidden(e.path())) continue;
    if (dirs ? e.is_directory() : e.is_regular_file()) out.push_back(e.path());
  }
  TXTCLS_CHECK(!ec, dir.string(), ": cannot list the directory (", ec.message(), ")");
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.filename().string() < b.filename().string(); });
  return out;
}

}  // namespace detail

struct FolderOptions {
  std::vector<std::string> classes;  // the class folders to read, in this order; empty = every subfolder
  ReadOptions read;
};

// One subfolder per class, one file per example (aclImdb's train/pos, 20news-bydate-train/...).
// Classes in name order (or opt.classes), files in name order within a class; the text is the
// file's whole content (gzip allowed), UTF-8 checked, with newlines kept.
inline ReadResult read_folder_per_class(const std::string& dir, const FolderOptions& opt = {}) {
  namespace fs = std::filesystem;
  std::error_code ec;
  TXTCLS_CHECK(fs::is_directory(dir, ec), dir, ": not a directory (expected one subfolder per class)");
  ReadResult r;
  r.report.path = dir;
  std::vector<fs::path> classes;
  if (opt.classes.empty()) {
    classes = detail::sorted_entries(dir, true);
  } else {
    for (const auto& c : opt.classes) {
      fs::path p = fs::path(dir) / c;
      TXTCLS_CHECK(fs::is_directory(p, ec), p.string(), ": class folder not found");
      classes.push_back(p);
    }
  }
  TXTCLS_CHECK(!classes.empty(), dir, ": no class subfolders");
  for (const auto& cdir : classes) {
    const std::string label = cdir.filename().string();
    for (const auto& f : detail::sorted_entries(cdir, false)) {
      ++r.report.lines;
      const std::string path = f.string();
      std::string text = read_file(path);
      detail::check_file_text(text, path, opt.read, r.report);
      detail::add_example(r, label, text, path);
    }
  }
  r.report.examples = r.examples.size();
  return r;
}

// ------------------------------------------------------------------------------- read_dataset

enum class Format { auto_detect, tsv, csv, fasttext, folder };

inline std::string_view format_name(Format f) {
  switch (f) {
    case Format::auto_detect: return "auto";
    case Format::tsv: return "tsv";
    case Format::csv: return "csv";
    case Format::fasttext: return "fasttext";
    case Format::folder: return "folder";
  }
  return "?";
}

inline Format parse_format(std::string_view s) {
  for (Format f : {Format::auto_detect, Format::tsv, Format::csv, Format::fasttext, Format::folder})
    if (s == format_name(f)) return f;
  ::txtcls::detail::fail("read_dataset: unknown format '", s, "' (auto, tsv, csv, fasttext, folder)");
}

// Guesses a file's format from its first non-blank line: `__label__` -> fastText, a TAB -> TSV,
// a leading quote or a comma -> CSV.
inline Format detect_file_format(const std::string& path) {
  LineReader in(path);
  std::string_view line;
  while (in.next(line)) {
    if (detail::is_blank(line)) continue;
    if (line.substr(0, kFastTextLabelPrefix.size()) == kFastTextLabelPrefix) return Format::fasttext;
    if (line.find('\t') != std::string_view::npos) return Format::tsv;
    if (line.front() == '"' || line.find(',') != std::string_view::npos) return Format::csv;
    ::txtcls::detail::fail(in.here(), ": cannot tell the format (no TAB, no comma, no __label__); name it explicitly");
  }
  ::txtcls::detail::fail(path, ": empty file");
}

// Reads one file in a given (or detected) format. CSV read this way takes column 0 as the label
// and every other column as text, the AG News layout.
inline ReadResult read_file_as(const std::string& path, Format f = Format::auto_detect, const ReadOptions& opt = {}) {
  if (f == Format::auto_detect) f = detect_file_format(path);
  switch (f) {
    case Format::tsv: return read_tsv(path, opt);
    case Format::fasttext: return read_fasttext(path, opt);
    case Format::csv: {
      // The column count comes from the first record.
      LineReader in(path);
      ReadReport scratch_rep;
      detail::CsvRecords rec(in, ',', opt, scratch_rep);
      std::vector<std::string> fields;
      size_t line = 0;
      TXTCLS_CHECK(rec.next(fields, line), path, ": empty file");
      TXTCLS_CHECK(fields.size() >= 2, where(path, line), ": a CSV record needs a label and a text column, found ",
                   fields.size(), " field(s)");
      std::vector<size_t> text_cols;
      for (size_t c = 1; c < fields.size(); ++c) text_cols.push_back(c);
      CsvOptions co;
      co.read = opt;
      return read_csv(path, 0, text_cols, co);
    }
    case Format::folder: return read_folder_per_class(path, FolderOptions{{}, opt});
    case Format::auto_detect: break;
  }
  ::txtcls::detail::fail(path, ": no reader for format ", format_name(f));
}

// The splits of a dataset. labels/labels_path are set when the directory has a labels.txt.
struct DatasetSplits {
  std::vector<Example> train, dev, test;
  std::vector<std::string> labels;
  std::string labels_path;
  ReadReport train_report, dev_report, test_report;
  bool has_dev() const { return !dev.empty(); }
  bool has_test() const { return !test.empty(); }
};

namespace detail {

// The file for split `name` in `dir`: name.tsv, name.tsv.gz, name.csv(.gz), name.txt(.gz), name.ft(.gz).
inline std::optional<std::string> split_file(const std::filesystem::path& dir, const std::string& name) {
  for (const char* ext : {".tsv", ".tsv.gz", ".csv", ".csv.gz", ".txt", ".txt.gz", ".ft", ".ft.gz"}) {
    auto p = dir / (name + ext);
    std::error_code ec;
    if (std::filesystem::is_regular_file(p, ec)) return p.string();
  }
  return std::nullopt;
}

// The folder for split `name`: `name/` or a folder ending in "-name" / "_name" (20news-bydate-train).
inline std::optional<std::filesystem::path> split_folder(const std::filesystem::path& dir, const std::string& name) {
  std::optional<std::filesystem::path> found;
  for (const auto& d : sorted_entries(dir, true)) {
    std::string n = d.filename().string();
    bool match = n == name || (n.size() > name.size() + 1 && n.compare(n.size() - name.size(), name.size(), name) == 0 &&
                               (n[n.size() - name.size() - 1] == '-' || n[n.size() - name.size() - 1] == '_'));
    if (!match) continue;
    TXTCLS_CHECK(!found, dir.string(), ": two folders for the ", name, " split: ", found->filename().string(),
                 " and ", n);
    found = d;
  }
  return found;
}

inline std::vector<std::string> subfolder_names(const std::filesystem::path& dir) {
  std::vector<std::string> out;
  for (const auto& d : sorted_entries(dir, true)) out.push_back(d.filename().string());
  return out;
}

}  // namespace detail

// Reads a dataset from a file or a directory:
//  - a file: every example goes to `train` (format by content unless given);
//  - a directory with train.tsv[.gz] (also .csv, .txt, .ft) and optional dev/test files beside an
//    optional labels.txt — the ../shared/data layout;
//  - a directory with split folders (train/, test/, dev/ or *-train, *-test, *-dev), each holding
//    one folder per class. The classes are those of the train folder that also exist in every
//    other split folder (aclImdb's train/unsup has no test counterpart and is left out, counted in
//    train_report.skipped_classes), unless labels.txt lists them;
//  - otherwise a directory of class folders: one folder-per-class dataset into `train`.
inline DatasetSplits read_dataset(const std::string& path_or_dir, Format format = Format::auto_detect,
                                  const ReadOptions& opt = {}) {
  namespace fs = std::filesystem;
  DatasetSplits s;
  std::error_code ec;
  TXTCLS_CHECK(fs::exists(path_or_dir, ec), path_or_dir, ": no such file or directory");
  if (!fs::is_directory(path_or_dir, ec)) {
    auto r = read_file_as(path_or_dir, format, opt);
    s.train = std::move(r.examples);
    s.train_report = std::move(r.report);
    return s;
  }
  const fs::path dir(path_or_dir);
  if (fs::is_regular_file(dir / "labels.txt", ec)) {
    s.labels_path = (dir / "labels.txt").string();
    s.labels = LabelSet::load(s.labels_path).names();
  }
  auto take = [&](std::vector<Example>& dst, ReadReport& rep, ReadResult r) {
    dst = std::move(r.examples);
    rep = std::move(r.report);
  };
  if (format != Format::folder) {
    if (auto train = detail::split_file(dir, "train")) {
      take(s.train, s.train_report, read_file_as(*train, format, opt));
      if (auto f = detail::split_file(dir, "dev")) take(s.dev, s.dev_report, read_file_as(*f, format, opt));
      else if (auto v = detail::split_file(dir, "valid")) take(s.dev, s.dev_report, read_file_as(*v, format, opt));
      if (auto f = detail::split_file(dir, "test")) take(s.test, s.test_report, read_file_as(*f, format, opt));
      return s;
    }
  }
  TXTCLS_CHECK(format == Format::auto_detect || format == Format::folder, path_or_dir,
               ": a directory without a train file cannot be read as ", format_name(format));
  auto train_dir = detail::split_folder(dir, "train");
  if (!train_dir) {
    take(s.train, s.train_report,
         read_folder_per_class(dir.string(), FolderOptions{s.labels, opt}));
    return s;
  }
  auto dev_dir = detail::split_folder(dir, "dev");
  auto test_dir = detail::split_folder(dir, "test");
  std::vector<std::string> classes = s.labels;
  size_t skipped = 0;
  if (classes.empty()) {
    for (const auto& c : detail::subfolder_names(*train_dir)) {
      bool everywhere = true;
      for (const auto& other : {dev_dir, test_dir})
        if (other && !fs::is_directory(*other / c, ec)) everywhere = false;
      if (everywhere) classes.push_back(c);
      else ++skipped;
    }
    TXTCLS_CHECK(!classes.empty(), train_dir->string(), ": no class folder shared by all split folders");
  }
  take(s.train, s.train_report, read_folder_per_class(train_dir->string(), FolderOptions{classes, opt}));
  s.train_report.skipped_classes = skipped;
  if (skipped) s.train_report.note(train_dir->string() + ": " + std::to_string(skipped) +
                                   " class folder(s) without a counterpart in the other splits ignored");
  if (dev_dir) take(s.dev, s.dev_report, read_folder_per_class(dev_dir->string(), FolderOptions{classes, opt}));
  if (test_dir) take(s.test, s.test_report, read_folder_per_class(test_dir->string(), FolderOptions{classes, opt}));
  return s;
}

}  // namespace txtcls::data
