// Host-to-device copies through the pinned staging ring: more uploads in flight than the ring
// has slots (a slot is reused only after its copy completed), the host buffer overwritten at
// once after each upload (the copy must not read it later), sizes from one byte to past the
// staging limit (the synchronous path), and a device other than the current one refused by
// set_device with a clear message.
#include "cuda_test_util.hpp"

// In a namespace of its own: test files are compiled several to a unit (TXTCLS_UNITY_BUILD).
namespace test_cuda_staging {

using namespace txtcls;
using ct::gpu;

TEST_CASE("cuda uploads through the staging ring arrive intact", "[cuda][allocator]") {
  std::vector<Tensor<int64_t>> on_gpu;
  std::vector<std::vector<int64_t>> want;
  Tensor<int64_t> host({300000});  // 2.4 MB, reused for every upload
  const std::vector<int64_t> sizes = {1, 31, 1025, 300000, 7, 4099, 1, 65536, 3, 300000, 12, 5};
  for (size_t k = 0; k < sizes.size(); ++k) {
    const int64_t n = sizes[k];
    for (int64_t i = 0; i < n; ++i) host.data()[i] = static_cast<int64_t>(k) * 1000003 + i;
    Tensor<int64_t> view = host.narrow(0, 0, n).contiguous();
    on_gpu.push_back(view.to(gpu()));
    want.emplace_back(view.data(), view.data() + n);
    for (int64_t i = 0; i < n; ++i) host.data()[i] = -1;  // the upload has its own copy
  }
  for (size_t k = 0; k < sizes.size(); ++k) {
    INFO("upload " << k << " of " << sizes[k] << " values");
    REQUIRE(on_gpu[k].to_vector() == want[k]);
  }
  REQUIRE(cuda::staging_bytes() >= size_t(300000) * sizeof(int64_t));

  // Past the staging limit: the synchronous path, same result.
  const int64_t big = static_cast<int64_t>(cuda::kMaxStagedBytes / sizeof(float)) + 3;
  Tensor<float> x = ct::rnd<float>({big}, 2);
  REQUIRE(x.to(gpu()).to_vector() == x.to_vector());
}

TEST_CASE("cuda set_device refuses a device that does not exist", "[cuda][allocator]") {
  REQUIRE(cuda::current_device() == 0);
  REQUIRE_THROWS_WITH(cuda::set_device(cuda::device_count()), Catch::Contains("does not exist"));
  cuda::set_device(0);
  REQUIRE(cuda::current_device() == 0);
}

TEST_CASE("cuda release_resources frees the cache, the staging rings and the handles, and work goes on",
          "[cuda][allocator]") {
  Tensor<float> a = ct::rnd<float>({64, 48}, 3), b = ct::rnd<float>({48, 32}, 4);
  const Tensor<float> want = matmul(a, b);
  Tensor<float> first = matmul(a.to(gpu()), b.to(gpu())).cpu();  // a cuBLAS handle, staged uploads
  { Tensor<float> scratch({1 << 20}, gpu()); }                     // a cached block
  REQUIRE(cuda::staging_bytes() > 0);
  REQUIRE(cuda::memory_stats().bytes_reserved > cuda::memory_stats().bytes_in_use);
  cuda::release_resources();
  REQUIRE(cuda::staging_bytes() == 0);
  REQUIRE(cuda::memory_stats().bytes_reserved == cuda::memory_stats().bytes_in_use);
  // Everything is recreated on next use.
  Tensor<float> again = matmul(a.to(gpu()), b.to(gpu())).cpu();
  CT_REQUIRE_CLOSE(again, want, float);
  REQUIRE(again.to_vector() == first.to_vector());
}

}  // namespace test_cuda_staging
