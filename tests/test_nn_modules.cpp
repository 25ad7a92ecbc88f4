#include <cstring>

#include "test_util.hpp"
#include "txtcls/nn/dropout.hpp"
#include "txtcls/nn/embedding.hpp"
#include "txtcls/nn/layer_norm.hpp"
#include "txtcls/nn/linear.hpp"
#include "txtcls/nn/sequential.hpp"

using namespace txtcls;
using namespace tt;

namespace {

// A BERT-shaped tree: names must come out exactly as PyTorch would spell them.
struct Attention : nn::Module<double> {
  std::shared_ptr<nn::Linear<double>> query, key;
  Attention(Generator& g) {
    query = register_module("query", std::make_shared<nn::Linear<double>>(4, 4, true, g));
    key = register_module("key", std::make_shared<nn::Linear<double>>(4, 4, false, g));
  }
};
struct Layer : nn::Module<double> {
  std::shared_ptr<Attention> attention;
  std::shared_ptr<nn::Dropout<double>> drop;
  Layer(Generator& g) {
    attention = register_module("attention", std::make_shared<Attention>(g));
    drop = register_module("dropout", std::make_shared<nn::Dropout<double>>(0.1));
  }
};
struct Encoder : nn::Module<double> {
  std::shared_ptr<nn::ModuleList<double>> layer;
  Encoder(Generator& g, int n) {
    layer = register_module("layer", std::make_shared<nn::ModuleList<double>>());
    for (int i = 0; i < n; ++i) layer->push_back(std::make_shared<Layer>(g));
  }
};
struct Model : nn::Module<double> {
  Tensor<double> scale;
  std::shared_ptr<Encoder> encoder;
  std::shared_ptr<nn::Linear<double>> classifier;
  Model(uint64_t seed) {
    Generator g(seed);
    scale = register_parameter("scale", ones<double>({1}));
    register_buffer("position_ids", arange<double>(0, 5));
    encoder = register_module("encoder", std::make_shared<Encoder>(g, 2));
    classifier = register_module("classifier", std::make_shared<nn::Linear<double>>(4, 3, true, g));
  }
};

std::vector<std::string> names_of(const nn::NamedTensors<double>& v) {
  std::vector<std::string> out;
  for (auto& [n, t] : v) out.push_back(n);
  return out;
}

// Central differences of loss() with respect to every parameter element, against the
// gradients left by one backward of loss(): a gradcheck at the module level.
void require_param_grads(nn::Module<double>& m, const std::function<Tensor<double>()>& loss) {
  m.zero_grad();
  loss().backward();
  for (auto& [name, p] : m.named_parameters()) {
    Tensor<double> g = p.grad();
    REQUIRE(g.defined());
    double* d = p.data();
    for (int64_t i = 0; i < p.numel(); ++i) {
      NoGradGuard ng;
      const double orig = d[i], eps = 1e-6;
      d[i] = orig + eps;
      const double fp = loss().item();
      d[i] = orig - eps;
      const double fm = loss().item();
      d[i] = orig;
      const double num = (fp - fm) / (2 * eps);
      INFO(name << " element " << i << ": analytic " << g.data()[i] << " numeric " << num);
      REQUIRE(std::abs(num - g.data()[i]) <= 1e-7 + 1e-5 * std::abs(num));
    }
  }
}

}  // namespace

