"""FLOP and byte floors of one LoRA layer's forward + backward, per implementation: the cost
model behind the fused design the Triton wrappers pick (`prefer_one_pass`) and their split-K count
(`num_splits`). `python -m benchmarks.roofline_table` prints the table behind docs/kernels.md.

Counts are for P pixels (or tokens), C_in -> C_out channels, kernel k x k (k = 1: linear or 1x1
conv) and adapter rank r; bytes count each tensor a kernel reads or writes once (element size
E), weights included, so they are the least traffic each implementation's kernels can move:

- floor: the frozen base layer, forward (read x, write y) and input gradient (read dY, write dX);
- one-pass / two-pass: this package's two designs. Both merge W' = W + B s A and run the base
  forward and input gradient with W'. two-pass: one kernel reads x and dY and writes z = x (sA)^T
  and dz = dY (*) B, a second reads x, dY, z, dz and writes fp32 partial sums of dA and dB;
  one-pass: one kernel reads x and dY once and writes the partial sums (recomputing z per tap
  and per output-channel block);
- eager: separate ops (the reference path, as peft runs it): y0 = base(x), z = A x, t = B z,
  y = y0 + t; backward dX0, dz, dB, dA, dX1 = A^T dz, dX = dX0 + dX1;
- full: full fine-tuning: the floor plus the weight gradient (read x and dY again, write dW).
"""

from __future__ import annotations

# Datasheet peaks (dense) of the lent GPUs, as leads until measured: bytes/s and FLOP/s.
PEAKS = {
    "H100 SXM": dict(bw=3.35e12, fp32=67e12, tf32=495e12, bf16=989e12),
    "H200": dict(bw=4.8e12, fp32=67e12, tf32=495e12, bf16=989e12),
}
H100_SMS = 132
BLOCK_P = 64  # pixels per tile of the Triton kernels


def num_splits(n_jobs: int, n_tiles: int, sms: int, x_bytes: int, partial_bytes: int) -> int:
    """Split-K count of the gradient kernel: about two programs per SM in all, but never so many
    that the fp32 partial sums outweigh an eighth of x (they are written and read back)."""
    by_occupancy = -(-2 * sms // n_jobs)
    by_traffic = max(1, x_bytes // (8 * partial_bytes))
    return max(1, min(n_tiles, by_occupancy, by_traffic))


def costs(p: int, c_in: int, c_out: int, k: int, r: int, e: int) -> dict[str, tuple[int, int]]:
    """variant -> (FLOPs, bytes) of forward + backward."""
    kk = k * k
    w = e * c_in * c_out * kk  # one weight-sized tensor
    base = 2 * p * c_in * c_out * kk  # FLOPs of one base-sized product
    x, y, z = e * p * c_in, e * p * c_out, e * p * r  # one pass over an activation
    tiles = -(-p // BLOCK_P)
    floor_bytes = (x + w + y) + (y + w + x)
    merge_flops, merge_bytes = 2 * r * c_in * c_out * kk, e * r * (c_in + c_out * kk) + 2 * w
    za = 2 * p * r * c_in  # FLOPs of z = x A^T, and of dA = dz^T x
    bd = 2 * p * r * c_out * kk  # FLOPs of dz = dY B, and of dB = dY^T z

    # two passes: [x, dY -> z, dz], then [x, dY, z, dz -> partial dA, dB]
    jobs2 = -(-c_out // 64) * kk + -(-c_in // 64)
    part2 = 4 * r * (c_in + c_out * kk)  # fp32 partials of one split
    splits2 = num_splits(jobs2, tiles, H100_SMS, x, part2)
    two_pass = (
        2 * base + merge_flops + 2 * za + 2 * bd,
        floor_bytes + merge_bytes + 2 * (x + y + 2 * z) + 2 * splits2 * part2,
    )
    # one pass: every (tap, 128-channel output block) job reads x and its dY share once and
    # recomputes z; dA partials per job
    jobs1 = -(-c_out // 128) * kk
    part1 = 4 * r * (c_in * jobs1 + c_out * kk)
    splits1 = num_splits(jobs1, tiles, H100_SMS, x, part1)
    one_pass = (
        2 * base + merge_flops + 2 * jobs1 * za + 2 * bd,
        floor_bytes + merge_bytes + (x + y) + 2 * splits1 * part1,
    )
    eager_fwd = (x + w + y) + (x + z) + (z + y) + 3 * y
    eager_bwd = (y + w + x) + (y + z) + (y + z) + (z + x) + (z + x) + 3 * x
    return {
        "floor": (2 * base, floor_bytes),
        "one-pass": one_pass,
        "two-pass": two_pass,
        "eager": (2 * base + 3 * za + 3 * bd, eager_fwd + eager_bwd),  # + t = B z, dX1 = A^T dz
        "full": (3 * base, floor_bytes + x + y + w),
    }


def bound_us(flops: int, nbytes: int, peak: dict, math: str) -> float:
    """The larger of the arithmetic and the memory time, in microseconds."""
    return max(flops / peak[math], nbytes / peak["bw"]) * 1e6


ONE_PASS_MAX_C_IN = 256  # the one-pass kernel holds all input channels of a tile at once
ONE_PASS_FP32_C_IN = 128  # wider fp32 tiles spill registers on sm_90 (compile_check)


def prefer_one_pass(p: int, c_in: int, c_out: int, k: int, r: int, e: int, math: str) -> bool:
    """The dispatcher's design choice until measurements replace it: the one-pass kernel where
    its bound (H100 peaks) is lower, which is where bytes rather than FLOPs bound the layer."""
    if c_in > ONE_PASS_MAX_C_IN or (e > 2 and c_in > ONE_PASS_FP32_C_IN):
        return False
    c = costs(p, c_in, c_out, k, r, e)
    peak = PEAKS["H100 SXM"]
    return bound_us(*c["one-pass"], peak, math) < bound_us(*c["two-pass"], peak, math)
