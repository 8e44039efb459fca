#include "sidecar.hpp"

#include <charconv>
#include <climits>
#include <cstdint>
#include <cmath>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "tiling.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace adaptsr {

namespace {

std::string join(const std::vector<int>& parts, size_t count) {
    std::string out;
    for (size_t i = 0; i < parts.size() && i < count; ++i) out += (i ? "." : "") + std::to_string(parts[i]);
    return out;
}

bool whole(double v) { return std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e9; }

// The member `key` of an object, or nullptr (also when `value` is not an object).
const json* member(const json& value, const char* key) {
    if (!value.is_object()) return nullptr;
    const auto it = value.find(key);
    return it == value.end() ? nullptr : &*it;
}

const std::string* text_of(const json* value) {
    return value && value->is_string() ? value->get_ptr<const std::string*>() : nullptr;
}

// The parser's message without its "[json.exception.parse_error.101] " tag.
std::string reason(const json::exception& e) {
    const std::string what = e.what();
    const auto tag_end = what.find("] ");
    return tag_end == std::string::npos ? what : what.substr(tag_end + 2);
}

// "8.7": the one spelling `adapt export trt` writes (adaptsr.core.contracts.EngineSidecar).
std::optional<std::pair<int, int>> capability(const json& v) {
    const std::string* text = text_of(&v);
    if (!text) return std::nullopt;
    auto parts = parse_version(*text);
    if (parts.size() != 2 || *text != std::to_string(parts[0]) + "." + std::to_string(parts[1])) return std::nullopt;
    return std::make_pair(parts[0], parts[1]);
}

int positive(const json* v, const char* key, const fs::path& where) {
    if (!v) return 1;
    double number = 0;
    if (v->is_number()) {
        number = v->get<double>();
    } else if (const std::string* text = text_of(v)) {
        try {
            size_t used = 0;
            number = std::stoi(*text, &used);
            if (used != text->size()) throw std::invalid_argument(*text);
        } catch (const std::exception&) {
            throw UserError(where.string() + ": metadata " + key + "='" + *text + "' is not an integer");
        }
    }
    if (!(v->is_number() || v->is_string()) || !whole(number))
        throw UserError(where.string() + ": metadata " + key + " is not an integer");
    if (number < 1)
        throw UserError(where.string() + ": metadata " + key + "=" + std::to_string(static_cast<long>(number)) +
                        " must be positive");
    return static_cast<int>(number);
}

// metadata.size_requirements: JSON text inside the JSON, as in the ONNX metadata.
void read_size_requirements(const json& value, const fs::path& where, Sidecar& s) {
    const std::string* text = text_of(&value);
    if (!text) throw UserError(where.string() + ": metadata size_requirements is not JSON text");
    if (text->empty()) return;
    json req;
    try {
        req = json::parse(*text);
    } catch (const json::exception&) {
        throw UserError(where.string() + ": metadata size_requirements is not JSON: '" + *text + "'");
    }
    if (!req.is_object())
        throw UserError(where.string() + ": metadata size_requirements should be an object: '" + *text + "'");
    s.min_size = positive(member(req, "min_size"), "min_size", where);
    s.multiple_of = positive(member(req, "multiple_of"), "multiple_of", where);
}

}  // namespace

fs::path sidecar_path(const fs::path& engine) {
    fs::path p = engine;
    return p.replace_extension(".engine.json");
}

std::vector<int> parse_version(const std::string& text) {
    std::vector<int> parts;
    const char* p = text.data();
    const char* const end = p + text.size();
    while (p < end && *p >= '0' && *p <= '9') {  // from_chars alone would take a sign
        int value = 0;
        const auto [next, ec] = std::from_chars(p, end, value);
        if (ec != std::errc()) break;  // a part too large for an int ends the version
        parts.push_back(value);
        p = next;
        if (p == end || *p != '.') break;
        ++p;
    }
    return parts;
}

