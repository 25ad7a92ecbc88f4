#pragma once
// Classification losses with PyTorch's semantics, forward and backward side by side:
//   cross_entropy                      fused log-softmax + NLL (+ label smoothing, ignore_index);
//   binary_cross_entropy_with_logits   stable log-sigmoid form, optional pos_weight.
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "txtcls/cuda/loss.hpp"
#include "txtcls/ops/elementwise.hpp"

namespace txtcls {

enum class Reduction { None, Mean, Sum };

namespace detail {

// Row i of the fused cross entropy. With eps the smoothing and C the classes,
//   loss = (1 - eps) * (lse - x_t) + eps * mean_c (lse - x_c) = lse - (1 - eps) * x_t - eps * mean_c x_c
// where lse = log sum_c exp(x_c); the softmax is never materialised in the forward. Eigen's
// vectorised exp keeps the row loops at SIMD speed.
template <class T>
double cross_entropy_row(const T* x, int64_t C, int64_t t, double eps, double& lse) {
  Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>> a(x, C);
  const T m = a.maxCoeff();
  lse = static_cast<double>(m) + std::log(static_cast<double>((a - m).exp().sum()));
  const double mean_x = eps > 0 ? static_cast<double>(a.sum()) / static_cast<double>(C) : 0.0;
  return lse - (1.0 - eps) * static_cast<double>(x[t]) - eps * mean_x;
}

// d loss_i / d x_c = softmax_c - (1 - eps) * [c == t] - eps / C, scaled by the row's weight w.
template <class T>
void cross_entropy_row_grad(const T* x, T* gx, int64_t C, int64_t t, double eps, double lse, double w) {
  Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>> a(x, C);
  Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> ga(gx, C);
  ga = static_cast<T>(w) * (a - static_cast<T>(lse)).exp() - static_cast<T>(w * eps / static_cast<double>(C));
  gx[t] -= static_cast<T>(w * (1.0 - eps));
}

// -log(sigmoid(x)) = softplus(-x), without overflow for any x.
template <class T>
TXTCLS_HD T softplus_neg(T x) {
  return (x < T(0) ? -x : T(0)) + std::log1p(std::exp(-std::fabs(x)));
}

// One element of BCE with logits: loss = (1 - y) x + (1 + (pw - 1) y) softplus(-x), the form
// PyTorch uses; the derivatives are with respect to x, y and pw.
struct BceWithLogits {
  template <class T> TXTCLS_HD T loss(T x, T y, T pw) const { return (T(1) - y) * x + (T(1) + (pw - T(1)) * y) * softplus_neg(x); }
  template <class T> TXTCLS_HD T dx(T x, T y, T pw) const {
    const T s = x >= T(0) ? T(1) / (T(1) + std::exp(-x)) : std::exp(x) / (T(1) + std::exp(x));
    return (T(1) + (pw - T(1)) * y) * s - pw * y;
  }
  template <class T> TXTCLS_HD T dy(T x, T, T pw) const { return -x + (pw - T(1)) * softplus_neg(x); }
  template <class T> TXTCLS_HD T dpw(T x, T y, T) const { return y * softplus_neg(x); }
};

// out[i] = f(x, y, pw) over x's shape; y has x's shape, pw broadcasts to it.
template <class T, class F>
Tensor<T> bce_map(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>& pw, F f) {
  Tensor<T> out(x.shape());
  const Shape sp = broadcast_strides(pw.shape(), pw.strides(), x.shape());
  const T* px = x.data();
  const T* py = y.data();
  const T* pp = pw.data();
  T* po = out.data();
  for_each_strided<3>(x.shape(), {&x.strides(), &y.strides(), &sp}, [&](int64_t i, const std::array<int64_t, 3>& o) {
    po[i] = f(px[o[0]], py[o[1]], pp[o[2]]);
  });
  return out;
}

template <class T>
Tensor<T> reduce_loss(const Tensor<T>& per_element, Reduction r) {
  if (r == Reduction::None) return per_element;
  Tensor<T> s = sum(per_element);
  // Mean of nothing is 0/0 = NaN, as in PyTorch.
  return r == Reduction::Sum ? s : affine(s, static_cast<T>(1.0 / static_cast<double>(per_element.numel())), T(0));
}

#ifdef TXTCLS_WITH_CUDA
// The GPU path of cross_entropy (arguments checked by the caller; target_host on the host).
template <class T>
Tensor<T> cross_entropy_cuda(const Tensor<T>& logits, const Tensor<int64_t>& target_host, Reduction r,
                             int64_t ignore_index, double eps, int64_t count) {
  const int64_t N = logits.size(0), C = logits.size(1);
  const Device dev = logits.device();
  Tensor<T> x = logits.detach().contiguous();
  Tensor<int64_t> t = target_host.to(dev);
  Tensor<T> row_loss({N}, dev);
  Tensor<double> lse({N}, dev);
  cuda::cross_entropy_forward<T>(x.data(), t.data(), N, C, ignore_index, eps, row_loss.data(), lse.data());
  Tensor<T> out;
  {
    NoGradGuard ng;
    out = r == Reduction::None ? row_loss
          : r == Reduction::Sum ? sum(row_loss)
                                : affine(sum(row_loss), static_cast<T>(1.0 / static_cast<double>(count)), T(0));
  }
  autograd::record<T>(out, "cross_entropy", {logits}, [x, t, lse, r, ignore_index, eps, count, N, C](
                                                          const Tensor<T>& g, const std::vector<bool>&) {
    Tensor<T> gc = g.contiguous();
    Tensor<T> gx({N, C}, x.device());
    const double scale = r == Reduction::Mean ? 1.0 / static_cast<double>(count) : 1.0;
    cuda::cross_entropy_backward<T>(x.data(), t.data(), lse.data(), gc.data(), r == Reduction::None ? 1 : 0, scale, N,
                                    C, ignore_index, eps, gx.data());
    return std::vector<Tensor<T>>{gx};
  });
  return out;
}
#endif

}  // namespace detail

// logits [N, C], target [N] class indices. Rows whose target equals ignore_index contribute
// nothing and are excluded from the mean's denominator (all rows ignored: the mean is NaN, as in
// PyTorch). label_smoothing eps gives (1 - eps) * nll + eps * mean_c(-log p_c) per row.
// Returns [N] for Reduction::None (0 on ignored rows), else a scalar.
template <class T>
Tensor<T> cross_entropy(const Tensor<T>& logits, const Tensor<int64_t>& target, Reduction r = Reduction::Mean,
                        int64_t ignore_index = -100, double label_smoothing = 0.0) {
  TXTCLS_CHECK(logits.dim() == 2, "cross_entropy: logits must be [N, C], got ", shape_str(logits.shape()));
  const int64_t N = logits.size(0), C = logits.size(1);
  TXTCLS_CHECK(target.dim() == 1 && target.size(0) == N, "cross_entropy: target must be [N] = [", N,
               "] for logits ", shape_str(logits.shape()), ", got ", shape_str(target.shape()));
  TXTCLS_CHECK(C > 0, "cross_entropy: logits ", shape_str(logits.shape()), " have no classes");
  TXTCLS_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0, "cross_entropy: label_smoothing must be in [0, 1], got ",
               label_smoothing);
  Tensor<int64_t> tc = target.cpu().contiguous().clone();  // own copy on the host, checked here
  const int64_t* pt = tc.data();
  int64_t count = 0;
  for (int64_t i = 0; i < N; ++i) {
    if (pt[i] == ignore_index) continue;
    TXTCLS_CHECK(pt[i] >= 0 && pt[i] < C, "cross_entropy: target ", pt[i], " in row ", i, " is out of range for ", C,
                 " classes (logits ", shape_str(logits.shape()), ", ignore_index ", ignore_index, ")");
    ++count;
  }
#ifdef TXTCLS_WITH_CUDA
  if (logits.device().is_cuda()) return detail::cross_entropy_cuda(logits, tc, r, ignore_index, label_smoothing, count);
#endif
  detail::require_cpu(logits, "cross_entropy");

