// Unit tests of everything that needs no GPU: JSON and sidecar, checks against the platform,
// arguments, percentiles, fp16 conversion, atomic outputs, PNG round trips, tiling properties
// and the whole command with a CPU model.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <fstream>
#include <sstream>
#include <tuple>

#include "args.hpp"
#include "check.hpp"
#include "cli.hpp"
#include "fileio.hpp"
#include "half.hpp"
#include "image.hpp"
#include "sidecar.hpp"
#include "stats.hpp"
#include "tiling.hpp"
#include "upscale.hpp"

using namespace adaptsr;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir(const std::string& name) {
    fs::path dir = fs::temp_directory_path() / ("adaptsr-test-" + std::to_string(getpid()) + "-" + name);
    fs::remove_all(dir);
    fs::create_directories(dir);
    return dir;
}

void write_text(const fs::path& path, const std::string& text) { std::ofstream(path) << text; }

// JSON as the sidecar reader sees it (nlohmann-json underneath): escapes, numbers, syntax errors.
void test_json() {
    Sidecar s = parse_sidecar(R"({"a": [1, -2.5e1, true, null], "gpu": "x\u00e9\n\"", "o": {},
        "precision": "\ud83d\ude00", "metadata": {"scale": 4.0}})", "x.json");
    CHECK(s.gpu_name == std::string("x\xc3\xa9\n\""));
    CHECK(s.precision == std::string("\xf0\x9f\x98\x80"));
    CHECK(s.scale == 4 && s.notes.empty());
    CHECK_THROWS(UserError, parse_sidecar(R"({"metadata": {"scale": -2.5e1}})", "x.json"), "scale=-25 must be positive");
    CHECK_THROWS(UserError, parse_sidecar(R"({"metadata": {"scale": 2.5}})", "x.json"), "scale is not an integer");
    CHECK_THROWS(UserError, parse_sidecar(R"({"metadata": {"scale": true}})", "x.json"), "scale is not an integer");
    for (const char* bad : {"", "{", "[1,]", "{\"a\" 1}", "01x", "\"\\q\"", "[1] 2", "tru", "\"a\nb\"", "{'a': 1}"})
        CHECK_THROWS(UserError, parse_sidecar(bad, "x.json"), "cannot read x.json: not JSON (");
    CHECK_THROWS(UserError, parse_sidecar("{\n  \"a\": }", "x.json"), "line 2, column");  // says where
    CHECK_THROWS(UserError, parse_sidecar(std::string(100, '['), "x.json"), "not JSON");
    CHECK_THROWS(UserError, parse_sidecar(R"({"build_seconds": 1e500})", "x.json"), "not JSON (number overflow");
    CHECK_THROWS(UserError, parse_sidecar(R"({"verify": {"min_psnr_db": Infinity}})", "x.json"), "not JSON");
    CHECK_THROWS(UserError, parse_sidecar(R"({"metadata": {"size_requirements": "{\"min_size\": 1e999}"}})", "x.json"),
                 "size_requirements is not JSON");
    std::string error;  // one line, whatever the input
    try {
        parse_sidecar("{\"a\": \"b\nc\"}", "x.json");
    } catch (const UserError& e) {
        error = e.what();
    }
    CHECK_MSG(!error.empty() && error.find('\n') == std::string::npos, error);
}

