// Graph attention (BP-Transformer) on the GPU: gather-based sparse attention over a CSR graph,
// forward and backward, with the semantics of ops/graph_attention.hpp.
//
// Every kernel gives one warp one (row, head) pair: lanes split the head dim (lane + 32x), a dot
// product is a warp butterfly sum, and edges go 32 at a time: lane u loads edge u's indices
// (and its weight or score gradient) once, the warp then walks the 32 with shuffles. A token's
// row has O(k log n) edges but a span's up to n (the root attends to every token), so scores
// live in the saved probs [E, H] buffer, not in registers; each probs / ds slot is written and
// reread by the one lane that owns its edge (lane = edge offset in the row mod 32), so no
// barrier is needed.
//
//   forward        warp per (query row, head): scores -> probs, max, exp and sum, weights,
//                  output as the dropped-out weighted sum of value rows (three sweeps of the row)
//   backward       warp per (query row, head): ds = a (f dp - sum a f dp) scale, then dq;
//                  warp per (key row, head) over the transposed CSR: dk, dv;
//                  warp per run of <= 256 edges of one position id [and head]: partial sums of
//                  d rel_k, then a thread per element adds its id's runs in order.
// Each gradient element is summed in a fixed order, edge order within a row, key or run (the
// host groups the edges by key and by position id with a stable counting sort): no atomics,
// results are reproducible.
// Dropout factors are redrawn from (seed, base, e*H + h) wherever they are needed.
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "launch.cuh"
#include "txtcls/cuda/graph_attention.hpp"
#include "txtcls/ops/dropout_mask.hpp"

