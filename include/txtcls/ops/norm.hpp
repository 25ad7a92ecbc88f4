#pragma once
// Normalisations over the last dim, with fused forward and backward kernels:
//   layer_norm(x, weight, bias, eps)  y = (x - mean) * rstd * weight + bias,  rstd = 1/sqrt(var + eps),
//                                     var biased (divided by D), as torch.nn.functional.layer_norm;
//   rms_norm(x, weight, eps)          y = x * rsqrt(mean(x^2) + eps) * weight  (T5 / LLaMA style).
// weight and bias are [D] and optional (an undefined tensor means 1 and 0). The forward saves the
// per-row statistics; the backward recomputes x_hat from them in one sweep per row, and reduces the
// weight/bias gradients over a fixed number of row partitions, so the result does not depend on
// the thread count.
#include <cmath>
#include <vector>

#include "txtcls/cuda/norm.hpp"
#include "txtcls/ops/elementwise.hpp"

namespace txtcls {

namespace detail {

// Row partitions for the weight/bias gradient reduction (fixed, for thread-count independence).
inline constexpr int64_t kNormRowPartitions = 64;

// Checks x / weight / bias and returns D, the normalised size.
template <class T>
int64_t check_norm_args(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias, const char* op) {
  TXTCLS_CHECK(x.dim() >= 1, op, ": input must have at least 1 dim, got shape ", shape_str(x.shape()));
  const int64_t D = x.size(-1);
  TXTCLS_CHECK(D > 0, op, ": the last dim of input shape ", shape_str(x.shape()), " is empty");
  for (const Tensor<T>* p : {&weight, &bias}) {
    if (!p->defined()) continue;
    TXTCLS_CHECK(p->device() == x.device(), op, ": ", p == &weight ? "weight" : "bias", " on ", p->device().str(),
                 ", input on ", x.device().str());
    TXTCLS_CHECK(p->shape() == Shape{D}, op, ": ", p == &weight ? "weight" : "bias", " of shape ",
                 shape_str(p->shape()), " does not match the last dim of input shape ", shape_str(x.shape()));
  }
  return D;
}

// Sums the per-partition partial gradients [parts, D] into out [D] in partition order.
template <class T>
void sum_partitions(const std::vector<T>& partial, int64_t parts, int64_t D, T* out) {
#pragma omp parallel for schedule(static) if (parts * D > kParallelGrain)
  for (int64_t i = 0; i < D; ++i) {
    T acc = T(0);
    for (int64_t p = 0; p < parts; ++p) acc += partial[p * D + i];
    out[i] = acc;
  }
}

template <bool HasW, bool HasB, class T>
void layer_norm_forward_kernel(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t rows,
                               int64_t D, T eps) {
  const T inv_d = T(1) / static_cast<T>(D);
#pragma omp parallel for schedule(static) if (rows * D > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * D;
    T* yr = y + r * D;
    // Two sweeps over a row that sits in L1: the centred variance avoids the cancellation of
    // E[x^2] - E[x]^2 when |mean| >> std.
    T s = T(0);
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < D; ++i) s += xr[i];
    const T mu = s * inv_d;
    T v = T(0);
#pragma omp simd reduction(+ : v)
    for (int64_t i = 0; i < D; ++i) {
      const T c = xr[i] - mu;
      v += c * c;
    }
    const T rs = T(1) / std::sqrt(v * inv_d + eps);
    mean[r] = mu;
    rstd[r] = rs;
#pragma omp simd
    for (int64_t i = 0; i < D; ++i) {
      T h = (xr[i] - mu) * rs;
      if constexpr (HasW) h *= w[i];
      if constexpr (HasB) h += b[i];
      yr[i] = h;
    }
  }
}

