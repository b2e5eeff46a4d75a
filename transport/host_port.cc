#include "transport/host_port.h"

#include <fstream>

namespace canopy {
namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string Quoted(std::string_view text) { return "'" + std::string(text) + "'"; }

// The host part: not empty, no blanks; brackets only around the whole of it (and removed).
StatusOr<std::string> ParseHost(std::string_view host, std::string_view text, const std::string& what) {
  if (host.empty()) return InvalidArgumentError(what + ": " + Quoted(text) + " has no host before the ':'");
  for (char c : host) {
    if (IsSpace(c)) return InvalidArgumentError(what + ": host " + Quoted(host) + " contains a blank");
  }
  const bool opens = host.front() == '[', closes = host.back() == ']';
  if (opens || closes) {
    if (!opens || !closes || host.size() < 3) {
      return InvalidArgumentError(what + ": host " + Quoted(host) + " has unbalanced or empty brackets");
    }
    host = host.substr(1, host.size() - 2);
  }
  if (host.find_first_of("[]") != std::string_view::npos) {
    return InvalidArgumentError(what + ": host " + Quoted(host) + " has a bracket inside it");
  }
  return std::string(host);
}

// The port part: 1 to 5 decimal digits, at most 65535.
StatusOr<uint16_t> ParsePort(std::string_view port, std::string_view text, const std::string& what) {
  if (port.empty()) return InvalidArgumentError(what + ": " + Quoted(text) + " has no port after the ':'");
  for (char c : port) {
    if (!IsDigit(c)) return InvalidArgumentError(what + ": port " + Quoted(port) + " is not a decimal number");
  }
  if (port.size() > 5) return InvalidArgumentError(what + ": port " + std::string(port) + " is out of range (0-65535)");
  uint32_t value = 0;
  for (char c : port) value = value * 10 + static_cast<uint32_t>(c - '0');
  if (value > 65535) return InvalidArgumentError(what + ": port " + std::string(port) + " is out of range (0-65535)");
  return static_cast<uint16_t>(value);
}

}  // namespace

StatusOr<std::pair<std::string, uint16_t>> ParseHostPort(std::string_view text, std::string_view what_view) {
  const std::string what(what_view);
  const size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) {
    return InvalidArgumentError(what + ": " + Quoted(text) + " is not HOST:PORT");
  }
  CANOPY_ASSIGN_OR_RETURN(std::string host, ParseHost(text.substr(0, colon), text, what));
  CANOPY_ASSIGN_OR_RETURN(uint16_t port, ParsePort(text.substr(colon + 1), text, what));
  return std::make_pair(std::move(host), port);
}

StatusOr<std::pair<std::string, uint16_t>> ReadHostPortFile(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return NotFoundError("address file " + path + ": cannot read it");
  const size_t first = line.find_first_not_of(" \t\r\n\f\v");
  if (first == std::string::npos) return InvalidArgumentError("address file " + path + ": its first line is empty");
  const size_t last = line.find_last_not_of(" \t\r\n\f\v");
  return ParseHostPort(std::string_view(line).substr(first, last - first + 1), "address file " + path);
}

std::string FormatHostPort(std::string_view host, uint16_t port) {
  const bool v6 = host.find(':') != std::string_view::npos;
  return (v6 ? "[" + std::string(host) + "]" : std::string(host)) + ":" + std::to_string(port);
}

}  // namespace canopy
