// txtcls train: trains a classifier on a dataset and saves the best model (by dev accuracy,
// with the averaged weights) to --out. Defaults are hedwig's regularized recipe for reg_lstm:
// 1-layer BiLSTM 512, embedding 300, wdrop 0.1, embedding dropout 0.2, dropout 0.5, EMA 0.99,
// batch 32, 30 epochs, patience 5, seed 3435; Adam at lr 0.001 rather than the README's 0.01,
// which was tuned for frozen word2vec vectors (with trainable random embeddings the loss stalls
// at 0.01), and with random embeddings words seen once in train map to <unk> (--min-freq 2) so
// that <unk>, which every unseen test word becomes, has a trained vector.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>

#include "commands.hpp"
#include "device_arg.hpp"
#include "text_data.hpp"
#include "txtcls/data/vectors.hpp"
#include "txtcls/models/checkpoint.hpp"
#include "txtcls/models/lstm_reg.hpp"
#include "txtcls/train/classifier.hpp"

namespace txtcls_cli {
namespace {

using namespace txtcls;
namespace fs = std::filesystem;

struct TrainArgs {
  std::string model = "lstm_reg", data = "data/trec", format = "auto", invalid_utf8 = "error", out, vectors, resume, tokenizer = "hedwig",
              device = "cpu", lstm_backend = "own";
  int64_t epochs = 30, batch_size = 32, max_len = 0, patience = 5, threads = 0, min_freq = 0, max_vocab = 0;
  double lr = 0.001, weight_decay = 0.0, dev_fraction = 0.1;
  uint64_t seed = 3435;
  bool freeze_vectors = false, quiet = false;
  models::LSTMRegConfig cfg;
  bool unidirectional = false;

