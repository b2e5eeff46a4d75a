// "HOST:PORT" addresses as users and peers write them: --connect, --listen, --http, the
// coordinator's address file, a worker's page-channel endpoint (Capabilities::kv_endpoint).
//
//   "10.0.0.1:7000"  -> ("10.0.0.1", 7000)
//   "node-3:7000"    -> ("node-3", 7000)
//   "[::1]:7000"     -> ("::1", 7000)      an IPv6 address in brackets
//   "::1:7000"       -> ("::1", 7000)      the last colon splits, as the address file and
//                                          kv_endpoint have always been written
//
// The port is decimal digits only, 0 to 65535 (a listener's 0 means "any free port"; a
// caller that needs a real one checks). Nothing is resolved here.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "common/status.h"

namespace canopy {

// (host, port) -> "host:port", an IPv6 host in brackets ("[::1]:7000") so that it parses back.
std::string FormatHostPort(std::string_view host, uint16_t port);

// "host:port" -> (host, port). InvalidArgument naming `what` (the flag or file the text
// came from) and the text itself when it is not that.
StatusOr<std::pair<std::string, uint16_t>> ParseHostPort(std::string_view text, std::string_view what);

// The first line of the file at `path` (surrounding blanks ignored), parsed as above: the
// coordinator's address file. NotFound when the file cannot be read (not written yet).
StatusOr<std::pair<std::string, uint16_t>> ReadHostPortFile(const std::string& path);

}  // namespace canopy
