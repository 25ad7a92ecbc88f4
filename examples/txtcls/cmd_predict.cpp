// txtcls predict: one text per line on stdin -> "LABEL<TAB>probability" per line on stdout.
#include <iostream>
#include <string>

#include "commands.hpp"
#include "device_arg.hpp"
#include "trained_model.hpp"
#include "txtcls/data/batching.hpp"
#include "txtcls/ops/softmax.hpp"

namespace txtcls_cli {
namespace {

using namespace txtcls;

struct PredictArgs {
  std::string checkpoint, device = "cpu";
  int64_t batch_size = 64, threads = 0;
};

// Classifies `lines` and prints them in order.
void flush(TrainedModel& tm, std::vector<std::string>& lines, int64_t batch_size) {
  if (lines.empty()) return;
  data::Tokenizer tok(tm.text.tokenizer_options);
  data::EncodeOptions eo;
  eo.max_len = tm.text.max_len;
  auto d = data::encode_texts(lines, tok, tm.text.vocab, eo);
  std::vector<std::pair<int64_t, float>> out(d.size());
  NoGradGuard ng;
  data::BatchIterator it(d, {batch_size, data::BatchOrder::by_length});
  data::Batch b;
  while (it.next(b)) {
    Tensor<float> p = softmax(tm.model->forward(b.ids, b.lengths), 1).cpu();  // the model's device -> host
    const int64_t C = p.size(1);
    for (int64_t i = 0; i < b.size(); ++i) {
      const float* row = p.data() + i * C;
      int64_t best = 0;
      for (int64_t c = 1; c < C; ++c)
        if (row[c] > row[best]) best = c;
      out[b.indices[static_cast<size_t>(i)]] = {best, row[best]};
    }
  }
  for (auto& [c, prob] : out) std::cout << tm.text.labels.name(c) << '\t' << prob << '\n';
  std::cout.flush();
  lines.clear();
}

int run_predict(const PredictArgs& a) {
  if (a.threads > 0) set_num_threads(static_cast<int>(a.threads));
  const Device device = resolve_device("predict", a.device);
  TrainedModel tm = TrainedModel::load(a.checkpoint);
  tm.model->to(device);
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(std::cin, line)) {
    lines.push_back(line);
    if (static_cast<int64_t>(lines.size()) >= 16 * a.batch_size) flush(tm, lines, a.batch_size);
  }
  flush(tm, lines, a.batch_size);
  return 0;
}

}  // namespace

Action setup_predict(CLI::App& sub) {
  auto a = std::make_shared<PredictArgs>();
  sub.add_option("--checkpoint", a->checkpoint, "Directory written by txtcls train")->required()->check(CLI::ExistingDirectory);
  sub.add_option("--batch-size", a->batch_size, "Batch size")->capture_default_str();
  sub.add_option("--threads", a->threads, "CPU threads (default: all cores)");
  sub.add_option("--device", a->device, "cpu, cuda or cuda:N")->capture_default_str();
  return [a]() { return run_predict(*a); };
}

}  // namespace txtcls_cli
