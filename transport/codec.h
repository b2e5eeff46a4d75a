// Conversions between the wire (transport/canopy.capnp, namespace canopy::wire) and the
// plain structs (transport/messages.h, transport/protocol.h), and between an Envelope and
// the bytes of one frame.
//
// Failure behaviour: the FromWire functions read through capnp accessors, which throw
// kj::Exception on malformed pointers; they return DataLoss for values the schema allows
// but the protocol does not (an unknown union member or enum value). DecodeFrame is the
// entry point for untrusted bytes: it sets the reader limits and turns every exception into
// DataLoss, so nothing escapes it.
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "transport/canopy.capnp.h"
#include "transport/frame.h"
#include "transport/messages.h"
#include "transport/protocol.h"

namespace canopy {

void ToWire(const NodeKey& key, wire::NodeKey::Builder out);
void ToWire(const RootSpec& root, wire::RootSpec::Builder out);
void ToWire(const ExpandCall& call, wire::ExpandCall::Builder out);
void ToWire(const ChildReply& child, wire::ChildReply::Builder out);
void ToWire(const ExpandReply& reply, wire::ExpandReply::Builder out);
void ToWire(const Envelope& envelope, wire::Envelope::Builder out);

NodeKey FromWire(wire::NodeKey::Reader in);
RootSpec FromWire(wire::RootSpec::Reader in);
ExpandCall FromWire(wire::ExpandCall::Reader in);
StatusOr<ChildReply> FromWire(wire::ChildReply::Reader in);
StatusOr<ExpandReply> FromWire(wire::ExpandReply::Reader in);
StatusOr<Envelope> FromWire(wire::Envelope::Reader in);

// The bytes of one frame holding `envelope`.
std::vector<uint8_t> EncodeFrame(const Envelope& envelope);

// Parses a frame from FrameReader under `limits` (traversal and nesting limits). Never
// throws; anything malformed is DataLoss.
StatusOr<Envelope> DecodeFrame(const Frame& frame, const FrameLimits& limits);

}  // namespace canopy
