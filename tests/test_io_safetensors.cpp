// safetensors: files written by the reference implementation, round trips of every dtype,
// conversions, write-side validation and atomic replacement.
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <cstdlib>
#include <limits>

#include "io_test_util.hpp"

using namespace txtcls;
using namespace txtcls::io;
using iot::TempDir;

namespace {

const char* kFixtures[] = {"dtypes", "scalar", "empty", "metadata", "many", "no_tensors"};

template <class T>
Tensor<T> seq(const Shape& s, double scale, double shift) {
  Tensor<T> t(s);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = static_cast<T>(static_cast<double>(i) * scale + shift);
  return t;
}

// One tensor of every dtype, with awkward values where the dtype has them.
TensorFile every_dtype_file() {
  TensorFile f;
  f.metadata = {{"format", "pt"}, {"note", "h\xc3\xa9llo \"q\"\nline"}, {"empty", ""}};
  f.tensors.emplace_back("f64", to_raw(from_vector<double>({1.5, -0.0, 1e300, 4.9e-324, -INFINITY, NAN}, {2, 3})));
  f.tensors.emplace_back("f32", to_raw(seq<float>({3, 4}, 0.1, -0.5)));
  f.tensors.emplace_back("f16", to_raw_converting(from_vector<float>({0.5f, -0.0f, 65504.f, 5.9604645e-08f, INFINITY}), DType::F16));
  f.tensors.emplace_back("bf16", to_raw_converting(from_vector<double>({1.0, -3.0, 3.3895313892515355e38, 0.0078125}), DType::BF16));
  f.tensors.emplace_back("i64", to_raw(from_vector<int64_t>({std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), 0, -1})));
  f.tensors.emplace_back("i32", to_raw(from_vector<int32_t>({std::numeric_limits<int32_t>::min(), 7, std::numeric_limits<int32_t>::max()}, {3, 1})));
  f.tensors.emplace_back("i16", to_raw(from_vector<int16_t>({-32768, 32767})));
  f.tensors.emplace_back("i8", to_raw(from_vector<int8_t>({-128, 127, 0, -1}, {2, 2})));
  f.tensors.emplace_back("u8", to_raw(from_vector<uint8_t>({0, 255, 17})));
  f.tensors.emplace_back("bool", to_raw(from_vector<bool>({true, false, false, true}, {2, 1, 2})));
  f.tensors.emplace_back("scalar", to_raw(scalar<double>(-2.25)));
  f.tensors.emplace_back("empty_rows", to_raw(zeros<float>({0, 3})));
  f.tensors.emplace_back("emb.w\xc3\xb6rter", to_raw(seq<float>({2, 2}, 1, 0)));
  return f;
}

void require_same(const TensorFile& a, const TensorFile& b) {
  REQUIRE(a.metadata == b.metadata);
  REQUIRE(a.tensors.size() == b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    INFO("tensor " << a.tensors[i].first);
    REQUIRE(a.tensors[i].first == b.tensors[i].first);
    REQUIRE(a.tensors[i].second.dtype == b.tensors[i].second.dtype);
    REQUIRE(a.tensors[i].second.shape == b.tensors[i].second.shape);
    REQUIRE(a.tensors[i].second.bytes == b.tensors[i].second.bytes);
  }
}

}  // namespace

TEST_CASE("safetensors: files written by the reference implementation load with the right values", "[io][safetensors]") {
  for (const char* name : kFixtures) {
    INFO("fixture " << name);
    const auto dir = iot::fixture_dir();
    const auto expected = iot::load_json(dir / (std::string(name) + ".json"));
    const std::string path = (dir / (std::string(name) + ".safetensors")).string();
    const TensorFile f = read_safetensors(path);
    iot::require_matches(f, expected);
    // The in-memory parser sees the same file.
    const auto bytes = iot::file_bytes(path);
    require_same(f, parse_safetensors(bytes.data(), bytes.size(), name));
  }
}

