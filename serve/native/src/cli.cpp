#include "cli.hpp"

#include <chrono>
#include <exception>
#include <new>

#include "args.hpp"
#include "stats.hpp"

namespace fs = std::filesystem;

namespace adaptsr {

namespace {

int upscale_files(const Options& o, const OpenBackend& open, std::ostream& out, std::ostream& err) {
    int other = 0;
    const auto files = collect_inputs(o.inputs, &other);  // bad paths fail before the engine loads
    const auto outs = output_paths(files, o.out_dir);
    if (other) err << "note: skipped " << other << " non-PNG file(s) in the input folders (PNG only)\n";
    Backend backend = open(o.engine);
    for (const auto& w : backend.warnings) err << "warning: " << w << "\n";
    if (!backend.description.empty()) err << backend.description << "\n";
    choose_tile(backend.model.rule, o.tile, o.overlap);  // bad options fail once, before any file
    std::vector<double> end_to_end, gpu;
    int written = 0, skipped = 0, failed = 0;
    for (size_t i = 0; i < files.size(); ++i) {
        std::error_code ec;
        if (fs::exists(outs[i], ec) && !o.force) {
            ++skipped;
            continue;
        }
        try {
            const Image image = read_png(files[i]);
            Image result;
            for (int run = 0; run < o.warmup + o.runs; ++run) {
                if (backend.take_gpu_ms) backend.take_gpu_ms();  // drop earlier (warm-up) times
                const auto start = std::chrono::steady_clock::now();
                result = upscale_image(backend.model, image, o.tile, o.overlap, o.batch);
                const std::chrono::duration<double, std::milli> took = std::chrono::steady_clock::now() - start;
                if (run < o.warmup) continue;
                end_to_end.push_back(took.count());
                if (backend.take_gpu_ms)
                    for (double ms : backend.take_gpu_ms()) gpu.push_back(ms);
            }
            write_png(result, outs[i], o.force);
            ++written;
        } catch (const UserError& e) {
            ++failed;
            err << "failed: " << files[i].string() << ": " << e.what() << "\n";
        }
    }
    out << "wrote " << written << " image(s) to " << o.out_dir.string() << " (x" << backend.model.scale << ")\n";
    if (!end_to_end.empty()) {
        out << "latency end to end per image (pixels in to pixels out: tiling, copies, engine, blending): "
            << describe(summarize(end_to_end)) << "\n";
        if (!gpu.empty()) out << "latency GPU compute per engine call (CUDA events): " << describe(summarize(gpu)) << "\n";
    }
    if (skipped) err << "note: skipped " << skipped << " existing output(s) (use --force to overwrite)\n";
    if (failed) {
        err << "error: " << failed << " of " << files.size() << " image(s) failed (listed above)\n";
        return 1;
    }
    return 0;
}

}  // namespace

int run_command(const std::vector<std::string>& args, const OpenBackend& open, std::ostream& out,
                std::ostream& err, const char* version) {
    try {
        const Options o = parse_args(args);
        if (o.help) {
            out << kUsage;
            return 0;
        }
        if (o.version) {
            out << "adaptsr-trt " << version << "\n";
            return 0;
        }
        return upscale_files(o, open, out, err);
    } catch (const UsageError& e) {
        err << "error: " << e.what() << " (see adaptsr-trt --help)\n";
        return 2;
    } catch (const UserError& e) {
        err << "error: " << e.what() << "\n";
        return 1;
    } catch (const std::bad_alloc&) {
        err << "error: out of memory\n";
        return 1;
    } catch (const std::filesystem::filesystem_error& e) {
        err << "error: " << e.what() << "\n";
        return 1;
    }
}

}  // namespace adaptsr
