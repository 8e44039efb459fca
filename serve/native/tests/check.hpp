// A minimal test harness: CHECK counts failures and says where; main returns their number.
#pragma once

#include <cstdio>
#include <string>

namespace check {
inline int failures = 0;
inline void fail(const char* file, int line, const std::string& what) {
    ++failures;
    std::fprintf(stderr, "%s:%d: %s\n", file, line, what.c_str());
}
inline int result(const char* name) {
    if (failures) std::fprintf(stderr, "%s: %d check(s) failed\n", name, failures);
    else std::printf("%s: all checks passed\n", name);
    return failures ? 1 : 0;
}
}  // namespace check

#define CHECK(cond)                                                               \
    do {                                                                          \
        if (!(cond)) check::fail(__FILE__, __LINE__, "CHECK(" #cond ") failed"); \
    } while (0)

#define CHECK_MSG(cond, msg)                                                              \
    do {                                                                                  \
        if (!(cond)) check::fail(__FILE__, __LINE__, std::string("CHECK(" #cond ") failed: ") + (msg)); \
    } while (0)

// `expr` throws `type` whose what() contains `text`.
#define CHECK_THROWS(type, expr, text)                                                               \
    do {                                                                                             \
        try {                                                                                        \
            (void)(expr);                                                                            \
            check::fail(__FILE__, __LINE__, "no exception from " #expr);                             \
        } catch (const type& e) {                                                                    \
            if (std::string(e.what()).find(text) == std::string::npos)                               \
                check::fail(__FILE__, __LINE__, std::string("unexpected message: ") + e.what());      \
        }                                                                                            \
    } while (0)
