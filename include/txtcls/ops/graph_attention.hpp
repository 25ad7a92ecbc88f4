#pragma once
// graph_attention: multi-head scaled dot-product attention restricted to the edges of a sparse
// graph (BP-Transformer's graph self-attention, docs/bpt.md), forward and backward side by side,
// plus graph_attention_reference, the same function built from dense core ops and a mask.
//
// The graph is a GraphCSR oriented for attention: row i lists the nodes that query node i
// attends to (its in-neighbours: keys and values), and optionally one relative position id per
// edge. For edge e = (i <- j) with position id p and head h,
//
//   s[e,h] = scale * q[i,h] . (k[j,h] + r[p,h])      r: rel_k [P, D] (shared by the heads, as in
//                                                       the BPT code) or [P, H, D]; absent: 0
//   a[e,h] = softmax of s[., h] over the edges of row i
//   o[i,h] = sum_e drop(a[e,h]) * v[j,h]              drop: inverted dropout on the weights
//
// A row without edges gives o[i] = 0 and no gradient (the "empty row" of ops/softmax.hpp).
// Multi-edges (the same key twice in a row) are allowed and are separate softmax terms.
//
// Dropout mask element (e, h) has index e * H + h of one draw of E * H counters (edges in CSR
// order); a training call reserves them even when p == 0, as ops/dropout.hpp does, and the
// backward recomputes the mask instead of storing it.
//
// Cost: forward and backward are O(E * H * D) gathers and FMAs with O(E * H) saved weights;
// nothing is O(N^2). The forward runs OpenMP over query rows; the backward computes per-edge
// score gradients over query rows, then the key/value gradients over key rows (a transposed
// CSR) and the rel_k gradient per position id, so every gradient element is summed by one
// thread in edge order: results are identical for any thread count.
//
// On a CUDA tensor (q; k, v and rel_k on the same device) the op runs kernels/graph_attention.cu
// with the same semantics, dropout counters and saved weights. The graph stays a host structure:
// each call copies its CSR to the device (one transfer), and the backward builds the edge
// groups by key node and by position id on the host and copies them (one more transfer).
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "txtcls/cuda/graph_attention.hpp"
#include "txtcls/ops/dropout.hpp"
#include "txtcls/ops/indexing.hpp"
#include "txtcls/ops/matmul.hpp"
#include "txtcls/ops/softmax.hpp"

namespace txtcls {

// A directed graph in compressed sparse rows: row i holds the edges into node i, i.e. the key
// nodes indices[indptr[i] .. indptr[i+1]) that query i attends to.
struct GraphCSR {
  std::vector<int64_t> indptr{0};  // [rows + 1], starts at 0, non-decreasing
  std::vector<int64_t> indices;    // [E] key node of each edge
  std::vector<int64_t> rel;        // [E] relative position id of each edge, or empty

