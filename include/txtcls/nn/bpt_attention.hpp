#pragma once
// nn::BPTAttention: the graph self-attention of a BP-Transformer block (the attention half of the
// authors' BPTBlock, modules/attention.py): bias-free projections proj_q, proj_k, proj_v
// [d_k * h, dim_model] and proj_o [dim_model, d_k * h], and, with rel_pos, a table of relative
// position embeddings embed_ak [num_positions, d_k] shared by the heads and added to the keys
// of each edge by its position id. Parameter names and shapes are the authors' state_dict keys
// under a block (proj_q.weight, ..., embed_ak.weight; MAX_ETYPE = 1000 rows by default).
//
//   q, k, v = x W_q^T, x W_k^T, x W_v^T viewed [N, h, d_k]
//   a       = graph_attention(q, k, v, graph, embed_ak, scale 1/sqrt(d_k), dropout drop_a)
//   out     = a W_o^T
//
// Node states x are [N, dim_model] over the graph's nodes (bpt_node_inputs builds them from
// padded token features). The residual, layer norms and feed-forward of the authors' block are
// left to the caller. Initialisation follows the authors' reset_parameters: Xavier-uniform for
// every matrix.
#include <cmath>
#include <memory>

#include "txtcls/nn/bpt_graph.hpp"
#include "txtcls/nn/embedding.hpp"
#include "txtcls/nn/linear.hpp"
#include "txtcls/ops/graph_attention.hpp"

namespace txtcls::nn {

struct BPTAttentionOptions {
  bool rel_pos = true;           // relative position embeddings on the keys
  double drop_a = 0.1;           // dropout on the attention weights (the authors' drop_a)
  int64_t num_positions = 1000;  // rows of embed_ak (the authors' MAX_ETYPE)
};

template <class T>
class BPTAttention : public Module<T> {
 public:
  BPTAttention(int64_t dim_model, int64_t h, const BPTAttentionOptions& opt = {}, Generator& gen = default_generator())
      : dim_model_(dim_model), h_(h), opt_(opt) {
    TXTCLS_CHECK(dim_model > 0 && h > 0 && dim_model % h == 0, "BPTAttention: dim_model (", dim_model,
                 ") must be a positive multiple of the number of heads (", h, ")");
    TXTCLS_CHECK(opt.drop_a >= 0.0 && opt.drop_a <= 1.0, "BPTAttention: drop_a must be in [0, 1], got ", opt.drop_a);
    TXTCLS_CHECK(!opt.rel_pos || opt.num_positions > 0, "BPTAttention: num_positions must be positive, got ",
                 opt.num_positions);
    d_k_ = dim_model / h;
    proj_q = this->register_module("proj_q", std::make_shared<Linear<T>>(dim_model, d_k_ * h, false, gen));
    proj_k = this->register_module("proj_k", std::make_shared<Linear<T>>(dim_model, d_k_ * h, false, gen));
    proj_v = this->register_module("proj_v", std::make_shared<Linear<T>>(dim_model, d_k_ * h, false, gen));
    proj_o = this->register_module("proj_o", std::make_shared<Linear<T>>(d_k_ * h, dim_model, false, gen));
    if (opt.rel_pos)
      embed_ak = this->register_module("embed_ak", std::make_shared<Embedding<T>>(opt.num_positions, d_k_, -1, gen));
    reset_parameters(gen);
  }

  std::string type_name() const override { return "BPTAttention"; }

  // Xavier-uniform for every parameter with more than one dim, U(-b, b), b = sqrt(6 / (in + out)).
  void reset_parameters(Generator& gen = default_generator()) {
    NoGradGuard ng;
    for (auto& [name, p] : this->named_parameters()) {
      if (p.dim() < 2) continue;
      const double bound = std::sqrt(6.0 / static_cast<double>(p.size(0) + p.size(1)));
      p.copy_(rand_uniform<T>(p.shape(), gen, -bound, bound));
    }
  }

  // x [N, dim_model] node states, graph with N rows (position ids needed with rel_pos) -> [N, dim_model].
  Tensor<T> forward(const Tensor<T>& x, const GraphCSR& graph) {
    TXTCLS_CHECK(x.dim() == 2 && x.size(1) == dim_model_, "BPTAttention(", dim_model_, ", h=", h_,
                 "): input must be [N, ", dim_model_, "], got ", shape_str(x.shape()));
    const int64_t N = x.size(0);
    Tensor<T> q = proj_q->forward(x).view({N, h_, d_k_});
    Tensor<T> k = proj_k->forward(x).view({N, h_, d_k_});
    Tensor<T> v = proj_v->forward(x).view({N, h_, d_k_});
    GraphAttentionOptions ao;
    ao.scale = 1.0 / std::sqrt(static_cast<double>(d_k_));
    ao.dropout = opt_.drop_a;
    ao.training = this->is_training();
    Tensor<T> a = graph_attention(q, k, v, graph, embed_ak ? embed_ak->weight : Tensor<T>(), ao,
                                  gen_ ? *gen_ : default_generator());
    return proj_o->forward(a.view({N, h_ * d_k_}));
  }
  Tensor<T> forward(const Tensor<T>& x, const BPTGraph& graph) { return forward(x, graph.csr); }
  Tensor<T> operator()(const Tensor<T>& x, const GraphCSR& graph) { return forward(x, graph); }
  Tensor<T> operator()(const Tensor<T>& x, const BPTGraph& graph) { return forward(x, graph.csr); }

  int64_t dim_model() const { return dim_model_; }
  int64_t num_heads() const { return h_; }
  int64_t d_k() const { return d_k_; }
  const BPTAttentionOptions& options() const { return opt_; }
  // Attention-dropout masks come from this generator (which must outlive the module); nullptr
  // returns to default_generator().
  void set_generator(Generator* g) { gen_ = g; }

  std::shared_ptr<Linear<T>> proj_q, proj_k, proj_v, proj_o;
  std::shared_ptr<Embedding<T>> embed_ak;  // null without rel_pos

 private:
  int64_t dim_model_, h_, d_k_ = 0;
  BPTAttentionOptions opt_;
  Generator* gen_ = nullptr;
};

}  // namespace txtcls::nn
