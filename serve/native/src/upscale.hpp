// One image through a model, as serve/upscale.py does it: RGB through the (tiled) model, clipped
// to [0, 1]; a gray picture stays gray; alpha upscaled bicubically; the bit depth kept.
#pragma once

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

// Interleaved H x W x 3 <-> planar 3 x H x W.
Planar to_planar(const float* rgb, int height, int width);
void from_planar_clipped(const Planar& planar, float* rgb);

}  // namespace adaptsr
