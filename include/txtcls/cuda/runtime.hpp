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
void reset_peak_stats(int device = 0);
void empty_cache();                 // returns cached blocks to the driver
// empty_cache(), plus what the backend otherwise keeps until the process exits: the pinned
// staging rings and the calling thread's cuBLAS and cuDNN handles (with their workspaces). All
// are recreated on next use. For programs that hand the GPU to other code, and for leak checkers
// (compute-sanitizer --leak-check full), which report what is still allocated at exit.
void release_resources();
void synchronize(int device = 0);

// Streams. Kernels, copies and allocations of the calling thread go to its current stream: the
// legacy default stream unless set here. A cached block is reused only on the stream it was
// allocated on, so reuse is ordered without events. The handle is a cudaStream_t.
void* current_stream();
void set_current_stream(void* stream);  // nullptr: back to the default stream

// The calling thread's current device (cudaSetDevice): kernels and the legacy default stream
// are those of this device, so a program that works on cuda:N selects N first.
void set_device(int device);
int current_device();

// Host-to-device copy through a reusable page-locked staging ring: `src` is copied into a
// pinned slot and the slot to `dst` asynchronously on the current stream, so the call returns
// without waiting for the device and `src` may be reused at once. A slot is rewritten only
// after the event recorded behind its previous copy has completed. Used by Tensor::to() for
// host-to-device copies up to kMaxStagedBytes (batches, lengths, index tables); larger ones
// take the synchronous path.
inline constexpr size_t kMaxStagedBytes = size_t(8) << 20;
void copy_to_device_staged(void* dst, const void* src, size_t bytes);
// Page-locked bytes held by the staging rings of all devices (grows to the largest copy seen).
size_t staging_bytes();

// Testing aid: every block handed out is first filled with 0xFF bytes (NaN in float and double),
// so a kernel that leaves part of its output unwritten is caught by a comparison.
void set_poison_allocations(bool on);
#else
inline int device_count() { return 0; }
#endif

}  // namespace txtcls::cuda
