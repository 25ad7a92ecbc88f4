// graph_attention (BP-Transformer's sparse attention) on the GPU against the CPU op, over the
// configurations of graph_attention_cases.hpp (shared with the kernels' host emulation,
// tools/cuda_emulate/check_graph.cpp). The output and every gradient are compared, and the
// dropout mask element by element.
#include <random>
#include <vector>

#include "cuda_test_util.hpp"
#include "graph_attention_cases.hpp"

// In a namespace of its own: test files are compiled several to a unit (TXTCLS_UNITY_BUILD).
namespace test_cuda_graph_attention {

using namespace txtcls;
using ct::gpu;

namespace {

template <class T>
void check(const gct::Case& c) {
  INFO(c.describe());
  const gct::Run<T> cpu = gct::run_case<T>(c, Device::cpu(), gct::graph_op),
                    dev = gct::run_case<T>(c, gpu(), gct::graph_op);
  REQUIRE(dev.out.device() == gpu());
  REQUIRE(cpu.next_draw == gct::expected_next_draw(c));  // one reservation of E * H counters, on either device
  REQUIRE(dev.next_draw == cpu.next_draw);
  CT_REQUIRE_CLOSE(dev.out.cpu(), cpu.out, T);
  if (c.s.needs[0]) CT_REQUIRE_CLOSE(dev.q.grad().cpu(), cpu.q.grad(), T);
  if (c.s.needs[1]) CT_REQUIRE_CLOSE(dev.k.grad().cpu(), cpu.k.grad(), T);
  if (c.s.needs[2]) CT_REQUIRE_CLOSE(dev.v.grad().cpu(), cpu.v.grad(), T);
  if (dev.r.defined() && c.s.needs[3]) CT_REQUIRE_CLOSE(dev.r.grad().cpu(), cpu.r.grad(), T);
  for (const Tensor<T>* t : {&dev.q, &dev.k, &dev.v, &dev.r})
    if (t->defined() && !t->requires_grad()) REQUIRE(!t->grad().defined());
}

template <class T>
void check_all(const std::vector<gct::Case>& cases) {
  for (const gct::Case& c : cases) check<T>(c);
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
  check_all<float>(gct::bpt_cases());
  check_all<double>(gct::bpt_cases());
}

TEST_CASE("cuda graph_attention matches the CPU on random and empty graphs", "[cuda][graph_attention]") {
  check_all<float>(gct::random_cases(cuda::kGraphRelRun));
  check_all<double>(gct::random_cases(cuda::kGraphRelRun));
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

}  // namespace test_cuda_graph_attention
