// Caching device allocator: blocks are rounded to size classes (512 B granularity below 1 MiB,
// 2 MiB above) and kept on release in free lists per device and stream, so a training step's
// allocations are served from the cache after the first step. A block is reused only on the
// stream that allocated it: work on one stream runs in order, so the next kernel that gets the
// block cannot overtake the last one that used it, and no event is needed.
#include <atomic>
#include <cstring>
#include <map>
#include <set>
#include <mutex>
#include <tuple>
#include <unordered_map>

#include "launch.cuh"
#include "txtcls/cuda/runtime.hpp"
#include "txtcls/tensor/storage.hpp"

namespace txtcls::cuda {
namespace {

thread_local cudaStream_t tls_stream = nullptr;
std::atomic<bool> poison_allocations{false};

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
    cudaStream_t stream = active_stream();
    std::lock_guard<std::mutex> lock(mu_);
    auto& dev = devices_[d.index];
    void* p = nullptr;
    // Reuse a cached block of this stream and size class (or at most twice as large, to bound waste).
    auto it = dev.free.lower_bound({stream, size});
    if (it != dev.free.end() && std::get<0>(it->first) == stream && std::get<1>(it->first) <= 2 * size) {
      p = it->second;
      dev.stats.cache_hits++;
      dev.free.erase(it);
    } else {
      DeviceGuard guard(d.index);
      cudaError_t e = cudaMalloc(&p, size);
      if (e == cudaErrorMemoryAllocation) {  // give the cache back and retry once
        cudaGetLastError();
        release_cached(dev);
        e = cudaMalloc(&p, size);
      }
      TXTCLS_CHECK(e == cudaSuccess, "cuda allocator: cudaMalloc of ", size, " bytes on cuda:", d.index, " failed: ",
                   cudaGetErrorName(e), " (", cudaGetErrorString(e), "); in use ", dev.stats.bytes_in_use,
                   " bytes, reserved ", dev.stats.bytes_reserved);
      dev.blocks[p] = Block{size, stream};
      dev.stats.bytes_reserved += size;
      dev.stats.num_allocs++;
    }
    const Block& b = dev.blocks.at(p);
    if (poison_allocations.load(std::memory_order_relaxed)) {
      DeviceGuard guard(d.index);
      TXTCLS_CUDA_CHECK(cudaMemsetAsync(p, 0xFF, b.size, stream));
    }
    dev.stats.bytes_in_use += b.size;
    dev.stats.peak_in_use = std::max(dev.stats.peak_in_use, dev.stats.bytes_in_use);
    return p;
  }

  void deallocate(void* p, size_t, Device d) override {
    if (!p) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto& dev = devices_[d.index];
    const Block& b = dev.blocks.at(p);
    dev.stats.bytes_in_use -= b.size;
    dev.free.emplace(std::make_tuple(b.stream, b.size), p);
  }

  void copy(void* dst, Device dd, const void* src, Device sd, size_t bytes) override {
    if (bytes == 0) return;
    cudaMemcpyKind kind = dd.is_cpu() ? cudaMemcpyDeviceToHost
                          : sd.is_cpu() ? cudaMemcpyHostToDevice
                                        : cudaMemcpyDeviceToDevice;
    if (kind == cudaMemcpyHostToDevice && bytes <= kMaxStagedBytes) {
      copy_to_device_staged(dst, src, bytes);  // asynchronous: no wait for the device
      return;
    }
    cudaStream_t stream = active_stream();
    TXTCLS_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, stream));
    // A host buffer may be released (or read) as soon as this returns.
    if (kind != cudaMemcpyDeviceToDevice) TXTCLS_CUDA_CHECK(cudaStreamSynchronize(stream));
  }

  MemoryStats stats(int device) {
    std::lock_guard<std::mutex> lock(mu_);
    return devices_[device].stats;
  }

  void reset_peak(int device) {
    std::lock_guard<std::mutex> lock(mu_);
    auto& s = devices_[device].stats;
    s.peak_in_use = s.bytes_in_use;
  }

  void empty_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [idx, dev] : devices_) {
      DeviceGuard guard(idx);
      release_cached(dev);
    }
  }

 private:
  struct Block {
    size_t size = 0;
    cudaStream_t stream = nullptr;
  };
  struct DeviceState {
    std::multimap<std::tuple<cudaStream_t, size_t>, void*> free;  // cached blocks by stream, size
    std::unordered_map<void*, Block> blocks;                      // every live or cached block
    MemoryStats stats;
  };

  // The device must be current. Waits for pending work: a cached block may still be in use by
  // a kernel queued before it was released.
  void release_cached(DeviceState& dev) {
    if (dev.free.empty()) return;
    cudaDeviceSynchronize();
    for (auto& [key, p] : dev.free) {
      cudaFree(p);
      dev.blocks.erase(p);
      dev.stats.bytes_reserved -= std::get<1>(key);
    }
    dev.free.clear();
  }

  std::mutex mu_;
  std::map<int, DeviceState> devices_;
};

