"""Slant and ink of images, and their correlation between style sources and outputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispart.evaluation.image_style import ink, slant, style_correlation


def stroke(k: float, x0: float = 14.0, rows: range = range(4, 24), size: int = 28,
           value: float = 1.0) -> np.ndarray:
    """(size, size) image of the line x = x0 + k * (y - rows.start), y down, one unit of ink per
    row split between the two nearest columns (so each row's ink centroid is exactly on it)."""
    img = np.zeros((size, size))
    for y in rows:
        x = x0 + k * (y - rows.start)
        lo = int(np.floor(x))
        frac = x - lo
        img[y, lo] += value * (1 - frac)
        if frac:
            img[y, lo + 1] += value * frac
    return img


def test_slant_of_a_stroke_is_its_shear_with_y_down():
    imgs = np.stack([stroke(0.3, 8), stroke(-0.3, 20), stroke(0.0), stroke(0.55, 3)])
    # x grows going down the rows: positive ("\"); a handwritten right lean ("/"): negative
    assert slant(imgs) == pytest.approx([0.3, -0.3, 0.0, 0.55], abs=1e-9)


def test_slant_of_a_blob_and_of_mirrored_images():
    rng = np.random.default_rng(0)
    blob = np.zeros((1, 28, 28))
    blob[0, 10:18, 10:18] = 1.0  # symmetric square: no shear
    assert slant(blob) == pytest.approx([0.0], abs=1e-12)
    imgs = rng.random((5, 28, 28))
    assert slant(np.flip(imgs, axis=-1)) == pytest.approx(-slant(imgs), abs=1e-9)


def test_ink_of_a_known_image():
    img = np.zeros((2, 4, 5))
    img[0, 1, 2] = 1.0
    img[0, 3, :] = 0.5
    img[1] = 1.0
    assert ink(img) == pytest.approx([(1 + 5 * 0.5) / 20, 1.0])


def test_values_outside_the_pixel_range_are_clipped():
    img = np.full((1, 4, 4), -0.2)
    img[0, 0, 0] = 1.7
    assert ink(img) == pytest.approx([1 / 16])


def test_blank_and_single_row_images_give_zero_without_warnings():
    imgs = np.zeros((3, 28, 28))
    imgs[1, 5, 3:9] = 1.0  # a horizontal bar: mu02 = 0
    imgs[2] = -0.1  # negative everywhere: no ink once clipped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert slant(imgs).tolist() == [0.0, 0.0, 0.0]
        out = style_correlation(imgs, imgs)
        assert style_correlation(np.zeros((4, 8, 8)), np.zeros((4, 8, 8))) == {
            "slant_corr": 0.0, "ink_corr": 0.0, "n": 4}
        assert style_correlation(imgs[:1], imgs[:1])["slant_corr"] == 0.0
    assert all(np.isfinite(v) for v in out.values())


def _varied_set(n: int = 12, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([stroke(k, 8 + 4 * rng.random(), value=v)
                     for k, v in zip(rng.uniform(-0.3, 0.3, n), rng.uniform(0.3, 1.0, n), strict=True)])


def test_style_correlation_identical_and_mirrored_sets():
    imgs = _varied_set()
    same = style_correlation(imgs, imgs.copy())
    assert same["slant_corr"] == pytest.approx(1.0) and same["ink_corr"] == pytest.approx(1.0)
    assert same["n"] == len(imgs)
    mirrored = style_correlation(imgs, np.flip(imgs, axis=-1))
    assert mirrored["slant_corr"] == pytest.approx(-1.0)
    assert mirrored["ink_corr"] == pytest.approx(1.0)  # mirroring keeps the ink
    # unrelated outputs: far from the goal of 0.8
    shuffled = style_correlation(imgs, _varied_set(seed=2))
    assert abs(shuffled["slant_corr"]) < 0.8 and abs(shuffled["ink_corr"]) < 0.8
    with pytest.raises(ValueError):
        style_correlation(imgs, imgs[:3])
    with pytest.raises(ValueError):
        slant(imgs[0])


@settings(max_examples=40, deadline=None)
@given(k=st.floats(-0.4, 0.4), x0=st.floats(13.0, 14.0), dx=st.integers(-4, 4),
       dy=st.integers(-3, 3), scale=st.floats(0.05, 1.0))
def test_slant_is_translation_invariant_and_ink_linear(k, x0, dx, dy, scale):
    base = stroke(k, x0)
    moved = stroke(k, x0 + dx, rows=range(4 + dy, 24 + dy))  # inside: columns 1.4..26.6
    assert np.allclose(moved[4 + dy:24 + dy, max(dx, 0):28 + min(dx, 0)],
                       base[4:24, max(-dx, 0):28 + min(-dx, 0)])  # the same stroke, moved
    assert slant(moved[None])[0] == pytest.approx(slant(base[None])[0], abs=1e-9)
    assert slant(base[None])[0] == pytest.approx(k, abs=1e-9)
    assert ink(scale * base[None])[0] == pytest.approx(scale * ink(base[None])[0])
    assert slant(scale * base[None])[0] == pytest.approx(k, abs=1e-9)


def test_within_digit_correlations_take_the_digit_out_of_ink():
    """Outputs of the other digit with the style source's stroke weight and slant: the digit's own
    ink (a block only digit 1 has) swamps the raw ink correlation, the within-digit one is 1."""
    rng = np.random.default_rng(3)
    n = 40
    slants, weights = rng.uniform(-0.3, 0.3, n), rng.uniform(0.3, 1.0, n)
    src_digit = np.arange(n) % 2
    out_digit = 1 - src_digit

    def draw(k: float, w: float, digit: int) -> np.ndarray:
        img = stroke(k, value=w)
        if digit == 1:
            img[20:27, 1:8] = 1.0  # far from the stroke: ink of the digit, not of the style
        return img

    src = np.stack([draw(k, w, d) for k, w, d in zip(slants, weights, src_digit, strict=True)])
    out = np.stack([draw(k, w, d) for k, w, d in zip(slants, weights, out_digit, strict=True)])
    raw = style_correlation(src, out)
    within = style_correlation(src, out, src_digit, out_digit)
    assert raw["ink_corr"] < 0.0  # the block flips sides: content, not style
    assert within["ink_corr"] == raw["ink_corr"] and within["n"] == n
    assert within["ink_corr_within_digit"] == pytest.approx(1.0)
    same = style_correlation(src, src.copy(), src_digit, src_digit)
    assert same["slant_corr_within_digit"] == pytest.approx(1.0)
    assert same["ink_corr_within_digit"] == pytest.approx(1.0)
    assert "ink_corr_within_digit" not in raw and "ink_corr_ceiling" not in raw
    # these outputs are a digit-keeping transfer: the ceiling is what they show, up to the
    # sampling of the digit means; outputs of the source's own digit reach 1
    assert within["ink_corr_ceiling"] == pytest.approx(raw["ink_corr"], abs=0.05)
    assert same["ink_corr_ceiling"] == pytest.approx(1.0) and same["slant_corr_ceiling"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="both"):
        style_correlation(src, out, src_digit, None)
    with pytest.raises(ValueError, match="labels"):
        style_correlation(src, out, src_digit[:3], out_digit)


def test_digit_keeping_ceiling_by_hand():
    """values 1, 3 (digit 0) and 10, 12 (digit 1), each output asked for the other digit: digit
    means 2 and 11, so an exact transfer gives 11 + (1 - 2), 11 + (3 - 2), 2 + (10 - 11),
    2 + (12 - 11) = 10, 12, 1, 3; the ceiling is their Pearson correlation with 1, 3, 10, 12."""
    from dispart.evaluation.image_style import _digit_keeping_ceiling

    values = np.array([1.0, 3.0, 10.0, 12.0])
    got = _digit_keeping_ceiling(values, np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0]))
    assert got == pytest.approx(np.corrcoef(values, [10.0, 12.0, 1.0, 3.0])[0, 1])
    assert got < 0  # the digit dominates these values: a digit-keeping transfer anti-correlates
    # a digit no style source has falls back to the overall mean (6.5)
    got = _digit_keeping_ceiling(values, np.array([0, 0, 1, 1]), np.array([7, 0, 1, 1]))
    assert got == pytest.approx(np.corrcoef(values, [6.5 - 1, 3.0, 10.0, 12.0])[0, 1])
