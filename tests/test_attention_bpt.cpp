// BP-Transformer: the binary-partition graph (nn/bpt_graph.hpp) against hand-worked counts, a
// worked example and the authors' own builder (tests/fixtures/bpt, tools/make_bpt_fixtures.py);
// graph_attention (ops/graph_attention.hpp) against closed forms, finite differences and the
// dense masked reference; the nn::BPTAttention module and the batch helpers.
#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "test_util.hpp"
#include "txtcls/nn/bpt_attention.hpp"
#include "txtcls/nn/bpt_graph.hpp"
#include "txtcls/ops/graph_attention.hpp"

// In a namespace of its own: test files are compiled several to a unit (TXTCLS_UNITY_BUILD).
namespace test_attention_bpt {

using namespace txtcls;
using namespace txtcls::nn;
using namespace tt;
using json = nlohmann::json;

namespace {

const json& fixture_cases() {
  static const json cases = [] {
    const std::string path = std::string(TXTCLS_SOURCE_DIR) + "/tests/fixtures/bpt/bpt_graphs.json";
    std::ifstream f(path);
    if (!f) FAIL("missing fixture " << path << " (run tools/make_bpt_fixtures.py BPT_CHECKOUT)");
    return json::parse(f)["cases"];
  }();
  return cases;
}

BPTGraphOptions opts(int64_t k, bool triu = false, int64_t clip = 10, bool stray = true) {
  BPTGraphOptions o;
  o.k = k;
  o.triu = triu;
  o.clip_dist = clip;
  o.keep_stray_edges = stray;
  return o;
}

std::map<BPTEdgeType, int64_t> count_types(const std::vector<BPTEdge>& edges) {
  std::map<BPTEdgeType, int64_t> c;
  for (auto& e : edges) ++c[e.type];
  return c;
}

// |a - b| <= tol * (1 + |b|) elementwise.
template <class T>
void require_near(const Tensor<T>& a, const Tensor<T>& b, double tol, const std::string& what) {
  INFO(what);
  REQUIRE(a.defined());
  REQUIRE(b.defined());
  REQUIRE(a.shape() == b.shape());
  auto va = a.to_vector(), vb = b.to_vector();
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    const double err = std::abs(double(va[i]) - double(vb[i])) / (1 + std::abs(double(vb[i])));
    if (!(err <= worst)) worst = err, at = i;
  }
  INFO("worst relative error " << worst << " at element " << at);
  REQUIRE(worst <= tol);
}

template <class T>
void require_equal(const Tensor<T>& a, const Tensor<T>& b, const std::string& what) {
  INFO(what);
  REQUIRE(a.shape() == b.shape());
  REQUIRE(a.to_vector() == b.to_vector());
}

// A random graph with Nq rows over Nk keys: some empty rows, some multi-edges (when allowed),
// position ids in [0, P).
GraphCSR random_graph(int64_t Nq, int64_t Nk, int64_t P, uint64_t seed, bool multi, int64_t max_deg = 5) {
  Generator g(seed);
  GraphCSR c;
  for (int64_t i = 0; i < Nq; ++i) {
    const int64_t deg = static_cast<int64_t>(g.randint(static_cast<uint64_t>(max_deg + 1)));
    std::vector<int64_t> keys;
    for (int64_t t = 0; t < deg; ++t) {
      const int64_t j = static_cast<int64_t>(g.randint(static_cast<uint64_t>(Nk)));
      if (!multi && std::find(keys.begin(), keys.end(), j) != keys.end()) continue;
      keys.push_back(j);
    }
    std::sort(keys.begin(), keys.end());
    for (int64_t j : keys) {
      c.indices.push_back(j);
      c.rel.push_back(static_cast<int64_t>(g.randint(static_cast<uint64_t>(P))));
    }
    c.indptr.push_back(static_cast<int64_t>(c.indices.size()));
  }
  return c;
}

template <class T>
Tensor<T> rnd_t(const Shape& s, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Generator g(seed);
  return rand_uniform<T>(s, g, lo, hi);
}

GraphAttentionOptions attn_opts(double dropout = 0.0, bool training = true, std::optional<double> scale = {}) {
  GraphAttentionOptions o;
  o.dropout = dropout;
  o.training = training;
  o.scale = scale;
  return o;
}

int64_t ceil_log2(int64_t x) {
  int64_t l = 0;
  while ((int64_t(1) << l) < x) ++l;
  return l;
}

}  // namespace

// ---------------------------------------------------------------- the graph

