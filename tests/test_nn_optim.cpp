#include <limits>

#include "test_util.hpp"
#include "txtcls/nn/linear.hpp"
#include "txtcls/train/clip.hpp"
#include "txtcls/train/ema.hpp"
#include "txtcls/train/optim.hpp"
#include "txtcls/train/schedule.hpp"

using namespace txtcls;
using namespace tt;
using train::AdamOptions;
using train::SGDOptions;

namespace {

// The gradients fed at steps 1, 2, 3 to a parameter starting at {1, -2, 3}. The reference
// trajectories below were produced by PyTorch 2.x in float64:
//
//   grads = [[0.5, -1.0, 2.0], [1.0, 0.25, -0.5], [-0.3, 0.7, 0.1]]
//   def run(make):
//       p = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
//       opt = make([p]); out = []
//       for g in grads:
//           p.grad = torch.tensor(g, dtype=torch.float64); opt.step(); out.append(p.tolist())
//       return out
//   run(lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=0.01))                    # sgd_wd
//   run(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.5))          # sgd_damp
//   run(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1))
//   run(lambda ps: torch.optim.Adam(ps, lr=0.01))
//   run(lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1))
//   run(lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1))
//   run(lambda ps: torch.optim.AdamW(ps, lr=0.05, betas=(0.3, 0.9), weight_decay=0.5))
const std::vector<std::vector<double>> kGrads = {{0.5, -1.0, 2.0}, {1.0, 0.25, -0.5}, {-0.3, 0.7, 0.1}};
using Trajectory = std::vector<std::vector<double>>;
const Trajectory kSgdWd = {{0.949, -1.898, 2.797},
                           {0.848051, -1.9211019999999999, 2.8442030000000003},
                           {0.877202949, -1.9891808979999999, 2.831358797}};
const Trajectory kSgdDamp = {{0.95, -1.9, 2.8}, {0.855, -1.8225, 2.645}, {0.7845, -1.78775, 2.5005}};
const Trajectory kSgdNesterov = {{0.886, -1.772, 2.563},
                                 {0.630566, -1.688632, 2.423003},
                                 {0.543668646, -1.7079647919999998, 2.210035643}};
const Trajectory kAdam = {{0.9900000002, -1.9900000001, 2.99000000005},
                          {0.9803481800638509, -1.985305318452346, 2.9853053183701337},
                          {0.9747989723668333, -1.9858953085401871, 2.981370779810485}};
const Trajectory kAdamWd = {{0.9900000166666388, -1.9900000083333265, 2.990000004347824},
                            {0.9801601667357223, -1.983976456608548, 2.984350697875698},
                            {0.9741885604366476, -1.9827236709721516, 2.9790432145637364}};
const Trajectory kAdamW = {{0.9890000002, -1.9880000001, 2.98700000005},
                           {0.978359180063651, -1.981317318452246, 2.9793183183700838},
                           {0.9718316131865697, -1.979925991221635, 2.972404461492065}};
const Trajectory kAdamWLowBeta = {{0.9250000009999999, -1.9000000005, 2.87500000025},
                                  {0.8467900150118878, -1.8497980767819457, 2.800423076519215},
                                  {0.8231800773343937, -1.8383836914586178, 2.7262829204652737}};

template <class T>
Tensor<T> start_param() {
  return from_vector<T>({1, -2, 3}, {3}).set_requires_grad();
}

template <class T, class Opt>
void require_trajectory(Tensor<T> p, Opt& opt, const Trajectory& expect, double tol) {
  for (size_t s = 0; s < kGrads.size(); ++s) {
    std::vector<T> g(kGrads[s].begin(), kGrads[s].end());
    p.set_grad(from_vector<T>(g, {3}));
    opt.step();
    INFO("step " << s + 1);
    require_close(p, std::vector<T>(expect[s].begin(), expect[s].end()), tol);
  }
}

}  // namespace

