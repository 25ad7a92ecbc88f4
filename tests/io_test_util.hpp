#pragma once
// Helpers for the file-format tests: scratch directories, raw file bytes, and comparison of a
// TensorFile with the JSON descriptions of tools/make_safetensors_fixtures.py.
#include "test_paths.hpp"
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "txtcls/io/safetensors.hpp"

namespace iot {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed with everything in it.
struct TempDir {
  fs::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    path = fs::temp_directory_path() /
           ("txtcls_io_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter.fetch_add(1)));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
};

inline std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  REQUIRE(out.good());
}

inline fs::path fixture_dir() { return fs::path(TXTCLS_SOURCE_DIR) / "tests" / "fixtures" / "safetensors"; }

inline nlohmann::json load_json(const fs::path& p) {
  std::ifstream in(p);
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

// A float from the JSON description: a number, or "nan", "inf", "-inf".
inline double json_double(const nlohmann::json& v) {
  if (v.is_string()) {
    const auto s = v.get<std::string>();
    if (s == "nan") return std::nan("");
    return s == "inf" ? INFINITY : -INFINITY;
  }
  return v.get<double>();
}

// Exact equality that tells -0.0 from 0.0 and accepts NaN for NaN.
inline bool same_double(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return a == b && std::signbit(a) == std::signbit(b);
}

inline bool is_float_dtype(txtcls::DType d) {
  using txtcls::DType;
  return d == DType::F64 || d == DType::F32 || d == DType::F16 || d == DType::BF16;
}

// Values of one stored tensor through the strict path, widened for comparison.
inline std::vector<double> strict_values_as_double(const txtcls::io::RawTensor& r, const std::string& name) {
  using namespace txtcls;
  using namespace txtcls::io;
  auto widen = [](auto t) {
    std::vector<double> v;
    for (auto x : t.to_vector()) v.push_back(static_cast<double>(x));
    return v;
  };
  switch (r.dtype) {
    case DType::F64: return widen(to_tensor<double>(r, name));
    case DType::F32: return widen(to_tensor<float>(r, name));
    case DType::I64: return widen(to_tensor<int64_t>(r, name));
    case DType::I32: return widen(to_tensor<int32_t>(r, name));
    case DType::I16: return widen(to_tensor<int16_t>(r, name));
    case DType::I8: return widen(to_tensor<int8_t>(r, name));
    case DType::U8: return widen(to_tensor<uint8_t>(r, name));
    case DType::BOOL: return widen(to_tensor<bool>(r, name));
    default: return widen(to_tensor_converting<double>(r, name));  // no 16-bit tensor type
  }
}

inline std::vector<uint16_t> bits16(const txtcls::io::RawTensor& r) {
  std::vector<uint16_t> v(r.bytes.size() / 2);
  if (!v.empty()) std::memcpy(v.data(), r.bytes.data(), r.bytes.size());
  return v;
}

// REQUIREs that `f` holds exactly what the JSON description says, in the same order.
inline void require_matches(const txtcls::io::TensorFile& f, const nlohmann::json& expected) {
  using namespace txtcls;
  using namespace txtcls::io;
  REQUIRE(f.metadata == expected.at("metadata").get<std::map<std::string, std::string>>());
  const auto& tensors = expected.at("tensors");
  REQUIRE(f.tensors.size() == tensors.size());
  for (size_t k = 0; k < tensors.size(); ++k) {
    const auto& e = tensors[k];
    const auto& [name, raw] = f.tensors[k];
    INFO("tensor " << name);
    REQUIRE(name == e.at("name").get<std::string>());
    REQUIRE(dtype_name(raw.dtype) == e.at("dtype").get<std::string>());
    REQUIRE(raw.shape == e.at("shape").get<Shape>());
    const auto& want = e.at("values");
    REQUIRE(static_cast<int64_t>(want.size()) == raw.numel());
    const std::vector<double> strict = strict_values_as_double(raw, name);
    if (is_float_dtype(raw.dtype)) {
      const auto conv = to_tensor_converting<double>(raw, name).to_vector();
      const auto conv_f = to_tensor_converting<float>(raw, name).to_vector();
      for (size_t i = 0; i < want.size(); ++i) {
        INFO("element " << i);
        const double w = json_double(want[i]);
        REQUIRE(same_double(conv[i], w));
        REQUIRE(same_double(strict[i], w));
        REQUIRE(same_double(static_cast<double>(conv_f[i]), static_cast<double>(static_cast<float>(w))));
      }
    } else {
      const auto conv = to_tensor_converting<int64_t>(raw, name).to_vector();
      for (size_t i = 0; i < want.size(); ++i) {
        INFO("element " << i);
        const int64_t w = want[i].is_boolean() ? int64_t(want[i].get<bool>()) : want[i].get<int64_t>();
        REQUIRE(conv[i] == w);
        REQUIRE(strict[i] == static_cast<double>(w));
      }
    }
    if (e.contains("bits")) REQUIRE(bits16(raw) == e.at("bits").get<std::vector<uint16_t>>());
  }
}

}  // namespace iot
