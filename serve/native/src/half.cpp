#include "half.hpp"

#include <cstring>

namespace adaptsr {

uint16_t float_to_half(float value) {
    uint32_t f;
    std::memcpy(&f, &value, 4);
    const uint16_t sign = static_cast<uint16_t>((f >> 16) & 0x8000);
    const uint32_t abs = f & 0x7fffffff;
    if (abs >= 0x7f800000)  // inf or NaN (NaN stays NaN: a quiet bit is kept)
        return sign | 0x7c00 | (abs > 0x7f800000 ? 0x200 | ((abs >> 13) & 0x3ff) : 0);
    if (abs >= 0x477ff000) return sign | 0x7c00;  // rounds past 65504: infinity
    if (abs < 0x38800000) {                       // below 2^-14: a subnormal half (or zero)
        if (abs < 0x33000000) return sign;        // below half the smallest subnormal
        const uint32_t exponent = abs >> 23;
        const uint32_t mantissa = (abs & 0x7fffff) | 0x800000;
        const uint32_t shift = 126 - exponent;  // value / 2^-24 = mantissa * 2^(exponent - 126)
        uint32_t half = mantissa >> shift;
        const uint32_t rest = mantissa & ((1u << shift) - 1), halfway = 1u << (shift - 1);
        if (rest > halfway || (rest == halfway && (half & 1))) ++half;
        return sign | static_cast<uint16_t>(half);
    }
    uint32_t half = ((abs - 0x38000000) >> 13);  // rebias exponent 127 -> 15
    const uint32_t rest = abs & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (half & 1))) ++half;  // may carry into the exponent
    return sign | static_cast<uint16_t>(half);
}

float half_to_float(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
    uint32_t exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff, f;
    if (exponent == 0x1f) {
        f = sign | 0x7f800000 | (mantissa << 13);
    } else if (exponent == 0) {
        if (mantissa == 0) {
            f = sign;
        } else {  // subnormal: normalise
            int e = -1;
            do {
                ++e;
                mantissa <<= 1;
            } while (!(mantissa & 0x400));
            f = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mantissa & 0x3ff) << 13;
        }
    } else {
        f = sign | (exponent + 112) << 23 | mantissa << 13;
    }
    float out;
    std::memcpy(&out, &f, 4);
    return out;
}

}  // namespace adaptsr
