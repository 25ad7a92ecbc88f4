#pragma once
// LSTM_reg: the regularized BiLSTM of Adhikari, Ram, Tang, Lin, "Rethinking Complex Neural
// Network Architectures for Document Classification" (NAACL 2019), as hedwig's reg_lstm builds it:
//
//   ids -> embedding (embedding dropout: whole words) -> (Bi)LSTM with weight drop on W_hh
//       -> ReLU -> max-pool over each sequence's valid steps -> dropout
//       -> [fc1 -> ReLU] (bottleneck) -> fc (fc2 with a bottleneck, else fc1)
//
// Configured by hedwig's field names; parameter names are hedwig's state_dict names
// (embed.weight, lstm.weight_ih_l0, ..., fc1.weight, fc2.bias), see docs/models/lstm_reg.md.
#include <fstream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "txtcls/io/atomic_file.hpp"
#include "txtcls/nn/embedding.hpp"
#include "txtcls/nn/linear.hpp"
#include "txtcls/nn/lstm.hpp"
#include "txtcls/ops/dropout.hpp"
#include "txtcls/ops/pooling.hpp"

namespace txtcls::models {

struct LSTMRegConfig {
  int64_t words_num = 0;  // vocabulary size
  int64_t words_dim = 300;
  int64_t hidden_dim = 512;
  int64_t num_layers = 1;
  bool bidirectional = true;
  bool bottleneck_layer = false;
  int64_t target_class = 0;
  double dropout = 0.5;         // after pooling (and between LSTM layers, as nn.LSTM(dropout=))
  double wdrop = 0.1;           // weight drop on weight_hh_l0
  double embed_droprate = 0.2;  // embedding dropout (whole words)
  double beta_ema = 0.99;       // temporal averaging; 0 disables
  std::string mode = "rand";    // rand | static (frozen vectors) | non-static (trainable vectors)

  void validate() const {
    TXTCLS_CHECK(words_num > 0 && words_dim > 0 && hidden_dim > 0 && num_layers > 0 && target_class > 1,
                 "lstm_reg config: words_num, words_dim, hidden_dim, num_layers must be positive and target_class >= 2 "
                 "(got ", words_num, ", ", words_dim, ", ", hidden_dim, ", ", num_layers, ", ", target_class, ")");
    for (double p : {dropout, wdrop, embed_droprate})
      TXTCLS_CHECK(p >= 0 && p < 1, "lstm_reg config: dropout rates must lie in [0, 1), got ", p);
    TXTCLS_CHECK(beta_ema >= 0 && beta_ema < 1, "lstm_reg config: beta_ema must lie in [0, 1), got ", beta_ema);
    TXTCLS_CHECK(mode == "rand" || mode == "static" || mode == "non-static",
                 "lstm_reg config: mode must be rand, static or non-static, got '", mode, "'");
  }

  nlohmann::json to_json() const {
    return {{"model", "lstm_reg"},       {"words_num", words_num},   {"words_dim", words_dim},
            {"hidden_dim", hidden_dim},  {"num_layers", num_layers}, {"bidirectional", bidirectional},
            {"bottleneck_layer", bottleneck_layer}, {"target_class", target_class}, {"dropout", dropout},
            {"wdrop", wdrop},            {"embed_droprate", embed_droprate}, {"beta_ema", beta_ema},
            {"mode", mode}};
  }

  // Reads hedwig's fields; unknown fields are ignored, missing ones keep the defaults above
  // except words_num and target_class, which are required.
  static LSTMRegConfig from_json(const nlohmann::json& j, const std::string& source) {
    TXTCLS_CHECK(j.is_object(), source, ": expected a JSON object");
    LSTMRegConfig c;
    auto get = [&](const char* k, auto& v) {
      if (!j.contains(k)) return;
      try {
        j.at(k).get_to(v);
      } catch (const std::exception& e) {
        ::txtcls::detail::fail(source, ": field '", k, "': ", e.what());
      }
    };
    TXTCLS_CHECK(j.contains("words_num") && j.contains("target_class"), source,
                 ": lstm_reg config needs 'words_num' and 'target_class'");
    get("words_num", c.words_num);
    get("words_dim", c.words_dim);
    get("hidden_dim", c.hidden_dim);
    get("num_layers", c.num_layers);
    get("bidirectional", c.bidirectional);
    get("bottleneck_layer", c.bottleneck_layer);
    get("target_class", c.target_class);
    get("dropout", c.dropout);
    get("wdrop", c.wdrop);
    get("embed_droprate", c.embed_droprate);
    get("beta_ema", c.beta_ema);
    get("mode", c.mode);
    try {
      c.validate();
    } catch (const Error& e) {
      ::txtcls::detail::fail(source, ": ", e.what());
    }
    return c;
  }

  static LSTMRegConfig load(const std::string& path) {
    std::ifstream f(path);
    TXTCLS_CHECK(f, path, ": cannot open");
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(f);
    } catch (const std::exception& e) {
      ::txtcls::detail::fail(path, ": invalid JSON: ", e.what());
    }
    return from_json(j, path);
  }
  void save(const std::string& path) const {
    const std::string text = to_json().dump(2) + "\n";
    io::AtomicFile f(path);
    f.write(text.data(), text.size());
    f.commit();
  }
};

