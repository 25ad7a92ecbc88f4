#pragma once
// Host-side face of the CUDA softmax kernels (kernels/softmax.cu). Compiles without nvcc.
// The input is a contiguous [outer, n, inner] view with the softmax taken over n; semantics are
// those of ops/softmax.hpp: a row whose entries are all -inf is empty (softmax 0, log_softmax
// -inf, no gradient), -inf entries get exactly 0, a NaN turns its row into NaN.
#include <cstdint>

namespace txtcls::cuda {

template <class T>
void softmax_forward(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool log);
// gx from the upstream gradient g and the forward's output y.
template <class T>
void softmax_backward(const T* g, const T* y, T* gx, int64_t outer, int64_t n, int64_t inner, bool log);

}  // namespace txtcls::cuda
