// ctest-labels: unit
#include "cluster/slurm_env.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>

namespace canopy {
namespace {

using ::testing::ElementsAre;

std::vector<std::string> Hosts(const std::string& list) {
  auto h = ExpandHostlist(list);
  EXPECT_TRUE(h.ok()) << list << ": " << h.status().ToString();
  return h.ok() ? *h : std::vector<std::string>{};
}

TEST(Hostlist, ExpandsLikeScontrol) {
  EXPECT_THAT(Hosts("node1"), ElementsAre("node1"));
  EXPECT_THAT(Hosts("node[1-3]"), ElementsAre("node1", "node2", "node3"));
  EXPECT_THAT(Hosts("node[08-11]"), ElementsAre("node08", "node09", "node10", "node11"));
  EXPECT_THAT(Hosts("a[1,3-4],b2"), ElementsAre("a1", "a3", "a4", "b2"));
  EXPECT_THAT(Hosts("gpu[1-2]-ib"), ElementsAre("gpu1-ib", "gpu2-ib"));
  EXPECT_THAT(Hosts("rack[1-2]-n[1-2]"), ElementsAre("rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"));
  EXPECT_THAT(Hosts("x-1,y[7]"), ElementsAre("x-1", "y7"));
  EXPECT_THAT(Hosts(""), ElementsAre());
  EXPECT_EQ(Hosts("n[0000-1023]").size(), 1024u);
  EXPECT_EQ(Hosts("n[0000-1023]")[5], "n0005");
}

TEST(Hostlist, RejectsMalformedLists) {
  for (const char* bad : {"node[1-3", "node1-3]", "node[]", "node[3-1]", "node[a-b]", "node[1,,2]", "n[[1]]"}) {
    auto h = ExpandHostlist(bad);
    EXPECT_FALSE(h.ok()) << bad;
    if (!h.ok()) {
      EXPECT_THAT(h.status().message(), ::testing::HasSubstr("hostlist: position")) << bad;
    }
  }
  EXPECT_FALSE(ExpandHostlist("n[1-100]x[1-100]", 5000).ok());  // 10,000 > the cap
}

TEST(SlurmEnv, ReadsTheVariables) {
  std::map<std::string, std::string> vars = {
      {"SLURM_JOB_ID", "4242"},          {"SLURM_PROCID", "3"},
      {"SLURM_LOCALID", "1"},            {"SLURM_NODEID", "1"},
      {"SLURM_NTASKS", "4"},             {"SLURM_JOB_NODELIST", "gpu[07-08]"},
      {"SLURM_STEP_GPUS", "0,1"},        {"SLURM_RESTART_COUNT", "2"}};
  auto get = [&](const char* n) -> const char* {
    auto it = vars.find(n);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
  auto env = ReadSlurmEnv(get);
  ASSERT_TRUE(env.ok()) << env.status().ToString();
  ASSERT_TRUE(env->has_value());
  const SlurmEnv& e = **env;
  EXPECT_EQ(e.job_id, "4242");
  EXPECT_EQ(e.proc_id, 3);
  EXPECT_EQ(e.local_id, 1);
  EXPECT_EQ(e.num_tasks, 4);
  EXPECT_THAT(e.nodes, ElementsAre("gpu07", "gpu08"));
  EXPECT_EQ(e.head_node(), "gpu07");
  EXPECT_EQ(e.step_gpus, "0,1");
  EXPECT_EQ(e.restart_count, "2");

  vars["SLURM_PROCID"] = "x1";
  auto bad = ReadSlurmEnv(get);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), ::testing::HasSubstr("SLURM_PROCID='x1'"));
  vars["SLURM_PROCID"] = "4";
  EXPECT_FALSE(ReadSlurmEnv(get).ok());  // not below SLURM_NTASKS
  vars["SLURM_PROCID"] = "0";
  vars["SLURM_JOB_NODELIST"] = "gpu[07-";
  bad = ReadSlurmEnv(get);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), ::testing::HasSubstr("SLURM_JOB_NODELIST"));
}

TEST(SlurmEnv, OutsideSlurmIsNotAnError) {
  auto env = ReadSlurmEnv([](const char*) -> const char* { return nullptr; });
  ASSERT_TRUE(env.ok());
  EXPECT_FALSE(env->has_value());
}

}  // namespace
}  // namespace canopy