TEST_CASE("bpt graph: node and edge counts of hand-worked cases", "[attention][bpt]") {
  // Per case: n, k, nodes, levels, self loops, affiliated, left, right, stray, total, total with triu.
  //
  // Nodes: the authors' levels have ceil(n / 2^l) nodes down to one, e.g. n = 13: 13 + 7 + 4 + 2 + 1
  // = 27 in 5 levels, where the paper counts 2n - 1 = 25 (equal only for n a power of two).
  // Self loops: one per token. Affiliated: each token feeds one ancestor on every level above 0,
  // n * (levels - 1); for n = 2^m that is the paper's sum over span nodes of their 2^l tokens, n m.
  // Contexts of token i tile [0, i) on the left and (i, n) on the right, k nodes per level. E.g.
  // n = 8, k = 1, left: token 0: none; 1: {0}; 2: {1}, then 0 is a left child (its parent [0,2)
  // would cover 1 again) so 0 itself: 2; 3: {2}, [0,2): 2; 4: {3}, 2, [0,2): 3; 5: {4}, [2,4),
  // [0,2): 3; 6: {5}, 4, [0,4): 3; 7: {6}, [4,6), [0,4): 3 -> 17; the right side mirrors it: 17;
  // 8 + 24 + 34 = 66. n = 8, k = 4: left 0+1+2+3+4 for tokens 0..4, then 4 tokens plus token 0
  // (5), [0,2) (5), token 2 and [0,2) (6) -> 26, right 26, 8 + 24 + 52 = 84.
  // Stray edges (see nn/bpt_graph.hpp): n = 3, k = 1: token 1's right pointer after level 0 is 3,
  // odd, so level 1 takes "child 3 of level 0", which is node 3 (the span [0,2)): 1 stray edge.
  // n = 5, k = 1: tokens 3 (node 5) and 2, 3 (node 8): 3. With k = 4 at n = 3 the right pointer
  // passes the end before the flag is used: none.
  struct Row {
    int64_t n, k, nodes, levels, self, aff, left, right, stray, total, total_triu;
  };
  const std::vector<Row> table = {
      {1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1},          {1, 2, 1, 1, 1, 0, 0, 0, 0, 1, 1},
      {1, 4, 1, 1, 1, 0, 0, 0, 0, 1, 1},          {2, 1, 3, 2, 2, 2, 1, 1, 0, 6, 5},
      {2, 2, 3, 2, 2, 2, 1, 1, 0, 6, 5},          {2, 4, 3, 2, 2, 2, 1, 1, 0, 6, 5},
      {3, 1, 6, 3, 3, 6, 3, 3, 1, 16, 12},        {3, 2, 6, 3, 3, 6, 3, 3, 1, 16, 12},
      {3, 4, 6, 3, 3, 6, 3, 3, 0, 15, 12},        {5, 1, 11, 4, 5, 15, 8, 9, 3, 40, 28},
      {5, 2, 11, 4, 5, 15, 9, 10, 2, 41, 29},     {5, 4, 11, 4, 5, 15, 10, 10, 1, 41, 30},
      {8, 1, 15, 4, 8, 24, 17, 17, 0, 66, 49},    {8, 2, 15, 4, 8, 24, 22, 22, 0, 76, 54},
      {8, 4, 15, 4, 8, 24, 26, 26, 0, 84, 58},    {13, 1, 27, 5, 13, 52, 37, 41, 3, 146, 102},
      {13, 2, 27, 5, 13, 52, 49, 55, 3, 172, 114}, {13, 4, 27, 5, 13, 52, 62, 66, 3, 196, 127},
  };
  for (const Row& r : table) {
    INFO("n " << r.n << " k " << r.k);
    // the formulas
    int64_t sum_levels = 0;
    for (int64_t l = 0, s = r.n;; ++l, s = (s + 1) / 2) {
      sum_levels += s;
      if (s == 1) {
        REQUIRE(l + 1 == r.levels);
        break;
      }
    }
    REQUIRE(sum_levels == r.nodes);
    const bool pow2 = (r.n & (r.n - 1)) == 0;
    if (pow2) REQUIRE(r.nodes == 2 * r.n - 1);  // the paper's count
    else REQUIRE(r.nodes > 2 * r.n - 1);
    REQUIRE(r.self == r.n);
    REQUIRE(r.aff == r.n * (r.levels - 1));
    if (pow2) REQUIRE(r.aff == r.n * ceil_log2(r.n));
    REQUIRE(r.total == r.self + r.aff + r.left + r.right + r.stray);
    // the builder
    REQUIRE(bpt_num_nodes(r.n) == r.nodes);
    REQUIRE(static_cast<int64_t>(bpt_level_sizes(r.n).size()) == r.levels);
    const auto edges = bpt_sequence_edges(r.n, opts(r.k));
    auto c = count_types(edges);
    REQUIRE(c[BPTEdgeType::self_loop] == r.self);
    REQUIRE(c[BPTEdgeType::affiliated] == r.aff);
    REQUIRE(c[BPTEdgeType::left] == r.left);
    REQUIRE(c[BPTEdgeType::right] == r.right);
    REQUIRE(c[BPTEdgeType::stray_right] == r.stray);
    REQUIRE(static_cast<int64_t>(edges.size()) == r.total);
    const BPTGraph g = build_bpt_graph({r.n}, opts(r.k));
    REQUIRE(g.num_nodes() == r.nodes);
    REQUIRE(g.num_edges() == r.total);
    REQUIRE(build_bpt_graph({r.n}, opts(r.k, false, 10, false)).num_edges() == r.total - r.stray);
    // triu: no right contexts (and so no stray edges); the left side is unchanged
    const auto triu = bpt_sequence_edges(r.n, opts(r.k, true));
    REQUIRE(static_cast<int64_t>(triu.size()) == r.total_triu);
    REQUIRE(r.total_triu == r.self + r.aff + r.left);
  }
}

TEST_CASE("bpt graph: worked example n = 4, k = 1", "[attention][bpt]") {
  // Tokens 0..3; level 1: node 4 = [0,2), node 5 = [2,4); root 6 = [0,4). Position ids with k = 1:
  // level j base 3j; left +1, right +2. docs/bpt.md walks through it.
  const BPTGraph g = build_bpt_graph({4}, opts(1));
  REQUIRE(g.num_nodes() == 7);
  const std::vector<std::array<int64_t, 4>> spans = {{0, 0, 0, 1}, {0, 1, 1, 2}, {0, 2, 2, 3}, {0, 3, 3, 4},
                                                     {1, 0, 0, 2}, {1, 1, 2, 4}, {2, 0, 0, 4}};
  for (int64_t v = 0; v < 7; ++v) {
    INFO("node " << v);
    REQUIRE(g.nodes[v].level == spans[v][0]);
    REQUIRE(g.nodes[v].index == spans[v][1]);
    REQUIRE(g.nodes[v].begin == spans[v][2]);
    REQUIRE(g.nodes[v].end == spans[v][3]);
  }
  // row: (key, position id) pairs
  const std::vector<std::vector<std::pair<int64_t, int64_t>>> rows = {
      {{0, 0}, {1, 2}, {5, 5}},          // token 0: self, token 1 (right, level 0), [2,4) (right, level 1)
      {{0, 1}, {1, 0}, {2, 2}, {3, 5}},  // token 1: 3 is a right child: taken itself at level 1
      {{0, 4}, {1, 1}, {2, 0}, {3, 2}},  // token 2: 0 is a left child: taken itself at level 1
      {{2, 1}, {3, 0}, {4, 4}},          // token 3: [0,2) at level 1
      {{0, 3}, {1, 3}},                  // [0,2) <- its tokens
      {{2, 3}, {3, 3}},                  // [2,4) <- its tokens
      {{0, 6}, {1, 6}, {2, 6}, {3, 6}},  // root <- every token
  };
  int64_t e = 0;
  for (int64_t v = 0; v < 7; ++v) {
    INFO("row " << v);
    REQUIRE(g.csr.degree(v) == static_cast<int64_t>(rows[v].size()));
    for (auto [key, rel] : rows[v]) {
      REQUIRE(g.csr.indices[e] == key);
      REQUIRE(g.csr.rel[e] == rel);
      ++e;
    }
  }
  REQUIRE(e == 22);
  REQUIRE(g.num_positions() == 7);
  REQUIRE(g.edge_type[0] == BPTEdgeType::self_loop);
  REQUIRE(g.edge_type[2] == BPTEdgeType::right);
  REQUIRE(g.edge_type[8] == BPTEdgeType::left);  // row 2, key 0
  REQUIRE(g.edge_type[14] == BPTEdgeType::affiliated);
  // the authors' per-node pos: last token spanned
  for (int64_t v = 0; v < 7; ++v) REQUIRE(g.position(v) == std::vector<int64_t>{0, 1, 2, 3, 1, 3, 3}[v]);

  // n = 3: token 1 gets the stray edge from node 3 (its own parent [0,2)) as a level-1 right context
  const BPTGraph s = build_bpt_graph({3}, opts(1));
  REQUIRE(s.csr.degree(1) == 4);
  REQUIRE(s.csr.indices[s.csr.indptr[1] + 3] == 3);
  REQUIRE(s.csr.rel[s.csr.indptr[1] + 3] == 5);
  REQUIRE(s.edge_type[s.csr.indptr[1] + 3] == BPTEdgeType::stray_right);
  const BPTGraph s2 = build_bpt_graph({3}, opts(1, false, 10, false));
  REQUIRE(s2.csr.degree(1) == 3);
  REQUIRE(std::vector<int64_t>(s2.csr.indices.begin() + s2.csr.indptr[1], s2.csr.indices.begin() + s2.csr.indptr[2]) ==
          std::vector<int64_t>{0, 1, 2});
}

