#pragma once
// The configurations of the CUDA attention tests (test_cuda_attention*.cpp) and their random
// inputs, free of Catch2 so that the host emulation of the tensor-core kernels
// (tools/cuda_emulate/check_attention.cpp) runs the very same ones.
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "test_common.hpp"
#include "txtcls/cuda/attention.hpp"
#include "txtcls/io/half.hpp"
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

// float16 / bfloat16 values: x rounded to the nearest (narrow), back to float (widen), and a
// tensor's values rounded so, as the 16-bit tests feed both sides (contiguous result).
inline uint16_t narrow(float x, cuda::AttnHalf t) {
  return t == cuda::AttnHalf::F16 ? half::float_to_f16(x) : half::float_to_bf16(x);
}
inline float widen(uint16_t x, cuda::AttnHalf t) {
  return t == cuda::AttnHalf::F16 ? half::f16_to_float(x) : half::bf16_to_float(x);
}
inline Tensor<float> rounded(const Tensor<float>& x, cuda::AttnHalf t) {
  std::vector<float> v = x.to_vector();
  for (float& e : v) e = widen(narrow(e, t), t);
  return from_vector<float>(v, x.shape());
}

// The comparison floor of the bias gradient. A bias constant along the keys (last dim 1) has a
// gradient that is zero in exact arithmetic: each element sums dS over a row, sum_j P Z dP - delta
// = delta - delta, rounding noise on the scale of delta = rowsum(dO * O). 0 for any other bias.
template <class T>
double dbias_floor(const Config& c, const Tensor<T>& out, const Tensor<T>& go) {
  if (c.bias.empty() || c.bias.back() != 1) return 0;
  const std::vector<T> o = out.contiguous().to_vector(), g = go.contiguous().to_vector();
  double floor = 0;
  for (size_t r = 0; r + static_cast<size_t>(c.Dv) <= o.size() && c.Dv > 0; r += static_cast<size_t>(c.Dv)) {
    double delta = 0;
    for (int64_t d = 0; d < c.Dv; ++d) delta += double(o[r + d]) * double(g[r + d]);
    floor = std::max(floor, std::abs(delta));
  }
  return floor;
}

// The configurations of the float and double tests (FMA kernels, and TF32 tensor cores): awkward
// lengths (query and key blocks cut anywhere), Lq != Lk, Dv != D, every option, strided views.
inline std::vector<Config> float_configs() {
  std::vector<Config> cs;
  // Lengths and head dims: tiles cut at every place, both compiled widths (64, 128) and dims
  // padded into them.
  for (int64_t L : {1, 31, 65, 130})
    for (int64_t D : {16, 64, 80, 128}) cs.push_back(dims(2, 3, L, L, D, D));
  cs.push_back(dims(2, 2, 31, 65, 64, 16));                 // Lq < Lk, Dv < D
  cs.push_back(dims(2, 2, 130, 31, 16, 80));                // Lq > Lk, Dv > D
  cs.push_back(dims(1, 1, 1, 130, 5, 7));                   // one query, odd dims
  Config c = dims(2, 2, 65, 130, 64, 64);
  c.causal = true;                                       // causal, bottom-right aligned (a memory)
  cs.push_back(c);
  c = dims(2, 2, 130, 65, 128, 128);
  c.causal = true;                                       // Lk < Lq: the first rows see nothing
  cs.push_back(c);
  c = dims(3, 2, 65, 65, 64, 64);
  c.lengths = true;                                      // padding, one sequence empty
  cs.push_back(c);
  c = dims(2, 3, 31, 65, 80, 80);
  c.bias = {3, 31, 65};                                  // [H, Lq, Lk]
  cs.push_back(c);
  c = dims(2, 3, 65, 31, 64, 32);
  c.bias = {1, 3, 65, 31};                               // [1, H, Lq, Lk] (T5)
  c.causal = true;
  cs.push_back(c);
  c = dims(3, 2, 65, 130, 64, 64);
  c.bias = {3, 1, 1, 130};                               // [B, 1, 1, Lk]: column sums per head
  c.lengths = true;
  cs.push_back(c);
  c = dims(2, 2, 65, 65, 64, 64);
  c.mask = true;                                         // additive -inf mask
  c.allowed = true;                                      // and a boolean one
  cs.push_back(c);
  c = dims(2, 2, 130, 65, 64, 48);
  c.p = 0.3;                                             // dropout
  c.causal = true;
  cs.push_back(c);
  c = dims(3, 2, 33, 47, 128, 24);                           // everything at once, strided views
  c.causal = true;
  c.bias = {3, 1, 1, 47};
  c.lengths = true;
  c.mask = true;
  c.allowed = true;
  c.p = 0.2;
  c.permuted = true;
  c.transposed = true;
  cs.push_back(c);
  cs.push_back(dims(2, 1, 3, 0, 16, 16));                    // no keys at all: empty rows
  c = dims(2, 2, 1, 130, 64, 64);                           // one query, a per-query bias [Lq, 1]
  c.causal = true;
  c.bias = {1, 1};
  c.lengths = true;
  c.mask = true;
  c.p = 0.1;
  cs.push_back(c);
  c = dims(1, 2, 257, 129, 128, 128);                       // a full bias, dropout, several blocks
  c.causal = true;
  c.bias = {1, 2, 257, 129};
  c.p = 0.2;
  cs.push_back(c);
  return cs;
}

