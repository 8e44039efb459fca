# ~440 lines: the five Triton kernels and their launchers (merge, one-pass and two-pass
# gradients) belong together; Triton kernels must be module-level functions.
"""Triton kernels for LoRA: the weight merge and the low-rank gradient reductions.

The base-sized work (forward and input gradient) runs through cuBLAS/cuDNN on the merged
weight; these kernels do the rest (docs/kernels.md gives the cost analysis):

- `merge`: W' = W + B diag(s) A, per kernel tap.
- `lora_grads`: dA = s * dz^T x and dB = dY^T z per tap, where z = x (sA)^T and dz = dY (*) B
  (the transposed kxk correlation of dY with B), never forming the full-size dW. Two designs:
  two-pass (`_activations_kernel` writes z and dz, `_grads_kernel` reduces) moves more bytes;
  one-pass (`_one_pass_kernel`) reads x and dY once but recomputes z per tap and per output
  block. The cost model in `roofline` picks per call. Both reduce over pixels as split-K
  programs writing fp32 partial sums; `_finish_kernel` adds them in a fixed order
  (deterministic) and casts both gradients in one launch.

Every tensor is addressed as (image n, channel c, pixel p = h * W + w) with explicit strides, so
a linear layer is the case N = 1, H = 1, W = rows, k = 1. This module imports Triton; import it
only when the fused path runs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from adaptsr.kernels import roofline

BLOCK_P = roofline.BLOCK_P  # pixels (rows) per tile
MAX_BLOCK_C = 64  # channels per tile; larger channel counts loop over blocks
FINISH_BLOCK = 1024  # gradient elements per program of the partial-sum kernel


@triton.jit
def _merge_kernel(
    w_ptr, b_ptr, a_ptr, s_ptr, out_ptr,
    C_OUT, C_IN, R,
    KK: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr,
):  # fmt: skip
    # out[o, i, t] = w[o, i, t] + sum_r b[o, r, t] * s[r] * a[r, i]; all contiguous, t = tap.
    # r is small, so rank-1 updates in fp32 beat padding a dot to 16.
    pid_o = tl.program_id(0)
    pid_i = tl.program_id(1)
    t = tl.program_id(2)
    o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    i = pid_i * BLOCK_I + tl.arange(0, BLOCK_I)
    mo = o < C_OUT
    mi = i < C_IN
    acc = tl.zeros((BLOCK_O, BLOCK_I), dtype=tl.float32)
    for r in range(0, R):
        s = tl.load(s_ptr + r)
        bv = tl.load(b_ptr + (o * R + r) * KK + t, mask=mo, other=0.0).to(tl.float32)
        av = tl.load(a_ptr + r * C_IN + i, mask=mi, other=0.0).to(tl.float32)
        acc += (bv * s)[:, None] * av[None, :]
    offs = (o[:, None] * C_IN + i[None, :]) * KK + t
    m = mo[:, None] & mi[None, :]
    w = tl.load(w_ptr + offs, mask=m, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, (w + acc).to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _activations_kernel(
    x_ptr, dy_ptr, a_ptr, s_ptr, b_ptr, z_ptr, dz_ptr,
    C_IN, C_OUT, R, H, W,
    sxn, sxc, sxp, sdn, sdc, sdh, sdw,
    K: tl.constexpr, PAD: tl.constexpr, PREC: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    # One tile of pixels of image n: z = x (s A)^T and dz = sum over taps of dY_shift B_tap.
    pid_p = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    HW = H * W
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    mp = p < HW
    h = p // W
    w = p % W
    rr = tl.arange(0, BLOCK_R)
    mr = rr < R
    s = tl.load(s_ptr + rr, mask=mr, other=0.0)
    dtype = x_ptr.dtype.element_ty

    z = tl.zeros((BLOCK_P, BLOCK_R), dtype=tl.float32)
    for i0 in range(0, C_IN, BLOCK_I):
        i = i0 + tl.arange(0, BLOCK_I)
        mi = i < C_IN
        xt = tl.load(
            x_ptr + n * sxn + i[None, :] * sxc + p[:, None] * sxp,
            mask=mp[:, None] & mi[None, :],
            other=0.0,
        )
        # (s A)^T tile, rounded to the input dtype as an eager (s * A) would be
        at = tl.load(
            a_ptr + rr[None, :] * C_IN + i[:, None], mask=mi[:, None] & mr[None, :], other=0.0
        )
        at = (at.to(tl.float32) * s[None, :]).to(dtype)
        z = tl.dot(xt, at, z, input_precision=PREC)

    dz = tl.zeros((BLOCK_P, BLOCK_R), dtype=tl.float32)
    for kh in tl.static_range(K):
        for kw in tl.static_range(K):
            # y[q - (kh - PAD, kw - PAD)] saw z[q] through tap (kh, kw)
            hh = h - kh + PAD
            ww = w - kw + PAD
            mq = mp & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
            base = dy_ptr + n * sdn + hh * sdh + ww * sdw
            for o0 in range(0, C_OUT, BLOCK_O):
                o = o0 + tl.arange(0, BLOCK_O)
                mo = o < C_OUT
                dyt = tl.load(
                    base[:, None] + o[None, :] * sdc, mask=mq[:, None] & mo[None, :], other=0.0
                )
                bt = tl.load(
                    b_ptr + (o[:, None] * R + rr[None, :]) * (K * K) + (kh * K + kw),
                    mask=mo[:, None] & mr[None, :],
                    other=0.0,
                )
                dz = tl.dot(dyt, bt, dz, input_precision=PREC)

    out = (n * HW + p)[:, None] * R + rr[None, :]
    m = mp[:, None] & mr[None, :]
    tl.store(z_ptr + out, z.to(z_ptr.dtype.element_ty), mask=m)
    tl.store(dz_ptr + out, dz.to(dz_ptr.dtype.element_ty), mask=m)


@triton.jit
def _grads_kernel(
    x_ptr, dy_ptr, z_ptr, dz_ptr, s_ptr, pa_ptr, pb_ptr,
    C_IN, C_OUT, R, H, W, N_TILES, TILES_PER_IMAGE, N_B_JOBS, N_SPLITS,
    sxn, sxc, sxp, sdn, sdc, sdh, sdw,
    K: tl.constexpr, PAD: tl.constexpr, PREC: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    # Split-K over pixel tiles. Job j < N_B_JOBS: dB[o block, :, tap]; else dA[:, i block].
    # Split `sp` sums tiles sp, sp + N_SPLITS, ... and writes its own partial slot.
    job = tl.program_id(0)
    sp = tl.program_id(1)
    HW = H * W
    rr = tl.arange(0, BLOCK_R)
    mr = rr < R
    if job < N_B_JOBS:
        n_ob = tl.cdiv(C_OUT, BLOCK_O)
        tap = job // n_ob
        kh = tap // K
        kw = tap % K
        o = (job % n_ob) * BLOCK_O + tl.arange(0, BLOCK_O)
        mo = o < C_OUT
        acc_b = tl.zeros((BLOCK_O, BLOCK_R), dtype=tl.float32)
        for t in range(sp, N_TILES, N_SPLITS):
            n = (t // TILES_PER_IMAGE).to(tl.int64)
            p = (t % TILES_PER_IMAGE) * BLOCK_P + tl.arange(0, BLOCK_P)
            mp = p < HW
            hh = p // W - kh + PAD
            ww = p % W - kw + PAD
            mq = mp & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
            dyt = tl.load(
                dy_ptr + n * sdn + o[:, None] * sdc + (hh * sdh + ww * sdw)[None, :],
                mask=mo[:, None] & mq[None, :],
                other=0.0,
            )
            zt = tl.load(
                z_ptr + (n * HW + p)[:, None] * R + rr[None, :],
                mask=mp[:, None] & mr[None, :],
                other=0.0,
            )
            acc_b = tl.dot(dyt, zt, acc_b, input_precision=PREC)
        out_b = ((sp * C_OUT + o[:, None]) * R + rr[None, :]) * (K * K) + tap
        tl.store(pb_ptr + out_b, acc_b, mask=mo[:, None] & mr[None, :])
    else:
        i = (job - N_B_JOBS) * BLOCK_I + tl.arange(0, BLOCK_I)
        mi = i < C_IN
        acc_a = tl.zeros((BLOCK_R, BLOCK_I), dtype=tl.float32)
        for t in range(sp, N_TILES, N_SPLITS):
            n = (t // TILES_PER_IMAGE).to(tl.int64)
            p = (t % TILES_PER_IMAGE) * BLOCK_P + tl.arange(0, BLOCK_P)
            mp = p < HW
            dzt = tl.load(
                dz_ptr + (n * HW + p)[None, :] * R + rr[:, None],
                mask=mr[:, None] & mp[None, :],
                other=0.0,
            )
            xt = tl.load(
                x_ptr + n * sxn + i[None, :] * sxc + p[:, None] * sxp,
                mask=mp[:, None] & mi[None, :],
                other=0.0,
            )
            acc_a = tl.dot(dzt, xt, acc_a, input_precision=PREC)
        s = tl.load(s_ptr + rr, mask=mr, other=0.0)
        out_a = (sp * R + rr[:, None]) * C_IN + i[None, :]
        tl.store(pa_ptr + out_a, acc_a * s[:, None], mask=mr[:, None] & mi[None, :])


@triton.jit
def _one_pass_kernel(
    x_ptr, dy_ptr, a_ptr, s_ptr, b_ptr, pa_ptr, pb_ptr,
    C_IN, C_OUT, R, H, W, N_TILES, TILES_PER_IMAGE, N_OB, N_SPLITS,
    sxn, sxc, sxp, sdn, sdc, sdh, sdw,
    K: tl.constexpr, PAD: tl.constexpr, PREC: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    # Job = (tap, o block); split `sp` takes tiles sp, sp + N_SPLITS, ... Per tile it reads x
    # (all C_IN <= BLOCK_I channels) and its shifted dY block once: z = x (sA)^T, the tap's and
    # block's share of dz = dY_shift B, then dB += dY_shift^T z and dA += dz^T x. dz is never
    # complete in one program, but dA is linear in it: the partials over jobs add up.
    job = tl.program_id(0)
    sp = tl.program_id(1)
    tap = job // N_OB
    kh = tap // K
    kw = tap % K
    HW = H * W
    dtype = x_ptr.dtype.element_ty
    rr = tl.arange(0, BLOCK_R)
    mr = rr < R
    i = tl.arange(0, BLOCK_I)
    mi = i < C_IN
    o = (job % N_OB) * BLOCK_O + tl.arange(0, BLOCK_O)
    mo = o < C_OUT
    s = tl.load(s_ptr + rr, mask=mr, other=0.0)
    at = tl.load(a_ptr + rr[None, :] * C_IN + i[:, None], mask=mi[:, None] & mr[None, :], other=0.0)
    at = (at.to(tl.float32) * s[None, :]).to(dtype)
    bt = tl.load(
        b_ptr + (o[:, None] * R + rr[None, :]) * (K * K) + tap,
        mask=mo[:, None] & mr[None, :],
        other=0.0,
    )
    acc_b = tl.zeros((BLOCK_O, BLOCK_R), dtype=tl.float32)
    acc_a = tl.zeros((BLOCK_R, BLOCK_I), dtype=tl.float32)
    for t in range(sp, N_TILES, N_SPLITS):
        n = (t // TILES_PER_IMAGE).to(tl.int64)
        p = (t % TILES_PER_IMAGE) * BLOCK_P + tl.arange(0, BLOCK_P)
        mp = p < HW
        xt = tl.load(
            x_ptr + n * sxn + p[:, None] * sxp + i[None, :] * sxc,
            mask=mp[:, None] & mi[None, :],
            other=0.0,
        )
        z = tl.dot(xt, at, input_precision=PREC).to(dtype)
        hh = p // W - kh + PAD
        ww = p % W - kw + PAD
        mq = mp & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
        dyt = tl.load(
            dy_ptr + n * sdn + (hh * sdh + ww * sdw)[:, None] + o[None, :] * sdc,
            mask=mq[:, None] & mo[None, :],
            other=0.0,
        )
        dz = tl.dot(dyt, bt, input_precision=PREC).to(dtype)
        acc_b = tl.dot(tl.trans(dyt), z, acc_b, input_precision=PREC)
        acc_a = tl.dot(tl.trans(dz), xt, acc_a, input_precision=PREC)
    out_b = ((sp * C_OUT + o[:, None]) * R + rr[None, :]) * (K * K) + tap
    tl.store(pb_ptr + out_b, acc_b, mask=mo[:, None] & mr[None, :])
    out_a = ((sp * tl.num_programs(0) + job) * R + rr[:, None]) * C_IN + i[None, :]
    tl.store(pa_ptr + out_a, acc_a * s[:, None], mask=mr[:, None] & mi[None, :])


@triton.jit
def _finish_kernel(pa_ptr, pb_ptr, ga_ptr, gb_ptr, NA, NB, SA, SB, BLOCK: tl.constexpr):
    # dA[e] = sum over SA partial slots, dB[e] over SB, in slot order; cast to the grad dtype.
    # Programs below cdiv(NA, BLOCK) write dA, the rest dB: one launch for both.
    pid = tl.program_id(0)
    n_a = tl.cdiv(NA, BLOCK)
    if pid < n_a:
        e = pid * BLOCK + tl.arange(0, BLOCK)
        m = e < NA
        acc = tl.zeros((BLOCK,), dtype=tl.float32)
        for j in range(0, SA):
            acc += tl.load(pa_ptr + j * NA + e, mask=m, other=0.0)
        tl.store(ga_ptr + e, acc.to(ga_ptr.dtype.element_ty), mask=m)
    else:
        e = (pid - n_a) * BLOCK + tl.arange(0, BLOCK)
        m = e < NB
        acc = tl.zeros((BLOCK,), dtype=tl.float32)
        for j in range(0, SB):
            acc += tl.load(pb_ptr + j * NB + e, mask=m, other=0.0)
        tl.store(gb_ptr + e, acc.to(gb_ptr.dtype.element_ty), mask=m)


def _block(c: int, cap: int = MAX_BLOCK_C) -> int:
    """Power-of-two tile size >= 16 (the smallest tl.dot dimension), at most `cap`."""
    return min(cap, max(16, triton.next_power_of_2(c)))


def _precision(dtype: torch.dtype) -> str:
    """Exact fp32 products unless torch's TF32 switch for matmuls is on; half types use the
    tensor cores with fp32 accumulation whatever the value."""
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


def merge(weight: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, scale: torch.Tensor):
    """W + B diag(scale) A per tap: weight (C_out, C_in[, k, k]), A (r, C_in[, 1, 1]),
    B (C_out, r[, k, k]), scale (r,) fp32. Returns a new tensor like `weight`."""
    weight = weight.contiguous()
    c_out, c_in = weight.shape[:2]
    kk = weight[0, 0].numel()
    r = lora_a.shape[0]
    out = torch.empty_like(weight)
    bo, bi = _block(c_out), _block(c_in)
    grid = (triton.cdiv(c_out, bo), triton.cdiv(c_in, bi), kk)
    _merge_kernel[grid](
        weight, lora_b.contiguous(), lora_a.contiguous(), scale, out,
        c_out, c_in, r, KK=kk, BLOCK_O=bo, BLOCK_I=bi,
    )  # fmt: skip
    return out


def _pixel_strides(t: torch.Tensor):
    """(n, c, p) strides of an (N, C, H, W) tensor whose (H, W) flatten to one stride, or of a
    (rows, C) matrix seen as N = 1, H = 1."""
    if t.dim() == 2:
        return 0, t.stride(1), t.stride(0)
    return t.stride(0), t.stride(1), t.stride(3)


ONE_PASS_MAX_C_IN = roofline.ONE_PASS_MAX_C_IN
# None: each call picks its design by the cost model; True/False force one (benchmarks, tests)
design_override: bool | None = None


def _math(dtype: torch.dtype) -> str:
    if dtype != torch.float32:
        return "bf16"
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"


def lora_grads(
    x: torch.Tensor,
    dy: torch.Tensor,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    scale: torch.Tensor,
    kernel_size: int,
    num_splits: int | None = None,
    one_pass: bool | None = None,
):
    """Gradients of the s-scaled LoRA branch for A and B, given the input x and dL/dy.

    x (N, C_in, H, W) or (rows, C_in); dy (N, C_out, H, W) or (rows, C_out), same pixels
    (stride 1, padding k // 2). Returns (dA, dB) shaped and typed like lora_a and lora_b.
    `one_pass` picks the kernel design (None: `design_override`, else the lower bound of
    `roofline.prefer_one_pass`); `num_splits` the split-K count (None: `roofline.num_splits`).
    """
    k = kernel_size
    if x.dim() == 2:
        geometry = (1, x.shape[1], 1, x.shape[0])
        dy_strides = (0, dy.stride(1), 0, dy.stride(0))
    else:
        if x.stride(2) != x.shape[3] * x.stride(3):  # (h, w) must flatten to one stride
            x = x.contiguous()
        geometry = tuple(x.shape)
        dy_strides = dy.stride()
    c_in = geometry[1]
    if one_pass is None:
        one_pass = design_override
    if one_pass is None:
        n_img, _, h, w = geometry
        r, c_out = lora_a.shape[0], dy.shape[1]
        size = x.element_size()
        one_pass = roofline.prefer_one_pass(n_img * h * w, c_in, c_out, k, r, size, _math(x.dtype))
    if one_pass and c_in > ONE_PASS_MAX_C_IN:
        raise ValueError(f"the one-pass kernel takes at most {ONE_PASS_MAX_C_IN} input channels")
    run = _grads_one_pass if one_pass else _grads_two_pass
    r = lora_a.shape[0]
    a = lora_a.reshape(r, c_in).contiguous()
    part_a, part_b = run(x, dy, a, lora_b.contiguous(), scale, k, geometry, dy_strides, num_splits)
    grad_a = torch.empty(lora_a.shape, device=x.device, dtype=lora_a.dtype)
    grad_b = torch.empty(lora_b.shape, device=x.device, dtype=lora_b.dtype)
    na, nb = grad_a.numel(), grad_b.numel()
    grid = (triton.cdiv(na, FINISH_BLOCK) + triton.cdiv(nb, FINISH_BLOCK),)
    _finish_kernel[grid](
        part_a, part_b, grad_a, grad_b, na, nb, part_a.numel() // na, part_b.numel() // nb,
        BLOCK=FINISH_BLOCK,
    )  # fmt: skip
    return grad_a, grad_b


def _splits(x, n_jobs, n_tiles, one_partial, requested):
    if requested is None:
        sms = 2  # the interpreter: few programs
        if x.is_cuda:
            sms = torch.cuda.get_device_properties(x.device).multi_processor_count
        requested = roofline.num_splits(
            n_jobs, n_tiles, sms, x.numel() * x.element_size(), one_partial
        )
    return max(1, min(requested, n_tiles))


def _grads_one_pass(x, dy, a, b, scale, k, geometry, dy_strides, num_splits):
    n_img, c_in, h, w = geometry
    c_out, r = b.shape[0], a.shape[0]
    bi, bo, br = _block(c_in, ONE_PASS_MAX_C_IN), _block(c_out, 128), _block(r, 1 << 30)
    # all C_in channels of a tile sit in shared memory, double-buffered: halve the tile in fp32
    bp = BLOCK_P if x.element_size() <= 2 else BLOCK_P // 2
    tiles_per_image = triton.cdiv(h * w, bp)
    n_tiles = tiles_per_image * n_img
    n_ob = triton.cdiv(c_out, bo)
    n_jobs = n_ob * k * k
    one_partial = 4 * r * (c_in * n_jobs + c_out * k * k)
    splits = _splits(x, n_jobs, n_tiles, one_partial, num_splits)
    part_a = torch.empty((splits * n_jobs, r, c_in), device=x.device, dtype=torch.float32)
    part_b = torch.empty((splits, c_out, r, k * k), device=x.device, dtype=torch.float32)
    _one_pass_kernel[(n_jobs, splits)](
        x, dy, a, scale, b, part_a, part_b,
        c_in, c_out, r, h, w, n_tiles, tiles_per_image, n_ob, splits,
        *_pixel_strides(x), *dy_strides,
        K=k, PAD=k // 2, PREC=_precision(x.dtype),
        BLOCK_P=bp, BLOCK_I=bi, BLOCK_O=bo, BLOCK_R=br, num_warps=8, num_stages=2,
    )  # fmt: skip
    return part_a, part_b


def _grads_two_pass(x, dy, a, b, scale, k, geometry, dy_strides, num_splits):
    n_img, c_in, h, w = geometry
    c_out, r = b.shape[0], a.shape[0]
    bi, bo, br = _block(c_in), _block(c_out), _block(r, 1 << 30)
    tiles_per_image = triton.cdiv(h * w, BLOCK_P)
    common = dict(K=k, PAD=k // 2, PREC=_precision(x.dtype), BLOCK_P=BLOCK_P, BLOCK_I=bi,
                  BLOCK_O=bo, BLOCK_R=br)  # fmt: skip
    strides = (*_pixel_strides(x), *dy_strides)

    z = torch.empty((n_img * h * w, r), device=x.device, dtype=x.dtype)
    dz = torch.empty_like(z)
    _activations_kernel[(tiles_per_image, n_img)](
        x, dy, a, scale, b, z, dz, c_in, c_out, r, h, w, *strides, **common, num_warps=8
    )

    n_tiles = tiles_per_image * n_img
    n_b_jobs = triton.cdiv(c_out, bo) * k * k
    n_jobs = n_b_jobs + triton.cdiv(c_in, bi)
    splits = _splits(x, n_jobs, n_tiles, 4 * r * (c_in + c_out * k * k), num_splits)
    part_a = torch.empty((splits, r, c_in), device=x.device, dtype=torch.float32)
    part_b = torch.empty((splits, c_out, r, k * k), device=x.device, dtype=torch.float32)
    _grads_kernel[(n_jobs, splits)](
        x, dy, z, dz, scale, part_a, part_b,
        c_in, c_out, r, h, w, n_tiles, tiles_per_image, n_b_jobs, splits,
        *strides, **common,
    )  # fmt: skip
    return part_a, part_b