TEST_CASE("module: hierarchical names in PyTorch order", "[nn][module]") {
  auto m = std::make_shared<Model>(1);
  const std::vector<std::string> expect = {"scale",
                                           "encoder.layer.0.attention.query.weight",
                                           "encoder.layer.0.attention.query.bias",
                                           "encoder.layer.0.attention.key.weight",
                                           "encoder.layer.1.attention.query.weight",
                                           "encoder.layer.1.attention.query.bias",
                                           "encoder.layer.1.attention.key.weight",
                                           "classifier.weight",
                                           "classifier.bias"};
  REQUIRE(names_of(m->named_parameters()) == expect);
  REQUIRE(names_of(m->named_parameters(false)) == std::vector<std::string>{"scale"});
  REQUIRE(names_of(m->named_buffers()) == std::vector<std::string>{"position_ids"});
  REQUIRE(m->parameters().size() == expect.size());
  for (auto& p : m->parameters()) REQUIRE(p.requires_grad());
  REQUIRE(m->num_parameters() == 1 + 2 * (16 + 4 + 16) + 12 + 3);
  // the member handles are the registered tensors
  REQUIRE(m->encoder->layer->get<Layer>(1)->attention->query->weight.same(m->named_parameters()[4].second));

  auto sd = m->state_dict();
  REQUIRE(sd.size() == expect.size() + 1);
  REQUIRE(sd.count("position_ids"));
  REQUIRE(!sd.at("classifier.weight").requires_grad());
  REQUIRE(sd.at("classifier.weight").data() == m->classifier->weight.data());  // detached, not copied

  std::vector<std::string> mods;
  for (auto& [n, mod] : m->named_modules()) mods.push_back(n + ":" + mod->type_name());
  REQUIRE(mods.size() == 14);
  REQUIRE(mods[0] == ":Module");
  REQUIRE(mods[2] == "encoder.layer:ModuleList");
  REQUIRE(mods[5] == "encoder.layer.0.attention.query:Linear");
  REQUIRE(mods[7] == "encoder.layer.0.dropout:Dropout");

  REQUIRE_THROWS_WITH(m->register_parameter("scale", ones<double>({1})), Catch::Contains("already used"));
  REQUIRE_THROWS_WITH(m->register_buffer("a.b", ones<double>({1})), Catch::Contains("no '.'"));
  REQUIRE_THROWS_WITH(m->register_parameter("x", mul(m->scale, 2.0)), Catch::Contains("must be leaves"));
  REQUIRE_THROWS_WITH(m->encoder->layer->get<nn::Linear<double>>(0), Catch::Contains("is a Module, not"));
}

TEST_CASE("module: tied parameters are listed once, saved under every name", "[nn][module]") {
  struct Tied : nn::Module<double> {
    std::shared_ptr<nn::Linear<double>> a;
    Tied() {
      a = register_module("a", std::make_shared<nn::Linear<double>>(2, 2));
      register_module("b", a);
    }
  } t;
  REQUIRE(names_of(t.named_parameters()) == std::vector<std::string>{"a.weight", "a.bias"});
  REQUIRE(t.num_parameters() == 6);
  auto sd = t.state_dict();
  REQUIRE(sd.size() == 4);
  REQUIRE(sd.count("b.weight"));
  REQUIRE(t.named_modules().size() == 2);
}

TEST_CASE("module: train/eval propagate to every descendant", "[nn][module]") {
  auto m = std::make_shared<Model>(1);
  auto all_modes = [&](bool want) {
    for (auto& [n, mod] : m->named_modules())
      if (mod->is_training() != want) return false;
    return true;
  };
  REQUIRE(all_modes(true));
  m->eval();
  REQUIRE(all_modes(false));
  m->train();
  REQUIRE(all_modes(true));
  m->encoder->eval();
  REQUIRE(m->is_training());
  REQUIRE(!m->encoder->layer->get<Layer>(1)->drop->is_training());
}

TEST_CASE("module: state_dict round trip into a fresh module", "[nn][module]") {
  auto a = std::make_shared<Model>(1);
  auto b = std::make_shared<Model>(2);
  REQUIRE(a->classifier->weight.to_vector() != b->classifier->weight.to_vector());
  const double* storage_before = b->classifier->weight.data();
  auto res = b->load_state_dict(a->state_dict());
  REQUIRE(res.missing_keys.empty());
  REQUIRE(res.unexpected_keys.empty());
  auto sa = a->state_dict(), sb = b->state_dict();
  for (auto& [name, t] : sa) {
    INFO(name);
    REQUIRE(sb.at(name).to_vector() == t.to_vector());
    REQUIRE(sb.at(name).data() != t.data());  // values copied, not storage shared
  }
  // in place: the module's handles (and any optimizer's) still point at the same storage
  REQUIRE(b->classifier->weight.data() == storage_before);
  REQUIRE(b->classifier->weight.requires_grad());
  // a loaded model computes what the original does
  auto x = rnd({2, 4}, 9);
  REQUIRE(a->classifier->forward(x).to_vector() == b->classifier->forward(x).to_vector());
}