TEST_CASE("bpt graph: edge lists equal the authors' builder", "[attention][bpt]") {
  const json& cases = fixture_cases();
  REQUIRE(cases.size() >= 70);
  int64_t edges_compared = 0, strays_seen = 0;
  for (const json& c : cases) {
    const int64_t n = c["n"], k = c["k"], clip = c["clip_dist"];
    const bool triu = c["triu"];
    INFO("n " << n << " k " << k << " triu " << triu << " clip " << clip);
    const auto src = c["src"].get<std::vector<int64_t>>(), dst = c["dst"].get<std::vector<int64_t>>(),
               et = c["etype"].get<std::vector<int64_t>>();
    REQUIRE(bpt_num_nodes(n) == c["number_of_nodes"].get<int64_t>());
    REQUIRE(static_cast<int64_t>(bpt_level_sizes(n).size()) == c["number_of_levels"].get<int64_t>());
    // the same edges in the same order
    const auto edges = bpt_sequence_edges(n, opts(k, triu, clip));
    REQUIRE(edges.size() == src.size());
    for (size_t x = 0; x < edges.size(); ++x) {
      INFO("edge " << x);
      REQUIRE(edges[x].src == src[x]);
      REQUIRE(edges[x].dst == dst[x]);
      REQUIRE(edges[x].rel == et[x]);
      strays_seen += edges[x].type == BPTEdgeType::stray_right;
    }
    edges_compared += static_cast<int64_t>(edges.size());
    // the CSR is that edge list sorted by (query, key, position id)
    std::vector<std::tuple<int64_t, int64_t, int64_t>> sorted;
    for (size_t x = 0; x < src.size(); ++x) sorted.emplace_back(dst[x], src[x], et[x]);
    std::sort(sorted.begin(), sorted.end());
    const BPTGraph g = build_bpt_graph({n}, opts(k, triu, clip));
    REQUIRE(g.num_nodes() == c["number_of_nodes"].get<int64_t>());
    REQUIRE(g.num_edges() == static_cast<int64_t>(sorted.size()));
    for (int64_t v = 0, x = 0; v < g.num_nodes(); ++v)
      for (int64_t e = g.csr.indptr[v]; e < g.csr.indptr[v + 1]; ++e, ++x) {
        REQUIRE(std::get<0>(sorted[x]) == v);
        REQUIRE(std::get<1>(sorted[x]) == g.csr.indices[e]);
        REQUIRE(std::get<2>(sorted[x]) == g.csr.rel[e]);
      }
    const auto pos = c["pos"].get<std::vector<int64_t>>();
    for (int64_t v = 0; v < g.num_nodes(); ++v) REQUIRE(g.position(v) == pos[v]);
  }
  REQUIRE(edges_compared > 10000);
  REQUIRE(strays_seen > 0);  // the fixture exercises the authors' stray edges

  // A batch is the per-sequence graphs one after the other (the authors' batcher shifts node ids).
  const std::vector<int64_t> lengths = {5, 13, 1, 8, 33};
  const BPTGraph b = build_bpt_graph(lengths, opts(2));
  int64_t matched = 0;
  for (const json& c : cases) {
    if (c["k"] != 2 || c["triu"] != false || c["clip_dist"] != 10) continue;
    for (int64_t s = 0; s < static_cast<int64_t>(lengths.size()); ++s) {
      if (c["n"].get<int64_t>() != lengths[s]) continue;
      INFO("sequence " << s);
      const int64_t off = b.node_offset[s];
      std::multiset<std::tuple<int64_t, int64_t, int64_t>> want, got;
      for (size_t x = 0; x < c["src"].size(); ++x)
        want.emplace(c["dst"][x].get<int64_t>() + off, c["src"][x].get<int64_t>() + off, c["etype"][x].get<int64_t>());
      for (int64_t v = off; v < b.node_offset[s + 1]; ++v)
        for (int64_t e = b.csr.indptr[v]; e < b.csr.indptr[v + 1]; ++e) got.emplace(v, b.csr.indices[e], b.csr.rel[e]);
      REQUIRE(got == want);
      ++matched;
    }
  }
  REQUIRE(matched == 5);
}

