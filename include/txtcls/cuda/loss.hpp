#pragma once
// Host-side face of the CUDA cross-entropy kernels (kernels/loss.cu). Compiles without nvcc.
// Formulas as in ops/loss.hpp: row loss = lse - (1 - eps) x_t - eps mean_c x_c, gradient
// w (softmax - (1 - eps) [c == t] - eps / C); rows whose target is ignore_index give 0.
#include <cstdint>

namespace txtcls::cuda {

// x [N, C] contiguous, target [N] (device): row_loss[i] ([N], 0 on ignored rows) and the
// log-sum-exp lse[i] ([N], double, for the backward).
template <class T>
void cross_entropy_forward(const T* x, const int64_t* target, int64_t N, int64_t C, int64_t ignore_index, double eps,
                           T* row_loss, double* lse);

// gx [N, C] (every element written). Row i's weight is g[i * g_stride] * scale (g_stride 0: one
// upstream value for all rows, as for a mean or sum).
template <class T>
void cross_entropy_backward(const T* x, const int64_t* target, const double* lse, const T* g, int64_t g_stride,
                            double scale, int64_t N, int64_t C, int64_t ignore_index, double eps, T* gx);

}  // namespace txtcls::cuda