TEST_CASE("module: strict load reports every problem and writes nothing", "[nn][module]") {
  auto a = std::make_shared<Model>(1);
  auto b = std::make_shared<Model>(2);
  auto sd = a->state_dict();
  sd.erase("scale");
  sd.erase("encoder.layer.1.attention.key.weight");
  sd["encoder.layer.2.attention.query.bias"] = zeros<double>({4});
  sd["classifier.weight"] = zeros<double>({4, 3});
  const auto before = b->state_dict().at("classifier.bias").clone().to_vector();
  try {
    b->load_state_dict(sd);
    FAIL("load_state_dict accepted a bad state dict");
  } catch (const Error& e) {
    const std::string msg = e.what();
    INFO(msg);
    REQUIRE(msg.find("2 missing [scale, encoder.layer.1.attention.key.weight]") != std::string::npos);
    REQUIRE(msg.find("1 unexpected [encoder.layer.2.attention.query.bias]") != std::string::npos);
    REQUIRE(msg.find("1 shape mismatch [classifier.weight: checkpoint [4, 3] vs model [3, 4]]") != std::string::npos);
  }
  REQUIRE(b->classifier->bias.to_vector() == before);  // nothing written

  // non-strict: missing and unexpected are reported back, but shapes must still agree
  REQUIRE_THROWS_WITH(b->load_state_dict(sd, false), Catch::Contains("shape mismatch") && !Catch::Contains("missing"));
  sd["classifier.weight"] = a->classifier->weight.clone();
  auto res = b->load_state_dict(sd, false);
  REQUIRE(res.missing_keys == std::vector<std::string>{"scale", "encoder.layer.1.attention.key.weight"});
  REQUIRE(res.unexpected_keys == std::vector<std::string>{"encoder.layer.2.attention.query.bias"});
  REQUIRE(b->classifier->weight.to_vector() == a->classifier->weight.to_vector());
  REQUIRE(b->scale.to_vector() == std::vector<double>{1.0});
}

TEST_CASE("linear: PyTorch default initialisation bounds", "[nn][linear]") {
  Generator g(3);
  nn::Linear<double> l(16, 500, true, g);
  REQUIRE(l.weight.shape() == Shape{500, 16});
  REQUIRE(l.bias.shape() == Shape{500});
  for (auto* t : {&l.weight, &l.bias}) {
    auto v = t->to_vector();
    double lo = 1, hi = -1, mean = 0;
    for (double x : v) lo = std::min(lo, x), hi = std::max(hi, x), mean += x / v.size();
    REQUIRE(lo >= -0.25);
    REQUIRE(hi <= 0.25);
    REQUIRE(lo < -0.24);  // the whole range is used
    REQUIRE(hi > 0.24);
    REQUIRE(std::abs(mean) < 0.02);
  }
  Generator g2(3);
  nn::Linear<double> same(16, 500, true, g2);
  REQUIRE(same.weight.to_vector() == l.weight.to_vector());
  nn::Linear<float> nobias(3, 2, false);
  REQUIRE(!nobias.bias.defined());
  REQUIRE(nobias.named_parameters().size() == 1);
  nn::Linear<double> empty_in(0, 2);
  REQUIRE(empty_in.bias.to_vector() == std::vector<double>{0, 0});
  REQUIRE(empty_in.forward(zeros<double>({3, 0})).shape() == Shape{3, 2});
}

TEST_CASE("linear: forward values, shapes and errors", "[nn][linear]") {
  nn::Linear<double> l(3, 2);
  {
    NoGradGuard ng;
    l.weight.copy_(from_vector<double>({1, 2, 3, -1, 0, 1}, {2, 3}));
    l.bias.copy_(from_vector<double>({0.5, -0.5}, {2}));
  }
  require_close(l.forward(from_vector<double>({1, 1, 1, 2, 0, -1}, {2, 3})), {6.5, -0.5, -0.5, -3.5});
  REQUIRE(l(rnd({4, 5, 3}, 1)).shape() == Shape{4, 5, 2});
  REQUIRE(l(rnd({3}, 1)).shape() == Shape{2});
  REQUIRE_THROWS_WITH(l(rnd({2, 4}, 1)), Catch::Contains("Linear(3 -> 2): input of shape [2, 4]"));
}

TEST_CASE("linear and sequential: gradients by finite differences", "[nn][linear][sequential][grad]") {
  Generator g(5);
  auto lin = std::make_shared<nn::Linear<double>>(3, 4, true, g);
  auto x = rnd({5, 3}, 11);
  auto w = rnd({5, 4}, 12);
  require_param_grads(*lin, [&] { return sum(mul(lin->forward(x), w)); });
  // gradient with respect to the input, through the module
  REQUIRE_GRAD([&](const std::vector<TD>& v) { return lin->forward(v[0]); }, rnd({2, 3}, 13));

  auto seq = std::make_shared<nn::Sequential<double>>();
  seq->push_back(std::make_shared<nn::Linear<double>>(3, 5, true, g));
  seq->push_back(std::make_shared<nn::Lambda<double>>([](const TD& t) { return tanh(t); }, "Tanh"));
  seq->push_back(std::make_shared<nn::Linear<double>>(5, 2, false, g));
  REQUIRE(names_of(seq->named_parameters()) == std::vector<std::string>{"0.weight", "0.bias", "2.weight"});
  REQUIRE(seq->size() == 3);
  REQUIRE((*seq)[1]->type_name() == "Tanh");
  auto y = seq->forward(x);
  REQUIRE(y.shape() == Shape{5, 2});
  // the chain equals the layers applied by hand
  auto by_hand = (*seq)[2]->forward(tanh((*seq)[0]->forward(x)));
  REQUIRE(y.to_vector() == by_hand.to_vector());
  auto w2 = rnd({5, 2}, 14);
  require_param_grads(*seq, [&] { return sum(mul(seq->forward(x), w2)); });
  REQUIRE_GRAD([&](const std::vector<TD>& v) { return seq->forward(v[0]); }, rnd({4, 3}, 15));
  REQUIRE_THROWS_WITH((*seq)[3], Catch::Contains("index 3 out of range for 3 layers"));
}

