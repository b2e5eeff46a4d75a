// One envelope of every kind with every field set to something other than its default, in
// ordinal order: what the codec and connection tests send and compare.
#pragma once

#include <string>
#include <vector>

#include "transport/protocol.h"

namespace canopy::testing_transport {

inline std::vector<Envelope> SampleEnvelopes() {
  Capabilities caps{
      Backend::kCuda, "NVIDIA H100", 80ull << 30, 4096, 16, {"qwen2.5-0.5b", "prm-7b"}, 1,
      "node-3", 18432, "10.0.0.3:7001"};
  ChildReply child{"Step 1: 2 + 2 = 4.\n\n", 11, FinishReason::kEndOfTurn, -3.25, {0.5, 0.875},
                   {12, 0, 49151, 7},    {"Step 1: 2 + 2 = 4."}, 2, true};
  ChildReply child2{"unicode: \u00e9\u4e2d, nul-free", 7, FinishReason::kLength, -1e-9, {}, {}, {}};
  ScoreItem item{"What is 2 + 2?", {"First,", "then 4."}, {-0.5f, -0.25f}, true};
  KvPages pages{NodeKey{17, 3}, {0x1234567890abcdefULL, 42, ~0ULL}, 16, 1ull << 20};
  std::vector<Envelope> out = {
      Challenge{kProtocolVersion, std::string(32, '\x01')},
      Hello{kProtocolVersion, PeerRole::kWorker, "worker-7", std::string(32, '\xfe'),
            std::string(32, '\0'), caps},
      Welcome{kProtocolVersion, std::string("\x00\x01\x02proof", 8)},
      Refused{"authentication failed"},
      RootSpec{NodeKey{5, 0}, "What is 2 + 2?", "You are a careful solver.", "Solve: 2 + 2",
               "prm-head", {1, 2, 3, 49151}, {"Step one.", "Step two."}},
      ExpandCall{9, NodeKey{5, 0}, 4, 128, true, 0xdeadbeefcafeULL, 0.7f, 0.95f, 40, 12, 64, 96, "\nWait",
                 "\nFinal answer: \\boxed{"},
      ExpandReply{9, "", {child, child2}, 3},
      ScoreCall{10, {item, ScoreItem{}}},
      ScoreReply{10, "scorer crashed", {0.25, 1.0}},
      Release{{NodeKey{9, 0}, NodeKey{9, 1}, NodeKey{5, 0}}},
      KvOffer{pages, KvChannel::kTcp, "10.0.0.3:7001"},
      KvFetch{77, pages, KvChannel::kNccl, "2"},
      KvFetchDone{77, NodeKey{17, 3}, 2, 2ull << 20, "short read"},
      Heartbeat{123456789, -42},
      Cancel{{1, 2, 3, ~0ULL}},
      Drain{5000},
      Shutdown{"job finished"},
      StatsRequest{},
      Stats{3, 100, 12345, 678, 4096, 10, 20, 4066, 500, 250, 7, 31, 812.5, true},
      KvRequest{78, NodeKey{17, 3}, 12},
      KvData{78, "", 16, 64, 2, {1, 2, 3}, {0xabcdefULL, 7}, std::string("\x00\xffkv\x01", 5), true},
  };
  return out;
}

}  // namespace canopy::testing_transport
