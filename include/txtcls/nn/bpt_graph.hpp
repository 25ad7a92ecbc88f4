#pragma once
// The binary-partition graph of BP-Transformer (Ye et al. 2019), built as the authors' code
// builds it (graph_builder/builder.pyx, BinaryPartition), for a batch of sequences of any
// lengths. docs/bpt.md has the construction with a worked example, the position ids, and where
// the code departs from the paper. In short, for a sequence of n tokens:
//
// Nodes. Level 0 holds the n tokens; level l + 1 holds ceil(s_l / 2) nodes over the s_l nodes of
// level l, until a level has one node (the root). Node x of level l spans the tokens
// [x * 2^l, min((x + 1) * 2^l, n)). Ids run level by level (tokens first, root last), and the
// sequences of a batch follow one another. For n a power of two this is the paper's 2n - 1
// nodes; otherwise a level of odd size ends in a node with one child, so there are more.
//
// Edges, written (query <- key): every edge is an in-edge of the node that attends.
//   self loop      token i <- token i                              position id 0
//   affiliated     ancestor of token i at level j >= 1 <- token i  (2k+1) * min(j, clip)
//   left  context  token i <- t-th node to its left at level j     (2k+1) * min(j, clip) + 2t + 1
//   right context  token i <- t-th node to its right at level j    (2k+1) * min(j, clip) + 2t + 2
// Span nodes attend to their own tokens only (no self loop, no edge from other span nodes).
// Contexts run fine to coarse: k nodes per side and level (t = 0 .. k-1); after each level the
// pointer moves to the parent of the next unattended node, except that when that parent would
// also cover an already attended node, the unattended node itself is taken (from the level
// below) as the level's first context. The non-stray contexts of a token and its self loop tile
// the whole sequence exactly once ([0, i] with triu). With triu there are no right contexts.
//
// Stray edges. When a level below has an odd number of nodes, the authors' builder can take a
// "right child" one past that level's end, i.e. the first node of the next level; it becomes an
// extra right-context edge (often duplicating an existing pair with another position id).
// keep_stray_edges (default true) reproduces it, so edge lists equal the authors'; false drops it.
//
// Cost: O(n) nodes and O(n k log(n/k)) edges; every token has at most 2k(ceil(log2(n/k)) + 1)
// context edges and one affiliated edge per level.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "txtcls/ops/graph_attention.hpp"
#include "txtcls/ops/indexing.hpp"

