// cuDNN's LSTM as the second implementation of the LSTM op (txtcls/cuda/lstm.hpp), selected with
// set_lstm_backend(LstmBackend::Cudnn). Built only when CMake finds cuDNN (TXTCLS_WITH_CUDNN).
//
// One layer of 1 or 2 directions over padded batch-first data with per-sequence lengths
// (CUDNN_RNN_DATA_LAYOUT_BATCH_MAJOR_UNPACKED with CUDNN_RNN_PADDED_IO_ENABLED), through the
// cuDNN 8/9 API: cudnnRNNForward, cudnnRNNBackwardData_v8, cudnnRNNBackwardWeights_v8.
//
// Weights: cuDNN keeps its own packed weight space. It is filled from the PyTorch-layout
// weights one gate at a time: cudnnGetRNNWeightParams gives, for pseudo-layer d (the direction)
// and linear layer q (0-3: the gates i, f, g, o applied to the input, 4-7: the same applied to
// the hidden state), the address of a [H, in] row-major matrix (rows q*H .. q*H+H-1 of w_ih or
// w_hh) and of its bias (b_ih, b_hh). Every descriptor cuDNN returns is checked against that
// layout, and the weight gradients are read back through the same addresses.
//
// A lone reverse direction (cuDNN's unidirectional RNN runs forward only) runs on a copy of x
// with each sequence reversed within its length; its output and input gradient are reversed back.
#include <cudnn.h>

#include <map>
#include <memory>
#include <sstream>
#include <type_traits>
#include <vector>

#include "launch.cuh"
#include "txtcls/cuda/blas.hpp"
#include "txtcls/cuda/lstm.hpp"
#include "txtcls/tensor/storage.hpp"

#define TXTCLS_CUDNN_CHECK(call)                                                                         \
  do {                                                                                                   \
    cudnnStatus_t _s = (call);                                                                           \
    if (_s != CUDNN_STATUS_SUCCESS) {                                                                    \
      char _msg[512] = {};                                                                               \
      cudnnGetLastErrorString(_msg, sizeof(_msg));                                                       \
      ::txtcls::detail::fail(#call, " failed at ", __FILE__, ":", __LINE__, ": ", cudnnGetErrorString(_s), \
                             _msg[0] ? " (" : "", _msg, _msg[0] ? ")" : "");                             \
    }                                                                                                    \
  } while (0)

namespace txtcls::cuda {

// Types the plan is made of (named, not anonymous: they are members of CudnnLstmPlan).
namespace cudnn_lstm {

// An owned cuDNN descriptor.
template <class H, cudnnStatus_t (*Create)(H*), cudnnStatus_t (*Destroy)(H)>
class Descriptor {
 public:
  Descriptor() { TXTCLS_CUDNN_CHECK(Create(&h_)); }
  ~Descriptor() {
    if (h_) Destroy(h_);
  }
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;
  H get() const { return h_; }

 private:
  H h_ = nullptr;
};

using TensorDesc = Descriptor<cudnnTensorDescriptor_t, cudnnCreateTensorDescriptor, cudnnDestroyTensorDescriptor>;
using RnnDesc = Descriptor<cudnnRNNDescriptor_t, cudnnCreateRNNDescriptor, cudnnDestroyRNNDescriptor>;
using RnnDataDesc = Descriptor<cudnnRNNDataDescriptor_t, cudnnCreateRNNDataDescriptor, cudnnDestroyRNNDataDescriptor>;
using DropoutDesc = Descriptor<cudnnDropoutDescriptor_t, cudnnCreateDropoutDescriptor, cudnnDestroyDropoutDescriptor>;

// Device memory from the library's caching allocator (on the current stream, like tensors).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(size_t bytes, int device) : bytes_(bytes) {
    if (bytes) storage_ = std::make_unique<Storage<unsigned char>>(bytes, Device::cuda(device));
  }
  void* get() const { return storage_ ? storage_->data() : nullptr; }
  template <class T> T* as() const { return static_cast<T*>(get()); }
  size_t bytes() const { return bytes_; }

 private:
  size_t bytes_ = 0;
  std::unique_ptr<Storage<unsigned char>> storage_;
};

}  // namespace cudnn_lstm