TEST_CASE("safetensors: F16/BF16 rounding agrees bit for bit with the reference", "[io][safetensors]") {
  const TensorFile f = read_safetensors((iot::fixture_dir() / "dtypes.safetensors").string());
  for (const char* name : {"f16", "bf16"}) {
    INFO(name);
    const RawTensor* stored = f.find(name);
    const RawTensor* source = f.find(std::string(name) + "_source");
    REQUIRE(stored);
    REQUIRE(source);
    const auto src = to_tensor<float>(*source, "source").to_vector();
    const auto bits = iot::bits16(*stored);
    REQUIRE(bits.size() == src.size());
    const bool f16 = std::string(name) == "f16";
    for (size_t i = 0; i < src.size(); ++i) {
      INFO("element " << i << " = " << src[i]);
      const uint16_t mine = f16 ? half::float_to_f16(src[i]) : half::float_to_bf16(src[i]);
      if (std::isnan(src[i])) REQUIRE(std::isnan(f16 ? half::f16_to_float(mine) : half::bf16_to_float(mine)));
      else REQUIRE(mine == bits[i]);
    }
    // And the library's own narrowing of the whole tensor stores the same bytes.
    const auto again = to_raw_converting(to_tensor<float>(*source, "source"), stored->dtype);
    for (size_t i = 0; i < src.size(); ++i)
      if (!std::isnan(src[i])) REQUIRE(iot::bits16(again)[i] == bits[i]);
  }
}

TEST_CASE("safetensors: every dtype round-trips bit for bit with deterministic bytes", "[io][safetensors]") {
  TempDir dir;
  const TensorFile f = every_dtype_file();
  write_safetensors(dir / "a.safetensors", f);
  write_safetensors(dir / "b.safetensors", f);
  const auto bytes = iot::file_bytes(dir / "a.safetensors");
  REQUIRE(bytes == iot::file_bytes(dir / "b.safetensors"));
  REQUIRE(bytes == serialize_safetensors(f));
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  REQUIRE((8 + n) % 8 == 0);  // data starts aligned
  REQUIRE(bytes[8] == '{');
  const TensorFile back = read_safetensors(dir / "a.safetensors");
  require_same(f, back);  // order, names, dtypes, shapes, bytes, metadata
  REQUIRE(dir.entries() == std::vector<std::string>{"a.safetensors", "b.safetensors"});

  // Values, through the typed API.
  REQUIRE(to_tensor<double>(*back.find("f64"), "f64").at({0, 1}) == 0.0);
  REQUIRE(std::signbit(to_tensor<double>(*back.find("f64"), "f64").at({0, 1})));
  REQUIRE(std::isnan(to_tensor<double>(*back.find("f64"), "f64").at({1, 2})));
  REQUIRE(to_tensor<int64_t>(*back.find("i64"), "i64").at({0}) == std::numeric_limits<int64_t>::min());
  REQUIRE(to_tensor<bool>(*back.find("bool"), "bool").at({1, 0, 1}) == true);
  REQUIRE(to_tensor<double>(*back.find("scalar"), "scalar").item() == -2.25);
  REQUIRE(to_tensor<double>(*back.find("scalar"), "scalar").dim() == 0);
  REQUIRE(to_tensor<float>(*back.find("empty_rows"), "empty_rows").shape() == Shape{0, 3});
  const auto h = to_tensor_converting<float>(*back.find("f16"), "f16").to_vector();
  REQUIRE(h == std::vector<float>{0.5f, -0.0f, 65504.f, 5.9604645e-08f, INFINITY});
  const auto b = to_tensor_converting<double>(*back.find("bf16"), "bf16").to_vector();
  REQUIRE(b == std::vector<double>{1.0, -3.0, 3.3895313892515355e38, 0.0078125});
}

