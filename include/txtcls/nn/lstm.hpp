#pragma once
// nn::LSTM: a multi-layer, optionally bidirectional LSTM over padded batch-first sequences,
// with the regularisers of AWD-LSTM / hedwig's reg_lstm:
//   * weight drop (DropConnect): dropout on the raw recurrent matrix W_hh, a fresh mask at
//     every training forward, with the gradient reaching the raw weight through the dropout;
//   * dropout between layers: locked (variational, one mask per (sequence, feature), the same
//     at every time step) by default, or elementwise like torch.nn.LSTM's `dropout` argument
//     (set_locked_layer_dropout(false)), which is what hedwig's multi-layer configurations use.
// Parameter names, shapes and order are torch.nn.LSTM's (weight_ih_l0, weight_hh_l0, bias_ih_l0,
// bias_hh_l0, then the *_reverse set, then layer 1, ...), so a PyTorch state_dict loads as is.
#include <cmath>
#include <string>
#include <vector>

#include "txtcls/nn/module.hpp"
#include "txtcls/ops/dropout.hpp"
#include "txtcls/ops/lstm.hpp"

namespace txtcls::nn {

template <class T>
class LSTM : public Module<T> {
 public:
  // Initialisation as PyTorch: every parameter ~ U(-1/sqrt(H), 1/sqrt(H)), drawn in parameter
  // order from `gen`. weight_drop applies to the matrices named by weight_drop_targets()
  // (hedwig's choice by default: weight_hh_l0 only).
  LSTM(int64_t input_size, int64_t hidden_size, int64_t num_layers = 1, bool bidirectional = false,
       double dropout_between_layers = 0.0, double weight_drop = 0.0, Generator& gen = default_generator())
      : input_size_(input_size),
        hidden_size_(hidden_size),
        num_layers_(num_layers),
        bidirectional_(bidirectional),
        layer_dropout_(dropout_between_layers),
        weight_drop_(weight_drop) {
    TXTCLS_CHECK(input_size > 0 && hidden_size > 0 && num_layers > 0, "LSTM: sizes must be positive (input ",
                 input_size, ", hidden ", hidden_size, ", layers ", num_layers, ")");
    TXTCLS_CHECK(dropout_between_layers >= 0.0 && dropout_between_layers <= 1.0,
                 "LSTM: dropout_between_layers must be in [0, 1], got ", dropout_between_layers);
    TXTCLS_CHECK(weight_drop >= 0.0 && weight_drop <= 1.0, "LSTM: weight_drop must be in [0, 1], got ", weight_drop);
    const double bound = 1.0 / std::sqrt(static_cast<double>(hidden_size));
    const int64_t G4 = 4 * hidden_size;
    for (int64_t l = 0; l < num_layers; ++l)
      for (int64_t d = 0; d < directions(); ++d) {
        const int64_t in = l == 0 ? input_size : hidden_size * directions();
        const std::string sfx = suffix(l, d);
        LstmWeights<T> w;
        auto param = [&](const std::string& name, const Shape& s) {
          return this->register_parameter(name + sfx, rand_uniform<T>(s, gen, -bound, bound));
        };
        w.w_ih = param("weight_ih", {G4, in});
        w.w_hh = param("weight_hh", {G4, hidden_size});
        w.b_ih = param("bias_ih", {G4});
        w.b_hh = param("bias_hh", {G4});
        weights_.push_back(w);
      }
    drop_targets_.assign(weights_.size(), false);
    drop_targets_[0] = true;
  }

  std::string type_name() const override { return "LSTM"; }

