#include "test_util.hpp"
#include "txtcls/train/metrics.hpp"

using txtcls::train::ConfusionMatrix;

TEST_CASE("confusion matrix metrics against hand-computed values", "[train][metrics]") {
  ConfusionMatrix cm(3);
  // gold 0: predicted 0,0,1 ; gold 1: predicted 1,1 ; gold 2: predicted 0
  cm.add(0, 0); cm.add(0, 0); cm.add(0, 1); cm.add(1, 1); cm.add(1, 1); cm.add(2, 0);
  REQUIRE(cm.total() == 6);
  REQUIRE(cm.accuracy() == Approx(4.0 / 6));
  REQUIRE(cm.precision(0) == Approx(2.0 / 3));
  REQUIRE(cm.recall(0) == Approx(2.0 / 3));
  REQUIRE(cm.precision(1) == Approx(2.0 / 3));
  REQUIRE(cm.recall(1) == Approx(1.0));
  REQUIRE(cm.f1(1) == Approx(0.8));
  REQUIRE(cm.f1(2) == 0.0);
  // sklearn.metrics.f1_score([0,0,0,1,1,2],[0,0,1,1,1,0],average='macro') = 0.48888...
  REQUIRE(cm.macro_f1() == Approx((2.0 / 3 + 0.8 + 0.0) / 3));
  auto r = cm.report({"a", "b", "c"});
  REQUIRE(r.find("confusion matrix") != std::string::npos);
  REQUIRE_THROWS_WITH(cm.add(3, 0), Catch::Contains("class out of range"));
  ConfusionMatrix two(4);  // classes with no gold and no predictions are left out of macro-F1
  two.add(0, 0); two.add(1, 1);
  REQUIRE(two.macro_f1() == Approx(1.0));
}
