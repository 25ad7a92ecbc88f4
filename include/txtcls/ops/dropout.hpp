#pragma once
// Dropout family, forward and backward side by side:
//   dropout            inverted elementwise dropout;
//   embedding_dropout  AWD-LSTM's embedded_dropout: whole rows (words) of the embedding matrix;
//   locked_dropout     variational dropout: one mask per (sequence, feature) shared over time.
//
// Masks come from the Philox stream of the Generator. A training call reserves one counter per
// mask element at base = gen.reserve(n) and keeps element i iff philox_uniform(seed, base, i) >= p.
// That uniform lies in (0, 1], so P(keep) = 1 - p (to within 2^-53), and a kept value is scaled
// by 1 / (1 - p) so the expectation is unchanged.
//
// The mask is NOT stored for backward: it is a pure function of (seed, base, i), so the backward
// recomputes it. That costs one Philox block per mask element (about as much as the forward),
// and saves keeping a numel-sized mask alive for every dropout site until backward runs; it is
// also exactly what a CUDA kernel does, so masks agree bit for bit across devices and thread
// counts.
//
// Counter consumption depends only on the shape, never on p: a training call reserves its
// counters even when p == 0 or p == 1, so changing a rate never shifts later draws.
// Evaluation calls (training == false) reserve nothing.
#include <vector>

#include "txtcls/cuda/dropout.hpp"
#include "txtcls/ops/dropout_mask.hpp"
#include "txtcls/tensor/random.hpp"
#include "txtcls/tensor/views.hpp"

namespace txtcls {

namespace detail {

inline void check_dropout_p(double p, const char* op) {
  TXTCLS_CHECK(p >= 0.0 && p <= 1.0, op, ": drop probability p must be in [0, 1], got ", p);
}

// The per-element scale of a kept value; 0 when everything is dropped (p == 1).
template <class T>
T dropout_scale(double p) {
  return p < 1.0 ? static_cast<T>(1.0 / (1.0 - p)) : T(0);
}

// y[i] = x[i] * (keep(i) ? scale : 0) over n contiguous elements. Multiplying (rather than
// selecting) lets a NaN in a dropped position still propagate, as in PyTorch.
template <class T>
void dropout_elementwise(const T* x, T* y, int64_t n, uint64_t seed, uint64_t base, double p, T scale) {
#pragma omp parallel for schedule(static) if (n > kParallelGrain / 8)
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * (dropout_keep(seed, base, static_cast<uint64_t>(i), p) ? scale : T(0));
}

// Factors (0 or scale) of the m mask elements of one draw.
template <class T>
std::vector<T> dropout_factors(int64_t m, uint64_t seed, uint64_t base, double p, T scale) {
  std::vector<T> f(static_cast<size_t>(m));
#pragma omp parallel for schedule(static) if (m > kParallelGrain / 8)
  for (int64_t i = 0; i < m; ++i) f[i] = dropout_keep(seed, base, static_cast<uint64_t>(i), p) ? scale : T(0);
  return f;
}

// x viewed as [A, M, K] (contiguous); the mask is [A, Km] with Km == K (one factor per feature,
// shared over M) or Km == 1 (one factor per outer index). y = x * factor.
template <class T>
void apply_shared_mask(const T* x, T* y, int64_t A, int64_t M, int64_t K, int64_t Km, const std::vector<T>& f) {
  const int64_t rows = A * M;
  const T* pf = f.data();
#pragma omp parallel for schedule(static) if (rows * K > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t a = r / M;
    const T* xs = x + r * K;
    T* ys = y + r * K;
    if (Km == 1) {
      const T s = pf[a];
      for (int64_t k = 0; k < K; ++k) ys[k] = xs[k] * s;
    } else {
      const T* fs = pf + a * Km;
      for (int64_t k = 0; k < K; ++k) ys[k] = xs[k] * fs[k];
    }
  }
}

// The shared-mask ops (embedding and locked dropout): forward and a backward that redraws the
// same factors from (seed, base).
template <class T>
Tensor<T> shared_mask_dropout(const Tensor<T>& x, int64_t A, int64_t M, int64_t K, int64_t Km, double p,
                              Generator& gen, const char* op) {
  const uint64_t seed = gen.seed(), base = gen.reserve(static_cast<uint64_t>(A * Km));
  const T scale = dropout_scale<T>(p);
  // y = x * factor on x's device; the backward applies the same redrawn factors to g.
  auto apply = [=](const Tensor<T>& in) {
    Tensor<T> c = in.detach().contiguous();
    Tensor<T> y(c.shape(), c.device());
#ifdef TXTCLS_WITH_CUDA
    if (c.device().is_cuda()) {
      cuda::shared_mask_dropout<T>(c.data(), y.data(), A, M, K, Km, seed, base, p, scale);
      return y;
    }
#endif
    require_cpu(c, op);
    apply_shared_mask(c.data(), y.data(), A, M, K, Km, dropout_factors<T>(A * Km, seed, base, p, scale));
    return y;
  };
  Tensor<T> out = apply(x);
  autograd::record<T>(out, op, {x}, [apply](const Tensor<T>& g, const std::vector<bool>&) {
    return std::vector<Tensor<T>>{apply(g)};
  });
  return out;
}

}  // namespace detail

