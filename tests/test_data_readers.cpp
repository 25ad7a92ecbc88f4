// Readers on the small fixtures in tests/fixtures/data (good and malformed files) and on the real
// TREC data when ../shared/data is present.
#include "test_util.hpp"
#include "txtcls/data/labels.hpp"
#include "txtcls/data/reader.hpp"

using namespace txtcls::data;
using Catch::Contains;

namespace {

std::string fx(const std::string& name) { return std::string(TXTCLS_SOURCE_DIR) + "/tests/fixtures/data/" + name; }

std::vector<std::string> labels_of(const std::vector<Example>& ex) {
  std::vector<std::string> out;
  for (const auto& e : ex) out.push_back(e.label);
  return out;
}

}  // namespace

TEST_CASE("read_tsv: labels, texts, sources; blank lines skipped and empty texts kept, both counted", "[data][reader]") {
  auto r = read_tsv(fx("good.tsv"));
  // Lines: 1 CRLF, 2 blank, 3 empty text, 4 text with a TAB, 5 whitespace-only, 6 UTF-8 text.
  REQUIRE(r.examples.size() == 4);
  REQUIRE(r.examples[0].label == "pos");
  REQUIRE(r.examples[0].text == "A fine, warm film.");  // the CR of CRLF is dropped
  REQUIRE(r.examples[0].source == fx("good.tsv") + ":1");
  REQUIRE(r.examples[1].text.empty());
  REQUIRE(r.examples[1].source == fx("good.tsv") + ":3");
  REQUIRE(r.examples[2].text == "Dull\tand long");  // everything after the first TAB
  REQUIRE(r.examples[3].text == "Caf\xc3\xa9 au lait");
  REQUIRE(r.examples[3].source == fx("good.tsv") + ":6");
  REQUIRE(r.report.lines == 6);
  REQUIRE(r.report.examples == 4);
  REQUIRE(r.report.blank_lines == 2);
  REQUIRE(r.report.empty_texts == 1);
  REQUIRE_FALSE(r.report.clean());
  REQUIRE(r.report.notes.size() == 3);
  REQUIRE_THAT(r.report.notes[0], Contains("good.tsv:2: blank line skipped"));
  REQUIRE_THAT(r.report.summary(), Contains("4 examples from 6 lines; 2 blank line(s) skipped; 1 empty text(s) kept"));
}

TEST_CASE("read_tsv: malformed lines are errors naming file and line", "[data][reader]") {
  REQUIRE_THROWS_WITH(read_tsv(fx("no_tab.tsv")), Contains("no_tab.tsv:3: no TAB in the line") &&
                                                       Contains("this line has no tab"));
  REQUIRE_THROWS_WITH(read_tsv(fx("empty_label.tsv")), Contains("empty_label.tsv:1: empty label"));
  REQUIRE_THROWS_WITH(read_tsv(fx("bad_utf8.tsv")),
                      Contains("bad_utf8.tsv:2: invalid UTF-8 at byte 8") && Contains("bytes e9 20"));
  REQUIRE_THROWS_WITH(read_tsv(fx("does_not_exist.tsv")), Contains("does_not_exist.tsv: cannot open"));
  REQUIRE_THROWS_WITH(read_tsv(fx("splits")), Contains("is a directory"));
}

TEST_CASE("read_tsv: invalid UTF-8 repaired on request, and counted", "[data][reader]") {
  ReadOptions replace{InvalidUtf8::replace}, latin1{InvalidUtf8::latin1};
  auto r = read_tsv(fx("bad_utf8.tsv"), replace);
  REQUIRE(r.examples[1].text == "caf\xef\xbf\xbd latin-1 byte");
  REQUIRE(r.report.repaired_utf8 == 1);
  REQUIRE_THAT(r.report.notes.at(0), Contains("bad_utf8.tsv:2: invalid UTF-8 replaced"));
  auto l = read_tsv(fx("bad_utf8.tsv"), latin1);
  REQUIRE(l.examples[1].text == "caf\xc3\xa9 latin-1 byte");
  REQUIRE(l.examples[0].text == "good");
  REQUIRE(l.report.repaired_utf8 == 1);
}

