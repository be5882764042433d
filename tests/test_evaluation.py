"""Tests of dispart.evaluation: purity, inertia/elbow, linear probe, tables, JSON, plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from threadpoolctl import threadpool_limits

from dispart.batches.modality import ModalitySpec
from dispart.batches.sets import ModalitySet
from dispart.config import EvalConfig
from dispart.errors import DataError
from dispart.evaluation.clustering import (
    cluster_purity,
    estimate_num_classes,
    inertia_curve,
    kmeans_purity,
    linear_probe_accuracy,
)
from dispart.evaluation.evaluate import evaluate_model
from dispart.evaluation.plots import plot_inertia, plot_tsne
from dispart.evaluation.table import (
    PAPER_TABLE1,
    PurityRow,
    probes_to_markdown,
    read_evaluation_json,
    rows_to_markdown,
    write_evaluation_json,
)
from dispart.models.base import LossOutput, MultimodalModel
from dispart.models.latents import Latent, declare
from dispart.nn.encoders import diag_gaussian

PNG_HEADER = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Single BLAS/OpenMP thread: on a busy shared CPU, spinning threads make this ~20x slower."""
    with threadpool_limits(limits=1):
        yield


def _blobs(n_centers: int, n: int = 1000, dim: int = 8, seed: int = 0):
    return make_blobs(
        n_samples=n, centers=n_centers, n_features=dim, cluster_std=0.5, random_state=seed
    )


# --------------------------------------------------------------------------- purity


def test_purity_hand_computed() -> None:
    # cluster 0 = {0, 0, 1} -> 2 ; cluster 1 = {1, 1, 2} -> 2 ; (2 + 2) / 6
    assert cluster_purity(np.array([0, 0, 1, 1, 1, 2]), np.array([0, 0, 0, 1, 1, 1])) == (
        pytest.approx(4 / 6)
    )
    # unequal cluster sizes: {a, a, a, b} -> 3, {b} -> 1, {c, a} -> 1 ; 5 / 7
    labels = np.array(["a", "a", "a", "b", "b", "c", "a"])
    clusters = np.array([5, 5, 5, 5, 9, 2, 2])
    assert cluster_purity(labels, clusters) == pytest.approx(5 / 7)


def test_purity_perfect_and_single_cluster() -> None:
    labels = np.repeat(np.arange(10), 7)
    assert cluster_purity(labels, labels + 100) == 1.0
    # one cluster holding everything: purity = majority fraction
    labels = np.array([0, 0, 0, 1, 2])
    assert cluster_purity(labels, np.zeros(5, dtype=int)) == pytest.approx(3 / 5)
    # every point its own cluster -> 1.0
    assert cluster_purity(labels, np.arange(5)) == 1.0


def test_purity_invariant_to_cluster_id_permutation() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=300)
    clusters = rng.integers(0, 7, size=300)
    perm = rng.permutation(7) + 40
    p = cluster_purity(labels, clusters)
    assert cluster_purity(labels, perm[clusters]) == pytest.approx(p)
    assert 0.0 < p < 1.0


@pytest.mark.parametrize(
    ("labels", "clusters", "name"),
    [
        ([0, 1, 2], [0, 1], "clusters"),
        ([], [], "labels"),
        ([0, 1], [], "clusters"),
        ([[0, 1]], [0, 1], "labels"),
    ],
)
def test_purity_validation_names_argument(labels, clusters, name) -> None:
    with pytest.raises(ValueError, match=name):
        cluster_purity(np.asarray(labels), np.asarray(clusters))


def test_kmeans_purity_blobs_and_noise() -> None:
    x, y = _blobs(10, n=1000, dim=8)
    assert kmeans_purity(x, y, n_clusters=10) == 1.0
    # labels independent of the latents: purity near chance (0.1) for 10 balanced classes
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(2000, 16))
    random_labels = np.repeat(np.arange(10), 200)
    rng.shuffle(random_labels)
    assert kmeans_purity(noise, random_labels, n_clusters=10) < 0.3
    with pytest.raises(ValueError, match="labels"):
        kmeans_purity(x, y[:-1])


# --------------------------------------------------------------------------- inertia and elbow


