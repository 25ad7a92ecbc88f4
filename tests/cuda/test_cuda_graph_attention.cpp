// graph_attention (BP-Transformer's sparse attention) on the GPU against the CPU op: BPT graphs
// (stray multi-edges included, roots of degree n > 32, keys reached by many queries), a random
// graph with empty rows, multi-edges and Nq != Nk, position ids shared by over 512 edges (the
// d rel_k sums in several runs), a graph without edges; no / shared / per-head
// position tables, dropout, head dims in one, two and four register slices and beyond (D = 130),
// partial gradient needs. The output and every gradient are compared, and the dropout mask
// element by element.
#include <algorithm>
#include <array>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "cuda_test_util.hpp"
#include "txtcls/nn/bpt_graph.hpp"
#include "txtcls/ops/graph_attention.hpp"

using namespace txtcls;
using ct::gpu;

namespace {

enum class Rel { none, shared, per_head };

struct Setup {
  int64_t H, D;
  Rel rel;
  double p;  // dropout
  std::array<bool, 4> needs;  // gradients wanted: q, k, v, rel_k
  std::optional<double> scale;
};

Setup setup(int64_t H, int64_t D, Rel rel, double p, std::array<bool, 4> needs = {true, true, true, true},
            std::optional<double> scale = std::nullopt) {
  return Setup{H, D, rel, p, needs, scale};
}

template <class T>
void check(const GraphCSR& g, int64_t Nk, const Setup& s, uint64_t seed) {
  const int64_t Nq = g.num_rows(), H = s.H, D = s.D;
  INFO("Nq " << Nq << " Nk " << Nk << " E " << g.num_edges() << " H " << H << " D " << D << " rel "
             << static_cast<int>(s.rel) << " p " << s.p);
  int64_t P = 0;
  if (s.rel != Rel::none) {
    for (int64_t r : g.rel) P = std::max(P, r + 1);
    P += 2;  // ids no edge uses: their gradient rows must come back as zeros
  }
  const Tensor<T> q0 = ct::rnd<T>({Nq, H, D}, seed), k0 = ct::rnd<T>({Nk, H, D}, seed + 1),
                  v0 = ct::rnd<T>({Nk, H, D}, seed + 2), go = ct::rnd<T>({Nq, H, D}, seed + 3);
  const Tensor<T> r0 = s.rel == Rel::none     ? Tensor<T>()
                       : s.rel == Rel::shared ? ct::rnd<T>({P, D}, seed + 4)
                                              : ct::rnd<T>({P, H, D}, seed + 4);
  GraphAttentionOptions opt;
  opt.dropout = s.p;
  opt.scale = s.scale;

  struct Run {
    Tensor<T> q, k, v, r, out;
  };
  auto run = [&](Device dev) {
    Run x;
    x.q = q0.to(dev).detach().set_requires_grad(s.needs[0]);
    x.k = k0.to(dev).detach().set_requires_grad(s.needs[1]);
    x.v = v0.to(dev).detach().set_requires_grad(s.needs[2]);
    if (r0.defined()) x.r = r0.to(dev).detach().set_requires_grad(s.needs[3]);
    Generator gen(seed + 5);
    x.out = graph_attention(x.q, x.k, x.v, g, x.r, opt, gen);
    x.out.backward(go.to(dev));
    Generator ref(seed + 5);  // one reservation of E * H counters, on either device
    ref.reserve(static_cast<uint64_t>(g.num_edges() * H));
    REQUIRE(gen.uniform() == ref.uniform());
    return x;
  };
  const Run c = run(Device::cpu()), d = run(gpu());
  REQUIRE(d.out.device() == gpu());
  CT_REQUIRE_CLOSE(d.out.cpu(), c.out, T);
  if (s.needs[0]) CT_REQUIRE_CLOSE(d.q.grad().cpu(), c.q.grad(), T);
  if (s.needs[1]) CT_REQUIRE_CLOSE(d.k.grad().cpu(), c.k.grad(), T);
  if (s.needs[2]) CT_REQUIRE_CLOSE(d.v.grad().cpu(), c.v.grad(), T);
  if (r0.defined() && s.needs[3]) CT_REQUIRE_CLOSE(d.r.grad().cpu(), c.r.grad(), T);
  for (const Tensor<T>* t : {&d.q, &d.k, &d.v, &d.r})
    if (t->defined() && !t->requires_grad()) REQUIRE(!t->grad().defined());
}

// Random rows of 0 .. max_deg edges, keys with repeats, position ids in [0, ids); row 3 has 70
// edges (three chunks of 32) and rows 0 and 5 none.
GraphCSR random_graph(int64_t Nq, int64_t Nk, int64_t max_deg, uint64_t seed, uint64_t ids = 9) {
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

template <class T>
void bpt_suite() {
  uint64_t seed = 900;
  for (int64_t n : {1, 7, 31, 130})
    for (int64_t k : {1, 2, 4}) {
      nn::BPTGraphOptions bo;
      bo.k = k;
      const nn::BPTGraph bg = nn::build_bpt_graph({n}, bo);
      INFO("BPT n = " << n << ", k = " << k);
      for (Rel rel : {Rel::none, Rel::shared, Rel::per_head})
        for (auto [H, D] : std::vector<std::pair<int64_t, int64_t>>{{3, 20}, {8, 64}})
          for (double p : {0.0, 0.3}) check<T>(bg.csr, bg.num_nodes(), setup(H, D, rel, p), seed += 10);
    }
  // A batch of two sequences, left contexts only, head dims past one slice of 128 and odd.
  nn::BPTGraphOptions bo;
  bo.k = 2;
  bo.triu = true;
  const nn::BPTGraph bg = nn::build_bpt_graph({45, 19}, bo);
  for (auto [H, D] : std::vector<std::pair<int64_t, int64_t>>{{2, 130}, {1, 33}, {5, 1}})
    check<T>(bg.csr, bg.num_nodes(), setup(H, D, Rel::shared, 0.2), seed += 10);
}

template <class T>
void random_suite() {
  uint64_t seed = 5000;
  const GraphCSR g = random_graph(40, 29, 12, 77);
  for (Rel rel : {Rel::none, Rel::shared, Rel::per_head})
    for (auto [H, D] : std::vector<std::pair<int64_t, int64_t>>{{3, 20}, {8, 64}, {2, 130}, {4, 96}})
      for (double p : {0.0, 0.5}) check<T>(g, 29, setup(H, D, rel, p), seed += 10);
  // Partial needs (null gradient pointers on the device), a given scale, p = 1.
  check<T>(g, 29, setup(3, 20, Rel::shared, 0.2, {false, false, true, false}), seed += 10);
  check<T>(g, 29, setup(3, 20, Rel::per_head, 0.2, {true, false, false, true}), seed += 10);
  check<T>(g, 29, setup(3, 20, Rel::shared, 0.0, {false, true, false, false}, 0.7), seed += 10);
  check<T>(g, 29, setup(3, 20, Rel::shared, 1.0), seed += 10);
  // Two position ids for about 1300 edges: the d rel_k sums run over several runs per id.
  const GraphCSR few_ids = random_graph(300, 50, 8, 78, 2);
  for (int64_t id : {0, 1}) REQUIRE(std::count(few_ids.rel.begin(), few_ids.rel.end(), id) > 2 * cuda::kGraphRelRun);
  for (Rel rel : {Rel::shared, Rel::per_head}) check<T>(few_ids, 50, setup(3, 20, rel, 0.2), seed += 10);
  // No edges at all: zeros out and zero gradients (every buffer starts poisoned).
  GraphCSR empty;
  empty.indptr.assign(4, 0);
  check<T>(empty, 2, setup(2, 5, Rel::none, 0.0), seed += 10);
}

// The dropout mask itself: with v[j, h] the unit vector e_j (Nk <= D, no multi-edges),
// out[i, h, j] is the dropped-out weight of edge (i <- j), zero exactly when the mask drops it.
template <class T>
void mask_suite() {
  const int64_t Nq = 37, Nk = 16, H = 3, D = 16;
  GraphCSR g;
  std::mt19937_64 rng(3);
  for (int64_t i = 0; i < Nq; ++i) {
    for (int64_t j = 0; j < Nk; ++j)
      if (rng() % 2 || j == i % Nk) g.indices.push_back(j), g.rel.push_back(j % 4);
    g.indptr.push_back(static_cast<int64_t>(g.indices.size()));
  }
  Tensor<T> v = zeros<T>({Nk, H, D});
  for (int64_t j = 0; j < Nk; ++j)
    for (int64_t h = 0; h < H; ++h) v.data()[(j * H + h) * D + j] = T(1);
  const Tensor<T> q = ct::rnd<T>({Nq, H, D}, 8), k = ct::rnd<T>({Nk, H, D}, 9);
  GraphAttentionOptions opt;
  opt.dropout = 0.5;
  Generator gc(41), gg(41);
  const auto c = graph_attention(q, k, v, g, Tensor<T>(), opt, gc).to_vector();
  const auto d = graph_attention(q.to(gpu()), k.to(gpu()), v.to(gpu()), g, Tensor<T>(), opt, gg).cpu().to_vector();
  int64_t kept = 0, dropped = 0;
  for (int64_t i = 0; i < Nq; ++i)
    for (int64_t e = g.indptr[i]; e < g.indptr[i + 1]; ++e)
      for (int64_t h = 0; h < H; ++h) {
        const size_t x = static_cast<size_t>((i * H + h) * D + g.indices[e]);
        REQUIRE((c[x] == T(0)) == (d[x] == T(0)));
        ++(c[x] == T(0) ? dropped : kept);
      }
  const int64_t total = g.num_edges() * H;
  REQUIRE(kept > total / 3);  // both outcomes occur, so the comparison above can fail
  REQUIRE(dropped > total / 3);
}

}  // namespace

TEST_CASE("cuda graph_attention matches the CPU on BPT graphs", "[cuda][graph_attention]") {
  bpt_suite<float>();
  bpt_suite<double>();
}

TEST_CASE("cuda graph_attention matches the CPU on random and empty graphs", "[cuda][graph_attention]") {
  random_suite<float>();
  random_suite<double>();
}

TEST_CASE("cuda graph_attention draws the CPU's dropout mask", "[cuda][graph_attention]") {
  mask_suite<float>();
  mask_suite<double>();
}

TEST_CASE("cuda graph_attention refuses operands on different devices", "[cuda][graph_attention]") {
  GraphCSR g;
  g.indptr = {0, 1};
  g.indices = {0};
  const Tensor<float> q = ct::rnd<float>({1, 1, 4}, 1);
  REQUIRE_THROWS_WITH(graph_attention(q.to(gpu()), q, q.to(gpu()), g),
                      Catch::Contains("graph_attention: q is on cuda:0 but the operand of shape [1, 1, 4] is on cpu"));
}