TEST_CASE("utf8: validation follows RFC 3629", "[data][reader]") {
  REQUIRE(invalid_utf8_at("plain ascii text, long enough for the fast path") == kValidUtf8);
  REQUIRE(invalid_utf8_at("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80") == kValidUtf8);  // é € 😀
  REQUIRE(invalid_utf8_at("ab\xc0\xaf") == 2);                    // overlong '/'
  REQUIRE(invalid_utf8_at("abcdefghij\xed\xa0\x80") == 10);       // a surrogate
  REQUIRE(invalid_utf8_at("\xf4\x90\x80\x80") == 0);              // above U+10FFFF
  REQUIRE(invalid_utf8_at("x\xe2\x82") == 1);                     // truncated sequence
  REQUIRE(invalid_utf8_at("x\x80") == 1);                         // lone continuation byte
  REQUIRE(repair_utf8("a\xff" "b") == "a\xef\xbf\xbd" "b");
  REQUIRE(latin1_to_utf8("na\xefve") == "na\xc3\xafve");
}

TEST_CASE("gzip: detected by content, truncated streams are errors", "[data][reader]") {
  REQUIRE(is_gzip_file(fx("gzip_without_extension.tsv")));
  REQUIRE_FALSE(is_gzip_file(fx("good.tsv")));
  auto r = read_tsv(fx("gzip_without_extension.tsv"));
  REQUIRE(r.examples.size() == 2);
  REQUIRE(r.examples[1].label == "b");
  REQUIRE(r.examples[1].text == "second text");
  REQUIRE_THROWS_WITH(read_tsv(fx("truncated.tsv.gz")), Contains("truncated.tsv.gz: read error") &&
                                                             Contains("corrupt or truncated gzip data"));
}

TEST_CASE("LineReader: a byte order mark on the first line is dropped", "[data][reader]") {
  auto r = read_tsv(fx("bom.tsv"));
  REQUIRE(r.examples.at(0).label == "pos");
  REQUIRE(r.examples.at(1).label == "neg");
}

TEST_CASE("read_csv: RFC 4180 quoting", "[data][reader]") {
  auto r = read_csv(fx("ag_news.csv"), 0, {1, 2});
  REQUIRE(r.examples.size() == 4);
  REQUIRE(r.examples[0].label == "3");
  REQUIRE(r.examples[0].text ==
          "Wall St. Bears Claw Back Reuters - Short-sellers, Wall Street's dwindling band, are seeing green.");
  REQUIRE(r.examples[1].text == "Title with \"quotes\" Line one\nline two, continued");
  REQUIRE(r.examples[1].source == fx("ag_news.csv") + ":2");
  REQUIRE(r.examples[2].source == fx("ag_news.csv") + ":4");  // the record before spans two lines
  REQUIRE(r.examples[2].text == "Plain ");
  REQUIRE(r.examples[3].label == "2");
  REQUIRE(r.examples[3].text == "unquoted title unquoted text");
  REQUIRE(r.report.lines == 5);
  // Only the text column, another joiner.
  CsvOptions o;
  o.joiner = " | ";
  REQUIRE(read_csv(fx("ag_news.csv"), 0, {2, 1}, o).examples[3].text == "unquoted text | unquoted title");
  // A header record is skipped.
  CsvOptions h;
  h.header = true;
  auto hr = read_csv(fx("header.csv"), 0, {2}, h);
  REQUIRE(labels_of(hr.examples) == std::vector<std::string>{"1", "2"});
  REQUIRE(hr.examples[0].source == fx("header.csv") + ":2");
}

TEST_CASE("read_csv: broken quoting and ragged records are errors naming file and line", "[data][reader]") {
  REQUIRE_THROWS_WITH(read_csv(fx("bad_quote.csv"), 0, {1, 2}),
                      Contains("bad_quote.csv:2: unexpected character 't' after the closing quote of field 2"));
  REQUIRE_THROWS_WITH(read_csv(fx("unclosed_quote.csv"), 0, {1}),
                      Contains("unclosed_quote.csv:1: the quoted field 2 opened on this line is never closed"));
  REQUIRE_THROWS_WITH(read_csv(fx("stray_quote.csv"), 0, {1}),
                      Contains("stray_quote.csv:1: a quote inside the unquoted field 2"));
  REQUIRE_THROWS_WITH(read_csv(fx("ragged.csv"), 0, {1}), Contains("ragged.csv:2: the record has 2 fields, the first had 3"));
  REQUIRE_THROWS_WITH(read_csv(fx("ag_news.csv"), 0, {5}), Contains("ag_news.csv:1: the record has 3 fields"));
}

