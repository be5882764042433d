"""Evaluation, generation and training read latent roles from the models' declarations (issue 9):
no latent-name conventions, dynamic latents pooled over valid frames, training mode restored."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.distributions import Independent

from dispart.batches.batch import Sequences
from dispart.batches.modality import DIGIT_IMAGE, DIGIT_LABEL, SPEECH, ModalitySpec
from dispart.batches.sets import ModalitySet
from dispart.config import EvalConfig
from dispart.errors import RunDirError
from dispart.evaluation.evaluate import evaluate_model
from dispart.evaluation.latents import pool_frames, speech_latents
from dispart.evaluation.table import (
    PurityRow,
    content_row_keys,
    read_evaluation_json,
    row_role,
    rows_to_markdown,
    write_evaluation_json,
)
from dispart.models.base import LossOutput, MultimodalModel
from dispart.models.latents import Latent, declare
from dispart.nn.encoders import diag_gaussian

pytestmark = pytest.mark.usefixtures("single_thread")


def _gaussian(mean: Tensor) -> Independent:
    return diag_gaussian(mean, torch.zeros_like(mean))


class FrameModel(MultimodalModel):
    """A sequence modality ("audio") with 2-dim frames. Its dynamic content latent "track" is the frames
    themselves (posterior mean = x_t), its static style latent "onset" the first frame. The
    names and symbols follow no convention of today's models."""

    name = "frames"

    def __init__(self) -> None:
        super().__init__([ModalitySpec("audio", "sequence", (2,))])
        self.scale = nn.Parameter(torch.ones(()))
        self.latents = declare(
            Latent("track", 2, ("audio",), "content", dynamic=True, symbol="c_{1:T}"),
            Latent("onset", 2, ("audio",), "style", symbol="o"))

    def encode(self, batch):
        x: Sequences = batch["audio"]
        return {"track": _gaussian(x.data * self.scale), "onset": _gaussian(x.data[:, 0] * self.scale)}

    def loss(self, batch) -> LossOutput:  # not needed here
        raise NotImplementedError


class GridModel(MultimodalModel):
    """One image modality with a content latent "shape" and a style latent "ink" (2-dim each).
    The decoder writes shape[:, 0] into pixel (0, 0) and ink[:, 0] into pixel (0, 1), so every
    grid cell shows which column / row fed it."""

    name = "gridmodel"

    def __init__(self) -> None:
        super().__init__([ModalitySpec("image", "image", (1, 28, 28))])
        self.scale = nn.Parameter(torch.ones(()))
        self.latents = declare(Latent("shape", 2, ("image",), "content", symbol="s"),
                               Latent("ink", 2, ("image",), "style", symbol="k"))

    def encode(self, batch):
        flat = batch["image"].flatten(1) * self.scale
        return {"shape": _gaussian(flat[:, :2]), "ink": _gaussian(flat[:, 2:4])}

    def decode_params(self, latents, modality, lengths=None) -> Tensor:
        shape, ink = latents["shape"], latents["ink"]
        out = torch.zeros(len(shape), 1, 28, 28)
        out[:, 0, 0, 0], out[:, 0, 0, 1] = shape[:, 0], ink[:, 0]
        return out * self.scale

    def loss(self, batch) -> LossOutput:
        raise NotImplementedError


# --------------------------------------------------------------------------- dynamic latents


def test_pool_frames_averages_valid_frames_only():
    z = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                      [[5.0, -1.0], [7.0, 1.0], [9.0, 3.0]]])
    pooled = pool_frames(z, torch.tensor([2, 3]))
    np.testing.assert_allclose(pooled.numpy(), [[2.0, 3.0], [7.0, 1.0]])  # by hand
    np.testing.assert_allclose(pool_frames(z).numpy(), z.numpy().mean(axis=1))
    with pytest.raises(ValueError, match="lengths must be in"):
        pool_frames(z, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"\(B, T, D\)"):
        pool_frames(z[:, 0])


def test_speech_latents_pool_a_dynamic_latent_over_each_utterance():
    rng = np.random.default_rng(0)
    features = [rng.standard_normal((t, 2)).astype(np.float32) for t in (5, 2, 9, 3)]
    model = FrameModel()
    z = speech_latents(model, features, batch_size=3)
    assert z["track"].shape == (4, 2) and z["onset"].shape == (4, 2)
    want = np.stack([f.mean(axis=0) for f in features])  # padding frames excluded
    np.testing.assert_allclose(z["track"], want, rtol=1e-6)
    np.testing.assert_allclose(z["onset"], np.stack([f[0] for f in features]))


