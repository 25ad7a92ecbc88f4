// The fused XLNet relative attention kernels (kernels/relative_attention.cu), emulated on the host
// (cuda_shim.hpp) behind the op's own CUDA branch (detail::relative_attention_cuda, which folds
// the kernels' partial gradients), against the CPU fused op and the reference composition, over
// the CUDA test's own configurations and inputs (tests/cuda/relative_attention_cases.hpp): output,
// probabilities, all eight gradients and the dropout counters, double and float. Tolerances
// relative to the largest reference value: 1e-12 (double), 1e-5 (float); the segment gradients,
// zero in exact arithmetic where a row's keys share one segment, on the scale of dq (as the test).
//   check_relative [case index]
#include <cstdio>
#include <cstdlib>
#include <string>

#include "host_backend.hpp"
#include "relative_attention_cases.hpp"

using namespace txtcls;

namespace {

// The op's CUDA branch on host tensors, after the op's own checks.
constexpr auto emulated = [](const auto& q, const auto& k, const auto& v, const auto& kr, const auto& rw,
                             const auto& rr, const auto& o) {
  const char* op = "relative_attention";
  return detail::relative_attention_cuda(q, k, v, kr, rw, rr, o,
                                         detail::check_relative_attention(q, k, v, kr, rw, rr, o, op, true), op);
};

// Emulated CUDA against the CPU fused op and the reference; names the tensors past the tolerance.
template <class T>
bool check(const ct::Case& c, uint64_t seed) {
  const double tol = sizeof(T) == 4 ? 1e-5 : 1e-12;
  const ct::Inputs in = ct::make_inputs(c, seed);
  const Device cpu = Device::cpu();
  const ct::Run<T> e = ct::run<T>(c, in, cpu, emulated), f = ct::run<T>(c, in, cpu, ct::fused_op),
                   r = ct::run<T>(c, in, cpu, ct::reference_op);
  std::string bad = e.counters == ct::expected_counters(c) ? "" : " dropout-counters";
  double w = 0;
  for (const ct::Run<T>* want : {&f, &r})
    w = std::max({w, ct::rel_err(e.out, want->out), ct::rel_err(e.probs, want->probs)});
  if (w > tol) bad += " out/probs";
  double floor = 0;
  for (T g : f.grads[0].to_vector()) floor = std::max(floor, std::abs(double(g)));
  for (size_t i = 0; i < e.grads.size(); ++i) {
    const double fl = i >= 6 ? floor : 0.0;
    const double ei = std::max(ct::rel_err(e.grads[i], f.grads[i], fl), ct::rel_err(e.grads[i], r.grads[i], fl));
    if (ei > tol) bad += std::string(" ") + ct::kGradNames[i];
    w = std::max(w, ei);
  }
  std::printf("%s %-62s %s max rel err %.2e%s\n", bad.empty() ? "ok  " : "FAIL", c.name.c_str(),
              sizeof(T) == 4 ? "float " : "double", w, bad.c_str());
  std::fflush(stdout);
  return bad.empty();
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<ct::Case> cases = ct::cases();
  const int only = argc > 1 ? std::atoi(argv[1]) : -1;
  int failed = 0, count = 0;
  uint64_t seed = 300;  // the test's seeds: 300 + 20 (i + 1)
  for (size_t i = 0; i < cases.size(); ++i) {
    seed += 20;
    if (only >= 0 && int(i) != only) continue;
    failed += !check<double>(cases[i], seed);
    failed += !check<float>(cases[i], seed);
    count += 2;
  }
  std::printf("%d of %d configurations passed%s (largest block: %d bytes of shared memory)\n", count - failed, count,
              failed ? ": FAILURES" : "", g_max_smem);
  return failed ? 1 : 0;
}
