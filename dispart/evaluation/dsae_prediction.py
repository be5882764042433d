"""DSAE as a missing-frame predictor (Li & Mandt 2018, section 4.3, Figure 8).

"The models observe the first t < T frames of a sequence and predict the remaining T - t frames
using the prior dynamics." For a DSAE (:class:`dispart.models.dsae.DSAE`) that means:

1. infer q(f | x_1:t) and q(z_1:t | .) from the observed prefix only (factorised q: q(z_s | x_s);
   full q: the bi-LSTM and RNN run over the t observed frames, never over later ones);
2. feed z_1:t to the learned LSTM prior p(z_s | z_<s) (z_0 = 0, as in training) and roll it
   forward for the k missing steps, each new z_s fed back as the next input;
3. decode every predicted z_s with the inferred f: p(x_s | z_s, f), Bernoulli pixel
   probabilities for the ball (the likelihood's mean for other data).

Two rollouts (``rollout``):

- ``"mean"`` (the default, and the curve ``benchmarks/dsae_ball.py`` reports): posterior means of
  f and z_1:t, and each predicted z_s is the mean of p(z_s | z_<s) given the earlier (observed or
  predicted) means. Deterministic.
- ``"sample"``: ``samples`` draws of (f, z_1:t) from q (full q: z_1:t conditioned on the drawn f)
  and of z_t+1:t+k from the prior; the returned probabilities are the average over the draws (a
  Monte-Carlo estimate of p(x_t+1:t+k | x_1:t)). Uses ``generator`` for every draw.

:func:`dsae_predictor` returns a function ``(prefix (B, t, *frame), k) -> (B, k, *frame)`` for
:func:`dispart.evaluation.prediction.prediction_error`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dispart.batches.batch import Sequences
from dispart.evaluation.prediction import Predictor
from dispart.models.dsae import DSAE
from dispart.models.priors import LSTMPrior

__all__ = ["ROLLOUTS", "continue_prior", "dsae_predictor"]

ROLLOUTS = ("mean", "sample")


def _draw(mean: Tensor, std: Tensor, generator: torch.Generator | None) -> Tensor:
    eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device="cpu").to(mean.device)
    return mean + std * eps


def continue_prior(prior: LSTMPrior, z_observed: Tensor, steps: int, rollout: str = "mean",
                   generator: torch.Generator | None = None) -> Tensor:
    """Roll p(z_s | z_<s) forward after observed latents.

    Args:
        prior: the learned LSTM prior.
        z_observed: (B, t, D) latents of the observed frames, t >= 1 (fed as z_1 .. z_t after
            the zero input of s = 1, exactly as the prior is teacher-forced in training).
        steps: k >= 1 frames to predict.
        rollout: "mean" (z_s = mean of p(z_s | z_<s)) or "sample" (z_s drawn from it).
    Returns:
        (B, k, D): z_t+1 .. z_t+k, each computed from all earlier (observed, then predicted) z.
    """
    if rollout not in ROLLOUTS:
        raise ValueError(f"continue_prior: rollout must be one of {ROLLOUTS}, got {rollout!r}")
    if steps < 1:
        raise ValueError(f"continue_prior: steps must be >= 1, got {steps}")
    if z_observed.dim() != 3 or z_observed.shape[1] < 1 or z_observed.shape[-1] != prior.size:
        raise ValueError(f"continue_prior: z_observed must be (B, t >= 1, {prior.size}), "
                         f"got {tuple(z_observed.shape)}")
    inputs = torch.cat([torch.zeros_like(z_observed[:, :1]), z_observed], dim=1)
    h, state = prior.lstm(inputs)
    last = h[:, -1:]                                                   # state after z_1 .. z_t
    out: list[Tensor] = []
    for s in range(steps):
        p = prior._normal(last)                                        # p(z_t+s+1 | z_<=t+s)
        z = p.mean if rollout == "mean" else _draw(p.mean, p.stddev, generator)
        out.append(z)
        if s + 1 < steps:
            last, state = prior.lstm(z, state)
    return torch.cat(out, dim=1)


def dsae_predictor(model: DSAE, rollout: str = "mean", samples: int = 1,
                   generator: torch.Generator | None = None) -> Predictor:
    """A missing-frame predictor (see the module docstring) backed by ``model``.

    The returned function takes the observed prefix (B, t, *frame) (every row has t valid frames)
    and k >= 1, and returns (B, k, *frame) probabilities (the likelihood's mean) of frames
    t+1 .. t+k. It runs without gradients in eval mode and restores the model's training mode.
    ``samples`` (>= 1) draws are averaged with ``rollout="sample"``; it must be 1 for "mean".
    """
    if rollout not in ROLLOUTS:
        raise ValueError(f"dsae_predictor: rollout must be one of {ROLLOUTS}, got {rollout!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"dsae_predictor: samples must be an integer >= 1, got {samples!r}")
    if rollout == "mean" and samples != 1:
        raise ValueError(f"dsae_predictor: the mean rollout is deterministic; samples must be 1, "
                         f"got {samples}")
    if not isinstance(model, DSAE):
        raise ValueError(f"dsae_predictor: needs a DSAE, got {type(model).__name__}")
    static = next(n for n, lat in model.latents.items() if not lat.dynamic)
    dynamic = next(n for n, lat in model.latents.items() if lat.dynamic)
    prior = model.generative.priors[dynamic]
    if not isinstance(prior, LSTMPrior):
        raise ValueError(f"dsae_predictor: the prior of {dynamic!r} must be an LSTMPrior, "
                         f"got {type(prior).__name__}")
    frame_shape = tuple(model.specs[model.modality].shape)

    def one_draw(x: Sequences, k: int) -> Tensor:
        q = model.encode({model.modality: x})
        if rollout == "mean":
            f, z_obs = q[static].mean, q[dynamic].mean
        else:
            f = _draw(q[static].mean, q[static].stddev, generator)
            q_z = q[dynamic]
            if model.q == "full":  # q(z_1:t | f, x_1:t) with the drawn f, not with f's mean
                q_z = model.inference.q_z(model.inference.features(x), x.lengths, f)
            z_obs = _draw(q_z.mean, q_z.stddev, generator)
        z_new = continue_prior(prior, z_obs, k, rollout, generator)
        lengths = torch.full((x.batch_size,), k, dtype=torch.long)
        return model.decode({static: f, dynamic: z_new}, model.modality, lengths)

    @torch.no_grad()
    def predict(prefix: Tensor, k: int) -> Tensor:
        if prefix.dim() != 2 + len(frame_shape) or tuple(prefix.shape[2:]) != frame_shape \
                or prefix.shape[0] < 1 or prefix.shape[1] < 1:
            raise ValueError(f"dsae predictor: prefix must be (B >= 1, t >= 1, *{frame_shape}), "
                             f"got {tuple(prefix.shape)}")
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"dsae predictor: k (missing frames) must be an integer >= 1, got {k!r}")
        device = next(model.parameters()).device
        b, t = prefix.shape[:2]
        x = Sequences(prefix.to(device=device, dtype=torch.float32), torch.full((b,), t, dtype=torch.long))
        was = model.training
        model.eval()
        try:
            total = one_draw(x, int(k))
            for _ in range(samples - 1):
                total = total + one_draw(x, int(k))
        finally:
            model.train(was)
        return total / samples

    predict.__name__ = f"dsae_{model.q}_{rollout}"
    return predict
