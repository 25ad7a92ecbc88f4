// The LSTM on the GPU (txtcls/cuda/lstm.hpp): cuBLAS for every product, three small kernels
// around it, no atomics (results are reproducible run to run).
//
// Forward, with the directions as the batch of every GEMM:
//   gather    xs[d, s, b] = x[b, t_d(s)] (t_d(s) = s forward, len[b]-1-s reverse), zero on dead
//             rows s >= len[b], so both directions are the same forward recurrence;
//   project   gates[d] = xs[d] W_ih[d]^T for all steps at once (one GEMM);
//   per step  gates[d, s] += h[d, s-1] W_hh[d]^T (cuBLAS beta = 1 into the step's slice), then
//             one fused kernel: bias, sigmoid / tanh, the cell and hidden updates; it keeps the
//             activations in place of the pre-activations and writes zeros on dead rows;
//   scatter   out[b, t, d*H:(d+1)*H] = hidden[d, s_d(t), b], zero for t >= len[b].
// Backward, per step from the last: one fused kernel turns the saved activations into the
// pre-activation gradients dG (in place) and carries dc; one GEMM gives dh = dG W_hh for the
// step before. Then dW_ih = dG^T xs, dW_hh = dG^T h_prev (h_prev is the hidden buffer shifted
// by one step, and h0 for step 0), db = the column sums of dG, dx = dG W_ih scattered back.
#include <atomic>

#include "launch.cuh"
#include "txtcls/cuda/blas.hpp"
#include "txtcls/cuda/elementwise.hpp"
#include "txtcls/cuda/lstm.hpp"

namespace txtcls::cuda {
namespace {

std::atomic<LstmBackend> selected_backend{LstmBackend::Own};

template <class T> __device__ __forceinline__ T sigmoid(T x) { return T(1) / (T(1) + exp(-x)); }

// Processing step s of a sequence of length len in the direction: the time it reads. The map
// is its own inverse, so it also gives the step that produced time t.
__device__ __forceinline__ int64_t step_time(int64_t s, int64_t len, bool reverse) { return reverse ? len - 1 - s : s; }

// dst [S, B, W] (one direction): dst[s, b, :] = src[b, step_time(s), :] for s < len[b], else 0.
// src rows are (b, t) with row stride src_ld; the caller offsets src to the wanted columns.
template <class T>
__global__ void gather_steps_kernel(const T* __restrict__ src, int64_t src_ld, int64_t Tm, T* __restrict__ dst,
                                    int64_t S, int64_t B, int64_t W, const int64_t* __restrict__ len, bool reverse) {
  const int64_t n = S * B * W;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t w = e % W, r = e / W, b = r % B, s = r / B;
    const int64_t L = len[b];
    dst[e] = s < L ? src[(b * Tm + step_time(s, L, reverse)) * src_ld + w] : T(0);
  }
}

// dst[b, t, :W] (row stride dst_ld, offset by the caller) = src[step_time(t), b, :] for
// t < len[b], else 0; added to dst when accumulate. Every (b, t) row of dst is written.
template <class T>
__global__ void scatter_steps_kernel(const T* __restrict__ src, int64_t B, int64_t W, T* __restrict__ dst,
                                     int64_t dst_ld, int64_t Tm, const int64_t* __restrict__ len, bool reverse,
                                     bool accumulate) {
  const int64_t n = B * Tm * W;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t w = e % W, r = e / W, t = r % Tm, b = r / Tm;
    const int64_t L = len[b];
    const T v = t < L ? src[(step_time(t, L, reverse) * B + b) * W + w] : T(0);
    T* p = dst + r * dst_ld + w;
    *p = accumulate ? *p + v : v;
  }
}

// bias[j] = b_ih[j] + b_hh[j] over n = 4H entries; either input may be null (zero).
template <class T>
__global__ void bias_sum_kernel(const T* __restrict__ b_ih, const T* __restrict__ b_hh, T* __restrict__ bias,
                                int64_t n) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < n; j += int64_t(gridDim.x) * blockDim.x)
    bias[j] = (b_ih ? b_ih[j] : T(0)) + (b_hh ? b_hh[j] : T(0));
}

