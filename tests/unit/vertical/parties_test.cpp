#include "cutlayer/vertical/parties.h"

#include <gtest/gtest.h>

#include <set>

#include "cutlayer/error.h"

using namespace cutlayer;
using namespace cutlayer::vertical;

TEST(VerticalParties, ColumnsPartitionTheWidth) {
  for (int k = 1; k <= 7; ++k) {
    std::int64_t next = 0, smallest = 1 << 20, largest = 0;
    for (int i = 0; i < k; ++i) {
      const auto c = columns_of(28, k, i);
      EXPECT_EQ(c.begin, next) << k << " " << i;  // contiguous, in order
      next = c.end;
      smallest = std::min(smallest, c.size());
      largest = std::max(largest, c.size());
    }
    EXPECT_EQ(next, 28);
    EXPECT_LE(largest - smallest, 1);
  }
  EXPECT_THROW(columns_of(28, 2, 2), ConfigError);
  EXPECT_THROW(columns_of(3, 4, 0), ConfigError);  // more parties than columns
}

TEST(VerticalParties, StripsAreTheirColumns) {
  const auto img = torch::arange(2 * 1 * 3 * 28).reshape({2, 1, 3, 28});
  EXPECT_TRUE(torch::equal(strip(img, 2, 1), img.slice(3, 14, 28)));
  EXPECT_TRUE(torch::equal(torch::cat({strip(img, 4, 0), strip(img, 4, 1), strip(img, 4, 2), strip(img, 4, 3)}, 3), img));
  const auto table = torch::arange(5 * 10).reshape({5, 10});
  EXPECT_TRUE(torch::equal(strip(table, 3, 2), table.slice(1, 6, 10)));
  EXPECT_THROW(strip(torch::zeros({2, 3, 4}), 2, 0), ConfigError);
}

TEST(VerticalParties, HoldingsAreSeededSharesOfThePeople) {
  const auto a = holding(1000, 0, 0.8, 7, "p-"), b = holding(1000, 1, 0.8, 7, "p-");
  ASSERT_EQ(a.rows.size(), 800u);
  ASSERT_EQ(a.ids.size(), 800u);
  EXPECT_TRUE(std::is_sorted(a.rows.begin(), a.rows.end()));
  EXPECT_EQ(std::set<std::int64_t>(a.rows.begin(), a.rows.end()).size(), 800u);
  EXPECT_EQ(a.ids[5], "p-" + std::to_string(a.rows[5]));
  EXPECT_NE(a.rows, b.rows);                            // each party its own share
  EXPECT_EQ(holding(1000, 1, 0.8, 7, "p-").rows, b.rows);  // the same seed, the same share
  std::vector<std::int64_t> both;
  std::set_intersection(a.rows.begin(), a.rows.end(), b.rows.begin(), b.rows.end(), std::back_inserter(both));
  EXPECT_GT(both.size(), 580u);  // about 0.8 x 0.8 of 1,000
  EXPECT_LT(both.size(), 700u);
  EXPECT_THROW(holding(10, 0, 0.0, 1, ""), ConfigError);
  EXPECT_THROW(holding(10, 0, 1.5, 1, ""), ConfigError);
}

TEST(VerticalParties, ModelJoinsEveryPartysFeatures) {
  for (int k : {1, 2, 4, 7}) {
    auto m = build_vertical({1, 28, 28}, k, 10, 3);
    ASSERT_EQ(m.fronts.size(), static_cast<std::size_t>(k));
    const auto x = torch::randn({5, 1, 28, 28});
    const auto y = m.forward(x);
    EXPECT_EQ(y.sizes(), torch::IntArrayRef({5, 10})) << k;
    // Changing any one party's strip changes the output: every front reaches the back.
    for (int i = 0; i < k; ++i) {
      auto x2 = x.clone();
      const auto c = columns_of(28, k, i);
      x2.narrow(3, c.begin, c.size()).add_(1.0);
      EXPECT_FALSE(torch::allclose(m.forward(x2), y)) << k << " " << i;
    }
  }
  auto table = build_vertical({30}, 3, 2, 3);
  EXPECT_EQ(table.forward(torch::randn({4, 30})).sizes(), torch::IntArrayRef({4, 2}));
  EXPECT_THROW(build_vertical({1, 28, 14}, 4, 10, 3), ConfigError);  // strips of 3 and 4 columns
  EXPECT_THROW(build_vertical({1, 28}, 2, 10, 3), ConfigError);
  // Seeded: the same seed gives the same weights.
  auto a = build_vertical({1, 28, 28}, 2, 10, 9), b = build_vertical({1, 28, 28}, 2, 10, 9);
  const auto pa = a.parameters(), pb = b.parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i]));
}
