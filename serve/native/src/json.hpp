// A small JSON reader (RFC 8259) for engine sidecars: no dependency beyond the standard library.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace adaptsr {

struct Json {
    enum class Type { Null, Bool, Number, String, Array, Object };
    Type type = Type::Null;
    bool boolean = false;
    double number = 0.0;
    std::string text;
    std::vector<Json> items;
    std::map<std::string, Json> members;

    // The member `key` of an object, or nullptr (also when this is not an object).
    const Json* find(const std::string& key) const;
    bool is_number() const { return type == Type::Number; }
    bool is_string() const { return type == Type::String; }
    bool is_object() const { return type == Type::Object; }
    bool is_array() const { return type == Type::Array; }
};

// Throws std::invalid_argument with the offset of the first problem.
Json parse_json(const std::string& source);

}  // namespace adaptsr