// Everything the backward needs from the forward, besides the tensors the op keeps.
class CudnnLstmPlan {
 public:
  int device = 0;
  int64_t dirs = 1, batch = 0, time = 0, input = 0, hidden = 0;
  bool reverse_only = false;       // one direction, run on the reversed sequences
  bool has_bias = false;
  alignas(8) unsigned char padding_fill[8] = {};  // zero in float and double; cuDNN keeps a pointer
  std::vector<int32_t> seq;        // lengths on the host, as cuDNN's descriptors take them
  cudnn_lstm::DeviceBuffer seq_dev;  // the same on the device (int32)
  cudnn_lstm::DeviceBuffer lengths;  // int64 copy for the padding kernels
  cudnn_lstm::DropoutDesc dropout;
  cudnn_lstm::RnnDesc rnn;
  cudnn_lstm::RnnDataDesc x_desc, y_desc;
  cudnn_lstm::TensorDesc h_desc;  // h and c: [D, B, H]
  cudnn_lstm::DeviceBuffer weights, reserve;
  size_t work_bytes = 0;
  cudnn_lstm::DeviceBuffer x_rev, y_rev;  // reverse_only: the reversed input and cuDNN's output
};

void CudnnLstmPlanDeleter::operator()(CudnnLstmPlan* p) const { delete p; }

namespace {

using cudnn_lstm::DeviceBuffer;
using cudnn_lstm::TensorDesc;

// One handle per device and thread (cuDNN handles are not thread-safe), bound to the thread's
// current stream at every call; kept until release_resources().
thread_local std::map<int, cudnnHandle_t> cudnn_handles;

void release_cudnn_handles() {
  for (auto& [device, h] : cudnn_handles) {
    DeviceGuard guard(device);
    cudnnDestroy(h);
  }
  cudnn_handles.clear();
}

cudnnHandle_t cudnn_handle() {
  auto& handles = cudnn_handles;
  int device = 0;
  TXTCLS_CUDA_CHECK(cudaGetDevice(&device));
  auto it = handles.find(device);
  if (it == handles.end()) {
    cudnnHandle_t h = nullptr;
    TXTCLS_CUDNN_CHECK(cudnnCreate(&h));
    it = handles.emplace(device, h).first;
    on_release_resources(&release_cudnn_handles);
  }
  TXTCLS_CUDNN_CHECK(cudnnSetStream(it->second, active_stream()));
  return it->second;
}

template <class T> constexpr cudnnDataType_t cudnn_type() {
  return std::is_same_v<T, float> ? CUDNN_DATA_FLOAT : CUDNN_DATA_DOUBLE;
}

// float runs on FMA units unless TF32 is allowed (as for cuBLAS, cuda::set_allow_tf32): cuDNN's
// default math would use TF32 tensor cores on Ampere and later.
template <class T> cudnnMathType_t cudnn_math() {
  if constexpr (std::is_same_v<T, float>) return allow_tf32() ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
  return CUDNN_DEFAULT_MATH;
}

// Checks that desc describes a packed row-major array whose dims other than 1 are `want`'s
// (other than 1): the layout the gate matrices and biases are copied in.
void check_param_layout(const TensorDesc& desc, std::vector<int64_t> want, const char* what, int layer, int id) {
  cudnnDataType_t type;
  int nd = 0, dims[8] = {}, strides[8] = {};
  TXTCLS_CUDNN_CHECK(cudnnGetTensorNdDescriptor(desc.get(), 8, &type, &nd, dims, strides));
  std::vector<int64_t> got;
  int64_t expect_stride = 1;
  bool packed = true;
  for (int k = nd - 1; k >= 0; --k) {
    if (dims[k] == 1) continue;
    got.insert(got.begin(), dims[k]);
    packed = packed && strides[k] == expect_stride;
    expect_stride *= dims[k];
  }
  std::erase(want, int64_t(1));
  if (got == want && packed) return;
  std::ostringstream os;
  for (int k = 0; k < nd; ++k) os << (k ? ", " : "") << dims[k] << " (stride " << strides[k] << ")";
  detail::fail("cudnn lstm: the ", what, " of pseudo-layer ", layer, ", linear layer ", id, " has dims [", os.str(),
               "], not the packed row-major layout the PyTorch weights are copied in");
}

struct GateParam {
  void* matrix = nullptr;
  void* bias = nullptr;
};

// Where gate `q` of direction d sits in `space` (the weight space or its gradient): on the input
// (recurrent = false, a [H, I] matrix) or on the hidden state ([H, H]), with its bias.
GateParam gate_param(cudnnHandle_t h, const CudnnLstmPlan& p, const void* space, int64_t d, int64_t q, bool recurrent,
                     bool has_bias) {
  const int layer = static_cast<int>(d), id = static_cast<int>(q + (recurrent ? 4 : 0));
  TensorDesc md, bd;
  GateParam g;
  TXTCLS_CUDNN_CHECK(cudnnGetRNNWeightParams(h, p.rnn.get(), layer, p.weights.bytes(), space, id, md.get(), &g.matrix,
                                             bd.get(), &g.bias));
  TXTCLS_CHECK(g.matrix, "cudnn lstm: no weight matrix for pseudo-layer ", layer, ", linear layer ", id);
  check_param_layout(md, {p.hidden, recurrent ? p.hidden : p.input}, "matrix", layer, id);
  if (has_bias) {
    TXTCLS_CHECK(g.bias, "cudnn lstm: no bias for pseudo-layer ", layer, ", linear layer ", id);
    check_param_layout(bd, {p.hidden}, "bias", layer, id);
  }
  return g;
}

void copy_async(void* dst, const void* src, size_t bytes) {
  TXTCLS_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, active_stream()));
}

