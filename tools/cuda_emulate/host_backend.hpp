#pragma once
// For emulation drivers built with TXTCLS_WITH_CUDA (so that an op's CUDA branch, e.g.
// relative_attention's, can be called on host tensors): the CUDA backend's entry points that the
// library's headers reference, defined to refuse. An emulated op works on CPU tensors, so its
// tensor arithmetic never reaches them; only the kernels under test are emulated.
#include <stdexcept>
#include <string>

#include "txtcls/cuda/blas.hpp"
#include "txtcls/cuda/dropout.hpp"
#include "txtcls/cuda/elementwise.hpp"
#include "txtcls/cuda/indexing.hpp"
#include "txtcls/cuda/runtime.hpp"
#include "txtcls/cuda/softmax.hpp"

namespace txtcls::cuda {

[[noreturn]] inline void not_emulated(const char* what) {
  throw std::logic_error(std::string("cuda::") + what + " is not part of the host emulation (a CUDA tensor reached it)");
}

void register_backend() { not_emulated("register_backend"); }
template <class T, class F> void unary(const F&, const T*, T*, const Geometry&) { not_emulated("unary"); }
template <class T, class F> void binary(const F&, const T*, const T*, T*, const Geometry&) { not_emulated("binary"); }
template <class T, class F> void unary_grad(const F&, const T*, const T*, const T*, T*, const Geometry&) {
  not_emulated("unary_grad");
}
template <class T> void fill(T, T*, const Geometry&) { not_emulated("fill"); }
template <class T> void sum(const T*, T*, const Geometry&, const Geometry&) { not_emulated("sum"); }
template <class T> void select(const uint8_t*, const T*, const T*, T*, const Geometry&) { not_emulated("select"); }
template <class T>
void gemm(int64_t, int64_t, int64_t, const GemmOperand&, const GemmOperand&, T*, int64_t, int64_t, int64_t, T, T) {
  not_emulated("gemm");
}
void gemm_16bit(int64_t, int64_t, int64_t, const GemmOperand&, const GemmOperand&, float*, int64_t, int64_t, int64_t,
                DType) {
  not_emulated("gemm_16bit");
}
void convert_to_16bit(const float*, void*, int64_t, DType) { not_emulated("convert_to_16bit"); }
template <class T> void softmax_forward(const T*, T*, int64_t, int64_t, int64_t, bool) { not_emulated("softmax"); }
template <class T> void softmax_backward(const T*, const T*, T*, int64_t, int64_t, int64_t, bool) {
  not_emulated("softmax_backward");
}
template <class T> void dropout(const T*, T*, int64_t, uint64_t, uint64_t, double, T) { not_emulated("dropout"); }
template <class T>
void shared_mask_dropout(const T*, T*, int64_t, int64_t, int64_t, int64_t, uint64_t, uint64_t, double, T) {
  not_emulated("shared_mask_dropout");
}

}  // namespace txtcls::cuda
