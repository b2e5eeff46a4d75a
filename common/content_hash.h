// A fingerprint of a file's or a folder's bytes, for records that must say exactly which
// model made them (labels.jsonl): two files with the same name but other weights differ.
//
//   file:   XXH3-128 of its bytes
//   folder: XXH3-128 over its regular files in sorted order of their paths relative to it,
//           each as path ‖ NUL ‖ size (u64 little-endian) ‖ bytes; a link to a file counts as
//           the file (Hugging Face's cache links snapshots to blobs), links to folders
//           are not followed
//
// written "xxh3-128:" followed by 32 lowercase hex digits. Not a cryptographic hash: it
// tells versions apart, it does not defend against a forger.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace canopy {

// NotFound when `path` does not exist; IoError when a file cannot be read.
StatusOr<std::string> ContentHash(const std::string& path);

// XXH3-64 of `bytes`: a stable name for a string (the same on every machine and run).
uint64_t StringHash(std::string_view bytes);

}  // namespace canopy
