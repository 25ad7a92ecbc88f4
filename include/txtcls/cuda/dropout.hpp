#pragma once
// Host-side face of the CUDA dropout kernels (kernels/dropout.cu). Compiles without nvcc.
// Masks are drawn with ops/dropout.hpp's dropout_keep(seed, base, i, p), the same function the CPU
// uses, so a mask is identical on both devices and never stored: backward redraws it.
#include <cstdint>

namespace txtcls::cuda {

// y[i] = x[i] * (keep(i) ? scale : 0) over n contiguous elements.
template <class T>
void dropout(const T* x, T* y, int64_t n, uint64_t seed, uint64_t base, double p, T scale);

// x viewed as contiguous [A, M, K]; mask element a * Km + (Km == 1 ? 0 : k) scales x[a, m, k]
// (embedding dropout: Km = 1, one factor per row; locked dropout: Km = K, shared over M).
template <class T>
void shared_mask_dropout(const T* x, T* y, int64_t A, int64_t M, int64_t K, int64_t Km, uint64_t seed, uint64_t base,
                         double p, T scale);

}  // namespace txtcls::cuda
