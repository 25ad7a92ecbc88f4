// The BP-Transformer graph attention kernels (kernels/graph_attention.cu), emulated on the host
// (cuda_shim.hpp) behind the op's own CUDA branch (detail::graph_attention_cuda, which uploads
// the graph and groups the edges by key and by position id), against the CPU op: output, every
// gradient and the dropout counters, float and double, over the configurations of the CUDA test
// (tests/cuda/graph_attention_cases.hpp). Tolerances relative to the largest reference value:
// 1e-5 (float), 1e-12 (double).
//   check_graph [quick | case index]
// quick: the cases whose graphs have at most 300 nodes and heads of at most 3 x 20 values
// (every kernel path but the wide head slices; the full list takes several minutes).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "graph_attention_cases.hpp"
#include "host_backend.hpp"

using namespace txtcls;

namespace {

// The op's CUDA path on host tensors: begin_graph_attention checks and reserves, as the op does.
auto emulated = [](const auto& q, const auto& k, const auto& v, const GraphCSR& graph, const auto& rel_k,
                   const GraphAttentionOptions& opt, Generator& gen) {
  const auto call = detail::begin_graph_attention(q, k, v, graph, rel_k, opt, gen, "graph_attention");
  return detail::graph_attention_cuda(q, k, v, graph, rel_k, call, "graph_attention");
};

template <class T>
bool check(const gct::Case& c) {
  const double tol = sizeof(T) == 4 ? 1e-5 : 1e-12;
  const gct::Run<T> e = gct::run_case<T>(c, Device::cpu(), emulated), f = gct::run_case<T>(c, Device::cpu(), gct::graph_op);
  std::string bad = e.next_draw == f.next_draw && f.next_draw == gct::expected_next_draw(c) ? "" : " dropout-counters";
  double worst = ct::rel_err(e.out, f.out);
  if (worst > tol) bad += " out";
  const char* names[] = {"dq", "dk", "dv", "drel"};
  const Tensor<T>* ge[] = {&e.q, &e.k, &e.v, &e.r};
  const Tensor<T>* gf[] = {&f.q, &f.k, &f.v, &f.r};
  for (int i = 0; i < 4; ++i) {
    if (!gf[i]->defined() || !c.s.needs[i]) continue;
    const double ei = ct::rel_err(ge[i]->grad(), gf[i]->grad());
    if (ei > tol) bad += std::string(" ") + names[i];
    worst = std::max(worst, ei);
  }
  std::printf("%s %-62s %s max rel err %.2e%s\n", bad.empty() ? "ok  " : "FAIL", c.describe().c_str(),
              sizeof(T) == 4 ? "float " : "double", worst, bad.c_str());
  std::fflush(stdout);
  return bad.empty();
}

bool quick(const gct::Case& c) { return c.graph.num_rows() <= 300 && c.s.H * c.s.D <= 60; }

}  // namespace

int main(int argc, char** argv) {
  std::vector<gct::Case> cases = gct::bpt_cases();
  for (gct::Case& c : gct::random_cases(cuda::kGraphRelRun)) cases.push_back(std::move(c));
  const bool only_quick = argc > 1 && std::strcmp(argv[1], "quick") == 0;
  const int only = argc > 1 && !only_quick ? std::atoi(argv[1]) : -1;
  int failed = 0, count = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    if ((only >= 0 && int(i) != only) || (only_quick && !quick(cases[i]))) continue;
    failed += !check<float>(cases[i]);
    failed += !check<double>(cases[i]);
    count += 2;
  }
  std::printf("%d of %d configurations passed%s\n", count - failed, count, failed ? ": FAILURES" : "");
  return failed ? 1 : 0;
}
