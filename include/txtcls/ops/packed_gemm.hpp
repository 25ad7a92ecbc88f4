#pragma once
// Single-threaded GEMM building blocks for ops that schedule their own threads (the LSTM).
//
// PackedLhs packs a fixed matrix once into the micro-kernel's panel layout, so a recurrence
// that multiplies by the same weights at every step pays only for packing the small operand.
// gemm() is a plain cache-blocked GEMM (Goto/BLIS loop order).
//
// Micro-kernels, chosen at compile time:
//   float with AVX2 + FMA   txtcls's own kernel (sgemm.hpp: 16 x 6 on AVX2, 16 x 16 on AVX-512);
//   otherwise, Eigen 3.4    Eigen's own packing routines and kernel (Eigen::internal, stable
//                           across 3.4.x);
//   any other Eigen         plain Eigen products (gemm_reference).
// All give the same results up to rounding; gemm_reference is also what the tests compare to.
#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "txtcls/core/error.hpp"
#include "txtcls/ops/sgemm.hpp"

#if EIGEN_VERSION_AT_LEAST(3, 4, 0) && !EIGEN_VERSION_AT_LEAST(3, 4, 90)
#define TXTCLS_EIGEN_GEBP 1
#else
#define TXTCLS_EIGEN_GEBP 0
#endif

