#include "image.hpp"

#include <png.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "fileio.hpp"
#include "tiling.hpp"

namespace adaptsr {

namespace {

struct PngError {
    std::string message;
};

void on_error(png_structp png, png_const_charp message) {
    static_cast<PngError*>(png_get_error_ptr(png))->message = message ? message : "libpng error";
    png_longjmp(png, 1);
}

void on_warning(png_structp, png_const_charp) {}  // warnings (e.g. odd chunks) are not errors

struct File {
    FILE* fp = nullptr;
    ~File() {
        if (fp) std::fclose(fp);
    }
};

bool little_endian() {
    const uint16_t one = 1;
    uint8_t first;
    std::memcpy(&first, &one, 1);
    return first == 1;
}

}  // namespace

uint16_t to_uint(float value, int bit_depth) {
    const float top = bit_depth == 8 ? 255.0f : 65535.0f;
    return static_cast<uint16_t>(std::clamp(value, 0.0f, 1.0f) * top + 0.5f);
}

Image read_png(const std::filesystem::path& path) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) throw UserError("no such image: " + path.string());
    File file;
    file.fp = std::fopen(path.c_str(), "rb");
    if (!file.fp) throw UserError("cannot read image " + path.string() + ": " + std::strerror(errno));
    unsigned char signature[8] = {};
    if (std::fread(signature, 1, 8, file.fp) != 8 || png_sig_cmp(signature, 0, 8) != 0)
        throw UserError("cannot read image " + path.string() + ": corrupt or not a PNG");
    PngError error;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &error, on_error, on_warning);
    if (!png) throw UserError("cannot read image " + path.string() + ": out of memory");
    png_infop info = png_create_info_struct(png);
    // Everything written after setjmp lives on the heap: locals changed between setjmp and a
    // longjmp have indeterminate values afterwards.
    struct Decoded {
        std::vector<unsigned char> pixels;
        std::vector<png_bytep> rows;
        int channels = 0, bit_depth = 8, height = 0, width = 0;
    };
    const auto decoded = std::make_unique<Decoded>();
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, nullptr);
        throw UserError("cannot read image " + path.string() + ": " + error.message);
    }
    png_init_io(png, file.fp);
    png_set_sig_bytes(png, 8);
    png_read_info(png, info);
    const int color = png_get_color_type(png, info);
    const int depth = png_get_bit_depth(png, info);
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    // OpenCV gives colour files with transparency an alpha channel, and gray files none
    if ((color == PNG_COLOR_TYPE_PALETTE || color == PNG_COLOR_TYPE_RGB) &&
        png_get_valid(png, info, PNG_INFO_tRNS))
        png_set_tRNS_to_alpha(png);
    if (depth == 16 && little_endian()) png_set_swap(png);
    png_read_update_info(png, info);
    Decoded& d = *decoded;
    d.channels = png_get_channels(png, info);
    d.bit_depth = png_get_bit_depth(png, info) == 16 ? 16 : 8;
    d.height = static_cast<int>(png_get_image_height(png, info));
    d.width = static_cast<int>(png_get_image_width(png, info));
    const size_t row_bytes = png_get_rowbytes(png, info);
    d.pixels.resize(row_bytes * d.height);
    d.rows.resize(d.height);
    for (int y = 0; y < d.height; ++y) d.rows[y] = d.pixels.data() + y * row_bytes;
    png_read_image(png, d.rows.data());
    png_read_end(png, nullptr);
    png_destroy_read_struct(&png, &info, nullptr);

    Image image;
    image.height = d.height;
    image.width = d.width;
    image.bit_depth = d.bit_depth;
    const int channels = d.channels;
    const std::vector<unsigned char>& pixels = d.pixels;
    const size_t n = static_cast<size_t>(image.height) * image.width;
    const float top = image.bit_depth == 16 ? 65535.0f : 255.0f;
    auto value = [&](size_t i) -> float {
        if (image.bit_depth == 16) {
            uint16_t v;
            std::memcpy(&v, pixels.data() + 2 * i, 2);
            return v / top;
        }
        return pixels[i] / top;
    };
    image.gray = channels == 1;  // gray+alpha reads as colour with alpha, as in OpenCV
    image.rgb.resize(n * 3);
    if (channels == 2 || channels == 4) image.alpha.resize(n);
    for (size_t p = 0; p < n; ++p) {
        const size_t base = p * channels;
        if (channels <= 2) {
            const float g = value(base);
            image.rgb[3 * p] = image.rgb[3 * p + 1] = image.rgb[3 * p + 2] = g;
        } else {
            for (int c = 0; c < 3; ++c) image.rgb[3 * p + c] = value(base + c);
        }
        if (channels == 2 || channels == 4) image.alpha[p] = value(base + channels - 1);
    }
    return image;
}

