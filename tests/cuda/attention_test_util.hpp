#pragma once
// Inputs of the CUDA attention tests (test_cuda_attention*.cpp): configurations (sizes and
// options) and random inputs for them, on the CPU.
#include <limits>
#include <sstream>
#include <string>

#include "cuda_test_util.hpp"
#include "txtcls/cuda/attention.hpp"
#include "txtcls/ops/attention.hpp"

namespace ct {

using namespace txtcls;

struct Config {
  int64_t B = 0, H = 0, Lq = 0, Lk = 0, D = 0, Dv = 0;
  bool causal = false;
  Shape bias;            // empty: none
  bool lengths = false;  // key lengths, one of them 0 and one Lk
  bool mask = false;     // additive [B, 1, Lq, Lk] with -inf entries
  bool allowed = false;  // boolean [H, Lq, Lk]
  double p = 0;          // dropout
  bool permuted = false; // q read through a [B, Lq, H, D] permutation (strided rows)
  bool transposed = false;  // k with a non-unit last stride (copied by the op)
};

inline Config dims(int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t D, int64_t Dv) {
  Config c;
  c.B = B, c.H = H, c.Lq = Lq, c.Lk = Lk, c.D = D, c.Dv = Dv;
  return c;
}

inline std::string describe(const Config& c) {
  std::ostringstream s;
  s << "B " << c.B << " H " << c.H << " Lq " << c.Lq << " Lk " << c.Lk << " D " << c.D << " Dv " << c.Dv
    << (c.causal ? " causal" : "") << (c.bias.empty() ? "" : " bias " + shape_str(c.bias))
    << (c.lengths ? " lengths" : "") << (c.mask ? " mask" : "") << (c.allowed ? " allowed" : "") << " p " << c.p
    << (c.permuted ? " permuted-q" : "") << (c.transposed ? " transposed-k" : "");
  return s.str();
}

// Random inputs and options for a configuration (CPU tensors).
template <class T>
struct Inputs {
  Tensor<T> q, k, v, go;
  AttentionOptions<T> o;
};

template <class T>
Inputs<T> make_inputs(const Config& c, uint64_t seed) {
  const T inf = std::numeric_limits<T>::infinity();
  Inputs<T> in;
  in.q = ct::rnd<T>({c.B, c.H, c.Lq, c.D}, seed);
  in.k = ct::rnd<T>({c.B, c.H, c.Lk, c.D}, seed + 1);
  in.v = ct::rnd<T>({c.B, c.H, c.Lk, c.Dv}, seed + 2);
  in.go = ct::rnd<T>({c.B, c.H, c.Lq, c.Dv}, seed + 3);
  AttentionOptions<T>& o = in.o;
  o.causal = c.causal;
  o.dropout_p = c.p;
  if (!c.bias.empty()) o.bias = ct::rnd<T>(c.bias, seed + 4);
  if (c.lengths) {
    std::vector<int64_t> len(static_cast<size_t>(c.B));
    for (int64_t b = 0; b < c.B; ++b) len[b] = (b * 7 + c.Lk / 2 + 1) % (c.Lk + 1);
    len[0] = 0;  // an all-padding sequence: empty rows
    if (c.B > 1) len[c.B - 1] = c.Lk;
    o.key_lengths = from_vector<int64_t>(len, {c.B});
  }
  if (c.mask) {
    std::vector<T> m = ct::rnd<T>({c.B, 1, c.Lq, c.Lk}, seed + 5, -3, 0).to_vector();
    for (size_t i = 0; i < m.size(); i += 3) m[i] = -inf;
    o.mask = from_vector<T>(m, {c.B, 1, c.Lq, c.Lk});
  }
  if (c.allowed) {
    std::vector<uint8_t> a(static_cast<size_t>(c.H * c.Lq * c.Lk));
    for (size_t i = 0; i < a.size(); ++i) a[i] = ((i * 2654435761u) >> 7) % 4 != 0;
    o.allowed = from_vector<uint8_t>(a, {c.H, c.Lq, c.Lk});
  }
  return in;
}

// The comparison of CT_CHECK_CLOSE_TOL for an error already computed (CHECK: the loops over
// configurations go on after a failure).
inline void require_close(double err, double tol) {
  INFO("relative error " << err << ", tolerance " << tol);
  CHECK(err <= tol);
}

// Selects the tensor-core attention design for a scope and restores the previous one afterwards,
// even when a check throws.
struct MmaKernelScope {
  txtcls::cuda::AttnMmaKernel prev = txtcls::cuda::attention_mma_kernel();
  explicit MmaKernelScope(txtcls::cuda::AttnMmaKernel k) { txtcls::cuda::set_attention_mma_kernel(k); }
  ~MmaKernelScope() { txtcls::cuda::set_attention_mma_kernel(prev); }
  MmaKernelScope(const MmaKernelScope&) = delete;
  MmaKernelScope& operator=(const MmaKernelScope&) = delete;
};

}  // namespace ct
