#pragma once
// Pooling over time of padded batch-first sequences x [B, T, D] with lengths [B] (int64):
//   max_pool_time(x, lengths)   [B, D], max over the first lengths[b] steps (padding never wins);
//   mean_pool_time(x, lengths)  [B, D], mean over the same steps.
// Every length must lie in [1, T]. x may be any strided view (e.g. a [T, B, D] tensor transposed
// to batch-first); the kernels read it in place. NaN handling of the max is that of ops/max.hpp.
#include <type_traits>
#include <vector>

#include "txtcls/cuda/gather.hpp"
#include "txtcls/ops/max.hpp"

namespace txtcls {

namespace detail {

// Checks the arguments and returns the lengths as a vector.
template <class T>
std::vector<int64_t> check_pool_args(const Tensor<T>& x, const Tensor<int64_t>& lengths, const char* op) {
  TXTCLS_CHECK(x.dim() == 3, op, ": input must be [B, T, D], got shape ", shape_str(x.shape()));
  TXTCLS_CHECK(lengths.defined() && lengths.dim() == 1 && lengths.size(0) == x.size(0), op, ": lengths must be [B] = [",
               x.size(0), "] for input of shape ", shape_str(x.shape()), ", got ",
               lengths.defined() ? shape_str(lengths.shape()) : std::string("an undefined tensor"));
  std::vector<int64_t> len = lengths.to_vector();
  const int64_t T_ = x.size(1);
  for (size_t b = 0; b < len.size(); ++b)
    TXTCLS_CHECK(len[b] >= 1 && len[b] <= T_, op, ": lengths[", b, "] = ", len[b], " is outside [1, ", T_,
                 "] for input of shape ", shape_str(x.shape()));
  return len;
}

// out[b, d] = max over t < len[b] of x[b, t, d]; arg[b, d] = the first such t.
template <class T>
void max_pool_time_kernel(const Tensor<T>& x, const std::vector<int64_t>& len, T* out, int64_t* arg) {
  const int64_t B = x.size(0), D = x.size(2), sb = x.stride(0), st = x.stride(1), sd = x.stride(2);
  const T* px = x.data();
  const int64_t work = x.numel();
  if (st == 1 && sd != 1 && D > 1) {
    // Time is the unit-stride dim (e.g. a [B, D, T] tensor transposed): scan each (b, d) run.
#pragma omp parallel for schedule(static) if (work > kParallelGrain)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t d = 0; d < D; ++d) {
        const T* p = px + b * sb + d * sd;
        T best = p[0];
        int64_t at = 0;
        for (int64_t t = 1; t < len[b]; ++t)
          if (beats<true>(p[t], best)) best = p[t], at = t;
        out[b * D + d] = best;
        arg[b * D + d] = at;
      }
    return;
  }
  const int64_t slabs = (D + kColumnSlab - 1) / kColumnSlab;
#pragma omp parallel for schedule(static) if (work > kParallelGrain)
  for (int64_t task = 0; task < B * slabs; ++task) {
    const int64_t b = task / slabs, d0 = (task % slabs) * kColumnSlab, w = std::min(kColumnSlab, D - d0);
    const T* base = px + b * sb + d0 * sd;
    T* bv = out + b * D + d0;
    int64_t* bi = arg + b * D + d0;
    auto run = [&](auto unit) {
      const int64_t s = decltype(unit)::value ? 1 : sd;
      for (int64_t i = 0; i < w; ++i) {
        bv[i] = base[i * s];
        bi[i] = 0;
      }
      for (int64_t t = 1; t < len[b]; ++t) {
        const T* row = base + t * st;
        for (int64_t i = 0; i < w; ++i) {
          const T v = row[i * s];
          const bool win = beats<true>(v, bv[i]);
          bv[i] = win ? v : bv[i];
          bi[i] = win ? t : bi[i];
        }
      }
    };
    if (sd == 1) run(std::true_type{});
    else run(std::false_type{});
  }
}

// out[b, d] = mean over t < len[b] of x[b, t, d].
template <class T>
void mean_pool_time_kernel(const Tensor<T>& x, const std::vector<int64_t>& len, T* out) {
  const int64_t B = x.size(0), D = x.size(2), sb = x.stride(0), st = x.stride(1), sd = x.stride(2);
  const T* px = x.data();
  const int64_t work = x.numel();
  if (st == 1 && sd != 1 && D > 1) {
#pragma omp parallel for schedule(static) if (work > kParallelGrain)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t d = 0; d < D; ++d) {
        const T* p = px + b * sb + d * sd;
        T acc = T(0);
        for (int64_t t = 0; t < len[b]; ++t) acc += p[t];
        out[b * D + d] = acc / static_cast<T>(len[b]);
      }
    return;
  }
  const int64_t slabs = (D + kColumnSlab - 1) / kColumnSlab;
#pragma omp parallel for schedule(static) if (work > kParallelGrain)
  for (int64_t task = 0; task < B * slabs; ++task) {
    const int64_t b = task / slabs, d0 = (task % slabs) * kColumnSlab, w = std::min(kColumnSlab, D - d0);
    const T* base = px + b * sb + d0 * sd;
    T* o = out + b * D + d0;
    auto run = [&](auto unit) {
      const int64_t s = decltype(unit)::value ? 1 : sd;
      for (int64_t i = 0; i < w; ++i) o[i] = T(0);
      for (int64_t t = 0; t < len[b]; ++t) {
        const T* row = base + t * st;
        for (int64_t i = 0; i < w; ++i) o[i] += row[i * s];
      }
      const T inv = T(1) / static_cast<T>(len[b]);
      for (int64_t i = 0; i < w; ++i) o[i] *= inv;
    };
    if (sd == 1) run(std::true_type{});
    else run(std::false_type{});
  }
}

