#include "transport/frame.h"

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace canopy {
namespace {

// The largest segment count a FrameLimits may allow: the header buffer is sized from it.
constexpr uint32_t kMaxSegmentsCeiling = 1024;

uint32_t LoadLe32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

size_t HeaderBytesFor(uint64_t segments) {
  return static_cast<size_t>((4 * (segments + 1) + 7) / 8 * 8);
}

}  // namespace

FrameReader::FrameReader(FrameLimits limits) : limits_(limits) {
  CANOPY_CHECK(limits_.max_segments >= 1 && limits_.max_segments <= kMaxSegmentsCeiling)
      << "max_segments " << limits_.max_segments;
  CANOPY_CHECK(limits_.max_frame_bytes >= 16) << "max_frame_bytes " << limits_.max_frame_bytes;
  header_.resize(HeaderBytesFor(limits_.max_segments));
}

Status FrameReader::Fail(std::string message) {
  status_ = DataLossError("frame: " + std::move(message));
  return status_;
}

size_t FrameReader::HeaderBytes() const {
  return HeaderBytesFor(uint64_t{LoadLe32(header_.data())} + 1);
}

Status FrameReader::ParseHeader() {
  const uint64_t segments = uint64_t{LoadLe32(header_.data())} + 1;
  const size_t header_bytes = HeaderBytesFor(segments);
  uint64_t total_words = 0;
  body_.segment_words.assign(segments, 0);
  for (uint64_t i = 0; i < segments; ++i) {
    body_.segment_words[i] = LoadLe32(header_.data() + 4 * (i + 1));
    total_words += body_.segment_words[i];
  }
  const uint64_t total_bytes = header_bytes + total_words * 8;
  if (total_bytes > limits_.max_frame_bytes) {
    return Fail(std::to_string(total_bytes) + " bytes in " + std::to_string(segments) +
                " segments, over the limit of " + std::to_string(limits_.max_frame_bytes));
  }
  if (body_.segment_words[0] == 0) return Fail("empty first segment (no root pointer)");
  // Only now, with the size known to be within limits, allocate the body.
  body_.words.assign(total_words, 0);
  body_filled_ = 0;
  phase_ = Phase::kBody;
  return Status::Ok();
}

Status FrameReader::Feed(std::span<const uint8_t> bytes) {
  if (!status_.ok()) return status_;
  size_t pos = 0;
  while (pos < bytes.size()) {
    if (phase_ == Phase::kHeader) {
      // First the 4-byte count (checked at once), then the rest of the header.
      size_t want = header_filled_ < 4 ? 4 : HeaderBytes();
      size_t n = std::min(want - header_filled_, bytes.size() - pos);
      std::memcpy(header_.data() + header_filled_, bytes.data() + pos, n);
      header_filled_ += n;
      pos += n;
      if (header_filled_ == 4) {
        const uint64_t segments = uint64_t{LoadLe32(header_.data())} + 1;
        if (segments > limits_.max_segments) {
          return Fail(std::to_string(segments) + " segments, over the limit of " +
                      std::to_string(limits_.max_segments));
        }
      }
      if (header_filled_ >= 4 && header_filled_ == HeaderBytes()) {
        CANOPY_RETURN_IF_ERROR(ParseHeader());
        header_filled_ = 0;
      }
    }
    if (phase_ == Phase::kBody) {
      const size_t body_bytes = body_.words.size() * 8;
      size_t n = std::min(body_bytes - body_filled_, bytes.size() - pos);
      std::memcpy(reinterpret_cast<uint8_t*>(body_.words.data()) + body_filled_, bytes.data() + pos,
                  n);
      body_filled_ += n;
      pos += n;
      if (body_filled_ == body_bytes) {
        ready_.push_back(std::move(body_));
        body_ = Frame{};
        phase_ = Phase::kHeader;
      }
    }
  }
  return Status::Ok();
}

std::optional<Frame> FrameReader::Next() {
  if (ready_.empty()) return std::nullopt;
  Frame frame = std::move(ready_.front());
  ready_.pop_front();
  return frame;
}

std::vector<uint8_t> FrameBytes(capnp::MessageBuilder& message) {
  kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
  kj::ArrayPtr<const kj::byte> bytes = words.asBytes();
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

}  // namespace canopy