TEST_CASE("bpt graph: every token reachable, contexts tile the sequence, spans see their tokens",
          "[attention][bpt]") {
  int64_t graphs = 0;
  for (bool triu : {false, true})
    for (int64_t clip : {10, 1})
      for (int64_t k = 1; k <= 5; ++k)
        for (int64_t n = 1; n <= 70; ++n) {
          INFO("n " << n << " k " << k << " triu " << triu << " clip " << clip);
          const BPTGraph g = build_bpt_graph({n}, opts(k, triu, clip));
          const GraphCSR& c = g.csr;
          const int64_t stride = 2 * k + 1;
          int64_t max_ctx = 0;
          for (int64_t v = 0; v < g.num_nodes(); ++v) {
            const BPTNode& node = g.nodes[v];
            REQUIRE(c.degree(v) >= 1);
            for (int64_t e = c.indptr[v] + 1; e < c.indptr[v + 1]; ++e) REQUIRE(c.indices[e - 1] <= c.indices[e]);
            if (node.level > 0) {
              // a span node attends to exactly its tokens, with its level's position id
              REQUIRE(c.degree(v) == node.end - node.begin);
              for (int64_t e = c.indptr[v], t = node.begin; e < c.indptr[v + 1]; ++e, ++t) {
                REQUIRE(c.indices[e] == t);
                REQUIRE(g.edge_type[e] == BPTEdgeType::affiliated);
                REQUIRE(c.rel[e] == stride * std::min(node.level, clip));
              }
              continue;
            }
            // a token: its self loop and non-stray contexts cover [0, n) ([0, i] with triu) exactly once
            std::vector<int64_t> cover(static_cast<size_t>(n), 0);
            int64_t ctx = 0;
            for (int64_t e = c.indptr[v]; e < c.indptr[v + 1]; ++e) {
              const BPTNode& key = g.nodes[c.indices[e]];
              const BPTEdgeType ty = g.edge_type[e];
              if (ty == BPTEdgeType::stray_right) {
                // one past the level below: the first node of the position id's level
                REQUIRE(key.index == 0);
                REQUIRE(c.rel[e] % stride == 2);
                ++ctx;
                continue;
              }
              for (int64_t t = key.begin; t < key.end; ++t) ++cover[t];
              const int64_t lvl = c.rel[e] / stride, off = c.rel[e] % stride;
              if (ty == BPTEdgeType::self_loop) {
                REQUIRE(c.indices[e] == v);
                REQUIRE(c.rel[e] == 0);
              } else if (ty == BPTEdgeType::left) {
                REQUIRE(key.end <= node.begin);
                REQUIRE(off % 2 == 1);
                ++ctx;
              } else {
                REQUIRE(ty == BPTEdgeType::right);
                REQUIRE_FALSE(triu);
                REQUIRE(key.begin >= node.end);
                REQUIRE(off % 2 == 0);
                REQUIRE(off > 0);
                ++ctx;
              }
              if (ty != BPTEdgeType::self_loop) {
                // the context's level is the id's level, or one below (a child taken instead of its parent)
                REQUIRE(lvl <= clip);
                if (lvl < clip) REQUIRE((key.level == lvl || key.level == lvl - 1));
                else REQUIRE(key.level >= clip - 1);
              }
            }
            for (int64_t t = 0; t < n; ++t) {
              INFO("token " << node.begin << " covers " << t);
              REQUIRE(cover[t] == (!triu || t <= node.begin ? 1 : 0));
            }
            max_ctx = std::max(max_ctx, ctx);
          }
          // O(k log(n/k)) contexts per token
          REQUIRE(max_ctx <= 2 * k * (ceil_log2((n + k - 1) / k) + 1));
          // every token is reached by its self loop and by every ancestor: token -> span edges
          int64_t up = 0;
          for (int64_t e = 0; e < g.num_edges(); ++e) up += g.edge_type[e] == BPTEdgeType::affiliated;
          REQUIRE(up == n * (static_cast<int64_t>(bpt_level_sizes(n).size()) - 1));
          // without stray edges no (query, key) pair repeats
          const BPTGraph ns = build_bpt_graph({n}, opts(k, triu, clip, false));
          for (int64_t v = 0; v < ns.num_nodes(); ++v)
            for (int64_t e = ns.csr.indptr[v] + 1; e < ns.csr.indptr[v + 1]; ++e)
              REQUIRE(ns.csr.indices[e - 1] < ns.csr.indices[e]);
          ++graphs;
        }
  REQUIRE(graphs == 2 * 2 * 5 * 70);
}

TEST_CASE("bpt graph: batches, offsets, no edge across sequences", "[attention][bpt]") {
  const std::vector<int64_t> lengths = {7, 1, 16, 3, 30};
  for (bool stray : {true, false}) {
    const BPTGraph g = build_bpt_graph(lengths, opts(3, false, 10, stray));
    REQUIRE(g.batch_size() == 5);
    REQUIRE(g.node_offset.size() == 6);
    int64_t nodes = 0, edges = 0;
    for (size_t b = 0; b < lengths.size(); ++b) {
      REQUIRE(g.node_offset[b] == nodes);
      nodes += bpt_num_nodes(lengths[b]);
      edges += build_bpt_graph({lengths[b]}, opts(3, false, 10, stray)).num_edges();
    }
    REQUIRE(g.num_nodes() == nodes);
    REQUIRE(g.node_offset.back() == nodes);
    REQUIRE(g.num_edges() == edges);
    for (int64_t v = 0; v < g.num_nodes(); ++v) {
      const int64_t b = g.nodes[v].seq;
      REQUIRE(v >= g.node_offset[b]);
      REQUIRE(v < g.node_offset[b + 1]);
      for (int64_t e = g.csr.indptr[v]; e < g.csr.indptr[v + 1]; ++e) REQUIRE(g.nodes[g.csr.indices[e]].seq == b);
    }
    // leaves and roots
    auto leaves = g.leaf_ids().to_vector();
    REQUIRE(leaves.size() == 57);
    REQUIRE(leaves[7] == g.node_offset[1]);  // sequence 1's only token
    for (int64_t id : leaves) REQUIRE(g.nodes[id].level == 0);
    auto roots = g.root_ids().to_vector();
    REQUIRE(roots == std::vector<int64_t>{g.node_offset[1] - 1, g.node_offset[2] - 1, g.node_offset[3] - 1,
                                          g.node_offset[4] - 1, g.node_offset[5] - 1});
    for (size_t b = 0; b < lengths.size(); ++b) {
      REQUIRE(g.nodes[roots[b]].begin == 0);
      REQUIRE(g.nodes[roots[b]].end == lengths[b]);
    }
    // a one-token sequence is its own root: one node, one self loop
    REQUIRE(g.root(1) == g.leaf(1, 0));
    REQUIRE(g.csr.degree(g.leaf(1, 0)) == 1);
  }
  // an empty batch is an empty graph
  const BPTGraph empty = build_bpt_graph({}, opts(2));
  REQUIRE(empty.num_nodes() == 0);
  REQUIRE(empty.num_edges() == 0);
  REQUIRE(empty.csr.num_rows() == 0);
}

TEST_CASE("bpt graph: position ids", "[attention][bpt]") {
  const BPTGraphOptions o = opts(4, false, 3);
  REQUIRE(bpt_position_id(BPTEdgeType::self_loop, 0, 0, o) == 0);
  REQUIRE(bpt_position_id(BPTEdgeType::affiliated, 2, 0, o) == 18);
  REQUIRE(bpt_position_id(BPTEdgeType::left, 0, 0, o) == 1);
  REQUIRE(bpt_position_id(BPTEdgeType::right, 0, 3, o) == 8);
  REQUIRE(bpt_position_id(BPTEdgeType::left, 1, 2, o) == 14);
  REQUIRE(bpt_position_id(BPTEdgeType::right, 7, 1, o) == 31);  // level clipped to 3: 27 + 4
  REQUIRE(bpt_max_positions(o) == 36);
  const BPTGraph g = build_bpt_graph({300}, o);
  REQUIRE(g.num_positions() == 36);  // long enough to reach the clipped level's last right context
  for (int64_t r : g.csr.rel) REQUIRE(r < 36);
  const BPTGraph g0 = build_bpt_graph({300}, opts(2, false, 0));
  REQUIRE(g0.num_positions() == 5);  // clip 0: only the offsets 0..2k
}

