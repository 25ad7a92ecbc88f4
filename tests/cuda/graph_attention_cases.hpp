#pragma once
// The configurations of the CUDA graph attention tests (test_cuda_graph_attention.cpp), free of
// Catch2 so that the host emulation of kernels/graph_attention.cu (tools/cuda_emulate) runs the
// very same ones: BPT graphs (stray multi-edges included, roots of degree n > 32, keys reached by
// many queries), a random graph with empty rows, multi-edges and Nq != Nk, position ids shared by
// over 512 edges (the d rel_k sums in several runs), a graph without edges; no / shared / per-head
// position tables, dropout, head dims in one, two and four register slices and beyond (D = 130),
// partial gradient needs.
#include <algorithm>
#include <array>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "test_common.hpp"
#include "txtcls/nn/bpt_graph.hpp"
#include "txtcls/ops/graph_attention.hpp"

namespace gct {

using namespace txtcls;

enum class Rel { none, shared, per_head };

struct Setup {
  int64_t H = 1, D = 1;
  Rel rel = Rel::none;
  double p = 0;                               // dropout
  std::array<bool, 4> needs{true, true, true, true};  // gradients wanted: q, k, v, rel_k
  std::optional<double> scale;
};

inline Setup setup(int64_t H, int64_t D, Rel rel, double p, std::array<bool, 4> needs = {true, true, true, true},
                   std::optional<double> scale = std::nullopt) {
  return Setup{H, D, rel, p, needs, scale};
}

struct Case {
  std::string graph_name;
  GraphCSR graph;
  int64_t Nk = 0;
  Setup s;
  uint64_t seed = 0;
  std::string describe() const {
    std::ostringstream o;
    o << graph_name << ": Nq " << graph.num_rows() << " Nk " << Nk << " E " << graph.num_edges() << " H " << s.H
      << " D " << s.D << " rel " << static_cast<int>(s.rel) << " p " << s.p;
    return o.str();
  }
};

// Random rows of 0 .. max_deg edges, keys with repeats, position ids in [0, ids); row 3 has 70
// edges (three chunks of 32) and rows 0 and 5 none.
inline GraphCSR random_graph(int64_t Nq, int64_t Nk, int64_t max_deg, uint64_t seed, uint64_t ids = 9) {
  std::mt19937_64 rng(seed);
  GraphCSR g;
  for (int64_t i = 0; i < Nq; ++i) {
    int64_t deg = static_cast<int64_t>(rng() % static_cast<uint64_t>(max_deg + 1));
    if (i == 0 || i == 5) deg = 0;
    if (i == 3) deg = 70;
    for (int64_t t = 0; t < deg; ++t) {
      g.indices.push_back(static_cast<int64_t>(rng() % static_cast<uint64_t>(Nk)));
      g.rel.push_back(static_cast<int64_t>(rng() % ids));
    }
    if (i == 3) g.indices[g.indices.size() - 1] = g.indices[g.indices.size() - 2];  // a multi-edge for sure
    g.indptr.push_back(static_cast<int64_t>(g.indices.size()));
  }
  return g;
}

// BPT graphs for n in {1, 7, 31, 130} and k in {1, 2, 4}, every table and dropout, two head
// shapes; then a batch of two sequences with left contexts only and head dims past one slice of
// 128, odd, and 1.
inline std::vector<Case> bpt_cases() {
  std::vector<Case> out;
  uint64_t seed = 900;
  for (int64_t n : {1, 7, 31, 130})
    for (int64_t k : {1, 2, 4}) {
      nn::BPTGraphOptions bo;
      bo.k = k;
      const nn::BPTGraph bg = nn::build_bpt_graph({n}, bo);
      const std::string name = "BPT n " + std::to_string(n) + " k " + std::to_string(k);
      for (Rel rel : {Rel::none, Rel::shared, Rel::per_head})
        for (auto [H, D] : std::vector<std::pair<int64_t, int64_t>>{{3, 20}, {8, 64}})
          for (double p : {0.0, 0.3}) out.push_back({name, bg.csr, bg.num_nodes(), setup(H, D, rel, p), seed += 10});
    }
  nn::BPTGraphOptions bo;
  bo.k = 2;
  bo.triu = true;
  const nn::BPTGraph bg = nn::build_bpt_graph({45, 19}, bo);
  for (auto [H, D] : std::vector<std::pair<int64_t, int64_t>>{{2, 130}, {1, 33}, {5, 1}})
    out.push_back({"BPT triu batch {45, 19} k 2", bg.csr, bg.num_nodes(), setup(H, D, Rel::shared, 0.2), seed += 10});
  return out;
}

// A random graph over every table, head shape and dropout; partial gradient needs (null
// gradient pointers on the device), a given scale, p = 1; two position ids for about 1300 edges
// (several runs of kGraphRelRun per id); no edges at all (zeros out, zero gradients).
inline std::vector<Case> random_cases(int64_t rel_run) {
  std::vector<Case> out;
  uint64_t seed = 5000;
  const GraphCSR g = random_graph(40, 29, 12, 77);
  for (Rel rel : {Rel::none, Rel::shared, Rel::per_head})
    for (auto [H, D] : std::vector<std::pair<int64_t, int64_t>>{{3, 20}, {8, 64}, {2, 130}, {4, 96}})
      for (double p : {0.0, 0.5}) out.push_back({"random", g, 29, setup(H, D, rel, p), seed += 10});
  out.push_back({"random, dv only", g, 29, setup(3, 20, Rel::shared, 0.2, {false, false, true, false}), seed += 10});
  out.push_back({"random, dq and drel", g, 29, setup(3, 20, Rel::per_head, 0.2, {true, false, false, true}), seed += 10});
  out.push_back({"random, dk, scale 0.7", g, 29, setup(3, 20, Rel::shared, 0.0, {false, true, false, false}, 0.7),
                 seed += 10});
  out.push_back({"random, p = 1", g, 29, setup(3, 20, Rel::shared, 1.0), seed += 10});
  const GraphCSR few_ids = random_graph(300, 50, 8, 78, 2);
  for (int64_t id : {0, 1})
    if (std::count(few_ids.rel.begin(), few_ids.rel.end(), id) <= 2 * rel_run)
      throw std::logic_error("graph_attention_cases: the two-id graph no longer has several runs per id");
  for (Rel rel : {Rel::shared, Rel::per_head})
    out.push_back({"two position ids", few_ids, 50, setup(3, 20, rel, 0.2), seed += 10});
  GraphCSR empty;
  empty.indptr.assign(4, 0);
  out.push_back({"no edges", empty, 2, setup(2, 5, Rel::none, 0.0), seed += 10});
  return out;
}

// graph_attention as a callable for run_case (its CUDA branch runs on CUDA tensors).
inline constexpr auto graph_op = [](auto&&... a) { return graph_attention(a...); };

// One run of a case: operands drawn from the case's seeds (uniform in [-2, 2)) and moved to dev,
// attend(q, k, v, graph, rel_k, options, generator) -> out, then backward of a drawn gradient.
// Both devices reserve E * H dropout counters; `next_draw` is the generator's draw after the call,
// for checking that they did.
template <class T>
struct Run {
  Tensor<T> q, k, v, r, out;
  double next_draw = 0;
};

template <class T, class Attend>
Run<T> run_case(const Case& c, Device dev, Attend&& attend) {
  const Setup& s = c.s;
  const int64_t Nq = c.graph.num_rows(), H = s.H, D = s.D;
  auto rnd = [](const Shape& shape, uint64_t seed) { return ct::rnd<T>(shape, seed); };
  int64_t P = 0;
  if (s.rel != Rel::none) {
    for (int64_t r : c.graph.rel) P = std::max(P, r + 1);
    P += 2;  // ids no edge uses: their gradient rows must come back as zeros
  }
  auto leaf = [&](const Tensor<T>& t, bool need) { return t.to(dev).detach().set_requires_grad(need); };
  Run<T> x;
  x.q = leaf(rnd({Nq, H, D}, c.seed), s.needs[0]);
  x.k = leaf(rnd({c.Nk, H, D}, c.seed + 1), s.needs[1]);
  x.v = leaf(rnd({c.Nk, H, D}, c.seed + 2), s.needs[2]);
  if (s.rel == Rel::shared) x.r = leaf(rnd({P, D}, c.seed + 4), s.needs[3]);
  if (s.rel == Rel::per_head) x.r = leaf(rnd({P, H, D}, c.seed + 4), s.needs[3]);
  GraphAttentionOptions opt;
  opt.dropout = s.p;
  opt.scale = s.scale;
  Generator gen(c.seed + 5);
  x.out = attend(x.q, x.k, x.v, c.graph, x.r, opt, gen);
  x.out.backward(rnd({Nq, H, D}, c.seed + 3).to(dev));
  x.next_draw = gen.uniform();
  return x;
}

// The generator's draw after one reservation of E * H counters from the case's generator state.
inline double expected_next_draw(const Case& c) {
  Generator ref(c.seed + 5);
  ref.reserve(static_cast<uint64_t>(c.graph.num_edges() * c.s.H));
  return ref.uniform();
}

}  // namespace gct
