// The C interface (include/adaptsr.h) over Engine and the tiler.
#include "adaptsr.h"

#include <exception>
#include <new>
#include <numeric>
#include <string>

#include "engine.hpp"
#include "upscale.hpp"

struct adaptsr_engine {
    explicit adaptsr_engine(const char* path) : engine(path) {}
    adaptsr::Engine engine;
    double last_gpu_ms = -1;
};

namespace {

thread_local std::string last_error;

template <typename F>
int guarded(F&& body) {
    try {
        body();
        last_error.clear();
        return 0;
    } catch (const std::bad_alloc&) {
        last_error = "out of memory";
    } catch (const std::exception& e) {
        last_error = e.what();
    }
    return -1;
}

}  // namespace

extern "C" {

adaptsr_engine* adaptsr_open(const char* engine_path) {
    adaptsr_engine* handle = nullptr;
    guarded([&] {
        if (!engine_path) throw adaptsr::UserError("adaptsr_open: engine_path is NULL");
        handle = new adaptsr_engine(engine_path);
    });
    return handle;
}

int adaptsr_scale(const adaptsr_engine* engine) { return engine ? engine->engine.scale() : -1; }

int adaptsr_upscale(adaptsr_engine* engine, const float* rgb, int height, int width, float* out, int tile,
                    int overlap, int batch) {
    return guarded([&] {
        if (!engine || !rgb || !out) throw adaptsr::UserError("adaptsr_upscale: NULL argument");
        if (height < 1 || width < 1) throw adaptsr::UserError("adaptsr_upscale: the image is empty");
        std::optional<int> t = tile == -1 ? std::nullopt : std::optional<int>(tile);
        std::optional<int> o = overlap == -1 ? std::nullopt : std::optional<int>(overlap);
        engine->engine.clear_timings();
        engine->last_gpu_ms = -1;
        adaptsr::Planar result =
            adaptsr::tiled_upscale(engine->engine.runner(), adaptsr::to_planar(rgb, height, width),
                                   engine->engine.scale(), engine->engine.rule(), t, o, batch);
        adaptsr::from_planar_clipped(result, out);
        const auto& ms = engine->engine.gpu_ms();
        engine->last_gpu_ms = std::accumulate(ms.begin(), ms.end(), 0.0);
    });
}

double adaptsr_last_gpu_ms(const adaptsr_engine* engine) { return engine ? engine->last_gpu_ms : -1; }

const char* adaptsr_last_error(void) { return last_error.c_str(); }

void adaptsr_close(adaptsr_engine* engine) { delete engine; }

}  // extern "C"
