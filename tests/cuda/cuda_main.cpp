// Entry point of the CUDA test suite. Without a GPU it reports the suite as skipped (exit code
// 77, ctest's SKIP_RETURN_CODE), never as passed. With one, every allocation is poisoned (NaN
// bytes) so that an output a kernel forgets to write fails the comparison.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cstdio>

#include "txtcls/cuda/runtime.hpp"

int main(int argc, char** argv) {
  if (txtcls::cuda::device_count() == 0) {
    std::printf("SKIP: no CUDA device (the CUDA tests need a GPU and its driver)\n");
    return 77;
  }
  txtcls::cuda::set_poison_allocations(true);
  const int failed = Catch::Session().run(argc, argv);
  // The caching allocator, the staging rings and the library handles keep memory for the
  // process; hand it back so that compute-sanitizer's leak check reports only real leaks.
  txtcls::cuda::release_resources();
  return failed;
}
