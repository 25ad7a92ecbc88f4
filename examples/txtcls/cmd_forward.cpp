// txtcls forward: runs a model in eval mode on given tensors, for checking numerical parity with
// a reference implementation. The weights' dtype (F32 or F64) selects the compute dtype.
//
//   txtcls forward --model lstm_reg --config CONFIG.json --weights W.safetensors
//                  --inputs IN.safetensors --out OUT.safetensors [--grads]
//
// IN: input_ids [B,T] (I64 or I32), lengths [B], optionally labels [B]. OUT: logits, and with
// labels loss (mean cross entropy); --grads adds grads/<weight name> = d loss / d weight under
// the names the weights file used.
#include <map>
#include <string>

#include "commands.hpp"
#include "txtcls/io/safetensors.hpp"
#include "txtcls/models/lstm_reg.hpp"
#include "txtcls/ops/loss.hpp"

namespace txtcls_cli {
namespace {

using namespace txtcls;

struct ForwardArgs {
  std::string model, config, weights, inputs, out;
  bool grads = false;
};

Tensor<int64_t> int_input(const io::TensorFile& f, const std::string& name, const std::string& path, bool required) {
  const io::RawTensor* r = f.find(name);
  if (!r) {
    TXTCLS_CHECK(!required, path, ": missing tensor '", name, "'");
    return {};
  }
  TXTCLS_CHECK(r->dtype == DType::I64 || r->dtype == DType::I32, path, ": tensor '", name, "' must be I64 or I32, not ",
               dtype_name(r->dtype));
  return io::to_tensor_converting<int64_t>(*r, path + ": " + name);
}

// Loads `weights` into `model`, mapping each file name through canon(); returns model name -> file name.
template <class T, class M, class Canon>
std::map<std::string, std::string> load_weights(M& model, const io::TensorFile& w, const std::string& path, Canon canon) {
  std::map<std::string, Tensor<T>> sd;
  std::map<std::string, std::string> file_name;
  for (const auto& [name, raw] : w.tensors) {
    std::string n = canon(name);
    TXTCLS_CHECK(!sd.count(n), path, ": tensors '", file_name[n], "' and '", name, "' both map to '", n, "'");
    sd.emplace(n, io::to_tensor<T>(raw, path + ": " + name));
    file_name[n] = name;
  }
  try {
    model.load_state_dict(sd, true);
  } catch (const Error& e) {
    ::txtcls::detail::fail(path, ": ", e.what());
  }
  return file_name;
}

template <class T>
int run_lstm_reg(const ForwardArgs& a, const io::TensorFile& weights) {
  auto cfg = models::LSTMRegConfig::load(a.config);
  models::LSTMReg<T> model(cfg);
  auto names = load_weights<T>(model, weights, a.weights, models::LSTMReg<T>::canonical_name);
  model.eval();

  io::TensorFile in = io::read_safetensors(a.inputs);
  Tensor<int64_t> ids = int_input(in, "input_ids", a.inputs, true);
  Tensor<int64_t> lengths = int_input(in, "lengths", a.inputs, true);
  Tensor<int64_t> labels = int_input(in, "labels", a.inputs, false);
  TXTCLS_CHECK(!a.grads || labels.defined(), a.inputs, ": --grads needs 'labels' to define the loss");

  io::TensorFile out;
  out.metadata["model"] = "lstm_reg";
  out.metadata["dtype"] = std::string(dtype_name(dtype_of<T>));
  Tensor<T> logits = model.forward(ids, lengths);
  out.tensors.emplace_back("logits", io::to_raw(logits));
  if (labels.defined()) {
    Tensor<T> loss = cross_entropy(logits, labels);
    out.tensors.emplace_back("loss", io::to_raw(loss));
    if (a.grads) {
      model.zero_grad();
      loss.backward();
      for (auto& [n, p] : model.named_parameters()) {
        Tensor<T> g = p.grad().defined() ? p.grad() : zeros<T>(p.shape());
        out.tensors.emplace_back("grads/" + names.at(n), io::to_raw(g));
      }
    }
  }
  io::write_safetensors(a.out, out);
  return 0;
}

// The weights' floating dtype: every floating tensor must share it.
DType weights_dtype(const io::TensorFile& w, const std::string& path) {
  std::optional<DType> dt;
  for (const auto& [n, r] : w.tensors) {
    if (r.dtype != DType::F32 && r.dtype != DType::F64) continue;
    TXTCLS_CHECK(!dt || *dt == r.dtype, path, ": mixed float dtypes (", dtype_name(*dt), " and ", dtype_name(r.dtype),
                 " in '", n, "')");
    dt = r.dtype;
  }
  TXTCLS_CHECK(dt.has_value(), path, ": no F32 or F64 tensors");
  return *dt;
}

}  // namespace

Action setup_forward(CLI::App& sub) {
  auto a = std::make_shared<ForwardArgs>();
  sub.add_option("--model", a->model, "Model name")->required()->check(CLI::IsMember({"lstm_reg"}));
  sub.add_option("--config", a->config, "Model configuration (JSON, the reference's field names)")->required()->check(CLI::ExistingFile);
  sub.add_option("--weights", a->weights, "Weights (safetensors, the reference's state_dict names, F32 or F64)")
      ->required()->check(CLI::ExistingFile);
  sub.add_option("--inputs", a->inputs, "Inputs (safetensors: input_ids, lengths, optional labels)")->required()->check(CLI::ExistingFile);
  sub.add_option("--out", a->out, "Output safetensors file (written atomically)")->required();
  sub.add_flag("--grads", a->grads, "Also write grads/<weight name> = d loss / d weight");
  return [a]() {
    io::TensorFile w = io::read_safetensors(a->weights);
    DType dt = weights_dtype(w, a->weights);
    return dt == DType::F64 ? run_lstm_reg<double>(*a, w) : run_lstm_reg<float>(*a, w);
  };
}

}  // namespace txtcls_cli
