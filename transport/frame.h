// Framing: the standard Cap'n Proto stream format, read incrementally from untrusted bytes.
//
// NOTE: one frame (all integers little-endian u32)
//
//   +-----------+--------+--------+-----+----------+-----------+-----------+-----
//   | count - 1 | size 0 | size 1 | ... | (pad to  | segment 0 | segment 1 | ...
//   |           | (words)|        |     |  8 bytes)| size0 * 8 | size1 * 8 |
//   +-----------+--------+--------+-----+----------+-----------+-----------+-----
//   \------------- header: 4 * (count + 1) bytes, rounded up to 8 ----------/
//
// FrameReader checks the segment count as soon as the first 4 bytes arrive and the total
// size as soon as the segment table is complete, both before it allocates anything for the
// body; a frame over the limits is a DataLoss error and the reader stays failed (the
// connection is dropped: a stream that lied about a size cannot be resynchronised).
//
// Thread-safety: none; a FrameReader belongs to one connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <vector>

#include "common/status.h"

namespace capnp {
class MessageBuilder;
}

namespace canopy {

struct FrameLimits {
  uint32_t max_segments = 64;
  uint64_t max_frame_bytes = 64ull << 20;  // header + segments
  // Reader limits for parsing a frame (capnp::ReaderOptions). The traversal limit is
  // min(traversal_factor * the frame's words, max_frame_bytes / 8 * traversal_factor): a
  // frame can make the decoder visit at most `traversal_factor` times what was received,
  // which also bounds what lists of zero-sized elements can claim.
  uint32_t traversal_factor = 2;
  int32_t nesting_limit = 16;  // the schema needs 5 (Envelope > ScoreCall > items > steps)
};

// A complete frame: the segments back to back, 8-byte aligned.
struct Frame {
  std::vector<uint32_t> segment_words;  // size of each segment in words
  std::vector<uint64_t> words;          // sum(segment_words) words
};

class FrameReader {
 public:
  explicit FrameReader(FrameLimits limits = {});

  // Consumes all of `bytes`; complete frames are queued for Next(). On malformed input
  // returns DataLoss, and from then on consumes nothing and returns the same error.
  Status Feed(std::span<const uint8_t> bytes);

  // The oldest complete frame, if any.
  std::optional<Frame> Next();

  // Bytes of an unfinished frame are buffered: the stream ending now truncates a frame.
  bool mid_frame() const { return phase_ != Phase::kHeader || header_filled_ > 0; }
  const Status& status() const { return status_; }
  const FrameLimits& limits() const { return limits_; }

 private:
  enum class Phase { kHeader, kBody };
  Status Fail(std::string message);
  Status ParseHeader();        // the header is complete in header_: validate and allocate the body
  size_t HeaderBytes() const;  // known once the first 4 bytes are in

  FrameLimits limits_;
  Status status_;
  Phase phase_ = Phase::kHeader;
  std::vector<uint8_t> header_;  // up to 4 * (max_segments + 1) + 4 bytes
  size_t header_filled_ = 0;
  Frame body_;              // the frame being filled
  size_t body_filled_ = 0;  // bytes
  std::deque<Frame> ready_;
};

// The bytes of one frame holding `message` (capnp::messageToFlatArray).
std::vector<uint8_t> FrameBytes(capnp::MessageBuilder& message);

}  // namespace canopy
