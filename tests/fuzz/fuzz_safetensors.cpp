// libFuzzer target for the safetensors reader. Properties checked on every input:
//  - a refused input throws txtcls::Error (nothing else) with a one-line message that starts
//    with the source name;
//  - an accepted input converts tensor by tensor, and writing it out and reading it back gives
//    the same file again (same tensors, and the same bytes when written a second time).
// Sanitizers (address, undefined) turn memory errors and undefined behaviour into crashes.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "txtcls/io/safetensors.hpp"

namespace {

void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_safetensors: property violated: %s\n", what);
    std::abort();
  }
}

bool is_float(txtcls::DType d) {
  using txtcls::DType;
  return d == DType::F64 || d == DType::F32 || d == DType::F16 || d == DType::BF16;
}

// The typed accessors must accept what the parser accepted.
void convert_all(const txtcls::io::TensorFile& f) {
  using namespace txtcls;
  using namespace txtcls::io;
  for (const auto& [name, raw] : f.tensors) {
    if (is_float(raw.dtype)) {
      require(to_tensor_converting<double>(raw, name).numel() == raw.numel(), "F* -> double");
      require(to_tensor_converting<float>(raw, name).numel() == raw.numel(), "F* -> float");
    } else {
      require(to_tensor_converting<int64_t>(raw, name).numel() == raw.numel(), "I*/U8/BOOL -> int64");
    }
    switch (raw.dtype) {
      case DType::F64: (void)to_tensor<double>(raw, name); break;
      case DType::F32: (void)to_tensor<float>(raw, name); break;
      case DType::I64: (void)to_tensor<int64_t>(raw, name); break;
      case DType::I32: (void)to_tensor<int32_t>(raw, name); break;
      case DType::I16: (void)to_tensor<int16_t>(raw, name); break;
      case DType::I8: (void)to_tensor<int8_t>(raw, name); break;
      case DType::U8: (void)to_tensor<uint8_t>(raw, name); break;
      case DType::BOOL: (void)to_tensor<bool>(raw, name); break;
      default: break;  // F16/BF16 have no tensor type of their own
    }
  }
}

bool same(const txtcls::io::TensorFile& a, const txtcls::io::TensorFile& b) {
  if (a.metadata != b.metadata || a.tensors.size() != b.tensors.size()) return false;
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const auto& [na, ta] = a.tensors[i];
    const auto& [nb, tb] = b.tensors[i];
    if (na != nb || ta.dtype != tb.dtype || ta.shape != tb.shape || ta.bytes != tb.bytes) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  txtcls::io::TensorFile f;
  try {
    f = txtcls::io::parse_safetensors(data, size, "fuzz");
  } catch (const txtcls::Error& e) {
    const std::string_view msg = e.what();
    require(msg.rfind("fuzz: ", 0) == 0, "message starts with the source name");
    require(msg.find_first_of("\n\r") == std::string_view::npos, "message is one line");
    return 0;
  }
  convert_all(f);
  const std::vector<uint8_t> bytes = txtcls::io::serialize_safetensors(f, "fuzz-out");
  const txtcls::io::TensorFile g = txtcls::io::parse_safetensors(bytes.data(), bytes.size(), "fuzz-again");
  require(same(f, g), "an accepted file survives a write and a read unchanged");
  require(txtcls::io::serialize_safetensors(g, "fuzz-out") == bytes, "writing is deterministic");
  return 0;
}
