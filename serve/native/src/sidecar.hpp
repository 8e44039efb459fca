// The engine's JSON sidecar (`<name>.engine.json`, written by `adapt export trt` from
// adaptsr.core.contracts.EngineSidecar; tests/write_fixtures.py writes one for test_fixtures).
//
// Keys read (all optional; a missing or malformed key is reported and not checked):
//   tensorrt_version         "10.3.0": the TensorRT that built the engine
//   compute_capability       "8.7" (the one spelling Python writes; anything else is a note)
//   gpu                      the GPU's name: for messages only
//   precision                "fp16"/"fp32": for messages only
//   metadata.scale           the upscaling factor (checked against the engine's shapes)
//   metadata.size_requirements  JSON text {"min_size": N, "multiple_of": M}, as in the ONNX
//   version                  recorded only: the keys above are read from any version
// The engine itself is the authority for shapes and the optimization profile.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace adaptsr {

// The EngineSidecar version whose keys this reader was checked against. test_fixtures fails when
// Python writes another: check that the keys above still mean the same, then raise it.
constexpr int kSidecarVersion = 1;

struct Sidecar {
    std::filesystem::path path;
    bool present = false;
    std::optional<std::string> tensorrt_version;
    std::optional<std::pair<int, int>> compute_capability;
    std::optional<std::string> gpu_name;
    std::optional<std::string> precision;
    std::optional<int> scale;
    int min_size = 1, multiple_of = 1;
    std::optional<int> version;
    std::vector<std::string> notes;  // keys that were malformed and therefore ignored
};

// `model.engine` -> `model.engine.json`, `model.plan` -> `model.engine.json` (as the Python side).
std::filesystem::path sidecar_path(const std::filesystem::path& engine);

// Reads the sidecar beside `engine`; absent is not an error (present = false). Throws UserError
// for a file that exists but is not JSON, or a size requirement that is not a positive integer.
Sidecar read_sidecar(const std::filesystem::path& engine);
Sidecar parse_sidecar(const std::string& text, const std::filesystem::path& where);

// "10.3.0.26" -> {10, 3, 0, 26}; empty when it does not start with a number.
std::vector<int> parse_version(const std::string& text);

// What this machine runs: TensorRT version and the GPU.
struct Platform {
    std::vector<int> tensorrt_version;  // major, minor, patch
    std::pair<int, int> compute_capability;
    std::string gpu_name;
};

// Refuses an engine built by another TensorRT (major.minor.patch) or for another compute
// capability (UserError). Returns warnings for what could not be checked.
std::vector<std::string> check_sidecar(const Sidecar& sidecar, const std::filesystem::path& engine,
                                       const Platform& platform);

}  // namespace adaptsr
