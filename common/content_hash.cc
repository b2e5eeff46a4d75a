#include "common/content_hash.h"

#include <xxhash.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <vector>

#include "common/mapped_file.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;

struct StateDeleter {
  void operator()(XXH3_state_t* s) const { XXH3_freeState(s); }
};

Status AddFile(XXH3_state_t* state, const fs::path& path) {
  CANOPY_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path.string()));
  if (file->size() > 0) XXH3_128bits_update(state, file->data(), file->size());
  return Status::Ok();
}

}  // namespace

StatusOr<std::string> ContentHash(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) return NotFoundError(path + ": no such file or folder");
  std::unique_ptr<XXH3_state_t, StateDeleter> state(XXH3_createState());
  if (!state || XXH3_128bits_reset(state.get()) != XXH_OK)
    return InternalError("XXH3: cannot make a state");
  if (fs::is_directory(st)) {
    std::vector<std::string> files;  // relative paths of the regular files
    for (auto it = fs::recursive_directory_iterator(path, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (it->is_regular_file()) {  // a link to a file counts as that file
        files.push_back(it->path().lexically_relative(path).generic_string());
      }
    }
    if (ec) return IoError(path + ": listing: " + ec.message());
    std::sort(files.begin(), files.end());
    for (const std::string& rel : files) {
      const fs::path full = fs::path(path) / rel;
      const uint64_t size = fs::file_size(full, ec);
      if (ec) return IoError(full.string() + ": " + ec.message());
      XXH3_128bits_update(state.get(), rel.data(), rel.size() + 1);  // with its NUL
      unsigned char le[8];
      for (int i = 0; i < 8; ++i) le[i] = static_cast<unsigned char>(size >> (8 * i));
      XXH3_128bits_update(state.get(), le, sizeof(le));
      CANOPY_RETURN_IF_ERROR(AddFile(state.get(), full));
    }
  } else {
    CANOPY_RETURN_IF_ERROR(AddFile(state.get(), path));
  }
  const XXH128_hash_t h = XXH3_128bits_digest(state.get());
  char hex[33];
  std::snprintf(hex, sizeof(hex), "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  return std::string("xxh3-128:") + hex;
}

uint64_t StringHash(std::string_view bytes) { return XXH3_64bits(bytes.data(), bytes.size()); }

}  // namespace canopy
