#pragma once
// Embedding lookup: rows of a [V, D] weight gathered by integer ids of any shape. The backward
// scatter-adds the output gradient into a dense [V, D] gradient without atomics: positions are
// sorted by id, and each id's rows are summed by one thread in position order, so the result is
// bitwise identical for any thread count.
#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "txtcls/cuda/gather.hpp"
#include "txtcls/ops/indexing.hpp"

namespace txtcls {

namespace detail {

// The first id outside [0, V) as an error that names the id, its position and V.
inline void check_ids_in_range(const int64_t* ids, int64_t n, int64_t V, const Shape& ids_shape, const char* op) {
  for (int64_t i = 0; i < n; ++i)
    TXTCLS_CHECK(ids[i] >= 0 && ids[i] < V, op, ": id ", ids[i], " at position ", index_position_str(i, ids_shape),
                 " of ids ", shape_str(ids_shape), " is out of range for a vocabulary of V = ", V, " rows");
}

// gw[V, D] (zero-initialised) += rows of g[n, D] at ids, skipping `skip_id`.
template <class T>
void embedding_backward_kernel(T* gw, const T* g, const int64_t* ids, int64_t n, int64_t D, int64_t skip_id) {
  std::vector<std::pair<int64_t, int64_t>> order;  // (id, position): sorting groups ids, keeps position order
  order.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] != skip_id) order.emplace_back(ids[i], i);
  std::sort(order.begin(), order.end());
  std::vector<int64_t> starts;  // segment boundaries, one segment per distinct id
  for (size_t k = 0; k < order.size(); ++k)
    if (k == 0 || order[k].first != order[k - 1].first) starts.push_back(static_cast<int64_t>(k));
  starts.push_back(static_cast<int64_t>(order.size()));
  const int64_t segments = static_cast<int64_t>(starts.size()) - 1;
#pragma omp parallel for schedule(dynamic, 16) if (static_cast<int64_t>(order.size()) * D > kParallelGrain)
  for (int64_t s = 0; s < segments; ++s) {
    T* dst = gw + order[starts[s]].first * D;
    for (int64_t k = starts[s]; k < starts[s + 1]; ++k) {
      const T* src = g + order[k].second * D;
      for (int64_t j = 0; j < D; ++j) dst[j] += src[j];
    }
  }
}

#ifdef TXTCLS_WITH_CUDA
// The GPU path: ids are checked and (for the backward) sorted into segments on the host, where
// a batch is built; the gather and the per-segment sums run on the device.
template <class T>
Tensor<T> embedding_cuda(const Tensor<T>& weight, const Tensor<int64_t>& ids, int64_t padding_idx) {
  const int64_t V = weight.size(0), D = weight.size(1);
  Tensor<int64_t> host = ids.cpu().contiguous().clone();
  const int64_t n = host.numel();
  check_ids_in_range(host.data(), n, V, ids.shape(), "embedding");
  Tensor<int64_t> dev = host.to(weight.device());
  Tensor<T> w = weight.detach().contiguous();
  Shape os = ids.shape();
  os.push_back(D);
  Tensor<T> out(os, weight.device());
  cuda::embedding_forward<T>(w.data(), dev.data(), out.data(), n, D);
  autograd::record<T>(out, "embedding", {weight}, [host, V, D, padding_idx, device = weight.device()](
                                                      const Tensor<T>& g, const std::vector<bool>&) {
    const int64_t* pid = host.data();
    std::vector<int64_t> order;
    for (int64_t i = 0; i < host.numel(); ++i)
      if (pid[i] != padding_idx) order.push_back(i);
    std::stable_sort(order.begin(), order.end(), [pid](int64_t a, int64_t b) { return pid[a] < pid[b]; });
    std::vector<int64_t> start, id;
    for (size_t k = 0; k < order.size(); ++k)
      if (k == 0 || pid[order[k]] != pid[order[k - 1]]) start.push_back(static_cast<int64_t>(k)), id.push_back(pid[order[k]]);
    start.push_back(static_cast<int64_t>(order.size()));
    const int64_t segments = static_cast<int64_t>(id.size());
    auto to_dev = [&](const std::vector<int64_t>& v) {
      return v.empty() ? Tensor<int64_t>() : from_vector<int64_t>(v, {static_cast<int64_t>(v.size())}).to(device);
    };
    Tensor<int64_t> d_order = to_dev(order), d_start = to_dev(start), d_id = to_dev(id);
    Tensor<T> gc = g.contiguous();
    Tensor<T> gw({V, D}, device);
    cuda::embedding_backward<T>(gc.data(), segments ? d_order.data() : nullptr, d_start.data(),
                                segments ? d_id.data() : nullptr, segments, gw.data(), V, D);
    return std::vector<Tensor<T>>{gw};
  });
  return out;
}
#endif

}  // namespace detail

// weight [V, D], ids (any shape, values in [0, V)) -> ids.shape + [D]. The row at padding_idx is
// returned as stored but receives no gradient; padding_idx = -1 means no padding row.
template <class T>
Tensor<T> embedding(const Tensor<T>& weight, const Tensor<int64_t>& ids, int64_t padding_idx = -1) {
  TXTCLS_CHECK(weight.dim() == 2, "embedding: weight must be [V, D], got ", shape_str(weight.shape()));
  const int64_t V = weight.size(0), D = weight.size(1);
  TXTCLS_CHECK(padding_idx >= -1 && padding_idx < V, "embedding: padding_idx ", padding_idx,
               " must be -1 (none) or in [0, ", V, ") for weight ", shape_str(weight.shape()));
#ifdef TXTCLS_WITH_CUDA
  if (weight.device().is_cuda()) return detail::embedding_cuda(weight, ids, padding_idx);
#endif
  detail::require_cpu(weight, "embedding");
  detail::require_cpu(ids, "embedding");
  Tensor<int64_t> idc = ids.clone();  // own copy: a caller may refill its id buffer before backward
  const int64_t n = idc.numel();
  const int64_t* pid = idc.data();
  detail::check_ids_in_range(pid, n, V, ids.shape(), "embedding");

  Tensor<T> w = weight.detach().contiguous();
  Shape os = ids.shape();
  os.push_back(D);
  Tensor<T> out(os);
  const T* pw = w.data();
  T* po = out.data();
  if (D > 0) {
#pragma omp parallel for schedule(static) if (n * D > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) std::memcpy(po + i * D, pw + pid[i] * D, static_cast<size_t>(D) * sizeof(T));
  }

  autograd::record<T>(out, "embedding", {weight}, [idc, V, D, padding_idx](const Tensor<T>& g, const std::vector<bool>&) {
    Tensor<T> gc = g.contiguous();
    Tensor<T> gw = zeros<T>({V, D});
    detail::embedding_backward_kernel(gw.data(), gc.data(), idc.data(), idc.numel(), D, padding_idx);
    return std::vector<Tensor<T>>{gw};
  });
  return out;
}

}  // namespace txtcls
