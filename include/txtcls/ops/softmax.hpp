#pragma once
// softmax and log_softmax along one dim, with an optional ADDITIVE mask broadcastable to the input
// (e.g. [B, 1, 1, L] holding 0 / -inf, or 0 / a large negative, for attention over padded keys).
//
// Numerics: the row max of x + mask is subtracted before exp.
// Fully masked rows (every x + mask is -inf): PyTorch returns NaN, which turns one padded sequence
// into a NaN loss. Here such a row is "empty": softmax gives all zeros and log_softmax all -inf
// (= log 0), and no gradient flows into the row. Masked entries of other rows get exactly 0.
// A large finite negative mask is just a constant shift of a fully masked row (its softmax is
// that of x), as in PyTorch. A NaN in the input still turns its row into NaN.
//
// Layout: dim == last on a contiguous input is the fast path (one row per task, Eigen's vectorised
// exp, the mask read in place); other dims run on column slabs of the [outer, n, inner] view.
#include <cmath>
#include <limits>

#include "txtcls/cuda/softmax.hpp"
#include "txtcls/ops/max.hpp"

namespace txtcls {

namespace detail {

template <class T>
using ArrayRow = Eigen::Array<T, 1, Eigen::Dynamic>;

// Where each row of a contiguous [rows, n] input finds its additive mask: the mask offset of row
// r follows from the broadcast strides of the leading dims; along the row the mask either varies
// (stride 1) or is one value (stride 0).
template <class T>
struct RowMask {
  const T* data = nullptr;  // null: no mask
  Shape lead_shape, lead_strides;
  bool per_element = false;

  int64_t offset(int64_t r) const {
    int64_t off = 0;
    for (int64_t d = static_cast<int64_t>(lead_shape.size()) - 1; d >= 0 && r > 0; --d) {
      off += (r % lead_shape[d]) * lead_strides[d];
      r /= lead_shape[d];
    }
    return off;
  }
};

// How a row reads its mask: none, one value per element, or one value for the whole row.
enum class RowMaskKind { None, PerElement, PerRow };

// Eigen's vectorised exp clamps its argument, so exp(-inf) comes out as a tiny denormal rather than
// 0 (and denormals slow down the matmul that consumes attention weights). Softmax therefore writes
// exactly 0 where z is -inf, in its final scaling pass; log_softmax needs no fix (-inf - c = -inf).
// Eigen's select() is not vectorised, hence the plain loops below.

// One row of z = x + mask (x, m: the row's input and mask; m unused for None).
// Returns true for a fully masked row (max -inf), written as zeros (softmax) or -inf
// (log_softmax), or NaN if the row holds a NaN.
template <bool Log, RowMaskKind K, class T>
bool softmax_row(const T* x, const T* m, T* y, int64_t n) {
  using Map = Eigen::Map<ArrayRow<T>>;
  using CMap = Eigen::Map<const ArrayRow<T>>;
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  CMap xr(x, n);
  Map yr(y, n);
  auto run = [&](const auto& z) {
    const T mx = z.maxCoeff();
    if (mx == kNegInf) {
      if (z.isNaN().any()) yr.setConstant(std::numeric_limits<T>::quiet_NaN());
      else yr.setConstant(Log ? kNegInf : T(0));
      return true;
    }
    if constexpr (Log) {
      yr = z - mx;
      yr -= std::log(yr.exp().sum());
    } else {
      yr = (z - mx).exp();
      const T inv = T(1) / yr.sum();
      if (inv != inv) {  // a NaN in the row: all of it is NaN, masked entries included
        yr.setConstant(std::numeric_limits<T>::quiet_NaN());
        return false;
      }
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        T zi = x[i];
        if constexpr (K == RowMaskKind::PerElement) zi += m[i];
        if constexpr (K == RowMaskKind::PerRow) zi += m[0];
        y[i] = zi == kNegInf ? T(0) : y[i] * inv;
      }
    }
    return false;
  };
  if constexpr (K == RowMaskKind::None) return run(xr);
  else if constexpr (K == RowMaskKind::PerElement) return run(xr + CMap(m, n));
  else return run(xr + m[0]);
}

// Softmax over the last dim of a contiguous [rows, n] input. Returns the number of fully masked rows.
template <bool Log, class T>
int64_t softmax_lastdim_forward(const T* x, T* y, int64_t rows, int64_t n, const RowMask<T>& m) {
  int64_t dead = 0;
#pragma omp parallel for schedule(static) reduction(+ : dead) if (rows * n > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    bool d;
    if (!m.data) d = softmax_row<Log, RowMaskKind::None>(xr, static_cast<const T*>(nullptr), yr, n);
    else if (m.per_element) d = softmax_row<Log, RowMaskKind::PerElement>(xr, m.data + m.offset(r), yr, n);
    else d = softmax_row<Log, RowMaskKind::PerRow>(xr, m.data + m.offset(r), yr, n);
    dead += d;
  }
  return dead;
}

