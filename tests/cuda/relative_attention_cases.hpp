#pragma once
// The configurations of the CUDA relative attention tests (test_cuda_relative_attention.cpp),
// their inputs and one run of an op on them, free of Catch2 so that the host emulation of the
// kernels (tools/cuda_emulate/check_relative.cpp) runs the very same ones: awkward lengths (tiles
// cut anywhere, Lq = 1), memory, "bi" and "uni" position encodings (wrapped positions read
// without a mask, and by rows that see no key), position keys shared by the batch or per
// sequence, segment ids, XLNet's seg_mat and one of arbitrary weights, padding and permutation
// masks (the tests' own and XLNet's content and query streams), the causal flag, dropout, Dv != D,
// head dims up to 128, strided views.
#include <string>
#include <vector>

#include "test_common.hpp"
#include "txtcls/nn/relative_attention.hpp"
#include "txtcls/ops/relative_attention_fused.hpp"

namespace ct {

using namespace txtcls;

struct Case {
  std::string name;
  int64_t B = 2, H = 2, qlen = 5, mlen = 0, D = 6, Dv = 6;
  XLNetAttnType type = XLNetAttnType::Bi;
  bool shared_kr = true;  // k_r [1, H, P, D], or [B, H, P, D] (bi_data)
  enum Seg { NoSeg, Ids, SegMat, SoftSegMat } seg = NoSeg;
  bool mask = false;       // "uni": XLNet's causal mask, key j hidden from query i when j > mlen + i
  bool padding = false;    // the last key of the last sequence is padding
  bool perm = false;       // a permutation-like mask over all keys but the query's own
  bool empty_row = false;  // query 1 of sequence 0 sees no key
  bool causal = false;        // the op's flag
  double dropout = 0;
  bool strided = false;         // q, k_r permuted views, v with strided rows
  bool mask_on_device = false;  // the mask and segment ids already on the GPU
  // mask, padding, perm and empty_row through nn::xlnet_attention_masks instead (XLNet's own
  // masks over memory), the content stream's mask or (query_stream) the query stream's
  bool xlnet_masks = false, query_stream = false;

  int64_t klen() const { return mlen + qlen; }
  int64_t P() const { return xlnet_num_relative_positions(qlen, klen(), type); }
  std::string label() const {
    return name + " [B " + std::to_string(B) + ", H " + std::to_string(H) + ", qlen " + std::to_string(qlen) +
           ", mlen " + std::to_string(mlen) + ", D " + std::to_string(D) + ", Dv " + std::to_string(Dv) + ", P " +
           std::to_string(P()) + "]";
  }
};

// The inputs of a case, on the CPU in double.
struct Inputs {
  std::vector<Tensor<double>> x;  // q, k, v, k_r, r_w_bias, r_r_bias[, r_s_bias, seg_embed]
  Tensor<double> seg_mat, go;
  Tensor<int64_t> seg_q, seg_k;
  Tensor<uint8_t> mask;
};

inline Inputs make_inputs(const Case& c, uint64_t seed) {
  Inputs in;
  const int64_t Lk = c.klen();
  in.x = {rnd<double>({c.B, c.H, c.qlen, c.D}, seed + 1, -1.5, 1.5), rnd<double>({c.B, c.H, Lk, c.D}, seed + 2, -1.5, 1.5),
          rnd<double>({c.B, c.H, Lk, c.Dv}, seed + 3), rnd<double>({c.shared_kr ? 1 : c.B, c.H, c.P(), c.D}, seed + 4, -1.5, 1.5),
          rnd<double>({c.H, c.D}, seed + 5, -0.5, 0.5), rnd<double>({c.H, c.D}, seed + 6, -0.5, 0.5)};
  in.go = rnd<double>({c.B, c.H, c.qlen, c.Dv}, seed + 7);
  if (c.seg != Case::NoSeg) {
    in.x.push_back(rnd<double>({c.H, c.D}, seed + 8, -0.5, 0.5));
    in.x.push_back(rnd<double>({2, c.H, c.D}, seed + 9, -1.0, 1.0));
    std::vector<int64_t> ids;
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t i = 0; i < c.qlen; ++i) ids.push_back(((i * 2 + b) / 3 + b) % 2);
    const Tensor<int64_t> types = from_vector<int64_t>(ids, {c.B, c.qlen});
    if (c.seg == Case::Ids) {
      in.seg_q = types;
      in.seg_k = concat({zeros<int64_t>({c.B, c.mlen}), types}, 1);  // memory: segment 0
    } else if (c.seg == Case::SegMat) {
      in.seg_mat = nn::xlnet_segment_matrix<double>(types, c.mlen);
    } else {
      in.seg_mat = rnd<double>({c.B, c.qlen, Lk, 2}, seed + 10, -1.0, 1.0);
    }
  }
  if (c.xlnet_masks && (c.mask || c.padding || c.perm || c.empty_row)) {
    Tensor<uint8_t> input_mask, perm_mask;  // padding: the last token of the last sequence
    if (c.padding) {
      input_mask = zeros<uint8_t>({c.B, c.qlen});
      input_mask.set({c.B - 1, c.qlen - 1}, 1);
    }
    if (c.perm || c.empty_row) {
      perm_mask = zeros<uint8_t>({c.B, c.qlen, c.qlen});
      for (int64_t b = 0; b < c.B; ++b)
        for (int64_t i = 0; i < c.qlen; ++i)
          for (int64_t j = 0; j < c.qlen; ++j)
            if ((c.perm && (i * 5 + j * 3 + b) % 3 == 0) || (c.empty_row && b == 0 && i == 1)) perm_mask.set({b, i, j}, 1);
    }
    const nn::XLNetMasks m = nn::xlnet_attention_masks(c.qlen, c.mlen, c.type, false, input_mask, perm_mask);
    in.mask = c.query_stream ? m.g : m.h;
  } else if (c.mask || c.padding || c.perm || c.empty_row) {  // [B, 1, Lq, Lk], nonzero = hidden
    in.mask = zeros<uint8_t>({c.B, 1, c.qlen, Lk});
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t i = 0; i < c.qlen; ++i)
        for (int64_t j = 0; j < Lk; ++j) {
          const bool causal = c.mask && c.type == XLNetAttnType::Uni && j > c.mlen + i;
          const bool pad = c.padding && b == c.B - 1 && j == Lk - 1;
          const bool perm = c.perm && j != c.mlen + i && (i * 5 + j * 3 + b) % 3 == 0;
          in.mask.set({b, 0, i, j}, causal || pad || perm || (c.empty_row && b == 0 && i == 1) ? 1 : 0);
        }
  }
  return in;
}