namespace txtcls::cuda {
namespace {

constexpr int kWarp = 32;
constexpr unsigned kFull = 0xffffffffu;

// A butterfly leaves the same bits in every lane (each step adds the same two operands in both
// lanes of a pair), so all lanes agree on the max and on every branch taken on the results.
template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

template <class T>
__device__ __forceinline__ T warp_max(T v) {
  for (int o = kWarp / 2; o > 0; o >>= 1) {
    const T w = __shfl_xor_sync(kFull, v, o);
    v = w > v ? w : v;
  }
  return v;
}

// Warp-granular grid-stride loop: the index is the same in all lanes, so whole warps enter and
// leave together and every shuffle has all 32 lanes.
__device__ __forceinline__ int64_t first_warp() { return (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp; }
__device__ __forceinline__ int64_t warp_stride() { return int64_t(gridDim.x) * blockDim.x / kWarp; }

template <class T>
__device__ __forceinline__ T drop_factor(const GraphAttnArgs<T>& a, int64_t e, int64_t h) {
  return dropout_keep(a.seed, a.base, static_cast<uint64_t>(e * a.H + h), a.p) ? a.drop_scale : T(0);
}

template <class T>
__device__ __forceinline__ const T* rel_row(const GraphAttnArgs<T>& a, int64_t p, int64_t h) {
  return a.r_per_head ? a.r + (p * a.H + h) * a.D : a.r + p * a.D;
}

// Edges of a row in chunks of 32: lanes 0 .. n-1 hold one edge each.
__device__ __forceinline__ int chunk_size(int64_t total, int64_t c) {
  return static_cast<int>(total - c < kWarp ? total - c : kWarp);
}

// A slice of a head row in registers: lane `lane` holds elements x * 32 + lane, x < V, of the
// `left` elements from the slice's start (fewer than 32 V in the last slice).
template <class T, int V>
struct Slice {
  T v[V];
  int lane;
  int64_t left;
  __device__ __forceinline__ Slice(int lane_, int64_t left_) : lane(lane_), left(left_) {
#pragma unroll
    for (int x = 0; x < V; ++x) v[x] = T(0);
  }
  // v += w * row (row at the slice's start).
  __device__ __forceinline__ void add(T w, const T* row) {
#pragma unroll
    for (int x = 0; x < V; ++x) {
      const int64_t d = x * kWarp + lane;
      if (d < left) v[x] += w * row[d];
    }
  }
  // v += w * (a + b), for a key row plus its position row.
  __device__ __forceinline__ void add(T w, const T* a, const T* b) {
#pragma unroll
    for (int x = 0; x < V; ++x) {
      const int64_t d = x * kWarp + lane;
      if (d < left) v[x] += w * (a[d] + b[d]);
    }
  }
  __device__ __forceinline__ void store(T* row) const {
#pragma unroll
    for (int x = 0; x < V; ++x) {
      const int64_t d = x * kWarp + lane;
      if (d < left) row[d] = v[x];
    }
  }
};

// V: head-dim elements per lane held in registers (the head dim runs in slices of 32 V).
template <class T, int V>
__global__ void __launch_bounds__(kBlock) forward_kernel(const GraphAttnArgs<T> a, T* __restrict__ out,
                                                         T* __restrict__ probs) {
  const int lane = threadIdx.x % kWarp;
  const int64_t H = a.H, D = a.D, HD = H * D;
  for (int64_t w = first_warp(); w < a.Nq * H; w += warp_stride()) {
    const int64_t i = w / H, h = w % H;
    const int64_t b = a.indptr[i], deg = a.indptr[i + 1] - b;
    const T* qi = a.q + i * HD + h * D;
    // Sweep 1: scores into probs (lane u of each chunk stores edge u's) and their max.
    T m = -INFINITY;
    for (int64_t c = 0; c < deg; c += kWarp) {
      const int n = chunk_size(deg, c);
      const int64_t e_mine = b + c + lane;
      int64_t j_mine = 0, p_mine = 0;
      if (lane < n) {
        j_mine = a.indices[e_mine];
        if (a.rel) p_mine = a.rel[e_mine];
      }
      T s_mine = T(0);
      for (int u = 0; u < n; ++u) {
        const T* kj = a.k + __shfl_sync(kFull, j_mine, u) * HD + h * D;
        T s = T(0);
        if (a.rel) {
          const T* r = rel_row(a, __shfl_sync(kFull, p_mine, u), h);
          for (int64_t d = lane; d < D; d += kWarp) s += qi[d] * (kj[d] + r[d]);
        } else {
          for (int64_t d = lane; d < D; d += kWarp) s += qi[d] * kj[d];
        }
        s = warp_sum(s) * a.scale;
        if (lane == u) s_mine = s;
      }
      if (lane < n) {
        probs[e_mine * H + h] = s_mine;
        m = s_mine > m ? s_mine : m;
      }
    }
    m = warp_max(m);
    // Sweep 2: exp(s - m) in place and its sum (an empty row leaves sum = 0, never used).
    T sum = T(0);
    for (int64_t t = lane; t < deg; t += kWarp) {
      T* slot = probs + (b + t) * H + h;
      const T z = exp(*slot - m);
      *slot = z;
      sum += z;
    }
    const T inv = T(1) / warp_sum(sum);
    // Sweep 3 (per slice of the head dim): the weights (stored by the first slice) and the output.
    T* oi = out + i * HD + h * D;
    for (int64_t d0 = 0; d0 < D; d0 += V * kWarp) {
      Slice<T, V> acc(lane, D - d0);
      for (int64_t c = 0; c < deg; c += kWarp) {
        const int n = chunk_size(deg, c);
        const int64_t e_mine = b + c + lane;
        int64_t j_mine = 0;
        T w_mine = T(0);
        if (lane < n) {
          j_mine = a.indices[e_mine];
          T* slot = probs + e_mine * H + h;
          T at = *slot;
          if (d0 == 0) *slot = at = at * inv;
          w_mine = a.drop ? at * drop_factor(a, e_mine, h) : at;
        }
        for (int u = 0; u < n; ++u) {
          const T wt = __shfl_sync(kFull, w_mine, u);
          acc.add(wt, a.v + __shfl_sync(kFull, j_mine, u) * HD + h * D + d0);
        }
      }
      acc.store(oi + d0);
    }
  }
}

// Per (query row, head): ds[e,h] = a (f dp - c) scale with dp = go_i . v_j, c = sum a f dp over
// the row (in edge order, as the CPU), then gq[i,h] = sum ds (k_j + r_p) when gq is wanted.
template <class T, int V>
__global__ void __launch_bounds__(kBlock) backward_query_kernel(const GraphAttnArgs<T> a, const T* __restrict__ probs,
                                                                const T* __restrict__ go, T* __restrict__ ds,
                                                                T* __restrict__ gq) {
  const int lane = threadIdx.x % kWarp;
  const int64_t H = a.H, D = a.D, HD = H * D;
  for (int64_t w = first_warp(); w < a.Nq * H; w += warp_stride()) {
    const int64_t i = w / H, h = w % H;
    const int64_t b = a.indptr[i], deg = a.indptr[i + 1] - b;
    const T* gi = go + i * HD + h * D;
    // Sweep 1: f dp into ds (temporarily), c accumulated in edge order in every lane alike.
    T c_sum = T(0);
    for (int64_t c = 0; c < deg; c += kWarp) {
      const int n = chunk_size(deg, c);
      const int64_t e_mine = b + c + lane;
      int64_t j_mine = 0;
      T a_mine = T(0), f_mine = T(1);
      if (lane < n) {
        j_mine = a.indices[e_mine];
        a_mine = probs[e_mine * H + h];
        if (a.drop) f_mine = drop_factor(a, e_mine, h);
      }
      T d_mine = T(0);
      for (int u = 0; u < n; ++u) {
        const T* vj = a.v + __shfl_sync(kFull, j_mine, u) * HD + h * D;
        T dp = T(0);
        for (int64_t d = lane; d < D; d += kWarp) dp += gi[d] * vj[d];
        dp = warp_sum(dp);
        if (a.drop) dp *= __shfl_sync(kFull, f_mine, u);
        c_sum += __shfl_sync(kFull, a_mine, u) * dp;
        if (lane == u) d_mine = dp;
      }
      if (lane < n) ds[e_mine * H + h] = d_mine;
    }
    // Sweep 2: the score gradients, each by the lane that stored its f dp.
    for (int64_t t = lane; t < deg; t += kWarp) {
      const int64_t x = (b + t) * H + h;
      ds[x] = probs[x] * (ds[x] - c_sum) * a.scale;
    }
    if (!gq) continue;
    // Sweep 3: gq, one slice of the head dim at a time.
    T* gqi = gq + i * HD + h * D;
    for (int64_t d0 = 0; d0 < D; d0 += V * kWarp) {
      Slice<T, V> acc(lane, D - d0);
      for (int64_t c = 0; c < deg; c += kWarp) {
        const int n = chunk_size(deg, c);
        const int64_t e_mine = b + c + lane;
        int64_t j_mine = 0, p_mine = 0;
        T s_mine = T(0);
        if (lane < n) {
          j_mine = a.indices[e_mine];
          if (a.rel) p_mine = a.rel[e_mine];
          s_mine = ds[e_mine * H + h];
        }
        for (int u = 0; u < n; ++u) {
          const T s = __shfl_sync(kFull, s_mine, u);
          const T* kj = a.k + __shfl_sync(kFull, j_mine, u) * HD + h * D + d0;
          const int64_t p = __shfl_sync(kFull, p_mine, u);
          if (a.rel) acc.add(s, kj, rel_row(a, p, h) + d0);
          else acc.add(s, kj);
        }
      }
      acc.store(gqi + d0);
    }
  }
}

// Per (key row, head) over the edges into that key, in edge order: gk = sum ds q_i,
// gv = sum a f go_i. A key no edge reaches gets zeros.
template <class T, int V>
__global__ void __launch_bounds__(kBlock) backward_key_kernel(const GraphAttnArgs<T> a, const T* __restrict__ probs,
                                                              const T* __restrict__ go, const T* __restrict__ ds,
                                                              const GraphEdgeGroups g, T* __restrict__ gk,
                                                              T* __restrict__ gv) {
  const int lane = threadIdx.x % kWarp;
  const int64_t H = a.H, D = a.D, HD = H * D;
  for (int64_t w = first_warp(); w < a.Nk * H; w += warp_stride()) {
    const int64_t j = w / H, h = w % H;
    const int64_t b = g.start[j], cnt = g.start[j + 1] - b;
    for (int64_t d0 = 0; d0 < D; d0 += V * kWarp) {
      Slice<T, V> ak(lane, D - d0), av(lane, D - d0);
      for (int64_t c = 0; c < cnt; c += kWarp) {
        const int n = chunk_size(cnt, c);
        int64_t i_mine = 0;
        T s_mine = T(0), w_mine = T(0);
        if (lane < n) {
          const int64_t e = g.edge[b + c + lane];
          i_mine = g.row[b + c + lane];
          if (gk) s_mine = ds[e * H + h];
          if (gv) w_mine = a.drop ? probs[e * H + h] * drop_factor(a, e, h) : probs[e * H + h];
        }
        for (int u = 0; u < n; ++u) {
          const int64_t off = __shfl_sync(kFull, i_mine, u) * HD + h * D + d0;
          const T s = __shfl_sync(kFull, s_mine, u), wt = __shfl_sync(kFull, w_mine, u);
          if (gk) ak.add(s, a.q + off);
          if (gv) av.add(wt, go + off);
        }
      }
      if (gk) ak.store(gk + j * HD + h * D + d0);
      if (gv) av.store(gv + j * HD + h * D + d0);
    }
  }
}

// Per run of edges with one position id (and head, for a [P, H, D] table), in edge order:
// part[run(,h)] = sum ds[e,h] q_i[h], the heads in order for a shared table.
template <class T, int V>
__global__ void __launch_bounds__(kBlock) rel_part_kernel(const GraphAttnArgs<T> a, const T* __restrict__ ds,
                                                          const GraphEdgeGroups g, T* __restrict__ part) {
  const int lane = threadIdx.x % kWarp;
  const int64_t H = a.H, D = a.D, HD = H * D, Hr = a.r_per_head ? H : 1;
  for (int64_t w = first_warp(); w < g.runs * Hr; w += warp_stride()) {
    const int64_t run = w / Hr, hr = w % Hr;
    const int64_t h_begin = a.r_per_head ? hr : 0, h_end = a.r_per_head ? hr + 1 : H;
    const int64_t b = g.run_bound[run], cnt = g.run_bound[run + 1] - b;
    T* row = part + w * D;  // [runs, Hr, D]
    for (int64_t d0 = 0; d0 < D; d0 += V * kWarp) {
      Slice<T, V> acc(lane, D - d0);
      for (int64_t c = 0; c < cnt; c += kWarp) {
        const int n = chunk_size(cnt, c);
        int64_t e_mine = 0, i_mine = 0;
        if (lane < n) {
          e_mine = g.edge[b + c + lane];
          i_mine = g.row[b + c + lane];
        }
        for (int u = 0; u < n; ++u) {
          const int64_t e = __shfl_sync(kFull, e_mine, u), i = __shfl_sync(kFull, i_mine, u);
          for (int64_t h = h_begin; h < h_end; ++h) {
            const T s = ds[e * H + h];  // the same address in every lane: one broadcast load
            acc.add(s, a.q + i * HD + h * D + d0);
          }
        }
      }
      acc.store(row + d0);
    }
  }
}

// gr[p, :] (a row of Hr * D values) = the sum of its runs' partial rows in run order; an id no
// edge uses gets zeros.
template <class T>
__global__ void rel_sum_kernel(const T* __restrict__ part, const int64_t* __restrict__ run_first, int64_t P,
                               int64_t row_len, T* __restrict__ gr) {
  for (int64_t x = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; x < P * row_len; x += int64_t(gridDim.x) * blockDim.x) {
    const int64_t p = x / row_len, col = x % row_len;
    T acc = T(0);
    for (int64_t r = run_first[p]; r < run_first[p + 1]; ++r) acc += part[r * row_len + col];
    gr[x] = acc;
  }
}

// Calls f(std::integral_constant<int, V>) with the register slice width for head dim D: one,
// two or four elements per lane (D up to 32, 64, 128); larger D runs in slices of 128.
template <class F>
void with_slice(int64_t D, F&& f) {
  if (D <= kWarp) f(std::integral_constant<int, 1>{});
  else if (D <= 2 * kWarp) f(std::integral_constant<int, 2>{});
  else f(std::integral_constant<int, 4>{});
}

unsigned warp_grid(int64_t warps) { return grid_for(warps * kWarp, kBlock); }

}  // namespace

template <class T>
void graph_attention_forward(const GraphAttnArgs<T>& a, T* out, T* probs) {
  if (a.Nq * a.H * a.D == 0) return;
  with_slice(a.D, [&](auto v) {
    forward_kernel<T, decltype(v)::value><<<warp_grid(a.Nq * a.H), kBlock, 0, active_stream()>>>(a, out, probs);
  });
  TXTCLS_KERNEL_CHECK("graph_attention forward_kernel");
}

template <class T>
void graph_attention_backward(const GraphAttnArgs<T>& a, const T* probs, const T* go, T* ds, T* gq, T* gk, T* gv,
                              T* gr, const GraphEdgeGroups& by_key, const GraphEdgeGroups& by_rel, T* rel_part) {
  if (a.H * a.D == 0) return;
  cudaStream_t stream = active_stream();
  if (a.Nq > 0) {
    with_slice(a.D, [&](auto v) {
      backward_query_kernel<T, decltype(v)::value><<<warp_grid(a.Nq * a.H), kBlock, 0, stream>>>(a, probs, go, ds, gq);
    });
    TXTCLS_KERNEL_CHECK("graph_attention backward_query_kernel");
  }
  if ((gk || gv) && a.Nk > 0) {
    with_slice(a.D, [&](auto v) {
      backward_key_kernel<T, decltype(v)::value>
          <<<warp_grid(a.Nk * a.H), kBlock, 0, stream>>>(a, probs, go, ds, by_key, gk, gv);
    });
    TXTCLS_KERNEL_CHECK("graph_attention backward_key_kernel");
  }
  if (gr && a.P > 0) {
    const int64_t Hr = a.r_per_head ? a.H : 1;
    if (by_rel.runs > 0) {
      with_slice(a.D, [&](auto v) {
        rel_part_kernel<T, decltype(v)::value>
            <<<warp_grid(by_rel.runs * Hr), kBlock, 0, stream>>>(a, ds, by_rel, rel_part);
      });
      TXTCLS_KERNEL_CHECK("graph_attention rel_part_kernel");
    }
    rel_sum_kernel<T><<<grid_for(a.P * Hr * a.D), kBlock, 0, stream>>>(rel_part, by_rel.run_first, a.P, Hr * a.D, gr);
    TXTCLS_KERNEL_CHECK("graph_attention rel_sum_kernel");
  }
}

template void graph_attention_forward<float>(const GraphAttnArgs<float>&, float*, float*);
template void graph_attention_forward<double>(const GraphAttnArgs<double>&, double*, double*);
template void graph_attention_backward<float>(const GraphAttnArgs<float>&, const float*, const float*, float*, float*,
                                              float*, float*, float*, const GraphEdgeGroups&, const GraphEdgeGroups&,
                                              float*);
template void graph_attention_backward<double>(const GraphAttnArgs<double>&, const double*, const double*, double*,
                                               double*, double*, double*, double*, const GraphEdgeGroups&,
                                               const GraphEdgeGroups&, double*);

}  // namespace txtcls::cuda
