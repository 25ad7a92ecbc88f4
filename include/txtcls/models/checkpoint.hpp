#pragma once
// A trained text classifier on disk, one directory:
//   model.safetensors  the weights (state_dict names), written atomically
//   config.json        the model's fields plus "tokenizer" and "max_len"
//   vocab.txt          one token per line, line i = id i-1
//   labels.txt         one label per line, line i = class i-1
//   metrics.json       what training measured
// Loading checks every piece against the others (vocabulary size vs embedding rows, labels vs
// output classes) so that a mixed-up directory is refused with a message naming the file.
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "txtcls/data/labels.hpp"
#include "txtcls/data/tokenizer.hpp"
#include "txtcls/data/vocab.hpp"
#include "txtcls/io/safetensors.hpp"
#include "txtcls/nn/module.hpp"

namespace txtcls::models {

template <class T>
void save_weights(const std::string& path, const nn::Module<T>& m, std::map<std::string, std::string> metadata = {}) {
  io::TensorFile f;
  f.metadata = std::move(metadata);
  for (auto& [n, t] : m.state_dict()) f.tensors.emplace_back(n, io::to_raw(t));
  io::write_safetensors(path, f);
}

// Strict: every name present with the right shape and dtype, nothing extra.
template <class T>
void load_weights(const std::string& path, nn::Module<T>& m) {
  io::TensorFile f = io::read_safetensors(path);
  nn::StateDict<T> sd;
  for (auto& [n, raw] : f.tensors) sd.emplace(n, io::to_tensor<T>(raw, path + ": tensor '" + n + "'"));
  try {
    m.load_state_dict(sd, true);
  } catch (const Error& e) {
    ::txtcls::detail::fail(path, ": ", e.what());
  }
}

inline nlohmann::json read_json_file(const std::string& path) {
  std::ifstream f(path);
  TXTCLS_CHECK(f, path, ": cannot open");
  try {
    return nlohmann::json::parse(f);
  } catch (const std::exception& e) {
    ::txtcls::detail::fail(path, ": invalid JSON: ", e.what());
  }
}

inline void write_json_file(const std::string& path, const nlohmann::json& j) {
  data::write_file_atomic(path, j.dump(2) + "\n");
}

inline nlohmann::json tokenizer_to_json(const data::TokenizerOptions& o) {
  return {{"style", std::string(data::tokenizer_style_name(o.style))},
          {"lowercase", o.lowercase},
          {"strip_html_breaks", o.strip_html_breaks}};
}

inline data::TokenizerOptions tokenizer_from_json(const nlohmann::json& j, const std::string& source) {
  data::TokenizerOptions o;
  try {
    if (j.contains("style")) o.style = data::parse_tokenizer_style(j.at("style").get<std::string>());
    if (j.contains("lowercase")) o.lowercase = j.at("lowercase");
    if (j.contains("strip_html_breaks")) o.strip_html_breaks = j.at("strip_html_breaks");
  } catch (const std::exception& e) {
    ::txtcls::detail::fail(source, ": tokenizer: ", e.what());
  }
  return o;
}

// The text side of a checkpoint: how raw text becomes ids and ids become label names.
struct TextPipeline {
  data::TokenizerOptions tokenizer_options;
  data::Vocab vocab;
  data::LabelSet labels{std::vector<std::string>{"_"}};
  int64_t max_len = 0;
  nlohmann::json config;  // the whole config.json

  static TextPipeline load(const std::string& dir) {
    TextPipeline p;
    const std::string cfg = dir + "/config.json";
    p.config = read_json_file(cfg);
    TXTCLS_CHECK(p.config.is_object() && p.config.contains("model"), cfg, ": needs a \"model\" field");
    if (p.config.contains("tokenizer")) p.tokenizer_options = tokenizer_from_json(p.config["tokenizer"], cfg);
    if (p.config.contains("max_len")) p.max_len = p.config["max_len"];
    p.vocab = data::Vocab::load(dir + "/vocab.txt");
    p.labels = data::LabelSet::load(dir + "/labels.txt");
    return p;
  }
};

}  // namespace txtcls::models