TEST_CASE("read_fasttext: __label__ prefix, one label per line", "[data][reader]") {
  auto r = read_fasttext(fx("fasttext.txt"));
  REQUIRE(labels_of(r.examples) == std::vector<std::string>{"pos", "neg", "pos", "neu"});
  REQUIRE(r.examples[0].text == "I loved it");
  REQUIRE(r.examples[1].text == "hated it");
  REQUIRE(r.examples[2].text.empty());
  REQUIRE(r.examples[3].source == fx("fasttext.txt") + ":5");
  REQUIRE(r.report.blank_lines == 1);
  REQUIRE(r.report.empty_texts == 1);
  REQUIRE_THROWS_WITH(read_fasttext(fx("fasttext_multi.txt")), Contains("fasttext_multi.txt:1: more than one label"));
  REQUIRE_THROWS_WITH(read_fasttext(fx("fasttext_nolabel.txt")),
                      Contains("fasttext_nolabel.txt:1: the line does not start with a __label__ token"));
}

TEST_CASE("read_folder_per_class and the aclImdb / 20 Newsgroups layouts", "[data][reader]") {
  auto r = read_folder_per_class(fx("aclimdb/train"));
  REQUIRE(labels_of(r.examples) == std::vector<std::string>{"neg", "neg", "pos", "pos", "unsup"});
  REQUIRE(r.examples[1].text == "Boring.\nWay too long.");  // files in name order: 0_2.txt, 10_1.txt
  REQUIRE(r.examples[1].source == fx("aclimdb/train") + "/neg/10_1.txt");
  auto pos_only = read_folder_per_class(fx("aclimdb/train"), FolderOptions{{"pos"}, {}});
  REQUIRE(pos_only.examples.size() == 2);
  REQUIRE_THROWS_WITH(read_folder_per_class(fx("aclimdb/train"), FolderOptions{{"neutral"}, {}}),
                      Contains("neutral: class folder not found"));

  // train/unsup has no test counterpart: left out and counted; files beside the class folders are ignored.
  auto s = read_dataset(fx("aclimdb"));
  REQUIRE(labels_of(s.train) == std::vector<std::string>{"neg", "neg", "pos", "pos"});
  REQUIRE(labels_of(s.test) == std::vector<std::string>{"neg", "neg", "pos"});
  REQUIRE(s.train_report.skipped_classes == 1);
  REQUIRE(s.test[2].text == "Wonderful.");
  REQUIRE_FALSE(s.has_dev());

  // 20news-bydate-train / -test; one file is Latin-1.
  REQUIRE_THROWS_WITH(read_dataset(fx("news-bydate")),
                      Contains("rec.autos/101551:2: invalid UTF-8 at byte 13") && Contains("bytes ef 76"));
  auto n = read_dataset(fx("news-bydate"), Format::auto_detect, ReadOptions{InvalidUtf8::latin1});
  REQUIRE(labels_of(n.train) == std::vector<std::string>{"rec.autos", "sci.space"});
  REQUIRE(n.train[0].text == "From: x\nNice car, na\xc3\xafve driver.");
  REQUIRE(n.train_report.repaired_utf8 == 1);
  REQUIRE(n.test.size() == 2);
}

