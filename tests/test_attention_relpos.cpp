// Relative-position ops (include/txtcls/ops/relative_position.hpp): rel_shift_bnij, T5 buckets and
// position bias, XLNet's sinusoidal relative encoding. Hand-worked cases, HF's reshape trick
// replayed with views, finite differences, and the values Hugging Face transformers computes
// (tests/fixtures/attention, tools/make_attention_fixtures.py).
#include <cmath>
#include <sstream>

#include "test_attention_relpos_fixture.hpp"
#include "txtcls/ops/relative_position.hpp"

using namespace txtcls;
using namespace tt;

namespace {

// HF's rel_shift_bnij written with the library's own views: [.., I, J] -> reshape [.., J, I] ->
// drop row 0 -> reshape [.., I, J - 1] -> first klen columns.
TD rel_shift_by_reshape(const TD& x, int64_t klen) {
  const int64_t B = x.size(0), N = x.size(1), I = x.size(2), J = x.size(3);
  return x.reshape({B, N, J, I}).slice(2, 1, J).reshape({B, N, I, J - 1}).slice(3, 0, klen).contiguous();
}

std::vector<std::string> split_csv(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  return out;
}

}  // namespace

// ================================================================ rel_shift_bnij

TEST_CASE("rel_shift_bnij: hand-worked shifts", "[attention][relpos]") {
  // bi: qlen 2, klen 3 (mlen 1), P = klen + qlen = 5 distances 3, 2, 1, 0, -1.
  // out[i, j] = x[i, qlen - i + j]: query i (position 1 + i) meets key j at distance 1 + i - j.
  auto x = arange<double>(0, 10).reshape({1, 1, 2, 5});
  auto y = rel_shift_bnij(x, 3);
  REQUIRE(y.shape() == Shape{1, 1, 2, 3});
  require_close(y, {2, 3, 4, 6, 7, 8});
  // uni: P = klen + 1 = 4 distances 3, 2, 1, 0. Row 0 runs on into row 1 for its future key j = 2
  // (x[1, 0] = 4), exactly as HF's reshape does; the causal mask hides that key.
  auto xu = arange<double>(0, 8).reshape({1, 1, 2, 4});
  require_close(rel_shift_bnij(xu, 3), {2, 3, 4, 5, 6, 7});
  // klen == 0 and qlen == 0 give empty results
  REQUIRE(rel_shift_bnij(x, 0).shape() == Shape{1, 1, 2, 0});
  REQUIRE(rel_shift_bnij(zeros<double>({2, 3, 0, 4}), 3).shape() == Shape{2, 3, 0, 3});
  // more than one plane, 3-d input
  auto x3 = arange<double>(0, 20).reshape({2, 2, 5});
  require_close(rel_shift_bnij(x3, 3), {2, 3, 4, 6, 7, 8, 12, 13, 14, 16, 17, 18});
}

TEST_CASE("rel_shift_bnij: equals HF's reshape trick for every klen", "[attention][relpos]") {
  for (auto [I, J] : std::vector<std::pair<int64_t, int64_t>>{{4, 9}, {4, 7}, {3, 4}, {1, 2}, {5, 6}, {2, 11}, {6, 8}}) {
    auto x = rnd({2, 3, I, J}, 11 + I * J);
    for (int64_t klen = 0; klen <= J - 1; ++klen) {
      INFO("I " << I << " J " << J << " klen " << klen);
      REQUIRE(rel_shift_bnij(x, klen).to_vector() == rel_shift_by_reshape(x, klen).to_vector());
    }
  }
  // a non-contiguous input (transposed view) reads the same values as its contiguous copy
  auto base = rnd({2, 3, 7, 4}, 5);
  auto xt = base.transpose(2, 3);  // [2, 3, 4, 7]
  REQUIRE(rel_shift_bnij(xt, 5).to_vector() == rel_shift_bnij(xt.contiguous(), 5).to_vector());
  // large enough for the parallel path
  auto big = rnd({4, 8, 64, 129}, 6);
  REQUIRE(rel_shift_bnij(big, 65).to_vector() == rel_shift_by_reshape(big, 65).to_vector());
}

TEST_CASE("rel_shift_bnij: gradients", "[attention][relpos]") {
  auto f = [](int64_t klen) {
    return [klen](const std::vector<TD>& in) { return rel_shift_bnij(in[0], klen); };
  };
  REQUIRE_GRAD(f(5), rnd({2, 3, 4, 9}, 1));  // bi: klen = 5, qlen 4, P = 9
  REQUIRE_GRAD(f(5), rnd({2, 2, 4, 6}, 2));  // uni: P = klen + 1
  REQUIRE_GRAD(f(1), rnd({1, 1, 3, 2}, 3));
  REQUIRE_GRAD(f(2), rnd({2, 3, 5}, 4));
  // the backward is a scatter: the gradient sits where the forward read, zero elsewhere
  auto x = rnd({1, 1, 2, 5}, 7).set_requires_grad(true);
  rel_shift_bnij(x, 3).backward(from_vector<double>({1, 2, 3, 4, 5, 6}, {1, 1, 2, 3}));
  require_close(x.grad(), {0, 0, 1, 2, 3, 0, 4, 5, 6, 0});
}