// Step s of every direction, one thread per (d, b, u). gates holds the pre-activations of the
// step without bias; they become the activations i, f, g, o.
template <class T>
__global__ void cell_forward_kernel(int64_t s, int64_t D, int64_t S, int64_t B, int64_t H,
                                    const int64_t* __restrict__ len, const T* __restrict__ bias,
                                    const T* __restrict__ c0, T* __restrict__ gates, T* __restrict__ cell,
                                    T* __restrict__ hidden) {
  const int64_t n = D * B * H;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t u = e % H, r = e / H, b = r % B, d = r / B;
    const int64_t row = (d * S + s) * B + b;
    T* g = gates + row * 4 * H + u;
    if (s >= len[b]) {  // dead row: zeros, so later GEMMs over all rows read finite values
      g[0] = g[H] = g[2 * H] = g[3 * H] = T(0);
      cell[row * H + u] = T(0);
      hidden[row * H + u] = T(0);
      continue;
    }
    const T* bd = bias ? bias + d * 4 * H + u : nullptr;
    auto pre = [&](int64_t q) { return bd ? g[q * H] + bd[q * H] : g[q * H]; };
    const T i = sigmoid(pre(0)), f = sigmoid(pre(1)), gg = tanh(pre(2)), o = sigmoid(pre(3));
    T c;
    if (s > 0)
      c = f * cell[(row - B) * H + u] + i * gg;
    else if (c0)
      c = f * c0[b * H + u] + i * gg;
    else
      c = i * gg;
    g[0] = i;
    g[H] = f;
    g[2 * H] = gg;
    g[3 * H] = o;
    cell[row * H + u] = c;
    hidden[row * H + u] = o * tanh(c);
  }
}

// Backward of step s, one thread per (d, b, u). gates: the activations in, dG out. dy: the
// output gradient of the step; dh: dG[s+1] W_hh (read only when step s+1 is live); dc: the cell
// gradient from step s+1 in, the one for step s-1 out (zero on dead rows, which makes it the
// gradient of c0 for empty sequences after step 0).
template <class T>
__global__ void cell_backward_kernel(int64_t s, int64_t D, int64_t S, int64_t B, int64_t H,
                                     const int64_t* __restrict__ len, const T* __restrict__ c0,
                                     const T* __restrict__ cell, const T* __restrict__ dy, const T* __restrict__ dh,
                                     T* __restrict__ dc, T* __restrict__ gates) {
  const int64_t n = D * B * H;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t u = e % H, r = e / H, b = r % B, d = r / B;
    const int64_t row = (d * S + s) * B + b, state = r * H + u;  // state: [D, B, H] index
    T* g = gates + row * 4 * H + u;
    const int64_t L = len[b];
    if (s >= L) {
      g[0] = g[H] = g[2 * H] = g[3 * H] = T(0);
      dc[state] = T(0);
      continue;
    }
    const bool next = s + 1 < L;
    const T i = g[0], f = g[H], gg = g[2 * H], o = g[3 * H];
    const T tc = tanh(cell[row * H + u]);
    T dhs = dy[row * H + u];
    if (next) dhs += dh[state];
    T dct = dhs * o * (T(1) - tc * tc);
    if (next) dct += dc[state];
    T df = T(0);
    if (s > 0)
      df = dct * cell[(row - B) * H + u] * f * (T(1) - f);
    else if (c0)
      df = dct * c0[b * H + u] * f * (T(1) - f);
    dc[state] = dct * f;
    g[0] = dct * gg * i * (T(1) - i);
    g[H] = df;
    g[2 * H] = dct * i * (T(1) - gg * gg);
    g[3 * H] = dhs * tc * o * (T(1) - o);
  }
}

