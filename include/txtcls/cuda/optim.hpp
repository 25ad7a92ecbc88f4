#pragma once
// Host-side face of the SGD step and the gradient-norm kernels (kernels/optim.cu). Compiles
// without nvcc. Every pointer is device memory of one device.
#include <cstdint>

#include "txtcls/train/sgd_math.hpp"

namespace txtcls::cuda {

// One parameter's SGD update in place; b (the momentum buffer) is null without momentum.
template <class T>
void sgd_step(T* p, const T* g, T* b, int64_t n, const train::SgdStepMath<T>& f);

// Gradient norms are sums over fixed chunks of this many elements (a block each, a fixed tree
// order inside), so the result depends on the sizes alone, never on timing.
inline constexpr int64_t kNormChunk = int64_t(1) << 16;
inline int64_t norm_chunks(int64_t n) { return (n + kNormChunk - 1) / kNormChunk; }

// partials[c] for c < norm_chunks(n): sum of |x|^p over chunk c in double (p = 2 as x*x, p = 1 as
// |x|), or max |x| when p is infinite.
template <class T>
void norm_partials(const T* x, int64_t n, double p, double* partials);

// One thread adds partials[0 .. count) in order (max for infinite p) and writes out[0] = the
// norm and out[1] = max_norm / (norm + 1e-6), clip_grad_norm's coefficient.
void norm_finish(const double* partials, int64_t count, double p, double max_norm, double* out);

// x *= T(*coef) unless *coef >= 1 (then x is untouched, as PyTorch's multiplication by 1).
template <class T>
void scale_unless_one(T* x, int64_t n, const double* coef);

}  // namespace txtcls::cuda
