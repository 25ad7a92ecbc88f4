#pragma once
// Host-side face of the CUDA layer_norm / rms_norm kernels (kernels/norm.cu). Compiles without
// nvcc. Rows of D contiguous elements; w, b optional (null); formulas of ops/norm.hpp.
#include <cstdint>

namespace txtcls::cuda {

// rms: y = x * rstd * w, rstd = (mean(x^2) + eps)^-1/2 (mean is not written, may be null);
// else y = (x - mean) * rstd * w + b with the biased variance.
template <class T>
void norm_forward(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t rows, int64_t D, T eps, bool rms);

// Any of gx, gw, gb may be null (not wanted); those given are fully written.
template <class T>
void norm_backward(const T* g, const T* x, const T* mean, const T* rstd, const T* w, int64_t rows, int64_t D, T* gx,
                   T* gw, T* gb, bool rms);

}  // namespace txtcls::cuda