def test_evaluate_model_clusters_the_pooled_dynamic_latent_and_records_roles():
    # Two classes whose frames after the first sit around (+-4, 0); the first frame (the style
    # latent) is noise. Pooled over frames the content latent separates the classes exactly.
    rng = np.random.default_rng(1)
    features, labels = [], []
    for i in range(40):
        y = i % 2
        f = rng.normal(0, 0.3, (int(rng.integers(4, 12)), 2)).astype(np.float32)
        f[1:, 0] += 4.0 if y else -4.0
        f[0] = rng.normal(0, 3.0, 2)
        features.append(f)
        labels.append(str(y))
    speech = ModalitySet(features, labels, speakers=["s"] * 40)
    result = evaluate_model(FrameModel(), "Frames", {"audio": speech}, EvalConfig(n_clusters=2, k_max=3))
    rows = {r["latent"]: r for r in result["rows"]}
    assert set(rows) == {"c_{1:T}", "o"}  # the declared symbols
    assert rows["c_{1:T}"]["role"] == "content" and rows["o"]["role"] == "style"
    assert rows["c_{1:T}"]["purity"] == 1.0
    assert rows["o"]["purity"] < 0.9
    assert set(result["inertia"]) == {"speech/c_{1:T}", "speech/o"}
    assert result["latents"]["track"]["dynamic"] is True
    assert content_row_keys(result["rows"]) == ["speech/c_{1:T}"]


# --------------------------------------------------------------------------- Table 1 by role


def test_table_groups_rows_by_recorded_role_and_old_rows_by_symbol():
    rows = [
        PurityRow("M", "speech", "c^1", 0.9, "content"),
        PurityRow("M", "image", "s^i", 0.2, "style"),
        PurityRow("VAE-sp", "speech", "z", 0.5),  # an old row: no role, "z" is content
        PurityRow("M", "speech", "s^a", 0.3, "style"),
        PurityRow("M", "image", "c^2", 0.8, "content"),
        PurityRow("Old", "speech", "q", 0.4),  # old row, unknown symbol: a line of its own
    ]
    body = [[c.strip() for c in line.strip("|").split("|")]
            for line in rows_to_markdown(rows, paper=None).splitlines()[2:]]
    assert body == [["VAE-sp", "z", "50.00", "-", "-"],
                    ["M", "c^1", "90.00", "c^2", "80.00"],
                    ["M", "s^a", "30.00", "s^i", "20.00"],
                    ["Old", "q", "40.00", "-", "-"]]
    assert [row_role(r) for r in rows] == ["content", "style", "content", "style", "content", None]
    assert row_role({"latent": "z^a"}) == "style" and row_role({"latent": "w", "role": "content"}) \
        == "content"
    with pytest.raises(ValueError, match="role of M/speech/c"):
        PurityRow("M", "speech", "c", 0.5, "semantic")


def test_rows_keep_their_old_json_and_add_role_only_when_known(tmp_path):
    path = tmp_path / "e.json"
    write_evaluation_json(path, {"old": PurityRow("PVAE", "image", "z^s", 1.0),
                                 "new": PurityRow("PVAE", "image", "z^s", 1.0, "content")})
    back = read_evaluation_json(path)
    assert back["old"] == {"model": "PVAE", "modality": "image", "latent": "z^s", "purity": 1.0}
    assert back["new"] == {**back["old"], "role": "content"}
    assert PurityRow(**back["new"]) == PurityRow("PVAE", "image", "z^s", 1.0, "content")


# --------------------------------------------------------------------------- grids by role


def test_grid_takes_content_and_style_latents_from_the_declarations():
    from dispart.generation.grids import (
        content_latent,
        decode_grid,
        infer_latents,
        is_partitioned,
        style_latent,
    )

    model = GridModel()
    assert (content_latent(model, "image"), style_latent(model, "image")) == ("shape", "ink")
    assert is_partitioned(model, ["image"])
    images = np.zeros((5, 28, 28), np.float32)
    images[:, 0, 0] = np.arange(5)  # shape[:, 0] of item i is i
    images[:, 0, 2] = 10 + np.arange(5)  # ink[:, 0] of item i is 10 + i
    sem = infer_latents(model, "image", list(images[:3]), "shape", ids=["a", "b", "c"])
    sty = infer_latents(model, "image", list(images[3:]), "ink", ids=["R0", "R1"])
    grid = decode_grid(model, sem, sty, "image")
    assert grid.shape == (2, 3)
    for r in range(2):
        for c in range(3):
            assert grid.cells[r][c][0, :2].tolist() == [c, 13 + r]
            assert grid.record[r][c] == {"shape": "abc"[c], "ink": f"R{r}"}
    with pytest.raises(ValueError, match="content latent 'ink' does not feed"):
        decode_grid(model, sty, sty, "image")


