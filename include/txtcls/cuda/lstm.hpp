#pragma once
// Host-side face of the GPU LSTM (kernels/lstm.cu, kernels/lstm_cudnn.cu). Compiles without
// nvcc; ops/lstm.hpp allocates every buffer as a device tensor and passes raw pointers here.
//
// The layer's D directions (1 or 2) run as one recurrence: the inputs of each direction are
// gathered into processing order first (the reverse direction reads x[b, len[b]-1-s] at step
// s), so both directions step forward in lockstep, and every GEMM is one cuBLAS call batched
// over the directions. Buffers are time-major per direction, [D, S, B, *] with S = the longest
// length, so the rows of one step form one contiguous [B, *] matrix. Rows with s >= len[b] are
// dead: they hold zeros in every saved buffer and receive no gradient.
#include <cstdint>

namespace txtcls::cuda {

struct LstmDims {
  int64_t dirs = 1;    // D
  int64_t batch = 0;   // B
  int64_t time = 0;    // T: x is [B, T, I], the output [B, T, D*H]
  int64_t steps = 0;   // S = max(lengths) >= 1
  int64_t input = 0;   // I
  int64_t hidden = 0;  // H
};

// The weights as given, one pointer per direction (contiguous, PyTorch layout and gate order
// i, f, g, o); biases may be null.
template <class T>
struct LstmWeightPtrs {
  const T* w_ih[2] = {};  // [4H, I]
  const T* w_hh[2] = {};  // [4H, H]
  const T* b_ih[2] = {};  // [4H]
  const T* b_hh[2] = {};  // [4H]
};

// What the forward writes and the backward reads. All device memory, contiguous.
template <class T>
struct LstmState {
  const int64_t* lengths = nullptr;  // [B] on the device
  unsigned reverse = 0;              // bit d set: direction d runs from each sequence's end
  T* w_ih = nullptr;                 // [D, 4H, I], the directions' w_ih stacked (written by the forward)
  T* w_hh = nullptr;                 // [D, 4H, H]
  T* bias = nullptr;                 // [D, 4H] = b_ih + b_hh; null when the layer has no bias
  const T* h0 = nullptr;             // [B, H] or null (zeros), shared by the directions
  const T* c0 = nullptr;             // [B, H] or null
  T* xs = nullptr;                   // [D, S, B, I] inputs in processing order, zero on dead rows
  T* gates = nullptr;                // [D, S, B, 4H] activations i, f, g, o; the backward overwrites
                                     // them with the gradients of the pre-activations
  T* cell = nullptr;                 // [D, S, B, H]
  T* hidden = nullptr;               // [D, S, B, H]
};

// Gradient outputs (null: not wanted) and the backward's scratch buffers.
template <class T>
struct LstmGradPtrs {
  T* x = nullptr;     // [B, T, I], every element written (zero on padding)
  T* w_ih = nullptr;  // [D, 4H, I]
  T* w_hh = nullptr;  // [D, 4H, H]
  T* bias = nullptr;  // [D, 4H]: the gradient of b_ih, equal to that of b_hh
  T* h0 = nullptr;    // [D, B, H], per direction
  T* dc = nullptr;    // [D, B, H] scratch, required; on return the gradient of c0 per direction
  T* dh = nullptr;    // [D, B, H] scratch, required
  T* dy = nullptr;    // [D, S, B, H] scratch, required
  T* dxs = nullptr;   // [D, S, B, I] scratch, required when x is wanted
};

// out [B, T, D*H] = [forward | reverse], zero where t >= lengths[b]; every element written.
template <class T>
void lstm_forward(const LstmDims& dims, const LstmWeightPtrs<T>& weights, const LstmState<T>& state, const T* x,
                  T* out);

// Backpropagation through time from grad_out [B, T, D*H] (contiguous).
template <class T>
void lstm_backward(const LstmDims& dims, const LstmState<T>& state, const T* grad_out, const LstmGradPtrs<T>& grads);

// data [B, T, W] (contiguous): rows t >= lengths[b] set to zero, the others untouched.
template <class T>
void lstm_zero_padding(T* data, int64_t batch, int64_t time, int64_t width, const int64_t* lengths);

// dst[b, t] = src[b, reverse ? lengths[b]-1-t : t] for t < lengths[b], zero otherwise; both
// [B, T, W] contiguous and distinct. Reversing twice gives back the valid steps.
template <class T>
void lstm_copy_sequences(const T* src, T* dst, int64_t batch, int64_t time, int64_t width, const int64_t* lengths,
                         bool reverse);

// Which implementation runs the LSTM op on a CUDA tensor: the kernels above (default), or
// cuDNN's RNN (only in builds that found cuDNN; selecting it elsewhere throws).
enum class LstmBackend { Own, Cudnn };

#ifdef TXTCLS_WITH_CUDA
void set_lstm_backend(LstmBackend backend);
LstmBackend lstm_backend();
bool cudnn_available();  // whether this build links cuDNN
#endif

#ifdef TXTCLS_WITH_CUDNN
// cuDNN's LSTM over the same inputs: x [B, T, I] batch-first, lengths on the host (every one
// >= 1) and on the device (int64). The plan keeps cuDNN's descriptors, packed weights and
// reserve space from the forward for the backward.
class CudnnLstmPlan;

struct CudnnLstmDims {
  int64_t dirs = 1, batch = 0, time = 0, input = 0, hidden = 0;
  bool reverse = false;                   // one direction, run from each sequence's end
  const int64_t* lengths_host = nullptr;  // [B], each in [1, T]
  const int64_t* lengths = nullptr;       // [B] on the device
};

// The CudnnLstmPlan is released through this deleter (its type is complete only in the .cu).
struct CudnnLstmPlanDeleter {
  void operator()(CudnnLstmPlan* p) const;
};

// h0, c0: [D, B, H] or null. out: [B, T, D*H], zero on padding.
template <class T>
CudnnLstmPlan* cudnn_lstm_forward(const CudnnLstmDims& dims, const LstmWeightPtrs<T>& weights, bool has_bias,
                                  const T* x, const T* h0, const T* c0, T* out);

// Gradients as for lstm_backward (null: not wanted): x [B, T, I]; w_ih [D, 4H, I]; w_hh
// [D, 4H, H]; bias [D, 4H]; h0, c0 [D, B, H]. x, h0, c0 and out are those of the forward.
template <class T>
void cudnn_lstm_backward(CudnnLstmPlan& plan, const T* x, const T* h0, const T* c0, const T* out, const T* grad_out,
                         T* dx, T* dw_ih, T* dw_hh, T* dbias, T* dh0, T* dc0);
#endif

}  // namespace txtcls::cuda