// The configurations of the bfloat16 / float16 tests (the raw 16-bit API, both tensor-core designs).
inline std::vector<Config> half_configs() {
  std::vector<Config> cs;
  for (int64_t L : {1, 31, 65, 130})
    for (int64_t D : {16, 64, 80, 128}) cs.push_back(dims(2, 2, L, L, D, D));
  cs.push_back(dims(2, 2, 31, 130, 64, 24));  // Lq < Lk, Dv < D
  cs.push_back(dims(1, 3, 130, 33, 5, 96));   // Lq > Lk, odd D, Dv > D
  Config c = dims(2, 3, 65, 130, 64, 64);
  c.causal = true;
  c.bias = {3, 65, 130};  // [H, Lq, Lk]
  cs.push_back(c);
  c = dims(3, 2, 130, 65, 128, 128);
  c.causal = true;
  c.bias = {3, 1, 1, 65};  // [B, 1, 1, Lk]
  c.lengths = true;
  cs.push_back(c);
  c = dims(2, 2, 47, 70, 80, 48);
  c.bias = {1, 2, 47, 70};  // [1, H, Lq, Lk]
  c.mask = true;
  c.allowed = true;
  c.p = 0.3;
  c.permuted = true;
  cs.push_back(c);
  // Several streamed blocks each way (the register kernel double-buffers them), 16-byte aligned
  // rows (its cp.async path), causal with Lq != Lk, padding inside and across blocks.
  c = dims(1, 2, 300, 300, 64, 64);
  c.causal = true;
  cs.push_back(c);
  c = dims(2, 2, 257, 520, 128, 128);
  c.lengths = true;
  cs.push_back(c);
  c = dims(1, 3, 520, 200, 128, 64);
  c.causal = true;
  c.bias = {1, 3, 520, 200};
  cs.push_back(c);
  // Odd head dims with every option, no keys, one key with a per-query bias, a head dim between
  // the compiled widths, a full bias with dropout over several blocks.
  c = dims(2, 2, 33, 47, 5, 7);
  c.bias = {2, 2, 33, 47};  // [B, H, Lq, Lk]
  c.lengths = true;
  c.mask = true;
  c.allowed = true;
  c.p = 0.2;
  c.permuted = true;
  cs.push_back(c);
  cs.push_back(dims(2, 1, 3, 0, 16, 16));
  c = dims(2, 2, 31, 1, 64, 64);
  c.bias = {31, 1};
  cs.push_back(c);
  c = dims(2, 2, 100, 100, 96, 100);
  c.causal = true;
  c.bias = {2, 1, 1, 100};
  c.lengths = true;
  c.permuted = true;
  cs.push_back(c);
  c = dims(1, 2, 257, 129, 128, 128);
  c.causal = true;
  c.bias = {1, 2, 257, 129};
  c.p = 0.2;
  cs.push_back(c);
  return cs;
}

}  // namespace ct
