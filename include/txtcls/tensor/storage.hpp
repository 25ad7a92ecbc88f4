#pragma once
// Storage: one reference-counted buffer shared by a tensor and all of its views.
// Memory comes from the allocator registered for the device: the CPU one is built in;
// the CUDA backend (txtcls_cuda) registers its caching allocator at load time.
#include <array>
#include <cstdlib>
#include <cstring>
#include <memory>

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

struct CpuAllocator final : Allocator {
  static constexpr size_t kAlign = 64;  // a cache line and the widest SIMD register
  void* allocate(size_t bytes, Device) override {
    if (bytes == 0) return nullptr;
    size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
    void* p = std::aligned_alloc(kAlign, rounded);
    TXTCLS_CHECK(p, "cpu allocator: out of memory allocating ", bytes, " bytes");
    return p;
  }
  void deallocate(void* p, size_t, Device) override { std::free(p); }
  void copy(void* dst, Device, const void* src, Device, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
};

namespace detail {
inline CpuAllocator& cpu_allocator() {
  static CpuAllocator a;
  return a;
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