// gx (if non-null) = rstd * (gw_i - mean(gw) - x_hat_i * mean(gw * x_hat)) with gw_i = g_i * w_i;
// gweight (if non-null) = sum_rows g * x_hat; gbias (if non-null) = sum_rows g.
template <bool HasW, class T>
void layer_norm_backward_kernel(const T* g, const T* x, const T* mean, const T* rstd, const T* w, int64_t rows,
                                int64_t D, T* gx, T* gweight, T* gbias) {
  const T inv_d = T(1) / static_cast<T>(D);
  const int64_t parts = std::min(rows, kNormRowPartitions);
  std::vector<T> pw(gweight ? parts * D : 0, T(0)), pb(gbias ? parts * D : 0, T(0));
#pragma omp parallel for schedule(static) if (rows * D > kParallelGrain)
  for (int64_t p = 0; p < parts; ++p) {
    T* aw = gweight ? pw.data() + p * D : nullptr;
    T* ab = gbias ? pb.data() + p * D : nullptr;
    for (int64_t r = rows * p / parts; r < rows * (p + 1) / parts; ++r) {
      const T* gr = g + r * D;
      const T* xr = x + r * D;
      const T mu = mean[r], rs = rstd[r];
      if (gx) {
        T s1 = T(0), s2 = T(0);
#pragma omp simd reduction(+ : s1, s2)
        for (int64_t i = 0; i < D; ++i) {
          const T gw = HasW ? gr[i] * w[i] : gr[i];
          s1 += gw;
          s2 += gw * (xr[i] - mu);
        }
        // x_hat = (x - mu) * rs, so mean(gw * x_hat) * x_hat = (x - mu) * (s2 * rs^2 / D).
        const T c1 = s1 * inv_d, c2 = s2 * rs * rs * inv_d;
        T* o = gx + r * D;
#pragma omp simd
        for (int64_t i = 0; i < D; ++i) {
          const T gw = HasW ? gr[i] * w[i] : gr[i];
          o[i] = rs * (gw - c1 - (xr[i] - mu) * c2);
        }
      }
      if (aw) {
#pragma omp simd
        for (int64_t i = 0; i < D; ++i) aw[i] += gr[i] * ((xr[i] - mu) * rs);
      }
      if (ab) {
#pragma omp simd
        for (int64_t i = 0; i < D; ++i) ab[i] += gr[i];
      }
    }
  }
  if (gweight) sum_partitions(pw, parts, D, gweight);
  if (gbias) sum_partitions(pb, parts, D, gbias);
}

template <bool HasW, class T>
void rms_norm_forward_kernel(const T* x, const T* w, T* y, T* rstd, int64_t rows, int64_t D, T eps) {
  const T inv_d = T(1) / static_cast<T>(D);
#pragma omp parallel for schedule(static) if (rows * D > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * D;
    T* yr = y + r * D;
    T ss = T(0);
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < D; ++i) ss += xr[i] * xr[i];
    const T rs = T(1) / std::sqrt(ss * inv_d + eps);
    rstd[r] = rs;
#pragma omp simd
    for (int64_t i = 0; i < D; ++i) yr[i] = HasW ? xr[i] * rs * w[i] : xr[i] * rs;
  }
}

// y_i = x_i * r * w_i with r = (mean(x^2) + eps)^-1/2 and dr/dx_j = -r^3 x_j / D, so
// gx = r * (gw - x * r^2 * mean(gw * x)) with gw = g * w; gweight = sum_rows g * x * r.
template <bool HasW, class T>
void rms_norm_backward_kernel(const T* g, const T* x, const T* rstd, const T* w, int64_t rows, int64_t D, T* gx,
                              T* gweight) {
  const T inv_d = T(1) / static_cast<T>(D);
  const int64_t parts = std::min(rows, kNormRowPartitions);
  std::vector<T> pw(gweight ? parts * D : 0, T(0));
#pragma omp parallel for schedule(static) if (rows * D > kParallelGrain)
  for (int64_t p = 0; p < parts; ++p) {
    T* aw = gweight ? pw.data() + p * D : nullptr;
    for (int64_t r = rows * p / parts; r < rows * (p + 1) / parts; ++r) {
      const T* gr = g + r * D;
      const T* xr = x + r * D;
      const T rs = rstd[r];
      if (gx) {
        T s = T(0);
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < D; ++i) s += (HasW ? gr[i] * w[i] : gr[i]) * xr[i];
        const T c = s * rs * rs * inv_d;
        T* o = gx + r * D;
#pragma omp simd
        for (int64_t i = 0; i < D; ++i) o[i] = rs * ((HasW ? gr[i] * w[i] : gr[i]) - xr[i] * c);
      }
      if (aw) {
#pragma omp simd
        for (int64_t i = 0; i < D; ++i) aw[i] += gr[i] * xr[i] * rs;
      }
    }
  }
  if (gweight) sum_partitions(pw, parts, D, gweight);
}