TEST_CASE("safetensors: views are written contiguously in row-major order", "[io][safetensors]") {
  TempDir dir;
  auto base = seq<double>({3, 4}, 1, 0);
  auto leaf = seq<double>({2, 3}, 0.5, 1).set_requires_grad();
  std::map<std::string, Tensor<double>> views = {
      {"transposed", base.t()},                    // [4, 3], strides [1, 4]
      {"strided", base.slice(1, 0, 4, 2)},         // every other column
      {"expanded", from_vector<double>({7, 8}, {2, 1}).expand({2, 3})},  // stride 0
      {"selected", base.select(1, 2)},             // offset into the storage
      {"grad_leaf_view", leaf.t()},                // part of an autograd graph
  };
  save_tensors(dir / "v.safetensors", views, {{"kind", "views"}});
  const auto back = load_tensors<double>(dir / "v.safetensors");
  REQUIRE(back.size() == views.size());
  for (const auto& [name, v] : views) {
    INFO(name);
    REQUIRE(back.at(name).shape() == v.shape());
    REQUIRE(back.at(name).is_contiguous());
    REQUIRE(back.at(name).to_vector() == v.to_vector());
  }
  REQUIRE(back.at("transposed").at({3, 1}) == base.at({1, 3}));
  REQUIRE(leaf.is_leaf());
  REQUIRE(read_safetensors(dir / "v.safetensors").metadata.at("kind") == "views");
  // A file is read back in the order its bytes are stored: save_tensors writes the map's order.
  const auto f = read_safetensors(dir / "v.safetensors");
  std::vector<std::string> order;
  for (const auto& [n, t] : f.tensors) order.push_back(n);
  REQUIRE(order == std::vector<std::string>{"expanded", "grad_leaf_view", "selected", "strided", "transposed"});
}

TEST_CASE("safetensors: strict and converting access name the tensor and both dtypes", "[io][safetensors]") {
  const RawTensor f16 = to_raw_converting(from_vector<double>({1.0, 0.25}), DType::F16);
  REQUIRE_THROWS_WITH(to_tensor<float>(f16, "fc.weight"),
                      Catch::StartsWith("fc.weight: stored as F16, but F32 was requested"));
  REQUIRE(to_tensor_converting<double>(f16, "x").to_vector() == std::vector<double>{1.0, 0.25});
  const RawTensor i8 = to_raw(from_vector<int8_t>({-3, 4}));
  REQUIRE(to_tensor_converting<int64_t>(i8, "ids").to_vector() == std::vector<int64_t>{-3, 4});
  REQUIRE_THROWS_WITH(to_tensor_converting<float>(i8, "ids"), Catch::StartsWith("ids: cannot convert I8 to F32"));
  REQUIRE_THROWS_WITH(to_tensor_converting<int64_t>(f16, "w"), Catch::StartsWith("w: cannot convert F16 to I64"));
  REQUIRE_THROWS_WITH(to_tensor<int64_t>(i8, "ids"), Catch::Contains("stored as I8") && Catch::Contains("I64"));
  // F64 narrowed to float rounds to nearest.
  const RawTensor f64 = to_raw(from_vector<double>({0.1, 1e300}));
  const auto nf = to_tensor_converting<float>(f64, "d").to_vector();
  REQUIRE(nf[0] == 0.1f);
  REQUIRE(std::isinf(nf[1]));
  // Storing integers in a narrower dtype checks the range.
  const RawTensor u8 = to_raw_converting(from_vector<int64_t>({0, 255}), DType::U8);
  REQUIRE(u8.bytes == std::vector<uint8_t>{0, 255});
  REQUIRE_THROWS_WITH(to_raw_converting(from_vector<int64_t>({1, 300}), DType::I8, "ids"),
                      Catch::StartsWith("ids: element 1 = 300 does not fit in I8"));
  REQUIRE_THROWS_WITH(to_raw_converting(from_vector<int64_t>({0, 2}), DType::BOOL, "m"),
                      Catch::Contains("element 1 = 2 does not fit in BOOL"));
  REQUIRE_THROWS_WITH(to_raw_converting(from_vector<double>({1}), DType::I32, "w"),
                      Catch::StartsWith("w: cannot store F64 as I32"));
  // A RawTensor whose bytes do not fit its shape is refused, not read past its end.
  RawTensor bad = to_raw(from_vector<float>({1, 2}));
  bad.shape = {3};
  REQUIRE_THROWS_WITH(to_tensor<float>(bad, "b"), Catch::StartsWith("b: holds 8 bytes, but shape [3] of F32 needs 12"));
  RawTensor bad_bool{DType::BOOL, {2}, {1, 2}};
  REQUIRE_THROWS_WITH(to_tensor<bool>(bad_bool, "m"), Catch::StartsWith("m: BOOL element 1 has byte value 2"));
}

