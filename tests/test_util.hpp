#pragma once
// Helpers shared by the test executables.
#include "test_paths.hpp"
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "txtcls/testing/gradcheck.hpp"
#include "txtcls/txtcls.hpp"

namespace tt {

using txtcls::Shape;
using txtcls::Tensor;
using TD = Tensor<double>;
using TF = Tensor<float>;

inline TD rnd(const Shape& s, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  txtcls::Generator g(seed);
  return txtcls::rand_uniform<double>(s, g, lo, hi);
}

// REQUIRE that f's backward matches finite differences at `inputs`.
#define REQUIRE_GRAD(f, ...)                                                        \
  do {                                                                              \
    auto _r = txtcls::testing::gradcheck(f, std::vector<tt::TD>{__VA_ARGS__});      \
    INFO("gradcheck: " << _r.where << " (max abs err " << _r.max_abs_err << ")");  \
    REQUIRE(_r.ok);                                                                 \
  } while (0)

template <class T>
void require_close(const Tensor<T>& a, const std::vector<T>& expect, double tol = 1e-12) {
  auto v = a.to_vector();
  REQUIRE(v.size() == expect.size());
  for (size_t i = 0; i < v.size(); ++i) {
    INFO("element " << i);
    REQUIRE(std::abs(static_cast<double>(v[i]) - static_cast<double>(expect[i])) <= tol * (1 + std::abs(double(expect[i]))));
  }
}

// Where the real datasets live, or "" when absent (tests then SKIP with a message).
inline std::string shared_data_dir() {
  if (const char* e = std::getenv("TXTCLS_SHARED_DATA")) return e;
  std::filesystem::path p = std::filesystem::path(TXTCLS_SOURCE_DIR) / ".." / "shared" / "data";
  return std::filesystem::exists(p) ? p.lexically_normal().string() : std::string();
}

}  // namespace tt