#ifdef TXTCLS_WITH_CUDA
// GPU pooling: lengths are checked on the host and copied to the device with the batch.
template <class T>
Tensor<T> pool_time_cuda(const Tensor<T>& x, const std::vector<int64_t>& len, bool is_max) {
  const int64_t B = x.size(0), D = x.size(2);
  Tensor<int64_t> dlen = from_vector<int64_t>(len, {B}).to(x.device());
  Tensor<T> out({B, D}, x.device());
  const Shape xs = x.shape();
  if (is_max) {
    Tensor<int64_t> arg({B, D}, x.device());
    cuda::max_pool_time<T>(x.data(), B, D, x.stride(0), x.stride(1), x.stride(2), dlen.data(), out.data(), arg.data());
    autograd::record<T>(out, "max_pool_time", {x}, [arg, xs](const Tensor<T>& g, const std::vector<bool>&) {
      Tensor<T> gc = g.contiguous();
      Tensor<T> gx(xs, gc.device());
      cuda::max_pool_time_backward<T>(gc.data(), arg.data(), gx.data(), xs[0], xs[1], xs[2]);
      return std::vector<Tensor<T>>{gx};
    });
  } else {
    cuda::mean_pool_time<T>(x.data(), B, D, x.stride(0), x.stride(1), x.stride(2), dlen.data(), out.data());
    autograd::record<T>(out, "mean_pool_time", {x}, [dlen, xs](const Tensor<T>& g, const std::vector<bool>&) {
      Tensor<T> gc = g.contiguous();
      Tensor<T> gx(xs, gc.device());
      cuda::mean_pool_time_backward<T>(gc.data(), dlen.data(), gx.data(), xs[0], xs[1], xs[2]);
      return std::vector<Tensor<T>>{gx};
    });
  }
  return out;
}
#endif

}  // namespace detail

// Max over the first lengths[b] time steps of x [B, T, D] -> [B, D]; the gradient goes to the
// (first) maximal step of each (b, d).
template <class T>
Tensor<T> max_pool_time(const Tensor<T>& x, const Tensor<int64_t>& lengths) {
  const std::vector<int64_t> len = detail::check_pool_args(x, lengths, "max_pool_time");
#ifdef TXTCLS_WITH_CUDA
  if (x.device().is_cuda()) return detail::pool_time_cuda(x, len, true);
#endif
  detail::require_cpu(x, "max_pool_time");
  const int64_t B = x.size(0), D = x.size(2);
  Tensor<T> out({B, D});
  Tensor<int64_t> arg({B, D});
  if (out.numel() > 0) detail::max_pool_time_kernel(x, len, out.data(), arg.data());
  autograd::record<T>(out, "max_pool_time", {x}, [arg, xs = x.shape()](const Tensor<T>& g, const std::vector<bool>&) {
    Tensor<T> gx = zeros<T>(xs);
    const int64_t B = xs[0], T_ = xs[1], D = xs[2];
    Tensor<T> gc = g.contiguous();
    const T* pg = gc.data();
    const int64_t* pa = arg.data();
    T* px = gx.data();
#pragma omp parallel for schedule(static) if (B * D > kParallelGrain)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t d = 0; d < D; ++d) px[(b * T_ + pa[b * D + d]) * D + d] = pg[b * D + d];
    return std::vector<Tensor<T>>{gx};
  });
  return out;
}

// Mean over the first lengths[b] time steps of x [B, T, D] -> [B, D]; the gradient is spread as
// g / lengths[b] over those steps and is zero on padding.
template <class T>
Tensor<T> mean_pool_time(const Tensor<T>& x, const Tensor<int64_t>& lengths) {
  std::vector<int64_t> len = detail::check_pool_args(x, lengths, "mean_pool_time");
#ifdef TXTCLS_WITH_CUDA
  if (x.device().is_cuda()) return detail::pool_time_cuda(x, len, false);
#endif
  detail::require_cpu(x, "mean_pool_time");
  const int64_t B = x.size(0), D = x.size(2);
  Tensor<T> out({B, D});
  if (out.numel() > 0) detail::mean_pool_time_kernel(x, len, out.data());
  autograd::record<T>(out, "mean_pool_time", {x},
                      [len = std::move(len), xs = x.shape()](const Tensor<T>& g, const std::vector<bool>&) {
                        Tensor<T> gx(xs);
                        const int64_t B = xs[0], T_ = xs[1], D = xs[2];
                        Tensor<T> gc = g.contiguous();
                        const T* pg = gc.data();
                        T* px = gx.data();
#pragma omp parallel for schedule(static) if (gx.numel() > kParallelGrain)
                        for (int64_t b = 0; b < B; ++b) {
                          const T inv = T(1) / static_cast<T>(len[b]);
                          for (int64_t t = 0; t < T_; ++t) {
                            T* row = px + (b * T_ + t) * D;
                            const T* gb = pg + b * D;
                            if (t < len[b])
                              for (int64_t d = 0; d < D; ++d) row[d] = gb[d] * inv;
                            else
                              for (int64_t d = 0; d < D; ++d) row[d] = T(0);
                          }
                        }
                        return std::vector<Tensor<T>>{gx};
                      });
  return out;
}

}  // namespace txtcls
