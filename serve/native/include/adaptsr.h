/* adaptsr: super-resolution with a TensorRT engine built by `adapt export trt`, for C and C++
 * programs (camera pipelines, services) that embed the model without Python.
 *
 * Images are interleaved RGB float32 in [0, 1], row by row (height x width x 3). Large images
 * run in overlapping tiles blended without seams, exactly as `adapt upscale --engine` does.
 * Functions return 0 on success and -1 on failure, with the reason in adaptsr_last_error().
 * An engine handle is not thread-safe: use one per thread (they may share the GPU).
 */
#ifndef ADAPTSR_H
#define ADAPTSR_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct adaptsr_engine adaptsr_engine;

/* Loads an engine and checks its sidecar (<name>.engine.json: TensorRT version, compute
 * capability). Returns NULL on failure (a missing file, a foreign or stale engine...). */
adaptsr_engine* adaptsr_open(const char* engine_path);

/* The upscaling factor (2, 3, 4...), or -1 for a NULL engine. */
int adaptsr_scale(const adaptsr_engine* engine);

/* Upscales `rgb` (height x width x 3) into `out`, which must hold
 * (height * scale) x (width * scale) x 3 floats. Output values are clipped to [0, 1].
 * tile: side of the tiles in input pixels; -1 = automatic (512, or the engine's static input),
 *       0 = the whole image in one engine call.
 * overlap: overlap between tiles in input pixels; -1 = automatic (tile / 32).
 * batch: tiles per engine call (>= 1). */
int adaptsr_upscale(adaptsr_engine* engine, const float* rgb, int height, int width, float* out, int tile,
                    int overlap, int batch);

/* GPU compute time of the last adaptsr_upscale call in milliseconds (sum over its engine
 * calls, measured with CUDA events), or -1. */
double adaptsr_last_gpu_ms(const adaptsr_engine* engine);

/* Why the last call on this thread failed ("" when none did). */
const char* adaptsr_last_error(void);

void adaptsr_close(adaptsr_engine* engine);

#ifdef __cplusplus
}
#endif

#endif /* ADAPTSR_H */