// data [B, T, W]: rows t >= len[b] set to zero, live rows untouched.
template <class T>
__global__ void zero_padding_kernel(T* __restrict__ data, int64_t B, int64_t Tm, int64_t W,
                                    const int64_t* __restrict__ len) {
  const int64_t n = B * Tm * W;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / W, t = r % Tm, b = r / Tm;
    if (t >= len[b]) data[e] = T(0);
  }
}

// dst[b, t] = src[b, step_time(t)] for t < len[b], else 0; both [B, T, W].
template <class T>
__global__ void copy_sequences_kernel(const T* __restrict__ src, T* __restrict__ dst, int64_t B, int64_t Tm,
                                      int64_t W, const int64_t* __restrict__ len, bool reverse) {
  const int64_t n = B * Tm * W;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t w = e % W, r = e / W, t = r % Tm, b = r / Tm;
    const int64_t L = len[b];
    dst[e] = t < L ? src[(b * Tm + step_time(t, L, reverse)) * W + w] : T(0);
  }
}

bool reversed(unsigned mask, int64_t d) { return ((mask >> d) & 1u) != 0; }

template <class T>
void gather_steps(const T* src, int64_t src_ld, int64_t Tm, T* dst, int64_t S, int64_t B, int64_t W, const int64_t* len,
                  bool reverse) {
  const int64_t n = S * B * W;
  if (n == 0) return;
  gather_steps_kernel<T><<<grid_for(n), kBlock, 0, active_stream()>>>(src, src_ld, Tm, dst, S, B, W, len, reverse);
  TXTCLS_KERNEL_CHECK("lstm gather_steps");
}

template <class T>
void scatter_steps(const T* src, int64_t B, int64_t W, T* dst, int64_t dst_ld, int64_t Tm, const int64_t* len,
                   bool reverse, bool accumulate) {
  const int64_t n = B * Tm * W;
  if (n == 0) return;
  scatter_steps_kernel<T><<<grid_for(n), kBlock, 0, active_stream()>>>(src, B, W, dst, dst_ld, Tm, len, reverse,
                                                                       accumulate);
  TXTCLS_KERNEL_CHECK("lstm scatter_steps");
}

// Copies the directions' weights into the stacked buffers (one stride per GEMM batch) and sums
// their biases.
template <class T>
void stack_weights(const LstmDims& dm, const LstmWeightPtrs<T>& w, const LstmState<T>& st) {
  const int64_t G4 = 4 * dm.hidden, I = dm.input, H = dm.hidden;
  cudaStream_t stream = active_stream();
  for (int64_t d = 0; d < dm.dirs; ++d) {
    TXTCLS_CUDA_CHECK(cudaMemcpyAsync(st.w_ih + d * G4 * I, w.w_ih[d], sizeof(T) * G4 * I, cudaMemcpyDeviceToDevice,
                                      stream));
    TXTCLS_CUDA_CHECK(cudaMemcpyAsync(st.w_hh + d * G4 * H, w.w_hh[d], sizeof(T) * G4 * H, cudaMemcpyDeviceToDevice,
                                      stream));
    if (st.bias) {
      bias_sum_kernel<T><<<grid_for(G4), kBlock, 0, stream>>>(w.b_ih[d], w.b_hh[d], st.bias + d * G4, G4);
      TXTCLS_KERNEL_CHECK("lstm bias_sum");
    }
  }
}

void check_dims(const LstmDims& dm, const char* what) {
  TXTCLS_CHECK(dm.dirs >= 1 && dm.dirs <= 2 && dm.steps >= 1 && dm.steps <= dm.time && dm.batch >= 1 &&
                   dm.input >= 1 && dm.hidden >= 1,
               what, ": invalid sizes D=", dm.dirs, " B=", dm.batch, " T=", dm.time, " S=", dm.steps, " I=", dm.input,
               " H=", dm.hidden);
}

}  // namespace