TEST_CASE("bpt graph: errors", "[attention][bpt]") {
  REQUIRE_THROWS_WITH(build_bpt_graph({4}, opts(0)), Catch::Contains("build_bpt_graph: k (contexts per side and level) must be at least 1, got 0"));
  REQUIRE_THROWS_WITH(build_bpt_graph({4}, opts(2, false, -1)), Catch::Contains("build_bpt_graph: clip_dist must be non-negative, got -1"));
  REQUIRE_THROWS_WITH(build_bpt_graph({4, 0, 2}, opts(2)), Catch::Contains("build_bpt_graph: sequence 1 has length 0"));
  REQUIRE_THROWS_WITH(bpt_sequence_edges(-3, opts(1)), Catch::Contains("bpt_sequence_edges: a sequence needs at least one token, got length -3"));
  const BPTGraph g = build_bpt_graph({3, 5}, opts(1));
  REQUIRE_THROWS_WITH(bpt_node_inputs(rnd({3, 5, 2}, 1), g), Catch::Contains("bpt_node_inputs: batch of 3 sequences but the graph has 2"));
  REQUIRE_THROWS_WITH(bpt_node_inputs(rnd({2, 4, 2}, 1), g), Catch::Contains("bpt_node_inputs: sequence 1 of the graph has length 5, longer than the padded length T = 4"));
  REQUIRE_THROWS_WITH(bpt_node_inputs(rnd({2, 4}, 1), g), Catch::Contains("bpt_node_inputs: x must be [B, T, D], got [2, 4]"));
  REQUIRE_THROWS_WITH(bpt_token_outputs(rnd({5, 2}, 1), g, 5), Catch::Contains("bpt_token_outputs: h must be [N, D] with the graph's N = 17 nodes, got [5, 2]"));
  REQUIRE_THROWS_WITH(bpt_root_outputs(rnd({17}, 1), g), Catch::Contains("bpt_root_outputs: h must be [N, D]"));
}

// ---------------------------------------------------------------- graph_attention

TEST_CASE("graph_attention: hand-computed values", "[attention][bpt]") {
  // 3 query nodes over 3 keys, H = 1, D = 2: row 0 <- {0, 1}, row 1 <- {2}, row 2 <- {} (empty).
  GraphCSR c;
  c.indptr = {0, 2, 3, 3};
  c.indices = {0, 1, 2};
  c.rel = {1, 0, 1};
  auto q = from_vector<double>({1, 2, -1, 0.5, 3, 3}, {3, 1, 2});
  auto k = from_vector<double>({0.5, -1, 2, 1, 0, 0}, {3, 1, 2});
  auto v = from_vector<double>({1, 2, 3, 4, 5, 6}, {3, 1, 2});
  auto r = from_vector<double>({0.25, 0.5, -1, 1}, {2, 2});
  const double s = 1 / std::sqrt(2.0);
  // no rel: row 0 scores s*(0.5 - 2) and s*(2 + 2)
  {
    const double z0 = s * (1 * 0.5 + 2 * -1), z1 = s * (1 * 2 + 2 * 1);
    const double a0 = 1 / (1 + std::exp(z1 - z0)), a1 = 1 - a0;
    auto o = graph_attention(q, k, v, c);
    require_close(o, {a0 * 1 + a1 * 3, a0 * 2 + a1 * 4, 5, 6, 0, 0});
  }
  // with rel: edge 0 adds q0 . r1 = -1 + 2 = 1, edge 1 adds q0 . r0 = 0.25 + 1
  {
    const double z0 = s * (-1.5 + 1), z1 = s * (4 + 1.25);
    const double a0 = 1 / (1 + std::exp(z1 - z0)), a1 = 1 - a0;
    auto o = graph_attention(q, k, v, c, r);
    require_close(o, {a0 * 1 + a1 * 3, a0 * 2 + a1 * 4, 5, 6, 0, 0});
    // a per-head table [P, 1, D] gives the same
    require_close(graph_attention(q, k, v, c, r.reshape({2, 1, 2})), o.to_vector());
  }
  // explicit scale 1
  {
    const double z0 = -1.5, z1 = 4;
    const double a0 = 1 / (1 + std::exp(z1 - z0)), a1 = 1 - a0;
    require_close(graph_attention(q, k, v, c, TD(), attn_opts(0, true, 1.0)),
                  {a0 * 1 + a1 * 3, a0 * 2 + a1 * 4, 5, 6, 0, 0});
  }
  // multi-edge: row 0 <- {1, 1} weighs key 1 twice (each 1/2 of the row): output v1
  GraphCSR m;
  m.indptr = {0, 2};
  m.indices = {1, 1};
  require_close(graph_attention(q.narrow(0, 0, 1), k, v, m), {3, 4});
  // rows of a softmax sum to one: with v = 1 the output is 1 on non-empty rows
  auto ones3 = ones<double>({3, 1, 2});
  require_close(graph_attention(q, k, ones3, c, r), {1, 1, 1, 1, 0, 0});
}

TEST_CASE("graph_attention: gradients match finite differences", "[attention][bpt]") {
  const int64_t Nq = 5, Nk = 4, H = 2, D = 3, P = 3;
  const GraphCSR multi = random_graph(Nq, Nk, P, 15, true);
  REQUIRE(multi.num_edges() == 8);
  int64_t empty_rows = 0, repeats = 0;
  for (int64_t i = 0; i < Nq; ++i) {
    empty_rows += multi.degree(i) == 0;
    for (int64_t e = multi.indptr[i] + 1; e < multi.indptr[i + 1]; ++e) repeats += multi.indices[e] == multi.indices[e - 1];
  }
  REQUIRE(empty_rows == 2);
  REQUIRE(repeats == 3);
  auto q = rnd({Nq, H, D}, 1), k = rnd({Nk, H, D}, 2), v = rnd({Nk, H, D}, 3);
  auto rs = rnd({P, D}, 4), rh = rnd({P, H, D}, 5);
  SECTION("no relative term") {
    REQUIRE_GRAD([&](const std::vector<TD>& x) { return graph_attention(x[0], x[1], x[2], multi); }, q, k, v);
  }
  SECTION("shared position table [P, D]") {
    REQUIRE_GRAD([&](const std::vector<TD>& x) { return graph_attention(x[0], x[1], x[2], multi, x[3]); }, q, k, v, rs);
  }
  SECTION("per-head position table [P, H, D], scale 0.7") {
    REQUIRE_GRAD([&](const std::vector<TD>& x) {
      return graph_attention(x[0], x[1], x[2], multi, x[3], attn_opts(0, true, 0.7));
    }, q, k, v, rh);
  }
  SECTION("dropout (the same mask every call)") {
    REQUIRE_GRAD([&](const std::vector<TD>& x) {
      Generator g(99);
      return graph_attention(x[0], x[1], x[2], multi, x[3], attn_opts(0.3), g);
    }, q, k, v, rs);
  }
  SECTION("a BPT graph with stray edges") {
    const BPTGraph g = build_bpt_graph({5, 3}, opts(1));
    REQUIRE(g.num_edges() == 40 + 16);
    const int64_t N = g.num_nodes();
    REQUIRE_GRAD([&](const std::vector<TD>& x) { return graph_attention(x[0], x[1], x[2], g.csr, x[3]); },
                 rnd({N, 2, 2}, 6), rnd({N, 2, 2}, 7), rnd({N, 2, 2}, 8), rnd({g.num_positions(), 2}, 9));
  }
  SECTION("only some inputs need gradients") {
    auto kk = k.detach(), rr = rs.detach();
    REQUIRE_GRAD([&](const std::vector<TD>& x) { return graph_attention(x[0], kk, x[1], multi, rr); }, q, v);
  }
}

