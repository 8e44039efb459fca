// A serialized TensorRT 10+ engine run on its own CUDA stream (needs TensorRT and CUDA; this
// header includes neither, so programs embedding it need only the library).
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "sidecar.hpp"
#include "tiling.hpp"

namespace adaptsr {

class Engine {
  public:
    // Loads the engine, checks its sidecar against this TensorRT and GPU (UserError on a
    // foreign engine) and learns scale and size rule from the engine's shapes and profile.
    explicit Engine(const std::filesystem::path& path);
    ~Engine();
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    int scale() const;
    const SizeRule& rule() const;
    std::string describe() const;               // one line: file, shapes, precision, GPU
    const std::vector<std::string>& warnings() const;  // what the sidecar check could not check

    // Runs tiles (count x 3 x h x w float32) as the Python backend does: split into the
    // engine's largest batch, a static batch filled with copies of the last tile.
    RunTiles runner();

    // GPU compute time of each enqueueV3 (CUDA events), in ms, since the last clear.
    const std::vector<double>& gpu_ms() const;
    void clear_timings();

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace adaptsr