  nlohmann::json to_json() const {
    return {{"model", model},       {"data", data},         {"format", format},     {"vectors", vectors},
            {"tokenizer", tokenizer}, {"epochs", epochs},   {"batch_size", batch_size}, {"max_len", max_len},
            {"patience", patience}, {"min_freq", min_freq}, {"max_vocab", max_vocab}, {"lr", lr},
            {"weight_decay", weight_decay}, {"dev_fraction", dev_fraction}, {"seed", std::to_string(seed)},
            {"freeze_vectors", freeze_vectors}, {"model_config", cfg.to_json()}};
  }
  void from_json(const nlohmann::json& j) {
    model = j.at("model"); data = j.at("data"); format = j.at("format"); vectors = j.at("vectors");
    tokenizer = j.at("tokenizer"); epochs = j.at("epochs"); batch_size = j.at("batch_size");
    max_len = j.at("max_len"); patience = j.at("patience"); min_freq = j.at("min_freq");
    max_vocab = j.at("max_vocab"); lr = j.at("lr"); weight_decay = j.at("weight_decay");
    dev_fraction = j.at("dev_fraction"); seed = std::stoull(j.at("seed").get<std::string>());
    freeze_vectors = j.at("freeze_vectors");
    nlohmann::json mc = j.at("model_config");
    cfg = models::LSTMRegConfig::from_json(mc, "run.json: model_config");
  }
};

void say(const TrainArgs& a, const std::string& s) {
  if (!a.quiet) std::cerr << s << "\n";
}

std::string fmt(double v, int prec = 4) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}

int run_train(TrainArgs a, bool epochs_given) {
  const bool resuming = !a.resume.empty();
  if (resuming) {
    const std::string run = a.resume + "/run.json";
    const int64_t epochs = a.epochs;
    try {
      a.from_json(models::read_json_file(run));
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      ::txtcls::detail::fail(run, ": malformed run description: ", e.what());
    }
    if (epochs_given) a.epochs = epochs;
    a.out = a.resume;
  }
  if (a.min_freq <= 0) a.min_freq = a.vectors.empty() ? 2 : 1;  // see the top of this file
  const Device device = resolve_device("train", a.device);
  apply_lstm_backend("train", a.lstm_backend, device);
  set_num_threads(a.threads > 0 ? static_cast<int>(a.threads) : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  if (a.out.empty()) a.out = "runs/" + a.model + "-" + fs::path(a.data).filename().string();
  fs::create_directories(a.out);

  // ---- data
  data::DatasetSplits splits = data::read_dataset(a.data, data::parse_format(a.format), read_options(a.invalid_utf8));
  TXTCLS_CHECK(!splits.train.empty(), a.data, ": no training examples");
  say(a, "data: " + a.data + ": train " + splits.train_report.summary() +
             (splits.has_dev() ? "; dev " + splits.dev_report.summary() : "") +
             (splits.has_test() ? "; test " + splits.test_report.summary() : ""));
  data::LabelSet labels = splits.labels.empty() ? data::LabelSet::from_examples(splits.train, data::LabelOrder::sorted)
                                                : data::LabelSet(splits.labels);
  std::string dev_source = "dev split";
  if (!splits.has_dev() && a.dev_fraction > 0) {
    splits.dev = carve_dev(splits.train, a.dev_fraction, a.seed);
    dev_source = fmt(100 * a.dev_fraction, 0) + "% of train (seeded)";
  }
  data::TokenizerOptions topt;
  topt.style = data::parse_tokenizer_style(a.tokenizer);
  data::Tokenizer tok(topt);
  data::VocabOptions vopt;
  vopt.min_freq = static_cast<size_t>(a.min_freq);
  vopt.max_size = static_cast<size_t>(a.max_vocab);
  data::Vocab vocab = data::build_vocab(splits.train, tok, vopt);
  data::EncodeOptions eopt;
  eopt.max_len = a.max_len;
  auto train = data::encode_examples(splits.train, tok, vocab, labels, eopt);
  auto dev = data::encode_examples(splits.dev, tok, vocab, labels, eopt);
  auto test = data::encode_examples(splits.test, tok, vocab, labels, eopt);
  say(a, "vocabulary " + std::to_string(vocab.size()) + " tokens; classes " + std::to_string(labels.size()) +
             "; train " + std::to_string(train.size()) + ", dev " + std::to_string(dev.size()) + " (" + dev_source +
             "), test " + std::to_string(test.size()));

  // ---- model
  models::LSTMRegConfig cfg = a.cfg;
  cfg.words_num = static_cast<int64_t>(vocab.size());
  cfg.target_class = static_cast<int64_t>(labels.size());
  cfg.bidirectional = cfg.bidirectional && !a.unidirectional;
  if (!a.vectors.empty()) cfg.mode = a.freeze_vectors ? "static" : "non-static";
  cfg.validate();
  a.cfg = cfg;
  Generator init(a.seed);
  models::LSTMReg<float> model(cfg, init);
  if (!a.vectors.empty() && !resuming) {
    auto v = data::load_vectors<float>(a.vectors, vocab, init);
    say(a, "vectors: " + v.summary());
    model.set_embeddings(v.matrix);
  }
  say(a, "model lstm_reg: " + std::to_string(model.num_parameters()) + " parameters, " +
             (device.is_cpu() ? std::to_string(num_threads()) + " threads" : "on " + device.str()));

  train::TrainerOptions topts;
  topts.epochs = a.epochs;
  topts.batch_size = a.batch_size;
  topts.lr = a.lr;
  topts.weight_decay = a.weight_decay;
  topts.beta_ema = cfg.beta_ema;
  topts.patience = a.patience;
  topts.seed = a.seed;
  topts.quiet = a.quiet;
  topts.device = device;
  train::ClassifierTrainer<float, models::LSTMReg<float>> trainer(model, train, dev, test,
                                                                 static_cast<int64_t>(labels.size()), topts);
  const std::string state_path = a.out + "/train_state.safetensors";
  if (resuming) {
    trainer.load_state(state_path);
    say(a, "resumed " + a.out + " after epoch " + std::to_string(trainer.epoch()));
  }

  // The checkpoint's text side is fixed before training: written once, atomically.
  nlohmann::json config = cfg.to_json();
  config["tokenizer"] = models::tokenizer_to_json(topt);
  config["max_len"] = a.max_len;
  models::write_json_file(a.out + "/config.json", config);
  models::write_json_file(a.out + "/run.json", a.to_json());
  vocab.save(a.out + "/vocab.txt");
  labels.save(a.out + "/labels.txt");

  auto metrics_json = [&]() {
    nlohmann::json hist = nlohmann::json::array();
    double seconds = 0, tokens = 0;
    for (auto& r : trainer.history()) {
      hist.push_back(r.to_json());
      seconds += r.train_seconds;
      tokens += r.tokens_per_second * r.train_seconds;
    }
    nlohmann::json m = {{"model", a.model}, {"data", a.data}, {"dev_source", dev_source}, {"best_epoch", trainer.best_epoch()},
                        {"epochs_run", trainer.epoch()}, {"stopped_early", trainer.stopped_early()},
                        {"train_seconds", seconds}, {"tokens_per_second", seconds > 0 ? tokens / seconds : 0.0},
                        {"threads", num_threads()}, {"history", hist}};
    for (auto& r : trainer.history())
      if (r.epoch == trainer.best_epoch()) {
        if (r.has_dev) m["dev"] = {{"accuracy", r.dev_accuracy}, {"macro_f1", r.dev_macro_f1}};
        if (r.has_test) m["test"] = {{"accuracy", r.test_accuracy}, {"macro_f1", r.test_macro_f1}};
      }
    return m;
  };
  trainer.on_best = [&](int64_t epoch) {
    models::save_weights(a.out + "/model.safetensors", model, {{"model", "lstm_reg"}, {"epoch", std::to_string(epoch)}});
  };
  trainer.on_epoch = [&](const train::EpochRecord& r) {
    std::string line = "epoch " + std::to_string(r.epoch) + "/" + std::to_string(a.epochs) + "  loss " + fmt(r.train_loss) +
                       "  " + fmt(r.tokens_per_second, 0) + " tok/s  " + fmt(r.train_seconds, 1) + " s";
    if (r.has_dev) line += "  dev acc " + fmt(r.dev_accuracy) + " F1 " + fmt(r.dev_macro_f1);
    if (r.has_test) line += "  test acc " + fmt(r.test_accuracy) + " F1 " + fmt(r.test_macro_f1);
    if (r.epoch == trainer.best_epoch()) line += "  *";
    say(a, line);
    models::write_json_file(a.out + "/metrics.json", metrics_json());
  };
  trainer.fit(state_path);
  if (trainer.stopped_early()) say(a, "early stop: no better dev accuracy for " + std::to_string(a.patience) + " epochs");

  // ---- the saved best model on test
  models::load_weights(a.out + "/model.safetensors", model);
  nlohmann::json m = metrics_json();
  if (test.size()) {
    auto e = train::evaluate<float>(model, test, static_cast<int64_t>(labels.size()));
    m["test"] = {{"accuracy", e.accuracy()}, {"macro_f1", e.macro_f1()}};
    if (!a.quiet) std::cout << "\ntest set, best model (epoch " << trainer.best_epoch() << "):\n" << e.confusion.report(labels.names());
  }
  models::write_json_file(a.out + "/metrics.json", m);
  say(a, "saved " + a.out + "/ (model.safetensors, config.json, vocab.txt, labels.txt, metrics.json)");
  return 0;
}

}  // namespace

Action setup_train(CLI::App& sub) {
  auto a = std::make_shared<TrainArgs>();
  sub.add_option("--model", a->model, "Model to train")->capture_default_str()->check(CLI::IsMember({"lstm_reg"}));
  sub.add_option("--data", a->data, "Dataset: a directory (train/dev/test files, labels.txt, or class folders) or a file")
      ->capture_default_str();
  sub.add_option("--format", a->format, "auto, tsv, csv, fasttext or folder")->capture_default_str();
  add_invalid_utf8_option(sub, a->invalid_utf8);
  sub.add_option("--out", a->out, "Output directory (default runs/<model>-<dataset>)");
  auto* epochs = sub.add_option("--epochs", a->epochs, "Maximum epochs")->capture_default_str();
  sub.add_option("--batch-size", a->batch_size, "Batch size")->capture_default_str();
  sub.add_option("--lr", a->lr, "Adam learning rate")->capture_default_str();
  sub.add_option("--weight-decay", a->weight_decay, "L2 weight decay")->capture_default_str();
  sub.add_option("--seed", a->seed, "Random seed (weights, dropout, batch order, dev split)")->capture_default_str();
  sub.add_option("--threads", a->threads, "CPU threads (default: all cores)");
  sub.add_option("--max-len", a->max_len, "Truncate texts to this many tokens (0: no limit)")->capture_default_str();
  sub.add_option("--patience", a->patience, "Stop after this many epochs without a better dev accuracy (0: never)")
      ->capture_default_str();
  sub.add_option("--dev-fraction", a->dev_fraction, "Share of train held out as dev when the data has no dev split")
      ->capture_default_str();
  sub.add_option("--min-freq", a->min_freq,
                 "Minimum token count for the vocabulary (default: 2 with random embeddings, so that <unk> is "
                 "trained; 1 with --vectors)");
  sub.add_option("--max-vocab", a->max_vocab, "Vocabulary size limit (0: none)")->capture_default_str();
  sub.add_option("--tokenizer", a->tokenizer, "hedwig, kim or whitespace")->capture_default_str();
  sub.add_option("--vectors", a->vectors, "Pretrained word vectors (GloVe / word2vec text)")->check(CLI::ExistingFile);
  sub.add_flag("--freeze-vectors", a->freeze_vectors, "Keep the pretrained vectors fixed (hedwig's static mode)");
  sub.add_option("--resume", a->resume, "Continue the run saved in this directory")->check(CLI::ExistingDirectory);
  sub.add_option("--device", a->device,
                 "cpu, cuda or cuda:N (a resumed run may continue on another device; bit-identical on the same one)")
      ->capture_default_str();
  sub.add_option("--lstm-backend", a->lstm_backend,
                 "own or cudnn: which implementation runs the LSTM on a GPU (timings in docs/gpu.md)")
      ->capture_default_str();
  sub.add_flag("--quiet", a->quiet, "Print nothing but errors");
  sub.add_option("--hidden-dim", a->cfg.hidden_dim, "LSTM hidden size")->capture_default_str();
  sub.add_option("--num-layers", a->cfg.num_layers, "LSTM layers")->capture_default_str();
  sub.add_option("--words-dim", a->cfg.words_dim, "Embedding size")->capture_default_str();
  sub.add_option("--dropout", a->cfg.dropout, "Dropout after pooling (and between layers)")->capture_default_str();
  sub.add_option("--wdrop", a->cfg.wdrop, "Weight drop on the recurrent matrix")->capture_default_str();
  sub.add_option("--embed-droprate", a->cfg.embed_droprate, "Embedding dropout (whole words)")->capture_default_str();
  sub.add_option("--beta-ema", a->cfg.beta_ema, "Temporal averaging of the weights (0: off)")->capture_default_str();
  sub.add_flag("--bottleneck", a->cfg.bottleneck_layer, "Add the fc1 -> ReLU bottleneck layer");
  sub.add_flag("--unidirectional", a->unidirectional, "A forward LSTM instead of a BiLSTM");
  return [a, epochs]() { return run_train(*a, epochs->count() > 0); };
}

}  // namespace txtcls_cli
