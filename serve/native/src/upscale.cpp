#include "upscale.hpp"

#include <algorithm>

namespace adaptsr {

void run_in_batches(const float* in, int count, size_t in_tile, size_t out_tile, int fixed_batch,
                    int max_batch, const Forward& forward, float* out) {
    const int step = fixed_batch ? fixed_batch : (max_batch ? max_batch : count);
    std::vector<float> fill_in, fill_out;
    for (int first = 0; first < count; first += step) {
        const int real = std::min(step, count - first);
        const float* src = in + first * in_tile;
        float* dst = out + first * out_tile;
        if (fixed_batch && real < fixed_batch) {  // fill a static batch with copies
            fill_in.assign(src, src + real * in_tile);
            for (int k = real; k < fixed_batch; ++k)
                fill_in.insert(fill_in.end(), src + (real - 1) * in_tile, src + real * in_tile);
            fill_out.resize(static_cast<size_t>(fixed_batch) * out_tile);
            forward(fill_in.data(), fixed_batch, fill_out.data());
            std::copy(fill_out.begin(), fill_out.begin() + real * out_tile, dst);
        } else {
            forward(src, real, dst);
        }
    }
}

Planar to_planar(const float* rgb, int height, int width) {
    Planar p{3, height, width, std::vector<float>(static_cast<size_t>(3) * height * width)};
    for (int y = 0; y < height; ++y)
        for (int x = 0; x < width; ++x)
            for (int c = 0; c < 3; ++c) p.at(c, y, x) = rgb[(static_cast<size_t>(y) * width + x) * 3 + c];
    return p;
}

void from_planar_clipped(const Planar& p, float* rgb) {
    for (int y = 0; y < p.height; ++y)
        for (int x = 0; x < p.width; ++x)
            for (int c = 0; c < 3; ++c)
                rgb[(static_cast<size_t>(y) * p.width + x) * 3 + c] = std::clamp(p.at(c, y, x), 0.0f, 1.0f);
}

Image upscale_image(const Model& model, const Image& image, std::optional<int> tile,
                    std::optional<int> overlap, int batch) {
    const int s = model.scale;
    Planar out = tiled_upscale(model.run, to_planar(image.rgb.data(), image.height, image.width), s, model.rule,
                               tile, overlap, batch);
    Image result;
    result.height = image.height * s;
    result.width = image.width * s;
    result.bit_depth = image.bit_depth;
    result.gray = image.gray;
    result.rgb.resize(static_cast<size_t>(result.height) * result.width * 3);
    from_planar_clipped(out, result.rgb.data());
    if (image.gray) {  // a gray picture stays gray, whatever colour cast the model adds
        for (size_t p = 0; p < result.rgb.size(); p += 3) {
            const float mean = (result.rgb[p] + result.rgb[p + 1] + result.rgb[p + 2]) / 3.0f;
            result.rgb[p] = result.rgb[p + 1] = result.rgb[p + 2] = mean;
        }
    }
    if (image.has_alpha()) {
        result.alpha = resize_cubic(image.alpha, image.height, image.width, s);
        for (float& a : result.alpha) a = std::clamp(a, 0.0f, 1.0f);
    }
    return result;
}

}  // namespace adaptsr
