#pragma once
// Launch helpers shared by the kernel families: the stream kernels run on, grid sizing for
// grid-stride loops, and the check after a launch.
#include <algorithm>
#include <cstdint>

#include "cuda_check.cuh"

namespace txtcls::cuda {

// The stream every txtcls kernel and copy is issued on (the legacy default stream unless a
// caller selected another with set_current_stream, declared in txtcls/cuda/runtime.hpp).
cudaStream_t active_stream();

// Streaming multiprocessors of the current device (queried once per device, then cached).
int multiprocessor_count();

// Makes `index` the current device for the scope and restores the caller's afterwards.
struct DeviceGuard {
  int prev = 0;
  explicit DeviceGuard(int index) {
    TXTCLS_CUDA_CHECK(cudaGetDevice(&prev));
    if (prev != index) TXTCLS_CUDA_CHECK(cudaSetDevice(index));
  }
  ~DeviceGuard() { cudaSetDevice(prev); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
};

// Library handles (cuBLAS, cuDNN) are created per thread on first use and kept for the process;
// their owners register a function that destroys the calling thread's handles, which
// release_resources() calls (a handle is recreated by its next use).
void on_release_resources(void (*release_calling_threads_handles)());

inline constexpr int kBlock = 256;

// Lets `kernel` launch with `bytes` of dynamic shared memory (an opt-in above 48 KB).
template <class K>
void allow_dynamic_smem(K kernel, int bytes) {
  TXTCLS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}

// Blocks for a grid-stride loop over n items: enough to fill the device several times over,
// never more than needed.
inline unsigned grid_for(int64_t n, int block = kBlock) {
  const int64_t want = (n + block - 1) / block;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(want, int64_t(1) << 16)));
}

}  // namespace txtcls::cuda

// After every launch: a bad configuration is reported here, naming the kernel, not at the next
// unrelated call.
#define TXTCLS_KERNEL_CHECK(name)                                                                    \
  do {                                                                                               \
    cudaError_t _e = cudaGetLastError();                                                             \
    if (_e != cudaSuccess)                                                                           \
      ::txtcls::detail::fail("kernel ", name, " failed to launch at ", __FILE__, ":", __LINE__, ": ", \
                             cudaGetErrorName(_e), " (", cudaGetErrorString(_e), ")");               \
  } while (0)
