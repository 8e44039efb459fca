// The `adaptsr-trt` command: inputs, outputs, per-file errors and latency report. The model is
// opened by a callback, so the command is tested with a CPU model where there is no GPU.
#pragma once

#include <filesystem>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "upscale.hpp"

namespace adaptsr {

struct Backend {
    Model model;
    std::string description;            // printed once, on stderr
    std::vector<std::string> warnings;  // printed as `warning: ...`
    // GPU compute times (ms) since the last call, then cleared; empty function: not measured
    std::function<std::vector<double>()> take_gpu_ms;
};

using OpenBackend = std::function<Backend(const std::filesystem::path& engine)>;

// Runs the command line (without the program name); returns the exit status: 0, 1 for errors
// the user or machine caused (one `error: ...` line), 2 for a malformed command line.
int run_command(const std::vector<std::string>& args, const OpenBackend& open, std::ostream& out,
                std::ostream& err, const char* version);

}  // namespace adaptsr
