#include "tiling.hpp"

#include <algorithm>
#include <cmath>

namespace adaptsr {

namespace {

// Python's floor division, and -(-a // b): the rounding the Python tiler uses
int floor_div(int a, int b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0)) ? 1 : 0); }
int ceil_div(int a, int b) { return -floor_div(-a, b); }

std::string hw_text(HW hw) { return std::to_string(hw.first) + "x" + std::to_string(hw.second); }

std::vector<int> spread(int length, int size, int count) {
    if (count == 1) return {0};
    // integer steps differing by at most one
    std::vector<int> starts;
    for (int i = 0; i < count; ++i)
        starts.push_back(static_cast<int>((static_cast<long long>(i) * (length - size)) / (count - 1)));
    return starts;
}

int tile_count(int length, int tile, int overlap) { return ceil_div(length - overlap, tile - overlap); }

// Over [lo, hi): 0 on the first quarter, linear on the middle half, 1 on the last quarter.
float fade(double pos, double lo, double hi) {
    if (hi <= lo) return pos >= lo ? 1.0f : 0.0f;  // tiles that touch without overlap: a hard cut
    double t = (pos - lo) / (hi - lo);
    return static_cast<float>(std::clamp((t - 0.25) * 2.0, 0.0, 1.0));
}

}  // namespace

std::string SizeRule::describe() const {
    if (static_size) return "static input " + hw_text(*static_size);
    std::string text =
        "minimum " + std::to_string(min_size) + ", multiple of " + std::to_string(multiple_of);
    if (max_size) text += ", maximum " + hw_text(*max_size);
    return text;
}

int round_up(int value, int multiple) { return ceil_div(value, multiple) * multiple; }

int default_overlap(int tile) { return std::min(std::max(4, tile / 32), (tile - 1) / 2); }

HW padded_size(int height, int width, const SizeRule& rule) {
    if (rule.static_size)
        return {std::max(height, rule.static_size->first), std::max(width, rule.static_size->second)};
    int least = round_up(rule.min_size, rule.multiple_of);
    return {std::max(round_up(height, rule.multiple_of), least),
            std::max(round_up(width, rule.multiple_of), least)};
}

std::pair<int, std::vector<int>> axis_tiles(int length, int tile, int overlap) {
    if (tile >= length) return {length, {0}};
    return {tile, spread(length, tile, tile_count(length, tile, overlap))};
}

int shrink_tile(int length, int tile, int overlap, const SizeRule& rule) {
    if (tile >= length) return length;
    int count = tile_count(length, tile, overlap);
    int size = round_up(ceil_div(length + (count - 1) * overlap, count), rule.multiple_of);
    return std::min(std::max(size, round_up(rule.min_size, rule.multiple_of)), tile);
}

std::vector<std::vector<float>> axis_weights(const std::vector<int>& starts, int size, int length,
                                             int scale) {
    (void)length;  // the weights depend on the starts only; kept to mirror the Python signature
    const int out_size = size * scale;
    std::vector<std::vector<float>> weights;
    for (size_t i = 0; i < starts.size(); ++i) {
        std::vector<float> w(out_size, 1.0f);
        for (int k = 0; k < out_size; ++k) {
            double pos = k + 0.5 + static_cast<double>(starts[i]) * scale;  // output pixel centre
            if (i > 0)  // fade in across the overlap with the previous tile
                w[k] *= fade(pos, starts[i] * scale, (starts[i - 1] + size) * scale);
            if (i + 1 < starts.size())  // fade out across the overlap with the next tile
                w[k] *= 1.0f - fade(pos, starts[i + 1] * scale, (starts[i] + size) * scale);
        }
        weights.push_back(std::move(w));
    }
    return weights;
}

TileChoice choose_tile(const SizeRule& rule, std::optional<int> tile, std::optional<int> overlap) {
    if (tile && *tile < 0)
        throw UserError("--tile must be 0 (no tiling) or positive, not " + std::to_string(*tile));
    int th, tw;
    if (rule.static_size) {
        th = rule.static_size->first;
        tw = rule.static_size->second;
        if (tile && *tile != 0 && *tile != std::max(th, tw))
            throw UserError("this engine has a static input of " + hw_text({th, tw}) + ": tiles are " +
                            hw_text({th, tw}) + " (omit --tile or use --tile " +
                            std::to_string(std::max(th, tw)) + ")");
        if (tile && *tile == 0) return {std::nullopt, 0};
    } else if (tile && *tile == 0) {
        return {std::nullopt, 0};
    } else {
        std::optional<int> limit;
        if (rule.max_size) limit = std::min(rule.max_size->first, rule.max_size->second);
        int side = tile ? *tile : (limit ? std::min(kDefaultTile, *limit) : kDefaultTile);
        if (side < rule.min_size)
            throw UserError("--tile " + std::to_string(side) + " is smaller than the model's minimum input " +
                            std::to_string(rule.min_size));
        if (limit && side > *limit)
            throw UserError("--tile " + std::to_string(side) + " is larger than the model's largest input " +
                            std::to_string(*limit));
        side -= side % rule.multiple_of;
        if (side < std::max(rule.min_size, 1))
            throw UserError("--tile is too small for a model whose input must be a multiple of " +
                            std::to_string(rule.multiple_of) + " and at least " +
                            std::to_string(rule.min_size));
        th = tw = side;
    }
    int ov = overlap ? *overlap : default_overlap(std::min(th, tw));
    if (ov < 0) throw UserError("--overlap must be >= 0, not " + std::to_string(ov));
    if (2 * ov >= std::min(th, tw))
        throw UserError("--overlap " + std::to_string(ov) + " must be less than half the tile (" +
                        std::to_string(std::min(th, tw)) + ")");
    return {HW{th, tw}, ov};
}

