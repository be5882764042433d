"""Config loading/overrides, augmentation, DDP batch sharding, data-dir discovery."""

import numpy as np
import pytest

from dispart.cli import find_data
from dispart.config import load_config
from dispart.data.paired import LengthBucketSampler
from dispart.errors import ConfigError
from dispart.features.augment import RandomWarp, warp_features
from dispart.training.datamodule import ShardedBatchSampler
from dispart.training.run import model_hparams


def test_every_table1_config_builds_its_model():
    expected = {"pvae": ("pvae", 10.0), "pvae_no_cm": ("pvae", 0.0), "jmvae_kl": ("jmvae_kl", None),
                "vae_sp": ("vae", None), "vae_im": ("vae", None)}
    for name, (model, alpha_cm) in expected.items():
        cfg = load_config(f"configs/{name}.yaml")
        h = model_hparams(cfg)
        assert h["name"] == model
        if alpha_cm is not None:
            assert h["alpha_cm"] == alpha_cm and h["alpha_ch"] == 0.1 and h["margin"] == 0.5
    assert model_hparams(load_config("configs/jmvae_kl.yaml"))["latent_dim"] == 96
    assert [m["name"] for m in model_hparams(load_config("configs/vae_im.yaml"))["modalities"]] \
        == ["image"]
    paper = load_config("configs/pvae.yaml").train
    assert (paper.lr, list(paper.betas), paper.batch_size) == (1e-3, [0.95, 0.999], 256)


def test_overrides_are_typed_and_unknown_fields_named(tmp_path):
    cfg = load_config("configs/pvae.yaml", ["train.epochs=7", "data.cache_dir=null",
                                            "model.alpha_cm=0"])
    assert cfg.train.epochs == 7 and cfg.data.cache_dir is None and cfg.model.alpha_cm == 0
    with pytest.raises(ConfigError, match="train.epoch"):
        load_config("configs/pvae.yaml", ["train.epoch=7"])
    with pytest.raises(ConfigError, match="section.field=value"):
        load_config(None, ["epochs"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  nme: pvae\n")
    with pytest.raises(ConfigError, match="model.nme"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="unknown model"):
        model_hparams(load_config(None, ["model.name=vqvae"]))


def test_warp_moves_mel_energy_and_changes_length():
    x = np.zeros((50, 80), dtype=np.float32)
    x[:, 40] = 1.0
    up = warp_features(x, 1.1, 1.0)  # bin k takes the value at k / 1.1: the peak moves up to 44
    assert int(np.argmax(up[0])) == 44 and up.shape == (50, 80)
    assert warp_features(x, 1.0, 0.8).shape == (40, 80)
    np.testing.assert_array_equal(warp_features(x, 1.0, 1.0), x)
    w = RandomWarp(0.1, 0.1, seed=3)
    np.testing.assert_array_equal(w(x, 2, 5), w(x, 2, 5))
    assert any(w(x, e, 5).shape != x.shape or not np.array_equal(w(x, e, 5), x) for e in range(3))


def test_sharded_batches_cover_each_index_once_across_ranks():
    lengths = np.random.default_rng(0).integers(10, 70, size=103)
    base = LengthBucketSampler(lengths, batch_size=8, seed=1)
    shards = [list(ShardedBatchSampler(base, r, 2)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(base) // 2
    seen = [i for shard in shards for batch in shard for i in batch]
    assert len(seen) == len(set(seen))  # disjoint across ranks


def test_find_data_locates_fsdd_and_mnist(tmp_path):
    (tmp_path / "fsdd" / "recordings").mkdir(parents=True)
    (tmp_path / "fsdd" / "recordings" / "0_a_0.wav").write_bytes(b"")
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "mnist.npz").write_bytes(b"")
    found = find_data(tmp_path)
    assert found == {"data.audio": str(tmp_path / "fsdd" / "recordings"),
                     "data.images": str(tmp_path / "mnist" / "mnist.npz")}
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="found neither"):
        find_data(tmp_path / "empty")
    with pytest.raises(ConfigError, match="not a folder"):
        find_data(tmp_path / "missing")


def test_mvae_and_plain_jmvae_build_from_config_and_take_a_step():
    import torch

    from dispart.data.batch import Sequences
    from dispart.models import build_model

    batch = {"audio": Sequences.from_list([torch.randn(5, 80), torch.randn(3, 80)]),
             "image": torch.rand(2, 1, 28, 28)}
    for name in ("mvae", "mvae_q", "jmvae"):
        cfg = load_config(None, [f"model.name={name}", "model.hidden=8", "model.k=1",
                                 "model.anneal_steps=10"])
        h = model_hparams(cfg)
        model = build_model(h)
        assert model.name == name or (name == "mvae_q" and model.name.startswith("mvae"))
        loss = model.loss(batch).loss
        loss.backward()
        assert torch.isfinite(loss)
