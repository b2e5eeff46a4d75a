// ctest-labels: unit
// The schema's codec and the stream framing: every message kind survives a round trip
// through bytes, and malformed frames are DataLoss errors found before anything large is
// allocated.
#include "transport/codec.h"

#include <capnp/message.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "tests/transport/sample_envelopes.h"
#include "transport/frame.h"

namespace canopy {
namespace {

using testing_transport::SampleEnvelopes;

std::vector<uint8_t> Le32(std::initializer_list<uint32_t> values) {
  std::vector<uint8_t> out;
  for (uint32_t v : values) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  return out;
}

std::vector<uint8_t> Words(std::initializer_list<uint64_t> words) {
  std::vector<uint8_t> out;
  for (uint64_t w : words) {
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(w >> (8 * i)));
  }
  return out;
}

std::vector<Envelope> DecodeAll(const std::vector<uint8_t>& bytes, size_t chunk,
                                const FrameLimits& limits = {}) {
  FrameReader reader(limits);
  std::vector<Envelope> out;
  for (size_t pos = 0; pos < bytes.size(); pos += chunk) {
    size_t n = std::min(chunk, bytes.size() - pos);
    EXPECT_TRUE(reader.Feed(std::span<const uint8_t>(bytes.data() + pos, n)).ok());
    while (auto frame = reader.Next()) {
      StatusOr<Envelope> envelope = DecodeFrame(*frame, limits);
      EXPECT_TRUE(envelope.ok()) << envelope.status().ToString();
      if (envelope.ok()) out.push_back(*envelope);
    }
  }
  EXPECT_FALSE(reader.mid_frame());
  return out;
}

TEST(CodecTest, EveryKindRoundTrips) {
  const std::vector<Envelope> samples = SampleEnvelopes();
  ASSERT_EQ(samples.size(), std::variant_size_v<Envelope>);
  for (size_t i = 0; i < samples.size(); ++i) {
    ASSERT_EQ(samples[i].index(), i) << "samples are in ordinal order";
    std::vector<uint8_t> bytes = EncodeFrame(samples[i]);
    ASSERT_EQ(bytes.size() % 8, 0u);
    std::vector<Envelope> back = DecodeAll(bytes, bytes.size());
    ASSERT_EQ(back.size(), 1u) << EnvelopeKindName(samples[i]);
    EXPECT_TRUE(back[0] == samples[i]) << EnvelopeKindName(samples[i]);
  }
}

TEST(CodecTest, DefaultsRoundTrip) {
  for (Envelope e : {Envelope(ExpandReply{}), Envelope(Hello{}), Envelope(ScoreCall{}),
                     Envelope(KvFetch{}), Envelope(Release{})}) {
    std::vector<Envelope> back = DecodeAll(EncodeFrame(e), 4096);
    ASSERT_EQ(back.size(), 1u);
    EXPECT_TRUE(back[0] == e) << EnvelopeKindName(e);
  }
}

TEST(CodecTest, ManyFramesInAnyChunking) {
  std::vector<uint8_t> stream;
  const std::vector<Envelope> samples = SampleEnvelopes();
  for (const Envelope& e : samples) {
    std::vector<uint8_t> b = EncodeFrame(e);
    stream.insert(stream.end(), b.begin(), b.end());
  }
  for (size_t chunk : {1, 3, 7, 8, 13, 64, 1000, 1 << 20}) {
    std::vector<Envelope> back = DecodeAll(stream, chunk);
    ASSERT_EQ(back.size(), samples.size()) << "chunk " << chunk;
    for (size_t i = 0; i < samples.size(); ++i) EXPECT_TRUE(back[i] == samples[i]) << i;
  }
}

TEST(CodecTest, MultiSegmentMessage) {
  // A tiny first segment forces the builder to spill into more segments.
  capnp::MallocMessageBuilder message(1, capnp::AllocationStrategy::FIXED_SIZE);
  Envelope sample = SampleEnvelopes()[6];  // expandReply
  ToWire(sample, message.initRoot<wire::Envelope>());
  ASSERT_GT(message.getSegmentsForOutput().size(), 2u);
  std::vector<Envelope> back = DecodeAll(FrameBytes(message), 5);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_TRUE(back[0] == sample);
}

TEST(FrameReaderTest, SegmentCountCheckedOnFirstFourBytes) {
  FrameReader reader;
  Status s = reader.Feed(Le32({0xffffffffu}));
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.ToString();
  EXPECT_NE(s.message().find("segments"), std::string::npos);
  // Stays failed.
  EXPECT_EQ(reader.Feed(EncodeFrame(Drain{})).code(), StatusCode::kDataLoss);
  EXPECT_FALSE(reader.Next().has_value());
}

TEST(FrameReaderTest, SegmentLimitIsExact) {
  FrameLimits limits;
  limits.max_segments = 4;
  FrameReader ok_reader(limits);
  std::vector<uint8_t> header = Le32({3, 1, 0, 0, 0});  // 4 segments, 20 bytes, pad to 24
  header.resize(24, 0);
  EXPECT_TRUE(ok_reader.Feed(header).ok());
  EXPECT_TRUE(ok_reader.mid_frame());
  FrameReader bad_reader(limits);
  EXPECT_EQ(bad_reader.Feed(Le32({4})).code(), StatusCode::kDataLoss);
}

TEST(FrameReaderTest, OversizedRejectedFromTheHeaderAlone) {
  FrameReader reader;                              // 64 MiB default
  Status s = reader.Feed(Le32({0, 0x10000000u}));  // one segment of 2 GiB
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("over the limit"), std::string::npos) << s.message();

