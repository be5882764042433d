"""GRID end to end: `dispart train` on audio + video frames of the same clips (data.loader=grid,
pairing by example), then `dispart evaluate`; and the checks of the new data.loader / data.pairing
fields, which need no GRID data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from grid_helpers import grid_subset

from dispart.batches.pipeline import load_experiment_data
from dispart.cli import main
from dispart.config import load_config
from dispart.errors import ConfigError
from dispart.evaluation.clustering import kmeans_purity
from dispart.evaluation.latents import modality_latents
from dispart.runs import load_run
from dispart.training.run import model_hparams

ROOT = Path(__file__).parents[1]
N_CLIPS = 25  # every 5th is test: 20 training and 5 test clips

pytestmark = pytest.mark.usefixtures("single_thread")


def _digit_words(root: Path) -> dict[str, str]:
    """clip id -> the spoken digit: the 5th word of the alignment that is not silence."""
    out = {}
    for p in sorted((root / "align").glob("*.align")):
        words = [w for w in p.read_text().split()[2::3] if w not in ("sil", "sp")]
        out[p.stem] = words[4]
    return out


def test_grid_config_is_valid_and_names_the_loader():
    cfg = load_config(ROOT / "configs" / "grid_pvae.yaml")
    assert (cfg.data.loader, cfg.data.pairing) == ("grid", "example")
    assert cfg.model.modalities == ["audio", "video"]


@pytest.mark.slow
def test_pvae_trains_and_evaluates_on_grid_audio_and_video(tmp_path: Path):
    root = grid_subset(tmp_path, N_CLIPS)
    run = tmp_path / "run"
    overrides = [f"data.audio={root}", "model.hidden=16", "model.semantic_dim=4", "model.style_dim=4",
                 "train.epochs=1", "train.batch_size=8", "train.progress_bar=false",
                 "train.log_every_n_steps=1", "eval.n_clusters=5", "eval.k_max=5"]
    assert main(["train", str(ROOT / "configs" / "grid_pvae.yaml"), "--out", str(run), *overrides]) == 0
    words = _digit_words(root)
    ids = sorted(words)
    test_ids = ids[::5]
    info = json.loads((run / "run.json").read_text())["data"]
    assert (info["loader"], info["pairing"]) == ("grid", "example")
    assert info["n_speech_train"] == info["n_video_train"] == N_CLIPS - len(test_ids) == 20
    assert info["n_speech_test"] == info["n_video_test"] == 5
    assert info["classes"] == sorted({words[i] for i in ids if i not in test_ids})
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["loader"] == "grid" and saved["model"]["modalities"] == ["audio", "video"]

    assert main(["evaluate", str(run), "--no-curves"]) == 0
    result = json.loads((run / "evaluation.json").read_text())
    assert result["n_test"] == {"audio": 5, "video": 5}
    loaded = load_run(run)
    rows = {(r["modality"], r["latent"]): r["purity"] for r in result["rows"]}
    declared = {(m, v.symbol) for v in loaded.model.latents.values() for m in v.modalities}
    assert set(rows) == {("speech" if m == "audio" else m, s) for m, s in declared}
    # the video purities again, from the test clips loaded here and labels read from the alignments
    data = load_experiment_data(loaded.config.data, progress=False, normalizer=loaded.normalizer)
    video = data.split("video", "test")
    assert video.ids == test_ids
    y = np.unique([words[i] for i in test_ids], return_inverse=True)[1]
    z = modality_latents(loaded.model, "video", video.examples)
    for name, latent in loaded.model.latents.items():
        if "video" in latent.modalities:
            expected = kmeans_purity(z[name], y, n_clusters=5, seed=loaded.config.eval.seed)
            assert rows[("video", latent.symbol)] == pytest.approx(expected)


def test_loader_and_pairing_are_checked_with_the_field_named(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"data\.loader='tidigits': unknown corpus loader"):
        load_config(None, ["data.loader=tidigits"])
    with pytest.raises(ConfigError, match=r"data\.loader='grid\+': unknown corpus loader"):
        load_config(None, ["data.loader=grid+"])
    with pytest.raises(ConfigError, match=r"data\.pairing='random': unknown value; expected one of "
                                          r"\['auto', 'label', 'example'\]"):
        load_config(None, ["data.pairing=random"])
    assert load_config(None, ["data.loader=speech+mnist"]).data.loader == "speech+mnist"
    # speech and MNIST come from two corpora: their example ids cannot be joined
    cfg = load_config(None, ["data.pairing=example"])
    with pytest.raises(ConfigError, match="data.pairing=example: the modalities"):
        load_experiment_data(cfg.data, progress=False)
    # an explicit loader list gives the same data as auto
    auto = load_experiment_data(load_config(None, ["model.modalities=[image]"]).data, speech=False,
                                progress=False)
    named = load_experiment_data(load_config(None, ["data.loader=mnist"]).data, progress=False)
    assert auto.modalities == named.modalities == ["image", "label"]
    np.testing.assert_array_equal(auto.split("image", "test").examples, named.split("image", "test").examples)
    # "video" is a modality only GRID data describes: with speech and MNIST it is unknown
    cfg = load_config(None, ["model.modalities=[audio, video]"])
    with pytest.raises(ConfigError, match=r"model\.modalities: unknown \['video'\]"):
        model_hparams(cfg, load_experiment_data(cfg.data, progress=False))