#ifdef TXTCLS_WITH_CUDA
// The GPU path of layer_norm (rms = false) and rms_norm (rms = true; bias undefined).
template <class T>
Tensor<T> norm_cuda(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias, double eps, bool rms) {
  const int64_t D = x.size(-1), rows = x.numel() / D;
  const Device dev = x.device();
  Tensor<T> xc = x.detach().contiguous();
  Tensor<T> w = weight.defined() ? weight.detach().contiguous() : Tensor<T>();
  Tensor<T> b = bias.defined() ? bias.detach().contiguous() : Tensor<T>();
  Tensor<T> out(x.shape(), dev), rstd({rows}, dev), mean = rms ? Tensor<T>() : Tensor<T>({rows}, dev);
  auto ptr = [](const Tensor<T>& t) { return t.defined() ? t.data() : nullptr; };
  cuda::norm_forward<T>(xc.data(), ptr(w), ptr(b), out.data(), rms ? nullptr : mean.data(), rstd.data(), rows, D,
                        static_cast<T>(eps), rms);
  std::vector<Tensor<T>> inputs = {x, weight};
  if (!rms) inputs.push_back(bias);
  autograd::record<T>(out, rms ? "rms_norm" : "layer_norm", inputs,
                      [xc, w, mean, rstd, rows, D, rms, ptr](const Tensor<T>& g, const std::vector<bool>& needs) {
                        const Device dev = xc.device();
                        Tensor<T> gx, gw, gb;
                        if (needs[0]) gx = Tensor<T>(xc.shape(), dev);
                        if (needs[1]) gw = Tensor<T>({D}, dev);
                        if (!rms && needs[2]) gb = Tensor<T>({D}, dev);
                        Tensor<T> gc = g.contiguous();
                        auto out = [](Tensor<T>& t) { return t.defined() ? t.data() : nullptr; };
                        cuda::norm_backward<T>(gc.data(), xc.data(), ptr(mean), rstd.data(), ptr(w), rows, D, out(gx),
                                               out(gw), out(gb), rms);
                        std::vector<Tensor<T>> r = {gx, gw};
                        if (!rms) r.push_back(gb);
                        return r;
                      });
  return out;
}
#endif

}  // namespace detail

