#pragma once
// The CPU-visible face of the CUDA backend. Compiles without nvcc: the definitions live in
// kernels/*.cu (library txtcls_cuda), and TXTCLS_WITH_CUDA is defined for its users.
#include <cstddef>
#include <cstdint>

namespace txtcls::cuda {

// Statistics of the caching allocator, per device.
struct MemoryStats {
  size_t bytes_in_use = 0;    // held by live tensors
  size_t bytes_reserved = 0;  // obtained from cudaMalloc (in use + cached)
  size_t peak_in_use = 0;
  size_t num_allocs = 0;      // cudaMalloc calls
  size_t cache_hits = 0;
};

#ifdef TXTCLS_WITH_CUDA
int device_count();                 // 0 when no GPU or no driver
void register_backend();            // registers the allocator with the core (idempotent)
MemoryStats memory_stats(int device = 0);
void empty_cache();                 // returns cached blocks to the driver
void synchronize(int device = 0);
#else
inline int device_count() { return 0; }
#endif

}  // namespace txtcls::cuda