TEST_CASE("rel_shift_bnij: errors name the op and shapes", "[attention][relpos]") {
  auto x = rnd({1, 1, 2, 5}, 1);
  REQUIRE_THROWS_WITH(rel_shift_bnij(x, 5), Catch::Contains("rel_shift_bnij: klen 5 must be in [0, 4]") &&
                                                Catch::Contains("[1, 1, 2, 5]"));
  REQUIRE_THROWS_WITH(rel_shift_bnij(x, -1), Catch::Contains("rel_shift_bnij: klen -1"));
  REQUIRE_THROWS_WITH(rel_shift_bnij(rnd({5}, 1), 1), Catch::Contains("rel_shift_bnij: input must have at least 2 dims"));
}

// ================================================================ T5 buckets and bias

TEST_CASE("t5_relative_position_bucket: hand-worked values", "[attention][relpos][t5]") {
  // bidirectional, 32 buckets (16 per sign, 8 exact), max_distance 128
  const std::vector<int64_t> rel = {0, -3, 3, -8, -16, 16, -20, -200, 200, -32, -64, -127, -128, -1000};
  // -16: 8 + trunc(log(2) / log(16) * 8) = 8 + trunc(2) in exact arithmetic, and also in float32 (10)
  const std::vector<int64_t> bi = {0, 3, 19, 8, 10, 26, 10, 15, 31, 12, 14, 15, 15, 15};
  // causal: future keys (rel > 0) are bucket 0; 32 buckets, 16 exact
  const std::vector<int64_t> causal = {0, 3, 0, 8, 16, 0, 17, 31, 0, 21, 26, 31, 31, 31};
  for (size_t i = 0; i < rel.size(); ++i) {
    INFO("relative position " << rel[i]);
    REQUIRE(t5_relative_position_bucket(rel[i], true, 32, 128) == bi[i]);
    REQUIRE(t5_relative_position_bucket(rel[i], false, 32, 128) == causal[i]);
  }
  // the tensor form agrees, for views too
  auto t = from_vector<int64_t>(rel, {2, 7});
  REQUIRE(t5_relative_position_bucket(t, true, 32, 128).to_vector() == bi);
  auto tt_ = t5_relative_position_bucket(t.t(), false, 32, 128);
  REQUIRE(tt_.shape() == Shape{7, 2});
  for (int64_t a = 0; a < 7; ++a)
    for (int64_t b = 0; b < 2; ++b) REQUIRE(tt_.at({a, b}) == causal[b * 7 + a]);
  // relative positions key - (query + offset)
  require_close(t5_relative_positions(2, 3), std::vector<int64_t>{0, 1, 2, -1, 0, 1}, 0);
  require_close(t5_relative_positions(2, 4, 2), std::vector<int64_t>{-2, -1, 0, 1, -3, -2, -1, 0}, 0);
}

TEST_CASE("t5_relative_position_bucket: Hugging Face values", "[attention][relpos][t5][parity]") {
  relpos::Fixture fx("t5_buckets.safetensors");
  auto rel = fx.get<int64_t>("relative_position");
  int configs = 0;
  for (const auto& [key, value] : fx.file.metadata) {
    if (key.rfind("config/", 0) != 0) continue;
    const std::string idx = key.substr(7);
    auto c = split_csv(value);
    const bool bidirectional = c[0] == "1";
    const int64_t nb = std::stoll(c[1]), md = std::stoll(c[2]);
    INFO("bidirectional " << bidirectional << " num_buckets " << nb << " max_distance " << md);
    auto want = fx.get<int64_t>("buckets/" + idx).to_vector();
    auto got = t5_relative_position_bucket(rel, bidirectional, nb, md).to_vector();
    auto rv = rel.to_vector();
    for (size_t i = 0; i < got.size(); ++i) {
      INFO("relative position " << rv[i]);
      REQUIRE(got[i] == want[i]);
      REQUIRE(t5_relative_position_bucket(rv[i], bidirectional, nb, md) == want[i]);
    }
    ++configs;
  }
  REQUIRE(configs == 11);
}

