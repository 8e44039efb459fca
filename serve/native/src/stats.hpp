// Latency percentiles, with numpy's default (linear) interpolation between order statistics.
#pragma once

#include <string>
#include <vector>

namespace adaptsr {

double percentile(std::vector<double> values, double q);  // q in [0, 100]; values non-empty

struct LatencySummary {
    size_t count = 0;
    double p50 = 0, p90 = 0, p99 = 0, mean = 0, min = 0, max = 0;
};
LatencySummary summarize(const std::vector<double>& values_ms);
// "p50 1.23 ms  p90 ...  (N runs)"
std::string describe(const LatencySummary& s);

}  // namespace adaptsr
