// The strided indexing kernels (kernels/indexing.cu: select, compare_scalar), emulated on the
// host (cuda_shim.hpp) on host arrays, against the rule computed directly: every element of
// outputs whose operands are broadcast (stride 0), transposed, sliced (strides larger than the
// extent) or contiguous, in float and double, over sizes that leave a ragged last block. These
// kernels index in 32 bits where fits_32bit(g) holds (the walk of kernels/geometry.cuh), which
// all of these shapes do; the checks guard that walk. Outputs are poisoned first.
//   check_indexing
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "txtcls/cuda/elementwise.hpp"
#include "txtcls/cuda/indexing.hpp"

using namespace txtcls;
using txtcls::cuda::Compare;

namespace {

// Element offset of multi-index idx under `strides`.
int64_t offset(const std::vector<int64_t>& idx, const Shape& strides) {
  int64_t o = 0;
  for (size_t d = 0; d < idx.size(); ++d) o += idx[d] * strides[d];
  return o;
}

// Calls f(multi-index) for every element of `shape`, row-major.
template <class F>
void for_each_index(const Shape& shape, F f) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  std::vector<int64_t> idx(shape.size(), 0);
  for (int64_t e = 0; e < n; ++e) {
    int64_t r = e;
    for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
      idx[d] = r % shape[d];
      r /= shape[d];
    }
    f(idx);
  }
}

// Extent (elements) an operand with these strides over `shape` needs.
int64_t extent(const Shape& shape, const Shape& strides) {
  int64_t e = 1;
  for (size_t d = 0; d < shape.size(); ++d) e += (shape[d] - 1) * strides[d];
  return e;
}

struct Layout {
  const char* name;
  Shape shape, out, cond, a, b;  // strides over shape
};

template <class T>
int check(const Layout& L) {
  int bad = 0;
  std::vector<uint8_t> cond(extent(L.shape, L.cond));
  std::vector<T> a(extent(L.shape, L.a)), b(extent(L.shape, L.b)), out(extent(L.shape, L.out), T(-777));
  for (size_t i = 0; i < cond.size(); ++i) cond[i] = static_cast<uint8_t>((i * 7 + 3) % 5 < 2);
  for (size_t i = 0; i < a.size(); ++i) a[i] = T(0.25) * T(i % 13) - T(1);
  for (size_t i = 0; i < b.size(); ++i) b[i] = T(100) + T(i % 17);
  const auto g = cuda::make_geometry(L.shape, {L.out, L.cond, L.a, L.b}, "check_indexing");
  if (!cuda::fits_32bit(g)) {
    std::printf("  %s: expected a 32-bit geometry\n", L.name);
    return 1;
  }
  cuda::select<T>(cond.data(), a.data(), b.data(), out.data(), g);
  for_each_index(L.shape, [&](const std::vector<int64_t>& idx) {
    const T want = cond[offset(idx, L.cond)] ? a[offset(idx, L.a)] : b[offset(idx, L.b)];
    if (out[offset(idx, L.out)] != want) ++bad;
  });
  // compare_scalar: out (uint8) by the output strides, x = a.
  std::vector<uint8_t> flags(extent(L.shape, L.out), uint8_t(0xAB));
  const auto gc = cuda::make_geometry(L.shape, {L.out, L.a}, "check_indexing");
  for (Compare op : {Compare::Lt, Compare::Le, Compare::Gt, Compare::Ge, Compare::Eq, Compare::Ne}) {
    const T v = T(0.5);
    std::fill(flags.begin(), flags.end(), uint8_t(0xAB));
    cuda::compare_scalar<T>(a.data(), v, op, flags.data(), gc);
    for_each_index(L.shape, [&](const std::vector<int64_t>& idx) {
      const T x = a[offset(idx, L.a)];
      const bool want = op == Compare::Lt ? x < v : op == Compare::Le ? x <= v : op == Compare::Gt ? x > v
                        : op == Compare::Ge ? x >= v : op == Compare::Eq ? x == v : x != v;
      if (flags[offset(idx, L.out)] != uint8_t(want)) ++bad;
    });
  }
  std::printf("  %-44s %-6s %s\n", L.name, sizeof(T) == 4 ? "float" : "double", bad ? "FAILED" : "ok");
  return bad ? 1 : 0;
}

}  // namespace

int main() {
  const std::vector<Layout> layouts = {
      // name, shape, out, cond, a, b
      {"contiguous 1-d, ragged block", {1037}, {1}, {1}, {1}, {1}},
      {"padding mask [B,1,1,L] over [B,H,Lq,L]", {3, 4, 5, 37}, {740, 185, 37, 1}, {37, 0, 0, 1}, {740, 185, 37, 1}, {0, 0, 0, 0}},
      {"row and column broadcasts", {7, 9, 11}, {99, 11, 1}, {0, 1, 0}, {11, 0, 1}, {0, 0, 1}},
      {"transposed and sliced operands", {6, 10, 13}, {130, 13, 1}, {1, 6, 60}, {300, 1, 20}, {260, 26, 2}},
      {"transposed output", {5, 8, 9}, {1, 45, 5}, {72, 9, 1}, {72, 9, 1}, {0, 9, 1}},
      {"five dims, mixed", {2, 3, 4, 5, 6}, {360, 120, 30, 6, 1}, {0, 4, 1, 0, 12}, {720, 240, 60, 12, 2}, {1, 2, 6, 24, 120}},
  };
  int failed = 0;
  for (const Layout& L : layouts) {
    failed += check<float>(L);
    failed += check<double>(L);
  }
  std::printf("%s: %d of %zu checks failed\n", failed ? "FAILED" : "passed", failed, 2 * layouts.size());
  return failed ? 1 : 0;
}