  int64_t num_rows() const { return static_cast<int64_t>(indptr.size()) - 1; }
  int64_t num_edges() const { return static_cast<int64_t>(indices.size()); }
  int64_t degree(int64_t i) const { return indptr[i + 1] - indptr[i]; }
};

namespace detail {

// Structure checks shared by the ops; num_keys bounds the key indices.
inline void check_graph_csr(const GraphCSR& g, int64_t num_keys, const char* op) {
  TXTCLS_CHECK(!g.indptr.empty() && g.indptr.front() == 0, op, ": graph indptr must start with 0 (size rows + 1), got ",
               g.indptr.empty() ? std::string("an empty indptr") : "indptr[0] = " + std::to_string(g.indptr.front()));
  const int64_t rows = g.num_rows(), E = g.num_edges();
  TXTCLS_CHECK(g.indptr.back() == E, op, ": graph indptr ends at ", g.indptr.back(), " but there are ", E,
               " edge indices");
  TXTCLS_CHECK(g.rel.empty() || static_cast<int64_t>(g.rel.size()) == E, op, ": graph has ", g.rel.size(),
               " position ids for ", E, " edges (give one per edge, or none)");
  for (int64_t i = 0; i < rows; ++i)
    TXTCLS_CHECK(g.indptr[i + 1] >= g.indptr[i], op, ": graph indptr decreases at row ", i, " (", g.indptr[i], " -> ",
                 g.indptr[i + 1], ")");
  for (int64_t e = 0; e < E; ++e)
    TXTCLS_CHECK(g.indices[e] >= 0 && g.indices[e] < num_keys, op, ": edge ", e, " has key node ", g.indices[e],
                 ", out of range for ", num_keys, " key nodes");
  for (int64_t e = 0; e < static_cast<int64_t>(g.rel.size()); ++e)
    TXTCLS_CHECK(g.rel[e] >= 0, op, ": edge ", e, " has negative position id ", g.rel[e]);
}

// Shapes of graph_attention's operands; returns {Nq, Nk, H, D, P} (P = 0 without rel_k).
template <class T>
std::array<int64_t, 5> check_graph_attention_args(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v,
                                                  const GraphCSR& g, const Tensor<T>& rel_k, double p,
                                                  const char* op) {
  TXTCLS_CHECK(q.dim() == 3, op, ": q must be [N, H, D], got ", shape_str(q.shape()));
  TXTCLS_CHECK(k.dim() == 3 && k.size(1) == q.size(1) && k.size(2) == q.size(2), op, ": k ", shape_str(k.shape()),
               " must be [Nk, H, D] with q's H and D, q is ", shape_str(q.shape()));
  TXTCLS_CHECK(v.shape() == k.shape(), op, ": v ", shape_str(v.shape()), " must have k's shape ",
               shape_str(k.shape()));
  const int64_t Nq = q.size(0), Nk = k.size(0), H = q.size(1), D = q.size(2);
  TXTCLS_CHECK(g.num_rows() == Nq, op, ": graph has ", g.num_rows(), " rows but q has ", Nq, " query nodes ",
               shape_str(q.shape()));
  check_graph_csr(g, Nk, op);
  check_dropout_p(p, op);
  int64_t P = 0;
  if (rel_k.defined()) {
    TXTCLS_CHECK((rel_k.dim() == 2 && rel_k.size(1) == D) ||
                     (rel_k.dim() == 3 && rel_k.size(1) == H && rel_k.size(2) == D),
                 op, ": rel_k must be [P, D] or [P, H, D] with q's H = ", H, " and D = ", D, ", got ",
                 shape_str(rel_k.shape()));
    P = rel_k.size(0);
    TXTCLS_CHECK(static_cast<int64_t>(g.rel.size()) == g.num_edges(), op, ": rel_k ", shape_str(rel_k.shape()),
                 " is given but the graph has no position ids");
    for (int64_t e = 0; e < g.num_edges(); ++e)
      TXTCLS_CHECK(g.rel[e] < P, op, ": edge ", e, " has position id ", g.rel[e], ", out of range for rel_k ",
                   shape_str(rel_k.shape()), " (", P, " positions)");
  }
  return {Nq, Nk, H, D, P};
}

// The CPU paths' device check (the CUDA path of graph_attention checks that all operands share
// q's device instead).
template <class T>
void require_cpu_operands(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v, const Tensor<T>& rel_k,
                          const char* op) {
  for (const Tensor<T>* t : {&q, &k, &v}) require_cpu(*t, op);
  if (rel_k.defined()) require_cpu(rel_k, op);
}

// Everything the kernels read, as raw pointers into contiguous buffers.
template <class T>
struct GraphAttnProblem {
  const int64_t* indptr;
  const int64_t* indices;
  const int64_t* rel;  // null: no relative term
  int64_t Nq, Nk, H, D;
  const T *q, *k, *v, *r;  // r: rel_k, null when absent
  int64_t r_head_stride;   // 0 for a shared [P, D] table, D for [P, H, D]
  T scale;
  // dropout: factor of edge e, head h is keep(seed, base, e*H + h) ? drop_scale : 0
  bool drop;
  uint64_t seed, base;
  double p;
  T drop_scale;