TEST_CASE("graph_attention: sparse equals the dense masked reference", "[attention][bpt]") {
  const BPTGraph g = build_bpt_graph({13, 8, 1, 21}, opts(2, false, 2, false));  // no multi-edges
  const int64_t N = g.num_nodes(), H = 3, D = 4, P = g.num_positions();
  auto run = [&](auto tag, double tol, bool per_head, double p) {
    using T = decltype(tag);
    INFO("float " << (sizeof(T) == 4) << " per-head " << per_head << " dropout " << p);
    auto q = rnd_t<T>({N, H, D}, 1, -2, 2).set_requires_grad(true);
    auto k = rnd_t<T>({N, H, D}, 2, -2, 2).set_requires_grad(true);
    auto v = rnd_t<T>({N, H, D}, 3).set_requires_grad(true);
    auto r = (per_head ? rnd_t<T>({P, H, D}, 4) : rnd_t<T>({P, D}, 4)).set_requires_grad(true);
    auto w = rnd_t<T>({N, H, D}, 5);
    Generator g1(7), g2(7);
    auto o1 = graph_attention(q, k, v, g.csr, r, attn_opts(p), g1);
    std::vector<Tensor<T>> grads1;
    sum(mul(o1, w)).backward();
    for (auto* t : {&q, &k, &v, &r}) grads1.push_back(t->grad()), t->zero_grad();
    auto o2 = graph_attention_reference(q, k, v, g.csr, r, attn_opts(p), g2);
    sum(mul(o2, w)).backward();
    REQUIRE(g1.offset() == g2.offset());
    REQUIRE(g1.offset() == static_cast<uint64_t>(g.num_edges() * H));
    require_near(o1, o2, tol, "output");
    const char* names[] = {"q", "k", "v", "rel_k"};
    int i = 0;
    for (auto* t : {&q, &k, &v, &r}) require_near(grads1[i], t->grad(), tol, std::string("grad ") + names[i]), ++i;
  };
  for (bool per_head : {false, true})
    for (double p : {0.0, 0.4}) {
      run(double{}, 1e-12, per_head, p);
      run(float{}, 1e-5, per_head, p);
    }
  // without a position table, and on a random graph with empty rows and Nq != Nk
  const GraphCSR rg = random_graph(9, 6, 2, 20, false);
  REQUIRE(rg.num_edges() == 19);
  int64_t empty_rows = 0;
  for (int64_t i = 0; i < 9; ++i) empty_rows += rg.degree(i) == 0;
  REQUIRE(empty_rows == 1);
  auto q = rnd({9, 2, 5}, 1), k = rnd({6, 2, 5}, 2), v = rnd({6, 2, 5}, 3);
  require_near(graph_attention(q, k, v, rg), graph_attention_reference(q, k, v, rg), 1e-12, "random graph");
}

TEST_CASE("graph_attention: dropout", "[attention][bpt]") {
  const BPTGraph g = build_bpt_graph({40}, opts(3));
  const int64_t N = g.num_nodes(), H = 2, D = 3, E = g.num_edges();
  auto q = rnd({N, H, D}, 1), k = rnd({N, H, D}, 2), v = rnd({N, H, D}, 3), r = rnd({g.num_positions(), D}, 4);
  Generator gen(5);
  auto plain = graph_attention(q, k, v, g.csr, r, attn_opts(0.0, false), gen);
  REQUIRE(gen.offset() == 0);  // evaluation draws nothing
  auto eval = graph_attention(q, k, v, g.csr, r, attn_opts(0.5, false), gen);
  require_equal(eval, plain, "eval ignores p");
  auto p0 = graph_attention(q, k, v, g.csr, r, attn_opts(0.0, true), gen);
  require_equal(p0, plain, "p = 0 in training");
  REQUIRE(gen.offset() == static_cast<uint64_t>(E * H));  // but reserves its counters
  auto d1 = graph_attention(q, k, v, g.csr, r, attn_opts(0.5), gen);
  auto d2 = graph_attention(q, k, v, g.csr, r, attn_opts(0.5), gen);
  REQUIRE(gen.offset() == static_cast<uint64_t>(3 * E * H));
  REQUIRE(d1.to_vector() != d2.to_vector());  // fresh masks
  REQUIRE(d1.to_vector() != plain.to_vector());
  // p = 1 drops everything
  auto all = graph_attention(q, k, v, g.csr, r, attn_opts(1.0), gen);
  require_close(all, std::vector<double>(static_cast<size_t>(N * H * D), 0.0));
  // kept weights are scaled by 1 / (1 - p): with v = 1 every output is sum_e a_e f_e, whose
  // expectation is 1; over 100 masks the mean of all outputs is 1 to within a few 0.001
  // (0.7 without the rescaling)
  auto v1 = ones<double>({N, H, D});
  double total = 0;
  const int reps = 100;
  for (int i = 0; i < reps; ++i) total += sum(graph_attention(q, k, v1, g.csr, r, attn_opts(0.3), gen)).item();
  REQUIRE(std::abs(total / (reps * N * H * D) - 1.0) < 0.03);
}

