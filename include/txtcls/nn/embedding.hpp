#pragma once
// nn::Embedding: a [num_embeddings, dim] table looked up by integer ids, as torch.nn.Embedding
// (parameter `weight`). The padding row, if any, starts at zero and receives no gradient.
#include "txtcls/nn/module.hpp"
#include "txtcls/ops/embedding.hpp"

namespace txtcls::nn {

template <class T>
class Embedding : public Module<T> {
 public:
  // N(0, 1) initialisation (PyTorch's), padding row zeroed. padding_idx = -1: none.
  Embedding(int64_t num_embeddings, int64_t dim, int64_t padding_idx = -1, Generator& gen = default_generator())
      : padding_idx_(padding_idx) {
    TXTCLS_CHECK(num_embeddings >= 0 && dim >= 0, "Embedding: negative size (", num_embeddings, ", ", dim, ")");
    check_padding(num_embeddings);
    Tensor<T> w = randn<T>({num_embeddings, dim}, gen);
    if (padding_idx >= 0) w.select(0, padding_idx).fill_(T(0));
    weight = this->register_parameter("weight", w);
  }

  // Wraps given vectors (copied). freeze: the table gets no gradient, so optimizers skip it.
  // The padding row is kept as given, as in torch.nn.Embedding.from_pretrained.
  static std::shared_ptr<Embedding> from_pretrained(const Tensor<T>& vectors, bool freeze = true,
                                                    int64_t padding_idx = -1) {
    TXTCLS_CHECK(vectors.dim() == 2, "Embedding::from_pretrained: vectors must be [V, D], got ",
                 shape_str(vectors.shape()));
    NoGradGuard ng;
    return std::shared_ptr<Embedding>(new Embedding(vectors.detach().contiguous().clone(), freeze, padding_idx));
  }

  std::string type_name() const override { return "Embedding"; }

  // ids (any shape) -> ids.shape + [dim]
  Tensor<T> forward(const Tensor<int64_t>& ids) { return embedding(weight, ids, padding_idx_); }
  Tensor<T> operator()(const Tensor<int64_t>& ids) { return forward(ids); }

  int64_t num_embeddings() const { return weight.size(0); }
  int64_t embedding_dim() const { return weight.size(1); }
  int64_t padding_idx() const { return padding_idx_; }

  Tensor<T> weight;  // [num_embeddings, dim]

 private:
  Embedding(Tensor<T> w, bool freeze, int64_t padding_idx) : padding_idx_(padding_idx) {
    check_padding(w.size(0));
    weight = this->register_parameter("weight", w);
    if (freeze) weight.set_requires_grad(false);
  }
  void check_padding(int64_t num) const {
    TXTCLS_CHECK(padding_idx_ >= -1 && padding_idx_ < num, "Embedding: padding_idx ", padding_idx_,
                 " must be -1 (none) or in [0, ", num, ")");
  }

  int64_t padding_idx_;
};

}  // namespace txtcls::nn