def test_inertia_curve_monotone_and_keys() -> None:
    x, _ = _blobs(10, n=600, dim=32)
    curve = inertia_curve(x, ks=range(1, 16))
    assert list(curve) == list(range(1, 16))
    values = np.array(list(curve.values()))
    assert np.all(np.diff(values) <= 0.0)
    assert values[0] > 50 * values[-1] > 0
    # noise without cluster structure is monotone too (warm-started k-means)
    noise = np.random.default_rng(0).normal(size=(300, 4))
    values = np.array(list(inertia_curve(noise, ks=[1, 2, 3, 5, 8, 13]).values()))
    assert np.all(np.diff(values) <= 0.0)
    with pytest.raises(ValueError, match="ks"):
        inertia_curve(noise, ks=[0, 1])


@pytest.mark.parametrize(("n_centers", "seed"), [(10, 0), (10, 3), (4, 0), (4, 5)])
def test_estimate_num_classes_on_blobs(n_centers: int, seed: int) -> None:
    x, _ = _blobs(n_centers, n=1000, dim=16, seed=seed)
    assert estimate_num_classes(inertia_curve(x, ks=range(1, 21))) == n_centers


def test_estimate_num_classes_synthetic_curves() -> None:
    # scale-free: multiplying inertia does not move the knee
    curve = {k: (100.0 / k if k <= 6 else 100.0 / 6 * 0.98 ** (k - 6)) for k in range(1, 21)}
    k_hat = estimate_num_classes(curve)
    assert k_hat == 6
    assert estimate_num_classes({k: 1e6 * v for k, v in curve.items()}) == k_hat
    # flat curve: no elbow -> smallest k
    assert estimate_num_classes({k: 5.0 for k in range(2, 9)}) == 2
    with pytest.raises(ValueError, match="at least 3"):
        estimate_num_classes({1: 3.0, 2: 1.0})


# --------------------------------------------------------------------------- linear probe


def test_linear_probe_separable_vs_random() -> None:
    x, y = _blobs(5, n=600, dim=8, seed=2)
    acc = linear_probe_accuracy(x[:400], y[:400], x[400:], y[400:])
    assert acc == 1.0
    rng = np.random.default_rng(0)
    y_rand = rng.integers(0, 5, size=600)
    acc_rand = linear_probe_accuracy(x[:400], y_rand[:400], x[400:], y_rand[400:])
    assert acc_rand < 0.4
    with pytest.raises(ValueError, match="two distinct"):
        linear_probe_accuracy(x[:10], np.zeros(10), x[10:20], y[10:20])
    with pytest.raises(ValueError, match="test_latents"):
        linear_probe_accuracy(x[:400], y[:400], x[400:, :3], y[400:])


# --------------------------------------------------------------------------- probes in evaluate_model


class _ProbeModel(MultimodalModel):
    """A 2x2 "image" modality and a "audio" sequence modality of 2-dim frames. For each, the content
    latent's posterior mean is the first two inputs (pixels / the mean frame), the style latent's
    the last two: the tests put the class (or the speaker) into some of them and noise elsewhere."""

    name = "probe"

    def __init__(self) -> None:
        super().__init__([ModalitySpec("image", "image", (1, 2, 2)), ModalitySpec("audio", "sequence", (4,))])
        self.unused = torch.nn.Parameter(torch.zeros(()))  # latent inference reads the device from it
        self.latents = declare(
            Latent("c", 2, ("image", "audio"), "content", symbol="c"),
            Latent("s_image", 2, ("image",), "style", symbol="s^i"),
            Latent("s_audio", 2, ("audio",), "style", symbol="s^a"))

    def encode(self, batch):
        def g(m):
            return diag_gaussian(m, torch.zeros_like(m))
        if "image" in batch:
            x = batch["image"].flatten(1)
            return {"c": g(x[:, :2]), "s_image": g(x[:, 2:])}
        x = batch["audio"].data.mean(dim=1)
        return {"c": g(x[:, :2]), "s_audio": g(x[:, 2:])}

    def loss(self, batch) -> LossOutput:
        raise NotImplementedError


