#include "args.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <map>

#include <CLI/CLI.hpp>

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

// std::from_chars: no locale, no silent wrap-around; a leading '+' is allowed as on the shell.
int to_int(const std::string& option, const std::string& text) {
    const char* first = text.data();
    const char* last = text.data() + text.size();
    if (text.size() > 1 && text[0] == '+' && std::isdigit(static_cast<unsigned char>(text[1]))) ++first;
    int value = 0;
    const auto [end, ec] = std::from_chars(first, last, value);
    if (ec == std::errc::result_out_of_range) throw UsageError(option + " " + text + " is out of range");
    if (ec != std::errc() || end != last) throw UsageError(option + " expects an integer, got '" + text + "'");
    return value;
}

bool is_png(const fs::path& path) {
    std::string ext = path.extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
    return ext == ".png";
}


// CLI11's parse, its errors turned into one UsageError line each; false for --help.
bool parse_or_explain(CLI::App& app, const std::vector<std::string>& args) {
    std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes the last first
    try {
        app.parse(reversed);
    } catch (const CLI::CallForHelp&) {
        return false;
    } catch (const CLI::ExtrasError& e) {  // unknown options; CLI11 also keeps a `--` among them
        for (const auto& arg : app.remaining())
            if (arg != "--") throw UsageError("unknown option " + arg.substr(0, arg.find('=')));
        throw UsageError(e.what());
    } catch (const CLI::ArgumentMismatch& e) {
        // CLI11 takes the word after an option as its value whatever it is, so a missing value
        // is always the last word; else a flag was given a value (`--force=x`)
        const std::string last = args.empty() ? "" : args.back().substr(0, args.back().find('='));
        const CLI::Option* option = app.get_option_no_throw(last);
        if (option && option->get_items_expected_min() > 0) throw UsageError(last + " needs a value");
        for (const auto& arg : args)
            for (const std::string flag : {"--force", "--version"})
                if (arg.rfind(flag + "=", 0) == 0) throw UsageError(flag + " takes no value");
        throw UsageError(e.what());
    } catch (const CLI::ParseError& e) {
        throw UsageError(e.what());
    }
    return true;
}

}  // namespace

// CLI11 splits the command line (`--name value`, `--name=value`, `-o DIR`, `--`, inputs
// anywhere); numbers are read as text and converted here, so every message names the option.
Options parse_args(const std::vector<std::string>& args) {
    Options o;
    CLI::App app{"", "adaptsr-trt"};
    app.set_help_flag("-h,--help");  // the caller prints kUsage
    app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    std::string engine, out_dir;
    app.add_option("--engine", engine);
    app.add_option("-o,--out", out_dir);
    std::map<std::string, std::string> numbers;  // option -> its text, when given
    for (const char* name : {"--tile", "--overlap", "--batch", "--runs", "--warmup"})
        app.add_option(name, numbers[name]);
    app.add_flag("--force", o.force)->disable_flag_override();
    app.add_flag("--version", o.version)->disable_flag_override();
    app.add_option("inputs", o.inputs);
    if (!parse_or_explain(app, args)) {
        o.help = true;
        return o;
    }
    if (o.version) return o;
    for (const char* name : {"--engine", "--out"})
        if (app.count(name) > 1) throw UsageError(std::string(name) + " given twice");
    o.engine = engine;
    o.out_dir = out_dir;
    auto number = [&](const char* name) { return to_int(name, numbers[name]); };
    if (app.count("--tile")) o.tile = number("--tile");
    if (app.count("--overlap")) o.overlap = number("--overlap");
    if (app.count("--batch")) o.batch = number("--batch");
    if (app.count("--runs")) o.runs = number("--runs");
    if (app.count("--warmup")) o.warmup = number("--warmup");
    if (o.engine.empty()) throw UsageError("--engine FILE is required");
    if (o.out_dir.empty()) throw UsageError("--out DIR is required");
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