TEST_CASE("read_dataset: split files, labels.txt, format detection", "[data][reader]") {
  auto s = read_dataset(fx("splits"));
  REQUIRE(s.train.size() == 4);
  REQUIRE(s.test.size() == 2);  // test.tsv.gz
  REQUIRE(s.test[0].text == "Where is Paris ?");
  REQUIRE(s.labels == std::vector<std::string>{"DESC", "LOC", "NUM"});
  REQUIRE(s.train_report.clean());

  REQUIRE(detect_file_format(fx("good.tsv")) == Format::tsv);
  REQUIRE(detect_file_format(fx("ag_news.csv")) == Format::csv);
  REQUIRE(detect_file_format(fx("fasttext.txt")) == Format::fasttext);
  REQUIRE(detect_file_format(fx("gzip_without_extension.tsv")) == Format::tsv);
  auto csv = read_dataset(fx("ag_news.csv"));
  REQUIRE(csv.train.size() == 4);
  REQUIRE(csv.train[3].text == "unquoted title unquoted text");
  REQUIRE(read_dataset(fx("fasttext.txt")).train.size() == 4);
  REQUIRE(read_dataset(fx("good.tsv"), Format::tsv).train.size() == 4);
  REQUIRE_THROWS_WITH(read_dataset(fx("nothing_here")), Contains("nothing_here: no such file or directory"));
  REQUIRE(parse_format("fasttext") == Format::fasttext);
  REQUIRE_THROWS_WITH(parse_format("xml"), Contains("unknown format 'xml'"));
}

TEST_CASE("LabelSet: labels.txt, first-seen order, unknown labels name file and line", "[data][labels]") {
  auto train = read_tsv(fx("unknown_label/train.tsv")).examples;
  auto test = read_tsv(fx("unknown_label/test.tsv")).examples;
  auto labels = LabelSet::from_examples(train);
  REQUIRE(labels.names() == std::vector<std::string>{"pos", "neg"});
  REQUIRE(LabelSet::from_examples(train, LabelOrder::sorted).names() == std::vector<std::string>{"neg", "pos"});
  REQUIRE(labels.encode(train) == std::vector<int64_t>{0, 1});
  REQUIRE(labels.id("neg") == 1);
  REQUIRE(labels.name(0) == "pos");
  REQUIRE_THROWS_WITH(labels.encode(test), Contains("unknown_label/test.tsv:2: label 'neutral' is not one of the 2 "
                                                    "training labels (pos, neg)"));
  REQUIRE_THROWS_WITH(labels.id("x"), Contains("unknown label 'x'"));
  REQUIRE_THROWS_WITH(labels.name(2), Contains("id 2 out of range for 2 labels"));

  auto fromfile = LabelSet::load(fx("splits/labels.txt"));
  REQUIRE(fromfile.names() == std::vector<std::string>{"DESC", "LOC", "NUM"});
  REQUIRE(fromfile.counts(read_tsv(fx("splits/train.tsv")).examples) == std::vector<size_t>{1, 1, 2});
  REQUIRE_THROWS_WITH(LabelSet::load(fx("labels_dup.txt")), Contains("labels_dup.txt:3: label 'labelA' listed twice"));

  auto dir = std::filesystem::temp_directory_path() / "txtcls_test_labels";
  std::filesystem::create_directories(dir);
  labels.save((dir / "labels.txt").string());
  REQUIRE(LabelSet::load((dir / "labels.txt").string()) == labels);
  std::filesystem::remove_all(dir);
}

TEST_CASE("real data: TREC counts", "[data][reader]") {
  const std::string root = tt::shared_data_dir();
  if (root.empty() || !std::filesystem::exists(root + "/trec")) {
    WARN("skipped: ../shared/data/trec not found (set TXTCLS_SHARED_DATA)");
    return;
  }
  auto s = read_dataset(root + "/trec");
  REQUIRE(s.train.size() == 5452);
  REQUIRE(s.test.size() == 500);
  REQUIRE_FALSE(s.has_dev());
  REQUIRE(s.train_report.clean());
  REQUIRE(s.test_report.clean());
  auto labels = LabelSet(s.labels);
  REQUIRE(labels.size() == 6);
  REQUIRE(labels.names() == std::vector<std::string>{"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"});
  REQUIRE(labels.counts(s.train) == std::vector<size_t>{86, 1162, 1250, 1223, 835, 896});
  REQUIRE(labels.counts(s.test) == std::vector<size_t>{9, 138, 94, 65, 81, 113});
  REQUIRE(LabelSet::from_examples(s.train, LabelOrder::sorted) == labels);
  REQUIRE(s.train[0].label == "DESC");
  REQUIRE(s.train[0].text == "How did serfdom develop in and then leave Russia ?");
}