void test_sidecar() {
    // the keys `adapt export trt` writes today
    Sidecar s = parse_sidecar(R"({"engine": "m.engine", "tensorrt_version": "10.3.0", "precision": "fp16",
        "profile": {"name": "input", "min": [1,3,16,16], "opt": [1,3,256,256], "max": [1,3,512,512]},
        "metadata": {"scale": "4", "size_requirements": "{\"min_size\": 8, \"multiple_of\": 4}"}})",
                              "m.engine.json");
    CHECK(s.present && s.tensorrt_version == std::string("10.3.0") && s.precision == std::string("fp16"));
    CHECK(s.scale == 4 && s.min_size == 8 && s.multiple_of == 4);
    CHECK(!s.compute_capability && s.notes.empty() && !s.version);
    CHECK(parse_sidecar(R"({"version": 2})", "x.json").version == 2);
    for (const char* version : {"\"2\"", "2.5", "-1", "99999999999"})
        CHECK_MSG(!parse_sidecar(std::string(R"({"version": )") + version + "}", "x.json").version, version);
    // compute capability: the one spelling Python writes, "8.7"; any other is a note, not a check
    Sidecar t = parse_sidecar(R"({"compute_capability": "8.7", "gpu": "Orin"})", "x.json");
    CHECK(t.compute_capability == std::make_pair(8, 7) && t.gpu_name == std::string("Orin"));
    for (const char* cc : {"[8, 7]", R"({"major": 8, "minor": 7})", "8.7", R"("8.7.1")", R"("08.7")"}) {
        Sidecar u = parse_sidecar(std::string(R"({"compute_capability": )") + cc + "}", "x.json");
        CHECK_MSG(!u.compute_capability && u.notes.size() == 1, cc);
    }
    Sidecar g = parse_sidecar(R"({"gpu": {"name": "Orin", "compute_capability": "8.7"}})", "x.json");
    CHECK(!g.compute_capability && !g.gpu_name);
    Sidecar odd = parse_sidecar(R"({"compute_capability": "eight", "tensorrt_version": 10})", "x.json");
    CHECK(!odd.compute_capability && !odd.tensorrt_version && odd.notes.size() == 2);
    CHECK_THROWS(UserError, parse_sidecar("{", "x.json"), "cannot read x.json: not JSON");
    CHECK_THROWS(UserError, parse_sidecar("[]", "x.json"), "expected a JSON object");
    CHECK_THROWS(UserError, parse_sidecar(R"({"metadata": {"size_requirements": "{\"min_size\": 0}"}})", "x.json"),
                 "min_size=0 must be positive");
    CHECK_THROWS(UserError, parse_sidecar(R"({"metadata": {"size_requirements": "nope"}})", "x.json"),
                 "size_requirements is not JSON");
    CHECK_THROWS(UserError, parse_sidecar(R"({"metadata": {"scale": "x2"}})", "x.json"), "is not an integer");

    CHECK(sidecar_path("a/m.engine") == fs::path("a/m.engine.json"));
    CHECK(sidecar_path("a/m.plan") == fs::path("a/m.engine.json"));  // as artifacts.engine_info_path
    CHECK((parse_version("10.3.0.26") == std::vector<int>{10, 3, 0, 26}));
    CHECK(parse_version("v10").empty() && parse_version("-10").empty() && parse_version("").empty());
    CHECK((parse_version("10.3.") == std::vector<int>{10, 3} && parse_version("8.7-rc") == std::vector<int>{8, 7}));
    CHECK((parse_version("10.99999999999") == std::vector<int>{10}));

    const Platform orin{{10, 3, 0}, {8, 7}, "Orin"};
    Sidecar ok = parse_sidecar(R"({"tensorrt_version": "10.3.0.30", "compute_capability": "8.7"})", "m.engine.json");
    CHECK(check_sidecar(ok, "m.engine", orin).empty());  // the build number does not matter
    Sidecar other_trt = parse_sidecar(R"({"tensorrt_version": "10.7.0", "compute_capability": "8.7"})", "j");
    CHECK_THROWS(UserError, check_sidecar(other_trt, "m.engine", orin),
                 "m.engine was built with TensorRT 10.7.0, this is TensorRT 10.3.0");
    Sidecar other_gpu = parse_sidecar(R"({"tensorrt_version": "10.3", "gpu": "RTX 4090",
        "compute_capability": "8.9"})", "j");
    CHECK_THROWS(UserError, check_sidecar(other_gpu, "m.engine", orin),
                 "built for compute capability 8.9 (RTX 4090), this GPU is 8.7 (Orin)");
    Sidecar old = parse_sidecar(R"({"tensorrt_version": "10.3.0"})", "m.engine.json");
    auto warnings = check_sidecar(old, "m.engine", orin);
    CHECK(warnings.size() == 1 && warnings[0].find("no compute_capability") != std::string::npos);
    Sidecar none;
    none.path = "m.engine.json";
    CHECK(check_sidecar(none, "m.engine", orin).size() == 1);

    const fs::path dir = temp_dir("sidecar");
    CHECK(!read_sidecar(dir / "m.engine").present);
    write_text(dir / "m.engine.json", R"({"metadata": {"size_requirements": "{\"multiple_of\": 8}"}})");
    Sidecar read = read_sidecar(dir / "m.engine");
    CHECK(read.present && read.multiple_of == 8 && read.min_size == 1);
    fs::remove_all(dir);
}

