#pragma once
// Loading a checkpoint directory written by `txtcls train` into a ready-to-run model.
#include <memory>
#include <string>

#include "txtcls/models/checkpoint.hpp"
#include "txtcls/models/lstm_reg.hpp"

namespace txtcls_cli {

struct TrainedModel {
  txtcls::models::TextPipeline text;
  std::unique_ptr<txtcls::models::LSTMReg<float>> model;

  static TrainedModel load(const std::string& dir) {
    using namespace txtcls;
    TrainedModel t;
    t.text = models::TextPipeline::load(dir);
    const std::string cfg_path = dir + "/config.json";
    const std::string kind = t.text.config.at("model").get<std::string>();
    TXTCLS_CHECK(kind == "lstm_reg", cfg_path, ": unknown model '", kind, "'");
    auto cfg = models::LSTMRegConfig::from_json(t.text.config, cfg_path);
    TXTCLS_CHECK(cfg.words_num == static_cast<int64_t>(t.text.vocab.size()), dir, "/vocab.txt: ", t.text.vocab.size(),
                 " tokens, but config.json says words_num = ", cfg.words_num);
    TXTCLS_CHECK(cfg.target_class == static_cast<int64_t>(t.text.labels.size()), dir, "/labels.txt: ",
                 t.text.labels.size(), " labels, but config.json says target_class = ", cfg.target_class);
    Generator g(0);
    t.model = std::make_unique<models::LSTMReg<float>>(cfg, g);
    models::load_weights(dir + "/model.safetensors", *t.model);
    t.model->eval();
    return t;
  }
};

}  // namespace txtcls_cli