// Inverted dropout: each element is zeroed with probability p, survivors are scaled by
// 1 / (1 - p). Returns x itself when !training or p == 0; zeros when p == 1.
template <class T>
Tensor<T> dropout(const Tensor<T>& x, double p, Generator& gen, bool training = true) {
  detail::check_dropout_p(p, "dropout");
  if (!training) return x;
  const uint64_t seed = gen.seed(), base = gen.reserve(static_cast<uint64_t>(x.numel()));
  if (p == 0.0) return x;
  const T scale = detail::dropout_scale<T>(p);
  auto apply = [=](const Tensor<T>& in) {
    Tensor<T> c = in.detach().contiguous();
    Tensor<T> y(c.shape(), c.device());
#ifdef TXTCLS_WITH_CUDA
    if (c.device().is_cuda()) {
      cuda::dropout<T>(c.data(), y.data(), c.numel(), seed, base, p, scale);
      return y;
    }
#endif
    detail::require_cpu(c, "dropout");
    detail::dropout_elementwise(c.data(), y.data(), c.numel(), seed, base, p, scale);
    return y;
  };
  Tensor<T> out = apply(x);
  autograd::record<T>(out, "dropout", {x}, [apply](const Tensor<T>& g, const std::vector<bool>&) {
    return std::vector<Tensor<T>>{apply(g)};
  });
  return out;
}

// AWD-LSTM embedding dropout: weight [V, D] -> weight with whole rows zeroed with probability p
// and the surviving rows scaled by 1 / (1 - p). Look the result up with embedding(): every
// occurrence of a dropped word in the batch is then zero. Mask element r is word r.
template <class T>
Tensor<T> embedding_dropout(const Tensor<T>& weight, double p, Generator& gen, bool training = true) {
  detail::check_dropout_p(p, "embedding_dropout");
  TXTCLS_CHECK(weight.dim() == 2, "embedding_dropout: weight must be [V, D], got ", shape_str(weight.shape()));
  if (!training) return weight;
  const int64_t V = weight.size(0), D = weight.size(1);
  if (p == 0.0) {
    gen.reserve(static_cast<uint64_t>(V));
    return weight;
  }
  return detail::shared_mask_dropout(weight, V, 1, D, 1, p, gen, "embedding_dropout");
}

// Locked (variational) dropout: x [B, T, D]; one mask per (b, d), the same at every time step.
// Mask element (b, d) has index b * D + d.
template <class T>
Tensor<T> locked_dropout(const Tensor<T>& x, double p, Generator& gen, bool training = true) {
  detail::check_dropout_p(p, "locked_dropout");
  TXTCLS_CHECK(x.dim() == 3, "locked_dropout: input must be [B, T, D], got ", shape_str(x.shape()));
  if (!training) return x;
  const int64_t B = x.size(0), Tn = x.size(1), D = x.size(2);
  if (p == 0.0) {
    gen.reserve(static_cast<uint64_t>(B * D));
    return x;
  }
  return detail::shared_mask_dropout(x, B, Tn, D, D, p, gen, "locked_dropout");
}

}  // namespace txtcls
