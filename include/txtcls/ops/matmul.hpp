#pragma once
// matmul with NumPy batch broadcasting; transposed operands are strided views that Eigen maps
// as column-major, so a.transpose(-1, -2) costs no copy. Backward reuses matmul on views.
// Float matmuls follow autocast (ops/autocast.hpp): 16-bit operands, float accumulation.
#include "txtcls/cuda/blas.hpp"
#include "txtcls/ops/autocast.hpp"
#include "txtcls/ops/elementwise.hpp"

namespace txtcls {

namespace detail {

template <class T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ColMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;

// Calls f(eigen_map) for a rows x cols matrix at p with row stride rs and column stride cs.
// Returns false if neither stride is 1 (caller makes the operand contiguous).
template <class T, class F>
bool with_matrix_map(const T* p, int64_t rows, int64_t cols, int64_t rs, int64_t cs, F&& f) {
  using Outer = Eigen::OuterStride<>;
  if (cs == 1 || cols == 1) {
    f(Eigen::Map<const RowMat<T>, 0, Outer>(p, rows, cols, Outer(rows == 1 ? std::max<int64_t>(cols, 1) : rs)));
    return true;
  }
  if (rs == 1 || rows == 1) {
    f(Eigen::Map<const ColMat<T>, 0, Outer>(p, rows, cols, Outer(cols == 1 ? std::max<int64_t>(rows, 1) : cs)));
    return true;
  }
  return false;
}

// C[M,N] (contiguous) = A[M,K] * B[K,N] for strided A, B.
template <class T>
void gemm_strided(T* c, const T* a, const T* b, int64_t M, int64_t K, int64_t N, int64_t ars, int64_t acs,
                  int64_t brs, int64_t bcs) {
  Eigen::Map<RowMat<T>> C(c, M, N);
  if (K == 0) {
    C.setZero();
    return;
  }
  bool ok = with_matrix_map(a, M, K, ars, acs, [&](const auto& A) {
    bool okb = with_matrix_map(b, K, N, brs, bcs, [&](const auto& B) { C.noalias() = A * B; });
    TXTCLS_CHECK(okb, "matmul: internal error, unsupported strides for B");
  });
  TXTCLS_CHECK(ok, "matmul: internal error, unsupported strides for A");
}

#ifdef TXTCLS_WITH_CUDA
// The batch dims of an operand as one stride over the flattened batch, if they have one (-1 if
// not): broadcast dims give 0, and dims merge when each steps over the next exactly.
inline int64_t uniform_batch_stride(const Shape& batch, const Shape& strides) {
  int64_t stride = -1, span = 1;  // stride of the innermost non-trivial dim, and its extent
  for (int64_t d = static_cast<int64_t>(batch.size()) - 1; d >= 0; --d) {
    if (batch[d] == 1) continue;
    if (stride < 0) {
      stride = strides[d];
    } else if (strides[d] != stride * span) {
      return -1;
    }
    span *= batch[d];
  }
  return stride < 0 ? 0 : stride;
}

// One strided-batched cuBLAS call; an operand whose matrices are neither row- nor column-major,
// or whose batch has no single stride, is copied first.
// With `operands` BF16 or F16 (float only) each operand is first converted into a 16-bit buffer
// of the same layout, kept alive in `half` until the GEMM is enqueued (the caching allocator
// reuses a block only on its own stream, so releasing it right after is safe).
template <class T>
Tensor<T> matmul_cuda(Tensor<T> a, Tensor<T> b, const Shape& batch, int64_t M, int64_t K, int64_t N,
                      DType operands = DType::F32) {
  TXTCLS_CHECK(a.device() == b.device(), "matmul: operands on different devices (", a.device().str(), " and ",
               b.device().str(), ")");
  const bool half = operands != DType::F32;
  std::vector<Tensor<int16_t>> halves;
  auto operand = [&](Tensor<T>& t, int64_t rows, int64_t cols) {
    if (half && !(t.is_contiguous() || t.transpose(-1, -2).is_contiguous())) t = t.contiguous();
    Shape tb(t.shape().begin(), t.shape().end() - 2);
    Shape ts(t.strides().begin(), t.strides().end() - 2);
    int64_t bs = uniform_batch_stride(batch, broadcast_strides(tb, ts, batch));
    const int64_t rs = t.stride(-2), cs = t.stride(-1);
    const bool row_major = cs == 1 || cols == 1, col_major = rs == 1 || rows == 1;
    if (bs < 0 || !(row_major || col_major)) {
      Shape full = batch;
      full.push_back(rows);
      full.push_back(cols);
      t = t.expand(full).contiguous();
      bs = rows * cols;
    }
    // A dense operand (or its transpose) spans exactly numel elements from data().
    const void* p = t.data();
    if (half) {
      halves.emplace_back(t.shape(), t.device());
      cuda::convert_to_16bit(reinterpret_cast<const float*>(t.data()), halves.back().data(), t.numel(), operands);
      p = halves.back().data();
    }
    if (t.stride(-1) == 1 || cols == 1) return cuda::GemmOperand{p, std::max<int64_t>(t.stride(-2), 1), bs, false};
    return cuda::GemmOperand{p, std::max<int64_t>(t.stride(-1), 1), bs, true};
  };
  cuda::GemmOperand ga = operand(a, M, K), gb = operand(b, K, N);
  Shape os = batch;
  os.push_back(M);
  os.push_back(N);
  Tensor<T> out(os, a.device());
  if (out.numel() == 0) return out;
  if (K == 0) {
    out.fill_(T(0));
    return out;
  }
  if constexpr (std::is_same_v<T, float>) {
    if (half) {
      cuda::gemm_16bit(M, N, K, ga, gb, out.data(), N, M * N, numel_of(batch), operands);
      return out;
    }
  }
  cuda::gemm<T>(M, N, K, ga, gb, out.data(), N, M * N, numel_of(batch));
  return out;
}
#endif

// A float tensor's values rounded to the nearest BF16 / F16 values (a new contiguous tensor).
inline Tensor<float> round_to_16bit(const Tensor<float>& x, DType d) {
  Tensor<float> c = x.contiguous(), out(x.shape());
  const float* src = c.data();
  float* dst = out.data();
  const int64_t n = out.numel();
  if (d == DType::BF16) {
#pragma omp parallel for simd if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) dst[i] = round_to_bf16(src[i]);
  } else {
#pragma omp parallel for if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) dst[i] = round_to_f16(src[i]);
  }
  return out;
}

// operands: F32, or (float only) the autocast precision BF16 / F16 of both operands.
template <class T>
Tensor<T> matmul_kernel(Tensor<T> a, Tensor<T> b, DType operands = DType::F32) {
#ifdef TXTCLS_WITH_CUDA
  if (a.device().is_cuda()) {
    TXTCLS_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul: operands need at least 2 dims, got ", shape_str(a.shape()),
                 " and ", shape_str(b.shape()));
    TXTCLS_CHECK(b.size(-2) == a.size(-1), "matmul: inner dims differ: ", shape_str(a.shape()), " @ ",
                 shape_str(b.shape()));
    if (b.dim() == 2 && a.dim() > 2 && a.is_contiguous()) {  // fold a's batch into M: one GEMM
      Shape os = a.shape();
      os.back() = b.size(-1);
      const int64_t rows = numel_of(Shape(a.shape().begin(), a.shape().end() - 1));
      return matmul_cuda(a.view({rows, a.size(-1)}), b, {}, rows, a.size(-1), b.size(-1), operands).view(os);
    }
    Shape ab(a.shape().begin(), a.shape().end() - 2), bb(b.shape().begin(), b.shape().end() - 2);
    return matmul_cuda(a, b, broadcast_shapes(ab, bb, "matmul"), a.size(-2), a.size(-1), b.size(-1), operands);
  }
#endif
  if constexpr (std::is_same_v<T, float>) {
    if (operands != DType::F32) {
      require_cpu(a, "matmul");
      require_cpu(b, "matmul");
      a = round_to_16bit(a, operands);
      b = round_to_16bit(b, operands);
    }
  }
  require_cpu(a, "matmul");
  require_cpu(b, "matmul");
  TXTCLS_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul: operands need at least 2 dims, got ", shape_str(a.shape()),
               " and ", shape_str(b.shape()));
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  TXTCLS_CHECK(b.size(-2) == K, "matmul: inner dims differ: ", shape_str(a.shape()), " @ ", shape_str(b.shape()));
  auto needs_copy = [](const Tensor<T>& t) {
    return t.stride(-1) != 1 && t.stride(-2) != 1 && t.size(-1) != 1 && t.size(-2) != 1;
  };
  if (needs_copy(a)) a = a.contiguous();
  if (needs_copy(b)) b = b.contiguous();