template <class T>
class LSTMReg : public nn::Module<T> {
 public:
  explicit LSTMReg(const LSTMRegConfig& cfg, Generator& gen = default_generator()) : cfg_(cfg) {
    cfg.validate();
    // hedwig's 'rand' mode: embeddings ~ U(-0.25, 0.25), no padding row (the pad id is an
    // ordinary, never-pooled row).
    embed = this->register_module(
        "embed", nn::Embedding<T>::from_pretrained(rand_uniform<T>({cfg.words_num, cfg.words_dim}, gen, -0.25, 0.25),
                                                   cfg.mode == "static"));
    lstm = this->register_module("lstm", std::make_shared<nn::LSTM<T>>(cfg.words_dim, cfg.hidden_dim, cfg.num_layers,
                                                                      cfg.bidirectional, cfg.num_layers > 1 ? cfg.dropout : 0.0,
                                                                      cfg.wdrop, gen));
    lstm->set_locked_layer_dropout(false);  // nn.LSTM(dropout=...) in hedwig: elementwise between layers
    const int64_t width = cfg.hidden_dim * (cfg.bidirectional ? 2 : 1);
    if (cfg.bottleneck_layer) {
      const int64_t mid = cfg.bidirectional ? cfg.hidden_dim : cfg.hidden_dim / 2;
      fc1 = this->register_module("fc1", std::make_shared<nn::Linear<T>>(width, mid, true, gen));
      fc2 = this->register_module("fc2", std::make_shared<nn::Linear<T>>(mid, cfg.target_class, true, gen));
    } else {
      fc1 = this->register_module("fc1", std::make_shared<nn::Linear<T>>(width, cfg.target_class, true, gen));
    }
  }

  std::string type_name() const override { return "LSTMReg"; }
  const LSTMRegConfig& config() const { return cfg_; }

  // Replaces the embedding table with given vectors [words_num, words_dim] (e.g. GloVe).
  void set_embeddings(const Tensor<T>& vectors) {
    TXTCLS_CHECK(vectors.shape() == embed->weight.shape(), "LSTMReg::set_embeddings: vectors ",
                 shape_str(vectors.shape()), " do not match the table ", shape_str(embed->weight.shape()));
    NoGradGuard ng;
    embed->weight.copy_(vectors);
  }

  // Dropout masks are drawn from `gen` (default_generator() unless set), so training is
  // reproducible from the generator's state.
  void set_generator(Generator* g) {
    gen_ = g;
    lstm->set_generator(g);
  }

  // ids [B, T] (int64), lengths [B] (each in [1, T]) -> logits [B, target_class].
  Tensor<T> forward(const Tensor<int64_t>& ids, const Tensor<int64_t>& lengths) {
    Generator& g = gen_ ? *gen_ : default_generator();
    const bool training = this->is_training();
    Tensor<T> table = embed->weight;
    if (training && cfg_.embed_droprate > 0) table = embedding_dropout(table, cfg_.embed_droprate, g, true);
    // hedwig looks words up through AWD-LSTM's embedded_dropout() whenever embed_droprate is set,
    // and that passes padding_idx = -1, which PyTorch reads as the last row: that row never gets
    // a gradient. Kept for parity (it is the rarest word of the vocabulary).
    const int64_t frozen_row = cfg_.embed_droprate > 0 ? cfg_.words_num - 1 : -1;
    Tensor<T> x = embedding(table, ids, frozen_row);
    Tensor<T> h = relu(lstm->forward(x, lengths));
    Tensor<T> pooled = dropout(max_pool_time(h, lengths), cfg_.dropout, g, training);
    if (cfg_.bottleneck_layer) return fc2->forward(relu(fc1->forward(pooled)));
    return fc1->forward(pooled);
  }
  Tensor<T> operator()(const Tensor<int64_t>& ids, const Tensor<int64_t>& lengths) { return forward(ids, lengths); }

  // Maps the names a hedwig checkpoint may use onto ours: WeightDrop wraps the LSTM
  // (lstm.module.weight_hh_l0_raw), and the static/non-static modes name the table
  // static_embed / non_static_embed.
  static std::string canonical_name(std::string n) {
    auto replace_prefix = [&](const std::string& from, const std::string& to) {
      if (n.rfind(from, 0) == 0) n = to + n.substr(from.size());
    };
    replace_prefix("lstm.module.", "lstm.");
    replace_prefix("static_embed.", "embed.");
    replace_prefix("non_static_embed.", "embed.");
    const std::string raw = "_raw";
    if (n.rfind("lstm.", 0) == 0 && n.size() > raw.size() && n.compare(n.size() - raw.size(), raw.size(), raw) == 0)
      n.resize(n.size() - raw.size());
    return n;
  }

  std::shared_ptr<nn::Embedding<T>> embed;
  std::shared_ptr<nn::LSTM<T>> lstm;
  std::shared_ptr<nn::Linear<T>> fc1, fc2;

 private:
  LSTMRegConfig cfg_;
  Generator* gen_ = nullptr;
};

}  // namespace txtcls::models
