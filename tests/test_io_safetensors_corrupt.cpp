// safetensors: corrupt and truncated files are refused whole with a one-line message that
// starts with the file name, from memory, from disk and through `txtcls inspect`.
#include <sys/wait.h>

#include <cstdlib>
#include <limits>

#include "io_test_util.hpp"

using namespace txtcls;
using namespace txtcls::io;
using iot::TempDir;

namespace {

using Bytes = std::vector<uint8_t>;

Bytes le64(uint64_t n) {
  Bytes b(8);
  std::memcpy(b.data(), &n, 8);
  return b;
}

Bytes cat(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

Bytes str_bytes(const std::string& s) { return Bytes(s.begin(), s.end()); }

// A file with the given header text (its true length in front) and data bytes.
Bytes file_of(const std::string& header, const Bytes& data) { return cat(cat(le64(header.size()), str_bytes(header)), data); }

Bytes data_of(size_t n) {
  Bytes d(n);
  for (size_t i = 0; i < n; ++i) d[i] = static_cast<uint8_t>(i % 2);  // also valid BOOL bytes
  return d;
}

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape, uint64_t b, uint64_t e) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" + std::to_string(b) +
         "," + std::to_string(e) + "]}";
}

// The valid file every case departs from: 'a' F32 [2] at [0, 8], 'b' I8 [3] at [8, 11].
const std::string kHeader = "{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "I8", "[3]", 8, 11) + "}";
Bytes valid_file() { return file_of(kHeader, data_of(11)); }

Bytes prefix(const Bytes& b, size_t n) { return Bytes(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(n)); }

struct Case {
  std::string what;
  Bytes bytes;
  std::string fragment;  // the message must contain it
};

// A file whose header is `h` and whose data is `n` bytes.
Case hd(std::string what, const std::string& h, size_t n, std::string fragment) {
  return {std::move(what), file_of(h, data_of(n)), std::move(fragment)};
}