  Shape ab(a.shape().begin(), a.shape().end() - 2), bb(b.shape().begin(), b.shape().end() - 2);
  // [.., M, K] @ [K, N] with a's batch dims foldable into M: one large GEMM.
  if (b.dim() == 2 && a.dim() > 2 && a.is_contiguous()) {
    const int64_t rows = a.numel() / std::max<int64_t>(K, 1);
    Shape os = a.shape();
    os.back() = N;
    Tensor<T> out(os);
    if (out.numel() > 0) gemm_strided(out.data(), a.data(), b.data(), rows, K, N, K, 1, b.stride(0), b.stride(1));
    return out;
  }
  Shape batch = broadcast_shapes(ab, bb, "matmul");
  Shape os = batch;
  os.push_back(M);
  os.push_back(N);
  Tensor<T> out(os);
  const int64_t nb = numel_of(batch);
  if (out.numel() == 0) return out;
  Shape as(a.strides().begin(), a.strides().end() - 2), bs(b.strides().begin(), b.strides().end() - 2);
  Shape sa = broadcast_strides(ab, as, batch), sb = broadcast_strides(bb, bs, batch);
  const T* pa = a.data();
  const T* pb = b.data();
  T* po = out.data();
  const int64_t ars = a.stride(-2), acs = a.stride(-1), brs = b.stride(-2), bcs = b.stride(-1);
#pragma omp parallel for schedule(dynamic) if (nb > 1 && nb * M * N * K > kParallelGrain)
  for (int64_t i = 0; i < nb; ++i) {
    int64_t oa = 0, ob = 0, rem = i;
    for (int64_t d = static_cast<int64_t>(batch.size()) - 1; d >= 0; --d) {
      int64_t idx = rem % batch[d];
      rem /= batch[d];
      oa += idx * sa[d];
      ob += idx * sb[d];
    }
    gemm_strided(po + i * M * N, pa + oa, pb + ob, M, K, N, ars, acs, brs, bcs);
  }
  return out;
}

}  // namespace detail