template <class T>
void lstm_forward(const LstmDims& dm, const LstmWeightPtrs<T>& w, const LstmState<T>& st, const T* x, T* out) {
  check_dims(dm, "lstm_forward");
  const int64_t D = dm.dirs, B = dm.batch, Tm = dm.time, S = dm.steps, I = dm.input, H = dm.hidden, G4 = 4 * H;
  stack_weights(dm, w, st);
  for (int64_t d = 0; d < D; ++d)
    gather_steps(x, I, Tm, st.xs + d * S * B * I, S, B, I, st.lengths, reversed(st.reverse, d));
  // gates[d] = xs[d] W_ih[d]^T over all S*B rows.
  gemm<T>(S * B, G4, I, {st.xs, I, S * B * I, false}, {st.w_ih, I, G4 * I, true}, st.gates, G4, S * B * G4, D);
  const int64_t n = D * B * H;
  for (int64_t s = 0; s < S; ++s) {
    // gates[d, s] += h_prev[d] W_hh[d]^T; h_prev is the previous step's hidden rows, or h0
    // (shared by the directions: batch stride 0), or zero (nothing to add).
    const T* hp = s > 0 ? st.hidden + (s - 1) * B * H : st.h0;
    if (hp)
      gemm<T>(B, G4, H, {hp, H, s > 0 ? S * B * H : 0, false}, {st.w_hh, H, G4 * H, true}, st.gates + s * B * G4, G4,
              S * B * G4, D, T(1), T(1));
    cell_forward_kernel<T><<<grid_for(n), kBlock, 0, active_stream()>>>(s, D, S, B, H, st.lengths, st.bias, st.c0,
                                                                        st.gates, st.cell, st.hidden);
    TXTCLS_KERNEL_CHECK("lstm cell_forward");
  }
  for (int64_t d = 0; d < D; ++d)
    scatter_steps(st.hidden + d * S * B * H, B, H, out + d * H, D * H, Tm, st.lengths, reversed(st.reverse, d), false);
}

template <class T>
void lstm_backward(const LstmDims& dm, const LstmState<T>& st, const T* grad_out, const LstmGradPtrs<T>& gr) {
  check_dims(dm, "lstm_backward");
  TXTCLS_CHECK(gr.dc && gr.dh && gr.dy && (!gr.x || gr.dxs), "lstm_backward: scratch buffers missing");
  const int64_t D = dm.dirs, B = dm.batch, Tm = dm.time, S = dm.steps, I = dm.input, H = dm.hidden, G4 = 4 * H;
  cudaStream_t stream = active_stream();
  for (int64_t d = 0; d < D; ++d)
    gather_steps(grad_out + d * H, D * H, Tm, gr.dy + d * S * B * H, S, B, H, st.lengths, reversed(st.reverse, d));

  const int64_t n = D * B * H;
  for (int64_t s = S - 1; s >= 0; --s) {
    cell_backward_kernel<T><<<grid_for(n), kBlock, 0, stream>>>(s, D, S, B, H, st.lengths, st.c0, st.cell, gr.dy,
                                                                gr.dh, gr.dc, st.gates);
    TXTCLS_KERNEL_CHECK("lstm cell_backward");
    // dh[d] = dG[d, s] W_hh[d]: the hidden gradient of step s-1, or of h0 after step 0.
    T* target = s > 0 ? gr.dh : gr.h0;
    if (target)
      gemm<T>(B, H, G4, {st.gates + s * B * G4, G4, S * B * G4, false}, {st.w_hh, H, G4 * H, false}, target, H, B * H,
              D);
  }

  if (gr.w_ih)  // dW_ih[d] = dG[d]^T xs[d]
    gemm<T>(G4, I, S * B, {st.gates, G4, S * B * G4, true}, {st.xs, I, S * B * I, false}, gr.w_ih, I, G4 * I, D);
  if (gr.w_hh) {
    // dW_hh[d] = sum over steps s >= 1 of dG[d, s]^T h[d, s-1] (rows B.. of dG against rows
    // ..(S-1)B of hidden), plus dG[d, 0]^T h0.
    if (S > 1)
      gemm<T>(G4, H, (S - 1) * B, {st.gates + B * G4, G4, S * B * G4, true}, {st.hidden, H, S * B * H, false}, gr.w_hh,
              H, G4 * H, D);
    else
      TXTCLS_CUDA_CHECK(cudaMemsetAsync(gr.w_hh, 0, sizeof(T) * D * G4 * H, stream));  // all-zero bits: 0.0
    if (st.h0)
      gemm<T>(G4, H, B, {st.gates, G4, S * B * G4, true}, {st.h0, H, 0, false}, gr.w_hh, H, G4 * H, D, T(1), T(1));
  }
  if (gr.bias)  // db[d] = the column sums of dG[d] over its S*B rows
    sum<T>(st.gates, gr.bias, make_geometry({D, G4}, {{G4, 1}, {S * B * G4, 1}}, "lstm_backward"),
           make_geometry({S * B}, {{G4}}, "lstm_backward"));
  if (gr.x) {
    // dxs[d] = dG[d] W_ih[d]; dx[b, t] = the sum over directions of the rows that read x[b, t].
    gemm<T>(S * B, I, G4, {st.gates, G4, S * B * G4, false}, {st.w_ih, I, G4 * I, false}, gr.dxs, I, S * B * I, D);
    for (int64_t d = 0; d < D; ++d)
      scatter_steps(gr.dxs + d * S * B * I, B, I, gr.x, I, Tm, st.lengths, reversed(st.reverse, d), d > 0);
  }
}