void test_args() {
    Options o = parse_args({"--engine", "m.engine", "-o", "out", "--tile=256", "--overlap", "8", "--batch", "4",
                            "--runs", "5", "--warmup", "2", "--force", "a.png", "--", "--b.png"});
    CHECK(o.engine == "m.engine" && o.out_dir == "out" && o.tile == 256 && o.overlap == 8);
    CHECK(o.batch == 4 && o.runs == 5 && o.warmup == 2 && o.force);
    CHECK((o.inputs == std::vector<std::string>{"a.png", "--b.png"}));
    Options d = parse_args({"--engine", "m", "--out", "o", "x.png"});
    CHECK(!d.tile && !d.overlap && d.batch == 1 && d.runs == 1 && d.warmup == 0 && !d.force);
    CHECK(parse_args({"--help"}).help && parse_args({"--version"}).version);
    CHECK(parse_args({"--engine", "m", "--out", "o", "--tile", "-1", "x.png"}).tile == -1);  // refused later
    CHECK_THROWS(UsageError, parse_args({"--out", "o", "x.png"}), "--engine FILE is required");
    CHECK_THROWS(UsageError, parse_args({"--engine", "m", "x.png"}), "--out DIR is required");
    CHECK_THROWS(UsageError, parse_args({"--engine", "m", "--out", "o"}), "at least one input");
    CHECK_THROWS(UsageError, parse_args({"--engine", "m", "--out", "o", "--tile", "big", "x"}),
                 "--tile expects an integer, got 'big'");
    CHECK_THROWS(UsageError, parse_args({"--engine", "m", "--out", "o", "--tile", "99999999999", "x"}), "out of range");
    CHECK_THROWS(UsageError, parse_args({"--engine", "m", "--out", "o", "--batch", "0", "x"}), "--batch must be >= 1");
    CHECK_THROWS(UsageError, parse_args({"--engine", "m", "--out", "o", "--runs", "0", "x"}), "--runs must be >= 1");
    CHECK_THROWS(UsageError, parse_args({"--engine", "m", "--out", "o", "--frobnicate", "x"}), "unknown option");
    CHECK_THROWS(UsageError, parse_args({"--engine", "m", "--out", "o", "--engine", "n", "x"}), "given twice");
    CHECK_THROWS(UsageError, parse_args({"--engine"}), "--engine needs a value");
    CHECK_THROWS(UsageError, parse_args({"--engine", "m", "x", "-o"}), "-o needs a value");
    CHECK_THROWS(UsageError, parse_args({"--engine", "m", "-o", "o", "x", "--tile="}), "--tile needs a value");
    CHECK_THROWS(UsageError, parse_args({"--engine", "m", "-o", "o", "--force=no", "x"}), "--force takes no value");
    CHECK_THROWS(UsageError, parse_args({"--engine", "m", "-o", "o", "--frob=3", "x"}), "unknown option --frob");
    CHECK_THROWS(UsageError, parse_args({"--engine", "m", "-o", "o", "-x", "x"}), "unknown option -x");
    CHECK_THROWS(UsageError, parse_args({"--engine", "m", "-o", "o", "--tile", "1e3", "x"}), "got '1e3'");
    CHECK_THROWS(UsageError, parse_args({"--engine", "m", "-o", "o", "--tile", "+-3", "x"}), "got '+-3'");
    CHECK_THROWS(UsageError, parse_args({"--engine", "m", "-o", "o", "--tile", "-2147483649", "x"}), "out of range");
    CHECK_THROWS(UsageError, parse_args({"--engine", "m", "-o", "o", "--out", "p", "x"}), "--out given twice");
    CHECK_THROWS(UsageError, parse_args({"--engine", "", "-o", "o", "x"}), "--engine FILE is required");
    // the last --tile counts; '-' and anything after `--` are inputs; a value may start with '-' or '+'
    Options e = parse_args({"--engine", "m", "-o", "o", "--tile", "1", "--tile", "2", "--overlap=+8", "-", "--",
                            "--force", "--"});
    CHECK(e.tile == 2 && e.overlap == 8 && !e.force);
    CHECK((e.inputs == std::vector<std::string>{"-", "--force", "--"}));
    CHECK(parse_args({"--engine", "m", "-o", "o", "x", "--help", "--frob"}).help);

    const fs::path dir = temp_dir("args");
    fs::create_directories(dir / "in");
    for (const char* name : {"b.png", "a.PNG", "c.jpg"}) write_text(dir / "in" / name, "x");
    write_text(dir / "z.png", "x");
    int skipped = -1;
    auto files = collect_inputs({(dir / "z.png").string(), (dir / "in").string()}, &skipped);
    CHECK((files == std::vector<fs::path>{dir / "z.png", dir / "in" / "a.PNG", dir / "in" / "b.png"}));
    CHECK(skipped == 1);
    CHECK_THROWS(UserError, collect_inputs({(dir / "in" / "c.jpg").string()}, nullptr), "is not a PNG file");
    CHECK_THROWS(UserError, collect_inputs({(dir / "nope").string()}, nullptr), "no such file or folder");
    auto outs = output_paths(files, dir / "out");
    CHECK(outs[0] == dir / "out" / "z.png");
    CHECK_THROWS(UserError, output_paths({dir / "z.png"}, dir), "holds the input");
    write_text(dir / "in" / "z.png", "y");
    CHECK_THROWS(UserError, output_paths({dir / "z.png", dir / "in" / "z.png"}, dir / "out"), "would both be written");
    CHECK_THROWS(UserError, output_paths(files, dir / "z.png"), "is a file, expected a folder");
    fs::remove_all(dir);
}

