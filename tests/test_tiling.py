"""Tile planning and blending (numpy only): coverage, exactness for local models, limits."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptsr.core.artifacts import engine_metadata, size_metadata
from adaptsr.core.errors import UserError
from adaptsr.core.tiling import SizeRule, axis_weights, default_overlap, plan_tiles, tiled_upscale
from adaptsr.serve.backends import Backend, engine_size_rule, scale_from_shapes


def nearest(scale):
    """A pointwise 'model' (receptive field 0): nearest-neighbour upscaling."""
    return lambda x: x.repeat(scale, axis=2).repeat(scale, axis=3)


def blur_then_nearest(scale, radius):
    """A local 'model' with receptive field `radius`: box blurs with zero padding, then repeat.

    Zero padding makes tile borders differ from the untiled result, like a conv net."""

    def run(x):
        for _ in range(radius):
            p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
            x = sum(
                p[:, :, i : i + x.shape[2], j : j + x.shape[3]] for i in range(3) for j in range(3)
            )
            x = x / 9.0
        return nearest(scale)(x)

    return run


@settings(max_examples=150, deadline=None)
@given(
    h=st.integers(1, 300),
    w=st.integers(1, 300),
    tile=st.integers(16, 128),
    overlap_frac=st.floats(0, 0.45),
    multiple=st.sampled_from([1, 2, 8, 16]),
    min_size=st.sampled_from([1, 8, 32]),
)
def test_plan_covers_the_image_with_equal_overlapping_tiles(
    h, w, tile, overlap_frac, multiple, min_size
):
    rule = SizeRule(min_size=min_size, multiple_of=multiple)
    if tile < min_size or tile - tile % multiple < min_size:
        with pytest.raises(UserError):
            plan_tiles(h, w, rule, tile, 0)
        return
    overlap = int(overlap_frac * (tile - tile % multiple))
    plan = plan_tiles(h, w, rule, tile, overlap)
    ph, pw = plan.padded
    assert ph >= h and pw >= w and ph % multiple == 0 and pw % multiple == 0
    th, tw = plan.tile
    for size, starts, length in ((th, plan.ys, ph), (tw, plan.xs, pw)):
        assert size % multiple == 0 and min_size <= size <= max(tile, length)
        assert starts[0] == 0 and starts[-1] + size == length  # covered, inside
        assert all(
            a + size - b >= overlap for a, b in zip(starts, starts[1:], strict=False)
        )  # overlap kept
        assert all(b > a for a, b in zip(starts, starts[1:], strict=False))
        # the tiles spread evenly: no more of them than the overlap requires
        if len(starts) > 1:
            assert len(starts) <= -(-(length - overlap) // (tile - tile % multiple - overlap))


@settings(max_examples=100, deadline=None)
@given(length=st.integers(2, 400), tile=st.integers(8, 100), overlap=st.integers(0, 40))
def test_blend_weights_sum_to_one(length, tile, overlap):
    if 2 * overlap >= tile:
        return
    plan = plan_tiles(length, 1, SizeRule(), tile, overlap)
    scale = 3
    total = np.zeros(plan.padded[0] * scale)
    weights = axis_weights(plan.ys, plan.tile[0], plan.padded[0], scale)
    for start, w in zip(plan.ys, weights, strict=True):
        assert w.min() >= 0 and w.max() <= 1
        total[start * scale : (start + plan.tile[0]) * scale] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


@pytest.mark.parametrize("h,w", [(1, 1), (5, 97), (64, 64), (100, 37), (130, 129)])
@pytest.mark.parametrize("rule", [SizeRule(), SizeRule(min_size=24, multiple_of=8)])
def test_pointwise_model_is_reproduced_exactly(h, w, rule):
    """Padding, cutting, batching, blending and cropping lose nothing."""
    img = np.random.default_rng(h * w).random((3, h, w), dtype=np.float32)
    expected = img.repeat(2, axis=1).repeat(2, axis=2)
    for tile, overlap in ((0, None), (32, 8), (40, 0), (64, 16)):
        out = tiled_upscale(nearest(2), img, 2, rule, tile=tile, overlap=overlap, batch=3)
        np.testing.assert_allclose(out, expected, atol=1e-6)


def test_local_model_tiled_equals_untiled_when_overlap_covers_receptive_field():
    img = np.random.default_rng(0).random((3, 90, 110), dtype=np.float32)
    run = blur_then_nearest(2, radius=3)
    untiled = tiled_upscale(run, img, 2, SizeRule(), tile=0)
    # the discarded quarter of the overlap (3 px of 12) covers the receptive field (3 px)
    tiled = tiled_upscale(run, img, 2, SizeRule(), tile=40, overlap=12, batch=4)
    assert np.abs(tiled - untiled).max() < 1e-5
    # with too little overlap the tile borders show: the check above can fail
    short = tiled_upscale(run, img, 2, SizeRule(), tile=40, overlap=4, batch=4)
    assert np.abs(short - untiled).max() > 1e-3


def test_batch_size_does_not_change_the_result():
    img = np.random.default_rng(1).random((3, 70, 50), dtype=np.float32)
    run = blur_then_nearest(3, radius=2)
    seen = []

    def spy(x):
        seen.append(x.shape[0])
        return run(x)

    one = tiled_upscale(spy, img, 3, SizeRule(), tile=24, overlap=6, batch=1)
    assert set(seen) == {1}
    seen.clear()
    many = tiled_upscale(spy, img, 3, SizeRule(), tile=24, overlap=6, batch=4)
    assert max(seen) == 4 and sum(seen) == len(seen[:-1]) * 4 + seen[-1]
    np.testing.assert_allclose(one, many, atol=1e-6)


def test_static_shape_tiles_are_exactly_the_engine_shape():
    rule = SizeRule(min_size=32, static=(32, 48))
    shapes = set()

    def run(x):
        shapes.add(x.shape[2:])
        return nearest(2)(x)

    for h, w in ((10, 20), (32, 48), (70, 100), (33, 49)):
        img = np.random.default_rng(h).random((3, h, w), dtype=np.float32)
        out = tiled_upscale(run, img, 2, rule, tile=None, overlap=4)
        np.testing.assert_allclose(out, img.repeat(2, axis=1).repeat(2, axis=2), atol=1e-6)
    assert shapes == {(32, 48)}
    # a small image is padded up to the static shape even without tiling
    tiled_upscale(run, np.zeros((3, 20, 20), np.float32), 2, rule, tile=0)


@pytest.mark.parametrize(
    "rule,size,tile,overlap,message",
    [
        (SizeRule(min_size=64), (100, 100), 32, None, "smaller than the model's minimum"),
        (SizeRule(), (100, 100), 32, 16, "less than half the tile"),
        (SizeRule(), (100, 100), 32, -1, "--overlap must be >= 0"),
        (SizeRule(), (100, 100), -5, None, "--tile must be 0"),
        (SizeRule(max_size=(64, 64)), (100, 100), 0, None, "larger than the model's largest"),
        (SizeRule(max_size=(64, 64)), (100, 100), 128, None, "larger than the model's largest"),
        (SizeRule(static=(32, 32)), (100, 100), 64, None, "static input of 32x32"),
        (SizeRule(static=(32, 32)), (100, 100), 0, None, "does not fit the engine's static"),
    ],
)
def test_options_the_model_cannot_take_are_clear_errors(rule, size, tile, overlap, message):
    with pytest.raises(UserError, match=message):
        plan_tiles(*size, rule, tile, overlap)


def test_automatic_tile_respects_the_largest_input():
    plan = plan_tiles(1000, 1000, SizeRule(max_size=(256, 320)), None, None)
    assert max(plan.tile) <= 256 and plan.count > 1


def test_engine_shapes_become_size_rules():
    rule, fixed, most = engine_size_rule((1, 3, 64, 96))
    assert rule.static == (64, 96) and fixed == 1 and most is None
    rule, fixed, most = engine_size_rule((-1, 3, -1, -1), (1, 3, 16, 24), (8, 3, 512, 768))
    assert rule.static is None and rule.min_size == 24 and rule.max_size == (512, 768)
    assert fixed is None and most == 8
    rule, fixed, most = engine_size_rule((4, 3, -1, -1), (4, 3, 32, 32), (4, 3, 256, 256))
    assert fixed == 4 and rule.max_size == (256, 256)
    # the model's own rule (from the export metadata) tightens the profile's
    rule, _, _ = engine_size_rule((-1, 3, -1, -1), (1, 3, 16, 16), (1, 3, 256, 256), 32, 8)
    assert (rule.min_size, rule.multiple_of, rule.max_size) == (32, 8, (256, 256))
    with pytest.raises(UserError, match="one static and one dynamic"):
        engine_size_rule((1, 3, 64, -1), (1, 3, 64, 8), (1, 3, 64, 512))
    with pytest.raises(UserError, match="no optimization profile"):
        engine_size_rule((1, 3, -1, -1))
    with pytest.raises(UserError, match="expected NCHW"):
        engine_size_rule((3, 64, 64))


def test_engine_metadata_from_the_export_sidecar(tmp_path, engine_sidecar):
    engine = tmp_path / "m.engine"
    assert engine_metadata(engine) == (1, 1)
    req = json.dumps({"min_size": 16, "multiple_of": 8, "shape": "dynamic"})
    side = engine_sidecar(metadata={"size_requirements": req})
    (tmp_path / "m.engine.json").write_text(json.dumps(side.to_json()))
    assert engine_metadata(engine) == (16, 8)
    (tmp_path / "m.engine.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot read"):
        engine_metadata(engine)
    with pytest.raises(UserError, match="not an integer"):
        size_metadata({"size_requirements": '{"multiple_of": "eight"}'}, "x.onnx")


def test_scale_from_shapes():
    assert scale_from_shapes((2, 3, 16, 24), (2, 3, 64, 96)) == 4
    for bad in ((2, 3, 32, 72), (2, 3, 33, 48), (1, 3, 32, 48), (2, 1, 32, 48)):
        with pytest.raises(UserError):
            scale_from_shapes((2, 3, 16, 24), bad)


class FakeEngine(Backend):
    """Records the batch sizes it is called with."""

    def __init__(self, fixed=None, most=None):
        self.fixed_batch, self.max_batch, self.calls, self.scale = fixed, most, [], 2

    def _forward(self, batch):
        if self.fixed_batch:
            assert batch.shape[0] == self.fixed_batch
        if self.max_batch:
            assert batch.shape[0] <= self.max_batch
        self.calls.append(batch.shape[0])
        return nearest(2)(batch)


@pytest.mark.parametrize(
    "fixed,most,calls", [(4, None, [4, 4]), (None, 2, [2, 2, 2]), (None, None, [6])]
)
def test_backend_fits_batches_to_static_and_maximal_batch_sizes(fixed, most, calls):
    engine = FakeEngine(fixed, most)
    x = np.random.default_rng(0).random((6, 3, 5, 7), dtype=np.float32)
    out = engine.run(x)
    assert engine.calls == calls
    np.testing.assert_array_equal(out, nearest(2)(x))


@pytest.mark.parametrize("tile", [256, 512])
def test_default_overlap_recomputes_under_a_tenth_of_the_area(tile):
    """Tiles >= 256 with the default overlap compute < 1/0.9 of the image area, so tiled
    throughput stays >= 90% of untiled wherever the per-pixel cost does not grow."""
    for length in range(tile + 1, 4 * tile, 7):
        for width in (length, tile + 3, 3 * tile):
            plan = plan_tiles(length, width, SizeRule(), tile, None)
            computed = plan.count * plan.tile[0] * plan.tile[1]
            assert computed * 0.9 <= length * width, (length, width, plan)


def test_the_smallest_tiles_get_an_overlap_below_half_a_tile():
    """A static 7x7 engine works without --overlap (the 4 px floor would be over half of 7)."""
    from adaptsr.core.tiling import choose_tile

    assert [default_overlap(t) for t in (1, 7, 8, 9, 128, 512)] == [0, 3, 3, 4, 4, 16]
    assert choose_tile(SizeRule(static=(7, 7)), None, None) == ((7, 7), 3)
    image = np.random.default_rng(1).random((3, 20, 13), dtype=np.float32)
    out = tiled_upscale(
        lambda x: x.repeat(2, axis=2).repeat(2, axis=3), image, 2, SizeRule(static=(7, 7))
    )
    np.testing.assert_allclose(out, image.repeat(2, axis=1).repeat(2, axis=2), atol=1e-6)


def test_non_finite_inputs_and_model_outputs_are_refused_not_written_black():
    import pytest

    from adaptsr.core.errors import UserError
    from adaptsr.core.tiling import SizeRule, tiled_upscale

    image = np.random.default_rng(0).random((3, 20, 24), dtype=np.float32)
    nearest = lambda x: x.repeat(2, axis=2).repeat(2, axis=3)  # noqa: E731
    broken = lambda x: nearest(x) * np.float32("nan")  # noqa: E731
    np.testing.assert_allclose(
        tiled_upscale(nearest, image, 2, SizeRule(1, 1), tile=16),
        nearest(image[None])[0],
        atol=1e-6,
    )
    with pytest.raises(UserError, match="model returned NaN"):
        tiled_upscale(broken, image, 2, SizeRule(1, 1), tile=16)
    image[0, 5, 5] = np.inf
    with pytest.raises(UserError, match="input image holds NaN or infinite"):
        tiled_upscale(nearest, image, 2, SizeRule(1, 1), tile=16)