// Softmax over the middle dim of a contiguous [outer, n, inner] input (inner > 1), a column slab
// at a time. Returns the number of fully masked columns.
template <bool Log, class T>
int64_t softmax_strided_forward(const T* x, T* y, const DimSplit& g) {
  using Map = Eigen::Map<ArrayRow<T>>;
  using CMap = Eigen::Map<const ArrayRow<T>>;
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  const int64_t n = g.n, inner = g.inner, slabs = (inner + kColumnSlab - 1) / kColumnSlab;
  int64_t dead = 0;
#pragma omp parallel for schedule(static) reduction(+ : dead) if (g.outer * n * inner > kParallelGrain)
  for (int64_t task = 0; task < g.outer * slabs; ++task) {
    const int64_t o = task / slabs, i0 = (task % slabs) * kColumnSlab, w = std::min(kColumnSlab, inner - i0);
    const T* xb = x + o * n * inner + i0;
    T* yb = y + o * n * inner + i0;
    T mx_buf[kColumnSlab], sum_buf[kColumnSlab];
    bool dead_buf[kColumnSlab];
    Map mx(mx_buf, w), s(sum_buf, w);
    mx = CMap(xb, w);
    for (int64_t j = 1; j < n; ++j) mx = mx.max(CMap(xb + j * inner, w));
    int64_t dead_here = 0;
    for (int64_t i = 0; i < w; ++i) {
      // A dead column (max -inf) is shifted by 0 instead: its entries stay -inf, or NaN.
      dead_buf[i] = mx_buf[i] == kNegInf;
      dead_here += dead_buf[i];
      if (dead_buf[i]) mx_buf[i] = T(0);
    }
    s.setZero();
    for (int64_t j = 0; j < n; ++j) {
      CMap xj(xb + j * inner, w);
      Map yj(yb + j * inner, w);
      if constexpr (!Log) {
        yj = (xj - mx).exp();
        s += yj;
      } else {
        yj = xj - mx;
        s += yj.exp();
      }
    }
    if constexpr (!Log) {
      // -inf entries (all of a dead column's) become exactly 0; NaN stays NaN.
      s = s.inverse();
      for (int64_t j = 0; j < n; ++j) {
        const T* xj = xb + j * inner;
        T* yj = yb + j * inner;
#pragma omp simd
        for (int64_t i = 0; i < w; ++i)
          yj[i] = xj[i] == kNegInf && sum_buf[i] == sum_buf[i] ? T(0) : yj[i] * sum_buf[i];
      }
    } else {
      s = s.log();
      for (int64_t j = 0; j < n; ++j) Map(yb + j * inner, w) -= s;
      if (dead_here)
        for (int64_t i = 0; i < w; ++i)
          if (dead_buf[i] && !std::isnan(sum_buf[i]))
            for (int64_t j = 0; j < n; ++j) yb[j * inner + i] = kNegInf;
    }
    dead += dead_here;
  }
  return dead;
}

