#include "fileio.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "tiling.hpp"

namespace fs = std::filesystem;

namespace adaptsr {

void check_writable(const fs::path& path, bool force) {
    std::error_code ec;
    if (fs::exists(path, ec) && !force)
        throw UserError(path.string() + " already exists (use --force to overwrite)");
    if (fs::is_directory(path, ec)) throw UserError(path.string() + " is a directory, expected a file path");
    fs::path parent = path.has_parent_path() ? path.parent_path() : fs::path(".");
    if (fs::exists(parent, ec) && !fs::is_directory(parent, ec))
        throw UserError("cannot write " + path.string() + ": " + parent.string() + " is not a directory");
    if (fs::exists(parent, ec) && access(parent.c_str(), W_OK) != 0)
        throw UserError("cannot write " + path.string() + ": " + parent.string() + " is not writable");
}

void write_atomically(const fs::path& path, bool force, const std::function<void(const fs::path&)>& write) {
    check_writable(path, force);
    fs::path parent = path.has_parent_path() ? path.parent_path() : fs::path(".");
    std::error_code ec;
    fs::create_directories(parent, ec);
    if (ec) throw UserError("cannot write " + path.string() + ": " + ec.message());
    // ".<stem>.XXXXXX<suffix>": the final suffix kept, as the Python side does
    std::string pattern = (parent / ("." + path.stem().string() + ".XXXXXX" + path.extension().string())).string();
    std::vector<char> name(pattern.begin(), pattern.end());
    name.push_back('\0');
    int fd = mkstemps(name.data(), static_cast<int>(path.extension().string().size()));
    if (fd < 0) throw UserError("cannot write " + path.string() + ": " + std::strerror(errno));
    close(fd);
    const fs::path tmp(name.data());
    mode_t mask = umask(0);
    umask(mask);
    chmod(tmp.c_str(), 0666 & ~mask);  // mkstemps makes 0600 files; outputs follow the umask
    try {
        write(tmp);
        if (std::rename(tmp.c_str(), path.c_str()) != 0)
            throw UserError("cannot write " + path.string() + ": " + std::strerror(errno));
    } catch (...) {
        fs::remove(tmp, ec);
        throw;
    }
}

}  // namespace adaptsr
