#pragma once
// Build-wide switches and the host/device annotation shared by CPU and CUDA code.
#include <algorithm>
#include <cstdint>
#ifdef _OPENMP
#include <omp.h>
#endif
// GCC 12 reports false -Wmaybe-uninitialized and -Wuninitialized warnings inside its own AVX-512
// intrinsics (their `__m512 __Y = __Y;` idiom, GCC bug 105593, fixed in GCC 13) wherever Eigen's
// AVX-512 code is inlined: thousands of lines in a build with -march=native on such a CPU. A
// diagnostic's state follows the lines it is reported at, so ignoring the two around the first
// inclusion of the intrinsics (through Eigen) silences exactly those and nothing in our own code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <Eigen/Core>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#if defined(__CUDACC__)
#define TXTCLS_HD __host__ __device__ __forceinline__
#else
#define TXTCLS_HD inline
#endif

namespace txtcls {

inline constexpr int kVersionMajor = 0;
inline constexpr int kVersionMinor = 1;

// Number of CPU threads used by txtcls ops (OpenMP loops and Eigen's GEMM).
inline void set_num_threads(int n) {
  n = std::max(1, n);
#ifdef _OPENMP
  omp_set_num_threads(n);
#endif
  Eigen::setNbThreads(n);
}

inline int num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Loops shorter than this run on one thread: the fork/join costs more than it saves.
inline constexpr int64_t kParallelGrain = 32768;

}  // namespace txtcls