  const T* r_row(int64_t e) const { return r + rel[e] * (r_head_stride ? H * D : D); }
  T factor(int64_t e, int64_t h) const {
    return dropout_keep(seed, base, static_cast<uint64_t>(e * H + h), p) ? drop_scale : T(0);
  }
};

template <class T>
using RowArr = Eigen::Array<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ColVec = Eigen::Array<T, Eigen::Dynamic, 1>;

// s[h] = q_i[h] . (k_j[h] + r[h]) for the H heads of one edge.
template <class T>
void edge_scores(const GraphAttnProblem<T>& pb, const T* qi, int64_t e, T* s) {
  using CMap = Eigen::Map<const RowArr<T>>;
  const int64_t H = pb.H, D = pb.D;
  // One reduction per head over rows of the operands themselves (never over scratch memory), so
  // the summation order does not depend on which thread's buffer receives the result.
  CMap Q(qi, H, D), K(pb.k + pb.indices[e] * H * D, H, D);
  if (!pb.r) {
    for (int64_t h = 0; h < H; ++h) s[h] = (Q.row(h) * K.row(h)).sum();
  } else if (pb.r_head_stride) {
    CMap R(pb.r_row(e), H, D);
    for (int64_t h = 0; h < H; ++h) s[h] = (Q.row(h) * (K.row(h) + R.row(h))).sum();
  } else {
    Eigen::Map<const Eigen::Array<T, 1, Eigen::Dynamic>> r(pb.r_row(e), D);
    for (int64_t h = 0; h < H; ++h) s[h] = (Q.row(h) * (K.row(h) + r)).sum();
  }
}

// Y[h, :] += w[h] * X[h, :] for the H rows of D contiguous values: one vectorised axpy per head.
template <class T>
inline void add_scaled_rows(T* __restrict y, const T* __restrict x, const T* w, int64_t H, int64_t D) {
  for (int64_t h = 0; h < H; ++h) {
    const T a = w[h];
    T* yh = y + h * D;
    const T* xh = x + h * D;
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) yh[d] += a * xh[d];
  }
}

// Y[h, :] += w[h] * (X[h, :] + r) with one row r shared by the heads.
template <class T>
inline void add_scaled_rows_plus(T* __restrict y, const T* __restrict x, const T* __restrict r, const T* w, int64_t H,
                                 int64_t D) {
  for (int64_t h = 0; h < H; ++h) {
    const T a = w[h];
    T* yh = y + h * D;
    const T* xh = x + h * D;
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) yh[d] += a * (xh[d] + r[d]);
  }
}

// Rows of per-edge scratch start at multiples of 16 elements of an Eigen-aligned buffer, so the
// vectorised exp and sums see the same alignment, hence give the same bits, on every thread.
inline int64_t padded16(int64_t n) { return (n + 15) & ~int64_t(15); }

// Forward over all rows: out [Nq, H, D], probs [E, H] (before dropout).
template <class T>
void graph_attention_forward(const GraphAttnProblem<T>& pb, T* out, T* probs) {
  const int64_t H = pb.H, D = pb.D, HD = H * D;
  const int64_t E = pb.indptr[pb.Nq];
#pragma omp parallel if (E * HD > kParallelGrain)
  {
    ColVec<T> buf;  // [H, padded deg]: one head's scores contiguous
    std::vector<T> sc(static_cast<size_t>(H));
#pragma omp for schedule(dynamic, 16)
    for (int64_t i = 0; i < pb.Nq; ++i) {
      const int64_t b = pb.indptr[i], deg = pb.indptr[i + 1] - b, ld = padded16(deg);
      T* oi = out + i * HD;
      std::fill(oi, oi + HD, T(0));
      if (deg == 0) continue;
      const T* qi = pb.q + i * HD;
      if (buf.size() < H * ld) buf.resize(H * ld);
      for (int64_t t = 0; t < deg; ++t) {
        edge_scores(pb, qi, b + t, sc.data());
        for (int64_t h = 0; h < H; ++h) buf[h * ld + t] = sc[h] * pb.scale;
      }
      for (int64_t h = 0; h < H; ++h) {
        Eigen::Map<ColVec<T>> z(buf.data() + h * ld, deg);
        const T mx = z.maxCoeff();
        z = (z - mx).exp();
        z *= T(1) / z.sum();
      }
      for (int64_t t = 0; t < deg; ++t) {
        const int64_t e = b + t;
        for (int64_t h = 0; h < H; ++h) {
          const T a = buf[h * ld + t];
          probs[e * H + h] = a;
          sc[h] = pb.drop ? a * pb.factor(e, h) : a;
        }
        add_scaled_rows(oi, pb.v + pb.indices[e] * HD, sc.data(), H, D);
      }
    }
  }
}

// Edges grouped by a key (key node or position id), each group in edge order: a counting sort.
struct EdgeGroups {
  std::vector<int64_t> start;  // [groups + 1]
  std::vector<int64_t> edge;   // [E]
};

inline EdgeGroups group_edges(const int64_t* key, int64_t E, int64_t groups) {
  EdgeGroups g;
  g.start.assign(static_cast<size_t>(groups + 1), 0);
  for (int64_t e = 0; e < E; ++e) ++g.start[key[e] + 1];
  for (int64_t i = 0; i < groups; ++i) g.start[i + 1] += g.start[i];
  g.edge.resize(static_cast<size_t>(E));
  std::vector<int64_t> fill(g.start.begin(), g.start.end() - 1);
  for (int64_t e = 0; e < E; ++e) g.edge[fill[key[e]]++] = e;
  return g;
}