TEST_CASE("SGD matches torch.optim.SGD", "[nn][optim]") {
  {
    auto p = start_param<double>();
    train::SGD<double> opt(std::vector<TD>{p}, {.lr = 0.1, .weight_decay = 0.01});
    require_trajectory(p, opt, kSgdWd, 1e-14);
    REQUIRE(opt.state_dict().empty());  // plain SGD keeps no state
  }
  {
    auto p = start_param<double>();
    train::SGD<double> opt(std::vector<TD>{p}, {.lr = 0.1, .momentum = 0.9, .dampening = 0.5});
    require_trajectory(p, opt, kSgdDamp, 1e-14);
  }
  {
    auto p = start_param<double>();
    train::SGD<double> opt(std::vector<TD>{p}, {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.1, .nesterov = true});
    require_trajectory(p, opt, kSgdNesterov, 1e-14);
  }
  // closed form of the first Nesterov step: the buffer is d = g + wd p, the update (1 + m) d
  auto p = from_vector<double>({2.0}, {1}).set_requires_grad();
  train::SGD<double> opt(std::vector<TD>{p}, {.lr = 0.5, .momentum = 0.5, .weight_decay = 0.25, .nesterov = true});
  p.set_grad(from_vector<double>({1.0}, {1}));
  opt.step();
  require_close(p, {2.0 - 0.5 * 1.5 * (1.0 + 0.25 * 2.0)});

  std::vector<TD> one{start_param<double>()};
  REQUIRE_THROWS_WITH(train::SGD<double>(one, {.lr = 0.1, .nesterov = true}), Catch::Contains("Nesterov"));
  REQUIRE_THROWS_WITH(train::SGD<double>(one, {.lr = -1}), Catch::Contains("invalid learning rate -1"));
  REQUIRE_THROWS_WITH(train::SGD<double>(std::vector<TD>{one[0], one[0]}, {}), Catch::Contains("same tensor"));
}

TEST_CASE("Adam and AdamW match torch.optim", "[nn][optim]") {
  {
    auto p = start_param<double>();
    train::Adam<double> opt(std::vector<TD>{p}, {.lr = 0.01});
    require_trajectory(p, opt, kAdam, 1e-14);
    REQUIRE(opt.step_count(0) == 3);
  }
  {
    auto p = start_param<double>();
    train::Adam<double> opt(std::vector<TD>{p}, {.lr = 0.01, .beta1 = 0.8, .beta2 = 0.95, .eps = 1e-6, .weight_decay = 0.1});
    require_trajectory(p, opt, kAdamWd, 1e-14);
  }
  {
    auto p = start_param<double>();
    train::AdamW<double> opt(std::vector<TD>{p}, {.lr = 0.01, .weight_decay = 0.1});
    REQUIRE(opt.type_name() == "AdamW");
    require_trajectory(p, opt, kAdamW, 1e-14);
  }
  {
    auto p = start_param<double>();  // 1 - beta1 >= 0.5 takes torch's other lerp formula
    train::AdamW<double> opt(std::vector<TD>{p}, {.lr = 0.05, .beta1 = 0.3, .beta2 = 0.9, .weight_decay = 0.5});
    require_trajectory(p, opt, kAdamWLowBeta, 1e-14);
  }
  {
    auto p = start_param<float>();  // float follows the same path
    train::AdamW<float> opt(std::vector<TF>{p}, {.lr = 0.01, .weight_decay = 0.1});
    require_trajectory(p, opt, kAdamW, 2e-7);
  }
  REQUIRE(train::AdamW<double>::defaults().weight_decay == 0.01);

  // closed form of Adam's first step: m / (1 - b1) = g and sqrt(v / (1 - b2)) = |g|, so
  // p1 = p0 - lr g / (|g| + eps) whatever the betas
  auto p = from_vector<double>({0.5, 0.5}, {2}).set_requires_grad();
  train::Adam<double> opt(std::vector<TD>{p}, {.lr = 0.1, .beta1 = 0.7, .beta2 = 0.6, .eps = 0.5});
  p.set_grad(from_vector<double>({2.0, -0.25}, {2}));
  opt.step();
  require_close(p, {0.5 - 0.1 * 2.0 / 2.5, 0.5 + 0.1 * 0.25 / 0.75}, 1e-15);
  REQUIRE_THROWS_WITH(train::Adam<double>(std::vector<TD>{p}, {.beta2 = 1.0}), Catch::Contains("Adam: betas"));
}

