#pragma once
// Every CUDA and cuBLAS status becomes a txtcls::Error naming the call, file and line.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "txtcls/core/error.hpp"

#define TXTCLS_CUDA_CHECK(call)                                                                    \
  do {                                                                                             \
    cudaError_t _e = (call);                                                                       \
    if (_e != cudaSuccess)                                                                         \
      ::txtcls::detail::fail(#call, " failed at ", __FILE__, ":", __LINE__, ": ", cudaGetErrorName(_e), \
                             " (", cudaGetErrorString(_e), ")");                                  \
  } while (0)

#define TXTCLS_CUBLAS_CHECK(call)                                                                       \
  do {                                                                                                  \
    cublasStatus_t _s = (call);                                                                         \
    if (_s != CUBLAS_STATUS_SUCCESS)                                                                    \
      ::txtcls::detail::fail(#call, " failed at ", __FILE__, ":", __LINE__, ": ", cublasGetStatusName(_s)); \
  } while (0)