template <class T>
struct Run {
  Tensor<T> out, probs;
  std::vector<Tensor<T>> grads;
  uint64_t counters = 0;  // dropout counters the call reserved (expected_counters)
};

// B * H * Lq * Lk when there is dropout, else none.
inline uint64_t expected_counters(const Case& c) {
  return c.dropout > 0 ? static_cast<uint64_t>(c.B * c.H * c.qlen * c.klen()) : 0;
}

// The gradients of a Run, in order.
inline const char* const kGradNames[] = {"q", "k", "v", "k_r", "r_w_bias", "r_r_bias", "r_s_bias", "seg_embed"};

// The two ops the tests and the emulation compare (their CUDA branches run on CUDA tensors).
inline constexpr auto fused_op = [](auto&&... a) { return relative_attention(a...); };
inline constexpr auto reference_op = [](auto&&... a) { return relative_attention_reference(a...); };

// One path (fused or reference) on `dev`. Every run gets its own copies of the inputs: to() on the
// tensor's own device returns the tensor itself, and gradients would add up from run to run. The
// dropout generator starts from the same seed for every run, so all draw one mask.
template <class T, class Attend>
Run<T> run(const Case& c, const Inputs& in, Device dev, Attend&& attend) {
  auto place = [&](const Tensor<double>& t) { return cast<T>(t).to(dev).detach().clone(); };
  std::vector<Tensor<T>> x;
  for (const auto& t : in.x) x.push_back(place(t).set_requires_grad(true));
  Tensor<T> q = x[0], k = x[1], v = x[2], kr = x[3];
  if (c.strided) {  // the layer's heads: [B, L, H, D] projections seen as [B, H, L, D]
    q = q.permute({0, 2, 1, 3}).contiguous().permute({0, 2, 1, 3});
    kr = kr.permute({0, 2, 1, 3}).contiguous().permute({0, 2, 1, 3});
    v = v.transpose(2, 3).contiguous().transpose(2, 3);
  }
  const Device host_side = c.mask_on_device ? dev : Device::cpu();
  RelativeAttentionOptions<T> o;
  if (c.seg != Case::NoSeg) {
    o.r_s_bias = x[6];
    o.seg_embed = x[7];
    if (in.seg_mat.defined()) {
      o.seg_mat = place(in.seg_mat);
    } else {
      o.seg_q = in.seg_q.to(host_side);
      o.seg_k = in.seg_k.to(host_side);
    }
  }
  if (in.mask.defined()) o.mask = in.mask.to(host_side);
  o.causal = c.causal;
  o.dropout_p = c.dropout;
  Generator gen(4321);
  o.generator = &gen;
  Run<T> r;
  o.probs = &r.probs;
  Tensor<T> out = attend(q, k, v, kr, x[4], x[5], o);
  r.counters = gen.offset();
  out.backward(place(in.go));
  r.out = out.cpu();
  r.probs = r.probs.cpu();
  for (auto& t : x) r.grads.push_back(t.grad().cpu());
  return r;
}