TEST_CASE("optimizers: skipped parameters, weight-decay exclusion, zero_grad", "[nn][optim]") {
  auto a = from_vector<double>({1, 1}, {2}).set_requires_grad();
  auto b = from_vector<double>({1, 1}, {2}).set_requires_grad();
  nn::NamedTensors<double> ps = {{"layer.weight", a}, {"layer.bias", b}};
  train::AdamW<double> opt(ps, {.lr = 0.1, .weight_decay = 0.5});
  opt.exclude_from_weight_decay([](const std::string& n) { return n.ends_with(".bias"); });
  REQUIRE(opt.weight_decay_applies(0));
  REQUIRE(!opt.weight_decay_applies(1));
  a.set_grad(zeros<double>({2}));
  opt.step();  // b has no gradient: untouched, and no state created for it
  require_close(a, {0.95, 0.95});  // zero gradient: only the decoupled decay acts
  require_close(b, {1, 1});
  auto sd = opt.state_dict();
  REQUIRE(sd.count("layer.weight.exp_avg"));
  REQUIRE(!sd.count("layer.bias.exp_avg"));
  REQUIRE(opt.step_count(1) == 0);
  b.set_grad(zeros<double>({2}));
  opt.step();
  require_close(b, {1, 1});  // excluded from decay
  opt.zero_grad();
  REQUIRE(!a.grad().defined());
  REQUIRE(!b.grad().defined());
  b.set_grad(zeros<double>({3}));
  REQUIRE_THROWS_WITH(opt.step(), Catch::Contains("gradient of 'layer.bias' has shape [3], parameter [2]"));
}

TEST_CASE("optimizers: state round trip continues bit for bit", "[nn][optim]") {
  // A small least-squares problem, so gradients depend on the weights.
  auto x = rnd({8, 3}, 31), y = rnd({8, 2}, 32);
  auto run_steps = [&](nn::Linear<float>& model, train::Optimizer<float>& opt, int n) {
    auto xf = cast<float>(x), yf = cast<float>(y);
    for (int i = 0; i < n; ++i) {
      opt.zero_grad();
      auto d = sub(model(xf), yf);
      mean(mul(d, d)).backward();
      opt.step();
    }
  };
  auto check = [&](auto make) {
    Generator g(9);
    nn::Linear<float> m1(3, 2, true, g);
    auto o1 = make(m1);
    run_steps(m1, *o1, 3);
    // checkpoint: model and optimizer state, then a fresh model and optimizer resume from it
    auto model_sd = m1.state_dict();
    nn::StateDict<float> model_copy;
    for (auto& [n, t] : model_sd) model_copy[n] = t.clone();
    auto opt_sd = o1->state_dict();
    Generator g2(123);
    nn::Linear<float> m2(3, 2, true, g2);
    m2.load_state_dict(model_copy);
    auto o2 = make(m2);
    o2->load_state_dict(opt_sd);
    run_steps(m1, *o1, 4);
    run_steps(m2, *o2, 4);
    REQUIRE(m1.weight.to_vector() == m2.weight.to_vector());
    REQUIRE(m1.bias.to_vector() == m2.bias.to_vector());
    // and without the optimizer state the runs differ (the test can fail)
    nn::Linear<float> m3(3, 2, true, g2);
    m3.load_state_dict(model_copy);
    auto o3 = make(m3);
    run_steps(m3, *o3, 4);
    REQUIRE(m3.weight.to_vector() != m1.weight.to_vector());
  };
  check([](nn::Linear<float>& m) {
    return std::make_unique<train::Adam<float>>(m.named_parameters(), AdamOptions{.lr = 0.05, .weight_decay = 0.01});
  });
  check([](nn::Linear<float>& m) { return std::make_unique<train::AdamW<float>>(m.named_parameters(), AdamOptions{.lr = 0.05}); });
  check([](nn::Linear<float>& m) {
    return std::make_unique<train::SGD<float>>(m.named_parameters(), SGDOptions{.lr = 0.1, .momentum = 0.9, .nesterov = true});
  });
}