TEST_CASE("graph_attention: results do not depend on the thread count", "[attention][bpt]") {
  const BPTGraph g = build_bpt_graph({300, 77}, opts(4));
  const int64_t N = g.num_nodes(), H = 4, D = 16;
  REQUIRE(g.num_edges() * H * D > kParallelGrain);  // the parallel paths run
  auto once = [&](int threads) {
    set_num_threads(threads);
    auto q = rnd_t<float>({N, H, D}, 1).set_requires_grad(true);
    auto k = rnd_t<float>({N, H, D}, 2).set_requires_grad(true);
    auto v = rnd_t<float>({N, H, D}, 3).set_requires_grad(true);
    auto r = rnd_t<float>({g.num_positions(), D}, 4).set_requires_grad(true);
    Generator gen(3);
    auto o = graph_attention(q, k, v, g.csr, r, attn_opts(0.2), gen);
    sum(mul(o, rnd_t<float>({N, H, D}, 5))).backward();
    return std::vector<Tensor<float>>{o.detach(), q.grad(), k.grad(), v.grad(), r.grad()};
  };
  const int before = num_threads();
  auto a = once(1), b = once(2);
  set_num_threads(before);
  for (size_t i = 0; i < a.size(); ++i) require_equal(a[i], b[i], "tensor " + std::to_string(i));
}

TEST_CASE("graph_attention: errors", "[attention][bpt]") {
  GraphCSR c;
  c.indptr = {0, 2, 3};
  c.indices = {0, 1, 1};
  c.rel = {0, 1, 2};
  auto q = rnd({2, 2, 3}, 1), k = rnd({2, 2, 3}, 2), v = rnd({2, 2, 3}, 3), r = rnd({3, 3}, 4);
  const std::string op = "graph_attention";
  REQUIRE_THROWS_WITH(graph_attention(rnd({2, 6}, 1), k, v, c), Catch::Contains(op + ": q must be [N, H, D], got [2, 6]"));
  REQUIRE_THROWS_WITH(graph_attention(q, rnd({2, 3, 3}, 1), v, c),
                      Catch::Contains(op + ": k [2, 3, 3] must be [Nk, H, D] with q's H and D, q is [2, 2, 3]"));
  REQUIRE_THROWS_WITH(graph_attention(q, k, rnd({3, 2, 3}, 1), c), Catch::Contains(op + ": v [3, 2, 3] must have k's shape [2, 2, 3]"));
  REQUIRE_THROWS_WITH(graph_attention(rnd({3, 2, 3}, 1), k, v, c), Catch::Contains(op + ": graph has 2 rows but q has 3 query nodes [3, 2, 3]"));
  GraphCSR bad = c;
  bad.indices[2] = 2;
  REQUIRE_THROWS_WITH(graph_attention(q, k, v, bad), Catch::Contains(op + ": edge 2 has key node 2, out of range for 2 key nodes"));
  bad = c;
  bad.indptr = {1, 2, 3};
  REQUIRE_THROWS_WITH(graph_attention(q, k, v, bad), Catch::Contains(op + ": graph indptr must start with 0 (size rows + 1), got indptr[0] = 1"));
  bad = c;
  bad.indptr = {0, 2, 4};
  REQUIRE_THROWS_WITH(graph_attention(q, k, v, bad), Catch::Contains(op + ": graph indptr ends at 4 but there are 3 edge indices"));
  bad = c;
  bad.indptr = {0, 3, 2, 3};
  REQUIRE_THROWS_WITH(graph_attention(rnd({3, 2, 3}, 1), k, v, bad), Catch::Contains(op + ": graph indptr decreases at row 1 (3 -> 2)"));
  bad = c;
  bad.rel = {0, 1};
  REQUIRE_THROWS_WITH(graph_attention(q, k, v, bad), Catch::Contains(op + ": graph has 2 position ids for 3 edges"));
  bad = c;
  bad.rel = {0, -1, 0};
  REQUIRE_THROWS_WITH(graph_attention(q, k, v, bad), Catch::Contains(op + ": edge 1 has negative position id -1"));
  REQUIRE_THROWS_WITH(graph_attention(q, k, v, c, rnd({2, 3}, 1)),
                      Catch::Contains(op + ": edge 2 has position id 2, out of range for rel_k [2, 3] (2 positions)"));
  REQUIRE_THROWS_WITH(graph_attention(q, k, v, c, rnd({3, 4}, 1)),
                      Catch::Contains(op + ": rel_k must be [P, D] or [P, H, D] with q's H = 2 and D = 3, got [3, 4]"));
  REQUIRE_THROWS_WITH(graph_attention(q, k, v, c, rnd({3, 3, 3}, 1)), Catch::Contains(op + ": rel_k must be [P, D] or [P, H, D]"));
  bad = c;
  bad.rel.clear();
  REQUIRE_THROWS_WITH(graph_attention(q, k, v, bad, r), Catch::Contains(op + ": rel_k [3, 3] is given but the graph has no position ids"));
  REQUIRE_NOTHROW(graph_attention(q, k, v, bad));  // position ids are optional without rel_k
  REQUIRE_THROWS_WITH(graph_attention(q, k, v, c, r, attn_opts(1.5)), Catch::Contains(op + ": drop probability p must be in [0, 1], got 1.5"));
  GraphCSR twice = c;
  twice.indices = {1, 1, 0};
  REQUIRE_NOTHROW(graph_attention(q, k, v, twice));
  REQUIRE_THROWS_WITH(graph_attention_reference(q, k, v, twice),
                      Catch::Contains("graph_attention_reference: row 0 lists key node 1 twice; a dense mask cannot hold multi-edges"));
}

// ---------------------------------------------------------------- the module and helpers

TEST_CASE("BPTAttention: parameters carry the authors' names and shapes", "[attention][bpt]") {
  Generator gen(1);
  BPTAttention<double> m(12, 3, {}, gen);
  auto sd = m.state_dict();
  std::vector<std::string> names;
  for (auto& [n, t] : sd) names.push_back(n);
  REQUIRE(names == std::vector<std::string>{"embed_ak.weight", "proj_k.weight", "proj_o.weight", "proj_q.weight", "proj_v.weight"});
  REQUIRE(sd["proj_q.weight"].shape() == Shape{12, 12});
  REQUIRE(sd["proj_o.weight"].shape() == Shape{12, 12});
  REQUIRE(sd["embed_ak.weight"].shape() == Shape{1000, 4});  // MAX_ETYPE x d_k
  REQUIRE(m.d_k() == 4);
  REQUIRE_FALSE(m.proj_q->bias.defined());
  // Xavier-uniform bounds
  for (auto& [n, t] : sd) {
    INFO(n);
    const double bound = std::sqrt(6.0 / double(t.size(0) + t.size(1)));
    auto vals = t.to_vector();
    double mx = 0;
    for (double x : vals) mx = std::max(mx, std::abs(x));
    REQUIRE(mx <= bound);
    REQUIRE(mx > 0.8 * bound);
  }
  BPTAttentionOptions o;
  o.rel_pos = false;
  BPTAttention<double> plain(8, 2, o, gen);
  REQUIRE(plain.state_dict().size() == 4);
  REQUIRE_FALSE(plain.embed_ak);
  REQUIRE_THROWS_WITH(BPTAttention<double>(10, 3), Catch::Contains("BPTAttention: dim_model (10) must be a positive multiple of the number of heads (3)"));
  o.drop_a = -0.1;
  REQUIRE_THROWS_WITH(BPTAttention<double>(6, 3, o), Catch::Contains("BPTAttention: drop_a must be in [0, 1], got -0.1"));
}