TilePlan plan_tiles(int height, int width, const SizeRule& rule, std::optional<int> tile,
                    std::optional<int> overlap) {
    auto [ph, pw] = padded_size(height, width, rule);
    TileChoice choice = choose_tile(rule, tile, overlap);
    std::string image = std::to_string(width) + "x" + std::to_string(height);
    if (!choice.shape) {  // untiled
        if (rule.static_size && HW{ph, pw} != *rule.static_size)
            throw UserError(image + " image does not fit the engine's static " +
                            std::to_string(rule.static_size->second) + "x" +
                            std::to_string(rule.static_size->first) +
                            " input without tiling (omit --tile 0)");
        if (rule.max_size && (ph > rule.max_size->first || pw > rule.max_size->second))
            throw UserError(image + " image is larger than the model's largest input " +
                            std::to_string(rule.max_size->second) + "x" +
                            std::to_string(rule.max_size->first) + "; use tiles (--tile)");
        return {{ph, pw}, {ph, pw}, {0}, {0}};
    }
    auto [th, tw] = *choice.shape;
    if (!rule.static_size) {
        th = shrink_tile(ph, th, choice.overlap, rule);
        tw = shrink_tile(pw, tw, choice.overlap, rule);
    }
    auto [tile_h, ys] = axis_tiles(ph, th, choice.overlap);
    auto [tile_w, xs] = axis_tiles(pw, tw, choice.overlap);
    return {{ph, pw}, {tile_h, tile_w}, ys, xs};
}

int reflect_index(int i, int n) {
    if (n == 1) return 0;
    const int period = 2 * (n - 1);
    int m = i % period;
    if (m < 0) m += period;
    return m < n ? m : period - m;
}

Planar tiled_upscale(const RunTiles& run, const Planar& image, int scale, const SizeRule& rule,
                     std::optional<int> tile, std::optional<int> overlap, int batch) {
    if (batch < 1) throw UserError("--batch must be >= 1, not " + std::to_string(batch));
    const int c = image.channels, h = image.height, w = image.width;
    TilePlan plan = plan_tiles(h, w, rule, tile, overlap);
    auto [ph, pw] = plan.padded;
    auto [th, tw] = plan.tile;
    auto wy = axis_weights(plan.ys, th, ph, scale);
    auto wx = axis_weights(plan.xs, tw, pw, scale);
    const int oh = th * scale, ow = tw * scale;
    const size_t in_tile = static_cast<size_t>(c) * th * tw, out_tile = static_cast<size_t>(c) * oh * ow;
    Planar acc{c, ph * scale, pw * scale, std::vector<float>(static_cast<size_t>(c) * ph * scale * pw * scale, 0.0f)};
    std::vector<float> norm(static_cast<size_t>(ph) * scale * pw * scale, 0.0f);
    std::vector<std::pair<int, int>> cells;
    for (size_t i = 0; i < plan.ys.size(); ++i)
        for (size_t j = 0; j < plan.xs.size(); ++j) cells.emplace_back(static_cast<int>(i), static_cast<int>(j));
    std::vector<float> crops, outs, weight(static_cast<size_t>(oh) * ow);
    for (size_t first = 0; first < cells.size(); first += batch) {
        const size_t n = std::min(cells.size() - first, static_cast<size_t>(batch));
        crops.assign(n * in_tile, 0.0f);
        for (size_t k = 0; k < n; ++k) {  // crop the (reflection-padded) image
            auto [i, j] = cells[first + k];
            float* dst = crops.data() + k * in_tile;
            for (int ch = 0; ch < c; ++ch)
                for (int y = 0; y < th; ++y) {
                    int sy = reflect_index(plan.ys[i] + y, h);
                    for (int x = 0; x < tw; ++x)
                        *dst++ = image.at(ch, sy, reflect_index(plan.xs[j] + x, w));
                }
        }
        outs.assign(n * out_tile, 0.0f);
        run(crops.data(), static_cast<int>(n), c, th, tw, outs.data());
        for (size_t k = 0; k < n; ++k) {
            auto [i, j] = cells[first + k];
            for (int y = 0; y < oh; ++y)
                for (int x = 0; x < ow; ++x) weight[static_cast<size_t>(y) * ow + x] = wy[i][y] * wx[j][x];
            const int y0 = plan.ys[i] * scale, x0 = plan.xs[j] * scale;
            const float* src = outs.data() + k * out_tile;
            for (int ch = 0; ch < c; ++ch)
                for (int y = 0; y < oh; ++y)
                    for (int x = 0; x < ow; ++x)
                        acc.at(ch, y0 + y, x0 + x) += *src++ * weight[static_cast<size_t>(y) * ow + x];
            for (int y = 0; y < oh; ++y)
                for (int x = 0; x < ow; ++x)
                    norm[static_cast<size_t>(y0 + y) * acc.width + x0 + x] += weight[static_cast<size_t>(y) * ow + x];
        }
    }
    // crop to the image's upscaled size; dividing by the weight sum (already 1 everywhere, a
    // partition of unity) guards rounding in the weights
    Planar out{c, h * scale, w * scale, std::vector<float>(static_cast<size_t>(c) * h * scale * w * scale)};
    for (int ch = 0; ch < c; ++ch)
        for (int y = 0; y < out.height; ++y)
            for (int x = 0; x < out.width; ++x)
                out.at(ch, y, x) = acc.at(ch, y, x) / norm[static_cast<size_t>(y) * acc.width + x];
    return out;
}

}  // namespace adaptsr