namespace txtcls::nn {

struct BPTGraphOptions {
  int64_t k = 1;           // contexts per side and level (the authors' `step`)
  int64_t clip_dist = 10;  // levels >= clip_dist share position ids (the authors' default)
  bool triu = false;       // left contexts only (the authors' decoders and text classification batcher)
  bool keep_stray_edges = true;
};

enum class BPTEdgeType : uint8_t { self_loop, affiliated, left, right, stray_right };

struct BPTNode {
  int64_t seq;         // sequence of the batch
  int64_t level;       // 0: token; the last level of a sequence is its root
  int64_t index;       // position within the level
  int64_t begin, end;  // the tokens [begin, end) spanned, positions within the sequence
};

// One edge of a single sequence's graph, node ids local to the sequence.
struct BPTEdge {
  int64_t src;  // key: the node attended to
  int64_t dst;  // query: the node that attends
  int64_t rel;  // position id (the authors' etype)
  BPTEdgeType type;
};

// Level sizes n, ceil(n/2), ..., 1 of the partition of n >= 1 tokens.
inline std::vector<int64_t> bpt_level_sizes(int64_t n) {
  TXTCLS_CHECK(n >= 1, "bpt_level_sizes: a sequence needs at least one token, got length ", n);
  std::vector<int64_t> s{n};
  while (s.back() >= 2) s.push_back((s.back() + 1) / 2);
  return s;
}

inline int64_t bpt_num_nodes(int64_t n) {
  int64_t total = 0;
  for (int64_t s : bpt_level_sizes(n)) total += s;
  return total;
}

// Position id of an edge at level j; t is the context's rank on its side (0 for the others).
inline int64_t bpt_position_id(BPTEdgeType type, int64_t level, int64_t t, const BPTGraphOptions& opt) {
  const int64_t base = (2 * opt.k + 1) * std::min(level, opt.clip_dist);
  switch (type) {
    case BPTEdgeType::self_loop:
    case BPTEdgeType::affiliated: return base;
    case BPTEdgeType::left: return base + 2 * t + 1;
    default: return base + 2 * t + 2;
  }
}

// How many position ids the options can produce: (2k + 1) * (clip_dist + 1).
inline int64_t bpt_max_positions(const BPTGraphOptions& opt) { return (2 * opt.k + 1) * (opt.clip_dist + 1); }

inline void check_bpt_options(const BPTGraphOptions& opt, const char* op) {
  TXTCLS_CHECK(opt.k >= 1, op, ": k (contexts per side and level) must be at least 1, got ", opt.k);
  TXTCLS_CHECK(opt.clip_dist >= 0, op, ": clip_dist must be non-negative, got ", opt.clip_dist);
}

// Calls f(BPTEdge) for every edge of one sequence of n tokens, in the order the authors' builder
// emits them: token by token, level by level, k (right, left) pairs of contexts, then the edge
// to the level's ancestor (the self loop at level 0). Options and n are checked by the callers.
template <class F>
void for_each_bpt_edge(int64_t n, const BPTGraphOptions& opt, F&& f) {
  const std::vector<int64_t> size = bpt_level_sizes(n);
  const int64_t levels = static_cast<int64_t>(size.size()), k = opt.k;
  std::vector<int64_t> first(size.size() + 1, 0);  // id of each level's first node
  for (int64_t l = 0; l < levels; ++l) first[l + 1] = first[l] + size[l];
  for (int64_t i = 0; i < n; ++i) {
    // Next unattended position on each side, in units of the current level, and whether it is to
    // be taken from the level below (its parent would overlap what is already attended). The
    // flags are set by parity after each level and cleared only when used, as in the authors' code.
    int64_t left = i - 1, right = i + 1;
    bool left_below = false, right_below = false;
    for (int64_t j = 0; j < levels; ++j) {
      for (int64_t t = 0; t < k; ++t) {
        if (!opt.triu && right < size[j]) {
          const int64_t rel = bpt_position_id(BPTEdgeType::right, j, t, opt);
          if (right_below) {
            const int64_t child = 2 * right + 1;  // index in level j - 1
            const bool stray = child >= size[j - 1];
            if (!stray || opt.keep_stray_edges)
              f(BPTEdge{first[j - 1] + child, i, rel, stray ? BPTEdgeType::stray_right : BPTEdgeType::right});
            right_below = false;
          } else {
            f(BPTEdge{first[j] + right, i, rel, BPTEdgeType::right});
          }
        }
        ++right;
        if (left >= 0) {
          f(BPTEdge{left_below ? first[j - 1] + 2 * left : first[j] + left, i,
                    bpt_position_id(BPTEdgeType::left, j, t, opt), BPTEdgeType::left});
          left_below = false;
        }
        --left;
      }
      if ((left & 1) == 0) left_below = true;  // a left child: its parent covers an attended node
      if ((right & 1) == 1) right_below = true;
      left >>= 1;  // floor division, also for negative positions
      right >>= 1;
      const BPTEdgeType up = j == 0 ? BPTEdgeType::self_loop : BPTEdgeType::affiliated;
      f(BPTEdge{i, first[j] + (i >> j), bpt_position_id(up, j, 0, opt), up});
    }
  }
}

// The edges of one sequence of n tokens, in the authors' order (see for_each_bpt_edge).
inline std::vector<BPTEdge> bpt_sequence_edges(int64_t n, const BPTGraphOptions& opt = {}) {
  check_bpt_options(opt, "bpt_sequence_edges");
  TXTCLS_CHECK(n >= 1, "bpt_sequence_edges: a sequence needs at least one token, got length ", n);
  std::vector<BPTEdge> out;
  for_each_bpt_edge(n, opt, [&](const BPTEdge& e) { out.push_back(e); });
  return out;
}

// The graph of a batch: nodes, and edges as a CSR whose rows are the query nodes, each row's
// keys ascending (ties, from stray edges, by position id).
struct BPTGraph {
  BPTGraphOptions options;
  std::vector<int64_t> lengths;      // [B]
  std::vector<int64_t> node_offset;  // [B + 1]: sequence b owns nodes [node_offset[b], node_offset[b + 1])
  std::vector<BPTNode> nodes;        // [N]
  GraphCSR csr;                      // N rows; rel holds the position ids
  std::vector<BPTEdgeType> edge_type;  // [E], in CSR order