def test_models_without_a_style_latent_have_no_partition():
    from dispart.generation.grids import is_partitioned, partition
    from dispart.models import build_model

    model = build_model({"name": "jmvae_kl", "modalities": [SPEECH.to_dict(), DIGIT_IMAGE.to_dict()],
                         "latent_dim": 4, "hidden": 8})
    with pytest.raises(RunDirError, match="one content latent and one style latent"):
        partition(model, "image")
    with pytest.raises(RunDirError, match="no 'label' modality"):
        partition(model, "label")
    assert not is_partitioned(model, ["audio", "image"])


# --------------------------------------------------------------------------- training mode


@pytest.fixture(scope="module")
def pvae():
    from dispart.models import build_model

    torch.manual_seed(0)
    return build_model({"name": "pvae", "modalities": [SPEECH.to_dict(), DIGIT_IMAGE.to_dict(),
                                                       DIGIT_LABEL.to_dict()],
                        "semantic_dim": 4, "style_dim": 3, "hidden": 8, "allow_missing": True})


def _examples(n: int = 6):
    rng = np.random.default_rng(0)
    speech = [rng.standard_normal((int(t), 80)).astype(np.float32) for t in rng.integers(4, 9, n)]
    images = rng.random((n, 28, 28)).astype(np.float32)
    y = torch.arange(n) % 3
    batch = {"audio": Sequences.from_list(speech), "image": torch.as_tensor(images)[:, None],
             "label": y}
    return speech, images, batch, y


def _calls(model):
    from dispart.evaluation.latents import image_latents
    from dispart.evaluation.likelihood import likelihood_table, log_marginal
    from dispart.evaluation.subsets import evaluate_subsets, label_judge
    from dispart.generation.grids import decode_grid, infer_latents, shared_latent_rows
    from dispart.generation.quality import decode_batch

    speech, images, batch, y = _examples()

    def grid() -> None:
        sem = infer_latents(model, "image", list(images[:2]), "z_s")
        sty = infer_latents(model, "image", list(images[2:4]), "z_image")
        decode_grid(model, sem, sty, "image")

    def fig2() -> None:
        with pytest.raises(RunDirError):  # PVAE has two latents per modality
            shared_latent_rows(model, "image", list(images[:2]))

    return {
        "speech_latents": lambda: speech_latents(model, speech),
        "image_latents": lambda: image_latents(model, images),
        "evaluate_subsets": lambda: evaluate_subsets(model, batch, y.numpy(), {"label": label_judge},
                                                     n_clusters=2, subsets=[("image",)]),
        "likelihood_table": lambda: likelihood_table(model, batch, "image", "label", k=2, k_given=2),
        "log_marginal": lambda: log_marginal(model, {"image": batch["image"]}, ["image"], k=2),
        "decode_batch": lambda: decode_batch(model, {"z_s": np.zeros((2, 4), np.float32),
                                                     "z_image": np.zeros((2, 3), np.float32)},
                                             "image"),
        "infer_latents": lambda: infer_latents(model, "audio", speech[:2], "z_audio"),
        "decode_grid": grid,
        "shared_latent_rows": fig2,
    }


@pytest.mark.parametrize("name", ["speech_latents", "image_latents", "evaluate_subsets",
                                  "likelihood_table", "log_marginal", "decode_batch",
                                  "infer_latents", "decode_grid", "shared_latent_rows"])
@pytest.mark.parametrize("training", [True, False])
def test_evaluation_and_generation_restore_the_training_mode(pvae, name, training):
    pvae.train(training)
    _calls(pvae)[name]()
    assert pvae.training is training
    assert all(m.training is training for m in pvae.modules())


# --------------------------------------------------------------------------- purity monitor


@pytest.mark.parametrize(("content", "style", "stops"), [(0.95, 0.1, True), (0.85, 0.99, False)])
def test_monitor_stops_on_the_declared_content_latents(monkeypatch, content, style, stops):
    from dispart.training import monitor

    rows = [PurityRow("monitor", "speech", "c_{1:T}", content, "content").to_dict(),
            PurityRow("monitor", "speech", "o", style, "style").to_dict(),
            PurityRow("monitor", "image", "w", 0.97, "content").to_dict()]
    monkeypatch.setattr(monitor, "evaluate_model", lambda *a, **k: {"rows": rows})
    logged = {}
    module = SimpleNamespace(model=None, log=lambda key, value, **k: logged.__setitem__(key, value))
    cb = monitor.PurityMonitor(SimpleNamespace(modalities=[]), EvalConfig(),
                               every=1, stop_at=0.9)
    assert cb._evaluate(1, module) is stops
    assert logged == {"eval/purity/speech/c_{1:T}": content, "eval/purity/speech/o": style,
                      "eval/purity/image/w": 0.97}
    assert json.loads(json.dumps(cb.history))[0]["purity"]["speech/o"] == style
