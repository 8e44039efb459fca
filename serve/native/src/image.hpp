// PNG files in and out through libpng, as the Python side reads and writes them
// (core/images.py, which uses OpenCV): float32 pixels in [0, 1], RGB, alpha kept apart, bit
// depth remembered so that a 16-bit PNG comes out as 16-bit.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

namespace adaptsr {

struct Image {
    int height = 0, width = 0;
    std::vector<float> rgb;    // H x W x 3, interleaved; gray files are replicated to 3 channels
    std::vector<float> alpha;  // H x W, empty when the file has none
    int bit_depth = 8;         // 8 or 16
    bool gray = false;         // the file was single-channel (gray+alpha files read as colour,
                               // as OpenCV does)
    bool has_alpha() const { return !alpha.empty(); }
};

// Reads 1..16-bit gray, gray+alpha, RGB, RGBA and palette PNGs. Throws UserError.
Image read_png(const std::filesystem::path& path);

// The encoded pixel values: 1 plane (gray without alpha), 3 (RGB) or 4 (RGBA).
struct EncodedPlanes {
    int channels = 0;
    std::vector<uint16_t> values;  // H x W x channels
};
EncodedPlanes encode_planes(const Image& image);

// Writes atomically (a temporary file beside it, renamed); an existing file only with force.
void write_png(const Image& image, const std::filesystem::path& path, bool force);

// [0, 1] -> 0..255 or 0..65535, rounded as the Python side does.
uint16_t to_uint(float value, int bit_depth);

// Bicubic resize of one plane by an integer factor, as OpenCV's INTER_CUBIC (a = -0.75, pixel
// centres aligned, edges replicated), which the Python side uses for alpha.
std::vector<float> resize_cubic(const std::vector<float>& plane, int height, int width, int scale);

}  // namespace adaptsr