  int64_t batch_size() const { return static_cast<int64_t>(lengths.size()); }
  int64_t num_nodes() const { return static_cast<int64_t>(nodes.size()); }
  int64_t num_edges() const { return csr.num_edges(); }
  // 1 + the largest position id present (0 without edges): the rows a position table needs.
  int64_t num_positions() const {
    int64_t m = -1;
    for (int64_t r : csr.rel) m = std::max(m, r);
    return m + 1;
  }
  int64_t leaf(int64_t b, int64_t t) const { return node_offset[b] + t; }
  int64_t root(int64_t b) const { return node_offset[b + 1] - 1; }
  // The last token a node spans: the authors' per-node `pos`.
  int64_t position(int64_t node) const { return nodes[node].end - 1; }

  Tensor<int64_t> leaf_ids() const {
    std::vector<int64_t> ids;
    for (int64_t b = 0; b < batch_size(); ++b)
      for (int64_t t = 0; t < lengths[b]; ++t) ids.push_back(leaf(b, t));
    return from_vector<int64_t>(ids, {static_cast<int64_t>(ids.size())});
  }
  Tensor<int64_t> root_ids() const {
    std::vector<int64_t> ids;
    for (int64_t b = 0; b < batch_size(); ++b) ids.push_back(root(b));
    return from_vector<int64_t>(ids, {batch_size()});
  }
};

inline BPTGraph build_bpt_graph(const std::vector<int64_t>& lengths, const BPTGraphOptions& opt = {}) {
  check_bpt_options(opt, "build_bpt_graph");
  for (size_t b = 0; b < lengths.size(); ++b)
    TXTCLS_CHECK(lengths[b] >= 1, "build_bpt_graph: sequence ", b, " has length ", lengths[b],
                 "; every sequence needs at least one token");
  BPTGraph g;
  g.options = opt;
  g.lengths = lengths;
  g.node_offset.assign(1, 0);
  for (size_t b = 0; b < lengths.size(); ++b) {
    const int64_t n = lengths[b];
    const std::vector<int64_t> size = bpt_level_sizes(n);
    for (int64_t l = 0; l < static_cast<int64_t>(size.size()); ++l)
      for (int64_t x = 0; x < size[l]; ++x)
        g.nodes.push_back({static_cast<int64_t>(b), l, x, x << l, std::min((x + 1) << l, n)});
    g.node_offset.push_back(static_cast<int64_t>(g.nodes.size()));
  }
  const int64_t N = g.num_nodes();

  // Two visits of each sequence's edges: degrees first (so every array is allocated once), then
  // each edge into its query's row; finally each (short) row is sorted by key, then position id.
  GraphCSR& c = g.csr;
  c.indptr.assign(static_cast<size_t>(N + 1), 0);
  for (size_t b = 0; b < lengths.size(); ++b) {
    int64_t* deg = c.indptr.data() + g.node_offset[b] + 1;
    for_each_bpt_edge(lengths[b], opt, [&](const BPTEdge& e) { ++deg[e.dst]; });
  }
  for (int64_t v = 0; v < N; ++v) c.indptr[v + 1] += c.indptr[v];
  const int64_t E = c.indptr[N];
  c.indices.resize(static_cast<size_t>(E));
  c.rel.resize(static_cast<size_t>(E));
  g.edge_type.resize(static_cast<size_t>(E));
  std::vector<int64_t> fill(c.indptr.begin(), c.indptr.end() - 1);
  for (size_t b = 0; b < lengths.size(); ++b) {
    const int64_t off = g.node_offset[b];
    for_each_bpt_edge(lengths[b], opt, [&](const BPTEdge& e) {
      const int64_t x = fill[off + e.dst]++;
      c.indices[x] = e.src + off;
      c.rel[x] = e.rel;
      g.edge_type[x] = e.type;
    });
  }
  struct Slot {
    int64_t src, rel;
    BPTEdgeType type;
  };
  std::vector<Slot> row;
  for (int64_t v = 0; v < N; ++v) {
    const int64_t b = c.indptr[v], d = c.indptr[v + 1] - b;
    row.resize(static_cast<size_t>(d));
    for (int64_t t = 0; t < d; ++t) row[t] = {c.indices[b + t], c.rel[b + t], g.edge_type[b + t]};
    std::sort(row.begin(), row.end(), [](const Slot& x, const Slot& y) { return x.src != y.src ? x.src < y.src : x.rel < y.rel; });
    for (int64_t t = 0; t < d; ++t) c.indices[b + t] = row[t].src, c.rel[b + t] = row[t].rel, g.edge_type[b + t] = row[t].type;
  }
  return g;
}

namespace detail {
inline void check_bpt_batch(const BPTGraph& g, int64_t B, int64_t T, const char* op) {
  TXTCLS_CHECK(B == g.batch_size(), op, ": batch of ", B, " sequences but the graph has ", g.batch_size());
  for (int64_t b = 0; b < B; ++b)
    TXTCLS_CHECK(g.lengths[b] <= T, op, ": sequence ", b, " of the graph has length ", g.lengths[b],
                 ", longer than the padded length T = ", T);
}
}  // namespace detail

// x [B, T, D] (padded token features) -> [N, D] node features: token t of sequence b at its leaf,
// zeros at the span nodes (the authors' zero initialiser). Differentiable in x.
template <class T>
Tensor<T> bpt_node_inputs(const Tensor<T>& x, const BPTGraph& g) {
  TXTCLS_CHECK(x.dim() == 3, "bpt_node_inputs: x must be [B, T, D], got ", shape_str(x.shape()));
  const int64_t B = x.size(0), Tn = x.size(1), D = x.size(2);
  detail::check_bpt_batch(g, B, Tn, "bpt_node_inputs");
  std::vector<int64_t> src(static_cast<size_t>(g.num_nodes()), B * Tn);  // B*T: the appended zero row
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < g.lengths[b]; ++t) src[g.leaf(b, t)] = b * Tn + t;
  Tensor<T> rows = concat({x.reshape({B * Tn, D}), zeros<T>({1, D})}, 0);
  return index_select(rows, 0, from_vector<int64_t>(src, {g.num_nodes()}));
}