// Backward. go: grad of the output [Nq, H, D]; probs [E, H] from the forward.
// Writes gq [Nq,H,D], gk/gv [Nk,H,D], gr (rel_k's shape) where non-null (zero-initialised).
template <class T>
void graph_attention_backward(const GraphAttnProblem<T>& pb, const T* probs, const T* go, T* gq, T* gk, T* gv,
                              T* gr, int64_t P) {
  using CMap = Eigen::Map<const RowArr<T>>;
  const int64_t H = pb.H, D = pb.D, HD = H * D, Nq = pb.Nq;
  const int64_t E = pb.indptr[Nq];
  // Pass 1, over query rows: ds[e,h] = d loss / d s[e,h] (scale folded in), w[e,h] = the
  // weight after dropout (for gv; the probabilities themselves without dropout), and gq.
  std::vector<T> ds(static_cast<size_t>(E * H)), w(gv && pb.drop ? static_cast<size_t>(E * H) : 0);
  std::vector<int64_t> row_of(static_cast<size_t>(E));
#pragma omp parallel if (E * HD > kParallelGrain)
  {
    std::vector<T> dp, c(static_cast<size_t>(H));
#pragma omp for schedule(dynamic, 16)
    for (int64_t i = 0; i < Nq; ++i) {
      const int64_t b = pb.indptr[i], deg = pb.indptr[i + 1] - b;
      if (deg == 0) continue;
      CMap G(go + i * HD, H, D);
      dp.resize(static_cast<size_t>(deg * H));
      std::fill(c.begin(), c.end(), T(0));
      for (int64_t t = 0; t < deg; ++t) {
        const int64_t e = b + t;
        row_of[e] = i;
        CMap V(pb.v + pb.indices[e] * HD, H, D);
        T* d = dp.data() + t * H;  // d loss / d (weight after dropout)
        for (int64_t h = 0; h < H; ++h) d[h] = (G.row(h) * V.row(h)).sum();
        for (int64_t h = 0; h < H; ++h) {
          const T a = probs[e * H + h];
          if (pb.drop) {
            const T f = pb.factor(e, h);
            if (gv) w[e * H + h] = a * f;
            d[h] *= f;
          }
          c[h] += a * d[h];
        }
      }
      for (int64_t t = 0; t < deg; ++t) {
        const int64_t e = b + t;
        for (int64_t h = 0; h < H; ++h) ds[e * H + h] = probs[e * H + h] * (dp[t * H + h] - c[h]) * pb.scale;
      }
      if (gq) {
        // gq[i,h] = sum_e ds[e,h] (k[j,h] + r[p,h])
        T* GQ = gq + i * HD;
        for (int64_t t = 0; t < deg; ++t) {
          const int64_t e = b + t;
          const T* s = ds.data() + e * H;
          if (pb.r && !pb.r_head_stride) {
            add_scaled_rows_plus(GQ, pb.k + pb.indices[e] * HD, pb.r_row(e), s, H, D);
          } else {
            add_scaled_rows(GQ, pb.k + pb.indices[e] * HD, s, H, D);
            if (pb.r) add_scaled_rows(GQ, pb.r_row(e), s, H, D);
          }
        }
      }
    }
  }
  // Pass 2, over key rows: gk[j,h] = sum ds[e,h] q[i,h], gv[j,h] = sum w[e,h] go[i,h].
  if (gk || gv) {
    const EdgeGroups by_key = group_edges(pb.indices, E, pb.Nk);
#pragma omp parallel for schedule(dynamic, 16) if (E * HD > kParallelGrain)
    for (int64_t j = 0; j < pb.Nk; ++j) {
      for (int64_t x = by_key.start[j]; x < by_key.start[j + 1]; ++x) {
        const int64_t e = by_key.edge[x], i = row_of[e];
        if (gk) add_scaled_rows(gk + j * HD, pb.q + i * HD, ds.data() + e * H, H, D);
        if (gv) add_scaled_rows(gv + j * HD, go + i * HD, (pb.drop ? w.data() : probs) + e * H, H, D);
      }
    }
  }
  // Pass 3, over position ids: gr[p,(h)] = sum over edges with id p of ds[e,h] q[i,h].
  if (gr && P > 0) {
    const EdgeGroups by_rel = group_edges(pb.rel, E, P);
    const int64_t rs = pb.r_head_stride ? HD : D;
#pragma omp parallel for schedule(dynamic, 1) if (E * HD > kParallelGrain)
    for (int64_t p = 0; p < P; ++p) {
      for (int64_t x = by_rel.start[p]; x < by_rel.start[p + 1]; ++x) {
        const int64_t e = by_rel.edge[x], i = row_of[e];
        const T* s = ds.data() + e * H;
        if (pb.r_head_stride) {
          add_scaled_rows(gr + p * rs, pb.q + i * HD, s, H, D);
        } else {
          T* __restrict row = gr + p * rs;
          for (int64_t h = 0; h < H; ++h) {  // heads in order
            const T a = s[h];
            const T* qh = pb.q + i * HD + h * D;
#pragma omp simd
            for (int64_t d = 0; d < D; ++d) row[d] += a * qh[d];
          }
        }
      }
    }
  }
}

