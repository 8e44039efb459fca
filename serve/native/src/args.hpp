// The `adaptsr-trt` command line: options, inputs and output names (no TensorRT needed).
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "tiling.hpp"

namespace adaptsr {

// A malformed command line: printed as `error: ...`, exit status 2.
struct UsageError : UserError {
    using UserError::UserError;
};

struct Options {
    std::filesystem::path engine;
    std::filesystem::path out_dir;
    std::vector<std::string> inputs;
    std::optional<int> tile;     // absent: automatic; 0: whole image
    std::optional<int> overlap;  // absent: tile / 32
    int batch = 1;
    int runs = 1;    // timed upscales of each image (the output is written once)
    int warmup = 0;  // untimed upscales of each image before the timed ones
    bool force = false;
    bool help = false;
    bool version = false;
};

extern const char* const kUsage;

// Throws UsageError; `--help` and `--version` return at once with the flag set.
Options parse_args(const std::vector<std::string>& args);

// PNG files named directly or found directly inside named folders (sorted by name), in order.
// Non-PNG files inside folders are counted in `skipped`. Throws UserError.
std::vector<std::filesystem::path> collect_inputs(const std::vector<std::string>& inputs, int* skipped);

// out_dir / <input name>; refuses collisions, an input as output and a file as out_dir.
std::vector<std::filesystem::path> output_paths(const std::vector<std::filesystem::path>& files,
                                                const std::filesystem::path& out_dir);

}  // namespace adaptsr