TEST_CASE("BPTAttention: forward is projections around graph_attention", "[attention][bpt]") {
  const BPTGraph g = build_bpt_graph({6, 9}, opts(2));
  const int64_t N = g.num_nodes();
  Generator gen(2);
  BPTAttentionOptions o;
  o.num_positions = 40;
  o.drop_a = 0.25;
  BPTAttention<double> m(8, 2, o, gen);
  m.eval();
  auto x = rnd({N, 8}, 3);
  auto y = m(x, g);
  REQUIRE(y.shape() == Shape{N, 8});
  auto q = linear(x, m.proj_q->weight).view({N, 2, 4}), k = linear(x, m.proj_k->weight).view({N, 2, 4}),
       v = linear(x, m.proj_v->weight).view({N, 2, 4});
  auto a = graph_attention(q, k, v, g.csr, m.embed_ak->weight, attn_opts(0, false, 0.5));
  require_equal(y, linear(a.view({N, 8}), m.proj_o->weight), "eval forward");
  // training: dropout on the weights from the module's generator, E * H counters per call
  m.train();
  Generator dg(4);
  m.set_generator(&dg);
  auto y1 = m(x, g);
  REQUIRE(dg.offset() == static_cast<uint64_t>(g.num_edges() * 2));
  Generator dg2(4);
  auto a2 = graph_attention(q, k, v, g.csr, m.embed_ak->weight, attn_opts(0.25, true, 0.5), dg2);
  require_equal(y1, linear(a2.view({N, 8}), m.proj_o->weight), "train forward");
  REQUIRE(y1.to_vector() != y.to_vector());
  // position ids beyond the table are an error naming the op
  BPTAttentionOptions small;
  small.num_positions = 3;
  BPTAttention<double> s(8, 2, small, gen);
  REQUIRE_THROWS_WITH(s(x, g), Catch::Contains("graph_attention: edge"));
  REQUIRE_THROWS_WITH(s(rnd({N, 6}, 1), g), Catch::Contains("BPTAttention(8, h=2): input must be [N, 8], got ["));
}

TEST_CASE("BPTAttention: gradients match finite differences", "[attention][bpt]") {
  const BPTGraph g = build_bpt_graph({5, 2}, opts(1));
  const int64_t N = g.num_nodes();
  Generator gen(5);
  BPTAttentionOptions o;
  o.num_positions = g.num_positions();
  o.drop_a = 0.2;
  auto m = std::make_shared<BPTAttention<double>>(4, 2, o, gen);
  // Run the module on the tensors gradcheck perturbs: its members point at them.
  auto f = [&](const std::vector<TD>& xs) {
    m->proj_q->weight = xs[1];
    m->proj_k->weight = xs[2];
    m->proj_v->weight = xs[3];
    m->proj_o->weight = xs[4];
    m->embed_ak->weight = xs[5];
    Generator dg(8);
    m->set_generator(&dg);
    return m->forward(xs[0], g.csr);
  };
  auto sd = m->state_dict();
  REQUIRE_GRAD(f, rnd({N, 4}, 6), sd["proj_q.weight"], sd["proj_k.weight"], sd["proj_v.weight"], sd["proj_o.weight"],
               sd["embed_ak.weight"]);
}

TEST_CASE("bpt helpers: node inputs, token outputs and roots", "[attention][bpt]") {
  const BPTGraph g = build_bpt_graph({3, 1, 4}, opts(1));
  const int64_t N = g.num_nodes();  // 6 + 1 + 7
  REQUIRE(N == 14);
  auto x = rnd({3, 4, 2}, 1);
  auto h = bpt_node_inputs(x, g);
  REQUIRE(h.shape() == Shape{14, 2});
  auto xv = x.to_vector(), hv = h.to_vector();
  for (int64_t v = 0; v < N; ++v) {
    const BPTNode& nd = g.nodes[v];
    for (int64_t d = 0; d < 2; ++d) {
      const double want = nd.level == 0 ? xv[(nd.seq * 4 + nd.begin) * 2 + d] : 0.0;
      REQUIRE(hv[v * 2 + d] == want);
    }
  }
  auto y = rnd({N, 2}, 2);
  auto t = bpt_token_outputs(y, g, 5);
  REQUIRE(t.shape() == Shape{3, 5, 2});
  auto yv = y.to_vector(), tv = t.to_vector();
  for (int64_t b = 0; b < 3; ++b)
    for (int64_t p = 0; p < 5; ++p)
      for (int64_t d = 0; d < 2; ++d)
        REQUIRE(tv[(b * 5 + p) * 2 + d] == (p < g.lengths[b] ? yv[g.leaf(b, p) * 2 + d] : 0.0));
  auto roots = bpt_root_outputs(y, g);
  require_close(roots, {yv[5 * 2], yv[5 * 2 + 1], yv[6 * 2], yv[6 * 2 + 1], yv[13 * 2], yv[13 * 2 + 1]});
  REQUIRE_GRAD([&](const std::vector<TD>& a) { return bpt_node_inputs(a[0], g); }, x);
  REQUIRE_GRAD([&](const std::vector<TD>& a) { return bpt_token_outputs(a[0], g, 4); }, y);
  REQUIRE_GRAD([&](const std::vector<TD>& a) { return bpt_root_outputs(a[0], g); }, y);
  // end to end: tokens -> nodes -> attention -> tokens and roots
  Generator gen(3);
  BPTAttentionOptions o;
  o.num_positions = g.num_positions();
  BPTAttention<double> m(2, 1, o, gen);
  m.eval();
  auto out = bpt_token_outputs(m(bpt_node_inputs(x, g), g), g, 4);
  REQUIRE(out.shape() == Shape{3, 4, 2});
  REQUIRE(out.at({1, 1, 0}) == 0.0);  // padding of the one-token sequence
  REQUIRE(out.at({1, 0, 0}) != 0.0);
}

}  // namespace test_attention_bpt
