// The native tiler, blender, PNG reader/writer and upscale path against what the Python
// implementation computes for the same inputs (fixtures written by write_fixtures.py).
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <unistd.h>
#include <sstream>
#include <string>
#include <vector>

#include "check.hpp"
#include "image.hpp"
#include "sidecar.hpp"
#include "tiling.hpp"
#include "upscale.hpp"

using namespace adaptsr;
namespace fs = std::filesystem;

namespace {

std::vector<float> read_f32(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<float> out(bytes.size() / 4);
    std::memcpy(out.data(), bytes.data(), out.size() * 4);  // written little-endian, as this host
    return out;
}

// "none" (Python's None) or an integer
std::optional<int> opt(const std::string& token) {
    if (token == "none") return std::nullopt;
    return std::stoi(token);
}

// The toy pixels and model of write_fixtures.py.
Planar toy_image(int channels, int height, int width) {
    Planar p{channels, height, width, std::vector<float>(static_cast<size_t>(channels) * height * width)};
    for (int c = 0; c < channels; ++c)
        for (int y = 0; y < height; ++y)
            for (int x = 0; x < width; ++x) p.at(c, y, x) = ((c * 7 + y * 13 + x * 29) % 101) / 100.0f;
    return p;
}

RunTiles toy_model(int scale) {
    return [scale](const float* in, int n, int c, int h, int w, float* out) {
        for (int k = 0; k < n; ++k)
            for (int ch = 0; ch < c; ++ch) {
                const float* src = in + (static_cast<size_t>(k) * c + ch) * h * w;
                float* dst = out + (static_cast<size_t>(k) * c + ch) * h * scale * w * scale;
                const float top_left = 0.25f * src[0], bottom_right = 0.125f * src[h * w - 1];
                for (int y = 0; y < h * scale; ++y)
                    for (int x = 0; x < w * scale; ++x)
                        dst[static_cast<size_t>(y) * w * scale + x] =
                            src[(y / scale) * w + x / scale] + top_left + bottom_right;
            }
    };
}

float max_diff(const std::vector<float>& a, const std::vector<float>& b) {
    if (a.size() != b.size()) return INFINITY;
    float worst = 0;
    for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
    return worst;
}

std::vector<int> ints(std::istringstream& in) {
    std::vector<int> out;
    for (int v; in >> v;) out.push_back(v);
    return out;
}

int tiling_cases(const fs::path& dir) {
    std::ifstream in(dir / "tiling.txt");
    CHECK_MSG(in.good(), "no tiling.txt in " + dir.string());
    std::string line, name;
    int cases = 0, h = 0, w = 0, scale = 1, batch = 1;
    std::optional<int> tile, overlap;
    SizeRule rule;
    std::optional<TilePlan> plan;
    while (std::getline(in, line)) {
        std::istringstream f(line);
        std::string kind;
        f >> kind;
        if (kind == "case") {
            int mn, mult;
            std::string sh, sw, mh, mw, t, o;
            f >> name >> h >> w >> mn >> mult >> sh >> sw >> mh >> mw >> t >> o >> scale >> batch;
            rule = SizeRule{mn, mult, std::nullopt, std::nullopt};
            if (opt(sh)) rule.static_size = HW{*opt(sh), *opt(sw)};
            if (opt(mh)) rule.max_size = HW{*opt(mh), *opt(mw)};
            tile = opt(t);
            overlap = opt(o);
            plan.reset();
            ++cases;
            try {
                plan = plan_tiles(h, w, rule, tile, overlap);
            } catch (const UserError& e) {
                // compared with the `error` line that follows
                plan.reset();
                name += "\n" + std::string(e.what());
            }
        } else if (kind == "error") {
            std::string expected = line.substr(6);
            auto nl = name.find('\n');
            CHECK_MSG(nl != std::string::npos, name + ": Python refuses (" + expected + "), native accepts");
            if (nl != std::string::npos) CHECK_MSG(name.substr(nl + 1) == expected, name + ": message " + name.substr(nl + 1));
        } else if (kind == "plan") {
            int ph, pw, th, tw;
            f >> ph >> pw >> th >> tw;
            CHECK_MSG(plan.has_value(), name + ": native refuses what Python accepts");
            if (!plan) continue;
            CHECK_MSG(plan->padded == HW(ph, pw) && plan->tile == HW(th, tw), name + ": padded/tile size");
        } else if (kind == "ys" || kind == "xs") {
            if (!plan) continue;
            const bool rows = kind == "ys";
            CHECK_MSG((rows ? plan->ys : plan->xs) == ints(f), name + ": " + kind);
            std::vector<float> flat;
            for (const auto& wgt : rows ? axis_weights(plan->ys, plan->tile.first, plan->padded.first, scale)
                                        : axis_weights(plan->xs, plan->tile.second, plan->padded.second, scale))
                flat.insert(flat.end(), wgt.begin(), wgt.end());
            std::vector<float> expected = read_f32(dir / ((rows ? "wy." : "wx.") + name + ".f32"));
            CHECK_MSG(flat == expected, name + ": " + (rows ? "row" : "column") + " blend weights differ by " +
                                            std::to_string(max_diff(flat, expected)));
        } else if (kind == "blend") {
            if (!plan) continue;
            std::string file;
            f >> file;
            Planar out = tiled_upscale(toy_model(scale), toy_image(3, h, w), scale, rule, tile, overlap, batch);
            std::vector<float> expected = read_f32(dir / file);
            float diff = max_diff(out.data, expected);
            CHECK_MSG(diff <= 1e-6f, name + ": blended output differs by " + std::to_string(diff));
        }
    }
    return cases;
}

int image_cases(const fs::path& dir) {
    std::ifstream in(dir / "images.txt");
    CHECK_MSG(in.good(), "no images.txt in " + dir.string());
    std::string line;
    int cases = 0;
    while (std::getline(in, line)) {
        std::istringstream f(line);
        std::string kind, name;
        f >> kind >> name;
        Image image = read_png(dir / name);
        if (kind == "read") {
            int h, w, bits, gray, alpha;
            f >> h >> w >> bits >> gray >> alpha;
            CHECK_MSG(image.height == h && image.width == w, name + ": size");
            CHECK_MSG(image.bit_depth == bits, name + ": bit depth " + std::to_string(image.bit_depth));
            CHECK_MSG(image.gray == (gray != 0), name + ": gray flag");
            CHECK_MSG(image.has_alpha() == (alpha != 0), name + ": alpha presence");
            CHECK_MSG(max_diff(image.rgb, read_f32(dir / (name + ".rgb.f32"))) == 0.0f, name + ": RGB values");
            if (alpha)
                CHECK_MSG(max_diff(image.alpha, read_f32(dir / (name + ".alpha.f32"))) == 0.0f, name + ": alpha");
        } else if (kind == "upscale") {
            int scale, mn, mult;
            std::string t, expected_name;
            f >> scale >> mn >> mult >> t >> expected_name;
            Model model{scale, SizeRule{mn, mult, std::nullopt, std::nullopt}, toy_model(scale)};
            Image result = upscale_image(model, image, opt(t), std::nullopt, 1);
            Image expected = read_png(dir / expected_name);
            // the pixels before encoding: RGB (model, blending, gray) and alpha (bicubic)
            const float rgb_diff = max_diff(result.rgb, read_f32(dir / (expected_name + ".rgb.f32")));
            CHECK_MSG(rgb_diff <= 1e-6f, expected_name + ": RGB before encoding differs by " + std::to_string(rgb_diff));
            if (expected.has_alpha()) {
                const float alpha_diff = max_diff(result.alpha, read_f32(dir / (expected_name + ".alpha.f32")));
                CHECK_MSG(alpha_diff <= 1e-5f, expected_name + ": alpha differs by " + std::to_string(alpha_diff));
            }
            // what would be written: the encoded integers, compared with the Python side's file
            const fs::path mine = fs::temp_directory_path() / ("adaptsr-native-" + std::to_string(::getpid()) + ".png");
            write_png(result, mine, true);
            Image written = read_png(mine);
            fs::remove(mine);
            CHECK_MSG(written.height == expected.height && written.width == expected.width, expected_name + ": size");
            CHECK_MSG(written.bit_depth == expected.bit_depth && written.gray == expected.gray &&
                          written.has_alpha() == expected.has_alpha(),
                      expected_name + ": format");
            // encoded: RGB exactly; alpha within one step (rounding of OpenCV's own float order)
            const float step = 1.0f / (expected.bit_depth == 16 ? 65535.0f : 255.0f);
            CHECK_MSG(max_diff(written.rgb, expected.rgb) == 0.0f,
                      expected_name + ": RGB differs by " + std::to_string(max_diff(written.rgb, expected.rgb) / step) +
                          " steps");
            if (expected.has_alpha())
                CHECK_MSG(max_diff(written.alpha, expected.alpha) <= step * 1.01f,
                          expected_name + ": alpha differs by " +
                              std::to_string(max_diff(written.alpha, expected.alpha) / step) + " steps");
        }
        ++cases;
    }
    return cases;
}

// The sidecar Python writes (EngineSidecar.to_json) read by the native reader: every key it
// uses found, with the value Python meant, and nothing noted as malformed.
int sidecar_cases(const fs::path& dir) {
    std::ifstream in(dir / "sidecar.txt");
    CHECK_MSG(in.good(), "no sidecar.txt in " + dir.string());
    std::map<std::string, std::string> want;
    std::string line;
    while (std::getline(in, line)) {
        const auto space = line.find(' ');
        if (space != std::string::npos) want[line.substr(0, space)] = line.substr(space + 1);
    }
    const Sidecar s = read_sidecar(dir / "m.engine");
    CHECK_MSG(s.present && s.notes.empty(), "the Python sidecar has malformed keys");
    CHECK(s.tensorrt_version == want["tensorrt_version"]);
    std::istringstream cc(want["compute_capability"]);
    int major = 0, minor = 0;
    cc >> major >> minor;
    CHECK_MSG(s.compute_capability == std::make_pair(major, minor), "compute capability");
    CHECK(s.gpu_name == want["gpu"] && s.precision == want["precision"]);
    CHECK(s.scale == std::stoi(want["scale"]));
    CHECK(s.min_size == std::stoi(want["min_size"]) && s.multiple_of == std::stoi(want["multiple_of"]));
    CHECK(s.version == std::stoi(want["version"]));
    CHECK_MSG(s.version == kSidecarVersion,
              "Python writes EngineSidecar version " + want["version"] + ", the native reader was checked against " +
                  std::to_string(kSidecarVersion) + ": check serve/native/src/sidecar.hpp's keys, then raise kSidecarVersion");
    const Platform same{parse_version(want["tensorrt_version"]), {major, minor}, want["gpu"]};
    CHECK_MSG(check_sidecar(s, "m.engine", same).empty(), "warnings for the engine's own machine");
    return 1;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: test_fixtures FIXTURE_DIR\n");
        return 2;
    }
    const fs::path dir = argv[1];
    int tiling = 0, images = 0, sidecars = 0;
    try {
        tiling = tiling_cases(dir);
        images = image_cases(dir);
        sidecars = sidecar_cases(dir);
    } catch (const std::exception& e) {
        check::fail(__FILE__, __LINE__, std::string("unexpected exception: ") + e.what());
    }
    std::printf("compared %d tiling cases, %d image cases and %d sidecar with the Python implementation\n", tiling,
                images, sidecars);
    CHECK(tiling >= 20);
    CHECK(images >= 30);
    CHECK(sidecars == 1);
    return check::result("test_fixtures");
}