TEST_CASE("t5_relative_position_bucket: parameter errors", "[attention][relpos][t5]") {
  REQUIRE_THROWS_WITH(t5_relative_position_bucket(1, true, 3, 10),
                      Catch::Contains("t5_relative_position_bucket: num_buckets 3 is too small"));
  REQUIRE_THROWS_WITH(t5_relative_position_bucket(1, false, 32, 16),
                      Catch::Contains("max_distance 16 must be positive and differ from the number of exact buckets 16"));
  REQUIRE_THROWS_WITH(t5_relative_position_bucket(1, true, 32, 0), Catch::Contains("max_distance 0 must be positive"));
  // below max_exact HF's formula runs backwards, even to negative buckets (which no table can look
  // up); reproduced as is: log(100 / 10) / log(9 / 10) * 10 = -218.5 -> 10 - 218
  REQUIRE(t5_relative_position_bucket(-100, false, 20, 9) == -208);
  REQUIRE(t5_relative_position_bucket(-11, false, 20, 9) == 1);
  REQUIRE_THROWS_WITH(t5_position_bias(rnd({20, 2}, 1), 1, 101, false, 9, 100), Catch::Contains("embedding: id -208"));
  REQUIRE_THROWS_WITH(t5_relative_positions(-1, 2), Catch::Contains("t5_relative_positions: negative length"));
}

TEST_CASE("t5_position_bias: lookup layout, offsets, gradients", "[attention][relpos][t5]") {
  const int64_t nb = 8, H = 3, Lq = 4, Lk = 6;
  auto table = rnd({nb, H}, 3);
  for (bool bidirectional : {true, false}) {
    for (int64_t off : {0, 2}) {
      INFO("bidirectional " << bidirectional << " offset " << off);
      auto bias = t5_position_bias(table, Lq, Lk, bidirectional, 5, off);
      REQUIRE(bias.shape() == Shape{1, H, Lq, Lk});
      REQUIRE(bias.is_contiguous());
      for (int64_t i = 0; i < Lq; ++i)
        for (int64_t j = 0; j < Lk; ++j) {
          const int64_t b = t5_relative_position_bucket(j - (i + off), bidirectional, nb, 5);
          for (int64_t h = 0; h < H; ++h) REQUIRE(bias.at({0, h, i, j}) == table.at({b, h}));
        }
      // the last query row of an offset bias is the row of the full bias at that position
      if (off == 2) {
        auto full = t5_position_bias(table, Lq + off, Lk, bidirectional, 5);
        REQUIRE(bias.select(2, Lq - 1).to_vector() == full.select(2, Lq + off - 1).to_vector());
      }
      auto f = [=](const std::vector<TD>& in) { return t5_position_bias(in[0], Lq, Lk, bidirectional, 5, off); };
      REQUIRE_GRAD(f, table);
    }
  }
  REQUIRE_THROWS_WITH(t5_position_bias(rnd({8}, 1), 2, 2, true), Catch::Contains("t5_position_bias: relative_attention_bias must be"));
  REQUIRE_THROWS_WITH(t5_position_bias(table, 2, 2, true, 5, -1), Catch::Contains("t5_position_bias: negative query_offset"));
}

// ================================================================ XLNet positional encoding

