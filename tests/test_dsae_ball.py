"""DSAE as a missing-frame predictor (DSAE section 4.3, dispart/evaluation/dsae_prediction.py):
shapes, only the observed prefix is read, the LSTM-prior rollout equals a numpy loop over frames
(and hand-set values on a hand-built prior), bad inputs; configs/dsae_ball.yaml builds the ball DSAE.

Expected rollouts come from numpy (``model_helpers.lstm_prior_params``) or from hand-set weights,
never from the code under test. No data files are needed (frames are drawn here).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import lstm_prior_params, np64

from dispart.batches.batch import Sequences
from dispart.batches.modality import ModalitySpec
from dispart.config import load_config, model_params
from dispart.evaluation.dsae_prediction import continue_prior, dsae_predictor
from dispart.evaluation.prediction import prediction_error
from dispart.models import build_model
from dispart.models.dsae import DSAE
from dispart.models.priors import LSTMPrior

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[1]
FRAME = (1, 8, 8)
SPEC = ModalitySpec("video", "frames", FRAME, likelihood="bernoulli")
TINY = {"f_dim": 3, "z_dim": 2, "hidden": 6, "prior_hidden": 5, "conv_width": 2}


def tiny(q: str, seed: int = 0) -> DSAE:
    torch.manual_seed(seed)
    model = DSAE([SPEC], q=q, **TINY)
    with torch.no_grad():  # larger prior weights: the rollout must really depend on earlier z
        for p in model.generative.priors["z"].parameters():
            p.mul_(3.0)
    return model


def frames(n: int = 3, t: int = 7, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, t, *FRAME, generator=g) < 0.3).float()


@pytest.mark.parametrize("q", ["factorised", "full"])
def test_shapes_probabilities_and_training_mode(q: str) -> None:
    model = tiny(q)
    model.train()
    for rollout, samples in (("mean", 1), ("sample", 3)):
        pred = dsae_predictor(model, rollout, samples, torch.Generator().manual_seed(0))
        out = pred(frames()[:, :5], 4)
        assert out.shape == (3, 4, *FRAME)
        assert bool(((out > 0) & (out < 1)).all())  # Bernoulli means (sigmoid), never exactly 0/1
        assert model.training  # restored
    err = prediction_error(dsae_predictor(model), frames(n=5), [1, 3, 6], batch_size=2)
    assert list(err) == [1, 3, 6] and all(0 <= v <= 1 for v in err.values())


@pytest.mark.parametrize("q", ["factorised", "full"])
def test_only_the_prefix_is_read(q: str) -> None:
    """Two sets equal on the first T - k frames, different after: prediction_error hands the
    predictor the same prefixes, so the predictions agree while the scored truths differ; an
    observed frame, in contrast, does move the prediction (the check is not vacuous)."""
    model = tiny(q)
    a = frames(n=4, t=8, seed=2)
    b = a.clone()
    b[:, 5:] = 1 - b[:, 5:]  # k = 3: the last three frames differ everywhere
    seen: dict[str, list[torch.Tensor]] = {"a": [], "b": []}
    predictor = dsae_predictor(model)

    def recorder(key: str):
        def fn(prefix: torch.Tensor, k: int) -> torch.Tensor:
            out = predictor(prefix, k)
            seen[key].append(out)
            return out
        return fn

    err_a = prediction_error(recorder("a"), a, [3])
    err_b = prediction_error(recorder("b"), b, [3])
    assert torch.equal(torch.cat(seen["a"]), torch.cat(seen["b"]))
    assert abs(err_a[3] + err_b[3] - 1.0) < 1e-9  # complementary truths, same thresholded prediction
    moved = a[:, :5].clone()
    moved[:, 2] = 1 - moved[:, 2]
    assert not torch.allclose(predictor(a[:, :5], 3), predictor(moved, 3))


def numpy_rollout(prior: LSTMPrior, z_obs: torch.Tensor, steps: int) -> np.ndarray:
    """z_t+1 .. z_t+steps by re-running the numpy LSTM over the whole history for every step:
    p(z_s | z_<s) for s = len(history) + 1, its mean appended to the history."""
    history = np64(z_obs)
    out = []
    for _ in range(steps):
        padded = np.concatenate([history, np.zeros_like(history[:, :1])], axis=1)  # last slot unread
        means, _ = lstm_prior_params(prior, padded)
        nxt = means[:, -1:]
        out.append(nxt)
        history = np.concatenate([history, nxt], axis=1)
    return np.concatenate(out, axis=1)


@pytest.mark.parametrize("q", ["factorised", "full"])
def test_rollout_equals_a_manual_loop(q: str) -> None:
    model = tiny(q, seed=3).eval()
    x = frames(n=3, t=6, seed=4)
    t, k = 4, 5
    prefix = x[:, :t]
    with torch.no_grad():
        post = model.encode({"video": Sequences(prefix, torch.full((3,), t))})
        f, z_obs = post["f"].mean, post["z"].mean
        want_z = numpy_rollout(model.generative.priors["z"], z_obs, k)
        # decode frame by frame through the image decoder: input [f, z_s] (static first)
        net = model.generative.decoders["video"].net
        want = np.stack([np64(torch.sigmoid(net(torch.cat([f, torch.as_tensor(want_z[:, s]).float()], -1))))
                         for s in range(k)], axis=1)
        got_z = continue_prior(model.generative.priors["z"], z_obs, k)
        got = dsae_predictor(model)(prefix, k)
    assert np.abs(want_z).max() > 0.05 and np.ptp(want_z, axis=1).max() > 0.05  # z changes over steps
    np.testing.assert_allclose(np64(got_z), want_z, atol=1e-5)
    np.testing.assert_allclose(np64(got), want, atol=1e-5)


def hand_prior(mean: list[float], logvar: list[float]) -> LSTMPrior:
    """A prior whose LSTM output is always zero (all weights 0: h = o * tanh(c) with c = 0), so
    p(z_s | z_<s) = N(mean, exp(logvar)) at every step, whatever came before."""
    prior = LSTMPrior(len(mean), hidden=4)
    with torch.no_grad():
        for p in prior.parameters():
            p.zero_()
        prior.head.bias.copy_(torch.tensor(mean + logvar))
    return prior


def test_rollout_on_a_hand_built_prior() -> None:
    prior = hand_prior([0.5, -1.0], [0.0, 2.0 * np.log(0.5)])  # std 1 and 0.5
    z_obs = torch.randn(2, 3, 2)
    got = continue_prior(prior, z_obs, 4)
    np.testing.assert_array_equal(np64(got), np.tile([0.5, -1.0], (2, 4, 1)))
    drawn = continue_prior(prior, z_obs, 3, "sample", torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    eps = np.concatenate([np64(torch.randn(2, 1, 2, generator=g)) for _ in range(3)], axis=1)
    np.testing.assert_allclose(np64(drawn), np.array([0.5, -1.0]) + np.array([1.0, 0.5]) * eps, atol=1e-6)


def test_sampled_rollout_is_seeded() -> None:
    model = tiny("factorised")
    prefix = frames()[:, :4]
    one = dsae_predictor(model, "sample", 2, torch.Generator().manual_seed(5))(prefix, 3)
    two = dsae_predictor(model, "sample", 2, torch.Generator().manual_seed(5))(prefix, 3)
    other = dsae_predictor(model, "sample", 2, torch.Generator().manual_seed(6))(prefix, 3)
    assert torch.equal(one, two) and not torch.allclose(one, other)


def test_bad_inputs_one_clear_error_each() -> None:
    model = tiny("factorised")
    with pytest.raises(ValueError, match="rollout must be one of"):
        dsae_predictor(model, "median")
    with pytest.raises(ValueError, match="samples must be an integer >= 1"):
        dsae_predictor(model, "sample", 0)
    with pytest.raises(ValueError, match="mean rollout is deterministic"):
        dsae_predictor(model, "mean", 3)
    with pytest.raises(ValueError, match="needs a DSAE"):
        dsae_predictor(torch.nn.Linear(2, 2))  # type: ignore[arg-type]
    pred = dsae_predictor(model)
    with pytest.raises(ValueError, match=r"prefix must be \(B >= 1, t >= 1, \*\(1, 8, 8\)\)"):
        pred(torch.zeros(2, 3, 1, 16, 16), 2)
    with pytest.raises(ValueError, match="k \\(missing frames\\) must be an integer >= 1"):
        pred(torch.zeros(2, 3, *FRAME), 0)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        continue_prior(model.generative.priors["z"], torch.zeros(1, 2, 2), 0)
    with pytest.raises(ValueError, match=r"z_observed must be \(B, t >= 1, 2\)"):
        continue_prior(model.generative.priors["z"], torch.zeros(1, 2, 3), 1)


def test_ball_config_builds_the_paper_sized_dsae() -> None:
    cfg = load_config(ROOT / "configs" / "dsae_ball.yaml")
    assert cfg.data.loader == "ball"
    spec = ModalitySpec("video", "frames", (1, 32, 32), likelihood="bernoulli")
    torch.manual_seed(0)
    model = build_model({"name": "dsae", "modalities": [spec.to_dict()],
                         **dataclasses.asdict(model_params(cfg.model))})
    assert isinstance(model, DSAE) and model.z_dim == 16  # the paper's dim z_t for the ball
    x = (torch.rand(2, 3, 1, 32, 32, generator=torch.Generator().manual_seed(0)) < 0.03).float()
    out = model.loss({"video": Sequences(x, torch.tensor([3, 3]))})
    assert torch.isfinite(out.loss)
    assert dsae_predictor(model)(x, 2).shape == (2, 2, 1, 32, 32)