TEST_CASE("optimizers: load_state_dict reports every problem", "[nn][optim]") {
  auto w = rnd({2, 3}, 1).set_requires_grad();
  auto b = rnd({2}, 2).set_requires_grad();
  train::Adam<double> opt(nn::NamedTensors<double>{{"w", w}, {"b", b}}, {});
  w.set_grad(ones<double>({2, 3}));
  b.set_grad(ones<double>({2}));
  opt.step();
  auto sd = opt.state_dict();
  REQUIRE(sd.size() == 6);
  REQUIRE(sd.at("w.step").item() == 1.0);
  REQUIRE(sd.at("w.exp_avg").shape() == Shape{2, 3});
  auto bad = sd;
  bad.erase("b.exp_avg_sq");
  bad["w.exp_avg"] = zeros<double>({3, 2});
  bad["v.exp_avg"] = zeros<double>({1});
  bad["w.momentum"] = zeros<double>({2, 3});
  bad["w.step"] = scalar<double>(1.5);
  try {
    opt.load_state_dict(bad);
    FAIL("accepted a bad optimizer state");
  } catch (const Error& e) {
    const std::string msg = e.what();
    INFO(msg);
    REQUIRE(msg.find("Adam.load_state_dict: 5 problem(s)") != std::string::npos);
    REQUIRE(msg.find("unexpected 'v.exp_avg'") != std::string::npos);
    REQUIRE(msg.find("unexpected 'w.momentum'") != std::string::npos);
    REQUIRE(msg.find("'w.exp_avg': checkpoint [3, 2] vs parameter [2, 3]") != std::string::npos);
    REQUIRE(msg.find("'w.step' must be one non-negative integer") != std::string::npos);
    REQUIRE(msg.find("incomplete state for 'b' (missing exp_avg_sq)") != std::string::npos);
  }
  REQUIRE(opt.step_count(0) == 1);  // unchanged by the failed load
  opt.load_state_dict({});          // an empty state: both parameters start afresh
  REQUIRE(opt.step_count(0) == 0);
  REQUIRE(opt.state_dict().empty());
}

TEST_CASE("clip_grad_norm matches torch.nn.utils.clip_grad_norm_", "[nn][optim][clip]") {
  // a.grad = [3, 4], b.grad = [[1, -2], [0.5, 12]];
  // torch.nn.utils.clip_grad_norm_([a, b], max_norm, norm_type) for the rows below (float64)
  struct Case {
    double norm_type, max_norm, total;
    std::vector<double> ga, gb;
  };
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<Case> cases = {
      {2.0, 1.0, 13.200378782444085, {0.22726618850692965, 0.3030215846759062},
       {0.07575539616897654, -0.1515107923379531, 0.03787769808448827, 0.9090647540277186}},
      {1.0, 5.0, 22.5, {0.6666666370370384, 0.8888888493827178},
       {0.22222221234567946, -0.4444444246913589, 0.11111110617283973, 2.6666665481481537}},
      {inf, 2.0, 12.0, {0.4999999583333369, 0.6666666111111158},
       {0.16666665277777895, -0.3333333055555579, 0.08333332638888948, 1.9999998333333475}},
      {3.0, 100.0, 12.227433116271866, {3, 4}, {1, -2, 0.5, 12}},
  };
  for (auto& c : cases) {
    INFO("norm_type " << c.norm_type << " max_norm " << c.max_norm);
    auto a = zeros<double>({2}).set_requires_grad(), b = zeros<double>({2, 2}).set_requires_grad();
    auto none = zeros<double>({5}).set_requires_grad();  // no gradient: ignored
    a.set_grad(from_vector<double>({3, 4}, {2}));
    b.set_grad(from_vector<double>({1, -2, 0.5, 12}, {2, 2}));
    const double total = train::clip_grad_norm(std::vector<TD>{a, none, b}, c.max_norm, c.norm_type);
    REQUIRE(std::abs(total - c.total) <= 1e-13 * c.total);
    require_close(a.grad(), c.ga, 1e-14);
    require_close(b.grad(), c.gb, 1e-14);
  }
  // a parameter listed twice (tied) counts once
  auto t = zeros<double>({2}).set_requires_grad();
  t.set_grad(from_vector<double>({3, 4}, {2}));
  REQUIRE(train::clip_grad_norm(std::vector<TD>{t, t}, 1.0) == 5.0);
  require_close(t.grad(), {3 / (5 + 1e-6), 4 / (5 + 1e-6)}, 1e-15);
  REQUIRE(train::clip_grad_norm(std::vector<TD>{zeros<double>({2})}, 1.0) == 0.0);
  REQUIRE_THROWS_WITH(train::clip_grad_norm(std::vector<TD>{t}, 1.0, 0.0), Catch::Contains("norm_type"));
}