template <class T>
bool all_neg_inf(const T* p, int64_t n, int64_t stride) {
  for (int64_t j = 0; j < n; ++j)
    if (p[j * stride] != -std::numeric_limits<T>::infinity()) return false;
  return true;
}

// Gradient wrt the logits of a [outer, n, inner] softmax (y) or log_softmax (y = log p):
//   softmax:     gx = y * (g - sum(g * y))
//   log_softmax: gx = g - exp(y) * sum(g)
// `maybe_dead` says the forward saw fully masked rows; their gradient is zero.
template <bool Log, class T>
void softmax_backward_kernel(const T* g, const T* y, T* gx, const DimSplit& sp, bool maybe_dead) {
  using Map = Eigen::Map<ArrayRow<T>>;
  using CMap = Eigen::Map<const ArrayRow<T>>;
  const int64_t n = sp.n, inner = sp.inner, total = sp.outer * n * inner;
  if (inner == 1) {
#pragma omp parallel for schedule(static) if (total > kParallelGrain)
    for (int64_t r = 0; r < sp.outer; ++r) {
      CMap gr(g + r * n, n), yr(y + r * n, n);
      Map out(gx + r * n, n);
      if constexpr (!Log) {
        const T dot = (gr * yr).sum();
        out = yr * (gr - dot);
      } else {
        if (maybe_dead && all_neg_inf(y + r * n, n, 1)) {
          out.setZero();
          continue;
        }
        out = gr - yr.exp() * gr.sum();
      }
    }
    return;
  }
  const int64_t slabs = (inner + kColumnSlab - 1) / kColumnSlab;
#pragma omp parallel for schedule(static) if (total > kParallelGrain)
  for (int64_t task = 0; task < sp.outer * slabs; ++task) {
    const int64_t o = task / slabs, i0 = (task % slabs) * kColumnSlab, w = std::min(kColumnSlab, inner - i0);
    const int64_t base = o * n * inner + i0;
    T acc_buf[kColumnSlab];
    Map acc(acc_buf, w);
    acc.setZero();
    for (int64_t j = 0; j < n; ++j) {
      if constexpr (!Log) acc += CMap(g + base + j * inner, w) * CMap(y + base + j * inner, w);
      else acc += CMap(g + base + j * inner, w);
    }
    for (int64_t j = 0; j < n; ++j) {
      CMap gj(g + base + j * inner, w), yj(y + base + j * inner, w);
      if constexpr (!Log) Map(gx + base + j * inner, w) = yj * (gj - acc);
      else Map(gx + base + j * inner, w) = gj - yj.exp() * acc;
    }
    if (Log && maybe_dead)
      for (int64_t i = 0; i < w; ++i)
        if (all_neg_inf(y + base + i, n, inner))
          for (int64_t j = 0; j < n; ++j) gx[base + j * inner + i] = T(0);
  }
}

#ifdef TXTCLS_WITH_CUDA
// The GPU path: the mask is added first (one elementwise pass), then one kernel per direction.
template <bool Log, class T>
Tensor<T> softmax_cuda(const Tensor<T>& x, const DimSplit& g, const Tensor<T>& mask, const char* op) {
  Tensor<T> xc = x.detach().contiguous();
  if (mask.defined()) xc = binary_kernel(xc, mask.detach(), fn::Add{}, op);
  Tensor<T> out(x.shape(), x.device());
  cuda::softmax_forward<T>(xc.data(), out.data(), g.outer, g.n, g.inner, Log);
  autograd::record<T>(out, op, {x, mask},
                      [y = out.detach(), g, ms = mask.defined() ? mask.shape() : Shape{}](
                          const Tensor<T>& grad, const std::vector<bool>& needs) {
                        Tensor<T> gx(y.shape(), y.device());
                        Tensor<T> gc = grad.contiguous();
                        cuda::softmax_backward<T>(gc.data(), y.data(), gx.data(), g.outer, g.n, g.inner, Log);
                        return std::vector<Tensor<T>>{needs[0] ? gx : Tensor<T>(),
                                                      needs[1] ? sum_to(gx, ms) : Tensor<T>()};
                      });
  return out;
}
#endif

