#pragma once
// Training and evaluation of a sequence classifier: any model with
//   Tensor<T> forward(const Tensor<int64_t>& ids [B,T], const Tensor<int64_t>& lengths [B]) -> logits [B,C]
// trained with Adam on cross entropy, evaluated with the exponential moving average of its
// weights (temporal averaging), early-stopped on dev accuracy, and resumable bit for bit: the
// complete state (weights, Adam moments, the average, the dropout generator, the batch order,
// the epoch history) is one safetensors file written atomically after every epoch.
//
// On a GPU (TrainerOptions::device) the model, its gradients, the Adam moments and the average
// live on the device; batches stay on the host, because every op that takes ids, lengths or
// labels checks them there (and the embedding sorts ids for its backward) and uploads what its
// kernels read through the pinned staging ring (cuda::copy_to_device_staged), without waiting.
// The host waits for the device once per step (the loss value) and per evaluation batch (the
// predictions and the loss); saved states hold host copies, and a loaded state goes to the device.
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "txtcls/data/batching.hpp"
#include "txtcls/io/safetensors.hpp"
#include "txtcls/nn/module.hpp"
#include "txtcls/ops/loss.hpp"
#include "txtcls/ops/max.hpp"
#include "txtcls/train/ema.hpp"
#include "txtcls/train/metrics.hpp"
#include "txtcls/train/optim.hpp"
#include "txtcls/train/progress.hpp"

namespace txtcls::train {

struct EvalResult {
  ConfusionMatrix confusion{1};
  double loss = 0;  // mean cross entropy
  std::vector<int64_t> predictions;  // per sequence of the dataset, in dataset order
  double accuracy() const { return confusion.accuracy(); }
  double macro_f1() const { return confusion.macro_f1(); }
};

// Evaluates `model` in eval mode without recording a graph (batches longest-first: least padding).
template <class T, class Model>
EvalResult evaluate(Model& model, const data::EncodedDataset& d, int64_t num_classes, int64_t batch_size = 64) {
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard ng;
  EvalResult r;
  r.confusion = ConfusionMatrix(num_classes);
  r.predictions.assign(d.size(), -1);
  data::BatchIterator it(d, {batch_size, data::BatchOrder::by_length});
  data::Batch b;
  double loss_sum = 0;
  while (it.next(b)) {
    Tensor<T> logits = model.forward(b.ids, b.lengths);
    Tensor<int64_t> pred = argmax(logits, 1).cpu();  // the model's device -> host
    const bool labelled = b.labels.data()[0] >= 0;
    if (labelled) loss_sum += cross_entropy(logits, b.labels, Reduction::Sum).item();
    for (int64_t i = 0; i < b.size(); ++i) {
      r.predictions[b.indices[static_cast<size_t>(i)]] = pred.data()[i];
      if (b.labels.data()[i] >= 0) r.confusion.add(b.labels.data()[i], pred.data()[i]);
    }
  }
  r.loss = d.size() ? loss_sum / static_cast<double>(d.size()) : 0.0;
  model.train(was_training);
  return r;
}

struct TrainerOptions {
  int64_t epochs = 30;
  int64_t batch_size = 32;
  double lr = 0.01;
  double weight_decay = 0.0;
  double beta_ema = 0.99;  // 0: evaluate the raw weights
  int64_t patience = 5;    // epochs without a better dev accuracy before stopping; 0 = never stop early
  uint64_t seed = 3435;
  int64_t log_every = 50;  // log-line period when stderr is not a terminal
  bool quiet = false;
  Device device = Device::cpu();  // where the model is moved to and trained
};

struct EpochRecord {
  int64_t epoch = 0;
  double train_loss = 0, train_seconds = 0, tokens_per_second = 0;
  double dev_accuracy = 0, dev_macro_f1 = 0, dev_loss = 0;
  double test_accuracy = 0, test_macro_f1 = 0;
  bool has_dev = false, has_test = false;
  nlohmann::json to_json() const {
    nlohmann::json j = {{"epoch", epoch}, {"train_loss", train_loss}, {"train_seconds", train_seconds},
                        {"tokens_per_second", tokens_per_second}};
    if (has_dev) j["dev"] = {{"accuracy", dev_accuracy}, {"macro_f1", dev_macro_f1}, {"loss", dev_loss}};
    if (has_test) j["test"] = {{"accuracy", test_accuracy}, {"macro_f1", test_macro_f1}};
    return j;
  }
  static EpochRecord from_json(const nlohmann::json& j) {
    EpochRecord r;
    r.epoch = j.at("epoch");
    r.train_loss = j.at("train_loss");
    r.train_seconds = j.at("train_seconds");
    r.tokens_per_second = j.at("tokens_per_second");
    if (j.contains("dev")) {
      r.has_dev = true;
      r.dev_accuracy = j["dev"].at("accuracy");
      r.dev_macro_f1 = j["dev"].at("macro_f1");
      r.dev_loss = j["dev"].at("loss");
    }
    if (j.contains("test")) {
      r.has_test = true;
      r.test_accuracy = j["test"].at("accuracy");
      r.test_macro_f1 = j["test"].at("macro_f1");
    }
    return r;
  }
};

// Trains `model` on `train`, selecting on `dev` and reporting `test` (either may be empty).
// on_best(epoch) is called with the averaged weights swapped in whenever dev accuracy improves
// (or every epoch when there is no dev set): the place to save the model.
template <class T, class Model>
class ClassifierTrainer {
 public:
  ClassifierTrainer(Model& model, const data::EncodedDataset& train, const data::EncodedDataset& dev,
                    const data::EncodedDataset& test, int64_t num_classes, TrainerOptions opt)
      : model_(model),
        train_(train),
        dev_(dev),
        test_(test),
        classes_(num_classes),
        opt_(opt),
        gen_(opt.seed),
        batches_(train, {opt.batch_size, data::BatchOrder::bucketed, 100, true, false, opt.seed}) {
    TXTCLS_CHECK(train.size() > 0, "train: the training set is empty");
    model_.set_generator(&gen_);
    model_.to(opt.device);  // before the optimizer and the average allocate their state beside it
    AdamOptions ao;
    ao.lr = opt.lr;
    ao.weight_decay = opt.weight_decay;
    optim_ = std::make_unique<Adam<T>>(trainable(model_.named_parameters()), ao);
    // The average starts at zero, so that (avg / (1 - beta^t)) is exactly a normalised weighted
    // mean of the iterates; hedwig starts it at the initial weights, which over-scales the
    // weights by 1 / (1 - beta^t) until t is in the hundreds (docs/models/lstm_reg.md).
    if (opt.beta_ema > 0) ema_ = std::make_unique<Ema<T>>(model_, opt.beta_ema, EmaStart::Zeros);
  }