namespace txtcls::detail {

// A matrix operand: element (i, j) at p[i * rs + j * cs]; one of rs, cs must be 1.
template <class T>
struct MatRef {
  const T* p = nullptr;
  int64_t rows = 0, cols = 0, rs = 0, cs = 1;
  bool row_major() const { return cs == 1; }  // contiguous along j
  MatRef block(int64_t i, int64_t j, int64_t r, int64_t c) const { return {p + i * rs + j * cs, r, c, rs, cs}; }
};
// A writable column-major result: element (i, j) at p[i + j * ld].
template <class T>
struct ColMajorOut {
  T* p;
  int64_t ld;
};

template <class T>
MatRef<T> row_major_ref(const T* p, int64_t rows, int64_t cols, int64_t ld) { return {p, rows, cols, ld, 1}; }
template <class T>
MatRef<T> col_major_ref(const T* p, int64_t rows, int64_t cols, int64_t ld) { return {p, rows, cols, 1, ld}; }

template <class T>
using AlignedVec = std::vector<T, Eigen::aligned_allocator<T>>;

enum class GemmKernel { Sgemm, EigenGebp, EigenProduct };
template <class T>
inline constexpr GemmKernel gemm_kernel = (TXTCLS_SGEMM && std::is_same_v<T, float>) ? GemmKernel::Sgemm
                                          : TXTCLS_EIGEN_GEBP                                ? GemmKernel::EigenGebp
                                                                                             : GemmKernel::EigenProduct;

// Depth of a K block, with blocks of about equal size. The cap keeps a micro-panel of A and
// one of B in L1: Eigen's 24 x 4 kernel wants about 256, the AVX2 16 x 6 one tolerates 384.
template <class T>
int64_t gemm_depth_block(int64_t K) {
#if TXTCLS_SGEMM
  const int64_t cap = gemm_kernel<T> == GemmKernel::Sgemm ? sgemm::kDepthCap : 256;
#else
  const int64_t cap = 256;
#endif
  const int64_t nblocks = std::max<int64_t>(1, (K + cap - 1) / cap);
  return std::max<int64_t>(1, (K + nblocks - 1) / nblocks);
}

template <class T>
void zero_result(ColMajorOut<T> c, int64_t rows, int64_t cols) {
  for (int64_t j = 0; j < cols; ++j) std::fill(c.p + j * c.ld, c.p + j * c.ld + rows, T(0));
}

// Plain Eigen product: the fallback, and the reference the packed paths are tested against.
template <class T>
void gemm_reference(ColMajorOut<T> c, MatRef<T> a, MatRef<T> b, bool accumulate) {
  using Out = Eigen::Stride<Eigen::Dynamic, 1>;
  using ColMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
  using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  if (a.rows == 0 || b.cols == 0) return;
  Eigen::Map<ColMat, 0, Out> C(c.p, a.rows, b.cols, Out(c.ld, 1));
  if (!accumulate) C.setZero();
  if (a.cols == 0) return;
  // Eigen's fast product needs a compile-time unit inner stride: map each operand by its layout.
  auto with = [](MatRef<T> m, auto&& f) {
    if (m.row_major())
      f(Eigen::Map<const RowMat, 0, Out>(m.p, m.rows, m.cols, Out(m.rs, 1)));
    else
      f(Eigen::Map<const ColMat, 0, Out>(m.p, m.rows, m.cols, Out(m.cs, 1)));
  };
  with(a, [&](const auto& A) { with(b, [&](const auto& B) { C.noalias() += A * B; }); });
}

#if TXTCLS_EIGEN_GEBP
template <class T>
struct GebpTypes {
  using Index = Eigen::Index;
  using Traits = Eigen::internal::gebp_traits<T, T>;
  template <int Order>
  using Mapper = Eigen::internal::const_blas_data_mapper<T, Index, Order>;
  using ResMapper = Eigen::internal::blas_data_mapper<T, Index, Eigen::ColMajor>;
  template <int Order>
  using PackLhs = Eigen::internal::gemm_pack_lhs<T, Index, Mapper<Order>, Traits::mr, Traits::LhsProgress,
                                                 typename Traits::LhsPacket4Packing, Order>;
  template <int Order>
  using PackRhs = Eigen::internal::gemm_pack_rhs<T, Index, Mapper<Order>, Traits::nr, Order>;
  using Kernel = Eigen::internal::gebp_kernel<T, T, Index, ResMapper, Traits::mr, Traits::nr>;
};
#endif

// Packed size (elements) of an A block [m, k], rounded up to 64 bytes: the packing routines
// store whole vectors with aligned stores, so every block starts on a 64-byte boundary.
template <class T>
int64_t packed_a_size(int64_t m, int64_t k) {
  const int64_t align = std::max<int64_t>(1, 64 / static_cast<int64_t>(sizeof(T)));
#if TXTCLS_SGEMM
  if constexpr (gemm_kernel<T> == GemmKernel::Sgemm) m = sgemm::panels(m, sgemm::kMR) * sgemm::kMR;
#endif
  return (m * k + align - 1) / align * align;
}
template <class T>
int64_t packed_b_size(int64_t k, int64_t n) {
#if TXTCLS_SGEMM
  if constexpr (gemm_kernel<T> == GemmKernel::Sgemm) n = sgemm::BPanels(n).padded();
#endif
  return std::max<int64_t>(k * n, 1);
}

// The kernel-specific branches are compiled only where the kernel exists (the names they use
// are not declared otherwise).
template <class T>
void pack_a_block(T* dst, MatRef<T> a) {
  if constexpr (gemm_kernel<T> == GemmKernel::Sgemm) {
#if TXTCLS_SGEMM
    sgemm::pack_a(dst, a.p, a.rows, a.cols, a.rs, a.cs);
#endif
  } else if constexpr (gemm_kernel<T> == GemmKernel::EigenGebp) {
#if TXTCLS_EIGEN_GEBP
    using G = GebpTypes<T>;
    if (a.row_major())
      typename G::template PackLhs<Eigen::RowMajor>()(dst, typename G::template Mapper<Eigen::RowMajor>(a.p, a.rs),
                                                      a.cols, a.rows);
    else
      typename G::template PackLhs<Eigen::ColMajor>()(dst, typename G::template Mapper<Eigen::ColMajor>(a.p, a.cs),
                                                      a.cols, a.rows);
#endif
  } else {  // row-major copy for gemm_reference
    for (int64_t i = 0; i < a.rows; ++i)
      for (int64_t k = 0; k < a.cols; ++k) dst[i * a.cols + k] = a.p[i * a.rs + k * a.cs];
  }
}

template <class T>
void pack_b_block(T* dst, MatRef<T> b) {
  if constexpr (gemm_kernel<T> == GemmKernel::Sgemm) {
#if TXTCLS_SGEMM
    sgemm::pack_b(dst, b.p, b.rows, b.cols, b.rs, b.cs);
#endif
  } else if constexpr (gemm_kernel<T> == GemmKernel::EigenGebp) {
#if TXTCLS_EIGEN_GEBP
    using G = GebpTypes<T>;
    if (b.row_major())
      typename G::template PackRhs<Eigen::RowMajor>()(dst, typename G::template Mapper<Eigen::RowMajor>(b.p, b.rs),
                                                      b.rows, b.cols);
    else
      typename G::template PackRhs<Eigen::ColMajor>()(dst, typename G::template Mapper<Eigen::ColMajor>(b.p, b.cs),
                                                      b.rows, b.cols);
#endif
  } else {
    (void)dst;
    (void)b;
  }
}

// Rows per group in multiply_packed: a multiple of every kernel's panel height (16 for Sgemm;
// Eigen's 24, 12 or 6 for float/double with AVX or SSE, 48 with AVX-512), so that a group starts
// on a panel boundary of the packed A.
inline constexpr int64_t kGemmRowGroup = 192;

// Whether multiply_packed can overwrite C (add = false) instead of adding to it: our kernels
// can; Eigen's GEBP always adds, so C must be zeroed first.
template <class T>
inline constexpr bool kOverwriteKernel = gemm_kernel<T> == GemmKernel::Sgemm;

// C [m, n] += packed A block [m, k] * packed B block [k, n] (= when !add, kOverwriteKernel
// only). Rows are swept in groups of `group` (kGemmRowGroup or a multiple): a group of A panels
// stays in L2 while each B panel (in L1) meets all of them.
template <class T>
void multiply_packed(ColMajorOut<T> c, const T* pa, const T* pb, int64_t m, int64_t n, int64_t k, int64_t group,
                     bool add = true) {
  TXTCLS_CHECK(add || kOverwriteKernel<T>, "packed_gemm: this kernel cannot overwrite its result");
  for (int64_t ib = 0; ib < m; ib += group) {
    const int64_t ie = std::min(m, ib + group);
    if constexpr (gemm_kernel<T> == GemmKernel::Sgemm) {
#if TXTCLS_SGEMM
      sgemm::multiply_rows(ib, ie, m, n, k, pa, pb, c.p, c.ld, add);
#endif
    } else if constexpr (gemm_kernel<T> == GemmKernel::EigenGebp) {
#if TXTCLS_EIGEN_GEBP
      using G = GebpTypes<T>;
      typename G::Kernel()(typename G::ResMapper(c.p + ib, c.ld), pa + ib * k, pb, ie - ib, k, n, T(1));
#endif
    }
  }
  (void)c, (void)pa, (void)pb, (void)n, (void)k, (void)add;
}

// A fixed lhs matrix A [M, K], packed once; multiply_add(C, B) then computes C += A B.
template <class T>
class PackedLhs {
 public:
  PackedLhs() = default;
  explicit PackedLhs(MatRef<T> a) { pack(a); }

