#pragma once
// Storage: one reference-counted buffer shared by a tensor and all of its views.
// Memory comes from the allocator registered for the device: the CPU one is built in;
// the CUDA backend (txtcls_cuda) registers its caching allocator at load time.
#include <array>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>

#include "txtcls/core/error.hpp"
#include "txtcls/tensor/device.hpp"

namespace txtcls {

struct Allocator {
  virtual ~Allocator() = default;
  virtual void* allocate(size_t bytes, Device d) = 0;
  virtual void deallocate(void* p, size_t bytes, Device d) = 0;
  // Copies between host and this device (or within it); kind as in cudaMemcpyKind order.
  virtual void copy(void* dst, Device dd, const void* src, Device sd, size_t bytes) = 0;
};

// Large blocks are cached after release and reused for the next request of the same rounded
// size: a training step allocates the same activations every step, and fresh large blocks come
// from mmap, whose page faults would otherwise cost more than the arithmetic (tens of ms for
// a 36 MB embedding gradient). Small blocks go straight to malloc, which caches them itself.
struct CpuAllocator final : Allocator {
  static constexpr size_t kAlign = 64;                     // a cache line and the widest SIMD register
  static constexpr size_t kCacheMin = size_t(256) << 10;   // cache blocks from 256 KiB
  static constexpr size_t kCacheRound = size_t(64) << 10;  // rounded up to 64 KiB
  size_t cache_limit = size_t(2) << 30;                    // at most 2 GiB held in the cache

  void* allocate(size_t bytes, Device) override {
    if (bytes == 0) return nullptr;
    size_t rounded = round(bytes);
    if (rounded >= kCacheMin) {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(rounded);
      if (it != free_.end()) {
        void* p = it->second;
        free_.erase(it);
        cached_ -= rounded;
        return p;
      }
    }
    void* p = std::aligned_alloc(kAlign, rounded);
    TXTCLS_CHECK(p, "cpu allocator: out of memory allocating ", bytes, " bytes");
    return p;
  }
  void deallocate(void* p, size_t bytes, Device) override {
    if (!p) return;
    size_t rounded = round(bytes);
    if (rounded >= kCacheMin) {
      std::lock_guard<std::mutex> lock(mu_);
      if (cached_ + rounded <= cache_limit) {
        free_.emplace(rounded, p);
        cached_ += rounded;
        return;
      }
    }
    std::free(p);
  }
  void copy(void* dst, Device, const void* src, Device, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  // Returns every cached block to the system.
  void empty_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [size, p] : free_) std::free(p);
    free_.clear();
    cached_ = 0;
  }
  size_t cached_bytes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return cached_;
  }
  ~CpuAllocator() override { empty_cache(); }

 private:
  static size_t round(size_t bytes) {
    size_t r = (bytes + kAlign - 1) / kAlign * kAlign;
    return r >= kCacheMin ? (r + kCacheRound - 1) / kCacheRound * kCacheRound : r;
  }
  mutable std::mutex mu_;
  std::multimap<size_t, void*> free_;
  size_t cached_ = 0;
};

namespace detail {
// Never destroyed: tensors with static storage duration may be released after main() returns.
inline CpuAllocator& cpu_allocator() {
  static CpuAllocator* a = new CpuAllocator();
  return *a;
}
inline Allocator*& cuda_allocator_slot() {
  static Allocator* a = nullptr;
  return a;
}
}  // namespace detail

// Called by the CUDA backend when it is linked in.
inline void register_cuda_allocator(Allocator* a) { detail::cuda_allocator_slot() = a; }

#ifdef TXTCLS_WITH_CUDA
namespace cuda {
void register_backend();
}
#endif

inline Allocator& allocator_for(Device d) {
  if (d.is_cpu()) return detail::cpu_allocator();
#ifdef TXTCLS_WITH_CUDA
  if (!detail::cuda_allocator_slot()) cuda::register_backend();
#endif
  Allocator* a = detail::cuda_allocator_slot();
  TXTCLS_CHECK(a, "device ", d.str(), ": this program was built without the CUDA backend (link txtcls::txtcls_cuda)");
  return *a;
}

template <class T>
class Storage {
 public:
  Storage(size_t n, Device d) : n_(n), device_(d) {
    data_ = static_cast<T*>(allocator_for(d).allocate(n * sizeof(T), d));
  }
  ~Storage() {
    if (data_) allocator_for(device_).deallocate(data_, n_ * sizeof(T), device_);
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return n_; }
  Device device() const { return device_; }

 private:
  T* data_ = nullptr;
  size_t n_ = 0;
  Device device_;
};

}  // namespace txtcls