TEST_CASE("xlnet_relative_positional_encoding: closed form and layout", "[attention][relpos][xlnet]") {
  // d_model 4: inv_freq = {1, 1/100}; bi, qlen 2, klen 3: distances 3, 2, 1, 0, -1
  auto inv = xlnet_inv_freq(4);
  REQUIRE(inv.size() == 2);
  REQUIRE(inv[0] == 1.0f);
  REQUIRE(inv[1] == 0.01f);
  auto pe = xlnet_relative_positional_encoding<double>(2, 3, 4, XLNetAttnType::Bi);
  REQUIRE(pe.shape() == Shape{1, 5, 4});
  for (int64_t p = 0; p < 5; ++p) {
    const float pos = static_cast<float>(3 - p);
    const float x1 = pos * 0.01f;
    REQUIRE(pe.at({0, p, 0}) == static_cast<double>(static_cast<float>(std::sin(static_cast<double>(pos)))));
    REQUIRE(pe.at({0, p, 2}) == static_cast<double>(static_cast<float>(std::cos(static_cast<double>(pos)))));
    REQUIRE(pe.at({0, p, 1}) == static_cast<double>(static_cast<float>(std::sin(static_cast<double>(x1)))));
    REQUIRE(pe.at({0, p, 3}) == static_cast<double>(static_cast<float>(std::cos(static_cast<double>(x1)))));
  }
  // uni: klen + 1 distances klen..0
  auto pu = xlnet_relative_positional_encoding<double>(2, 3, 4, XLNetAttnType::Uni);
  REQUIRE(pu.shape() == Shape{1, 4, 4});
  REQUIRE(pu.select(1, 3).to_vector() == std::vector<double>{0, 0, 1, 1});  // distance 0
  // clamp_len: distances beyond 2 look like 2
  auto pc = xlnet_relative_positional_encoding<double>(2, 3, 4, XLNetAttnType::Bi, false, 2);
  REQUIRE(pc.select(1, 0).to_vector() == pe.select(1, 1).to_vector());
  // bsz expands the batch; bi_data puts the mirrored distances in the second half
  auto pb = xlnet_relative_positional_encoding<double>(2, 3, 4, XLNetAttnType::Bi, false, -1, 3);
  REQUIRE(pb.shape() == Shape{3, 5, 4});
  REQUIRE(pb.select(0, 2).to_vector() == pe.select(0, 0).to_vector());
  auto pd = xlnet_relative_positional_encoding<double>(2, 3, 4, XLNetAttnType::Bi, true, -1, 4);
  REQUIRE(pd.shape() == Shape{4, 5, 4});
  REQUIRE(pd.select(0, 1).to_vector() == pe.select(0, 0).to_vector());
  for (int64_t p = 0; p < 5; ++p) {
    REQUIRE(pd.at({2, p, 0}) == -pe.at({0, p, 0}));  // sin(-x) = -sin(x)
    REQUIRE(pd.at({3, p, 2}) == pe.at({0, p, 2}));   // cos(-x) = cos(x)
  }
  REQUIRE(xlnet_relative_positional_encoding<float>(2, 3, 4, XLNetAttnType::Bi, true).shape() == Shape{2, 5, 4});
  // memory: klen = mlen + qlen
  REQUIRE(xlnet_relative_positional_encoding<float>(3, 3 + 5, 8, XLNetAttnType::Bi).shape() == Shape{1, 11, 8});
  REQUIRE(xlnet_attn_type("uni") == XLNetAttnType::Uni);
  REQUIRE_THROWS_WITH(xlnet_attn_type("both"), Catch::Contains("xlnet_attn_type: unknown attn_type 'both'"));
  REQUIRE_THROWS_WITH(xlnet_relative_positional_encoding<float>(2, 3, 5, XLNetAttnType::Bi),
                      Catch::Contains("d_model must be positive and even, got 5"));
  REQUIRE_THROWS_WITH(xlnet_relative_positional_encoding<float>(2, 3, 4, XLNetAttnType::Bi, true, -1, 3),
                      Catch::Contains("bsz 3 is odd"));
  REQUIRE_THROWS_WITH(xlnet_relative_positional_encoding<float>(4, 3, 4, XLNetAttnType::Bi),
                      Catch::Contains("need 0 <= qlen <= klen"));
}

TEST_CASE("xlnet_relative_positional_encoding: Hugging Face values", "[attention][relpos][xlnet][parity]") {
  // HF computes the encoding in float32 with PyTorch's vectorised sin/cos, which may differ from
  // the correctly rounded values computed here by one float32 ulp (|values| <= 1: <= 2^-23 ~ 1.2e-7).
  relpos::Fixture fx("xlnet_pos_emb.safetensors");
  int cases = 0;
  int64_t total = 0, exact = 0;
  for (const auto& [key, value] : fx.file.metadata) {
    if (key.rfind("case/", 0) != 0) continue;
    auto c = split_csv(value);
    const int64_t qlen = std::stoll(c[0]), klen = std::stoll(c[1]), d = std::stoll(c[2]);
    const auto type = xlnet_attn_type(c[3]);
    const bool bi_data = c[4] == "1";
    const int64_t clamp = std::stoll(c[5]), bsz = std::stoll(c[6]);
    INFO("case " << value);
    auto want = fx.get<float>("pos_emb/" + key.substr(5));
    auto got = xlnet_relative_positional_encoding<float>(qlen, klen, d, type, bi_data, clamp, bsz);
    REQUIRE(got.shape() == want.shape());
    auto a = got.to_vector(), b = want.to_vector();
    for (size_t i = 0; i < a.size(); ++i) {
      INFO("element " << i << ": " << a[i] << " vs " << b[i]);
      REQUIRE(std::abs(a[i] - b[i]) <= std::ldexp(1.0f, -23));
      exact += a[i] == b[i];
    }
    total += static_cast<int64_t>(a.size());
    // the double version holds the same float32-rounded values
    auto gd = xlnet_relative_positional_encoding<double>(qlen, klen, d, type, bi_data, clamp, bsz);
    REQUIRE(cast<float>(gd).to_vector() == a);
    ++cases;
  }
  REQUIRE(cases == 8);
  if (std::getenv("TXTCLS_PARITY_REPORT"))
    std::cout << "parity xlnet_pos_emb: " << exact << " of " << total << " values bit-identical\n";
  REQUIRE(exact >= total * 9 / 10);
}