// Descriptors, the lengths on the device, the weight space filled from w, the reserve space.
template <class T>
void configure(CudnnLstmPlan& p, cudnnHandle_t h, const CudnnLstmDims& dm, const LstmWeightPtrs<T>& w) {
  const bool has_bias = p.has_bias;
  const int64_t D = p.dirs, B = p.batch, H = p.hidden, I = p.input;
  p.seq.assign(dm.lengths_host, dm.lengths_host + B);
  p.seq_dev = DeviceBuffer(sizeof(int32_t) * B, p.device);
  TXTCLS_CUDA_CHECK(cudaMemcpyAsync(p.seq_dev.get(), p.seq.data(), sizeof(int32_t) * B, cudaMemcpyHostToDevice,
                                    active_stream()));
  p.lengths = DeviceBuffer(sizeof(int64_t) * B, p.device);
  copy_async(p.lengths.get(), dm.lengths, sizeof(int64_t) * B);

  const cudnnDataType_t type = cudnn_type<T>();
  TXTCLS_CUDNN_CHECK(cudnnSetDropoutDescriptor(p.dropout.get(), h, 0.0f, nullptr, 0, 0));  // no dropout, no states
  TXTCLS_CUDNN_CHECK(cudnnSetRNNDescriptor_v8(
      p.rnn.get(), CUDNN_RNN_ALGO_STANDARD, CUDNN_LSTM, has_bias ? CUDNN_RNN_DOUBLE_BIAS : CUDNN_RNN_NO_BIAS,
      D == 2 ? CUDNN_BIDIRECTIONAL : CUDNN_UNIDIRECTIONAL, CUDNN_LINEAR_INPUT, type, type, cudnn_math<T>(),
      static_cast<int32_t>(I), static_cast<int32_t>(H), static_cast<int32_t>(H) /* no projection */, 1,
      p.dropout.get(), CUDNN_RNN_PADDED_IO_ENABLED));
  TXTCLS_CUDNN_CHECK(cudnnSetRNNDataDescriptor(p.x_desc.get(), type, CUDNN_RNN_DATA_LAYOUT_BATCH_MAJOR_UNPACKED,
                                               static_cast<int>(p.time), static_cast<int>(B), static_cast<int>(I),
                                               p.seq.data(), p.padding_fill));
  TXTCLS_CUDNN_CHECK(cudnnSetRNNDataDescriptor(p.y_desc.get(), type, CUDNN_RNN_DATA_LAYOUT_BATCH_MAJOR_UNPACKED,
                                               static_cast<int>(p.time), static_cast<int>(B),
                                               static_cast<int>(D * H), p.seq.data(), p.padding_fill));
  const int hdims[3] = {static_cast<int>(D), static_cast<int>(B), static_cast<int>(H)};
  const int hstrides[3] = {static_cast<int>(B * H), static_cast<int>(H), 1};
  TXTCLS_CUDNN_CHECK(cudnnSetTensorNdDescriptor(p.h_desc.get(), type, 3, hdims, hstrides));

  size_t weight_bytes = 0, reserve_bytes = 0;
  TXTCLS_CUDNN_CHECK(cudnnGetRNNWeightSpaceSize(h, p.rnn.get(), &weight_bytes));
  p.weights = DeviceBuffer(weight_bytes, p.device);
  // Zero first: a missing bias (only one of b_ih, b_hh given) stays zero, and no byte of the
  // space is left poisoned.
  TXTCLS_CUDA_CHECK(cudaMemsetAsync(p.weights.get(), 0, weight_bytes, active_stream()));
  for (int64_t d = 0; d < D; ++d)
    for (int64_t q = 0; q < 4; ++q) {
      const GateParam wi = gate_param(h, p, p.weights.get(), d, q, false, has_bias);
      const GateParam wh = gate_param(h, p, p.weights.get(), d, q, true, has_bias);
      copy_async(wi.matrix, w.w_ih[d] + q * H * I, sizeof(T) * H * I);
      copy_async(wh.matrix, w.w_hh[d] + q * H * H, sizeof(T) * H * H);
      if (has_bias && w.b_ih[d]) copy_async(wi.bias, w.b_ih[d] + q * H, sizeof(T) * H);
      if (has_bias && w.b_hh[d]) copy_async(wh.bias, w.b_hh[d] + q * H, sizeof(T) * H);
    }
  TXTCLS_CUDNN_CHECK(
      cudnnGetRNNTempSpaceSizes(h, p.rnn.get(), CUDNN_FWD_MODE_TRAINING, p.x_desc.get(), &p.work_bytes, &reserve_bytes));
  p.reserve = DeviceBuffer(reserve_bytes, p.device);
}

