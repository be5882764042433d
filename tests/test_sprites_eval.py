"""Sprites judges and the DSAE Table 1 protocol (dispart/evaluation/sprites.py).

The metrics and the protocol are checked against a fake model and a fake judge whose outputs are
known by construction (exact numbers computed by hand); the judges are trained for a few steps on
a tiny set rendered from ../shared/data/sprites_lpc (skipped when the sheets are absent).
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Independent, Normal

from dispart.evaluation.sprites import (
    ATTRIBUTE_HEADS,
    HEADS,
    JudgeSettings,
    SpriteJudge,
    SpriteJudgeNet,
    disagreement,
    ensure_judge,
    fit_judge,
    judge_key,
    kl_random,
    kl_recon,
    sprite_labels,
    table1,
)
from dispart.models.latents import Latent, declare

LPC = Path(__file__).parents[1].parent / "shared" / "data" / "sprites_lpc"


# ------------------------------------------------------------------------------------ metrics
def test_disagreement_counts_argmax_differences() -> None:
    src = np.log(np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1]]))
    gen = np.log(np.array([[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6], [0.3, 0.4, 0.3]]))
    assert disagreement(gen, src) == 0.25


def test_kl_recon_and_kl_random_by_hand() -> None:
    src = np.log(np.array([[0.25, 0.75], [0.1, 0.9]]))
    gen = np.log(np.array([[0.5, 0.5], [0.1, 0.9]]))
    # row 1: 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.143841; row 2: identical -> 0
    assert kl_recon(gen, src) == pytest.approx((0.5 * math.log(2) + 0.5 * math.log(2 / 3)) / 2, abs=1e-12)
    assert kl_recon(gen, src) == pytest.approx(0.0719205, abs=1e-6)
    # KL[u || p]: row 1 0.143841, row 2 0.5 ln 5 + 0.5 ln(5/9) = 0.510826
    assert kl_random(src) == pytest.approx((0.143841 + 0.510826) / 2, abs=1e-6)
    assert kl_recon(src, src) == 0.0


def test_metrics_refuse_bad_shapes() -> None:
    with pytest.raises(ValueError, match="equal, non-empty"):
        disagreement(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="equal, non-empty"):
        kl_recon(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="non-empty"):
        kl_random(np.zeros(3))


# ------------------------------------------------------------------------------------ protocol
# Fake videos (N, T=2, 3, 4, 8): channel 0, row 0, columns 0-3 hold the four attribute codes / 10,
# channel 1 pixel (0, 0) the action code / 10. The fake judge reads them back (0.9 on the code,
# the rest spread evenly); the fake DSAE copies f = the attribute codes and z = the action code,
# except that it cannot draw body variant 5 (drawn as 4) nor action 8 (drawn as 7).
T, N_ATTR = 2, len(ATTRIBUTE_HEADS)


def _video(attrs: list[int], action: int) -> np.ndarray:
    x = np.zeros((T, 3, 4, 8), np.float32)
    x[:, 0, 0, :N_ATTR] = np.asarray(attrs) / 10
    x[:, 1, 0, 0] = action / 10
    return x


def _peaked(codes: torch.Tensor, n: int) -> np.ndarray:
    p = torch.full((len(codes), n), 0.1 / (n - 1), dtype=torch.float64)
    p[torch.arange(len(codes)), codes] = 0.9
    return p.log().numpy()


class FakeJudge:
    net = SimpleNamespace(heads=dict(HEADS))

    def log_proba(self, videos: torch.Tensor) -> dict[str, np.ndarray]:
        codes = (videos[:, 0, 0, 0, :N_ATTR] * 10).round().long()
        out = {h: _peaked(codes[:, k], HEADS[h]) for k, h in enumerate(ATTRIBUTE_HEADS)}
        out["action"] = _peaked((videos[:, 0, 1, 0, 0] * 10).round().long(), HEADS["action"])
        return out


class FakeDSAE(nn.Module):
    modality = "video"

    def __init__(self) -> None:
        super().__init__()
        self.latents = declare(Latent("f", N_ATTR, ("video",), role="style"),
                               Latent("z", 1, ("video",), dynamic=True))

    def encode(self, batch: dict) -> dict[str, Independent]:
        x = batch["video"].data
        f = x[:, 0, 0, 0, :N_ATTR] * 10
        z = x[:, :, 1, 0, :1] * 10
        return {"f": Independent(Normal(f, 1.0), 1), "z": Independent(Normal(z, 1.0), 1)}

    def generate(self, lengths: torch.Tensor, f: torch.Tensor | None = None, z: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> SimpleNamespace:
        n = len(lengths)
        if f is None:
            f = torch.randint(0, 6, (n, N_ATTR), generator=generator).float()
        if z is None:
            z = torch.randint(0, 9, (n, 1, 1), generator=generator).float().expand(n, T, 1)
        f, z = f.round().clone(), z.round().clone()
        f[:, 0][f[:, 0] == 5] = 4
        z[z == 8] = 7
        x = torch.zeros(n, T, 3, 4, 8)
        x[:, :, 0, 0, :N_ATTR] = f[:, None] / 10
        x[:, :, 1, 0, 0] = z[..., 0] / 10
        return SimpleNamespace(x=x)


def test_table1_exact_numbers_with_a_fake_model_and_judge() -> None:
    bodies = [0, 1, 5, 5, 2, 3, 4, 5]  # 3 of 8 cannot be drawn
    actions = [0, 8, 1, 2, 3, 4, 5, 6]  # 1 of 8 cannot be drawn
    videos = np.stack([_video([b, 1, 2, 3], a) for b, a in zip(bodies, actions, strict=True)])
    labels = {h: np.asarray(bodies if h == "body" else [k] * 8) for k, h in enumerate(ATTRIBUTE_HEADS)}
    labels["action"] = np.asarray(actions)
    out = table1(FakeDSAE(), FakeJudge(), videos, seed=0, batch=3, labels=labels)
    assert out["n"] == 8
    assert out["attribute_disagreement_fix_f"] == {"body": 3 / 8, "bottom": 0.0, "top": 0.0, "hair": 0.0}
    # a wrong pair: KL[(0.9 at 4, 0.02) || (0.9 at 5, 0.02)] = 0.9 ln 45 + 0.02 ln(1/45) = 0.88 ln 45
    assert out["attribute_kl_fix_f"]["body"] == pytest.approx(3 / 8 * 0.88 * math.log(45), rel=1e-12)
    assert out["attribute_kl_fix_f"]["top"] == 0.0
    # KL[u || p] for 6 classes, 0.9 / 0.02: -ln 6 - (ln 0.9 + 5 ln 0.02) / 6
    assert out["attribute_kl_random"]["hair"] == pytest.approx(
        -math.log(6) - (math.log(0.9) + 5 * math.log(0.02)) / 6, rel=1e-12)
    assert out["action_disagreement_fix_z"] == 1 / 8
    wrong = 0.9 * math.log(0.9 / (0.1 / 8)) + 0.1 / 8 * math.log((0.1 / 8) / 0.9)
    assert out["action_kl_fix_z"] == pytest.approx(wrong / 8, rel=1e-12)
    # reconstructions (f and z from q) fail exactly where the fake cannot draw
    assert out["reconstruction_disagreement"] == {"body": 3 / 8, "bottom": 0.0, "top": 0.0, "hair": 0.0,
                                                  "action": 1 / 8}
    # the fake judge reads the sources' codes exactly; the generated body 5 -> 4 is a label error
    assert out["judge_accuracy_on_sources"] == {h: 1.0 for h in HEADS}
    assert out["attribute_label_error_fix_f"]["body"] == 3 / 8
    assert out["action_label_error_fix_z"] == 1 / 8
    # a split that does not leak: the swaps fail only where the fake cannot draw
    assert out["attribute_disagreement_swap_z"] == {"body": 3 / 8, "bottom": 0.0, "top": 0.0, "hair": 0.0}
    assert out["action_disagreement_swap_f"] == 1 / 8


class LeakyDSAE(FakeDSAE):
    """The fake whose z_1:T also carries the body (its second column), which the decoder draws
    from z whenever z is given."""

    def __init__(self) -> None:
        super().__init__()
        self.latents = declare(Latent("f", N_ATTR, ("video",), role="style"),
                               Latent("z", 2, ("video",), dynamic=True))

    def encode(self, batch: dict) -> dict[str, Independent]:
        q = super().encode(batch)
        z = q["z"].mean
        body = q["f"].mean[:, None, :1].expand(-1, z.shape[1], 1)
        return {"f": q["f"], "z": Independent(Normal(torch.cat([z, body], -1), 1.0), 1)}

    def generate(self, lengths: torch.Tensor, f: torch.Tensor | None = None, z: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> SimpleNamespace:
        if z is not None and f is not None:
            f = f.clone()
            f[:, 0] = z[:, 0, 1]
        return super().generate(lengths, f, None if z is None else z[..., :1], generator)


def test_table1_swaps_show_a_leaking_split() -> None:
    """Row i takes the other latent of row (i + 4) mod 8 (one batch of 8): with the body in z_1:T,
    fixing f and swapping z_1:T draws the partner's body."""
    bodies = [0, 1, 5, 5, 2, 3, 4, 5]
    actions = [0, 8, 1, 2, 3, 4, 5, 6]
    videos = np.stack([_video([b, 1, 2, 3], a) for b, a in zip(bodies, actions, strict=True)])
    out = table1(LeakyDSAE(), FakeJudge(), videos, seed=0, batch=8)
    # drawn bodies: the partners' [2, 3, 4, 5, 0, 1, 5, 5] with 5 -> 4; only row 6 keeps its own
    assert out["attribute_disagreement_swap_z"]["body"] == 7 / 8
    assert out["attribute_disagreement_swap_z"]["top"] == 0.0
    assert out["action_disagreement_swap_f"] == 1 / 8


