#pragma once
// Walking a merged elementwise geometry (txtcls/cuda/elementwise.hpp) on the device, for every
// kernel that takes one (elementwise.cu's strided map, indexing.cu's select and compare): the
// offsets of element e in each operand, one division per dim, in an index type I: uint32_t
// where fits_32bit(g) (beside Geometry) says every index and offset fits, int64_t otherwise. A
// 32-bit division is a fraction of a 64-bit one's instructions, and the divisions are most of what
// a broadcast costs (on an H200 the broadcast add went from 0.51x to 0.77x PyTorch with them).
#include <cstdint>

#include "txtcls/cuda/elementwise.hpp"

namespace txtcls::cuda {

// Offsets of element e (row-major over g.size) in operands 0 .. Count-1.
template <class I, int Count>
__device__ __forceinline__ void geometry_offsets(I e, const Geometry& g, I (&off)[Count]) {
  for (int o = 0; o < Count; ++o) off[o] = 0;
  for (int d = g.nd - 1; d >= 0; --d) {
    const I size = static_cast<I>(g.size[d]), i = e % size;
    e /= size;
    for (int o = 0; o < Count; ++o) off[o] += i * static_cast<I>(g.stride[o][d]);
  }
}

// First element and step of a grid-stride loop over elements, in I.
template <class I>
__device__ __forceinline__ I grid_first() {
  return static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + threadIdx.x;
}
template <class I>
__device__ __forceinline__ I grid_step() {
  return static_cast<I>(gridDim.x) * static_cast<I>(blockDim.x);
}

}  // namespace txtcls::cuda