TEST_CASE("safetensors: load_tensors refuses a mixed-dtype file, naming file, tensor and dtypes", "[io][safetensors]") {
  const std::string path = (iot::fixture_dir() / "dtypes.safetensors").string();
  REQUIRE_THROWS_WITH(load_tensors<float>(path), Catch::StartsWith(path + ": tensor '") && Catch::Contains("was requested"));
  const auto m = load_tensors<float>((iot::fixture_dir() / "metadata.safetensors").string());
  REQUIRE(m.at("emb.w\xc3\xb6rter").to_vector() == std::vector<float>{0, 0.25f, 0.5f, 0.75f, 1, 1.25f});
}

TEST_CASE("safetensors: writing refuses what cannot be read back, before touching the disk", "[io][safetensors]") {
  TempDir dir;
  const std::string path = dir / "w.safetensors";
  auto one = [](std::string name, RawTensor t) {
    TensorFile f;
    f.tensors.emplace_back(std::move(name), std::move(t));
    return f;
  };
  const RawTensor ok = to_raw(from_vector<float>({1, 2}));
  TensorFile dup = one("a", ok);
  dup.tensors.emplace_back("a", ok);
  REQUIRE_THROWS_WITH(write_safetensors(path, dup), Catch::StartsWith(path + ": duplicate tensor name 'a'"));
  REQUIRE_THROWS_WITH(write_safetensors(path, one("__metadata__", ok)), Catch::Contains("'__metadata__' is reserved"));
  REQUIRE_THROWS_WITH(write_safetensors(path, one("bad\xff", ok)), Catch::Contains("tensor name 'bad\\xff' is not valid UTF-8"));
  RawTensor short_bytes = ok;
  short_bytes.bytes.pop_back();
  REQUIRE_THROWS_WITH(write_safetensors(path, one("s", short_bytes)), Catch::StartsWith(path + ": tensor 's': holds 7 bytes"));
  REQUIRE_THROWS_WITH(write_safetensors(path, one("m", RawTensor{DType::BOOL, {1}, {7}})),
                      Catch::Contains("BOOL element 0 has byte value 7"));
  REQUIRE_THROWS_WITH(write_safetensors(path, one("n", RawTensor{DType::F32, {-1}, {}})), Catch::Contains("negative size"));
  TensorFile meta = one("a", ok);
  meta.metadata["k"] = "\xc0\xaf";
  REQUIRE_THROWS_WITH(write_safetensors(path, meta), Catch::Contains("__metadata__ entry 'k' is not valid UTF-8"));
  REQUIRE(dir.entries().empty());
  // An empty file (no tensors, no metadata) is valid.
  write_safetensors(path, TensorFile{});
  REQUIRE(read_safetensors(path).tensors.empty());
  REQUIRE(iot::file_bytes(path).size() == 16);  // length + "{}" padded to 8
}

TEST_CASE("safetensors: reading names the file when it cannot be opened", "[io][safetensors]") {
  TempDir dir;
  REQUIRE_THROWS_WITH(read_safetensors(dir / "missing.safetensors"),
                      Catch::StartsWith(dir / "missing.safetensors" + ": cannot open: No such file"));
  REQUIRE_THROWS_WITH(read_safetensors(dir.path.string()), Catch::StartsWith(dir.path.string() + ": not a regular file"));
  REQUIRE(::mkfifo((dir / "fifo").c_str(), 0600) == 0);
  REQUIRE_THROWS_WITH(read_safetensors(dir / "fifo"), Catch::Contains("fifo: not a regular file"));  // and no hang
}

// ---------------------------------------------------------------- atomic replacement

TEST_CASE("safetensors: a write into a missing directory fails cleanly", "[io][safetensors][atomic]") {
  TempDir dir;
  const std::string path = dir / "no/such/dir/m.safetensors";
  REQUIRE_THROWS_WITH(write_safetensors(path, every_dtype_file()),
                      Catch::StartsWith(path + ": cannot create a temporary file next to it: No such file"));
  REQUIRE(dir.entries().empty());
}

