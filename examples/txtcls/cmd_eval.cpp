// txtcls eval: accuracy, macro-F1 and the per-class table of a trained model on a dataset.
//   txtcls eval --checkpoint DIR --data PATH [--split test] [--json]
#include <iostream>

#include "commands.hpp"
#include "device_arg.hpp"
#include "text_data.hpp"
#include "trained_model.hpp"
#include "txtcls/data/reader.hpp"
#include "txtcls/train/classifier.hpp"

namespace txtcls_cli {
namespace {

using namespace txtcls;

struct EvalArgs {
  std::string checkpoint, data, format = "auto", split = "test", device = "cpu", invalid_utf8 = "error";
  int64_t batch_size = 64, threads = 0;
  bool json = false;
};

int run_eval(const EvalArgs& a) {
  if (a.threads > 0) set_num_threads(static_cast<int>(a.threads));
  const Device device = resolve_device("eval", a.device);
  TrainedModel tm = TrainedModel::load(a.checkpoint);
  tm.model->to(device);
  data::DatasetSplits s = data::read_dataset(a.data, data::parse_format(a.format), read_options(a.invalid_utf8));
  // A single file is read into `train`: it is the set to evaluate, whatever --split says.
  const bool single_file = s.dev.empty() && s.test.empty();
  std::vector<data::Example>* ex = single_file ? &s.train
                                   : a.split == "test" ? &s.test
                                   : a.split == "dev"  ? &s.dev
                                                       : &s.train;
  TXTCLS_CHECK(!ex->empty(), a.data, ": no examples in the ", a.split, " split");
  data::Tokenizer tok(tm.text.tokenizer_options);
  data::EncodeOptions eo;
  eo.max_len = tm.text.max_len;
  auto d = data::encode_examples(*ex, tok, tm.text.vocab, tm.text.labels, eo);
  auto r = train::evaluate<float>(*tm.model, d, static_cast<int64_t>(tm.text.labels.size()), a.batch_size);
  if (a.json) {
    nlohmann::json per = nlohmann::json::object();
    for (int64_t c = 0; c < r.confusion.num_classes(); ++c)
      per[tm.text.labels.name(c)] = {{"precision", r.confusion.precision(c)}, {"recall", r.confusion.recall(c)},
                                     {"f1", r.confusion.f1(c)}, {"support", r.confusion.gold_count(c)}};
    nlohmann::json j = {{"examples", r.confusion.total()}, {"accuracy", r.accuracy()}, {"macro_f1", r.macro_f1()},
                        {"loss", r.loss}, {"per_class", per}};
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << a.data << " (" << (single_file ? "file" : a.split) << "), " << r.confusion.total() << " examples\n"
              << r.confusion.report(tm.text.labels.names());
  }
  return 0;
}

}  // namespace

Action setup_eval(CLI::App& sub) {
  auto a = std::make_shared<EvalArgs>();
  sub.add_option("--checkpoint", a->checkpoint, "Directory written by txtcls train")->required()->check(CLI::ExistingDirectory);
  sub.add_option("--data", a->data, "Dataset directory or file")->required();
  sub.add_option("--format", a->format, "auto, tsv, csv, fasttext or folder")->capture_default_str();
  add_invalid_utf8_option(sub, a->invalid_utf8);
  sub.add_option("--split", a->split, "Split of a dataset directory")->capture_default_str()->check(CLI::IsMember({"test", "dev", "train"}));
  sub.add_option("--batch-size", a->batch_size, "Batch size")->capture_default_str();
  sub.add_option("--threads", a->threads, "CPU threads (default: all cores)");
  sub.add_option("--device", a->device, "cpu, cuda or cuda:N")->capture_default_str();
  sub.add_flag("--json", a->json, "Print the metrics as JSON");
  return [a]() { return run_eval(*a); };
}

}  // namespace txtcls_cli