  Tensor<T> x = logits.detach().contiguous();
  const T* px = x.data();
  const double eps = label_smoothing;
  std::vector<double> lse(static_cast<size_t>(N), 0.0), row_loss(static_cast<size_t>(N), 0.0);
#pragma omp parallel for schedule(static) if (N * C > kParallelGrain)
  for (int64_t i = 0; i < N; ++i)
    if (pt[i] != ignore_index) row_loss[i] = detail::cross_entropy_row(px + i * C, C, pt[i], eps, lse[i]);

  Tensor<T> out;
  if (r == Reduction::None) {
    out = Tensor<T>({N});
    for (int64_t i = 0; i < N; ++i) out.data()[i] = static_cast<T>(row_loss[i]);
  } else {
    double total = 0;  // serial, so the sum does not depend on the thread count
    for (int64_t i = 0; i < N; ++i) total += row_loss[i];
    out = scalar<T>(static_cast<T>(r == Reduction::Sum ? total : total / static_cast<double>(count)));
  }

  autograd::record<T>(out, "cross_entropy", {logits}, [x, tc, lse = std::move(lse), r, ignore_index, eps, count, N, C](
                                                          const Tensor<T>& g, const std::vector<bool>&) {
    Tensor<T> gx = zeros<T>({N, C});
    Tensor<T> gc = g.contiguous();
    const T* pg = gc.data();
    const T* px = x.data();
    const int64_t* pt = tc.data();
    T* pgx = gx.data();
    const double scale = r == Reduction::Mean ? 1.0 / static_cast<double>(count) : 1.0;
#pragma omp parallel for schedule(static) if (N * C > kParallelGrain)
    for (int64_t i = 0; i < N; ++i) {
      if (pt[i] == ignore_index) continue;
      const double w = static_cast<double>(pg[r == Reduction::None ? i : 0]) * scale;
      detail::cross_entropy_row_grad(px + i * C, pgx + i * C, C, pt[i], eps, lse[i], w);
    }
    return std::vector<Tensor<T>>{gx};
  });
  return out;
}

