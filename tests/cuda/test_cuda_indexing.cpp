// The indexing ops and max / argmax on the GPU against the CPU: sizes 1, 31, 1025 and 4099 along
// the indexed or reduced dim, every dim of 3-d inputs, strided views, repeated indices (the
// ordered backward sums), ties and NaNs (the first maximum, NaN wins), broadcast masks given on
// the host or the device, and empty pieces. Outputs are poisoned by the suite's main, so an
// element a kernel skips fails the comparison.
#include "cuda_test_util.hpp"
#include "txtcls/ops/indexing.hpp"
#include "txtcls/ops/max.hpp"

// In a namespace of its own: test files are compiled several to a unit (TXTCLS_UNITY_BUILD).
namespace test_cuda_indexing {

using namespace txtcls;
using ct::gpu;

namespace {

// Equal element for element, NaN equal to NaN (copies and selections are exact).
template <class T>
void require_same(const Tensor<T>& got, const Tensor<T>& want) {
  REQUIRE(got.shape() == want.shape());
  const auto g = got.to_vector(), w = want.to_vector();
  int64_t bad = -1;  // the first differing element
  for (size_t i = 0; i < w.size() && bad < 0; ++i) {
    bool same = g[i] == w[i];
    if constexpr (std::is_floating_point_v<T>) same = same || (std::isnan(double(w[i])) && std::isnan(double(g[i])));
    if (!same) bad = static_cast<int64_t>(i);
  }
  INFO("first difference at element " << bad << " of " << shape_str(want.shape()));
  REQUIRE(bad == -1);
}

// Values on a coarse grid (many ties), with NaNs at a few positions when asked.
template <class T>
Tensor<T> tied(const Shape& s, uint64_t seed, bool nans) {
  Tensor<T> x = ct::rnd<T>(s, seed);
  T* p = x.data();
  for (int64_t i = 0; i < x.numel(); ++i) p[i] = std::round(p[i] * T(2)) / T(2);
  if (nans)
    for (int64_t i = 3; i < x.numel(); i += 97) p[i] = std::numeric_limits<T>::quiet_NaN();
  return x;
}

Tensor<int64_t> random_index(const Shape& s, int64_t bound, uint64_t seed) {
  Generator g(seed);
  std::vector<int64_t> v(static_cast<size_t>(numel_of(s)));
  for (auto& e : v) e = static_cast<int64_t>(g.uniform() * double(bound)) % bound;
  return from_vector<int64_t>(v, s);
}

template <class T>
void extreme_suite() {
  const std::vector<Shape> shapes = {{1}, {31}, {1025}, {3, 1025}, {5, 64}, {2, 4099}, {1025, 3}, {7, 31, 5}};
  for (const Shape& s : shapes)
    for (int64_t dim = 0; dim < static_cast<int64_t>(s.size()); ++dim)
      for (bool nans : {false, true}) {
        INFO(shape_str(s) << " dim " << dim << (nans ? " with NaNs" : ""));
        Tensor<T> x0 = tied<T>(s, 17 + dim, nans);
        for (bool is_max : {true, false}) {
          Tensor<T> x = x0.detach().set_requires_grad(), xg = x0.to(gpu()).set_requires_grad();
          require_same(is_max ? argmax(xg, dim).cpu() : argmin(xg, dim).cpu(), is_max ? argmax(x, dim) : argmin(x, dim));
          Tensor<T> y = is_max ? max(x, dim) : min(x, dim), yg = is_max ? max(xg, dim) : min(xg, dim);
          require_same(yg.cpu(), y);
          Tensor<T> gy = ct::rnd<T>(y.shape(), 23);
          y.backward(gy);
          yg.backward(gy.to(gpu()));
          require_same(xg.grad().cpu(), x.grad());
        }
      }
  // keepdim, a transposed view (made contiguous by the op) and a 0-d input.
  Tensor<T> x = tied<T>({31, 6}, 3, true);
  require_same(argmax(x.to(gpu()).transpose(0, 1), 1, true).cpu(), argmax(x.transpose(0, 1), 1, true));
  require_same(argmax(scalar<T>(T(2)).to(gpu()), 0).cpu(), argmax(scalar<T>(T(2)), 0));
}

template <class T>
void gather_suite() {
  const Tensor<T> base = ct::rnd<T>({5, 31, 7}, 1);
  for (bool transposed : {false, true}) {
    // The input as given or as a strided view of a [31, 5, 7] tensor.
    Tensor<T> src = transposed ? ct::rnd<T>({31, 5, 7}, 2) : base;
    for (int64_t dim = 0; dim < 3; ++dim) {
      INFO("dim " << dim << (transposed ? " of a transposed view" : ""));
      Tensor<T> x = (transposed ? src.transpose(0, 1) : src).detach().set_requires_grad();
      Tensor<T> xg = src.to(gpu()).set_requires_grad();
      Tensor<T> xgv = transposed ? xg.transpose(0, 1) : xg;
      const Shape xs = x.shape();
      Shape is = {xs[0] - 1, 9, xs[2]};  // smaller than the input outside dim (a lone size-1 too)
      if (dim == 2) is = {xs[0], 1, 4};
      Tensor<int64_t> idx = random_index(is, xs[dim], 31 + dim);
      Tensor<T> y = gather(x, dim, idx), yg = gather(xgv, dim, idx.to(gpu()));
      require_same(yg.cpu(), y);
      Tensor<T> gy = ct::rnd<T>(y.shape(), 5);
      y.backward(gy);
      yg.backward(gy.to(gpu()));
      CT_REQUIRE_CLOSE(xg.grad().cpu(), transposed ? Tensor<T>(x.grad().transpose(0, 1).contiguous()) : x.grad(), T);
    }
  }
  REQUIRE_THROWS_WITH(gather(base.to(gpu()), 1, random_index({5, 2, 7}, 40, 1)), Catch::Contains("out of range"));
}

template <class T>
void index_select_suite() {
  for (int64_t S : {1, 31, 1025}) {
    for (int64_t n : {int64_t(0), int64_t(1), int64_t(31), int64_t(4099)}) {
      for (int64_t dim = 0; dim < 3; ++dim) {
        INFO("S " << S << " n " << n << " dim " << dim);
        Shape s = {3, 5, 2};
        s[dim] = S;
        Tensor<T> x0 = ct::rnd<T>(s, S + n);
        Tensor<int64_t> idx = random_index({n}, S, n + 7);  // many repeats when n > S
        Tensor<T> x = x0.detach().set_requires_grad(), xg = x0.to(gpu()).set_requires_grad();
        Tensor<T> y = index_select(x, dim, idx), yg = index_select(xg, dim, idx);
        require_same(yg.cpu(), y);
        Tensor<T> gy = ct::rnd<T>(y.shape(), 8);
        y.backward(gy);
        yg.backward(gy.to(gpu()));
        CT_REQUIRE_CLOSE(xg.grad().cpu(), x.grad(), T);
      }
    }
  }
}

template <class T>
void concat_split_suite() {
  for (int64_t dim = 0; dim < 3; ++dim) {
    INFO("dim " << dim);
    std::vector<Tensor<T>> xs, xgs;
    int64_t k = 0;
    for (int64_t len : {1, 0, 31, 1025}) {
      Shape s = {3, 4, 5};
      s[dim] = len;
      Tensor<T> p = ct::rnd<T>(s, 40 + k++);
      xs.push_back(p.detach().set_requires_grad());
      xgs.push_back(p.to(gpu()).set_requires_grad());
    }
    Tensor<T> y = concat(xs, dim), yg = concat(xgs, dim);
    require_same(yg.cpu(), y);
    Tensor<T> gy = ct::rnd<T>(y.shape(), 9);
    y.backward(gy);
    yg.backward(gy.to(gpu()));
    for (size_t i = 0; i < xs.size(); ++i) require_same(xgs[i].grad().cpu(), xs[i].grad());
    // split back into the pieces (views) and stack equal pieces along a new dim
    auto parts = split(yg, std::vector<int64_t>{1, 0, 31, 1025}, dim);
    for (size_t i = 0; i < parts.size(); ++i) require_same(parts[i].contiguous().cpu(), xs[i].detach());
  }
  Tensor<T> a = ct::rnd<T>({31, 3}, 1), b = ct::rnd<T>({31, 3}, 2);
  for (int64_t dim : {0, 1, 2}) require_same(stack({a.to(gpu()), b.to(gpu())}, dim).cpu(), stack({a, b}, dim));
  REQUIRE_THROWS_WITH(concat({a.to(gpu()), b}, 0), Catch::Contains("is on cpu"));
}

template <class T>
void mask_suite() {
  Tensor<T> x0 = tied<T>({31, 1025}, 4, true);
  for (const Shape& ms : std::vector<Shape>{{31, 1025}, {31, 1}, {1025}, {}}) {
    INFO("mask " << shape_str(ms));
    Tensor<uint8_t> m(ms);
    Generator g(ms.size() + 1);
    for (int64_t i = 0; i < m.numel(); ++i) m.data()[i] = g.uniform() < 0.4 ? 1 : 0;
    for (bool mask_on_gpu : {false, true}) {
      Tensor<T> x = x0.detach().set_requires_grad(), xg = x0.to(gpu()).set_requires_grad();
      Tensor<T> y = masked_fill(x, m, T(-7)), yg = masked_fill(xg, mask_on_gpu ? m.to(gpu()) : m, T(-7));
      require_same(yg.cpu(), y);
      Tensor<T> gy = ct::rnd<T>(y.shape(), 2);
      y.backward(gy);
      yg.backward(gy.to(gpu()));
      require_same(xg.grad().cpu(), x.grad());
    }
    // where with a, b broadcast differently: their gradients are summed back (sum_to)
    Tensor<T> a0 = ct::rnd<T>({31, 1025}, 5), b0 = ct::rnd<T>({1025}, 6);
    Tensor<T> a = a0.detach().set_requires_grad(), b = b0.detach().set_requires_grad();
    Tensor<T> ag = a0.to(gpu()).set_requires_grad(), bg = b0.to(gpu()).set_requires_grad();
    Tensor<T> y = where(m, a, b), yg = where(m.to(gpu()), ag, bg);
    require_same(yg.cpu(), y);
    Tensor<T> gy = ct::rnd<T>(y.shape(), 3);
    y.backward(gy);
    yg.backward(gy.to(gpu()));
    require_same(ag.grad().cpu(), a.grad());
    CT_REQUIRE_CLOSE(bg.grad().cpu(), b.grad(), T);
  }
}

template <class T>
void compare_suite() {
  Tensor<T> x = tied<T>({31, 1025}, 9, true);
  for (bool view : {false, true}) {
    Tensor<T> c = view ? x.transpose(0, 1) : x;
    Tensor<T> cg = view ? x.to(gpu()).transpose(0, 1) : x.to(gpu());
    require_same(lt(cg, T(0.5)).cpu(), lt(c, T(0.5)));
    require_same(le(cg, T(0.5)).cpu(), le(c, T(0.5)));
    require_same(gt(cg, T(0.5)).cpu(), gt(c, T(0.5)));
    require_same(ge(cg, T(0.5)).cpu(), ge(c, T(0.5)));
    require_same(eq(cg, T(0.5)).cpu(), eq(c, T(0.5)));
    require_same(ne(cg, T(0.5)).cpu(), ne(c, T(0.5)));  // NaN != v: true on both
  }
  require_same(gt(ct::rnd<T>({1}, 1).to(gpu()), T(0)).cpu(), gt(ct::rnd<T>({1}, 1), T(0)));
}

}  // namespace

TEST_CASE("cuda max, min, argmax and argmin match the CPU (ties, NaN, every dim)", "[cuda][indexing]") {
  extreme_suite<float>();
  extreme_suite<double>();
}

TEST_CASE("cuda gather matches the CPU, strided inputs and repeated indices", "[cuda][indexing]") {
  gather_suite<float>();
  gather_suite<double>();
}

TEST_CASE("cuda index_select matches the CPU, backward in index order", "[cuda][indexing]") {
  index_select_suite<float>();
  index_select_suite<double>();
}

TEST_CASE("cuda concat, stack and split match the CPU", "[cuda][indexing]") {
  concat_split_suite<float>();
  concat_split_suite<double>();
}

TEST_CASE("cuda masked_fill and where match the CPU with broadcast masks", "[cuda][indexing]") {
  mask_suite<float>();
  mask_suite<double>();
}

TEST_CASE("cuda comparisons give the CPU's masks, NaN included", "[cuda][indexing]") {
  compare_suite<float>();
  compare_suite<double>();
}

}  // namespace test_cuda_indexing