  FrameLimits small;
  small.max_frame_bytes = 1024;
  std::vector<uint8_t> big = EncodeFrame(Shutdown{std::string(2000, 'x')});
  FrameReader limited(small);
  EXPECT_EQ(limited.Feed(std::span<const uint8_t>(big.data(), 8)).code(), StatusCode::kDataLoss);
  // The same frame passes with the default limits.
  EXPECT_EQ(DecodeAll(big, 100).size(), 1u);
}

TEST(FrameReaderTest, SizesSummedOverAllSegments) {
  FrameLimits limits;
  limits.max_frame_bytes = 4096;
  FrameReader reader(limits);
  // Two segments of 300 words each: each alone fits, together they do not.
  EXPECT_EQ(reader.Feed(Le32({1, 300, 300, 0})).code(), StatusCode::kDataLoss);
}

TEST(FrameReaderTest, EmptyFirstSegmentRejected) {
  FrameReader reader;
  EXPECT_EQ(reader.Feed(Le32({0, 0})).code(), StatusCode::kDataLoss);
}

TEST(FrameReaderTest, TruncatedFrameIsMidFrame) {
  std::vector<uint8_t> bytes = EncodeFrame(SampleEnvelopes()[4]);
  FrameReader reader;
  EXPECT_FALSE(reader.mid_frame());
  ASSERT_TRUE(reader.Feed(std::span<const uint8_t>(bytes.data(), 3)).ok());
  EXPECT_TRUE(reader.mid_frame());
  ASSERT_TRUE(reader.Feed(std::span<const uint8_t>(bytes.data() + 3, bytes.size() - 4)).ok());
  EXPECT_TRUE(reader.mid_frame());
  EXPECT_FALSE(reader.Next().has_value());
  ASSERT_TRUE(reader.Feed(std::span<const uint8_t>(bytes.data() + bytes.size() - 1, 1)).ok());
  EXPECT_FALSE(reader.mid_frame());
  EXPECT_TRUE(reader.Next().has_value());
}

// Hand-made frame: Envelope{release: Release{nodes: <n zero-sized NodeKeys>}}. Zero-sized
// list elements take no bytes, so a 5-word frame can claim millions of them.
std::vector<uint8_t> AmplifiedRelease(uint32_t n) {
  std::vector<uint8_t> bytes = Le32({0, 5});
  std::vector<uint8_t> words = Words({
      uint64_t{1} << 32 | uint64_t{1} << 48,  // root: struct, 1 data word, 1 pointer
      wire::Envelope::RELEASE,                // union discriminant
      uint64_t{1} << 48,                      // -> Release: struct, 0 data, 1 pointer
      1 | uint64_t{7} << 32,                  // -> nodes: inline composite list, 0 words
      uint64_t{n} << 2,                       // tag: n elements of 0 data, 0 pointers
  });
  bytes.insert(bytes.end(), words.begin(), words.end());
  return bytes;
}

TEST(CodecTest, HandMadeFrameDecodes) {
  std::vector<Envelope> back = DecodeAll(AmplifiedRelease(3), 64);
  ASSERT_EQ(back.size(), 1u);
  ASSERT_TRUE(std::holds_alternative<Release>(back[0]));
  EXPECT_EQ(std::get<Release>(back[0]).nodes, std::vector<NodeKey>(3));
}

