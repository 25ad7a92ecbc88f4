#pragma once
// Gradient clipping by global norm, torch.nn.utils.clip_grad_norm_ semantics: the norm is taken
// over all gradients together, and every gradient is scaled by min(1, max_norm / (norm + 1e-6)).
#include <cmath>
#include <limits>
#include <unordered_set>
#include <vector>

#include "txtcls/cuda/optim.hpp"
#include "txtcls/nn/module.hpp"

namespace txtcls::train {

namespace detail {

// Sum of |x|^p (or max |x| when p is infinite) over a contiguous array, in double. Partial sums
// are taken over fixed blocks and added in block order, so the result does not depend on the
// number of threads.
template <class T>
double norm_accumulate(const T* x, int64_t n, double p) {
  const bool inf = std::isinf(p);
  constexpr int64_t kBlock = 1 << 16;
  const int64_t nb = (n + kBlock - 1) / kBlock;
  std::vector<double> part(static_cast<size_t>(nb), 0.0);
#pragma omp parallel for schedule(static) if (nb > 1)
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t lo = b * kBlock, hi = std::min(n, lo + kBlock);
    double acc = 0;
    if (inf) {
      for (int64_t j = lo; j < hi; ++j) acc = std::max(acc, std::abs(static_cast<double>(x[j])));
    } else if (p == 2) {
      for (int64_t j = lo; j < hi; ++j) acc += static_cast<double>(x[j]) * static_cast<double>(x[j]);
    } else if (p == 1) {
      for (int64_t j = lo; j < hi; ++j) acc += std::abs(static_cast<double>(x[j]));
    } else {
      for (int64_t j = lo; j < hi; ++j) acc += std::pow(std::abs(static_cast<double>(x[j])), p);
    }
    part[b] = acc;
  }
  double total = 0;
  for (double v : part) total = inf ? std::max(total, v) : total + v;
  return total;
}

#ifdef TXTCLS_WITH_CUDA
// The GPU path: partial norms per fixed chunk of every gradient into one device buffer, their
// ordered sum and the coefficient computed on the device, the scaling reading it there; the
// host waits once, for the norm it returns.
template <class T>
double clip_grad_norm_cuda(const std::vector<Tensor<T>>& grads, double max_norm, double p) {
  int64_t chunks = 0;
  for (auto& g : grads) chunks += cuda::norm_chunks(g.numel());
  const Device dev = grads[0].device();
  Tensor<double> buf({chunks + 2}, dev);  // the partials, then the norm and the coefficient
  int64_t at = 0;
  for (auto& g : grads) {
    cuda::norm_partials<T>(g.data(), g.numel(), p, buf.data() + at);
    at += cuda::norm_chunks(g.numel());
  }
  cuda::norm_finish(buf.data(), chunks, p, max_norm, buf.data() + chunks);
  for (Tensor<T> g : grads) cuda::scale_unless_one<T>(g.data(), g.numel(), buf.data() + chunks + 1);  // handles share storage
  NoGradGuard ng;
  return buf.narrow(0, chunks, 1).cpu().data()[0];
}
#endif

}  // namespace detail

// Scales the gradients of `params` in place so that their joint norm is at most max_norm and
// returns the norm before clipping (0 when no parameter has a gradient). norm_type may be
// std::numeric_limits<double>::infinity() for the max norm. A non-finite norm propagates into
// the gradients, as in PyTorch without error_if_nonfinite.
template <class T>
double clip_grad_norm(const std::vector<Tensor<T>>& params, double max_norm, double norm_type = 2.0) {
  TXTCLS_CHECK(norm_type > 0, "clip_grad_norm: norm_type must be positive or infinity, got ", norm_type);
  TXTCLS_CHECK(max_norm >= 0, "clip_grad_norm: max_norm must be non-negative, got ", max_norm);
  std::vector<Tensor<T>> grads;
  std::unordered_set<const void*> seen;  // a tied parameter listed twice counts once
  for (auto& p : params) {
    Tensor<T> g = p.grad();
    if (!g.defined() || !seen.insert(g.impl_ptr().get()).second) continue;
    TXTCLS_CHECK(grads.empty() || g.device() == grads[0].device(), "clip_grad_norm: gradients on ",
                 grads[0].device().str(), " and ", g.device().str(), "; the norm is taken on one device");
    TXTCLS_CHECK(g.is_contiguous(), "clip_grad_norm: gradient of shape ", shape_str(g.shape()), " is not contiguous");
    grads.push_back(g);
  }
  if (grads.empty()) return 0.0;
#ifdef TXTCLS_WITH_CUDA
  if (grads[0].device().is_cuda()) return detail::clip_grad_norm_cuda(grads, max_norm, norm_type);
#endif
  txtcls::detail::require_cpu(grads[0], "clip_grad_norm");
  const bool inf = std::isinf(norm_type);
  double acc = 0;
  for (auto& g : grads) {
    double a = detail::norm_accumulate(g.data(), g.numel(), norm_type);
    acc = inf ? std::max(acc, a) : acc + a;
  }
  const double total = inf ? acc : norm_type == 2 ? std::sqrt(acc) : norm_type == 1 ? acc : std::pow(acc, 1.0 / norm_type);
  const double coef = max_norm / (total + 1e-6);
  if (coef >= 1.0) return total;  // PyTorch multiplies by exactly 1 here: a no-op
  const T c = static_cast<T>(coef);
  for (auto& g : grads) {
    T* d = g.data();
    const int64_t n = g.numel();
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
    for (int64_t j = 0; j < n; ++j) d[j] *= c;
  }
  return total;
}

template <class T>
double clip_grad_norm(const nn::NamedTensors<T>& params, double max_norm, double norm_type = 2.0) {
  std::vector<Tensor<T>> ps;
  for (auto& [n, p] : params) ps.push_back(p);
  return clip_grad_norm(ps, max_norm, norm_type);
}

}  // namespace txtcls::train
