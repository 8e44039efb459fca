// Tiled inference: the same planner and blender as the Python tiler (core/tiling.py).
//
// The image is padded by reflection (bottom and right) to the model's minimum size and
// multiple-of rule, then cut into equal overlapping tiles spread evenly over each axis. Where two
// tiles overlap, the outer quarter of the overlap on each side is discarded and the middle half
// is a linear cross-fade; the weights sum to one. ctest compares this file's results with the
// Python implementation's (tests/write_fixtures.py), so change both together.
#pragma once

#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace adaptsr {

// Anything the user or the machine caused: printed as one `error: ...` line.
struct UserError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

constexpr int kDefaultTile = 512;

using HW = std::pair<int, int>;  // (height, width)

struct SizeRule {
    int min_size = 1;
    int multiple_of = 1;
    std::optional<HW> max_size;     // largest input, e.g. an engine profile
    std::optional<HW> static_size;  // the only input accepted
    std::string describe() const;
};

struct TilePlan {
    HW padded;  // image size after padding
    HW tile;    // every tile's size
    std::vector<int> ys, xs;
    int count() const { return static_cast<int>(ys.size() * xs.size()); }
};

// Tile options checked against the model: the tile shape (absent = untiled) and the overlap.
struct TileChoice {
    std::optional<HW> shape;
    int overlap = 0;
};

int round_up(int value, int multiple);
int default_overlap(int tile);
HW padded_size(int height, int width, const SizeRule& rule);
std::pair<int, std::vector<int>> axis_tiles(int length, int tile, int overlap);
int shrink_tile(int length, int tile, int overlap, const SizeRule& rule);
// Per tile, the 1-D blending weights over its output pixels (a partition of unity).
std::vector<std::vector<float>> axis_weights(const std::vector<int>& starts, int size, int length,
                                             int scale);
// `tile` absent = automatic (the static shape, or kDefaultTile within the largest input),
// 0 = the whole image at once. Throws UserError with the Python side's messages.
TileChoice choose_tile(const SizeRule& rule, std::optional<int> tile, std::optional<int> overlap);
TilePlan plan_tiles(int height, int width, const SizeRule& rule, std::optional<int> tile,
                    std::optional<int> overlap);

// A planar float32 image or batch: data[((n * c + ch) * h + y) * w + x].
struct Planar {
    int channels = 0, height = 0, width = 0;
    std::vector<float> data;
    float& at(int ch, int y, int x) { return data[(static_cast<size_t>(ch) * height + y) * width + x]; }
    float at(int ch, int y, int x) const {
        return data[(static_cast<size_t>(ch) * height + y) * width + x];
    }
};

// Runs the model on `count` tiles (count x C x h x w, contiguous) and writes
// count x C x h*s x w*s to `out` (already sized).
using RunTiles = std::function<void(const float* in, int count, int channels, int height, int width,
                                    float* out)>;

// Mirror index for numpy's "reflect" padding of an axis of length n (any distance).
int reflect_index(int i, int n);

// The image (C x H x W) upscaled by `scale` through `run`, tiles batched `batch` at a time.
Planar tiled_upscale(const RunTiles& run, const Planar& image, int scale, const SizeRule& rule,
                     std::optional<int> tile, std::optional<int> overlap, int batch);

}  // namespace adaptsr