// Elementwise binary cross entropy on logits: targets has logits' shape; pos_weight (optional)
// broadcasts to it and weighs the positive term, as in PyTorch:
//   loss = (1 - y) x + (1 + (pos_weight - 1) y) log(1 + exp(-x)).
// Mean over zero elements is NaN, as in PyTorch.
template <class T>
Tensor<T> binary_cross_entropy_with_logits(const Tensor<T>& logits, const Tensor<T>& targets,
                                           Reduction r = Reduction::Mean, const Tensor<T>& pos_weight = Tensor<T>()) {
  const char* op = "binary_cross_entropy_with_logits";
  detail::require_cpu(logits, op);
  detail::require_cpu(targets, op);
  TXTCLS_CHECK(targets.shape() == logits.shape(), op, ": targets ", shape_str(targets.shape()),
               " must have the shape of the logits ", shape_str(logits.shape()));
  Tensor<T> pw = pos_weight.defined() ? pos_weight : scalar<T>(T(1));
  if (pos_weight.defined()) {
    detail::require_cpu(pos_weight, op);
    TXTCLS_CHECK(broadcast_shapes(pw.shape(), logits.shape(), op) == logits.shape(), op, ": pos_weight ",
                 shape_str(pw.shape()), " does not broadcast to the logits ", shape_str(logits.shape()));
  }
  const detail::BceWithLogits f;
  Tensor<T> per = detail::bce_map(logits, targets, pw, [f](T x, T y, T p) { return f.loss(x, y, p); });
  autograd::record<T>(per, op, {logits, targets, pos_weight},
                      [f, x = logits.detach(), y = targets.detach(), pw = pw.detach()](const Tensor<T>& g,
                                                                                        const std::vector<bool>& needs) {
                        Tensor<T> gx, gy, gp;
                        if (needs[0]) gx = mul(g, detail::bce_map(x, y, pw, [f](T a, T b, T p) { return f.dx(a, b, p); }));
                        if (needs[1]) gy = mul(g, detail::bce_map(x, y, pw, [f](T a, T b, T p) { return f.dy(a, b, p); }));
                        if (needs[2])
                          gp = sum_to(mul(g, detail::bce_map(x, y, pw, [f](T a, T b, T p) { return f.dpw(a, b, p); })),
                                      pw.shape());
                        return std::vector<Tensor<T>>{gx, gy, gp};
                      });
  return detail::reduce_loss(per, r);
}

}  // namespace txtcls