TEST(CodecTest, AmplifiedListHitsTheTraversalLimit) {
  FrameReader reader;
  ASSERT_TRUE(reader.Feed(AmplifiedRelease(1'000'000)).ok());
  auto frame = reader.Next();
  ASSERT_TRUE(frame.has_value());
  StatusOr<Envelope> e = DecodeFrame(*frame, FrameLimits{});
  EXPECT_EQ(e.status().code(), StatusCode::kDataLoss) << e.status().ToString();
  EXPECT_NE(e.status().message().find("traversal limit"), std::string::npos)
      << e.status().message();
}

TEST(CodecTest, UnknownUnionMemberIsDataLoss) {
  std::vector<uint8_t> bytes = AmplifiedRelease(1);
  bytes[16] = 99;  // the discriminant (first data word of the root)
  FrameReader reader;
  ASSERT_TRUE(reader.Feed(bytes).ok());
  StatusOr<Envelope> e = DecodeFrame(*reader.Next(), FrameLimits{});
  EXPECT_EQ(e.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(e.status().message().find("unknown envelope member"), std::string::npos);
}

TEST(CodecTest, UnknownEnumValueIsDataLoss) {
  capnp::MallocMessageBuilder message;
  auto reply = message.initRoot<wire::Envelope>().initExpandReply();
  reply.initChildren(1)[0].setFinish(static_cast<wire::ChildFinish>(7));
  std::vector<uint8_t> bytes = FrameBytes(message);
  FrameReader reader;
  ASSERT_TRUE(reader.Feed(bytes).ok());
  StatusOr<Envelope> e = DecodeFrame(*reader.Next(), FrameLimits{});
  EXPECT_EQ(e.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(e.status().message().find("child finish"), std::string::npos) << e.status().message();
}

TEST(CodecTest, NestingLimitApplies) {
  FrameLimits limits;
  limits.nesting_limit = 2;
  std::vector<uint8_t> bytes = EncodeFrame(SampleEnvelopes()[7]);  // score: items > steps
  FrameReader reader(limits);
  ASSERT_TRUE(reader.Feed(bytes).ok());
  EXPECT_EQ(DecodeFrame(*reader.Next(), limits).status().code(), StatusCode::kDataLoss);
}

TEST(CodecTest, RandomSegmentsNeverCrash) {
  std::mt19937_64 rng(7);
  int ok = 0;
  for (int i = 0; i < 2000; ++i) {
    Frame frame;
    uint32_t words = 1 + rng() % 12;
    frame.segment_words = {words};
    for (uint32_t w = 0; w < words; ++w) frame.words.push_back(rng());
    if (i % 2 == 0) frame.words[0] &= 0x0000ffff00000000ULL | 0x3;  // plausible root pointer
    StatusOr<Envelope> e = DecodeFrame(frame, FrameLimits{});
    if (e.ok()) {
      ++ok;
    } else {
      EXPECT_EQ(e.status().code(), StatusCode::kDataLoss);
    }
  }
  SUCCEED() << ok << " of 2000 random frames decoded";
}

TEST(CodecTest, MutatedFramesNeverCrash) {
  std::mt19937_64 rng(11);
  const std::vector<Envelope> samples = SampleEnvelopes();
  for (int i = 0; i < 3000; ++i) {
    std::vector<uint8_t> bytes = EncodeFrame(samples[i % samples.size()]);
    for (int flips = 1 + rng() % 4; flips > 0; --flips)
      bytes[rng() % bytes.size()] ^= 1 << (rng() % 8);
    FrameReader reader;
    Status s = reader.Feed(bytes);
    if (!s.ok()) {
      EXPECT_EQ(s.code(), StatusCode::kDataLoss);
      continue;
    }
    while (auto frame = reader.Next()) {
      StatusOr<Envelope> e = DecodeFrame(*frame, FrameLimits{});
      if (!e.ok()) {
        EXPECT_EQ(e.status().code(), StatusCode::kDataLoss);
      }
    }
  }
}

TEST(CodecTest, KindNames) {
  EXPECT_STREQ(EnvelopeKindName(Envelope(Hello{})), "hello");
  EXPECT_STREQ(EnvelopeKindName(Envelope(KvFetchDone{})), "kvFetchDone");
  EXPECT_STREQ(EnvelopeKindName(Envelope(Stats{})), "stats");
}

}  // namespace
}  // namespace canopy