TEST_CASE("learning-rate schedules at specific steps", "[nn][optim][schedule]") {
  // Reference: transformers' lambdas under torch.optim.lr_scheduler.LambdaLR with base lr 0.5,
  // the lr read after construction and after each of 12 scheduler steps.
  const std::vector<double> lin = {0.0, 0.16666666666666666, 0.3333333333333333, 0.5, 0.42857142857142855,
                                   0.35714285714285715, 0.2857142857142857, 0.21428571428571427, 0.14285714285714285,
                                   0.07142857142857142, 0.0, 0.0, 0.0};
  const std::vector<double> cos = {0.0, 0.16666666666666666, 0.3333333333333333, 0.5, 0.47524221697560476,
                                   0.4058724504646834, 0.3056302334890786, 0.19436976651092142, 0.09412754953531663,
                                   0.02475778302439524, 0.0, 0.024757783024395214, 0.09412754953531657};
  const std::vector<double> cos_full = {0.0, 0.25, 0.5, 0.42677669529663687, 0.25, 0.07322330470336313, 0.0,
                                        0.07322330470336308, 0.24999999999999994, 0.42677669529663687, 0.5,
                                        0.4267766952966369, 0.25000000000000006};
  auto check = [](train::LrLambda f, const std::vector<double>& expect) {
    auto p = zeros<double>({1}).set_requires_grad();
    train::SGD<double> opt(std::vector<TD>{p}, {.lr = 0.5});
    train::LambdaLR<double> sched(opt, f);
    for (size_t s = 0; s < expect.size(); ++s) {
      INFO("step " << s);
      REQUIRE(std::abs(opt.lr() - expect[s]) <= 1e-15);
      REQUIRE(sched.last_step() == static_cast<int64_t>(s));
      opt.step();
      sched.step();
    }
    sched.set_last_step(4);  // resume
    REQUIRE(std::abs(opt.lr() - expect[4]) <= 1e-15);
    REQUIRE(sched.base_lr() == 0.5);
  };
  check(train::linear_schedule_with_warmup(3, 10), lin);
  check(train::cosine_schedule_with_warmup(3, 10), cos);
  check(train::cosine_schedule_with_warmup(2, 10, 1.0), cos_full);
  auto c = train::constant_schedule();
  REQUIRE(c(0) == 1.0);
  REQUIRE(c(1000) == 1.0);
  auto cw = train::constant_schedule_with_warmup(4);
  REQUIRE(cw(0) == 0.0);
  REQUIRE(cw(1) == 0.25);
  REQUIRE(cw(4) == 1.0);
  REQUIRE(cw(99) == 1.0);
  auto nowarm = train::linear_schedule_with_warmup(0, 4);
  REQUIRE(nowarm(0) == 1.0);
  REQUIRE(nowarm(1) == 0.75);
}