// What graph_attention settles before it picks a device (begin_graph_attention): the checked
// sizes, the score scale and the dropout counters it reserves, E * H of them on either device.
template <class T>
struct GraphAttentionCall {
  std::array<int64_t, 5> dims{};  // Nq, Nk, H, D, P
  T scale = T(1);
  bool drop = false;              // dropout applies (training and p > 0)
  double p = 0.0;
  uint64_t seed = 0, base = 0;
};

#ifdef TXTCLS_WITH_CUDA
// Appends the edges grouped by key[e] (a stable counting sort, see group_edges) to buf as
// [start (groups + 1) | edge (E) | query row of each edge (E)], and with run_len > 0 the groups
// cut into runs of at most run_len edges, [first run of each group (groups + 1) | run bounds
// (runs + 1)]. Returns the five offsets (the last two 0 without runs) and the number of runs.
struct EdgeGroupOffsets {
  std::array<size_t, 5> at{};
  int64_t runs = 0;
};

inline EdgeGroupOffsets append_edge_groups(std::vector<int64_t>& buf, const int64_t* key, int64_t E, int64_t groups,
                                           const std::vector<int64_t>& row_of, int64_t run_len = 0) {
  const EdgeGroups g = group_edges(key, E, groups);
  EdgeGroupOffsets o;
  o.at[0] = buf.size();
  buf.insert(buf.end(), g.start.begin(), g.start.end());
  o.at[1] = buf.size();
  buf.insert(buf.end(), g.edge.begin(), g.edge.end());
  o.at[2] = buf.size();
  for (int64_t e : g.edge) buf.push_back(row_of[static_cast<size_t>(e)]);
  if (run_len > 0) {
    std::vector<int64_t> first(static_cast<size_t>(groups + 1)), bound;
    for (int64_t x = 0; x < groups; ++x) {
      first[x] = static_cast<int64_t>(bound.size());
      for (int64_t b = g.start[x]; b < g.start[x + 1]; b += run_len) bound.push_back(b);
    }
    o.runs = static_cast<int64_t>(bound.size());
    first[groups] = o.runs;
    bound.push_back(E);
    o.at[3] = buf.size();
    buf.insert(buf.end(), first.begin(), first.end());
    o.at[4] = buf.size();
    buf.insert(buf.end(), bound.begin(), bound.end());
  }
  return o;
}