def _class_means(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n points of k well separated 2-d classes (labels, points) and nothing else."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    angles = 2 * np.pi * y / k
    return y, np.stack([np.cos(angles), np.sin(angles)], axis=1) * 5 + rng.normal(0, 0.3, (n, 2))


def _probe_sets(seed: int, n: int, digit_in_style: bool):
    """image and audio sets: the digit (5 classes) in the content latent (and, if asked, in the
    speech style latent too), the speaker (4) in the speech style latent, noise elsewhere."""
    rng = np.random.default_rng(seed + 100)
    y, c = _class_means(n, 5, seed)
    images = np.concatenate([c, rng.normal(0, 1, (n, 2))], axis=1).reshape(n, 1, 2, 2).astype(np.float32)
    spk, sp = _class_means(n, 4, seed + 1)
    style = c if digit_in_style else sp
    frames = [np.tile(np.concatenate([c[i], style[i]]), (3, 1)).astype(np.float32) for i in range(n)]
    labels = [str(v) for v in y]
    speakers = [f"spk{v}" for v in spk]
    return {"image": ModalitySet(images, labels), "audio": ModalitySet(frames, labels, speakers=speakers)}


@pytest.mark.parametrize("digit_in_style", [False, True])
def test_label_and_speaker_probes_bite(digit_in_style: bool) -> None:
    """The class probe is near 1 for a latent that carries the class and near chance for noise; the
    speaker probe near 1 for the latent with the speaker; chance levels are the test's majority share."""
    train, test = _probe_sets(0, 400, digit_in_style), _probe_sets(1, 300, digit_in_style)
    res = evaluate_model(_ProbeModel(), "Probe", test, EvalConfig(n_clusters=5, k_max=6), train_sets=train)
    acc, chance = res["label_probe_accuracy"], res["label_probe_chance"]
    assert set(acc) == {"c", "s^a", "image/c", "image/s^i"} == set(chance)
    want_chance = max(test["audio"].labels.count(str(k)) for k in range(5)) / 300
    assert chance["c"] == pytest.approx(want_chance) and chance["image/c"] == pytest.approx(want_chance)
    assert acc["c"] > 0.95 and acc["image/c"] > 0.95
    assert acc["image/s^i"] < 2 * chance["image/s^i"]  # noise: about chance
    if digit_in_style:
        assert acc["s^a"] > 0.95  # the style latent carries the digit: the probe says so
    else:
        assert acc["s^a"] < 2 * chance["s^a"]  # the speaker only: the digit is not in it
    spk, spk_chance = res["speaker_probe_accuracy"], res["speaker_probe_chance"]
    assert set(spk) == {"c", "s^a"}  # speech latents only; images have no speakers
    speakers = test["audio"].speakers
    assert spk_chance["c"] == pytest.approx(max(speakers.count(f"spk{k}") for k in range(4)) / 300)
    if digit_in_style:
        assert spk["s^a"] < 2 * spk_chance["s^a"]
    else:
        assert spk["s^a"] > 0.95 and spk["c"] < 2 * spk_chance["c"]
    md = probes_to_markdown(res)
    lines = md.splitlines()
    assert lines[0].startswith("| Latent | Label probe (%) | Label chance (%) | Label / chance | Speaker")
    row = next(line for line in lines if line.startswith("| image/s^i |"))
    assert row.endswith("| - | - | - |")  # no speaker probe for images
    assert f"{100 * acc['c']:.2f}" in next(line for line in lines if line.startswith("| c |"))


def test_probes_are_skipped_without_training_classes_and_capped(monkeypatch) -> None:
    """No probe when the test has classes (or speakers) the training split lacks; the probes fit on
    at most PROBE_MAX_TRAIN training examples; an old result without probes renders no table."""
    import dispart.evaluation.evaluate as ev

    train, test = _probe_sets(0, 200, False), _probe_sets(1, 100, False)
    new_speakers = ModalitySet(test["audio"].examples, test["audio"].labels,
                               speakers=["new"] * 100)
    res = evaluate_model(_ProbeModel(), "Probe", {"audio": new_speakers}, EvalConfig(n_clusters=5, k_max=6),
                         train_sets=train)
    assert res["speaker_probe_accuracy"] == {} and set(res["label_probe_accuracy"]) == {"c", "s^a"}
    other = ModalitySet(test["audio"].examples, ["x"] * 100, speakers=test["audio"].speakers)
    res = evaluate_model(_ProbeModel(), "Probe", {"audio": other}, EvalConfig(n_clusters=1, k_max=3),
                         train_sets=train)
    assert res["label_probe_accuracy"] == {} and set(res["speaker_probe_accuracy"]) == {"c", "s^a"}
    seen: list[int] = []
    real = ev.linear_probe_accuracy

    def counting(z_tr, y_tr, *rest, **kw):
        seen.append(len(z_tr))
        return real(z_tr, y_tr, *rest, **kw)

    monkeypatch.setattr(ev, "linear_probe_accuracy", counting)
    monkeypatch.setattr(ev, "PROBE_MAX_TRAIN", 50)
    res = evaluate_model(_ProbeModel(), "Probe", test, EvalConfig(n_clusters=5, k_max=6), train_sets=train)
    assert seen and set(seen) == {50}  # 200 training examples, 50 fit each probe
    assert res["label_probe_accuracy"]["c"] > 0.9
    assert probes_to_markdown({"rows": []}) == ""
# --------------------------------------------------------------------------- table


def test_paper_table1_transcription() -> None:
    ti, secu = PAPER_TABLE1["TIDIGIT-MNIST"], PAPER_TABLE1["SecuVoice-MNIST"]
    assert len(ti) == len(secu) == 12
    assert ti[("PVAE", "speech", "z^s")] == 99.77
    assert ti[("PVAE (no CM)", "image", "z^i")] == 21.73
    assert ti[("VAE-im", "image", "z")] == secu[("VAE-im", "image", "z")] == 76.38
    assert secu[("JMVAE-kl", "speech", "z")] == 64.43
    assert secu[("PVAE", "speech", "z^a")] == 25.78
    assert ("VAE-sp", "image", "z") not in ti


def _rows() -> list[PurityRow]:
    return [
        PurityRow("PVAE", "image", "z^i", 0.2063),
        PurityRow("MyModel", "speech", "z^s", 0.5),
        PurityRow("PVAE", "speech", "z^a", 0.2479),
        PurityRow("PVAE", "speech", "z^s", 0.9977),
        PurityRow("VAE-sp", "speech", "z", 0.45734),
        PurityRow("PVAE", "image", "z^s", 0.991),
        PurityRow("VAE-im", "image", "z", 0.7638),
    ]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_rows_to_markdown_layout_and_cells() -> None:
    md = rows_to_markdown(_rows(), paper="TIDIGIT-MNIST")
    lines = md.strip().splitlines()
    header = _cells(lines[0])
    assert header[:5] == ["Model", "Speech Lat.", "Speech Pur.(%)", "Image Lat.", "Image Pur.(%)"]
    assert len(header) == 7
    body = [_cells(line) for line in lines[2:]]
    assert [row[0] for row in body] == ["VAE-sp", "VAE-im", "PVAE", "MyModel", "PVAE"]
    assert body[0] == ["VAE-sp", "z", "45.73", "-", "-", "45.73", "-"]
    assert body[1] == ["VAE-im", "-", "-", "z", "76.38", "-", "76.38"]
    assert body[2] == ["PVAE", "z^s", "99.77", "z^s", "99.10", "99.77", "99.10"]
    assert body[3] == ["MyModel", "z^s", "50.00", "-", "-", "-", "-"]
    # style latents come after all z / z^s rows, speech z^a paired with image z^i
    assert body[4] == ["PVAE", "z^a", "24.79", "z^i", "20.63", "24.79", "20.63"]

    plain = rows_to_markdown(_rows(), paper=None)
    assert all(len(_cells(line)) == 5 for line in plain.strip().splitlines())
    secu = rows_to_markdown(_rows(), paper="SecuVoice-MNIST")
    assert "| PVAE | z^s | 99.77 | z^s | 99.10 | 99.30 | 99.02 |" in secu


def test_table_validation() -> None:
    with pytest.raises(ValueError, match="purity"):
        PurityRow("PVAE", "speech", "z^s", 99.77)  # percent instead of fraction
    with pytest.raises(ValueError, match="modality"):
        PurityRow("PVAE", "audio", "z^s", 0.5)
    with pytest.raises(ValueError, match="paper"):
        rows_to_markdown(_rows(), paper="MNIST")
    with pytest.raises(ValueError, match="more than one"):
        rows_to_markdown(_rows() + [PurityRow("PVAE", "image", "z^i", 0.3)])


# --------------------------------------------------------------------------- JSON


def test_json_round_trip(tmp_path: Path) -> None:
    payload = {
        "purity": {"PVAE": {"speech": {"z^s": np.float32(0.5), "z^a": 0.25}}},
        "n_test": np.int64(1200),
        "inertia": [[1, 10.0], [2, 4.5]],
        "estimated_k": 10,
        "row": PurityRow("PVAE", "image", "z^s", 1.0),
        "name": "run-1",
    }
    path = tmp_path / "sub" / "eval.json"
    write_evaluation_json(path, payload)
    text = path.read_text()
    back = read_evaluation_json(path)
    assert back["purity"]["PVAE"]["speech"] == {"z^s": 0.5, "z^a": 0.25}
    assert isinstance(back["purity"]["PVAE"]["speech"]["z^s"], float)
    assert back["n_test"] == 1200 and isinstance(back["n_test"], int)
    assert back["row"] == {"model": "PVAE", "modality": "image", "latent": "z^s", "purity": 1.0}
    assert isinstance(back["row"]["purity"], float)
    assert back["inertia"] == [[1, 10.0], [2, 4.5]] and back["name"] == "run-1"
    keys = list(json.loads(text))
    assert keys == sorted(keys)
    # the re-written file is identical (sorted keys, deterministic formatting)
    write_evaluation_json(tmp_path / "again.json", back)
    assert (tmp_path / "again.json").read_text() == text


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"a": NaN}', '{"a": 1e999}', ""])
def test_json_malformed_names_path(tmp_path: Path, content: str) -> None:
    path = tmp_path / "broken.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="broken.json") as info:
        read_evaluation_json(path)
    assert isinstance(info.value, DataError)


