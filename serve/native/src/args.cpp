#include "args.hpp"

#include <algorithm>
#include <cctype>
#include <climits>
#include <map>

namespace fs = std::filesystem;

namespace adaptsr {

const char* const kUsage =
    "usage: adaptsr-trt --engine FILE --out DIR [options] INPUT...\n"
    "\n"
    "Upscale PNG images (files, or folders of them) with a TensorRT engine built by\n"
    "`adapt export trt`, keeping names, bit depth, gray and alpha; prints latency percentiles.\n"
    "\n"
    "  --engine FILE    serialized TensorRT engine (.engine/.plan/.trt); its sidecar\n"
    "                   <name>.engine.json is checked when present\n"
    "  --out, -o DIR    output folder (created when missing)\n"
    "  --tile N         tile side in input pixels; 0 = whole image at once\n"
    "                   [default: 512, or the engine's static input]\n"
    "  --overlap N      overlap between tiles in input pixels [tile/32]\n"
    "  --batch N        tiles per engine call [1]\n"
    "  --runs N         timed upscales of each image, for latency [1]\n"
    "  --warmup N       untimed upscales of each image before the timed ones [0]\n"
    "  --force          overwrite existing outputs (else they are skipped)\n"
    "  --help, --version\n";

namespace {

int parse_int(const std::string& option, const std::string& text) {
    size_t i = text.size() > 1 && (text[0] == '-' || text[0] == '+') ? 1 : 0;
    if (i == text.size() || !std::all_of(text.begin() + i, text.end(), [](unsigned char c) { return std::isdigit(c); }))
        throw UsageError(option + " expects an integer, got '" + text + "'");
    long long value = 0;
    for (size_t k = i; k < text.size(); ++k) {
        value = value * 10 + (text[k] - '0');
        if (value > INT_MAX) throw UsageError(option + " " + text + " is out of range");
    }
    return static_cast<int>(text[0] == '-' ? -value : value);
}

bool is_png(const fs::path& path) {
    std::string ext = path.extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
    return ext == ".png";
}

}  // namespace

Options parse_args(const std::vector<std::string>& args) {
    Options o;
    bool engine = false, out = false, only_inputs = false;
    for (size_t i = 0; i < args.size(); ++i) {
        std::string arg = args[i];
        if (only_inputs || arg.empty() || arg[0] != '-' || arg == "-") {
            o.inputs.push_back(arg);
            continue;
        }
        if (arg == "--") {
            only_inputs = true;
            continue;
        }
        std::string name = arg, value;
        bool inline_value = false;
        if (auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
            name = arg.substr(0, eq);
            value = arg.substr(eq + 1);
            inline_value = true;
        }
        if (name == "--help" || name == "-h") {
            o.help = true;
            return o;
        }
        if (name == "--version") {
            o.version = true;
            return o;
        }
        if (name == "--force") {
            if (inline_value) throw UsageError("--force takes no value");
            o.force = true;
            continue;
        }
        static const char* const with_value[] = {"--engine", "--out", "-o", "--tile", "--overlap", "--batch", "--runs", "--warmup"};
        if (std::find(std::begin(with_value), std::end(with_value), name) == std::end(with_value))
            throw UsageError("unknown option " + name + " (see --help)");
        if (!inline_value) {
            if (i + 1 >= args.size()) throw UsageError(name + " needs a value");
            value = args[++i];
        }
        if (name == "--engine") {
            if (engine) throw UsageError("--engine given twice");
            o.engine = value;
            engine = true;
        } else if (name == "--out" || name == "-o") {
            if (out) throw UsageError("--out given twice");
            o.out_dir = value;
            out = true;
        } else if (name == "--tile") {
            o.tile = parse_int(name, value);
        } else if (name == "--overlap") {
            o.overlap = parse_int(name, value);
        } else if (name == "--batch") {
            o.batch = parse_int(name, value);
        } else if (name == "--runs") {
            o.runs = parse_int(name, value);
        } else if (name == "--warmup") {
            o.warmup = parse_int(name, value);
        }
    }
    if (!engine || o.engine.empty()) throw UsageError("--engine FILE is required");
    if (!out || o.out_dir.empty()) throw UsageError("--out DIR is required");
    if (o.inputs.empty()) throw UsageError("give at least one input image or folder");
    if (o.batch < 1) throw UsageError("--batch must be >= 1, not " + std::to_string(o.batch));
    if (o.runs < 1) throw UsageError("--runs must be >= 1, not " + std::to_string(o.runs));
    if (o.warmup < 0) throw UsageError("--warmup must be >= 0, not " + std::to_string(o.warmup));
    return o;
}

std::vector<fs::path> collect_inputs(const std::vector<std::string>& inputs, int* skipped) {
    std::vector<fs::path> files;
    int other = 0;
    for (const auto& item : inputs) {
        fs::path path(item);
        std::error_code ec;
        if (fs::is_directory(path, ec)) {
            std::vector<fs::path> found;
            for (const auto& entry : fs::directory_iterator(path, ec)) {
                if (!entry.is_regular_file(ec)) continue;
                if (is_png(entry.path())) found.push_back(entry.path());
                else ++other;
            }
            if (ec) throw UserError("cannot list " + path.string() + ": " + ec.message());
            std::sort(found.begin(), found.end());
            files.insert(files.end(), found.begin(), found.end());
        } else if (fs::exists(path, ec)) {
            if (!is_png(path)) throw UserError(path.string() + " is not a PNG file (adaptsr-trt reads PNG only)");
            files.push_back(path);
        } else {
            throw UserError("no such file or folder: " + path.string());
        }
    }
    if (skipped) *skipped = other;
    if (files.empty()) throw UserError("no PNG images found in the given inputs");
    return files;
}

std::vector<fs::path> output_paths(const std::vector<fs::path>& files, const fs::path& out_dir) {
    std::error_code ec;
    if (fs::exists(out_dir, ec) && !fs::is_directory(out_dir, ec))
        throw UserError("--out " + out_dir.string() + " is a file, expected a folder");
    std::vector<fs::path> outs;
    std::map<fs::path, fs::path> seen;
    for (const auto& src : files) {
        fs::path dst = out_dir / src.filename();
        if (fs::exists(dst, ec) && fs::equivalent(dst, src, ec))
            throw UserError("--out " + out_dir.string() + " holds the input " + src.string() + ": choose another folder");
        auto it = seen.find(dst);
        if (it != seen.end() && !fs::equivalent(it->second, src, ec))
            throw UserError(it->second.string() + " and " + src.string() + " would both be written to " + dst.string());
        seen.emplace(dst, src);
        outs.push_back(dst);
    }
    return outs;
}

}  // namespace adaptsr