  void pack(MatRef<T> a) {
    TXTCLS_CHECK(a.cs == 1 || a.rs == 1, "packed_gemm: lhs needs a unit stride");
    rows_ = a.rows;
    depth_ = a.cols;
    kc_ = gemm_depth_block<T>(depth_);
    offsets_.clear();
    int64_t total = 0;
    for (int64_t k = 0; k < depth_; k += kc_) {
      offsets_.push_back(total);
      total += packed_a_size<T>(rows_, std::min(kc_, depth_ - k));
    }
    data_.resize(static_cast<size_t>(std::max<int64_t>(total, 1)));
    for (int64_t k = 0, blk = 0; k < depth_; k += kc_, ++blk)
      pack_a_block(data_.data() + offsets_[blk], a.block(0, k, rows_, std::min(kc_, depth_ - k)));
  }

  int64_t rows() const { return rows_; }
  int64_t depth() const { return depth_; }
  // Scratch size (elements) that multiply_add needs for a B with `cols` columns.
  int64_t scratch_size(int64_t cols) const { return packed_b_size<T>(kc_, cols); }

  // C [M, n] (column-major) += A B (or = when !accumulate), with B [K, n]. `scratch` holds
  // scratch_size(n) elements and must be 64-byte aligned (a Tensor's data or an AlignedVec);
  // it is reused across calls so a recurrence never allocates.
  void multiply_add(ColMajorOut<T> c, MatRef<T> b, T* scratch, bool accumulate = true) const {
    TXTCLS_CHECK(b.rows == depth_, "packed_gemm: inner dims differ (", depth_, " vs ", b.rows, ")");
    // Our kernels write the first K block's product over C; others add to a zeroed C.
    const bool overwrite = !accumulate && kOverwriteKernel<T> && depth_ > 0;
    if (!accumulate && !overwrite) zero_result(c, rows_, b.cols);
    if (rows_ == 0 || b.cols == 0 || depth_ == 0) return;
    for (int64_t k = 0, blk = 0; k < depth_; k += kc_, ++blk) {
      const int64_t kb = std::min(kc_, depth_ - k);
      const T* pa = data_.data() + offsets_[blk];
      if constexpr (gemm_kernel<T> == GemmKernel::EigenProduct) {
        gemm_reference(c, row_major_ref(pa, rows_, kb, kb), b.block(k, 0, kb, b.cols), true);
      } else {
        pack_b_block(scratch, b.block(k, 0, kb, b.cols));
        multiply_packed(c, pa, scratch, rows_, b.cols, kb, kGemmRowGroup, !(overwrite && k == 0));
      }
    }
  }