EncodedPlanes encode_planes(const Image& image) {
    const size_t n = static_cast<size_t>(image.height) * image.width;
    EncodedPlanes planes;
    planes.channels = image.has_alpha() ? 4 : (image.gray ? 1 : 3);
    planes.values.resize(n * planes.channels);
    for (size_t p = 0; p < n; ++p) {
        const float* rgb = &image.rgb[3 * p];
        uint16_t* out = &planes.values[p * planes.channels];
        if (planes.channels == 1) {  // float32 mean of the three channels, as numpy takes it
            out[0] = to_uint((rgb[0] + rgb[1] + rgb[2]) / 3.0f, image.bit_depth);
            continue;
        }
        for (int c = 0; c < 3; ++c) out[c] = to_uint(rgb[c], image.bit_depth);
        if (planes.channels == 4) out[3] = to_uint(image.alpha[p], image.bit_depth);
    }
    return planes;
}

void write_png(const Image& image, const std::filesystem::path& path, bool force) {
    const EncodedPlanes planes = encode_planes(image);
    const int bytes = image.bit_depth == 16 ? 2 : 1;
    const size_t row_bytes = static_cast<size_t>(image.width) * planes.channels * bytes;
    std::vector<unsigned char> pixels(row_bytes * image.height);
    for (size_t i = 0; i < planes.values.size(); ++i) {
        if (bytes == 2) {  // PNG stores 16-bit samples big-endian
            pixels[2 * i] = static_cast<unsigned char>(planes.values[i] >> 8);
            pixels[2 * i + 1] = static_cast<unsigned char>(planes.values[i] & 0xff);
        } else {
            pixels[i] = static_cast<unsigned char>(planes.values[i]);
        }
    }
    const int color = planes.channels == 1   ? PNG_COLOR_TYPE_GRAY
                      : planes.channels == 3 ? PNG_COLOR_TYPE_RGB
                                             : PNG_COLOR_TYPE_RGB_ALPHA;
    write_atomically(path, force, [&](const std::filesystem::path& tmp) {
        File file;
        file.fp = std::fopen(tmp.c_str(), "wb");
        if (!file.fp) throw UserError("cannot write " + path.string() + ": " + std::strerror(errno));
        PngError error;
        png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &error, on_error, on_warning);
        if (!png) throw UserError("cannot write " + path.string() + ": out of memory");
        png_infop info = png_create_info_struct(png);
        std::vector<png_bytep> rows(image.height);
        for (int y = 0; y < image.height; ++y) rows[y] = pixels.data() + y * row_bytes;
        if (setjmp(png_jmpbuf(png))) {
            png_destroy_write_struct(&png, &info);
            throw UserError("cannot write " + path.string() + ": " + error.message);
        }
        png_init_io(png, file.fp);
        png_set_IHDR(png, info, image.width, image.height, image.bit_depth, color, PNG_INTERLACE_NONE,
                     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
        png_write_info(png, info);
        png_write_image(png, rows.data());
        png_write_end(png, nullptr);
        png_destroy_write_struct(&png, &info);
        if (std::fflush(file.fp) != 0 || std::ferror(file.fp))
            throw UserError("cannot write " + path.string() + ": " + std::strerror(errno));
    });
}

std::vector<float> resize_cubic(const std::vector<float>& plane, int height, int width, int scale) {
    constexpr float A = -0.75f;
    struct Tap {
        int index[4];
        float weight[4];
    };
    // OpenCV's source position and cubic coefficients per output pixel of one axis
    auto taps = [&](int length) {
        std::vector<Tap> out(static_cast<size_t>(length) * scale);
        const double inv = static_cast<double>(length) / (length * scale);
        for (int d = 0; d < length * scale; ++d) {
            float f = static_cast<float>((d + 0.5) * inv - 0.5);
            int s = static_cast<int>(std::floor(f));
            float x = f - s;
            Tap& t = out[d];
            t.weight[0] = ((A * (x + 1) - 5 * A) * (x + 1) + 8 * A) * (x + 1) - 4 * A;
            t.weight[1] = ((A + 2) * x - (A + 3)) * x * x + 1;
            t.weight[2] = ((A + 2) * (1 - x) - (A + 3)) * (1 - x) * (1 - x) + 1;
            t.weight[3] = 1.f - t.weight[0] - t.weight[1] - t.weight[2];
            for (int k = 0; k < 4; ++k) t.index[k] = std::clamp(s - 1 + k, 0, length - 1);
        }
        return out;
    };
    const auto ty = taps(height), tx = taps(width);
    const int ow = width * scale, oh = height * scale;
    std::vector<float> rows(static_cast<size_t>(height) * ow);  // horizontal pass first
    for (int y = 0; y < height; ++y)
        for (int x = 0; x < ow; ++x) {
            const Tap& t = tx[x];
            const float* src = &plane[static_cast<size_t>(y) * width];
            float sum = 0.f;
            for (int k = 0; k < 4; ++k) sum += src[t.index[k]] * t.weight[k];
            rows[static_cast<size_t>(y) * ow + x] = sum;
        }
    std::vector<float> out(static_cast<size_t>(oh) * ow);
    for (int y = 0; y < oh; ++y) {
        const Tap& t = ty[y];
        for (int x = 0; x < ow; ++x) {
            float sum = 0.f;
            for (int k = 0; k < 4; ++k) sum += rows[static_cast<size_t>(t.index[k]) * ow + x] * t.weight[k];
            out[static_cast<size_t>(y) * ow + x] = sum;
        }
    }
    return out;
}

}  // namespace adaptsr
