#pragma once
// CSV with RFC 4180 quoting, as AG News / DBpedia / Yelp ship it: `"3","title","description"`.
// A quoted field may hold the delimiter, doubled quotes ("" = one ") and line breaks; a record
// therefore may span several lines, and errors name the line where the problem is.
#include <string>
#include <string_view>
#include <vector>

#include "txtcls/data/example.hpp"

namespace txtcls::data {

struct CsvOptions {
  char delimiter = ',';
  bool header = false;        // skip the first record
  std::string joiner = " ";   // between the text columns (title + description)
  ReadOptions read;
};

namespace detail {

// Pulls one record at a time out of a LineReader.
class CsvRecords {
 public:
  CsvRecords(LineReader& in, char delim, const ReadOptions& opt, ReadReport& rep)
      : in_(in), delim_(delim), opt_(opt), rep_(rep) {}

  // Next non-blank record; false at the end. `first_line` is where the record starts.
  bool next(std::vector<std::string>& fields, size_t& first_line) {
    std::string_view raw;
    while (in_.next(raw)) {
      ++rep_.lines;
      std::string_view line = checked_line(raw, in_.here(), opt_, rep_, scratch_);
      if (is_blank(line)) {
        ++rep_.blank_lines;
        rep_.note(in_.here() + ": blank line skipped");
        continue;
      }
      first_line = in_.line_number();
      fields.clear();
      parse(line, fields);
      return true;
    }
    return false;
  }

 private:
  enum class State { field_start, unquoted, quoted, quote_in_quoted };

  void parse(std::string_view line, std::vector<std::string>& fields) {
    std::string field;
    State st = State::field_start;
    const size_t quote_line = in_.line_number();
    for (;;) {
      for (size_t i = 0; i < line.size(); ++i) {
        const char c = line[i];
        switch (st) {
          case State::field_start:
            if (c == '"') st = State::quoted;
            else if (c == delim_) fields.emplace_back();
            else field.push_back(c), st = State::unquoted;
            break;
          case State::unquoted:
            if (c == delim_) fields.push_back(std::move(field)), field.clear(), st = State::field_start;
            else if (c == '"')
              ::txtcls::detail::fail(in_.here(), ": a quote inside the unquoted field ", fields.size() + 1,
                   " (column ", i + 1, "); quote the whole field and double the inner quotes");
            else field.push_back(c);
            break;
          case State::quoted:
            if (c == '"') st = State::quote_in_quoted;
            else field.push_back(c);
            break;
          case State::quote_in_quoted:
            if (c == '"') field.push_back('"'), st = State::quoted;
            else if (c == delim_) fields.push_back(std::move(field)), field.clear(), st = State::field_start;
            else
              ::txtcls::detail::fail(in_.here(), ": unexpected character '", c, "' after the closing quote of field ",
                   fields.size() + 1, " (column ", i + 1, ")");
            break;
        }
      }
      if (st != State::quoted) break;
      // A line break inside quotes belongs to the field; the record goes on.
      field.push_back('\n');
      std::string_view raw;
      if (!in_.next(raw))
        ::txtcls::detail::fail(where(in_.path(), quote_line), ": the quoted field ", fields.size() + 1,
             " opened on this line is never closed (end of file reached)");
      ++rep_.lines;
      line = checked_line(raw, in_.here(), opt_, rep_, scratch_);
    }
    fields.push_back(std::move(field));
  }

  LineReader& in_;
  char delim_;
  const ReadOptions& opt_;
  ReadReport& rep_;
  std::string scratch_;
};

}  // namespace detail

// One example per record: the label from column `label_col`, the text from `text_cols` joined by
// opt.joiner (0-based columns). Every record must have as many fields as the first one.
inline ReadResult read_csv(const std::string& path, size_t label_col, const std::vector<size_t>& text_cols,
                           const CsvOptions& opt = {}) {
  TXTCLS_CHECK(!text_cols.empty(), "read_csv: ", path, ": no text columns given");
  TXTCLS_CHECK(opt.delimiter != '"' && opt.delimiter != '\n', "read_csv: ", path, ": invalid delimiter");
  size_t need = label_col;
  for (size_t c : text_cols) need = std::max(need, c);
  ++need;
  ReadResult r;
  r.report.path = path;
  LineReader in(path);
  detail::CsvRecords records(in, opt.delimiter, opt.read, r.report);
  std::vector<std::string> fields;
  size_t line = 0, width = 0;
  bool first = true;
  while (records.next(fields, line)) {
    const std::string place = where(path, line);
    if (first) {
      width = fields.size();
      TXTCLS_CHECK(width >= need, place, ": the record has ", width, " fields, but label column ", label_col,
                   " and the text columns need at least ", need);
    } else {
      TXTCLS_CHECK(fields.size() == width, place, ": the record has ", fields.size(), " fields, the first had ",
                   width, " (an unbalanced quote or a stray delimiter?)");
    }
    if (first && opt.header) {
      first = false;
      continue;
    }
    first = false;
    Example ex;
    ex.label = fields[label_col];
    TXTCLS_CHECK(!detail::is_blank(ex.label), place, ": empty label in column ", label_col);
    for (size_t k = 0; k < text_cols.size(); ++k) {
      if (k) ex.text += opt.joiner;
      ex.text += fields[text_cols[k]];
    }
    if (detail::is_blank(ex.text)) {
      ++r.report.empty_texts;
      r.report.note(place + ": empty text kept");
    }
    ex.source = place;
    r.examples.push_back(std::move(ex));
  }
  r.report.examples = r.examples.size();
  return r;
}

}  // namespace txtcls::data