std::vector<Case> corrupt_cases() {
  const Bytes v = valid_file();
  const size_t h = 8 + kHeader.size();
  std::vector<Case> c;
  // ---- truncation at each region boundary and inside each region
  c.push_back({"empty file", {}, "file is too small (0 bytes) to be safetensors"});
  c.push_back({"inside the length", prefix(v, 5), "file is too small (5 bytes)"});
  c.push_back({"right after the length", prefix(v, 8), "header length " + std::to_string(kHeader.size()) + " exceeds the 0 bytes that follow it (truncated file?)"});
  c.push_back({"inside the header", prefix(v, 8 + kHeader.size() / 2), "exceeds the " + std::to_string(kHeader.size() / 2) + " bytes that follow it"});
  c.push_back({"one byte short of the header", prefix(v, h - 1), "exceeds the"});
  c.push_back({"right after the header", prefix(v, h), "tensor 'a': data_offsets [0, 8] extend past the end of the data (0 bytes; truncated file?)"});
  c.push_back({"inside the first tensor", prefix(v, h + 3), "tensor 'a': data_offsets [0, 8] extend past the end of the data (3 bytes"});
  c.push_back({"between the tensors", prefix(v, h + 8), "tensor 'b': data_offsets [8, 11] extend past the end of the data (8 bytes"});
  c.push_back({"one byte short of the end", prefix(v, h + 10), "tensor 'b': data_offsets [8, 11] extend past the end of the data (10 bytes"});
  // ---- the header length
  c.push_back({"header length 2^63", cat(le64(uint64_t{1} << 63), str_bytes(kHeader)), "header length 9223372036854775808 exceeds the limit of 100000000 bytes"});
  c.push_back({"header length just over the limit", cat(le64(100000001), str_bytes(kHeader)), "exceeds the limit of 100000000 bytes"});
  c.push_back({"header length all ones", cat(le64(~uint64_t{0}), str_bytes(kHeader)), "header length 18446744073709551615 exceeds the limit"});
  c.push_back({"header length zero", cat(le64(0), str_bytes(kHeader)), "header length 0 is too small"});
  c.push_back({"header length one", cat(le64(1), str_bytes("{}")), "header length 1 is too small"});
  c.push_back({"header length cuts the JSON", cat(le64(kHeader.size() - 1), cat(str_bytes(kHeader), data_of(11))), "header is not valid JSON"});
  // ---- JSON structure
  c.push_back(hd("invalid JSON", "{\"a\":", 0, "header is not valid JSON: parse error at line 1, column 6"));
  c.push_back(hd("JSON array", "[1,2]", 0, "header must be a JSON object starting with '{', found '[1,2]'"));
  c.push_back(hd("JSON string", "\"ab\"", 0, "header must be a JSON object"));
  c.push_back(hd("leading blank", " {}", 0, "header must be a JSON object starting with '{'"));
  c.push_back(hd("byte order mark", "\xEF\xBB\xBF{}", 0, "header must be a JSON object starting with '{'"));
  c.push_back(hd("garbage after the object", "{} x", 0, "header is not valid JSON"));
  c.push_back(hd("NUL padding", std::string("{}\0\0", 4), 0, "header contains a NUL byte (byte 2 of the header)"));
  c.push_back(hd("NUL before garbage", std::string("{}\0]", 4), 0, "header contains a NUL byte"));
  c.push_back(hd("trailing comma", "{" + entry("a", "F32", "[2]", 0, 8) + ",}", 8, "header is not valid JSON"));
  c.push_back(hd("tensor entry is a number", "{\"a\":5}", 0, "tensor 'a': entry must be an object with dtype, shape and data_offsets, found a number"));
  c.push_back(hd("tensor entry is null", "{\"a\":null}", 0, "tensor 'a': entry must be an object with dtype, shape and data_offsets, found null"));
  c.push_back(hd("tensor entry is an array", "{\"a\":[]}", 0, "found an array"));
  c.push_back(hd("missing field", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,0]}}", 0, "tensor 'a': missing field 'shape'"));
  c.push_back(hd("unknown field", "{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4],\"x\":1}}", 4, "tensor 'a': unknown field 'x'"));
  c.push_back(hd("duplicate field", "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, "tensor 'a': duplicate field 'dtype'"));
  c.push_back(hd("deep nesting", "{\"a\":{\"shape\":" + std::string(5000, '[') + std::string(5000, ']') + "}}", 0, "tensor 'a': shape entry 0 is an array, must be a non-negative integer"));
  // ---- dtype
  c.push_back(hd("unknown dtype", "{" + entry("a", "F8", "[2]", 0, 2) + "}", 2, "tensor 'a': unknown dtype 'F8' (known: F64"));
  c.push_back(hd("lower-case dtype", "{" + entry("a", "f32", "[2]", 0, 8) + "}", 8, "unknown dtype 'f32'"));
  c.push_back(hd("dtype not a string", "{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'a': dtype must be a string, found a number"));
  // ---- shape
  c.push_back(hd("negative shape", "{" + entry("a", "F32", "[-2]", 0, 8) + "}", 8, "tensor 'a': shape entry 0 is a negative number -2, must be a non-negative integer"));
  c.push_back(hd("float shape", "{" + entry("a", "F32", "[1,2.0]", 0, 8) + "}", 8, "tensor 'a': shape entry 1 is a non-integer number 2.0"));
  c.push_back(hd("exponent shape", "{" + entry("a", "F32", "[2e0]", 0, 8) + "}", 8, "shape entry 0 is a non-integer number 2e0"));
  c.push_back(hd("string shape entry", "{" + entry("a", "F32", "[\"2\"]", 0, 8) + "}", 8, "shape entry 0 is a string '2'"));
  c.push_back(hd("shape not an array", "{" + entry("a", "F32", "2", 0, 8) + "}", 8, "tensor 'a': shape must be an array of non-negative integers, found a number"));
  c.push_back(hd("shape product overflows", "{" + entry("a", "F32", "[4294967296,4294967296]", 0, 8) + "}", 8, "tensor 'a': shape [4294967296, 4294967296] is too large (its size overflows 64 bits)"));
  c.push_back(hd("byte count overflows", "{" + entry("a", "F32", "[4611686018427387904]", 0, 8) + "}", 8, "shape [4611686018427387904] is too large"));
  c.push_back(hd("overflow hidden by a zero", "{" + entry("a", "F32", "[1099511627776,1099511627776,0]", 0, 0) + "}", 0, "is too large"));
  c.push_back(hd("shape entry above int64", "{" + entry("a", "U8", "[9223372036854775808]", 0, 8) + "}", 8, "shape entry 0 is 9223372036854775808, too large"));
  c.push_back(hd("shape entry above uint64", "{" + entry("a", "U8", "[18446744073709551616]", 0, 8) + "}", 8, "shape entry 0 is a non-integer number 18446744073709551616"));
  std::string rank65 = "[1";
  for (int i = 1; i < 65; ++i) rank65 += ",1";
  c.push_back(hd("rank 65", "{" + entry("a", "U8", rank65 + "]", 0, 1) + "}", 1, "tensor 'a': shape has more than 64 dimensions"));
  // ---- data_offsets
  c.push_back(hd("offsets do not match the shape", "{" + entry("fc.weight", "F32", "[2,3]", 0, 12) + "}", 12, "tensor 'fc.weight': data_offsets [0, 12] do not match shape [2, 3] of F32 (24 bytes)"));
  c.push_back(hd("offsets reversed", "{" + entry("a", "U8", "[0]", 8, 0) + "}", 8, "tensor 'a': data_offsets [8, 0] end before they begin"));
  c.push_back(hd("one offset", "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0]}}", 0, "tensor 'a': data_offsets must be [begin, end], found 1 entries"));
  c.push_back(hd("three offsets", "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0,0]}}", 0, "data_offsets must be [begin, end], found more than 2 entries"));
  c.push_back(hd("negative offset", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}}", 1, "tensor 'a': data_offsets entry 0 is a negative number -1"));
  c.push_back(hd("offsets not an array", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":\"0-1\"}}", 1, "tensor 'a': data_offsets must be an array of non-negative integers, found a string"));
  c.push_back(hd("offsets past the end", "{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "I8", "[4]", 8, 12) + "}", 11, "tensor 'b': data_offsets [8, 12] extend past the end of the data (11 bytes"));
  c.push_back(hd("offsets reversed near 2^64", "{" + entry("a", "U8", "[2]", 18446744073709551614ULL, 0) + "}", 2, "end before they begin"));
  c.push_back(hd("offsets near 2^64", "{" + entry("a", "U8", "[1]", 18446744073709551614ULL, 18446744073709551615ULL) + "}", 2, "data_offsets [18446744073709551614, 18446744073709551615] extend past the end of the data (2 bytes"));
  c.push_back(hd("overlapping tensors", "{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "I8", "[3]", 4, 7) + "}", 8, "tensors 'a' [0, 8] and 'b' [4, 7] overlap"));
  c.push_back(hd("two tensors, same bytes", "{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "I32", "[2]", 0, 8) + "}", 8, "tensors 'a' [0, 8] and 'b' [0, 8] overlap"));
  c.push_back(hd("empty tensor inside another", "{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("e", "F32", "[0]", 4, 4) + "}", 8, "tensors 'a' [0, 8] and 'e' [4, 4] overlap"));
  c.push_back(hd("gap between tensors", "{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "I8", "[3]", 9, 12) + "}", 12, "data bytes [8, 9) are not covered by any tensor (gap before tensor 'b')"));
  c.push_back(hd("gap at the start", "{" + entry("a", "F32", "[2]", 1, 9) + "}", 9, "data bytes [0, 1) are not covered by any tensor"));
  c.push_back({"trailing bytes", cat(valid_file(), data_of(4)), "4 trailing bytes after the last tensor (data bytes [11, 15) are not covered by any tensor)"});
  c.push_back(hd("data but no tensors", "{}", 3, "3 trailing bytes after the last tensor"));
  // ---- names and metadata
  c.push_back(hd("duplicate tensor name", "{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("a", "F32", "[2]", 8, 16) + "}", 16, "duplicate tensor name 'a'"));
  c.push_back(hd("non-UTF-8 name", "{" + entry("a\xff", "U8", "[1]", 0, 1) + "}", 1, "header is not valid UTF-8 (byte 3 of the header)"));
  c.push_back(hd("overlong UTF-8", "{" + entry("\xc0\xaf", "U8", "[1]", 0, 1) + "}", 1, "header is not valid UTF-8 (byte 2 of the header)"));
  c.push_back(hd("UTF-8 surrogate", "{" + entry("\xed\xa0\x80", "U8", "[1]", 0, 1) + "}", 1, "header is not valid UTF-8"));
  c.push_back(hd("escaped lone surrogate", "{" + entry("\\ud800", "U8", "[1]", 0, 1) + "}", 1, "header is not valid JSON"));
  c.push_back(hd("name with a newline", "{" + entry("a\\nb", "X", "[1]", 0, 1) + "}", 1, "tensor 'a\\nb': unknown dtype 'X'"));
  c.push_back(hd("metadata value not a string", "{\"__metadata__\":{\"k\":1}}", 0, "__metadata__: value of 'k' must be a string, found a number"));
  c.push_back(hd("metadata value null", "{\"__metadata__\":{\"k\":null}}", 0, "__metadata__: value of 'k' must be a string, found null"));
  c.push_back(hd("metadata value an object", "{\"__metadata__\":{\"k\":{}}}", 0, "__metadata__: value of 'k' must be a string, found an object"));
  c.push_back(hd("metadata not an object", "{\"__metadata__\":[\"k\"]}", 0, "__metadata__ must be an object of strings, found an array"));
  c.push_back(hd("metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, "__metadata__ appears twice"));
  c.push_back(hd("metadata duplicate key", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, "__metadata__: duplicate key 'k'"));
  // ---- data contents
  c.push_back({"BOOL byte 2", file_of("{" + entry("m", "BOOL", "[3]", 0, 3) + "}", Bytes{1, 2, 0}), "tensor 'm': BOOL element 1 has byte value 2 (must be 0 or 1)"});
  return c;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<accepted>";
}

}  // namespace

TEST_CASE("safetensors corrupt: the base file of the table is valid", "[io][safetensors][corrupt]") {
  const Bytes v = valid_file();
  const TensorFile f = parse_safetensors(v.data(), v.size(), "base");
  REQUIRE(f.tensors.size() == 2);
  REQUIRE(f.find("b")->bytes == Bytes{0, 1, 0});
}

TEST_CASE("safetensors corrupt: each case is refused with a clear one-line message", "[io][safetensors][corrupt]") {
  TempDir dir;
  const auto cases = corrupt_cases();
  REQUIRE(cases.size() >= 20);
  int k = 0;
  for (const auto& c : cases) {
    INFO("case: " << c.what);
    const std::string mem = message_of([&] { parse_safetensors(c.bytes.data(), c.bytes.size(), "case.safetensors"); });
    INFO("message: " << mem);
    REQUIRE_THAT(mem, Catch::StartsWith("case.safetensors: ") && Catch::Contains(c.fragment));
    REQUIRE(mem.find_first_of("\n\r") == std::string::npos);
    // From disk: the same verdict, named by the path.
    const std::string path = dir / ("case" + std::to_string(k++) + ".safetensors");
    iot::write_bytes(path, c.bytes);
    const std::string disk = message_of([&] { read_safetensors(path); });
    REQUIRE(disk == path + mem.substr(std::string("case.safetensors").size()));
  }
}

TEST_CASE("safetensors corrupt: every truncation of a valid file is refused", "[io][safetensors][corrupt]") {
  TensorFile f;
  f.metadata["m"] = "v";
  f.tensors.emplace_back("x", to_raw(from_vector<float>({1, 2, 3})));
  f.tensors.emplace_back("empty", to_raw(zeros<double>({0})));
  f.tensors.emplace_back("ids", to_raw(from_vector<int64_t>({5})));
  const Bytes full = serialize_safetensors(f);
  REQUIRE(parse_safetensors(full.data(), full.size(), "full").tensors.size() == 3);
  for (size_t n = 0; n < full.size(); ++n) {
    INFO("first " << n << " bytes");
    const Bytes p = prefix(full, n);
    REQUIRE_THAT(message_of([&] { parse_safetensors(p.data(), p.size(), "t"); }), Catch::StartsWith("t: "));
  }
}

TEST_CASE("safetensors corrupt: the fuzzing corpus is refused or accepted, never more", "[io][safetensors][corrupt]") {
  namespace fs = std::filesystem;
  const fs::path corpus = fs::path(TXTCLS_SOURCE_DIR) / "tests" / "fuzz" / "corpus";
  REQUIRE(fs::is_directory(corpus));
  int accepted = 0, refused = 0;
  for (const auto& e : fs::directory_iterator(corpus)) {
    INFO(e.path().filename().string());
    const Bytes b = iot::file_bytes(e.path().string());
    try {
      const TensorFile f = parse_safetensors(b.data(), b.size(), "corpus");
      for (const auto& [name, raw] : f.tensors) {
        if (iot::is_float_dtype(raw.dtype)) (void)to_tensor_converting<double>(raw, name);
        else (void)to_tensor_converting<int64_t>(raw, name);
      }
      const Bytes again = serialize_safetensors(f);
      const TensorFile g = parse_safetensors(again.data(), again.size(), "again");
      REQUIRE(g.tensors.size() == f.tensors.size());
      REQUIRE(serialize_safetensors(g) == again);
      ++accepted;
    } catch (const Error& err) {
      REQUIRE_THAT(std::string(err.what()), Catch::StartsWith("corpus: "));
      ++refused;
    }
  }
  REQUIRE(accepted > 0);
  REQUIRE(refused > 0);
}

// ---------------------------------------------------------------- txtcls inspect

namespace {

struct RunResult {
  int status = -1;
  std::string out, err;
};

// Runs the txtcls program (path in $TXTCLS_CLI) with a time limit, capturing both streams.
RunResult run_cli(const TempDir& dir, const std::string& args) {
  const char* cli = std::getenv("TXTCLS_CLI");
  REQUIRE(cli);
  const std::string out = dir / "stdout.txt", err = dir / "stderr.txt";
  const std::string cmd = "timeout 60 '" + std::string(cli) + "' " + args + " >'" + out + "' 2>'" + err + "'";
  const int raw = std::system(cmd.c_str());
  REQUIRE(WIFEXITED(raw));
  RunResult r;
  r.status = WEXITSTATUS(raw);
  REQUIRE(r.status != 124);  // timed out: the program hung
  const auto o = iot::file_bytes(out), e = iot::file_bytes(err);
  r.out.assign(o.begin(), o.end());
  r.err.assign(e.begin(), e.end());
  return r;
}

std::string q(const std::string& path) { return "'" + path + "'"; }

}  // namespace

TEST_CASE("txtcls inspect: lists tensors and metadata of good files", "[.cli]") {
  TempDir dir;
  const auto fx = iot::fixture_dir();
  auto r = run_cli(dir, "inspect " + q((fx / "dtypes.safetensors").string()));
  INFO(r.out << r.err);
  REQUIRE(r.status == 0);
  REQUIRE(r.err.empty());
  REQUIRE_THAT(r.out, Catch::Contains("dtypes.safetensors: 12 tensors, 205 elements, 649 B of data (header 736 bytes)"));
  REQUIRE_THAT(r.out, Catch::Contains("\nname         dtype  shape      bytes\ni64          I64    [5]           40\n"));
  REQUIRE_THAT(r.out, Catch::Contains("\nf16          F16    [44]          88\n"));
  REQUIRE_THAT(r.out, Catch::Contains("\nbool         BOOL   [2, 3]         6\n"));

  r = run_cli(dir, "inspect " + q((fx / "metadata.safetensors").string()));
  REQUIRE(r.status == 0);
  REQUIRE_THAT(r.out, Catch::Contains("\nemb.w\xc3\xb6rter  F32    [2, 3]     24\n"));
  REQUIRE_THAT(r.out, Catch::Contains("metadata:\n  empty   ''\n  format  pt\n  lines   'a\\nb'\n"));

  const std::string many = (fx / "many.safetensors").string();
  r = run_cli(dir, "inspect --json " + q(many));
  REQUIRE(r.status == 0);
  const auto j = nlohmann::json::parse(r.out);
  REQUIRE(j.at("file") == many);
  REQUIRE(j.at("tensors").size() == 40);
  REQUIRE(j.at("metadata").at("tensors") == "40");
  REQUIRE(j.at("file_bytes").get<uint64_t>() == std::filesystem::file_size(many));
  REQUIRE(8 + j.at("header_bytes").get<uint64_t>() + j.at("data_bytes").get<uint64_t>() == std::filesystem::file_size(many));
  uint64_t next = 0;
  for (const auto& t : j.at("tensors")) {
    REQUIRE(t.at("data_offsets")[0] == next);
    next = t.at("data_offsets")[1].get<uint64_t>();
    REQUIRE(next - t.at("data_offsets")[0].get<uint64_t>() == t.at("bytes").get<uint64_t>());
  }
  REQUIRE(next == j.at("data_bytes").get<uint64_t>());

  r = run_cli(dir, "inspect " + q((fx / "no_tensors.safetensors").string()));
  REQUIRE(r.status == 0);
  REQUIRE_THAT(r.out, Catch::Contains("0 tensors") && Catch::Contains("only  metadata"));

  r = run_cli(dir, "--version");
  REQUIRE(r.status == 0);
  REQUIRE_THAT(r.out, Catch::StartsWith("txtcls ") && Catch::EndsWith("\n"));
}

TEST_CASE("txtcls inspect: a bad file gives one error line and exit status 1", "[.cli]") {
  TempDir dir;
  int k = 0;
  auto expect_error = [&](const std::string& path, const std::string& fragment) {
    INFO("file " << path);
    const auto r = run_cli(dir, "inspect " + q(path));
    INFO("stderr: " << r.err);
    REQUIRE(r.status == 1);
    REQUIRE(r.out.empty());
    REQUIRE_THAT(r.err, Catch::StartsWith("txtcls: error: " + path + ": ") && Catch::Contains(fragment) &&
                            Catch::EndsWith("\n"));
    REQUIRE(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  };
  for (const auto& c : corrupt_cases()) {
    INFO("case: " << c.what);
    const std::string path = dir / ("bad" + std::to_string(k++) + ".safetensors");
    iot::write_bytes(path, c.bytes);
    expect_error(path, c.fragment);
  }
  expect_error(dir / "missing.safetensors", "cannot open: No such file or directory");
  expect_error(dir.path.string(), "not a regular file");
}

TEST_CASE("txtcls: usage errors exit with status 2", "[.cli]") {
  TempDir dir;
  for (const std::string args : {"", "inspect", "frobnicate", "inspect --no-such-flag x"}) {
    INFO("args: " << args);
    const auto r = run_cli(dir, args);
    REQUIRE(r.status == 2);
    REQUIRE_THAT(r.err, Catch::Contains("usage error"));
  }
  const auto help = run_cli(dir, "--help");
  REQUIRE(help.status == 0);
  REQUIRE_THAT(help.out, Catch::Contains("inspect"));
}