TEST_CASE("module: zero_grad clears every parameter's gradient", "[nn][module]") {
  auto m = std::make_shared<Model>(1);
  sum(m->classifier->forward(rnd({2, 4}, 1))).backward();
  REQUIRE(m->classifier->weight.grad().defined());
  m->zero_grad();
  for (auto& p : m->parameters()) REQUIRE(!p.grad().defined());
}

namespace {
// Host memory posing as a second device, to test that to() rebinds every handle.
struct FakeDeviceAllocator final : Allocator {
  int live = 0;
  void* allocate(size_t bytes, Device) override {
    ++live;
    return std::malloc(std::max<size_t>(bytes, 1));
  }
  void deallocate(void* p, size_t, Device) override {
    --live;
    std::free(p);
  }
  void copy(void* dst, Device, const void* src, Device, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
};
}  // namespace

TEST_CASE("module: to(device) moves parameters, buffers and gradients in place", "[nn][module][device]") {
  auto m = std::make_shared<Model>(1);
  m->to(Device::cpu());  // no-op
  REQUIRE(m->classifier->weight.device().is_cpu());
  if (!detail::cuda_allocator_slot()) {
    const auto before = m->classifier->weight.to_vector();
    REQUIRE_THROWS_WITH(m->to(Device::cuda(0)), Catch::Contains("without the CUDA backend"));
    REQUIRE(m->classifier->weight.device().is_cpu());
    REQUIRE(m->classifier->weight.to_vector() == before);

    FakeDeviceAllocator fake;
    register_cuda_allocator(&fake);
    {
      auto ref = m->state_dict();
      std::map<std::string, std::vector<double>> values;
      for (auto& [n, t] : ref) values[n] = t.to_vector();
      sum(m->classifier->forward(rnd({2, 4}, 1))).backward();
      const auto grad = m->classifier->weight.grad().to_vector();
      Tensor<double> held = m->classifier->weight;  // e.g. an optimizer's handle
      m->to(Device::cuda(0));
      for (auto& [n, t] : m->state_dict()) REQUIRE(t.device() == Device::cuda(0));
      REQUIRE(held.device() == Device::cuda(0));
      REQUIRE(held.grad().device() == Device::cuda(0));
      REQUIRE(held.requires_grad());
      m->to(Device::cpu());
      for (auto& [n, t] : m->state_dict()) REQUIRE(t.to_vector() == values.at(n));
      REQUIRE(held.grad().to_vector() == grad);
      ref.clear();
    }
    REQUIRE(fake.live == 0);
    register_cuda_allocator(nullptr);
  }
}

TEST_CASE("embedding module: init, padding row, lookup, frozen vectors", "[nn][embedding]") {
  Generator g(4);
  nn::Embedding<double> e(50, 8, 3, g);
  REQUIRE(names_of(e.named_parameters()) == std::vector<std::string>{"weight"});
  auto w = e.weight;
  double mean = 0, var = 0;
  for (double v : w.to_vector()) mean += v / 400;
  for (double v : w.to_vector()) var += (v - mean) * (v - mean) / 400;
  REQUIRE(std::abs(mean) < 0.2);
  REQUIRE(std::abs(var - 1.0) < 0.25);
  for (int64_t j = 0; j < 8; ++j) REQUIRE(w.at({3, j}) == 0.0);
  auto ids = from_vector<int64_t>({1, 3, 1, 49}, {2, 2});
  auto out = e(ids);
  REQUIRE(out.shape() == Shape{2, 2, 8});
  for (int64_t j = 0; j < 8; ++j) {
    REQUIRE(out.at({0, 0, j}) == w.at({1, j}));
    REQUIRE(out.at({1, 1, j}) == w.at({49, j}));
  }
  sum(out).backward();
  REQUIRE(e.weight.grad().at({1, 0}) == 2.0);
  REQUIRE(e.weight.grad().at({3, 0}) == 0.0);  // padding gets no gradient
  REQUIRE_THROWS_WITH(nn::Embedding<double>(5, 2, 5), Catch::Contains("padding_idx 5"));

  auto vecs = rnd({4, 3}, 8);
  auto frozen = nn::Embedding<double>::from_pretrained(vecs, true);
  REQUIRE(frozen->weight.to_vector() == vecs.to_vector());
  REQUIRE(frozen->weight.data() != vecs.data());
  REQUIRE(!frozen->weight.requires_grad());
  REQUIRE(!frozen->forward(from_vector<int64_t>({0, 2}, {2})).requires_grad());
  auto tuned = nn::Embedding<double>::from_pretrained(vecs, false, 0);
  REQUIRE(tuned->weight.requires_grad());
  REQUIRE(tuned->padding_idx() == 0);
}

TEST_CASE("dropout module: generator, train and eval", "[nn][dropout]") {
  nn::Dropout<double> d(0.5);
  Generator mine(77), ref(77);
  d.set_generator(&mine);
  auto x = rnd({200}, 3, 1.0, 2.0);
  auto y = d(x);
  auto expect = dropout(x, 0.5, ref, true);
  REQUIRE(y.to_vector() == expect.to_vector());
  int zeros_seen = 0;
  for (double v : y.to_vector()) zeros_seen += v == 0.0;
  REQUIRE(zeros_seen > 60);
  REQUIRE(zeros_seen < 140);
  d.eval();
  REQUIRE(d(x).same(x));
  REQUIRE(mine.offset() == ref.offset());  // eval draws nothing
  d.train();
  d.set_generator(nullptr);
  const uint64_t before = default_generator().offset();
  d(x);
  REQUIRE(default_generator().offset() == before + 200);
  REQUIRE_THROWS_WITH(nn::Dropout<double>(1.5), Catch::Contains("p must be in [0, 1]"));
}

TEST_CASE("layer norm and RMS norm modules: parameters, values, gradients", "[nn][norm]") {
  nn::LayerNorm<double> ln(4, 1e-5);
  REQUIRE(names_of(ln.named_parameters()) == std::vector<std::string>{"weight", "bias"});
  REQUIRE(ln.weight.to_vector() == std::vector<double>(4, 1.0));
  REQUIRE(ln.bias.to_vector() == std::vector<double>(4, 0.0));
  // mean 2.5, biased variance 1.25
  const double r = 1.0 / std::sqrt(1.25 + 1e-5);
  require_close(ln(from_vector<double>({1, 2, 3, 4}, {1, 4})), {-1.5 * r, -0.5 * r, 0.5 * r, 1.5 * r});
  {
    NoGradGuard ng;
    ln.weight.copy_(from_vector<double>({2, 2, 1, 1}, {4}));
    ln.bias.copy_(from_vector<double>({0, 1, 0, -1}, {4}));
  }
  require_close(ln(from_vector<double>({1, 2, 3, 4}, {4})), {-3 * r, 1 - r, 0.5 * r, 1.5 * r - 1});
  auto x = rnd({3, 2, 4}, 21);
  auto w = rnd({3, 2, 4}, 22);
  require_param_grads(ln, [&] { return sum(mul(ln(x), w)); });
  REQUIRE_THROWS_WITH(ln(rnd({2, 3}, 1)), Catch::Contains("LayerNorm(4): input of shape [2, 3]"));

  nn::LayerNorm<float> plain(3, 1e-5, false);
  REQUIRE(plain.named_parameters().empty());
  auto y = plain(from_vector<float>({1, 2, 3}, {3})).to_vector();
  REQUIRE(std::abs(y[0] + std::sqrt(1.5f)) < 1e-4f);

  nn::RMSNorm<double> rms(2, 1e-6);
  REQUIRE(names_of(rms.named_parameters()) == std::vector<std::string>{"weight"});
  const double q = 1.0 / std::sqrt(12.5 + 1e-6);  // mean of 3^2 and 4^2
  require_close(rms(from_vector<double>({3, 4}, {1, 2})), {3 * q, 4 * q});
  auto x2 = rnd({5, 2}, 23);
  auto w2 = rnd({5, 2}, 24);
  {
    NoGradGuard ng;
    rms.weight.copy_(from_vector<double>({0.5, -2}, {2}));
  }
  require_param_grads(rms, [&] { return sum(mul(rms(x2), w2)); });
  REQUIRE_GRAD([&](const std::vector<TD>& v) { return rms(v[0]); }, rnd({3, 2}, 25));
}