// The GPU path of graph_attention, after begin_graph_attention. The CSR goes to the device in one
// copy, [indptr | indices | rel]. (On CPU tensors the same code runs the kernels' host emulation,
// tools/cuda_emulate.)
template <class T>
Tensor<T> graph_attention_cuda(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v, const GraphCSR& graph,
                               const Tensor<T>& rel_k, const GraphAttentionCall<T>& call, const char* op) {
  const Device dev = q.device();
  const auto& dims = call.dims;
  for (const Tensor<T>* t : {&k, &v, &rel_k})
    TXTCLS_CHECK(!t->defined() || t->device() == dev, op, ": q is on ", dev.str(), " but the operand of shape ",
                 shape_str(t->shape()), " is on ", t->device().str(), " (all operands must share a device)");
  const int64_t Nq = dims[0], Nk = dims[1], H = dims[2], D = dims[3], P = dims[4];
  const int64_t E = graph.num_edges();
  const bool has_rel = rel_k.defined();
  std::vector<int64_t> packed(graph.indptr);
  packed.insert(packed.end(), graph.indices.begin(), graph.indices.end());
  if (has_rel) packed.insert(packed.end(), graph.rel.begin(), graph.rel.end());
  const Tensor<int64_t> dgraph = from_vector<int64_t>(packed, {static_cast<int64_t>(packed.size())}, dev);
  const Tensor<T> qc = q.detach().contiguous(), kc = k.detach().contiguous(), vc = v.detach().contiguous();
  const Tensor<T> rc = has_rel ? rel_k.detach().contiguous() : Tensor<T>();
  // The kernels' view of the problem; the closure owns the buffers it points into.
  auto make_args = [=]() {
    cuda::GraphAttnArgs<T> a;
    a.Nq = Nq, a.Nk = Nk, a.H = H, a.D = D, a.P = P;
    a.indptr = dgraph.data();
    a.indices = dgraph.data() + (Nq + 1);
    a.rel = has_rel ? a.indices + E : nullptr;
    a.q = qc.data(), a.k = kc.data(), a.v = vc.data();
    a.r = has_rel ? rc.data() : nullptr;
    a.r_per_head = has_rel && rc.dim() == 3;
    a.scale = call.scale;
    a.drop = call.drop, a.seed = call.seed, a.base = call.base, a.p = call.p;
    a.drop_scale = dropout_scale<T>(call.p);
    return a;
  };

  Tensor<T> out({Nq, H, D}, dev);
  Tensor<T> probs({E, H}, dev);
  cuda::graph_attention_forward<T>(make_args(), out.data(), probs.data());

  const bool grad = autograd::any_requires_grad<T>({&q, &k, &v, &rel_k});
  auto saved = grad ? std::make_shared<const GraphCSR>(graph) : nullptr;  // the caller's may change
  autograd::record<T>(out, op, {q, k, v, rel_k},
                      [=, pdims = has_rel ? rc.shape() : Shape{}](const Tensor<T>& g, const std::vector<bool>& needs) {
                        TXTCLS_CHECK(g.device() == dev, op, " backward: the output gradient is on ", g.device().str(),
                                     " but the output on ", dev.str());
                        Tensor<T> gq = needs[0] ? Tensor<T>({Nq, H, D}, dev) : Tensor<T>();
                        Tensor<T> gk = needs[1] ? Tensor<T>({Nk, H, D}, dev) : Tensor<T>();
                        Tensor<T> gv = needs[2] ? Tensor<T>({Nk, H, D}, dev) : Tensor<T>();
                        Tensor<T> gr = needs[3] ? Tensor<T>(pdims, dev) : Tensor<T>();
                        if (H * D == 0) return std::vector<Tensor<T>>{gq, gk, gv, gr};
                        // Edge groups by key node (for gk, gv) and by position id (for gr), in one copy.
                        std::vector<int64_t> row_of(static_cast<size_t>(E)), buf;
                        for (int64_t i = 0; i < Nq; ++i)
                          for (int64_t e = saved->indptr[i]; e < saved->indptr[i + 1]; ++e) row_of[e] = i;
                        const bool by_key = needs[1] || needs[2], by_rel = needs[3] && P > 0;
                        EdgeGroupOffsets ko, ro;
                        if (by_key) ko = append_edge_groups(buf, saved->indices.data(), E, Nk, row_of);
                        if (by_rel) ro = append_edge_groups(buf, saved->rel.data(), E, P, row_of, cuda::kGraphRelRun);
                        const Tensor<int64_t> dgroups =
                            buf.empty() ? Tensor<int64_t>()
                                        : from_vector<int64_t>(buf, {static_cast<int64_t>(buf.size())}, dev);
                        auto groups = [&](bool use, const EdgeGroupOffsets& o) {
                          cuda::GraphEdgeGroups x;
                          if (!use) return x;
                          const int64_t* base = dgroups.data();
                          x.start = base + o.at[0], x.edge = base + o.at[1], x.row = base + o.at[2];
                          if (o.at[3]) x.run_first = base + o.at[3], x.run_bound = base + o.at[4], x.runs = o.runs;
                          return x;
                        };
                        const Tensor<T> gc = g.contiguous();
                        Tensor<T> ds({E, H}, dev);  // scratch: the score gradients
                        Tensor<T> rel_part({by_rel ? ro.runs * (pdims.size() == 3 ? H : 1) * D : 0}, dev);
                        cuda::graph_attention_backward<T>(make_args(), probs.data(), gc.data(), ds.data(),
                                                          needs[0] ? gq.data() : nullptr,
                                                          needs[1] ? gk.data() : nullptr,
                                                          needs[2] ? gv.data() : nullptr,
                                                          needs[3] ? gr.data() : nullptr, groups(by_key, ko),
                                                          groups(by_rel, ro), rel_part.data());
                        return std::vector<Tensor<T>>{gq, gk, gv, gr};
                      });
  return out;
}
#endif

}  // namespace detail

