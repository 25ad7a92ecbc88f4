// Caching device allocator: blocks are rounded to size classes (512 B granularity below 1 MiB,
// 2 MiB above) and kept in per-device free lists on release, so a training step's allocations
// are served from the cache after the first step. All work is on the default stream, so a
// freed block can be reused by the next kernel without an event.
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "cuda_check.cuh"
#include "txtcls/cuda/runtime.hpp"
#include "txtcls/tensor/storage.hpp"

namespace txtcls::cuda {
namespace {

size_t round_size(size_t bytes) {
  constexpr size_t kSmall = 512, kLarge = size_t(2) << 20;
  if (bytes < (size_t(1) << 20)) return (bytes + kSmall - 1) / kSmall * kSmall;
  return (bytes + kLarge - 1) / kLarge * kLarge;
}

class CachingAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes, Device d) override {
    if (bytes == 0) return nullptr;
    const size_t size = round_size(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    auto& dev = devices_[d.index];
    void* p = nullptr;
    auto it = dev.free.lower_bound(size);
    // Reuse a cached block of the same class (or at most twice as large, to bound waste).
    if (it != dev.free.end() && it->first <= 2 * size) {
      p = it->second;
      dev.stats.cache_hits++;
      dev.block_size[p] = it->first;
      dev.free.erase(it);
    } else {
      int prev = 0;
      TXTCLS_CUDA_CHECK(cudaGetDevice(&prev));
      TXTCLS_CUDA_CHECK(cudaSetDevice(d.index));
      cudaError_t e = cudaMalloc(&p, size);
      if (e == cudaErrorMemoryAllocation) {  // free the cache and retry once
        cudaGetLastError();
        release_cached(d.index, dev);
        e = cudaMalloc(&p, size);
      }
      cudaSetDevice(prev);
      TXTCLS_CUDA_CHECK(e);
      dev.block_size[p] = size;
      dev.stats.bytes_reserved += size;
      dev.stats.num_allocs++;
    }
    dev.stats.bytes_in_use += dev.block_size[p];
    dev.stats.peak_in_use = std::max(dev.stats.peak_in_use, dev.stats.bytes_in_use);
    return p;
  }

  void deallocate(void* p, size_t, Device d) override {
    if (!p) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto& dev = devices_[d.index];
    size_t size = dev.block_size.at(p);
    dev.stats.bytes_in_use -= size;
    dev.free.emplace(size, p);
  }

  void copy(void* dst, Device dd, const void* src, Device sd, size_t bytes) override {
    if (bytes == 0) return;
    cudaMemcpyKind kind = dd.is_cpu() ? cudaMemcpyDeviceToHost
                          : sd.is_cpu() ? cudaMemcpyHostToDevice
                                        : cudaMemcpyDeviceToDevice;
    TXTCLS_CUDA_CHECK(cudaMemcpy(dst, src, bytes, kind));
  }

  MemoryStats stats(int device) {
    std::lock_guard<std::mutex> lock(mu_);
    return devices_[device].stats;
  }

  void empty_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [idx, dev] : devices_) release_cached(idx, dev);
  }

 private:
  struct DeviceState {
    std::multimap<size_t, void*> free;             // cached blocks by size
    std::unordered_map<void*, size_t> block_size;  // every live or cached block
    MemoryStats stats;
  };

  void release_cached(int index, DeviceState& dev) {
    int prev = 0;
    cudaGetDevice(&prev);
    cudaSetDevice(index);
    for (auto& [size, p] : dev.free) {
      cudaFree(p);
      dev.block_size.erase(p);
      dev.stats.bytes_reserved -= size;
    }
    dev.free.clear();
    cudaSetDevice(prev);
  }

  std::mutex mu_;
  std::map<int, DeviceState> devices_;
};

CachingAllocator& allocator() {
  static CachingAllocator* a = new CachingAllocator();  // never destroyed: tensors may outlive main()
  return *a;
}

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

void register_backend() { register_cuda_allocator(&allocator()); }
MemoryStats memory_stats(int device) { return allocator().stats(device); }
void empty_cache() { allocator().empty_cache(); }
void synchronize(int device) {
  TXTCLS_CUDA_CHECK(cudaSetDevice(device));
  TXTCLS_CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace txtcls::cuda