void check_dims(const CudnnLstmDims& dm) {
  constexpr int64_t kMax = int64_t(1) << 31;
  TXTCLS_CHECK(dm.dirs >= 1 && dm.dirs <= 2 && dm.batch >= 1 && dm.time >= 1 && dm.input >= 1 && dm.hidden >= 1 &&
                   dm.batch < kMax && dm.time < kMax && dm.input < kMax && dm.dirs * dm.hidden < kMax &&
                   dm.batch * dm.hidden < kMax,
               "cudnn lstm: unsupported sizes D=", dm.dirs, " B=", dm.batch, " T=", dm.time, " I=", dm.input,
               " H=", dm.hidden);
  TXTCLS_CHECK(!dm.reverse || dm.dirs == 1, "cudnn lstm: reverse applies to a single direction");
  for (int64_t b = 0; b < dm.batch; ++b)
    TXTCLS_CHECK(dm.lengths_host[b] >= 1 && dm.lengths_host[b] <= dm.time, "cudnn lstm: lengths[", b, "] = ",
                 dm.lengths_host[b], " is outside [1, ", dm.time, "] (cuDNN takes no empty sequence)");
}

}  // namespace

template <class T>
CudnnLstmPlan* cudnn_lstm_forward(const CudnnLstmDims& dm, const LstmWeightPtrs<T>& w, bool has_bias, const T* x,
                                  const T* h0, const T* c0, T* out) {
  check_dims(dm);
  auto p = std::make_unique<CudnnLstmPlan>();
  TXTCLS_CUDA_CHECK(cudaGetDevice(&p->device));
  p->dirs = dm.dirs;
  p->batch = dm.batch;
  p->time = dm.time;
  p->input = dm.input;
  p->hidden = dm.hidden;
  p->reverse_only = dm.reverse;
  p->has_bias = has_bias;
  const int64_t B = p->batch, Tm = p->time, I = p->input, H = p->hidden, D = p->dirs;
  cudnnHandle_t h = cudnn_handle();
  configure<T>(*p, h, dm, w);

  const T* xin = x;
  T* y = out;
  if (p->reverse_only) {
    p->x_rev = DeviceBuffer(sizeof(T) * B * Tm * I, p->device);
    p->y_rev = DeviceBuffer(sizeof(T) * B * Tm * H, p->device);
    lstm_copy_sequences<T>(x, p->x_rev.as<T>(), B, Tm, I, p->lengths.as<int64_t>(), true);
    xin = p->x_rev.as<T>();
    y = p->y_rev.as<T>();
  }
  DeviceBuffer work(p->work_bytes, p->device);
  TXTCLS_CUDNN_CHECK(cudnnRNNForward(h, p->rnn.get(), CUDNN_FWD_MODE_TRAINING, p->seq_dev.as<int32_t>(),
                                     p->x_desc.get(), xin, p->y_desc.get(), y, p->h_desc.get(), h0, nullptr,
                                     p->h_desc.get(), c0, nullptr, p->weights.bytes(), p->weights.get(), work.bytes(),
                                     work.get(), p->reserve.bytes(), p->reserve.get()));
  // The padding fill covers the padded steps; zeroing them again costs little and does not
  // depend on how a cuDNN version reads that argument.
  if (p->reverse_only)
    lstm_copy_sequences<T>(y, out, B, Tm, H, p->lengths.as<int64_t>(), true);
  else
    lstm_zero_padding<T>(out, B, Tm, D * H, p->lengths.as<int64_t>());
  return p.release();
}

