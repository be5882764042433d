"""benchmarks/pvae.py: which runs count as seed repeats of a headline setting."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from pvae import loso_seed_tags, targets  # noqa: E402


def _fold(tag: str, spk: str, *overrides: str, config: str = "c.yaml") -> dict:
    return {"tag": tag, "held_out": spk, "config": config, "overrides": list(overrides)}


def test_loso_seed_repeats_are_the_tags_that_differ_only_in_train_seed() -> None:
    folds = [_fold("h", "a", "data.normalize=speaker", "train.batch_size=64"),
             _fold("h", "b", "data.normalize=speaker", "train.batch_size=64"),
             _fold("other", "a", "data.normalize=speaker", "train.batch_size=32"),
             _fold("h_s1", "a", "train.batch_size=64", "data.normalize=speaker", "train.seed=1"),
             _fold("h_cfg", "a", "data.normalize=speaker", "train.batch_size=64", config="d.yaml"),
             _fold("h_s2", "b", "data.normalize=speaker", "train.seed=2", "train.batch_size=64")]
    assert loso_seed_tags(folds, "h") == ["h", "h_s1", "h_s2"]
    assert loso_seed_tags(folds, "other") == ["other"]


def test_the_every_seed_loso_target_needs_every_repeat_complete_and_at_90() -> None:
    def met(by_seed: dict) -> bool | None:
        return targets({"unseen": {"fsdd_loso_mean_zs": 0.91,
                                   "fsdd_loso_mean_zs_by_seed": by_seed}})["fsdd_loso_mean_90_every_seed"]

    assert met({"h": 0.91, "h_s1": 0.90}) is True
    assert met({"h": 0.91, "h_s1": 0.89}) is False
    assert met({"h": 0.91, "h_s1": None}) is None  # a repeat still missing folds decides nothing
    assert met({}) is None
