// The caching allocator and streams: statistics, reuse, empty_cache, poisoning.
#include <cuda_runtime.h>

#include "cuda_test_util.hpp"

// In a namespace of its own: test files are compiled several to a unit (TXTCLS_UNITY_BUILD).
namespace test_cuda_runtime {

using namespace txtcls;
using ct::gpu;

TEST_CASE("cuda caching allocator reuses blocks and keeps statistics", "[cuda][allocator]") {
  cuda::synchronize();
  cuda::empty_cache();
  const auto s0 = cuda::memory_stats();
  REQUIRE(s0.bytes_reserved == s0.bytes_in_use);  // nothing cached after empty_cache
  {
    Tensor<float> a({1000, 1000}, gpu());  // 4 MB: rounded to 2 MiB classes
    const auto s1 = cuda::memory_stats();
    REQUIRE(s1.bytes_in_use - s0.bytes_in_use == size_t(4) << 20);
    REQUIRE(s1.peak_in_use >= s1.bytes_in_use);
    REQUIRE(s1.num_allocs == s0.num_allocs + 1);
  }
  const auto s2 = cuda::memory_stats();
  REQUIRE(s2.bytes_in_use == s0.bytes_in_use);
  REQUIRE(s2.bytes_reserved == s0.bytes_reserved + (size_t(4) << 20));  // cached, not freed
  {
    Tensor<float> b({999, 1000}, gpu());  // same size class: served from the cache
    const auto s3 = cuda::memory_stats();
    REQUIRE(s3.num_allocs == s2.num_allocs);
    REQUIRE(s3.cache_hits == s2.cache_hits + 1);
  }
  cuda::empty_cache();
  REQUIRE(cuda::memory_stats().bytes_reserved == s0.bytes_reserved);
}

TEST_CASE("cuda poisoned allocations read as NaN until written", "[cuda][allocator]") {
  Tensor<float> a({1031}, gpu());
  for (float v : a.to_vector()) REQUIRE(std::isnan(v));
  Tensor<double> d({33}, gpu());
  for (double v : d.to_vector()) REQUIRE(std::isnan(v));
}

TEST_CASE("cuda work on a user stream", "[cuda][stream]") {
  cudaStream_t s = nullptr;
  REQUIRE(cudaStreamCreate(&s) == cudaSuccess);
  cuda::set_current_stream(s);
  Tensor<float> x = ct::rnd<float>({4099}, 5);
  Tensor<float> y = exp(x.to(gpu()));
  CT_REQUIRE_CLOSE(y.cpu(), exp(x), float);
  cuda::set_current_stream(nullptr);
  REQUIRE(cuda::current_stream() == nullptr);
  {
    Tensor<float> drop = y;  // release the stream's blocks before the stream goes
  }
  y = Tensor<float>();
  cuda::synchronize();
  cuda::empty_cache();
  REQUIRE(cudaStreamDestroy(s) == cudaSuccess);
}

}  // namespace test_cuda_runtime