template <class T>
void lstm_copy_sequences(const T* src, T* dst, int64_t batch, int64_t time, int64_t width, const int64_t* lengths,
                         bool reverse) {
  const int64_t n = batch * time * width;
  if (n == 0) return;
  copy_sequences_kernel<T><<<grid_for(n), kBlock, 0, active_stream()>>>(src, dst, batch, time, width, lengths, reverse);
  TXTCLS_KERNEL_CHECK("lstm copy_sequences");
}

template <class T>
void lstm_zero_padding(T* data, int64_t batch, int64_t time, int64_t width, const int64_t* lengths) {
  const int64_t n = batch * time * width;
  if (n == 0) return;
  zero_padding_kernel<T><<<grid_for(n), kBlock, 0, active_stream()>>>(data, batch, time, width, lengths);
  TXTCLS_KERNEL_CHECK("lstm zero_padding");
}

void set_lstm_backend(LstmBackend backend) {
#ifndef TXTCLS_WITH_CUDNN
  TXTCLS_CHECK(backend != LstmBackend::Cudnn,
               "set_lstm_backend: this build of txtcls_cuda has no cuDNN (not found, or -DTXTCLS_CUDNN=OFF); "
               "only LstmBackend::Own is available");
#endif
  selected_backend.store(backend);
}

LstmBackend lstm_backend() { return selected_backend.load(); }

bool cudnn_available() {
#ifdef TXTCLS_WITH_CUDNN
  return true;
#else
  return false;
#endif
}

#define TXTCLS_LSTM_INSTANTIATE(T)                                                                                  \
  template void lstm_forward<T>(const LstmDims&, const LstmWeightPtrs<T>&, const LstmState<T>&, const T*, T*);     \
  template void lstm_backward<T>(const LstmDims&, const LstmState<T>&, const T*, const LstmGradPtrs<T>&);          \
  template void lstm_zero_padding<T>(T*, int64_t, int64_t, int64_t, const int64_t*);                              \
  template void lstm_copy_sequences<T>(const T*, T*, int64_t, int64_t, int64_t, const int64_t*, bool);
TXTCLS_LSTM_INSTANTIATE(float)
TXTCLS_LSTM_INSTANTIATE(double)
#undef TXTCLS_LSTM_INSTANTIATE

}  // namespace txtcls::cuda