void test_stats() {
    std::vector<double> v{10, 1, 9, 2, 8, 3, 7, 4, 6, 5};  // numpy.percentile: 5.5, 9.1, 9.91
    CHECK(std::fabs(percentile(v, 50) - 5.5) < 1e-12);
    CHECK(std::fabs(percentile(v, 90) - 9.1) < 1e-12);
    CHECK(std::fabs(percentile(v, 99) - 9.91) < 1e-12);
    CHECK(percentile({3.0}, 90) == 3.0);
    LatencySummary s = summarize(v);
    CHECK(s.count == 10 && s.mean == 5.5 && s.min == 1 && s.max == 10);
    CHECK(describe(s).find("p90 9.100 ms") != std::string::npos);
}

void test_half() {
    // bit patterns of IEEE binary16
    CHECK(float_to_half(1.0f) == 0x3c00 && float_to_half(-2.0f) == 0xc000 && float_to_half(0.0f) == 0);
    CHECK(float_to_half(65504.0f) == 0x7bff && float_to_half(65520.0f) == 0x7c00 && float_to_half(1e9f) == 0x7c00);
    CHECK(float_to_half(0.1f) == 0x2e66);                    // rounded to nearest
    CHECK(float_to_half(std::ldexp(1.0f, -24)) == 0x0001);  // the smallest subnormal
    CHECK(float_to_half(std::ldexp(1.0f, -25)) == 0x0000);  // a tie, to even
    CHECK(float_to_half(std::ldexp(1.5f, -25)) == 0x0001);
    CHECK(float_to_half(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);  // tie between 1 and 1+2^-10: even
    CHECK(float_to_half(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);
    CHECK(float_to_half(INFINITY) == 0x7c00 && (float_to_half(NAN) & 0x7fff) > 0x7c00);
    CHECK(half_to_float(0x3555) == 0x3555 / 1.0f * 0 + 0.333251953125f);
    CHECK(half_to_float(0x0001) == std::ldexp(1.0f, -24) && half_to_float(0x7bff) == 65504.0f);
    CHECK(std::isinf(half_to_float(0xfc00)) && half_to_float(0xfc00) < 0 && std::isnan(half_to_float(0x7e00)));
    int mismatches = 0;  // every finite half survives the round trip
    for (uint32_t h = 0; h < 0x10000; ++h)
        if ((h & 0x7c00) != 0x7c00 && float_to_half(half_to_float(static_cast<uint16_t>(h))) != h) ++mismatches;
    CHECK(mismatches == 0);
}

void test_fileio() {
    const fs::path dir = temp_dir("fileio");
    const fs::path target = dir / "sub" / "out.png";
    write_atomically(target, false, [](const fs::path& tmp) { write_text(tmp, "first"); });
    CHECK(fs::exists(target));
    CHECK_THROWS(UserError, write_atomically(target, false, [](const fs::path&) {}), "already exists (use --force");
    // a failed write leaves the old file and no temporary behind
    CHECK_THROWS(UserError, write_atomically(target, true, [](const fs::path& tmp) {
        write_text(tmp, "half");
        throw UserError("disk full");
    }), "disk full");
    std::ifstream in(target);
    std::string text;
    in >> text;
    CHECK(text == "first");
    CHECK(std::distance(fs::directory_iterator(dir / "sub"), fs::directory_iterator()) == 1);
    write_atomically(target, true, [](const fs::path& tmp) { write_text(tmp, "second"); });
    CHECK(std::distance(fs::directory_iterator(dir / "sub"), fs::directory_iterator()) == 1);
    CHECK_THROWS(UserError, check_writable(dir / "sub", true), "is a directory");
    CHECK_THROWS(UserError, check_writable(target / "x.png", true), "is not a directory");
    fs::remove_all(dir);
}

Image pattern(int h, int w, int bits, bool gray, bool alpha) {
    Image im;
    im.height = h;
    im.width = w;
    im.bit_depth = bits;
    im.gray = gray;
    const float top = bits == 16 ? 65535.0f : 255.0f;
    for (int i = 0; i < h * w; ++i) {
        for (int c = 0; c < 3; ++c) im.rgb.push_back(static_cast<float>(((gray ? 0 : c) * 7919 + i * 104729) % static_cast<int>(top + 1)) / top);
        if (alpha) im.alpha.push_back(static_cast<float>((i * 31) % static_cast<int>(top + 1)) / top);
    }
    return im;
}

void test_png() {
    const fs::path dir = temp_dir("png");
    for (int bits : {8, 16})
        for (bool gray : {false, true})
            for (bool alpha : {false, true}) {
                Image im = pattern(7, 5, bits, gray, alpha);
                const fs::path path = dir / ("p" + std::to_string(bits) + (gray ? "g" : "c") + (alpha ? "a" : "") + ".png");
                write_png(im, path, false);
                Image back = read_png(path);
                CHECK(back.height == 7 && back.width == 5 && back.bit_depth == bits);
                CHECK(back.gray == (gray && !alpha));  // gray+alpha is written as RGBA, as OpenCV does
                CHECK(back.has_alpha() == alpha);
                CHECK_MSG(back.rgb == im.rgb && back.alpha == im.alpha, path.string());  // exact: on the grid
            }
    write_text(dir / "bad.png", "not a png at all");
    CHECK_THROWS(UserError, read_png(dir / "bad.png"), "corrupt or not a PNG");
    {  // a valid signature and a truncated file: libpng's error, no crash
        std::ofstream f(dir / "cut.png", std::ios::binary);
        f << "\x89PNG\r\n\x1a\n" << std::string("\0\0\0\x0dIHDR", 8);
    }
    CHECK_THROWS(UserError, read_png(dir / "cut.png"), "cannot read image");
    CHECK_THROWS(UserError, read_png(dir / "missing.png"), "no such image");
    CHECK(to_uint(0.5f, 8) == 128 && to_uint(-1.0f, 8) == 0 && to_uint(2.0f, 16) == 65535);
    // bicubic of a constant is the constant; of a ramp, a ramp between the pixels
    std::vector<float> flat(12, 0.25f);
    for (float v : resize_cubic(flat, 3, 4, 3)) CHECK(std::fabs(v - 0.25f) < 1e-6f);
    fs::remove_all(dir);
}

void test_tiling_properties() {
    // weights are a partition of unity wherever tiles overlap, for several layouts
    for (auto [length, tile, overlap, scale] : {std::array<int, 4>{101, 32, 4, 2}, {500, 64, 16, 1}, {77, 20, 0, 3}}) {
        auto [size, starts] = axis_tiles(length, tile, overlap);
        auto weights = axis_weights(starts, size, length, scale);
        std::vector<double> sum(static_cast<size_t>(length) * scale, 0.0);
        for (size_t i = 0; i < starts.size(); ++i)
            for (int k = 0; k < size * scale; ++k) sum[starts[i] * scale + k] += weights[i][k];
        double worst = 0;
        for (double v : sum) worst = std::max(worst, std::fabs(v - 1.0));
        CHECK_MSG(worst < 1e-6, "partition of unity off by " + std::to_string(worst));
        CHECK(starts.front() == 0 && starts.back() + size == length);
    }
    CHECK(reflect_index(-1, 5) == 1 && reflect_index(5, 5) == 3 && reflect_index(9, 5) == 1 && reflect_index(7, 1) == 0);
    // a model that only repeats pixels gives the untiled result exactly, whatever the tiling
    Planar image{1, 45, 31, {}};
    for (int i = 0; i < 45 * 31; ++i) image.data.push_back(static_cast<float>(i % 17) / 16.0f);
    RunTiles nearest = [](const float* in, int n, int c, int h, int w, float* out) {
        for (int k = 0; k < n * c; ++k)
            for (int y = 0; y < 2 * h; ++y)
                for (int x = 0; x < 2 * w; ++x) out[(static_cast<size_t>(k) * 2 * h + y) * 2 * w + x] = in[(k * h + y / 2) * w + x / 2];
    };
    Planar whole = tiled_upscale(nearest, image, 2, SizeRule{}, 0, std::nullopt, 1);
    Planar tiled = tiled_upscale(nearest, image, 2, SizeRule{}, 16, 4, 3);
    CHECK(whole.height == 90 && whole.width == 62 && tiled.data.size() == whole.data.size());
    float worst = 0;
    for (size_t i = 0; i < whole.data.size(); ++i) worst = std::max(worst, std::fabs(whole.data[i] - tiled.data[i]));
    CHECK_MSG(worst < 1e-6f, "tiled differs from untiled by " + std::to_string(worst));
    CHECK_THROWS(UserError, tiled_upscale(nearest, image, 2, SizeRule{}, 16, 4, 0), "--batch must be >= 1");
}

void test_batches() {
    // tiles of 2 floats, the "engine" doubles them and records its batch sizes
    std::vector<float> in{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14};  // 7 tiles
    for (auto [fixed, max, sizes] : {std::tuple{0, 0, std::vector<int>{7}}, std::tuple{0, 3, std::vector<int>{3, 3, 1}},
                                     std::tuple{4, 0, std::vector<int>{4, 4}}}) {
        std::vector<int> calls;
        std::vector<float> out(in.size(), -1);
        run_in_batches(in.data(), 7, 2, 2, fixed, max, [&](const float* src, int n, float* dst) {
            calls.push_back(n);
            for (int i = 0; i < 2 * n; ++i) dst[i] = 2 * src[i];
            if (fixed && calls.size() == 2)  // the filled static batch: tiles 5, 6, 7, then 7 again
                CHECK(src[4] == 13 && src[6] == 13 && src[7] == 14);
        }, out.data());
        CHECK_MSG(calls == sizes, "batch sizes for fixed " + std::to_string(fixed) + ", max " + std::to_string(max));
        for (size_t i = 0; i < in.size(); ++i) CHECK(out[i] == 2 * in[i]);
    }
}

Backend cpu_backend(int* opened) {
    Backend b;
    b.model.scale = 2;
    b.model.rule = SizeRule{1, 4, std::nullopt, std::nullopt};
    b.model.run = [](const float* in, int n, int c, int h, int w, float* out) {
        for (int k = 0; k < n * c; ++k)
            for (int y = 0; y < 2 * h; ++y)
                for (int x = 0; x < 2 * w; ++x) out[(static_cast<size_t>(k) * 2 * h + y) * 2 * w + x] = in[(k * h + y / 2) * w + x / 2];
    };
    b.description = "cpu test model";
    b.take_gpu_ms = [] { return std::vector<double>{1.0, 3.0}; };
    ++*opened;
    return b;
}

void test_command() {
    const fs::path dir = temp_dir("command");
    fs::create_directories(dir / "in");
    write_png(pattern(9, 6, 16, true, false), dir / "in" / "a.png", false);
    write_png(pattern(5, 7, 8, false, true), dir / "in" / "b.png", false);
    write_text(dir / "in" / "c.png", "broken");
    int opened = 0;
    OpenBackend open = [&opened](const fs::path&) { return cpu_backend(&opened); };
    auto run = [&](std::vector<std::string> args, std::string* out_text = nullptr, std::string* err_text = nullptr) {
        std::ostringstream out, err;
        int rc = run_command(args, open, out, err, "test");
        if (out_text) *out_text = out.str();
        if (err_text) *err_text = err.str();
        return rc;
    };
    const std::string in = (dir / "in").string(), outdir = (dir / "out").string();
    std::string out, err;
    // one broken file fails, the others are written; exit 1 and a summary line
    CHECK(run({"--engine", "m.engine", "--out", outdir, "--runs", "3", "--warmup", "1", in}, &out, &err) == 1);
    CHECK_MSG(err.find("failed: " + (dir / "in" / "c.png").string()) != std::string::npos, err);
    CHECK_MSG(err.find("error: 1 of 3 image(s) failed") != std::string::npos, err);
    CHECK_MSG(out.find("wrote 2 image(s)") != std::string::npos, out);
    CHECK_MSG(out.find("end to end per image") != std::string::npos && out.find("(6)") != std::string::npos, out);
    CHECK_MSG(out.find("GPU compute per engine call") != std::string::npos && out.find("(12)") != std::string::npos, out);
    Image a = read_png(dir / "out" / "a.png");
    CHECK(a.height == 18 && a.width == 12 && a.bit_depth == 16 && a.gray);
    Image b = read_png(dir / "out" / "b.png");
    CHECK(b.height == 10 && b.width == 14 && b.bit_depth == 8 && b.has_alpha());
    // a rerun skips existing outputs; --force replaces them
    CHECK(run({"--engine", "m", "--out", outdir, (dir / "in" / "a.png").string()}, &out, &err) == 0);
    CHECK_MSG(err.find("skipped 1 existing output") != std::string::npos && out.find("wrote 0") != std::string::npos, err);
    CHECK(run({"--engine", "m", "--out", outdir, "--force", (dir / "in" / "a.png").string()}, &out, &err) == 0);
    CHECK(out.find("wrote 1") != std::string::npos);
    // bad options fail once, before any file, with one error line
    fs::remove_all(dir / "out");
    CHECK(run({"--engine", "m", "--out", outdir, "--tile", "16", "--overlap", "8", in}, &out, &err) == 1);
    CHECK_MSG(err.find("error: --overlap 8 must be less than half the tile (16)") != std::string::npos, err);
    CHECK(!fs::exists(dir / "out" / "a.png"));
    const int before = opened;
    CHECK(run({"--engine", "m", "--out", outdir, (dir / "nope.png").string()}, &out, &err) == 1);
    CHECK(err == "error: no such file or folder: " + (dir / "nope.png").string() + "\n");
    CHECK(opened == before);  // bad paths fail before the engine loads
    CHECK(run({"--engine", "m", in}, &out, &err) == 2 && err.rfind("error: --out DIR is required", 0) == 0);
    // command-line errors: one line, exit 2, before the engine opens
    CHECK(run({"--engine", "m", "-o", outdir, "--frobnicate=1", in}, &out, &err) == 2);
    CHECK_MSG(err == "error: unknown option --frobnicate (see adaptsr-trt --help)\n", err);
    CHECK(run({"--engine", "m", "-o", outdir, in, "--tile"}, &out, &err) == 2);
    CHECK_MSG(err == "error: --tile needs a value (see adaptsr-trt --help)\n", err);
    CHECK(opened == before);
    CHECK(run({"--help"}, &out, &err) == 0 && out.rfind("usage: adaptsr-trt", 0) == 0);
    fs::remove_all(dir);
}

}  // namespace

int main() {
    const std::pair<const char*, void (*)()> tests[] = {
        {"json", test_json},   {"sidecar", test_sidecar}, {"args", test_args},
        {"stats", test_stats}, {"half", test_half},       {"fileio", test_fileio},
        {"png", test_png},     {"tiling", test_tiling_properties}, {"batches", test_batches},
        {"command", test_command},
    };
    for (auto [name, test] : tests) {
        try {
            test();
        } catch (const std::exception& e) {
            check::fail(__FILE__, __LINE__, std::string(name) + ": unexpected exception: " + e.what());
        }
    }
    return check::result("test_core");
}
