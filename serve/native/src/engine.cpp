#include "engine.hpp"

#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>

#include "half.hpp"
#include "upscale.hpp"

namespace fs = std::filesystem;

namespace adaptsr {

namespace {

class Logger : public nvinfer1::ILogger {
  public:
    void log(Severity severity, const char* msg) noexcept override {
        if (severity <= Severity::kWARNING) std::fprintf(stderr, "TensorRT: %s\n", msg);
    }
};

void cuda_check(cudaError_t status, const char* what) {
    if (status != cudaSuccess)
        throw UserError(std::string(what) + " failed: " + cudaGetErrorString(status));
}

struct TrtDeleter {
    template <typename T>
    void operator()(T* p) const { delete p; }  // TensorRT 10 objects are deleted, not destroy()ed
};

std::string dims_text(const nvinfer1::Dims& d) {
    std::string out;
    for (int i = 0; i < d.nbDims; ++i) out += (i ? "x" : "") + std::to_string(d.d[i]);
    return out;
}

// Pinned host memory: copies to and from it run asynchronously at full speed.
struct HostBuffer {
    void* ptr = nullptr;
    size_t bytes = 0;
    void reserve(size_t n) {
        if (n <= bytes) return;
        if (ptr) cudaFreeHost(ptr);
        ptr = nullptr;
        cuda_check(cudaMallocHost(&ptr, n), "cudaMallocHost");
        bytes = n;
    }
    ~HostBuffer() {
        if (ptr) cudaFreeHost(ptr);
    }
};

struct DeviceBuffer {
    void* ptr = nullptr;
    size_t bytes = 0;
    void reserve(size_t n) {
        if (n <= bytes) return;
        if (ptr) cudaFree(ptr);
        ptr = nullptr;
        cuda_check(cudaMalloc(&ptr, n), "cudaMalloc");
        bytes = n;
    }
    ~DeviceBuffer() {
        if (ptr) cudaFree(ptr);
    }
};

}  // namespace

struct Engine::Impl {
    Logger logger;
    std::unique_ptr<nvinfer1::IRuntime, TrtDeleter> runtime;
    std::unique_ptr<nvinfer1::ICudaEngine, TrtDeleter> engine;
    std::unique_ptr<nvinfer1::IExecutionContext, TrtDeleter> context;
    cudaStream_t stream = nullptr;
    cudaEvent_t start = nullptr, stop = nullptr;
    std::string input, output, text;
    bool half_in = false, half_out = false;
    int fixed_batch = 0, max_batch = 0;  // 0: not fixed / no limit
    int scale = 1;
    SizeRule rule;
    std::vector<std::string> warnings;
    std::vector<double> gpu_ms;
    HostBuffer host_in, host_out;
    DeviceBuffer dev_in, dev_out;

    ~Impl() {
        context.reset();  // before the stream and buffers it uses
        if (start) cudaEventDestroy(start);
        if (stop) cudaEventDestroy(stop);
        if (stream) cudaStreamDestroy(stream);
    }

    nvinfer1::Dims set_shape(int n, int h, int w) {
        nvinfer1::Dims in{};
        in.nbDims = 4;
        in.d[0] = n;
        in.d[1] = 3;
        in.d[2] = h;
        in.d[3] = w;
        if (!context->setInputShape(input.c_str(), in))
            throw UserError("engine does not accept input shape " + dims_text(in));
        return context->getTensorShape(output.c_str());
    }