  std::function<void(int64_t epoch)> on_best;
  std::function<void(const EpochRecord&)> on_epoch;  // after each epoch's evaluation
  std::function<void()> on_state_saved;

  // Runs epochs until opt.epochs or early stopping; `state_path` (if not empty) receives the
  // resume state after every epoch.
  void fit(const std::string& state_path = "") {
    while (epoch_ < opt_.epochs && !stopped_) {
      EpochRecord rec = train_epoch();
      {
        std::optional<typename Ema<T>::Scope> avg;
        if (ema_ && ema_->steps() > 0) avg.emplace(ema_->scope());
        if (dev_.size()) {
          EvalResult e = evaluate<T>(model_, dev_, classes_);
          rec.has_dev = true;
          rec.dev_accuracy = e.accuracy();
          rec.dev_macro_f1 = e.macro_f1();
          rec.dev_loss = e.loss;
        }
        if (test_.size()) {
          EvalResult e = evaluate<T>(model_, test_, classes_);
          rec.has_test = true;
          rec.test_accuracy = e.accuracy();
          rec.test_macro_f1 = e.macro_f1();
        }
        const bool better = !rec.has_dev || best_epoch_ == 0 || rec.dev_accuracy > best_dev_;
        if (better) {
          best_dev_ = rec.dev_accuracy;
          best_epoch_ = rec.epoch;
          bad_epochs_ = 0;
          if (on_best) on_best(rec.epoch);
        } else if (++bad_epochs_ >= opt_.patience && opt_.patience > 0) {
          stopped_ = true;
        }
      }
      history_.push_back(rec);
      if (on_epoch) on_epoch(rec);
      if (!state_path.empty()) {
        save_state(state_path);
        if (on_state_saved) on_state_saved();
      }
    }
  }

  EpochRecord train_epoch() {
    model_.train();
    Progress prog("epoch " + std::to_string(epoch_ + 1), static_cast<int64_t>(batches_.batches_per_epoch()),
                  opt_.quiet ? nullptr : stderr, opt_.log_every);
    data::Batch b;
    int64_t step = 0;
    while (batches_.next(b)) {
      Tensor<T> logits = model_.forward(b.ids, b.lengths);
      Tensor<T> loss = cross_entropy(logits, b.labels);
      optim_->zero_grad();
      loss.backward();
      optim_->step();
      if (ema_) ema_->update();
      int64_t tokens = 0;
      for (int64_t i = 0; i < b.size(); ++i) tokens += b.lengths.data()[i];
      prog.update(++step, static_cast<double>(loss.item()), tokens);
    }
    prog.finish();
    ++epoch_;
    EpochRecord rec;
    rec.epoch = epoch_;
    rec.train_loss = prog.mean_loss();
    rec.train_seconds = prog.seconds();
    rec.tokens_per_second = prog.tokens_per_second();
    return rec;
  }