def test_json_write_rejects_nan(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bad.json"):
        write_evaluation_json(tmp_path / "bad.json", {"purity": float("nan")})
    assert not (tmp_path / "bad.json").exists()


# --------------------------------------------------------------------------- plots


def _assert_png(path: Path) -> None:
    assert path.is_file()
    assert path.stat().st_size > 1024
    assert path.read_bytes()[:8] == PNG_HEADER


def test_plot_inertia_writes_png(tmp_path: Path) -> None:
    x, _ = _blobs(4, n=200, dim=4)
    curves = {"speech z^s": inertia_curve(x, ks=range(1, 9)), "image z^s": {1: 9.0, 2: 3.0, 3: 2.0}}
    path = tmp_path / "figs" / "inertia.png"
    plot_inertia(curves, path, estimated={"speech z^s": 4})
    _assert_png(path)
    with pytest.raises(ValueError, match="estimated"):
        plot_inertia(curves, tmp_path / "x.png", estimated={"other": 3})


def test_plot_tsne_writes_png_with_markers_and_subsampling(tmp_path: Path) -> None:
    x, y = _blobs(10, n=300, dim=8)
    path = tmp_path / "tsne.png"
    plot_tsne(x, y, path, title="z^s (speech)")
    _assert_png(path)

    modality = np.array(["speech"] * 150 + ["image"] * 150)
    pooled = tmp_path / "pooled.png"
    plot_tsne(x, y, pooled, title="z^s pooled", markers=modality, max_points=120)
    _assert_png(pooled)
    # deterministic: same inputs, same seed -> identical image
    again = tmp_path / "pooled2.png"
    plot_tsne(x, y, again, title="z^s pooled", markers=modality, max_points=120)
    assert again.read_bytes() == pooled.read_bytes()
    with pytest.raises(ValueError, match="markers"):
        plot_tsne(x, y, tmp_path / "bad.png", title="t", markers=modality[:10])
    # many labels (e.g. speakers, string ids): colours repeat, no per-label legend, still a PNG
    speakers = np.array([f"spk{i % 37:02d}" for i in range(len(y))])
    many = tmp_path / "speakers.png"
    plot_tsne(x, speakers, many, title="z^a by speaker", max_points=150)
    _assert_png(many)