  // x [B, T, input_size], lengths [B] (each in [0, T]) -> [B, T, hidden_size * directions],
  // zero at t >= lengths[b]. Direction outputs are side by side, forward first.
  Tensor<T> forward(const Tensor<T>& x, const Tensor<int64_t>& lengths) {
    TXTCLS_CHECK(x.dim() == 3 && x.size(2) == input_size_, "LSTM(", input_size_, " -> ", hidden_size_,
                 "): input must be [B, T, ", input_size_, "], got ", shape_str(x.shape()));
    Generator& gen = gen_ ? *gen_ : default_generator();
    const bool training = this->is_training();
    Tensor<T> h = x;
    for (int64_t l = 0; l < num_layers_; ++l) {
      if (l > 0 && layer_dropout_ > 0.0)
        h = locked_layer_dropout_ ? locked_dropout(h, layer_dropout_, gen, training)
                                  : dropout(h, layer_dropout_, gen, training);
      std::vector<LstmWeights<T>> w(weights_.begin() + l * directions(), weights_.begin() + (l + 1) * directions());
      for (int64_t d = 0; d < directions(); ++d)
        if (weight_drop_ > 0.0 && drop_targets_[l * directions() + d])
          w[d].w_hh = dropout(w[d].w_hh, weight_drop_, gen, training);
      h = bidirectional_ ? lstm_bidirectional_layer(h, lengths, w[0], w[1])
                         : lstm_layer(h, lengths, w[0].w_ih, w[0].w_hh, w[0].b_ih, w[0].b_hh, false);
    }
    return h;
  }
  Tensor<T> operator()(const Tensor<T>& x, const Tensor<int64_t>& lengths) { return forward(x, lengths); }

  // The recurrent matrices that weight drop applies to, by parameter name ("weight_hh_l0",
  // "weight_hh_l1_reverse", ...). hedwig wraps its nn.LSTM as WeightDrop(lstm, ['weight_hh_l0']),
  // hence the default; AWD-LSTM drops every layer's W_hh.
  void set_weight_drop_targets(const std::vector<std::string>& names) {
    std::vector<bool> t(weights_.size(), false);
    for (const auto& n : names) {
      bool found = false;
      for (size_t i = 0; i < weights_.size(); ++i)
        if (n == "weight_hh" + suffix(static_cast<int64_t>(i) / directions(), static_cast<int64_t>(i) % directions())) {
          t[i] = found = true;
        }
      TXTCLS_CHECK(found, "LSTM: weight drop target '", n, "' is not a recurrent matrix of this LSTM (",
                   num_layers_, " layers, ", directions(), " directions)");
    }
    drop_targets_ = t;
  }
  std::vector<std::string> weight_drop_targets() const {
    std::vector<std::string> out;
    for (size_t i = 0; i < weights_.size(); ++i)
      if (drop_targets_[i])
        out.push_back("weight_hh" + suffix(static_cast<int64_t>(i) / directions(), static_cast<int64_t>(i) % directions()));
    return out;
  }

  // Dropout between layers: locked (true, the default) or elementwise as in torch.nn.LSTM.
  void set_locked_layer_dropout(bool locked) { locked_layer_dropout_ = locked; }
  bool locked_layer_dropout() const { return locked_layer_dropout_; }

  // Masks (weight drop, dropout between layers) come from this generator, which must outlive the module;
  // nullptr returns to default_generator() of the calling thread.
  void set_generator(Generator* g) { gen_ = g; }

  // The parameters of one direction of one layer (shared handles).
  const LstmWeights<T>& layer_weights(int64_t layer, int64_t direction = 0) const {
    TXTCLS_CHECK(layer >= 0 && layer < num_layers_ && direction >= 0 && direction < directions(),
                 "LSTM: no layer ", layer, " direction ", direction);
    return weights_[layer * directions() + direction];
  }

  int64_t input_size() const { return input_size_; }
  int64_t hidden_size() const { return hidden_size_; }
  int64_t num_layers() const { return num_layers_; }
  bool bidirectional() const { return bidirectional_; }
  int64_t directions() const { return bidirectional_ ? 2 : 1; }
  int64_t output_size() const { return hidden_size_ * directions(); }
  double dropout_between_layers() const { return layer_dropout_; }
  double weight_drop() const { return weight_drop_; }

 private:
  static std::string suffix(int64_t layer, int64_t direction) {
    return "_l" + std::to_string(layer) + (direction ? "_reverse" : "");
  }

  int64_t input_size_, hidden_size_, num_layers_;
  bool bidirectional_;
  double layer_dropout_, weight_drop_;
  bool locked_layer_dropout_ = true;
  std::vector<LstmWeights<T>> weights_;  // layer-major, forward direction first
  std::vector<bool> drop_targets_;
  Generator* gen_ = nullptr;
};

}  // namespace txtcls::nn