  // ---- resume state: one safetensors file (tensors + a JSON document in the metadata)
  void save_state(const std::string& path) const {
    io::TensorFile f;
    for (auto& [n, t] : model_.named_parameters()) f.tensors.emplace_back("model." + n, io::to_raw(t));
    for (auto& [n, t] : optim_->state_dict()) f.tensors.emplace_back("optim." + n, io::to_raw(t));
    if (ema_)
      for (auto& [n, t] : ema_->state_dict()) f.tensors.emplace_back("ema." + n, io::to_raw(t));
    nlohmann::json hist = nlohmann::json::array();
    for (auto& r : history_) hist.push_back(r.to_json());
    const auto& bs = batches_.state();
    nlohmann::json j = {{"epoch", epoch_},         {"best_epoch", best_epoch_},  {"best_dev_accuracy", best_dev_},
                        {"bad_epochs", bad_epochs_}, {"stopped", stopped_},      {"history", hist},
                        {"generator", {std::to_string(gen_.seed()), std::to_string(gen_.offset())}},
                        {"batches", {std::to_string(bs.seed), std::to_string(bs.epoch), std::to_string(bs.position)}}};
    f.metadata["txtcls.trainer_state"] = j.dump();
    io::write_safetensors(path, f);
  }

  void load_state(const std::string& path) {
    io::TensorFile f = io::read_safetensors(path);
    auto it = f.metadata.find("txtcls.trainer_state");
    TXTCLS_CHECK(it != f.metadata.end(), path, ": not a txtcls training state (no 'txtcls.trainer_state' metadata)");
    nn::StateDict<T> model_sd, optim_sd, ema_sd;
    for (auto& [name, raw] : f.tensors) {
      auto put = [&](const char* prefix, nn::StateDict<T>& sd) {
        const std::string p = prefix;
        if (name.rfind(p, 0) != 0) return false;
        sd.emplace(name.substr(p.size()), io::to_tensor<T>(raw, path + ": " + name));
        return true;
      };
      TXTCLS_CHECK(put("model.", model_sd) || put("optim.", optim_sd) || put("ema.", ema_sd), path,
                   ": unexpected tensor '", name, "'");
    }
    try {
      model_.load_state_dict(model_sd, true);
      optim_->load_state_dict(optim_sd);
      if (ema_) ema_->load_state_dict(ema_sd);
      nlohmann::json j = nlohmann::json::parse(it->second);
      epoch_ = j.at("epoch");
      best_epoch_ = j.at("best_epoch");
      best_dev_ = j.at("best_dev_accuracy");
      bad_epochs_ = j.at("bad_epochs");
      stopped_ = j.at("stopped");
      history_.clear();
      for (auto& r : j.at("history")) history_.push_back(EpochRecord::from_json(r));
      gen_.set_state(std::stoull(j.at("generator")[0].get<std::string>()), std::stoull(j.at("generator")[1].get<std::string>()));
      data::BatchIteratorState s;
      s.seed = std::stoull(j.at("batches")[0].get<std::string>());
      s.epoch = std::stoull(j.at("batches")[1].get<std::string>());
      s.position = std::stoull(j.at("batches")[2].get<std::string>());
      batches_.restore(s);
    } catch (const Error& e) {
      ::txtcls::detail::fail(path, ": ", e.what());
    } catch (const std::exception& e) {
      ::txtcls::detail::fail(path, ": malformed training state: ", e.what());
    }
  }

  int64_t epoch() const { return epoch_; }
  int64_t best_epoch() const { return best_epoch_; }
  bool stopped_early() const { return stopped_; }
  const std::vector<EpochRecord>& history() const { return history_; }
  Ema<T>* ema() { return ema_.get(); }

 private:
  static nn::NamedTensors<T> trainable(const nn::NamedTensors<T>& all) {
    nn::NamedTensors<T> out;
    for (auto& p : all)
      if (p.second.requires_grad()) out.push_back(p);
    return out;
  }

  Model& model_;
  const data::EncodedDataset& train_;
  const data::EncodedDataset& dev_;
  const data::EncodedDataset& test_;
  int64_t classes_;
  TrainerOptions opt_;
  Generator gen_;
  data::BatchIterator batches_;
  std::unique_ptr<Adam<T>> optim_;
  std::unique_ptr<Ema<T>> ema_;
  int64_t epoch_ = 0, best_epoch_ = 0, bad_epochs_ = 0;
  double best_dev_ = 0;
  bool stopped_ = false;
  std::vector<EpochRecord> history_;
};

}  // namespace txtcls::train