TEST_CASE("safetensors: a failed overwrite leaves the old file and no temporary file", "[io][safetensors][atomic]") {
  TempDir dir;
  const std::string path = dir / "model.safetensors";
  TensorFile small;
  small.tensors.emplace_back("w", to_raw(from_vector<float>({1, 2, 3})));
  write_safetensors(path, small);
  const auto before = iot::file_bytes(path);

  SECTION("the disk fills up in the middle of the data") {
    // A file size limit makes write() fail with EFBIG part way, as a full disk would.
    TensorFile big;
    big.tensors.emplace_back("w", to_raw(zeros<float>({1 << 16})));
    struct rlimit old {};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
    auto* old_handler = ::signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = old;
    lim.rlim_cur = 4096;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &lim) == 0);
    std::string error;
    try {
      write_safetensors(path, big);
    } catch (const Error& e) {
      error = e.what();
    }
    ::setrlimit(RLIMIT_FSIZE, &old);
    ::signal(SIGXFSZ, old_handler);
    REQUIRE_THAT(error, Catch::StartsWith(path + ": cannot write: File too large"));
  }
  SECTION("the target cannot be replaced (it became a directory)") {
    const std::string target = dir / "taken";
    std::filesystem::create_directories(std::filesystem::path(target) / "inside");
    REQUIRE_THROWS_WITH(write_safetensors(target, small), Catch::Contains("cannot rename the temporary file over it"));
    REQUIRE(std::filesystem::is_directory(std::filesystem::path(target) / "inside"));
    std::filesystem::remove_all(target);
  }
  SECTION("the directory is read-only") {
    if (::geteuid() == 0) {
      WARN("running as root: permission bits do not stop writes, so this section checks nothing");
    } else {
      namespace fs = std::filesystem;
      fs::permissions(dir.path, fs::perms::owner_write, fs::perm_options::remove);
      std::string error;
      try {
        write_safetensors(path, small);
      } catch (const Error& e) {
        error = e.what();
      }
      fs::permissions(dir.path, fs::perms::owner_write, fs::perm_options::add);
      REQUIRE_THAT(error, Catch::Contains("cannot create a temporary file next to it: Permission denied"));
    }
  }
  REQUIRE(iot::file_bytes(path) == before);
  REQUIRE(dir.entries() == std::vector<std::string>{"model.safetensors"});
}

TEST_CASE("safetensors: a successful overwrite replaces the whole file", "[io][safetensors][atomic]") {
  TempDir dir;
  const std::string path = dir / "m.safetensors";
  save_tensors<float>(path, {{"a", zeros<float>({100})}});
  save_tensors<float>(path, {{"b", ones<float>({2})}});
  const auto back = load_tensors<float>(path);
  REQUIRE(back.size() == 1);
  REQUIRE(back.at("b").to_vector() == std::vector<float>{1, 1});
  REQUIRE(dir.entries() == std::vector<std::string>{"m.safetensors"});
}

// ---------------------------------------------------------------- the other direction of the fixtures

