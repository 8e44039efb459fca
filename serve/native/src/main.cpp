// adaptsr-trt: upscale PNG images with a TensorRT engine (see docs/native.md).
#include <iostream>
#include <memory>

#include "cli.hpp"
#include "engine.hpp"

#ifndef ADAPTSR_VERSION
#define ADAPTSR_VERSION "unknown"
#endif

int main(int argc, char** argv) {
    std::shared_ptr<adaptsr::Engine> engine;  // outlives the backend's callbacks
    auto open = [&engine](const std::filesystem::path& path) {
        engine = std::make_shared<adaptsr::Engine>(path);
        adaptsr::Backend backend;
        backend.model = {engine->scale(), engine->rule(), engine->runner()};
        backend.description = engine->describe();
        backend.warnings = engine->warnings();
        backend.take_gpu_ms = [e = engine.get()] {
            std::vector<double> times = e->gpu_ms();
            e->clear_timings();
            return times;
        };
        return backend;
    };
    try {
        return adaptsr::run_command(std::vector<std::string>(argv + 1, argv + argc), open, std::cout, std::cerr,
                                    ADAPTSR_VERSION);
    } catch (const std::exception& e) {  // a bug, not the user's doing: still one line
        std::cerr << "error: internal error: " << e.what() << "\n";
        return 1;
    }
}