Sidecar parse_sidecar(const std::string& text, const fs::path& where) {
    Sidecar s;
    s.path = where;
    s.present = true;
    json root;
    try {
        root = json::parse(text);
    } catch (const json::exception& e) {  // a syntax error, or a number past double's range
        throw UserError("cannot read " + where.string() + ": not JSON (" + reason(e) + ")");
    }
    if (!root.is_object()) throw UserError("cannot read " + where.string() + ": expected a JSON object");
    if (const json* v = member(root, "tensorrt_version")) {
        const std::string* version = text_of(v);
        if (version && !parse_version(*version).empty()) s.tensorrt_version = *version;
        else s.notes.push_back("tensorrt_version is not a version string");
    }
    if (const json* cc = member(root, "compute_capability")) {
        s.compute_capability = capability(*cc);
        if (!s.compute_capability) s.notes.push_back("compute_capability is not a string like \"8.7\"");
    }
    if (const json* v = member(root, "version"); v && v->is_number_unsigned() && v->get<uint64_t>() <= INT_MAX)
        s.version = v->get<int>();
    if (const std::string* name = text_of(member(root, "gpu"))) s.gpu_name = *name;
    if (const std::string* precision = text_of(member(root, "precision"))) s.precision = *precision;
    if (const json* meta = member(root, "metadata")) {
        if (const json* v = member(*meta, "scale")) s.scale = positive(v, "scale", where);
        if (const json* v = member(*meta, "size_requirements")) read_size_requirements(*v, where, s);
    }
    return s;
}

Sidecar read_sidecar(const fs::path& engine) {
    const fs::path path = sidecar_path(engine);
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) {
        Sidecar s;
        s.path = path;
        return s;
    }
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    if (!in.good() && !in.eof()) throw UserError("cannot read " + path.string());
    return parse_sidecar(text.str(), path);
}

std::vector<std::string> check_sidecar(const Sidecar& sidecar, const fs::path& engine, const Platform& platform) {
    std::vector<std::string> warnings;
    if (!sidecar.present) {
        warnings.push_back("no sidecar " + sidecar.path.string() +
                           ": the engine's TensorRT version and GPU are not checked");
        return warnings;
    }
    for (const auto& note : sidecar.notes) warnings.push_back(sidecar.path.string() + ": " + note + " (ignored)");
    const std::string rebuild = " (engines are not portable: rebuild it on this machine)";
    if (sidecar.tensorrt_version) {
        std::vector<int> built = parse_version(*sidecar.tensorrt_version);
        std::vector<int> here = platform.tensorrt_version;
        built.resize(3, 0);
        here.resize(3, 0);
        if (built != here)
            throw UserError(engine.string() + " was built with TensorRT " + *sidecar.tensorrt_version +
                            ", this is TensorRT " + join(here, 3) + rebuild);
    } else {
        bool noted = false;
        for (const auto& n : sidecar.notes) noted |= n.rfind("tensorrt_version", 0) == 0;
        if (!noted) warnings.push_back(sidecar.path.string() + " has no tensorrt_version: not checked");
    }
    if (sidecar.compute_capability) {
        if (*sidecar.compute_capability != platform.compute_capability) {
            auto cc = [](std::pair<int, int> c) { return std::to_string(c.first) + "." + std::to_string(c.second); };
            std::string built_for = cc(*sidecar.compute_capability);
            if (sidecar.gpu_name) built_for += " (" + *sidecar.gpu_name + ")";
            throw UserError(engine.string() + " was built for compute capability " + built_for + ", this GPU is " +
                            cc(platform.compute_capability) + " (" + platform.gpu_name + ")" + rebuild);
        }
    } else {
        bool noted = false;
        for (const auto& n : sidecar.notes) noted |= n.rfind("compute_capability", 0) == 0;
        if (!noted) warnings.push_back(sidecar.path.string() + " has no compute_capability: not checked");
    }
    return warnings;
}

}  // namespace adaptsr