// Writes files for tools/check_safetensors_interop.py (run by the io_interop ctest entries) into
// $TXTCLS_INTEROP_DIR. The expected values are written from the source values, not read back.
TEST_CASE("safetensors: write files for the reference implementation to check", "[.interop_write]") {
  const char* out = std::getenv("TXTCLS_INTEROP_DIR");
  INFO("set TXTCLS_INTEROP_DIR to the directory to write into");
  REQUIRE(out);
  std::filesystem::create_directories(out);
  using J = nlohmann::ordered_json;
  auto num = [](double v) -> J {
    if (std::isnan(v)) return "nan";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    return v;
  };
  TensorFile f;
  J tensors = J::array();
  auto add_float = [&](const std::string& name, RawTensor raw, const std::vector<double>& values) {
    J vals = J::array();
    for (double v : values) vals.push_back(num(v));
    tensors.push_back({{"name", name}, {"dtype", std::string(dtype_name(raw.dtype))}, {"shape", raw.shape}, {"values", vals}});
    f.tensors.emplace_back(name, std::move(raw));
  };
  auto add_int = [&](const std::string& name, RawTensor raw, const std::vector<int64_t>& values) {
    J vals = J::array();
    for (int64_t v : values) raw.dtype == DType::BOOL ? vals.push_back(v != 0) : vals.push_back(v);
    tensors.push_back({{"name", name}, {"dtype", std::string(dtype_name(raw.dtype))}, {"shape", raw.shape}, {"values", vals}});
    f.tensors.emplace_back(name, std::move(raw));
  };
  const std::vector<double> d = {1.5, -0.0, 1e300, 4.9406564584124654e-324, -INFINITY, NAN};
  add_float("f64", to_raw(from_vector<double>(d, {2, 3})), d);
  auto base = seq<float>({3, 4}, 0.25, -1);
  std::vector<double> transposed;
  for (int64_t j = 0; j < 4; ++j)
    for (int64_t i = 0; i < 3; ++i) transposed.push_back(static_cast<double>(base.at({i, j})));
  add_float("f32.transposed", to_raw(base.t()), transposed);
  // F16/BF16 values that the formats hold exactly, so the expectation does not depend on rounding.
  const std::vector<double> h = {0.5, -0.0, 65504, 5.9604644775390625e-08, -1.5, INFINITY, NAN};
  add_float("f16", to_raw_converting(from_vector<double>(h), DType::F16), h);
  const std::vector<double> bf = {1.0, -3.0, 3.3895313892515355e38, 9.183549615799121e-41, 0.0078125, -INFINITY};
  add_float("bf16", to_raw_converting(from_vector<double>(bf, {2, 3}), DType::BF16), bf);
  add_float("scalar", to_raw(scalar<double>(-2.25)), {-2.25});
  add_float("empty", to_raw(zeros<float>({0, 3})), {});
  const std::vector<int64_t> i64 = {std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), 0, -1};
  add_int("i64", to_raw(from_vector<int64_t>(i64)), i64);
  add_int("i32", to_raw_converting(from_vector<int64_t>({-2147483648LL, 2147483647, 5}), DType::I32), {-2147483648LL, 2147483647, 5});
  add_int("i16", to_raw_converting(from_vector<int64_t>({-32768, 32767}), DType::I16), {-32768, 32767});
  add_int("i8", to_raw_converting(from_vector<int64_t>({-128, 127, 3, -4}, {2, 2}), DType::I8), {-128, 127, 3, -4});
  auto u8 = from_vector<uint8_t>({0, 9, 255, 1, 200, 7}, {3, 2});
  add_int("u8.column", to_raw(u8.select(1, 0)), {0, 255, 200});  // a strided view
  add_int("bool", to_raw(from_vector<bool>({true, false, true})), {1, 0, 1});
  add_int("empty_ids", to_raw(zeros<int64_t>({2, 0})), {});
  add_float("emb.w\xc3\xb6rter", to_raw(from_vector<float>({1, 2})), {1, 2});
  f.metadata = {{"format", "pt"}, {"note", "h\xc3\xa9llo \xe2\x9c\x93 \"quoted\"\nnext line"}, {"empty", ""}};

  auto write_pair = [&](const std::string& stem, const TensorFile& file, const J& expected) {
    const std::string base_path = (std::filesystem::path(out) / stem).string();
    write_safetensors(base_path + ".safetensors", file);
    std::ofstream js(base_path + ".json");
    js << expected.dump(1) << '\n';
    REQUIRE(js.good());
    // Our own reader agrees with what the checker will be told.
    iot::require_matches(read_safetensors(base_path + ".safetensors"), nlohmann::json::parse(expected.dump()));
  };
  write_pair("written_by_txtcls", f, J{{"metadata", f.metadata}, {"tensors", tensors}});
  TensorFile meta_only;
  meta_only.metadata = {{"only", "metadata"}};
  write_pair("metadata_only", meta_only, J{{"metadata", meta_only.metadata}, {"tensors", J::array()}});
}