// Layer normalisation over the last dim (biased variance, as PyTorch); weight/bias [D], optional.
template <class T>
Tensor<T> layer_norm(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias, double eps = 1e-5) {
  const int64_t D = detail::check_norm_args(x, weight, bias, "layer_norm");
#ifdef TXTCLS_WITH_CUDA
  if (x.device().is_cuda()) return detail::norm_cuda(x, weight, bias, eps, false);
#endif
  detail::require_cpu(x, "layer_norm");
  const int64_t rows = x.numel() / D;
  Tensor<T> xc = x.detach().contiguous();
  Tensor<T> w = weight.defined() ? weight.detach().contiguous() : Tensor<T>();
  Tensor<T> b = bias.defined() ? bias.detach().contiguous() : Tensor<T>();
  Tensor<T> out(x.shape()), mean({rows}), rstd({rows});
  const T* pw = w.defined() ? w.data() : nullptr;
  const T* pb = b.defined() ? b.data() : nullptr;
  const T e = static_cast<T>(eps);
  if (rows > 0) {
    if (pw && pb) detail::layer_norm_forward_kernel<true, true>(xc.data(), pw, pb, out.data(), mean.data(), rstd.data(), rows, D, e);
    else if (pw) detail::layer_norm_forward_kernel<true, false>(xc.data(), pw, pb, out.data(), mean.data(), rstd.data(), rows, D, e);
    else if (pb) detail::layer_norm_forward_kernel<false, true>(xc.data(), pw, pb, out.data(), mean.data(), rstd.data(), rows, D, e);
    else detail::layer_norm_forward_kernel<false, false>(xc.data(), pw, pb, out.data(), mean.data(), rstd.data(), rows, D, e);
  }
  autograd::record<T>(out, "layer_norm", {x, weight, bias},
                      [xc, w, mean, rstd, rows, D](const Tensor<T>& g, const std::vector<bool>& needs) {
                        Tensor<T> gx, gw, gb;
                        if (needs[0]) gx = Tensor<T>(xc.shape());
                        if (needs[1]) gw = zeros<T>({D});
                        if (needs[2]) gb = zeros<T>({D});
                        if (rows > 0) {
                          Tensor<T> gc = g.contiguous();
                          T* pgx = needs[0] ? gx.data() : nullptr;
                          T* pgw = needs[1] ? gw.data() : nullptr;
                          T* pgb = needs[2] ? gb.data() : nullptr;
                          if (w.defined())
                            detail::layer_norm_backward_kernel<true>(gc.data(), xc.data(), mean.data(), rstd.data(),
                                                                     w.data(), rows, D, pgx, pgw, pgb);
                          else
                            detail::layer_norm_backward_kernel<false>(gc.data(), xc.data(), mean.data(), rstd.data(),
                                                                      static_cast<const T*>(nullptr), rows, D, pgx,
                                                                      pgw, pgb);
                        }
                        return std::vector<Tensor<T>>{gx, gw, gb};
                      });
  return out;
}

// RMS normalisation over the last dim: x * rsqrt(mean(x^2) + eps) * weight (weight [D], optional).
template <class T>
Tensor<T> rms_norm(const Tensor<T>& x, const Tensor<T>& weight, double eps = 1e-6) {
  const int64_t D = detail::check_norm_args(x, weight, Tensor<T>(), "rms_norm");
#ifdef TXTCLS_WITH_CUDA
  if (x.device().is_cuda()) return detail::norm_cuda(x, weight, Tensor<T>(), eps, true);
#endif
  detail::require_cpu(x, "rms_norm");
  const int64_t rows = x.numel() / D;
  Tensor<T> xc = x.detach().contiguous();
  Tensor<T> w = weight.defined() ? weight.detach().contiguous() : Tensor<T>();
  Tensor<T> out(x.shape()), rstd({rows});
  const T e = static_cast<T>(eps);
  if (rows > 0) {
    if (w.defined()) detail::rms_norm_forward_kernel<true>(xc.data(), w.data(), out.data(), rstd.data(), rows, D, e);
    else detail::rms_norm_forward_kernel<false>(xc.data(), static_cast<const T*>(nullptr), out.data(), rstd.data(), rows, D, e);
  }
  autograd::record<T>(out, "rms_norm", {x, weight},
                      [xc, w, rstd, rows, D](const Tensor<T>& g, const std::vector<bool>& needs) {
                        Tensor<T> gx, gw;
                        if (needs[0]) gx = Tensor<T>(xc.shape());
                        if (needs[1]) gw = zeros<T>({D});
                        if (rows > 0) {
                          Tensor<T> gc = g.contiguous();
                          T* pgx = needs[0] ? gx.data() : nullptr;
                          T* pgw = needs[1] ? gw.data() : nullptr;
                          if (w.defined())
                            detail::rms_norm_backward_kernel<true>(gc.data(), xc.data(), rstd.data(), w.data(), rows,
                                                                   D, pgx, pgw);
                          else
                            detail::rms_norm_backward_kernel<false>(gc.data(), xc.data(), rstd.data(),
                                                                    static_cast<const T*>(nullptr), rows, D, pgx, pgw);
                        }
                        return std::vector<Tensor<T>>{gx, gw};
                      });
  return out;
}

}  // namespace txtcls