def test_table1_is_a_pure_function_of_the_seed() -> None:
    videos = np.stack([_video([i % 6, 1, 2, 3], i % 9) for i in range(10)])
    a = table1(FakeDSAE(), FakeJudge(), videos, seed=3, batch=4)
    b = table1(FakeDSAE(), FakeJudge(), videos, seed=3, batch=4)
    assert a == b


# ------------------------------------------------------------------------------------ judges
@pytest.fixture(scope="module")
def tiny_sprites(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if not LPC.is_dir():
        pytest.skip(f"LPC sprite sheets not available at {LPC} (development data only)")
    from dispart.batches.sprites import sprites_sets
    from dispart.data.sprites import render_sprites

    out = tmp_path_factory.mktemp("sprites")
    render_sprites(LPC, out, characters=4)  # 3 train, 1 test character: 27 + 9 videos
    return sprites_sets(out)


def test_judge_shapes_save_load_and_cache_key(tiny_sprites: dict, tmp_path: Path,
                                              single_thread: None) -> None:
    train, test = tiny_sprites["train"], tiny_sprites["test"]
    settings = JudgeSettings(width=4, feature=8, steps=3, batch=4)
    judge = fit_judge(train, test, settings)
    assert judge.meta["steps_done"] == 3 and judge.meta["n_train"] == 27
    assert set(judge.meta["test_accuracy"]) == set(HEADS)
    lp = judge.log_proba(test.examples.frames)
    assert {h: v.shape for h, v in lp.items()} == {h: (9, n) for h, n in HEADS.items()}
    assert np.allclose(np.exp(lp["action"]).sum(1), 1.0)
    labels = sprite_labels(test)
    assert labels["action"].tolist() == list(range(9))  # one character: its 9 action-direction videos
    judge.save(tmp_path / "j")
    again = SpriteJudge.load(tmp_path / "j")
    for h, v in again.log_proba(test.examples.frames).items():
        np.testing.assert_array_equal(v, lp[h])

    cache = tmp_path / "cache"
    first, reused1 = ensure_judge(train, test, cache, settings)
    second, reused2 = ensure_judge(train, test, cache, settings)
    assert (reused1, reused2) == (False, True)
    assert len(list(cache.glob("judge-*.safetensors"))) == 1
    key = judge_key(train, test, settings)
    assert second.meta["key"] == key
    # keyed by the data: one changed pixel or label, or other settings, give another key
    changed = type(train)(type(train.examples)(train.examples.frames.copy()), list(train.labels),
                          list(train.ids), meta={k: list(v) for k, v in train.meta.items()})
    changed.examples.frames[0, 0, 0, 0, 0] ^= 1
    assert judge_key(changed, test, settings) != key
    relabelled = type(train)(train.examples, list(train.labels), list(train.ids),
                             meta={**train.meta, "hair": ["5"] * len(train.labels)})
    assert judge_key(relabelled, test, settings) != key
    assert judge_key(train, test, JudgeSettings(width=4, feature=8, steps=4, batch=4)) != key
    # a damaged weights file is refitted, not trusted
    weights = next(cache.glob("judge-*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    _, reused3 = ensure_judge(train, test, cache, settings)
    assert reused3 is False


def test_judge_net_refuses_wrong_video_shape() -> None:
    net = SpriteJudgeNet(frames=8, size=64, width=2, feature=4)
    with pytest.raises(ValueError, match=r"\(B, 8, 3, 64, 64\)"):
        net(torch.zeros(1, 7, 3, 64, 64))