 private:
  int64_t rows_ = 0, depth_ = 0, kc_ = 1;
  std::vector<int64_t> offsets_;  // start of each K block's panels in data_
  AlignedVec<T> data_;
};

// C [M, N] (column-major) = A B (or += when accumulate), cache-blocked, one thread.
template <class T>
void gemm(ColMajorOut<T> c, MatRef<T> a, MatRef<T> b, bool accumulate) {
  TXTCLS_CHECK(a.cols == b.rows, "packed_gemm: inner dims differ (", a.cols, " vs ", b.rows, ")");
  const int64_t M = a.rows, N = b.cols, K = a.cols;
  if (M == 0 || N == 0) return;
  // Our kernels write the first K block's product over C (no zeroing pass, C is not read).
  const bool overwrite = !accumulate && kOverwriteKernel<T> && K > 0;
  if (!accumulate && !overwrite) zero_result(c, M, N);
  if (K == 0) return;
  if constexpr (gemm_kernel<T> == GemmKernel::EigenProduct) {
    gemm_reference(c, a, b, true);
  } else {
    // Per K block, A is packed once (all rows); each B block [kc, nc] is then swept by groups of
    // A panels that stay in L2 (Goto/BLIS blocking). Sizes measured on Zen 3 (AVX2), float.
    const int64_t kc = gemm_depth_block<T>(K);
    const int64_t nc = std::min<int64_t>(N, 768);
    AlignedVec<T> pa(static_cast<size_t>(packed_a_size<T>(M, kc))), pb(static_cast<size_t>(packed_b_size<T>(kc, nc)));
    for (int64_t k = 0; k < K; k += kc) {
      const int64_t kb = std::min(kc, K - k);
      pack_a_block(pa.data(), a.block(0, k, M, kb));
      for (int64_t j = 0; j < N; j += nc) {
        const int64_t nb = std::min(nc, N - j);
        pack_b_block(pb.data(), b.block(k, j, kb, nb));
        multiply_packed<T>({c.p + j * c.ld, c.ld}, pa.data(), pb.data(), M, nb, kb, kGemmRowGroup,
                           !(overwrite && k == 0));
      }
    }
  }
}

}  // namespace txtcls::detail