// Options of graph_attention and graph_attention_reference.
struct GraphAttentionOptions {
  std::optional<double> scale;  // score multiplier; default 1 / sqrt(D)
  double dropout = 0.0;         // drop probability of the attention weights
  bool training = true;         // dropout (and its counter reservation) only while training
};

namespace detail {
template <class T>
GraphAttentionCall<T> begin_graph_attention(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v,
                                            const GraphCSR& graph, const Tensor<T>& rel_k,
                                            const GraphAttentionOptions& opt, Generator& gen, const char* op) {
  GraphAttentionCall<T> c;
  c.dims = check_graph_attention_args(q, k, v, graph, rel_k, opt.dropout, op);
  const int64_t H = c.dims[2], D = c.dims[3];
  c.seed = gen.seed();
  c.base = opt.training ? gen.reserve(static_cast<uint64_t>(graph.num_edges() * H)) : 0;
  c.drop = opt.training && opt.dropout > 0.0;
  c.p = opt.dropout;
  c.scale = static_cast<T>(opt.scale ? *opt.scale : 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(D, 1))));
  return c;
}
}  // namespace detail

// q [Nq, H, D], k and v [Nk, H, D], graph with Nq rows and keys in [0, Nk); rel_k (optional)
// [P, D] or [P, H, D] indexed by the graph's position ids -> [Nq, H, D]. See the top of the file.
template <class T>
Tensor<T> graph_attention(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v, const GraphCSR& graph,
                          const Tensor<T>& rel_k = Tensor<T>(), const GraphAttentionOptions& opt = {},
                          Generator& gen = default_generator()) {
  const char* op = "graph_attention";
  const detail::GraphAttentionCall<T> call = detail::begin_graph_attention(q, k, v, graph, rel_k, opt, gen, op);
#ifdef TXTCLS_WITH_CUDA
  if (q.device().is_cuda()) return detail::graph_attention_cuda(q, k, v, graph, rel_k, call, op);
#endif
  const int64_t Nq = call.dims[0], Nk = call.dims[1], H = call.dims[2], D = call.dims[3], P = call.dims[4];
  const int64_t E = graph.num_edges();
  const uint64_t seed = call.seed, base = call.base;
  const bool drop = call.drop;
  const T scale = call.scale;
  detail::require_cpu_operands(q, k, v, rel_k, op);

  // Saved for backward: contiguous detached operands and, when a gradient will be needed, a copy
  // of the graph (the caller's may change before backward runs).
  const bool grad = autograd::any_requires_grad<T>({&q, &k, &v, &rel_k});
  auto saved = grad ? std::make_shared<const GraphCSR>(graph) : nullptr;
  Tensor<T> qc = q.detach().contiguous(), kc = k.detach().contiguous(), vc = v.detach().contiguous();
  Tensor<T> rc = rel_k.defined() ? rel_k.detach().contiguous() : Tensor<T>();
  auto problem = [=](const GraphCSR& g) {
    detail::GraphAttnProblem<T> pb{};
    pb.indptr = g.indptr.data();
    pb.indices = g.indices.data();
    pb.rel = rc.defined() ? g.rel.data() : nullptr;
    pb.Nq = Nq, pb.Nk = Nk, pb.H = H, pb.D = D;
    pb.q = qc.data(), pb.k = kc.data(), pb.v = vc.data();
    pb.r = rc.defined() ? rc.data() : nullptr;
    pb.r_head_stride = rc.defined() && rc.dim() == 3 ? D : 0;
    pb.scale = scale;
    pb.drop = drop, pb.seed = seed, pb.base = base, pb.p = opt.dropout;
    pb.drop_scale = detail::dropout_scale<T>(opt.dropout);
    return pb;
  };

  Tensor<T> out({Nq, H, D});
  Tensor<T> probs({E, H});
  if (Nq * H * D > 0) detail::graph_attention_forward(problem(graph), out.data(), probs.data());

  autograd::record<T>(out, op, {q, k, v, rel_k},
                      [=, pdims = rc.defined() ? rc.shape() : Shape{}](const Tensor<T>& g, const std::vector<bool>& needs) {
                        Tensor<T> gq = needs[0] ? zeros<T>({Nq, H, D}) : Tensor<T>();
                        Tensor<T> gk = needs[1] ? zeros<T>({Nk, H, D}) : Tensor<T>();
                        Tensor<T> gv = needs[2] ? zeros<T>({Nk, H, D}) : Tensor<T>();
                        Tensor<T> gr = needs[3] ? zeros<T>(pdims) : Tensor<T>();
                        if (E > 0 && H * D > 0) {
                          Tensor<T> gc = g.contiguous();
                          detail::graph_attention_backward(problem(*saved), probs.data(), gc.data(),
                                                           needs[0] ? gq.data() : nullptr,
                                                           needs[1] ? gk.data() : nullptr,
                                                           needs[2] ? gv.data() : nullptr,
                                                           needs[3] ? gr.data() : nullptr, P);
                        }
                        return std::vector<Tensor<T>>{gq, gk, gv, gr};
                      });
  return out;
}

