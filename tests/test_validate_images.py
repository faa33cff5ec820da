"""The one image conversion (`fidkit._validate.as_image_batch`): layouts, torch tensors, float quantization.

Pure array tests, plus one small compute_stats / FeatureExtractor check that a tensor is read the same way
wherever it enters (4 tiny images through the random-weights network).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fidkit
from fidkit._validate import as_image_batch
from fidkit.errors import InputError

from stand_ins import FullIdentityMeanColour, noise_images


def images_nhwc(n: int = 4, h: int = 5, w: int = 7, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def as_nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_float_tensors_in_0_1_and_minus1_1_give_the_same_uint8_as_the_images(dtype):
    images = images_nhwc()
    # Every uint8 value, so every code is checked.
    images.reshape(-1)[:256] = np.arange(256, dtype=np.uint8)
    tensor = as_nchw(images)
    zero_one = (tensor.to(torch.float64) / 255).to(dtype)
    minus_one_one = (tensor.to(torch.float64) / 127.5 - 1).to(dtype)
    np.testing.assert_array_equal(as_image_batch(zero_one, "x", value_range=(0, 1)), images)
    np.testing.assert_array_equal(as_image_batch(minus_one_one, "x", value_range=(-1, 1)), images)


def test_uint8_tensor_numpy_floats_and_uint8_array_agree():
    images = images_nhwc(seed=1)
    tensor = as_nchw(images)
    np.testing.assert_array_equal(as_image_batch(tensor, "x"), images)
    # uint8 is used as it is; a value_range is not applied to it.
    np.testing.assert_array_equal(as_image_batch(tensor, "x", value_range=(-1, 1)), images)
    np.testing.assert_array_equal(
        as_image_batch(images.astype(np.float32) / 255, "x", value_range=(0, 1)), images
    )
    np.testing.assert_array_equal(
        as_image_batch(images.astype(np.float32) / 127.5 - 1, "x", value_range=(-1, 1)), images
    )
    # The uint8 numpy path is unchanged: no copy for contiguous RGB.
    assert as_image_batch(images, "x") is images


def test_grayscale_tensor_becomes_rgb():
    gray = np.random.default_rng(2).integers(0, 256, size=(3, 4, 5), dtype=np.uint8)
    out = as_image_batch(torch.from_numpy(gray)[:, None], "x")
    assert out.shape == (3, 4, 5, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=3))
    float_out = as_image_batch(torch.from_numpy(gray)[:, None].float() / 255, "x", value_range=(0, 1))
    np.testing.assert_array_equal(float_out, out)


def test_rounding_is_half_to_even_and_the_half_step_is_tolerated_on_both_paths():
    values = np.array([-0.5, 0.5, 1.5, 2.5, 3.49, 253.5, 254.5, 255.5])
    expected = np.array([0, 0, 2, 2, 3, 254, 254, 255], dtype=np.uint8)
    array = np.broadcast_to(values[None, None, :, None], (1, 1, values.size, 3)).copy()
    np.testing.assert_array_equal(as_image_batch(array, "x", value_range=(0, 255))[0, 0, :, 0], expected)
    tensor = torch.from_numpy(array).permute(0, 3, 1, 2)
    np.testing.assert_array_equal(as_image_batch(tensor, "x", value_range=(0, 255))[0, 0, :, 0], expected)


def test_a_requires_grad_tensor_is_accepted():
    tensor = torch.rand(2, 3, 4, 4, requires_grad=True)
    assert as_image_batch(tensor, "x", value_range=(0, 1)).shape == (2, 4, 4, 3)


@pytest.mark.parametrize(
    "make, value_range, words",
    [
        # a [-1, 1] tensor declared (0, 1) is caught, never clipped
        (lambda: torch.rand(2, 3, 4, 4) * 2 - 1, (0, 1), ["outside value_range=(0, 1)", "value_range=(-1, 1)"]),
        (lambda: torch.rand(2, 3, 4, 4) * 255, (0, 1), ["outside value_range", "(0, 255)"]),
        (lambda: torch.full((2, 3, 4, 4), 1 + 0.6 / 255), (0, 1), ["half a quantization step"]),
        (lambda: torch.rand(2, 3, 4, 4), None, ["value_range=(lo, hi)", "(0, 1) or (-1, 1)"]),
        (lambda: np.random.rand(2, 4, 4, 3), None, ["value_range=(lo, hi)"]),
        (lambda: np.random.rand(2, 4, 4, 3) * 2 - 1, (0, 1), ["value_range=(-1, 1)"]),
        (lambda: torch.full((2, 3, 4, 4), float("nan")), (0, 1), ["NaN or inf"]),
        (lambda: np.full((2, 4, 4, 3), np.inf), (0, 1), ["NaN or inf"]),
        (lambda: torch.zeros(2, 4, 4, 3, dtype=torch.uint8), None, ["channel-last", "x.permute(0, 3, 1, 2)"]),
        (lambda: np.zeros((2, 3, 4, 4), np.uint8), None, ["channel-first", "x.transpose(0, 2, 3, 1)"]),
        (lambda: torch.zeros(3, 4, 4, dtype=torch.uint8), None, ["x[:, None]", "x[None]"]),
        (lambda: torch.zeros(2, 2, 4, 4, dtype=torch.uint8), None, ["not a batch of images"]),
        (lambda: torch.zeros(2, 3, 4, 4, dtype=torch.int64), None, ["dtype torch.int64", "uint8"]),
        (lambda: torch.rand(2, 3, 4, 4), (1, 0), ["lo < hi"]),
        (lambda: torch.rand(2, 3, 4, 4), "0-1", ["pair (lo, hi)"]),
    ],
)
def test_bad_inputs_are_refused_with_what_to_do(make, value_range, words):
    with pytest.raises(InputError) as caught:
        as_image_batch(make(), "images", value_range=value_range)
    message = str(caught.value)
    assert message.startswith("images") or message.startswith("value_range")
    for word in words:
        assert word in message, message


def test_compute_stats_and_the_extractor_read_a_tensor_as_nchw(extractor, fidkit_home):
    import fidkit

    images = images_nhwc(n=4, h=8, w=8, seed=3)
    tensor = as_nchw(images)
    from_array = fidkit.compute_stats(images, extractor=extractor, use_cache=False)
    from_tensor = fidkit.compute_stats(tensor, extractor=extractor, use_cache=False)
    np.testing.assert_array_equal(from_tensor.mu, from_array.mu)
    np.testing.assert_array_equal(from_tensor.sigma, from_array.sigma)
    # A generator of tensors (the training-loop idiom) and the extractor itself take the same layout.
    from_batches = fidkit.compute_stats(iter([tensor[:2], tensor[2:]]), extractor=extractor)
    np.testing.assert_array_equal(from_batches.mu, from_array.mu)
    np.testing.assert_array_equal(extractor(tensor), extractor(images))
    # Floats without a value range are refused by compute_stats with what to do.
    with pytest.raises(InputError, match="value_range"):
        fidkit.compute_stats(tensor.float() / 255, extractor=extractor)


# --- hostile round 3, 7: value_range extremes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value_range, message",
    [
        ((-1e308, 1e308), "span hi - lo overflows"),
        ((-1.5e308, 0.5e308), "span hi - lo overflows"),
        ((0.0, 1e-320), "quantization step"),
        ((5e-324, 1e-310), "quantization step"),
        ((1e20, 1e20 + 1e5), "quantization step"),
        ((-3.0, -3.0 + 1e-14), "quantization step"),
        ((0.0, float("inf")), "finite with lo < hi"),
        ((float("-inf"), 0.0), "finite with lo < hi"),
        ((float("nan"), 1.0), "finite with lo < hi"),
        ((1.0, 1.0), "finite with lo < hi"),
        ((1.0, -1.0), "finite with lo < hi"),
        (("0", "1"), "pair"),
        ((0.0, 1.0, 2.0), "pair"),
        ((False, True), "pair"),
        (1.0, "pair"),
    ],
)
def test_value_ranges_that_cannot_quantize_are_refused_before_any_image(value_range, message) -> None:
    from fidkit._validate import as_image_batch, check_value_range

    with pytest.raises(InputError, match=message):
        check_value_range(value_range)
    with pytest.raises(InputError, match=message):
        as_image_batch(np.zeros((1, 4, 4, 3), np.float32), "x", value_range=value_range)


@pytest.mark.parametrize("value_range", [(0.0, 1e-300), (-1.7e308, 1.0e-300), (1e20, 1e21), (-1e-3, 1e-3), (0.0, 255.0)])
def test_extreme_but_representable_value_ranges_quantize_every_level(value_range) -> None:
    from fidkit._validate import as_image_batch

    lo, hi = value_range
    levels = np.arange(256, dtype=np.float64)
    images = (lo + levels / 255 * (hi - lo)).reshape(1, 16, 16, 1)
    quantized = as_image_batch(images, "x", value_range=value_range)
    np.testing.assert_array_equal(quantized[0, :, :, 0].ravel(), levels.astype(np.uint8))


# --- hostile round 5, 1: images without pixels; 'meta' and sparse tensors -------------------------------------------


@pytest.mark.parametrize("batch", [
    np.zeros((2, 0, 16, 3), np.uint8), np.zeros((2, 16, 0), np.uint8), torch.zeros((2, 3, 16, 0), dtype=torch.uint8),
    torch.zeros((2, 1, 0, 5), dtype=torch.uint8),
])
def test_images_without_pixels_are_refused_naming_the_shape(batch):
    with pytest.raises(InputError, match=r"images must have H, W >= 1"):
        as_image_batch(batch, "x", value_range=(0, 1))
    with pytest.raises(InputError, match=r"images must have H, W >= 1"):
        fidkit.compute_stats(batch, extractor=FullIdentityMeanColour(), use_cache=False)
    with pytest.raises(InputError, match=r"images must have H, W >= 1"):
        fidkit.FID(reference=batch, extractor=FullIdentityMeanColour())


def test_meta_and_sparse_tensors_are_refused():
    with pytest.raises(InputError, match="'meta' device holds no pixels"):
        as_image_batch(torch.empty((4, 3, 8, 6), dtype=torch.uint8, device="meta"), "x")
    with pytest.raises(InputError, match="'meta' device"):
        as_image_batch(torch.empty((4, 3, 8, 6), device="meta"), "x", value_range=(0, 1))
    with pytest.raises(InputError, match=r"sparse.*to_dense"):
        as_image_batch(torch.zeros((4, 3, 8, 6)).to_sparse(), "x", value_range=(0, 1))
    metric = fidkit.FID(reference=noise_images(20, 0), extractor=FullIdentityMeanColour())
    with pytest.raises(InputError, match="'meta' device"):
        metric.update(torch.empty((4, 3, 8, 6), dtype=torch.uint8, device="meta"))


# --- hostile round 8, 2: a single RGBA (H, W, 4) or LA (H, W, 2) image is not H grayscale images -------------------


@pytest.mark.parametrize(("height", "width", "channels", "kind", "fix"), [
    (32, 32, 4, "an RGBA image", "x[None, ..., :3]"),
    (17, 45, 4, "an RGBA image", "x[None, ..., :3]"),
    (300, 7, 2, "an LA image", "x[None, ..., :1]"),
    (9, 64, 2, "an LA image", "x[None, ..., :1]"),
    (20, 30, 3, "", "x[None]"),
    (23, 11, 1, "", "x[None]"),
])
def test_a_single_image_with_or_without_alpha_is_refused_everywhere_it_enters(
    tmp_path, height, width, channels, kind, fix
) -> None:
    from fidkit._validate import check_image_array

    image = np.random.default_rng(height).integers(0, 256, (height, width, channels), dtype=np.uint8)
    message = rf"shape \({height}, {width}, {channels}\) looks like a single \(H, W, {channels}\) image; add a batch"
    for call in (
        lambda: as_image_batch(image, "x"),
        lambda: check_image_array(image.dtype, image.shape, "x"),  # a .npy header, the CLI
        lambda: fidkit.compute_stats(image, extractor=FullIdentityMeanColour(), use_cache=False),
        lambda: fidkit.compute_stats([image] * 3, extractor=FullIdentityMeanColour(), use_cache=False),
        lambda: fidkit.FID(extractor=FullIdentityMeanColour()).update(image),
        lambda: fidkit.FID(reference=image, extractor=FullIdentityMeanColour()),
    ):
        with pytest.raises(InputError, match=message) as caught:
            call()
        assert fix in str(caught.value) and kind in str(caught.value) and "(N, H, W, 1)" in str(caught.value)
    np.save(tmp_path / "one.npy", image)
    with pytest.raises(InputError, match=message):
        fidkit.compute_stats(tmp_path / "one.npy", extractor=FullIdentityMeanColour(), use_cache=False)
    # What the message says to do is accepted, as that one image.
    done = as_image_batch(eval(fix, {"x": image}), "x")
    assert done.shape == (1, height, width, 3)


@pytest.mark.parametrize("channels", [2, 4])
def test_a_batch_with_alpha_is_told_to_drop_it_numpy_and_torch(channels) -> None:
    batch = np.random.default_rng(channels).integers(0, 256, (5, 12, 10, channels), dtype=np.uint8)
    keep = ":3" if channels == 4 else ":1"
    with pytest.raises(InputError, match=rf"drop the alpha channel with x\[\.\.\., {keep}\]"):
        as_image_batch(batch, "x")
    with pytest.raises(InputError, match=rf"drop the alpha channel with x\[:, {keep}\]"):
        as_image_batch(torch.from_numpy(batch).permute(0, 3, 1, 2), "x")
    assert as_image_batch(batch[..., : 3 if channels == 4 else 1], "x").shape == (5, 12, 10, 3)


@pytest.mark.parametrize("shape", [(6, 9, 5), (3, 2, 8), (40, 3, 300)])
def test_grayscale_batches_wider_than_4_pixels_are_still_grayscale_and_narrow_ones_have_a_spelling(shape) -> None:
    gray = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    np.testing.assert_array_equal(as_image_batch(gray, "x"), np.repeat(gray[..., None], 3, axis=3))
    narrow = gray[:, :, :4]  # 4 pixels wide: as 3-D it reads as one RGBA image; (N, H, W, 1) says what it is
    with pytest.raises(InputError, match="single"):
        as_image_batch(narrow, "x")
    np.testing.assert_array_equal(as_image_batch(narrow[..., None], "x"), np.repeat(narrow[..., None], 3, axis=3))


# --- hostile round 8, 6: ml_dtypes' bfloat16 (JAX, TensorFlow) is a floating-point type -----------------------------


def test_bfloat16_and_float8_numpy_arrays_are_floats_for_images_and_features() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from fidkit._validate import check_features

    images = images_nhwc(n=3, h=6, w=5, seed=8)
    images.reshape(-1)[:256] = np.arange(256, dtype=np.uint8)
    for dtype in (ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn):
        # Values a bfloat16 holds exactly: each level of (x / 255) rounded to the type, quantized back.
        unit = (images.astype(np.float32) / 255).astype(dtype)
        expected = as_image_batch(unit.astype(np.float32), "x", value_range=(0, 1))
        np.testing.assert_array_equal(as_image_batch(unit, "x", value_range=(0, 1)), expected)
        if dtype is ml_dtypes.bfloat16:  # 8 bits of mantissa: every level of [0, 1] comes back
            np.testing.assert_array_equal(expected, images)
        with pytest.raises(InputError, match="floating-point images need their value range"):
            as_image_batch(unit, "x")
        metric = fidkit.FID(extractor=FullIdentityMeanColour(), value_range=(0, 1))
        metric.update(unit)
        np.testing.assert_array_equal(metric._extractor.get().calls[-1], expected)
        rows = np.random.default_rng(1).normal(size=(20, 4)).astype(dtype)
        checked = check_features(rows, "rows")
        assert checked.dtype == np.float32
        np.testing.assert_array_equal(checked, rows.astype(np.float32))
    a = np.random.default_rng(2).normal(size=(30, 4)).astype(ml_dtypes.bfloat16)
    b = (np.random.default_rng(3).normal(size=(30, 4)) + 0.5).astype(ml_dtypes.bfloat16)
    assert float(fidkit.fid_from_arrays(a, b)) == float(fidkit.fid_from_arrays(a.astype(np.float32),
                                                                                b.astype(np.float32)))
    # Integer types of ml_dtypes are not floats: refused as any other integer image type.
    with pytest.raises(InputError, match="convert it to uint8 yourself"):
        as_image_batch(np.zeros((1, 4, 4, 3), dtype=ml_dtypes.int4), "x")


# --- review of round 8 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 40])
@pytest.mark.parametrize("make", ["sparse", "meta", "int"])
def test_a_tensor_of_any_size_is_refused_for_its_kind_before_it_is_cut_into_chunks(monkeypatch, n, make) -> None:
    from fidkit import _validate

    monkeypatch.setattr(_validate, "_CHUNK_PIXELS", 3 * 6 * 5 * 4)  # 4 images a chunk: 40 are quantized in 10
    dense = torch.rand(n, 3, 6, 5)
    tensor = {"sparse": dense.to_sparse(), "meta": dense.to("meta"), "int": (dense * 9).to(torch.int32)}[make]
    words = {"sparse": "sparse_coo tensor; pass dense images", "meta": "'meta' device holds no pixels",
             "int": "got dtype torch.int32; convert it to uint8 yourself"}[make]
    with pytest.raises(InputError, match=words):
        _validate.as_image_array(tensor, "the reference", (0, 1))
    with pytest.raises(InputError, match=words):
        fidkit.FID(reference=tensor, extractor=FullIdentityMeanColour(), value_range=(0, 1))
    with pytest.raises(InputError, match="floating-point images need their value range"):
        _validate.as_image_array(dense, "x", None)  # without a range: refused before the first chunk is quantized


def test_a_refused_extension_float_array_names_its_own_dtype() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from fidkit._validate import as_image_array

    images = np.random.default_rng(5).random((3, 6, 5, 3)).astype(ml_dtypes.bfloat16)
    for refuse in (lambda: as_image_batch(images, "x"), lambda: as_image_array(images, "x", None)):
        with pytest.raises(InputError, match=r"got dtype bfloat16; floating-point images need their value range"):
            refuse()
    with pytest.raises(InputError, match=r"a 2-D bfloat16 array \(3, 90\) looks like feature rows"):
        as_image_batch(images.reshape(3, -1), "x")


@pytest.mark.parametrize(("value_range", "high", "levels"),
                         [((0, 1), 1, "0..255"), ((0, 1000), 255, "0..65"), ((-1, 1), 1, "128..255"),
                          ((0, 10), 7, "0..178")])
def test_the_uint8_range_warning_says_which_levels_the_values_would_have_under_the_range(
    value_range, high, levels
) -> None:
    from fidkit._validate import uint8_range_hint

    images = np.zeros((2, 4, 4, 3), np.uint8)
    images[0, 0, 0, 0] = high
    hint = uint8_range_hint(images, value_range, "x")
    assert f"as 0..255 pixels (levels 0..{high}, where values of the range would quantize to levels {levels})" in hint
    assert "nearly black" not in hint  # not true of pixels up to 255, under (0, 1000)