template <class T>
void cudnn_lstm_backward(CudnnLstmPlan& p, const T* x, const T* h0, const T* c0, const T* out, const T* grad_out,
                         T* dx, T* dw_ih, T* dw_hh, T* dbias, T* dh0, T* dc0) {
  const int64_t B = p.batch, Tm = p.time, I = p.input, H = p.hidden, D = p.dirs;
  const int64_t* len = p.lengths.as<int64_t>();
  cudnnHandle_t h = cudnn_handle();
  // The output gradient with zeros on padded steps (what cuDNN reads there is not documented),
  // in cuDNN's order for a lone reverse direction.
  DeviceBuffer dy(sizeof(T) * B * Tm * D * H, p.device);
  lstm_copy_sequences<T>(grad_out, dy.as<T>(), B, Tm, D * H, len, p.reverse_only);
  const T* xin = p.reverse_only ? p.x_rev.as<T>() : x;
  const T* y = p.reverse_only ? p.y_rev.as<T>() : out;
  // cuDNN always produces dx (the weight gradients need its internal state): into dx itself when
  // wanted and in order, else into scratch.
  DeviceBuffer dx_scratch;
  T* dx_target = dx;
  if (!dx || p.reverse_only) {
    dx_scratch = DeviceBuffer(sizeof(T) * B * Tm * I, p.device);
    dx_target = dx_scratch.as<T>();
  }
  DeviceBuffer work(p.work_bytes, p.device);
  TXTCLS_CUDNN_CHECK(cudnnRNNBackwardData_v8(h, p.rnn.get(), p.seq_dev.as<int32_t>(), p.y_desc.get(), y, dy.as<T>(),
                                             p.x_desc.get(), dx_target, p.h_desc.get(), h0, nullptr, dh0,
                                             p.h_desc.get(), c0, nullptr, dc0, p.weights.bytes(), p.weights.get(),
                                             work.bytes(), work.get(), p.reserve.bytes(), p.reserve.get()));
  if (dx && p.reverse_only)
    lstm_copy_sequences<T>(dx_target, dx, B, Tm, I, len, true);
  else if (dx)
    lstm_zero_padding<T>(dx, B, Tm, I, len);

  if (!dw_ih && !dw_hh && !dbias) return;
  TXTCLS_CHECK(!dbias || p.has_bias, "cudnn lstm: a bias gradient was asked of a layer without biases");
  DeviceBuffer dw(p.weights.bytes(), p.device);
  TXTCLS_CUDA_CHECK(cudaMemsetAsync(dw.get(), 0, dw.bytes(), active_stream()));  // cuDNN adds into it
  TXTCLS_CUDNN_CHECK(cudnnRNNBackwardWeights_v8(h, p.rnn.get(), CUDNN_WGRAD_MODE_ADD, p.seq_dev.as<int32_t>(),
                                                p.x_desc.get(), xin, p.h_desc.get(), h0, p.y_desc.get(), y,
                                                dw.bytes(), dw.get(), work.bytes(), work.get(), p.reserve.bytes(),
                                                p.reserve.get()));
  for (int64_t d = 0; d < D; ++d)
    for (int64_t q = 0; q < 4; ++q) {
      const GateParam wi = gate_param(h, p, dw.get(), d, q, false, p.has_bias);
      const GateParam wh = gate_param(h, p, dw.get(), d, q, true, p.has_bias);
      if (dw_ih) copy_async(dw_ih + (d * 4 * H + q * H) * I, wi.matrix, sizeof(T) * H * I);
      if (dw_hh) copy_async(dw_hh + (d * 4 * H + q * H) * H, wh.matrix, sizeof(T) * H * H);
      // The gradients of b_ih and b_hh are equal; the op returns one (as the CPU op does).
      if (dbias) copy_async(dbias + d * 4 * H + q * H, wi.bias, sizeof(T) * H);
    }
}

#define TXTCLS_CUDNN_LSTM_INSTANTIATE(T)                                                                      \
  template CudnnLstmPlan* cudnn_lstm_forward<T>(const CudnnLstmDims&, const LstmWeightPtrs<T>&, bool, const T*, \
                                                const T*, const T*, T*);                                     \
  template void cudnn_lstm_backward<T>(CudnnLstmPlan&, const T*, const T*, const T*, const T*, const T*, T*, T*, \
                                       T*, T*, T*, T*);
TXTCLS_CUDNN_LSTM_INSTANTIATE(float)
TXTCLS_CUDNN_LSTM_INSTANTIATE(double)
#undef TXTCLS_CUDNN_LSTM_INSTANTIATE

}  // namespace txtcls::cuda
