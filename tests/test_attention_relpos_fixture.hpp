#pragma once
// Shared by tests/test_attention_relpos*.cpp: reading the Hugging Face parity fixtures written by
// tools/make_attention_fixtures.py, comparing tensors against them, and module-level
// finite-difference checks.
#include "test_paths.hpp"
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <string>

#include "test_util.hpp"
#include "txtcls/io/safetensors.hpp"

namespace relpos {

using txtcls::Tensor;
namespace fs = std::filesystem;

inline fs::path fixture_dir() { return fs::path(TXTCLS_SOURCE_DIR) / "tests" / "fixtures" / "attention"; }

// One fixture file: tensors by name (any stored dtype, converted on access) and string metadata.
struct Fixture {
  std::string path;
  txtcls::io::TensorFile file;

  explicit Fixture(const std::string& name) : path((fixture_dir() / name).string()) {
    file = txtcls::io::read_safetensors(path);
  }

  bool has(const std::string& name) const { return file.find(name) != nullptr; }

  const txtcls::io::RawTensor& raw(const std::string& name) const {
    const txtcls::io::RawTensor* r = file.find(name);
    INFO(path << ": tensor " << name);
    REQUIRE(r != nullptr);
    return *r;
  }

  template <class T>
  Tensor<T> get(const std::string& name) const {
    return txtcls::io::to_tensor_converting<T>(raw(name), path + ": " + name);
  }
  // Undefined when absent.
  template <class T>
  Tensor<T> get_opt(const std::string& name) const {
    return has(name) ? get<T>(name) : Tensor<T>();
  }
  Tensor<uint8_t> mask(const std::string& name) const {
    return has(name) ? txtcls::cast<uint8_t>(get<int64_t>(name)) : Tensor<uint8_t>();
  }

  std::string meta(const std::string& key) const {
    auto it = file.metadata.find(key);
    INFO(path << ": metadata " << key);
    REQUIRE(it != file.metadata.end());
    return it->second;
  }
  int64_t meta_int(const std::string& key) const { return std::stoll(meta(key)); }
  double meta_double(const std::string& key) const { return std::stod(meta(key)); }

  // Tensors under a prefix, with the prefix removed ("weights/q" -> "q").
  template <class T>
  std::map<std::string, Tensor<T>> under(const std::string& prefix) const {
    std::map<std::string, Tensor<T>> out;
    for (const auto& [n, r] : file.tensors)
      if (n.rfind(prefix, 0) == 0) out.emplace(n.substr(prefix.size()), get<T>(n));
    return out;
  }
};

// max |a - b| / max |ref|: the parity measure (relative to the largest reference value).
template <class T>
double rel_err(const Tensor<T>& got, const Tensor<double>& ref) {
  auto a = got.to_vector();
  auto b = ref.to_vector();
  double scale = 0, worst = 0;
  for (double v : b) scale = std::max(scale, std::abs(v));
  scale = std::max(scale, 1e-300);
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]) / scale);
  return worst;
}

// Records the worst parity error per fixture; printed when TXTCLS_PARITY_REPORT is set.
struct ParityLog {
  std::string name;
  double worst_out = 0, worst_grad = 0;
  ~ParityLog() {
    if (std::getenv("TXTCLS_PARITY_REPORT"))
      std::cout << "parity " << name << ": outputs " << worst_out << ", gradients " << worst_grad << "\n";
  }
};

// REQUIREs got ~ ref within tol (relative to the largest reference value); an undefined `got`
// stands for zeros (an unused parameter receives no gradient).
template <class T>
double require_parity(const Tensor<T>& got_in, const Tensor<double>& ref, double tol, const std::string& what) {
  INFO(what);
  Tensor<T> got = got_in.defined() ? got_in : txtcls::zeros<T>(ref.shape());
  REQUIRE(got.shape() == ref.shape());
  const double e = rel_err(got, ref);
  CAPTURE(e);
  REQUIRE(e <= tol);
  return e;
}

inline double parity_tol(bool f64) { return f64 ? 1e-10 : 1e-5; }

// Central differences of loss() wrt every parameter element of m, against one backward of loss().
inline void require_module_grads(txtcls::nn::Module<double>& m, const std::function<Tensor<double>()>& loss) {
  m.zero_grad();
  loss().backward();
  for (auto& [name, p] : m.named_parameters()) {
    Tensor<double> g = p.grad();
    double* d = p.data();
    for (int64_t i = 0; i < p.numel(); ++i) {
      txtcls::NoGradGuard ng;
      const double orig = d[i], eps = 1e-6;
      d[i] = orig + eps;
      const double fp = loss().item();
      d[i] = orig - eps;
      const double fm = loss().item();
      d[i] = orig;
      const double num = (fp - fm) / (2 * eps);
      const double ana = g.defined() ? g.data()[i] : 0.0;
      INFO(name << " element " << i << ": analytic " << ana << " numeric " << num);
      REQUIRE(std::abs(num - ana) <= 1e-7 + 1e-5 * std::abs(num));
    }
  }
}

}  // namespace relpos
