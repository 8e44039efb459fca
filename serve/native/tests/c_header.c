/* Compiled as C99 (never run): include/adaptsr.h is usable from C as documented. */
#include "adaptsr.h"

#include <stdio.h>
#include <stdlib.h>

int adaptsr_example(const char* engine_path, const float* rgb, int height, int width);

int adaptsr_example(const char* engine_path, const float* rgb, int height, int width) {
    adaptsr_engine* engine = adaptsr_open(engine_path);
    if (!engine) {
        fprintf(stderr, "error: %s\n", adaptsr_last_error());
        return -1;
    }
    int s = adaptsr_scale(engine);
    float* out = malloc((size_t)height * s * width * s * 3 * sizeof(float));
    int rc = out ? adaptsr_upscale(engine, rgb, height, width, out, -1, -1, 1) : -1;
    if (rc == 0) printf("GPU %.3f ms\n", adaptsr_last_gpu_ms(engine));
    free(out);
    adaptsr_close(engine);
    return rc;
}
