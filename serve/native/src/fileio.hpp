// Outputs are written atomically, and an existing file is replaced only with force, as in
// core/fileio.py.
#pragma once

#include <filesystem>
#include <functional>

namespace adaptsr {

// Fails early, before any work, if `path` exists (without force) or cannot be a file.
void check_writable(const std::filesystem::path& path, bool force);

// Calls `write` with a temporary path beside `path` and renames it onto `path` only if `write`
// returns normally; the temporary file is removed otherwise. Throws UserError.
void write_atomically(const std::filesystem::path& path, bool force,
                      const std::function<void(const std::filesystem::path&)>& write);

}  // namespace adaptsr