    // One engine call on n tiles (n fits the engine's batch rule).
    void forward(const float* in, int n, int h, int w, float* out) {
        nvinfer1::Dims out_dims = set_shape(n, h, w);
        const size_t in_count = static_cast<size_t>(n) * 3 * h * w;
        const size_t out_count = static_cast<size_t>(n) * 3 * h * scale * w * scale;
        if (out_dims.nbDims != 4 || out_dims.d[0] != n || out_dims.d[1] != 3 || out_dims.d[2] != h * scale ||
            out_dims.d[3] != w * scale)
            throw UserError("engine output " + dims_text(out_dims) + " for an input of " + std::to_string(n) +
                            "x3x" + std::to_string(h) + "x" + std::to_string(w) + " is not a x" +
                            std::to_string(scale) + " upscale");
        const size_t in_bytes = in_count * (half_in ? 2 : 4), out_bytes = out_count * (half_out ? 2 : 4);
        host_in.reserve(in_bytes);
        host_out.reserve(out_bytes);
        dev_in.reserve(in_bytes);
        dev_out.reserve(out_bytes);
        if (half_in) {
            auto* dst = static_cast<uint16_t*>(host_in.ptr);
            for (size_t i = 0; i < in_count; ++i) dst[i] = float_to_half(in[i]);
        } else {
            std::memcpy(host_in.ptr, in, in_bytes);
        }
        cuda_check(cudaMemcpyAsync(dev_in.ptr, host_in.ptr, in_bytes, cudaMemcpyHostToDevice, stream), "copy to GPU");
        if (!context->setTensorAddress(input.c_str(), dev_in.ptr) ||
            !context->setTensorAddress(output.c_str(), dev_out.ptr))
            throw UserError("TensorRT refused the tensor addresses");
        cuda_check(cudaEventRecord(start, stream), "cudaEventRecord");
        if (!context->enqueueV3(stream))
            throw UserError("TensorRT execution failed for an input of " + std::to_string(n) + "x3x" +
                            std::to_string(h) + "x" + std::to_string(w));
        cuda_check(cudaEventRecord(stop, stream), "cudaEventRecord");
        cuda_check(cudaMemcpyAsync(host_out.ptr, dev_out.ptr, out_bytes, cudaMemcpyDeviceToHost, stream),
                   "copy from GPU");
        cuda_check(cudaStreamSynchronize(stream), "the engine run");
        float ms = 0;
        cuda_check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
        gpu_ms.push_back(ms);
        if (half_out) {
            const auto* src = static_cast<const uint16_t*>(host_out.ptr);
            for (size_t i = 0; i < out_count; ++i) out[i] = half_to_float(src[i]);
        } else {
            std::memcpy(out, host_out.ptr, out_bytes);
        }
    }
};

Engine::Engine(const fs::path& path) : impl_(std::make_unique<Impl>()) {
    Impl& m = *impl_;
    std::error_code ec;
    if (!fs::exists(path, ec)) throw UserError("no such engine file: " + path.string());
    if (fs::is_directory(path, ec)) throw UserError(path.string() + " is a directory, expected an engine file");
    const Sidecar sidecar = read_sidecar(path);

    int device = 0;
    cuda_check(cudaGetDevice(&device), "finding a CUDA GPU (cudaGetDevice)");
    cudaDeviceProp prop{};
    cuda_check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    const int v = getInferLibVersion();  // major * 10000 + minor * 100 + patch (TensorRT 10+)
    Platform platform{{v / 10000, (v / 100) % 100, v % 100}, {prop.major, prop.minor}, prop.name};
    if (platform.tensorrt_version[0] < 10)
        throw UserError("TensorRT " + std::to_string(v) + " is too old: adaptsr-trt needs TensorRT 10 or newer");
    m.warnings = check_sidecar(sidecar, path, platform);

    std::ifstream in(path, std::ios::binary);
    std::vector<char> blob((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) throw UserError("cannot read engine " + path.string());
    m.runtime.reset(nvinfer1::createInferRuntime(m.logger));
    if (!m.runtime) throw UserError("cannot create the TensorRT runtime");
    m.engine.reset(m.runtime->deserializeCudaEngine(blob.data(), blob.size()));
    if (!m.engine)
        throw UserError("cannot load engine " + path.string() +
                        ": corrupt, or built by another TensorRT version or for another GPU (engines are not "
                        "portable; rebuild it here)");
    std::vector<std::string> inputs, outputs;
    for (int i = 0; i < m.engine->getNbIOTensors(); ++i) {
        const char* name = m.engine->getIOTensorName(i);
        (m.engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT ? inputs : outputs).push_back(name);
    }
    if (inputs.size() != 1 || outputs.size() != 1)
        throw UserError(path.string() + ": expected one input and one output tensor");
    m.input = inputs[0];
    m.output = outputs[0];
    for (auto [name, half] : {std::pair{&m.input, &m.half_in}, std::pair{&m.output, &m.half_out}}) {
        const nvinfer1::DataType type = m.engine->getTensorDataType(name->c_str());
        if (type != nvinfer1::DataType::kFLOAT && type != nvinfer1::DataType::kHALF)
            throw UserError(path.string() + ": tensor " + *name + " is neither float32 nor float16");
        *half = type == nvinfer1::DataType::kHALF;
    }
    const nvinfer1::Dims shape = m.engine->getTensorShape(m.input.c_str());
    if (shape.nbDims != 4) throw UserError(path.string() + ": engine input " + dims_text(shape) + " is not NCHW");
    if (shape.d[1] != 3) throw UserError(path.string() + ": engine input " + dims_text(shape) + " is not RGB");
    const int64_t n = shape.d[0], h = shape.d[2], w = shape.d[3];
    nvinfer1::Dims pmin = shape, pmax = shape;
    if (n < 0 || h < 0 || w < 0) {
        pmin = m.engine->getProfileShape(m.input.c_str(), 0, nvinfer1::OptProfileSelector::kMIN);
        pmax = m.engine->getProfileShape(m.input.c_str(), 0, nvinfer1::OptProfileSelector::kMAX);
        if (pmin.nbDims != 4 || pmax.nbDims != 4)
            throw UserError(path.string() + ": engine has dynamic dimensions but no optimization profile");
    }
    // the same rule as serve/backends.py engine_size_rule
    m.fixed_batch = n > 0 ? static_cast<int>(n) : 0;
    m.max_batch = m.fixed_batch ? 0 : static_cast<int>(pmax.d[0]);
    if (h > 0 && w > 0) {
        m.rule = SizeRule{static_cast<int>(std::min(h, w)), 1, std::nullopt, HW{static_cast<int>(h), static_cast<int>(w)}};
    } else if (h > 0 || w > 0) {
        throw UserError(path.string() + ": engine input " + dims_text(shape) +
                        " has one static and one dynamic side; build it with both static or both dynamic");
    } else {
        int least = std::max({static_cast<int>(pmin.d[2]), static_cast<int>(pmin.d[3]), sidecar.min_size, 1});
        m.rule = SizeRule{least, sidecar.multiple_of, HW{static_cast<int>(pmax.d[2]), static_cast<int>(pmax.d[3])},
                          std::nullopt};
    }
    m.context.reset(m.engine->createExecutionContext());
    if (!m.context) throw UserError("cannot create a TensorRT execution context (out of GPU memory?)");
    cuda_check(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking), "cudaStreamCreate");
    cuda_check(cudaEventCreate(&m.start), "cudaEventCreate");
    cuda_check(cudaEventCreate(&m.stop), "cudaEventCreate");
    // the scale from the shapes, as the Python backend learns it
    int ph = m.rule.static_size ? m.rule.static_size->first : round_up(std::max(m.rule.min_size, 16), m.rule.multiple_of);
    int pw = m.rule.static_size ? m.rule.static_size->second : ph;
    const nvinfer1::Dims out = m.set_shape(m.fixed_batch ? m.fixed_batch : 1, ph, pw);
    if (out.nbDims != 4 || out.d[2] % ph || out.d[3] % pw || out.d[2] / ph != out.d[3] / pw || out.d[2] < ph)
        throw UserError(path.string() + ": engine maps " + std::to_string(ph) + "x" + std::to_string(pw) + " to " +
                        dims_text(out) + ": not an integer upscaling");
    m.scale = static_cast<int>(out.d[2] / ph);
    if (sidecar.scale && *sidecar.scale != m.scale)
        throw UserError(sidecar.path.string() + " says scale " + std::to_string(*sidecar.scale) +
                        " but the engine upscales x" + std::to_string(m.scale) + ": a stale sidecar?");
    m.text = path.string() + ": x" + std::to_string(m.scale) + ", input " + dims_text(shape) + " (" +
             m.rule.describe() + "), " + (m.half_in ? "fp16" : "fp32") + " input, on " + platform.gpu_name +
             " (compute " + std::to_string(prop.major) + "." + std::to_string(prop.minor) + "), TensorRT " +
             std::to_string(platform.tensorrt_version[0]) + "." + std::to_string(platform.tensorrt_version[1]) + "." +
             std::to_string(platform.tensorrt_version[2]);
}

Engine::~Engine() = default;

int Engine::scale() const { return impl_->scale; }
const SizeRule& Engine::rule() const { return impl_->rule; }
std::string Engine::describe() const { return impl_->text; }
const std::vector<std::string>& Engine::warnings() const { return impl_->warnings; }
const std::vector<double>& Engine::gpu_ms() const { return impl_->gpu_ms; }
void Engine::clear_timings() { impl_->gpu_ms.clear(); }

RunTiles Engine::runner() {
    Impl* m = impl_.get();
    return [m](const float* in, int count, int channels, int h, int w, float* out) {
        if (channels != 3) throw UserError("the engine takes RGB tiles, got " + std::to_string(channels) + " channels");
        const size_t in_tile = static_cast<size_t>(3) * h * w;
        const size_t out_tile = in_tile * m->scale * m->scale;
        run_in_batches(in, count, in_tile, out_tile, m->fixed_batch, m->max_batch,
                       [m, h, w](const float* src, int n, float* dst) { m->forward(src, n, h, w, dst); }, out);
    };
}

}  // namespace adaptsr