template <bool Log, class T>
Tensor<T> softmax_impl(const Tensor<T>& x, int64_t dim, const Tensor<T>& mask, const char* op) {
  const DimSplit g = split_at_dim(x.shape(), dim, op);
  if (mask.defined()) {
    TXTCLS_CHECK(mask.dim() <= x.dim() && broadcast_shapes(x.shape(), mask.shape(), op) == x.shape(), op,
                 ": mask of shape ", shape_str(mask.shape()), " does not broadcast to the input's shape ",
                 shape_str(x.shape()));
  }
#ifdef TXTCLS_WITH_CUDA
  if (x.device().is_cuda()) return softmax_cuda<Log>(x, g, mask, op);
#endif
  require_cpu(x, op);
  if (mask.defined()) require_cpu(mask, op);
  Tensor<T> out(x.shape());
  bool maybe_dead = false;
  if (out.numel() > 0) {
    Tensor<T> xc = x.detach().contiguous();
    RowMask<T> rm;
    if (mask.defined()) {
      const Shape ms = broadcast_strides(mask.shape(), mask.strides(), x.shape());
      const int64_t along = ms.empty() ? 0 : ms.back();
      if (g.inner == 1 && x.dim() > 0 && (along == 0 || along == 1 || g.n == 1)) {
        rm.data = mask.data();
        rm.lead_shape.assign(x.shape().begin(), x.shape().end() - 1);
        rm.lead_strides.assign(ms.begin(), ms.end() - 1);
        rm.per_element = along != 0 || g.n == 1;
      } else {
        xc = binary_kernel(xc, mask.detach(), fn::Add{}, op);  // materialise x + mask
      }
    }
    const int64_t dead = g.inner == 1 ? softmax_lastdim_forward<Log>(xc.data(), out.data(), g.outer, g.n, rm)
                                      : softmax_strided_forward<Log>(xc.data(), out.data(), g);
    maybe_dead = dead > 0;
  }
  autograd::record<T>(out, op, {x, mask},
                      [y = out.detach(), g, maybe_dead, ms = mask.defined() ? mask.shape() : Shape{}](
                          const Tensor<T>& grad, const std::vector<bool>& needs) {
                        Tensor<T> gx(y.shape());
                        if (gx.numel() > 0) {
                          Tensor<T> gc = grad.contiguous();
                          softmax_backward_kernel<Log>(gc.data(), y.data(), gx.data(), g, maybe_dead);
                        }
                        // The mask enters as x + mask: its gradient is gx summed over broadcast dims.
                        return std::vector<Tensor<T>>{needs[0] ? gx : Tensor<T>(),
                                                      needs[1] ? sum_to(gx, ms) : Tensor<T>()};
                      });
  return out;
}

}  // namespace detail

// exp(z) / sum(exp(z)) along `dim`, z = x + mask (mask optional, additive, broadcastable to x).
template <class T>
Tensor<T> softmax(const Tensor<T>& x, int64_t dim, const Tensor<T>& mask = Tensor<T>()) {
  return detail::softmax_impl<false>(x, dim, mask, "softmax");
}

// z - log(sum(exp(z))) along `dim`, z = x + mask (mask optional, additive, broadcastable to x).
template <class T>
Tensor<T> log_softmax(const Tensor<T>& x, int64_t dim, const Tensor<T>& mask = Tensor<T>()) {
  return detail::softmax_impl<true>(x, dim, mask, "log_softmax");
}

}  // namespace txtcls