// The same function as graph_attention, built from dense core ops (matmul, gather, masked
// softmax, mul) over [H, Nq, Nk] scores with a 0 / -inf mask off the graph's edges: O(Nq * Nk)
// memory, for tests. Dropout draws the same counters as graph_attention (mask element e*H + h),
// so both agree for the same generator state. Multi-edges cannot be expressed by a mask and are
// an error here.
template <class T>
Tensor<T> graph_attention_reference(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v,
                                    const GraphCSR& graph, const Tensor<T>& rel_k = Tensor<T>(),
                                    const GraphAttentionOptions& opt = {}, Generator& gen = default_generator()) {
  const char* op = "graph_attention_reference";
  const detail::GraphAttentionCall<T> call = detail::begin_graph_attention(q, k, v, graph, rel_k, opt, gen, op);
  detail::require_cpu_operands(q, k, v, rel_k, op);
  const int64_t Nq = call.dims[0], Nk = call.dims[1], H = call.dims[2], P = call.dims[4];
  const uint64_t seed = call.seed, base = call.base;

  // Dense edge maps: mask [Nq, Nk] (0 on edges, -inf elsewhere), position ids [H, Nq, Nk], and
  // the dropout factors [H, Nq, Nk].
  Tensor<T> mask = full<T>({Nq, Nk}, -std::numeric_limits<T>::infinity());
  Tensor<int64_t> pos = zeros<int64_t>({H, Nq, Nk});
  const bool drop = call.drop;
  Tensor<T> factors = drop ? zeros<T>({H, Nq, Nk}) : Tensor<T>();
  const T dscale = detail::dropout_scale<T>(opt.dropout);
  for (int64_t i = 0; i < Nq; ++i)
    for (int64_t e = graph.indptr[i]; e < graph.indptr[i + 1]; ++e) {
      const int64_t j = graph.indices[e];
      TXTCLS_CHECK(mask.data()[i * Nk + j] != T(0), op, ": row ", i, " lists key node ", j,
                   " twice; a dense mask cannot hold multi-edges");
      mask.data()[i * Nk + j] = T(0);
      for (int64_t h = 0; h < H; ++h) {
        if (P > 0) pos.data()[(h * Nq + i) * Nk + j] = graph.rel[e];
        if (drop)
          factors.data()[(h * Nq + i) * Nk + j] =
              dropout_keep(seed, base, static_cast<uint64_t>(e * H + h), opt.dropout) ? dscale : T(0);
      }
    }

  Tensor<T> Q = q.permute({1, 0, 2}), K = k.permute({1, 0, 2}), V = v.permute({1, 0, 2});  // [H, N, D]
  Tensor<T> s = matmul(Q, K.transpose(-1, -2));                                            // [H, Nq, Nk]
  if (P > 0 && Nk > 0) {
    // q . r[p] for every position id, then picked per (i, j) by the edge's id.
    Tensor<T> qr = rel_k.dim() == 2 ? matmul(Q, rel_k.t()) : matmul(Q, rel_k.permute({1, 2, 0}));  // [H, Nq, P]
    s = add(s, gather(qr, 2, pos));
  }
  Tensor<T> a = softmax(mul(s, call.scale), -1, mask);
  if (drop) a = mul(a, factors);
  return matmul(a, V).permute({1, 0, 2}).contiguous();
}

}  // namespace txtcls
