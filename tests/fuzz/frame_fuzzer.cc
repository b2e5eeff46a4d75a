// libFuzzer target: the transport's frame reader and codec on an arbitrary byte stream, as a
// peer could send it. See tests/fuzz/README.md.
//
// The first input byte picks how the stream is cut into reads (1 to 256 bytes each); the
// rest is the stream. Traps if anything fails with a code other than DataLoss or an empty
// message, or if a decoded envelope does not survive encode -> decode -> encode unchanged.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "transport/codec.h"
#include "transport/frame.h"

namespace {

void CheckError(const canopy::Status& s) {
  if (s.code() != canopy::StatusCode::kDataLoss || s.message().empty()) __builtin_trap();
}

void CheckStable(const canopy::Envelope& envelope, const canopy::FrameLimits& limits) {
  const std::vector<uint8_t> once = canopy::EncodeFrame(envelope);
  canopy::FrameReader reader(limits);
  if (!reader.Feed(once).ok()) __builtin_trap();
  std::optional<canopy::Frame> frame = reader.Next();
  if (!frame || reader.mid_frame()) __builtin_trap();
  canopy::StatusOr<canopy::Envelope> again = canopy::DecodeFrame(*frame, limits);
  if (!again.ok()) __builtin_trap();
  if (canopy::EncodeFrame(*again) != once) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t chunk = size_t{data[0]} + 1;
  std::span<const uint8_t> stream(data + 1, size - 1);
  canopy::FrameLimits limits;
  limits.max_frame_bytes = 1 << 20;  // keep the fuzzer's memory small
  canopy::FrameReader reader(limits);
  for (size_t pos = 0; pos < stream.size(); pos += chunk) {
    canopy::Status fed = reader.Feed(stream.subspan(pos, std::min(chunk, stream.size() - pos)));
    while (std::optional<canopy::Frame> frame = reader.Next()) {
      canopy::StatusOr<canopy::Envelope> envelope = canopy::DecodeFrame(*frame, limits);
      if (envelope.ok()) {
        (void)canopy::EnvelopeKindName(*envelope);
        // A re-encoding fits the limits it came in under (up to 2x for a list of empty
        // structs, which costs nothing on the wire it came from but words on the way back).
        if (canopy::EncodeFrame(*envelope).size() <= limits.max_frame_bytes) {
          CheckStable(*envelope, limits);
        }
      } else {
        CheckError(envelope.status());
      }
    }
    if (!fed.ok()) {
      CheckError(fed);
      break;
    }
  }
  return 0;
}