// Page-locked staging for host-to-device copies, per device: a ring of slots, each a pinned
// buffer (grown on demand) and the event recorded after the copy that last read it. Four slots
// let a batch's ids, lengths and labels be in flight together while the host prepares the next.
class StagingRing {
 public:
  void copy(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
    Slot& s = slots_[next_];
    next_ = (next_ + 1) % kSlots;
    if (s.pending) TXTCLS_CUDA_CHECK(cudaEventSynchronize(s.done));  // its last copy has read it
    s.pending = false;
    if (s.capacity < bytes) {
      if (s.host) TXTCLS_CUDA_CHECK(cudaFreeHost(s.host));
      s.host = nullptr;
      size_t cap = size_t(64) << 10;
      while (cap < bytes) cap *= 2;
      TXTCLS_CUDA_CHECK(cudaMallocHost(&s.host, cap));
      total_ += cap - s.capacity;
      s.capacity = cap;
    }
    if (!s.done) TXTCLS_CUDA_CHECK(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming));
    std::memcpy(s.host, src, bytes);
    TXTCLS_CUDA_CHECK(cudaMemcpyAsync(dst, s.host, bytes, cudaMemcpyHostToDevice, stream));
    TXTCLS_CUDA_CHECK(cudaEventRecord(s.done, stream));
    s.pending = true;
  }
  size_t bytes() const { return total_; }
  // Frees every slot once the copies that read it have completed.
  void release() {
    for (Slot& s : slots_) {
      if (s.pending) TXTCLS_CUDA_CHECK(cudaEventSynchronize(s.done));
      if (s.host) TXTCLS_CUDA_CHECK(cudaFreeHost(s.host));
      if (s.done) TXTCLS_CUDA_CHECK(cudaEventDestroy(s.done));
      s = Slot{};
    }
    total_ = 0;
  }

 private:
  static constexpr int kSlots = 4;
  struct Slot {
    void* host = nullptr;
    size_t capacity = 0;
    cudaEvent_t done = nullptr;
    bool pending = false;
  };
  Slot slots_[kSlots];
  int next_ = 0;
  size_t total_ = 0;
};

// Rings by device, never destroyed (pinned memory and events stay valid until the process
// exits; releasing them during static destruction could run after the driver shut down).
std::mutex staging_mu;
std::map<int, StagingRing*>& staging_rings() {
  static auto* rings = new std::map<int, StagingRing*>();
  return *rings;
}

CachingAllocator& allocator() {
  static CachingAllocator* a = new CachingAllocator();  // never destroyed: tensors may outlive main()
  return *a;
}

}  // namespace

cudaStream_t active_stream() { return tls_stream; }
void* current_stream() { return tls_stream; }

int multiprocessor_count() {
  static std::mutex mu;
  static std::map<int, int> counts;
  int device = 0;
  TXTCLS_CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mu);
  auto it = counts.find(device);
  if (it == counts.end()) {
    int sms = 0;
    TXTCLS_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    it = counts.emplace(device, sms).first;
  }
  return it->second;
}

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
void reset_peak_stats(int device) { allocator().reset_peak(device); }
void empty_cache() { allocator().empty_cache(); }

namespace {
std::mutex release_mu;
std::set<void (*)()>& release_hooks() {
  static auto* hooks = new std::set<void (*)()>();
  return *hooks;
}
}  // namespace

void on_release_resources(void (*release_calling_threads_handles)()) {
  std::lock_guard<std::mutex> lock(release_mu);
  release_hooks().insert(release_calling_threads_handles);
}

void release_resources() {
  {
    std::lock_guard<std::mutex> lock(release_mu);
    for (auto hook : release_hooks()) hook();
  }
  {
    std::lock_guard<std::mutex> lock(staging_mu);
    for (auto& [device, ring] : staging_rings()) {
      DeviceGuard guard(device);
      ring->release();
    }
  }
  empty_cache();
}
void synchronize(int device) {
  DeviceGuard guard(device);
  TXTCLS_CUDA_CHECK(cudaDeviceSynchronize());
}
void set_current_stream(void* stream) { tls_stream = static_cast<cudaStream_t>(stream); }
void set_device(int device) {
  const int n = device_count();
  TXTCLS_CHECK(device >= 0 && device < n, "cuda: device cuda:", device, " does not exist (", n,
               n == 1 ? " device)" : " devices)");
  TXTCLS_CUDA_CHECK(cudaSetDevice(device));
}
int current_device() {
  int d = 0;
  TXTCLS_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

void copy_to_device_staged(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  // Keyed by the current device: the legacy stream and the slot events belong to it.
  const int device = current_device();
  std::lock_guard<std::mutex> lock(staging_mu);
  StagingRing*& ring = staging_rings()[device];
  if (!ring) ring = new StagingRing();
  ring->copy(dst, src, bytes, active_stream());
}

size_t staging_bytes() {
  std::lock_guard<std::mutex> lock(staging_mu);
  size_t n = 0;
  for (auto& [d, r] : staging_rings()) n += r->bytes();
  return n;
}

void set_poison_allocations(bool on) { poison_allocations.store(on); }

}  // namespace txtcls::cuda
