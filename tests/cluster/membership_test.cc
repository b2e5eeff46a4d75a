// ctest-labels: unit
#include "cluster/membership.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace canopy {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

Capabilities Cpu(uint32_t blocks) {
  Capabilities c;
  c.kv_pool_blocks = blocks;
  c.models = {"SmolLM2-135M-Instruct.Q4_1.gguf"};
  return c;
}

TEST(Membership, SilentWorkersDieAtTheDeadline) {
  Membership m(3.0);
  int32_t a = m.Join(Cpu(100), 0.0), b = m.Join(Cpu(200), 0.5);
  EXPECT_EQ(a, 1);
  EXPECT_EQ(b, 2);
  EXPECT_EQ(m.Find(b)->capabilities.kv_pool_blocks, 200u);
  EXPECT_DOUBLE_EQ(m.NextDeadline(), 3.0);
  ASSERT_TRUE(m.Heard(a, 2.0).ok());
  EXPECT_DOUBLE_EQ(m.NextDeadline(), 3.5);
  EXPECT_THAT(m.Expire(3.49), IsEmpty());
  EXPECT_THAT(m.Expire(3.5), ElementsAre(b));  // silent since 0.5
  EXPECT_THAT(m.Expire(3.6), IsEmpty());       // reported once
  EXPECT_THAT(m.Alive(), ElementsAre(a));
  // A dead worker's late heartbeat does not revive it: it must join again, with a new id.
  Status late = m.Heard(b, 3.7);
  EXPECT_EQ(late.code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(late.message(), ::testing::HasSubstr("dead"));
  int32_t b2 = m.Join(Cpu(200), 3.8);
  EXPECT_EQ(b2, 3);
  EXPECT_THAT(m.Alive(), ElementsAre(a, b2));
  EXPECT_EQ(m.Heard(99, 4.0).code(), StatusCode::kNotFound);
}

TEST(Membership, LeaveAndJoinDuringAJob) {
  Membership m(1.0);
  int32_t a = m.Join(Cpu(1), 0.0);
  ASSERT_TRUE(m.Leave(a).ok());
  EXPECT_THAT(m.Alive(), IsEmpty());
  EXPECT_THAT(m.Expire(10.0), IsEmpty());  // a departed worker is not declared dead
  EXPECT_LT(m.NextDeadline(), 0.0);
  EXPECT_EQ(m.Find(a)->state, WorkerState::kLeft);
  int32_t b = m.Join(Cpu(1), 10.0);  // joins a running job
  EXPECT_THAT(m.Alive(), ElementsAre(b));
  EXPECT_THAT(m.Expire(10.5), IsEmpty());
  EXPECT_THAT(m.Expire(11.0), ElementsAre(b));
}

}  // namespace
}  // namespace canopy
