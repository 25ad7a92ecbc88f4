#pragma once
// Counter-based random numbers (Philox-4x32-10, Salmon et al. 2011). The same function runs on
// the host and in CUDA kernels, so a dropout mask or an initialisation depends only on
// (seed, offset, element index): reproducible across runs, thread counts and devices.
#include <cmath>
#include <cstdint>

#include "txtcls/core/config.hpp"

namespace txtcls {

struct Philox4x32 {
  uint32_t v[4];
};

TXTCLS_HD Philox4x32 philox4x32(uint64_t counter, uint64_t key_seed) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(key_seed), k1 = static_cast<uint32_t>(key_seed >> 32);
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = static_cast<uint64_t>(M0) * c0;
    uint64_t p1 = static_cast<uint64_t>(M1) * c2;
    uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += W0; k1 += W1;
  }
  return {{c0, c1, c2, c3}};
}

// Uniform in (0, 1]: never 0, so log() in Box-Muller is safe.
TXTCLS_HD float uint_to_unit_float(uint32_t x) { return (static_cast<float>(x >> 8) + 1.0f) * (1.0f / 16777216.0f); }
TXTCLS_HD double uint_to_unit_double(uint32_t hi, uint32_t lo) {
  uint64_t m = (static_cast<uint64_t>(hi) << 21) ^ (lo >> 11);
  return (static_cast<double>(m & ((1ull << 53) - 1)) + 1.0) * (1.0 / 9007199254740992.0);
}

// Element i of the uniform(0,1] stream (seed, offset).
TXTCLS_HD double philox_uniform(uint64_t seed, uint64_t offset, uint64_t i) {
  Philox4x32 r = philox4x32(offset + i, seed);
  return uint_to_unit_double(r.v[0], r.v[1]);
}

// Element i of the standard normal stream (seed, offset), Box-Muller on one Philox block.
TXTCLS_HD double philox_normal(uint64_t seed, uint64_t offset, uint64_t i) {
  Philox4x32 r = philox4x32(offset + i, seed);
  double u1 = uint_to_unit_double(r.v[0], r.v[1]);
  double u2 = uint_to_unit_double(r.v[2], r.v[3]);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

// A seeded stream. Each draw reserves a range of counters, so consecutive calls never overlap
// and a generator's state is just (seed, offset): cheap to save in a checkpoint.
class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed; offset_ = offset; }
  // Reserves n counters and returns the first.
  uint64_t reserve(uint64_t n) {
    uint64_t o = offset_;
    offset_ += n;
    return o;
  }
  double uniform() { return philox_uniform(seed_, reserve(1), 0); }
  double normal() { return philox_normal(seed_, reserve(1), 0); }
  // Uniform integer in [0, n).
  uint64_t randint(uint64_t n) {
    Philox4x32 r = philox4x32(reserve(1), seed_);
    uint64_t x = (static_cast<uint64_t>(r.v[0]) << 32) | r.v[1];
    return n ? x % n : 0;
  }

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
};

// The generator used when a caller passes none (nn::Dropout, initialisers). One per thread;
// manual_seed() resets it, so a training run is reproducible from its seed.
inline Generator& default_generator() {
  thread_local Generator g(0x7478636c73ull);  // "txtcls"
  return g;
}
inline void manual_seed(uint64_t seed) { default_generator().set_state(seed, 0); }

}  // namespace txtcls
