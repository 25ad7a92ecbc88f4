#pragma once
// Host-side face of the CUDA graph attention kernels (kernels/graph_attention.cu). Compiles
// without nvcc. Semantics are those of ops/graph_attention.hpp (the CPU op is the
// specification); every pointer here is a device pointer to contiguous memory. The graph's CSR
// and the transposed edge groups of the backward are built on the host by the op and copied to
// the device once per call.
#include <cstdint>

namespace txtcls::cuda {

// One graph attention problem: q [Nq, H, D], k and v [Nk, H, D], the CSR of Nq rows, and an
// optional relative position table r, [P, D] (shared by the heads) or [P, H, D].
template <class T>
struct GraphAttnArgs {
  int64_t Nq = 0, Nk = 0, H = 0, D = 0, P = 0;
  const int64_t* indptr = nullptr;   // [Nq + 1]
  const int64_t* indices = nullptr;  // [E] key node of each edge
  const int64_t* rel = nullptr;      // [E] position id of each edge; null: no relative term
  const T* q = nullptr;
  const T* k = nullptr;
  const T* v = nullptr;
  const T* r = nullptr;  // null exactly when rel is
  bool r_per_head = false;
  T scale = T(1);
  // Dropout factor of edge e, head h: dropout_keep(seed, base, e*H + h, p) ? drop_scale : 0.
  bool drop = false;
  uint64_t seed = 0, base = 0;
  double p = 0;
  T drop_scale = T(1);
};

// Edges grouped by a key (key node or position id): the edges of group g are
// edge[start[g] .. start[g+1]) in increasing edge order; row[x] is the query row of edge[x].
// The position-id groups also come cut into runs of at most kGraphRelRun edges (a few ids, such
// as the self loops', hold a fraction of all edges): run c is edge[run_bound[c] .. run_bound[c+1]),
// group g owns runs run_first[g] .. run_first[g+1]). Each run is summed on its own, then the
// runs of a group in order: the work spreads over the device and the sums stay reproducible.
struct GraphEdgeGroups {
  const int64_t* start = nullptr;      // [groups + 1]
  const int64_t* edge = nullptr;       // [E]
  const int64_t* row = nullptr;        // [E]
  const int64_t* run_first = nullptr;  // [groups + 1] (position ids only)
  const int64_t* run_bound = nullptr;  // [runs + 1]
  int64_t runs = 0;
};

inline constexpr int64_t kGraphRelRun = 256;

// out [Nq, H, D] (every element written; an empty row gives zeros) and probs [E, H], the
// softmax weights before dropout, saved for the backward.
template <class T>
void graph_attention_forward(const GraphAttnArgs<T>& a, T* out, T* probs);

// The backward from go (the output's gradient, [Nq, H, D]) and the forward's probs. ds [E, H]
// is scratch (the score gradients). gq, gk, gv and gr (r's shape) may each be null (not
// needed); the non-null ones are written in full, each element summed in edge order (gr: each
// run by one thread, then the runs of an id by one thread). by_key groups the edges by key node
// (Nk groups; needed with gk or gv), by_rel by position id (P groups with runs; needed with gr).
// rel_part is scratch of by_rel.runs * Hr * D values (Hr = H for a [P, H, D] table, else 1).
template <class T>
void graph_attention_backward(const GraphAttnArgs<T>& a, const T* probs, const T* go, T* ds, T* gq, T* gk, T* gv,
                              T* gr, const GraphEdgeGroups& by_key, const GraphEdgeGroups& by_rel, T* rel_part);

}  // namespace txtcls::cuda
