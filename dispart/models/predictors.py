"""Deterministic-dynamics baselines of DSAE section 4.3: LSTM-f and LSTM-c.

Both are VAEs with global latents only, p(x_1:T, z, f) = p(f) p(z) prod_t p(x_t | z, f), with
p(z) = N(0, I), p(f) = N(0, I) and p(x_t | z, f) = Bernoulli(NN(h_t, f)), where h_t comes from a
*deterministic* LSTM driven by z:

- LSTM-f: z is the initial state, h_0 = z, h_t = LSTM(h_{t-1}) (no input). z (64) and the LSTM
  state (512) differ in size, so a linear map gives (h_0, c_0) = W z + b.
- LSTM-c: the LSTM is conditioned on z at every step, h_0 = 0, h_t = LSTM(h_{t-1}, z)
  (FHVAE's transition).

Sizes as in the paper: dim z = 64, h_t and the LSTM cells 512. The paper gives neither dim f nor
the encoder for this experiment; here q(z, f | x_1:t) = q(z | .) q(f | .) are Gaussian heads on
the last state of a forward LSTM (``hidden``) over conv features of each observed frame, so the
same encoder reads a full sequence (training) or an observed prefix (prediction: the paper's
"observe the first t frames and predict the rest"). ``loss`` can take per-sequence prefix
lengths, training the encoder to infer z from prefixes while the decoder reconstructs all T
frames. These are plain modules, not registered models: they exist for the prediction
benchmark (``benchmarks/dsae_ball.py``, :mod:`dispart.evaluation.prediction`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from dispart.nn.encoders import GaussianHead, ImageEncoder
from dispart.nn.video import ConvImageDecoder

__all__ = ["DYNAMICS", "DeterministicDynamicsVAE", "LSTMc", "LSTMf"]

DYNAMICS = ("lstm_f", "lstm_c")


class DeterministicDynamicsVAE(nn.Module):
    """LSTM-f / LSTM-c on binary frames (B, T, C, H, W) (H, W divisible by 4)."""

    def __init__(
        self,
        dynamics: Literal["lstm_f", "lstm_c"],
        frame_shape: Sequence[int] = (1, 32, 32),
        z_dim: int = 64,
        f_dim: int = 16,
        hidden: int = 512,
        frame_hidden: int = 256,
        channels: Sequence[int] = (32, 64),
    ) -> None:
        super().__init__()
        if dynamics not in DYNAMICS:
            raise ValueError(f"DeterministicDynamicsVAE: dynamics must be one of {DYNAMICS}, "
                             f"got {dynamics!r}")
        shape = tuple(int(s) for s in frame_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"DeterministicDynamicsVAE: frame_shape must be (C, H, W), "
                             f"got {tuple(frame_shape)}")
        self.dynamics, self.frame_shape = dynamics, shape
        self.z_dim, self.f_dim, self.hidden = z_dim, f_dim, hidden
        self.frame_encoder = ImageEncoder(shape, tuple(channels), frame_hidden)       # (N, frame_hidden)
        self.encoder_rnn = nn.LSTM(frame_hidden, hidden, batch_first=True)
        self.q_z = GaussianHead(hidden, z_dim)
        self.q_f = GaussianHead(hidden, f_dim)
        if dynamics == "lstm_f":
            self.init_state = nn.Linear(z_dim, 2 * hidden)                           # z -> (h_0, c_0)
            self.transition = nn.LSTM(1, hidden, batch_first=True)                   # zero input
        else:
            self.transition = nn.LSTM(z_dim, hidden, batch_first=True)               # input z at each t
        self.frame_decoder = ConvImageDecoder(hidden + f_dim, shape, tuple(reversed(tuple(channels))),
                                              frame_hidden)

    # ------------------------------------------------------------------ inference
    def encode(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Independent, Independent]:
        """q(z | x_1:n), q(f | x_1:n) from frames (B, T, C, H, W), reading the first ``lengths[b]``
        (default T) frames of row b. Returns two Gaussians with batch shape (B,)."""
        self._check(x)
        b, t = x.shape[:2]
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long)
        lengths = lengths.to(torch.long).cpu()
        if lengths.shape != (b,) or int(lengths.min()) < 1 or int(lengths.max()) > t:
            raise ValueError(f"DeterministicDynamicsVAE.encode: lengths must be (B,) = ({b},) in [1, {t}], "
                             f"got {lengths.tolist()}")
        feats = self.frame_encoder(x.reshape(b * t, *self.frame_shape)).view(b, t, -1)
        states, _ = self.encoder_rnn(feats)  # forward LSTM: state n-1 has seen frames 0 .. n-1 only
        last = states[torch.arange(b), (lengths - 1).to(states.device)]
        return self.q_z(last), self.q_f(last)

    # ------------------------------------------------------------------ generation
    def states(self, z: Tensor, steps: int) -> Tensor:
        """Deterministic h_1 .. h_steps (B, steps, hidden) from z (B, z_dim)."""
        b = z.shape[0]
        if self.dynamics == "lstm_f":
            h0, c0 = self.init_state(z).chunk(2, dim=-1)
            inputs = z.new_zeros(b, steps, 1)
            out, _ = self.transition(inputs, (h0[None].contiguous(), c0[None].contiguous()))
        else:
            out, _ = self.transition(z[:, None].expand(b, steps, self.z_dim).contiguous())
        return out

    def decode_logits(self, z: Tensor, f: Tensor, steps: int) -> Tensor:
        """Bernoulli logits of frames 1 .. steps: (B, steps, C, H, W)."""
        h = self.states(z, steps)
        hf = torch.cat([h, f[:, None].expand(-1, steps, -1)], dim=-1)
        return self.frame_decoder(hf.reshape(-1, hf.shape[-1])).view(z.shape[0], steps, *self.frame_shape)

    # ------------------------------------------------------------------ objective
    def loss(self, x: Tensor, n_observed: Tensor | None = None,
             kl_weight: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
        """Negative ELBO per sequence (nats), batch mean: q reads the first ``n_observed[b]``
        frames (default all), the decoder reconstructs all T. x: (B, T, C, H, W) in {0, 1}.
        ``kl_weight`` < 1 weighs both KL terms down (warm-up); the logged "loss" is the true
        -ELBO either way."""
        q_z, q_f = self.encode(x, n_observed)
        z, f = q_z.rsample(), q_f.rsample()
        logits = self.decode_logits(z, f, x.shape[1])
        rec = Independent(Bernoulli(logits=logits), 4).log_prob(x)                  # (B,)
        zeros_z, zeros_f = torch.zeros_like(z), torch.zeros_like(f)
        kl_z = kl_divergence(q_z, Independent(Normal(zeros_z, torch.ones_like(z)), 1))
        kl_f = kl_divergence(q_f, Independent(Normal(zeros_f, torch.ones_like(f)), 1))
        neg_elbo = (kl_z + kl_f - rec).mean()
        loss = (kl_weight * (kl_z + kl_f) - rec).mean() if kl_weight != 1.0 else neg_elbo
        return loss, {"rec": -rec.mean().detach(), "kl_z": kl_z.mean().detach(),
                      "kl_f": kl_f.mean().detach(), "loss": neg_elbo.detach()}

    # ------------------------------------------------------------------ prediction
    @torch.no_grad()
    def predict(self, prefix: Tensor, n_missing: int) -> Tensor:
        """Observed frames (B, t, C, H, W) -> pixel probabilities of frames t+1 .. t+n_missing
        (B, n_missing, C, H, W), decoded from the posterior means of z and f."""
        self._check(prefix)
        if n_missing < 1:
            raise ValueError(f"DeterministicDynamicsVAE.predict: n_missing must be >= 1, got {n_missing}")
        q_z, q_f = self.encode(prefix)
        t = prefix.shape[1]
        return torch.sigmoid(self.decode_logits(q_z.mean, q_f.mean, t + n_missing)[:, t:])

    def _check(self, x: Tensor) -> None:
        if x.dim() != 5 or tuple(x.shape[2:]) != self.frame_shape:
            raise ValueError(f"{type(self).__name__} ({self.dynamics}): frames must be "
                             f"(B, T, *{self.frame_shape}), got {tuple(x.shape)}")


class LSTMf(DeterministicDynamicsVAE):
    """LSTM-f: h_0 = W z + b, h_t = LSTM(h_{t-1})."""

    def __init__(self, **kwargs) -> None:
        super().__init__("lstm_f", **kwargs)


class LSTMc(DeterministicDynamicsVAE):
    """LSTM-c: h_0 = 0, h_t = LSTM(h_{t-1}, z)."""

    def __init__(self, **kwargs) -> None:
        super().__init__("lstm_c", **kwargs)