TEST_CASE("EMA: hedwig's temporal averaging, values after a few steps", "[nn][optim][ema]") {
  // hedwig RegLSTM, beta 0.99: avg starts as a copy of the weights; after each step
  // avg = 0.99 avg + 0.01 w; evaluation uses avg / (1 - 0.99^steps). For w0 = [1, 2],
  // w1 = [2, 0], w2 = [4, -2], w3 = [3, 1] (values from running its update in torch, float64):
  //   1: avg [1.01, 1.98]        corrected [100.99999999999991, 197.99999999999983]
  //   2: avg [1.0399, 1.9402]    corrected [52.256281407035104, 97.49748743718578]
  //   3: avg [1.059501, 1.930798] corrected [35.672233258139485, 65.00784485370868]
  auto w = from_vector<double>({1, 2}, {2}).set_requires_grad();
  train::Ema<double> ema(nn::NamedTensors<double>{{"w", w}}, 0.99);
  const std::vector<std::vector<double>> iterates = {{2, 0}, {4, -2}, {3, 1}};
  const std::vector<std::vector<double>> corrected = {{100.99999999999991, 197.99999999999983},
                                                      {52.256281407035104, 97.49748743718578},
                                                      {35.672233258139485, 65.00784485370868}};
  for (size_t s = 0; s < iterates.size(); ++s) {
    {
      NoGradGuard ng;
      w.copy_(from_vector<double>(iterates[s], {2}));
    }
    ema.update();
    INFO("step " << s + 1);
    REQUIRE(ema.steps() == static_cast<int64_t>(s) + 1);
    require_close(ema.averaged(0), corrected[s], 1e-13);
    {
      auto scope = ema.scope();  // evaluation with the averaged weights
      REQUIRE(ema.applied());
      require_close(w, corrected[s], 1e-13);
      REQUIRE_THROWS_WITH(ema.update(), Catch::Contains("restore() first"));
    }
    REQUIRE(!ema.applied());
    REQUIRE(w.to_vector() == iterates[s]);  // raw weights back, exactly
  }

  // EmaStart::Zeros: the correction is exact, a normalised weighted mean of the iterates:
  // after w1, w2 the average is (0.99 w1 + w2) / 1.99.
  auto v = from_vector<double>({1, 2}, {2}).set_requires_grad();
  train::Ema<double> ez(nn::NamedTensors<double>{{"v", v}}, 0.99, train::EmaStart::Zeros);
  require_close(ez.averaged(0), {1, 2});  // before any update: the weights themselves
  for (size_t s = 0; s < 2; ++s) {
    NoGradGuard ng;
    v.copy_(from_vector<double>(iterates[s], {2}));
    ez.update();
  }
  require_close(ez.averaged(0), {(0.99 * 2 + 4) / 1.99, (0.99 * 0 - 2) / 1.99}, 1e-13);
  ez.apply();
  REQUIRE_THROWS_WITH(ez.apply(), Catch::Contains("already swapped in"));
  ez.restore();
  REQUIRE_THROWS_WITH(ez.restore(), Catch::Contains("not swapped in"));
}

TEST_CASE("EMA: state round trip and float parameters of a module", "[nn][optim][ema]") {
  Generator g(4);
  nn::Linear<float> m(3, 2, true, g);
  train::Ema<float> e1(m, 0.99);
  auto step = [&](float shift) {
    NoGradGuard ng;
    for (auto& p : m.parameters()) {
      auto d = p.data();
      for (int64_t i = 0; i < p.numel(); ++i) d[i] += shift * static_cast<float>(i + 1);
    }
  };
  for (int i = 0; i < 3; ++i) step(0.1f), e1.update();
  auto sd = e1.state_dict();
  REQUIRE(sd.size() == 3);
  REQUIRE(sd.at("steps").item() == 3.0f);
  REQUIRE(sd.count("avg.weight"));
  train::Ema<float> e2(m, 0.99);
  e2.load_state_dict(sd);
  REQUIRE(e2.steps() == 3);
  step(-0.2f);
  e1.update();
  e2.update();
  REQUIRE(e1.averaged(0).to_vector() == e2.averaged(0).to_vector());
  REQUIRE(e1.averaged(1).to_vector() == e2.averaged(1).to_vector());

  auto bad = sd;
  bad.erase("avg.bias");
  bad["avg.other"] = zeros<float>({1});
  bad["avg.weight"] = zeros<float>({3, 2});
  REQUIRE_THROWS_WITH(e2.load_state_dict(bad),
                      Catch::Contains("3 problem(s)") && Catch::Contains("unexpected 'avg.other'") &&
                          Catch::Contains("'avg.weight': checkpoint [3, 2] vs parameter [2, 3]") &&
                          Catch::Contains("missing 'avg.bias'"));
  REQUIRE_THROWS_WITH(train::Ema<float>(m, 1.0), Catch::Contains("beta must lie in (0, 1)"));
}