// h [N, D] node features -> [B, T, D] token features, zeros past each sequence's length.
template <class T>
Tensor<T> bpt_token_outputs(const Tensor<T>& h, const BPTGraph& g, int64_t T_len) {
  TXTCLS_CHECK(h.dim() == 2 && h.size(0) == g.num_nodes(), "bpt_token_outputs: h must be [N, D] with the graph's N = ",
               g.num_nodes(), " nodes, got ", shape_str(h.shape()));
  const int64_t B = g.batch_size(), N = g.num_nodes(), D = h.size(1);
  detail::check_bpt_batch(g, B, T_len, "bpt_token_outputs");
  std::vector<int64_t> src(static_cast<size_t>(B * T_len), N);  // N: the appended zero row
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < g.lengths[b]; ++t) src[b * T_len + t] = g.leaf(b, t);
  Tensor<T> rows = concat({h, zeros<T>({1, D})}, 0);
  return index_select(rows, 0, from_vector<int64_t>(src, {B * T_len})).reshape({B, T_len, D});
}

// h [N, D] -> [B, D], the root of each sequence (the authors' readout for classification).
template <class T>
Tensor<T> bpt_root_outputs(const Tensor<T>& h, const BPTGraph& g) {
  TXTCLS_CHECK(h.dim() == 2 && h.size(0) == g.num_nodes(), "bpt_root_outputs: h must be [N, D] with the graph's N = ",
               g.num_nodes(), " nodes, got ", shape_str(h.shape()));
  return index_select(h, 0, g.root_ids());
}

}  // namespace txtcls::nn
