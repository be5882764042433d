"""Denoising evaluation (fixed-region corruption, PSNR / SSIM on the region) and probe curves."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dispart.evaluation.denoising import (
    REGIONS,
    central_frames,
    corrupt,
    denoising_table,
    region_box,
    region_scores,
)
from dispart.evaluation.probe_curve import probe_curve, stratified_subset, time_average


def _videos(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 10, 3, 64, 64)).astype(np.float32)


def test_corruption_touches_only_its_region_and_frames() -> None:
    clean = _videos()
    assert central_frames() == (2, 3, 4, 5, 6, 7)
    for name, (left, top, right, bottom) in REGIONS.items():
        noisy = corrupt(clean, name, sigma=0.3, seed=1)
        inside = np.zeros(clean.shape, bool)
        inside[:, 2:8, :, top:bottom, left:right] = True
        np.testing.assert_array_equal(noisy[~inside], clean[~inside])  # bit for bit
        assert (noisy[inside] != clean[inside]).mean() > 0.9  # clipping leaves a few equal
        assert noisy.min() >= 0.0 and noisy.max() <= 1.0 and noisy.dtype == clean.dtype
        assert 0.2 < np.std(noisy[inside] - clean[inside]) < 0.3  # sigma 0.3, less after clipping
        np.testing.assert_array_equal(noisy, corrupt(clean, name, sigma=0.3, seed=1))  # seeded
        assert not np.array_equal(noisy, corrupt(clean, name, sigma=0.3, seed=2))
    assert REGIONS == {"mouth": (20, 40, 44, 56), "eyes": (14, 16, 50, 30)}
    box = corrupt(clean, (0, 0, 2, 1), frames=[9], sigma=0.5)  # an explicit box and frame
    changed = np.argwhere(box != clean)
    assert set(changed[:, 1]) == {9} and set(changed[:, 3]) == {0} and set(changed[:, 4]) <= {0, 1}
    t = torch.from_numpy(clean)
    out = corrupt(t, "eyes", seed=1)
    assert isinstance(out, torch.Tensor) and out.dtype == t.dtype
    np.testing.assert_array_equal(out.numpy(), corrupt(clean, "eyes", seed=1))
    assert np.array_equal(t.numpy(), clean)  # the input is not modified
    with pytest.raises(ValueError, match="unknown region 'nose'"):
        corrupt(clean, "nose")
    with pytest.raises(ValueError, match=r"frames \[10\] are outside a 10-frame sequence"):
        corrupt(clean, frames=[10])
    with pytest.raises(ValueError, match="does not fit in 64 x 64"):
        region_box((60, 0, 70, 4), 64, 64)


def test_region_scores_match_a_hand_computed_case() -> None:
    clean = np.full((2, 10, 3, 64, 64), 0.5, np.float32)
    restored = clean.copy()
    left, top, right, bottom = REGIONS["mouth"]
    restored[:, 2:8, :, top:bottom, left:right] += 0.1  # uniform error 0.1 on the scored pixels
    restored[:, :2] = 1.0  # errors elsewhere are not scored
    restored[:, 2:8, :, :top] = 0.0
    scores = region_scores(clean, restored, "mouth")
    assert scores["psnr"] == pytest.approx(20.0, abs=1e-4)  # 10 log10(1 / 0.1^2)
    c1 = (0.01 * 1.0) ** 2  # constant images: SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)
    assert scores["ssim"] == pytest.approx((2 * 0.5 * 0.6 + c1) / (0.5**2 + 0.6**2 + c1), abs=1e-4)
    assert scores["n"] == 2
    exact = region_scores(clean, clean, "eyes")
    assert math.isinf(exact["psnr"]) and exact["ssim"] == pytest.approx(1.0)
    clipped = region_scores(clean, clean + 2.0, "mouth")  # restored values are clipped to [0, 1]
    assert clipped["psnr"] == pytest.approx(10 * math.log10(1 / 0.25), abs=1e-4)
    with pytest.raises(ValueError, match="restored videos have shape"):
        region_scores(clean, clean[:1], "mouth")


def test_denoising_table_runs_every_restorer_on_every_region() -> None:
    clean = _videos(4)
    seen = []

    def oracle(noisy: np.ndarray) -> np.ndarray:
        seen.append(noisy.copy())
        return clean

    restorers = {"identity": lambda v: v, "oracle": oracle, "grey": lambda v: np.full_like(v, 0.5)}
    table = denoising_table(restorers, clean, sigma=0.2, seed=3)
    assert list(table) == ["mouth", "eyes"]
    assert list(table["mouth"]) == ["noisy", "identity", "oracle", "grey"]
    for region, row in table.items():
        assert row["identity"] == row["noisy"]  # identity restores nothing
        assert math.isinf(row["oracle"]["psnr"]) and row["oracle"]["ssim"] == pytest.approx(1.0)
        assert row["noisy"]["psnr"] > row["grey"]["psnr"] and row["noisy"]["n"] == 4
        assert set(row["noisy"]) == {"psnr", "ssim", "n"} and all(isinstance(v, float | int)
                                                                 for v in row["noisy"].values())
        assert region in REGIONS
    np.testing.assert_array_equal(seen[0], corrupt(clean, "mouth", sigma=0.2, seed=3))
    t = denoising_table({"same": lambda v: v}, torch.from_numpy(clean), regions=["eyes"], baseline=None)
    assert list(t["eyes"]) == ["same"]
    with pytest.raises(ValueError, match="restorer 'bad' returned shape"):
        denoising_table({"bad": lambda v: v[:, :5]}, clean)


def test_probe_curve_on_separable_latents() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, (4, 8))
    y_tr, y_te = rng.integers(0, 4, 800), rng.integers(0, 4, 200)
    x_tr = centres[y_tr] + rng.normal(0, 1, (800, 8))
    x_te = centres[y_te] + rng.normal(0, 1, (200, 8))
    labels = np.array(["blue", "green", "red", "white"])
    curve = probe_curve(x_tr, labels[y_tr], x_te, labels[y_te], seeds=(0, 1))
    assert curve["classes"] == ["blue", "green", "red", "white"] and curve["n_train"] == 800
    assert [r["fraction"] for r in curve["rows"]] == [0.01, 0.05, 0.1, 0.25, 0.5, 1.0]
    assert [r["n_labelled"] for r in curve["rows"]] == [8, 40, 80, 200, 400, 800]
    for r in curve["rows"]:
        assert len(r["accuracies"]) == 2 and r["mean"] > 0.9 and not r["raised_to_classes"]
    assert 0.2 < curve["chance"] < 0.35
    noise = probe_curve(rng.normal(size=(800, 8)), labels[y_tr], rng.normal(size=(200, 8)), labels[y_te],
                        fractions=(1.0,), seeds=(0,))
    assert noise["rows"][0]["mean"] < 0.4  # no information, about chance


def test_small_fractions_are_stratified_or_refused() -> None:
    labels = np.array(["a"] * 90 + ["b"] * 9 + ["c"])
    idx, raised = stratified_subset(labels, 0.05, seed=0)
    assert len(idx) == 5 and not raised and set(labels[idx]) == {"a", "b", "c"}  # every class
    assert list(np.sort(stratified_subset(labels, 1.0, seed=4)[0])) == list(range(100))
    assert not np.array_equal(idx, stratified_subset(labels, 0.05, seed=1)[0])
    counts = {c: int((labels[stratified_subset(labels, 0.5, seed=0)[0]] == c).sum()) for c in "abc"}
    assert counts == {"a": 44, "b": 5, "c": 1}  # one each, the other 47 shared 89 : 8 : 0 (43.1, 3.9)
    with pytest.raises(ValueError, match="fraction 0.01 of 100 training examples is 1, fewer than the 3"):
        stratified_subset(labels, 0.01, seed=0)
    idx, raised = stratified_subset(labels, 0.01, seed=0, too_few="one_per_class")
    assert raised and sorted(labels[idx]) == ["a", "b", "c"]
    x = np.random.default_rng(0).normal(size=(100, 3))
    with pytest.raises(ValueError, match="fewer than the 3 classes"):
        probe_curve(x, labels, x, labels)
    row = probe_curve(x, labels, x, labels, fractions=(0.01,), seeds=(0,), too_few="one_per_class")["rows"][0]
    assert row["raised_to_classes"] and row["n_labelled"] == 3


def test_time_average_pools_valid_frames() -> None:
    z = np.arange(2 * 4 * 3, dtype=np.float64).reshape(2, 4, 3)
    np.testing.assert_allclose(time_average(z), z.mean(axis=1))
    np.testing.assert_allclose(time_average(torch.from_numpy(z), [2, 4]), [z[0, :2].mean(0), z[1].mean(0)])
    with pytest.raises(ValueError, match="lengths must be 2 values in 1..4"):
        time_average(z, [0, 4])
