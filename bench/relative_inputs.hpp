#pragma once
// The inputs of the XLNet relative-attention benchmarks, on the CPU (attention_relative.cpp) and
// on the GPU (cuda_relative_attention.cpp): float32 q, k, v [B, H, L(+mlen), D], position keys
// k_r [1, H, klen + L, D] (attn_type "bi"), the three biases and seg_embed, and the segment term
// as XLNetModel hands it over: seg_mat of two segments in the current input, the memory in
// segment 0.
#include <vector>

#include "txtcls/ops/relative_attention_fused.hpp"
#include "txtcls/txtcls.hpp"

namespace txtcls::bench {

struct RelativeInputs {
  Tensor<float> q, k, v, kr, rw, rr;
  RelativeAttentionOptions<float> o;
  // The tensors that get gradients in the layer (q, k, v, k_r, the three biases, seg_embed).
  std::vector<Tensor<float>*> leaves() { return {&q, &k, &v, &kr, &rw, &rr, &o.r_s_bias, &o.seg_embed}; }
};

inline RelativeInputs relative_inputs(int64_t B, int64_t H, int64_t D, int64_t L, int64_t mlen, Device dev) {
  const int64_t Lk = mlen + L;
  Generator g(3);
  auto make = [&](const Shape& s, double sd) { return randn<float>(s, g, 0.0, sd, dev); };
  RelativeInputs in;
  in.q = make({B, H, L, D}, 1), in.k = make({B, H, Lk, D}, 1), in.v = make({B, H, Lk, D}, 1);
  in.kr = make({1, H, Lk + L, D}, 1), in.rw = make({H, D}, 0.1), in.rr = make({H, D}, 0.1);
  in.o.r_s_bias = make({H, D}, 0.1);
  in.o.seg_embed = make({2, H, D}, 0.1);
  std::vector<int64_t> ids(static_cast<size_t>(B * L));
  for (int64_t i = 0; i < B * L; ++i) ids[static_cast<size_t>(i)] = (i % L) >= L / 2;
  in.o.seg_mat = nn::xlnet_segment_matrix<float>(from_vector<int64_t>(ids, {B, L}), mlen).to(dev);
  return in;
}

}  // namespace txtcls::bench
