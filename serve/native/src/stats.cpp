#include "stats.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

namespace adaptsr {

double percentile(std::vector<double> values, double q) {
    std::sort(values.begin(), values.end());
    const double rank = q / 100.0 * (values.size() - 1);
    const size_t lo = static_cast<size_t>(std::floor(rank));
    const size_t hi = std::min(lo + 1, values.size() - 1);
    return values[lo] + (values[hi] - values[lo]) * (rank - lo);
}

LatencySummary summarize(const std::vector<double>& v) {
    LatencySummary s;
    s.count = v.size();
    if (v.empty()) return s;
    s.p50 = percentile(v, 50);
    s.p90 = percentile(v, 90);
    s.p99 = percentile(v, 99);
    s.mean = std::accumulate(v.begin(), v.end(), 0.0) / v.size();
    s.min = *std::min_element(v.begin(), v.end());
    s.max = *std::max_element(v.begin(), v.end());
    return s;
}

std::string describe(const LatencySummary& s) {
    char text[200];
    std::snprintf(text, sizeof text, "p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  mean %.3f ms  max %.3f ms  (%zu)",
                  s.p50, s.p90, s.p99, s.mean, s.max, s.count);
    return text;
}

}  // namespace adaptsr
