// IEEE 754 binary16 conversion on the host, for engines whose input or output is fp16.
#pragma once

#include <cstdint>

namespace adaptsr {

uint16_t float_to_half(float value);  // round to nearest even; overflow to infinity
float half_to_float(uint16_t bits);

}  // namespace adaptsr