// a [..., M, K] @ b [..., K, N] -> [..., M, N], batch dims broadcast.
// Under an AutocastGuard (float only) the operands are rounded to 16 bits, as is the backward's.
template <class T>
Tensor<T> matmul(const Tensor<T>& a, const Tensor<T>& b) {
  const DType operands = std::is_same_v<T, float> ? autocast_dtype() : DType::F32;
  Tensor<T> out = detail::matmul_kernel(a.detach(), b.detach(), operands);
  autograd::record<T>(out, "matmul", {a, b}, [a = a.detach(), b = b.detach(), operands](const Tensor<T>& g, const std::vector<bool>& n) {
    AutocastGuard precision(operands);  // the forward's precision, whatever is active now
    Tensor<T> ga, gb;
    if (n[0]) ga = sum_to(matmul(g, b.transpose(-1, -2)), a.shape());
    if (n[1]) {
      if (b.dim() == 2 && a.dim() > 2)  // fold the batch into one GEMM: (sum_i A_i^T G_i) = A'^T G'
        gb = matmul(a.reshape({-1, a.size(-1)}).t(), g.reshape({-1, g.size(-1)}));
      else
        gb = sum_to(matmul(a.transpose(-1, -2), g), b.shape());
    }
    return std::vector<Tensor<T>>{ga, gb};
  });
  return out;
}

// y = x @ W^T + b, the affine map of nn::Linear (W is [out, in] as in PyTorch).
template <class T>
Tensor<T> linear(const Tensor<T>& x, const Tensor<T>& w, const Tensor<T>& b = Tensor<T>()) {
  TXTCLS_CHECK(w.dim() == 2 && x.dim() >= 1 && x.size(-1) == w.size(1), "linear: input ", shape_str(x.shape()),
               " does not match weight ", shape_str(w.shape()));
  Tensor<T> y = matmul(x.dim() == 1 ? x.unsqueeze(0) : x, w.t());
  if (x.dim() == 1) y = y.squeeze(0);
  return b.defined() ? add(y, b) : y;
}

}  // namespace txtcls