inline std::vector<Case> cases() {
  constexpr auto Uni = XLNetAttnType::Uni;
  return {
      {.name = "bi, no memory, no segments"},
      {.name = "bi, memory 3, segment ids", .mlen = 3, .seg = Case::Ids},
      {.name = "bi, memory 3, seg_mat", .mlen = 3, .seg = Case::SegMat},
      {.name = "uni, memory 2, causal mask, segment ids", .mlen = 2, .type = Uni, .seg = Case::Ids, .mask = true},
      {.name = "uni without a mask: wrapped positions", .mlen = 2, .type = Uni},
      {.name = "uni by the causal flag", .mlen = 3, .type = Uni, .causal = true},
      {.name = "perm mask and padding, memory 1, mask and ids on the device", .mlen = 1, .seg = Case::Ids,
       .padding = true, .perm = true, .mask_on_device = true},
      {.name = "a query that sees no key", .mlen = 2, .seg = Case::Ids, .empty_row = true},
      {.name = "uni: a row that sees no key reads wrapped positions", .type = Uni, .seg = Case::SegMat,
       .empty_row = true},
      {.name = "position keys per sequence", .mlen = 2, .shared_kr = false, .seg = Case::Ids},
      {.name = "dropout 0.3, uni, memory 2", .mlen = 2, .type = Uni, .seg = Case::Ids, .mask = true, .dropout = 0.3},
      {.name = "Lq = 1, memory 4", .qlen = 1, .mlen = 4, .seg = Case::Ids},
      {.name = "Lq = 7, D = 9, Dv = 5, uni, memory 3", .qlen = 7, .mlen = 3, .D = 9, .Dv = 5, .type = Uni,
       .mask = true},
      {.name = "strided views", .mlen = 2, .seg = Case::SegMat, .strided = true},
      {.name = "seg_mat of arbitrary weights, uni", .mlen = 2, .type = Uni, .seg = Case::SoftSegMat, .mask = true},
      // Several tiles in every direction, both compiled head widths.
      {.name = "uni without a mask, arbitrary seg_mat", .B = 1, .qlen = 37, .mlen = 20, .D = 70, .Dv = 33,
       .type = Uni, .seg = Case::SoftSegMat},
      {.name = "perm mask, empty row, dropout, per-sequence k_r", .qlen = 40, .mlen = 9, .shared_kr = false,
       .seg = Case::Ids, .perm = true, .empty_row = true, .dropout = 0.2},
      {.name = "uni by the causal flag, an empty row", .qlen = 33, .D = 128, .Dv = 128, .type = Uni,
       .seg = Case::SegMat, .empty_row = true, .causal = true},
      {.name = "uni mask, padding, strided", .qlen = 70, .mlen = 65, .D = 64, .Dv = 48, .type = Uni,
       .seg = Case::Ids, .mask = true, .padding = true, .strided = true},
      {.name = "bi, Dv > D", .qlen = 17, .mlen = 50, .D = 16, .Dv = 100},
      // XLNet's own masks (content and query stream), every option at once, a larger batch.
      {.name = "query stream, perm mask, padding, memory 1, ids", .mlen = 1, .seg = Case::Ids, .padding = true,
       .perm = true, .xlnet_masks = true, .query_stream = true},
      {.name = "query stream, an empty row, uni, seg_mat", .type = Uni, .seg = Case::SegMat, .empty_row = true,
       .xlnet_masks = true, .query_stream = true},
      {.name = "query stream, perm, empty row, dropout", .qlen = 40, .mlen = 9, .shared_kr = false, .seg = Case::Ids,
       .perm = true, .empty_row = true, .dropout = 0.2, .xlnet_masks = true, .query_stream = true},
      {.name = "content stream, uni mask, padding", .mlen = 2, .type = Uni, .seg = Case::Ids, .mask = true,
       .padding = true, .xlnet_masks = true},
      {.name = "everything, uni", .qlen = 19, .mlen = 5, .D = 20, .Dv = 12, .type = Uni, .shared_kr = false,
       .seg = Case::SegMat, .mask = true, .padding = true, .perm = true, .empty_row = true, .causal = true,
       .dropout = 0.25, .strided = true},
      {.name = "batch of 4, uni mask, dropout", .B = 4, .qlen = 45, .mlen = 20, .D = 32, .Dv = 32, .type = Uni,
       .seg = Case::Ids, .mask = true, .dropout = 0.1},
  };
}

}  // namespace ct
