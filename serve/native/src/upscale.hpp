// One image through a model, as serve/upscale.py does it: RGB through the (tiled) model, clipped
// to [0, 1]; a gray picture stays gray; alpha upscaled bicubically; the bit depth kept.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>

#include "image.hpp"
#include "tiling.hpp"

namespace adaptsr {

struct Model {
    int scale = 1;
    SizeRule rule;
    RunTiles run;
};

Image upscale_image(const Model& model, const Image& image, std::optional<int> tile,
                    std::optional<int> overlap, int batch);

// Runs `count` tiles through `forward` (one engine call on n tiles) as the Python backend does:
// in calls of at most `max_batch` tiles (0: no limit), or of exactly `fixed_batch` tiles
// (0: not fixed), the last one filled with copies of the last tile and the copies dropped.
using Forward = std::function<void(const float* in, int n, float* out)>;
void run_in_batches(const float* in, int count, size_t in_tile, size_t out_tile, int fixed_batch,
                    int max_batch, const Forward& forward, float* out);

// Interleaved H x W x 3 <-> planar 3 x H x W.
Planar to_planar(const float* rgb, int height, int width);
void from_planar_clipped(const Planar& planar, float* rgb);

}  // namespace adaptsr
