#pragma once
// Where a tensor's storage lives. Model code takes a Device argument and never branches on it:
// ops dispatch on the device of their inputs.
#include <string>

#include "txtcls/core/error.hpp"

namespace txtcls {

struct Device {
  enum class Kind { CPU, CUDA };
  Kind kind = Kind::CPU;
  int index = 0;

  static Device cpu() { return {}; }
  static Device cuda(int i = 0) { return {Kind::CUDA, i}; }
  bool is_cpu() const { return kind == Kind::CPU; }
  bool is_cuda() const { return kind == Kind::CUDA; }
  bool operator==(const Device& o) const { return kind == o.kind && (kind == Kind::CPU || index == o.index); }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }

  // "cpu", "cuda", "cuda:1"
  static Device parse(const std::string& s) {
    if (s == "cpu") return cpu();
    if (s == "cuda") return cuda(0);
    if (s.rfind("cuda:", 0) == 0) {
      try {
        return cuda(std::stoi(s.substr(5)));
      } catch (const std::exception&) {
      }
    }
    detail::fail("unknown device '", s, "' (expected cpu, cuda or cuda:N)");
  }
};

}  // namespace txtcls
