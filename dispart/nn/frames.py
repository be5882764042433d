"""Frame-level networks: one output per frame, for dynamic latents z_1:T.

Beside the PVAE networks of :mod:`dispart.nn.encoders` / :mod:`dispart.nn.decoders` (one vector
per sequence), these keep the time axis:

- :class:`FrameLSTMEncoder`: (B, T, D) :class:`Sequences` -> (B, T, H) states, uni- or
  bi-directional; :class:`SequenceSummary` / :func:`last_valid` / :func:`masked_mean` turn
  them into one vector per sequence (a static head such as DSAE's q(f | x_1:T));
  :class:`MeanBiLSTMEncoder` is such a reader as a pre-encoder (PVAE's "bilstm" speech reader).
- :class:`FrameGaussianHead`: (B, T, H) -> a diagonal Gaussian with batch shape (B, T),
  event shape (D,), for q(z_t | ...).
- :class:`FrameLSTMDecoder`, :class:`FrameMLPDecoder`: per-frame latents (B, T, Dz) plus static
  ones (B, Ds) broadcast over time -> (B, T, D_out) frame parameters.
- :class:`FramewiseEncoder` / :class:`FramewiseDecoder`: apply any per-frame network (an image
  encoder, an MLP) to every valid frame, the time axis folded into the batch.

Padding changes nothing, as for today's networks: every padded batch runs through the fused
LSTM kernel, a forward LSTM never looks ahead, the backward direction starts at each
sequence's last valid frame (each sequence is reversed within its own length), frame-wise
networks see valid frames only, and every output past a sequence's length is exactly zero, so
no value or gradient flows from or into padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch.distributions import Independent

from dispart.batches.batch import Sequences, lengths_mask
from dispart.nn.encoders import diag_gaussian

SummaryMode = Literal["last", "mean", "ends"]


# --- helpers on (B, T, ...) tensors --------------------------------------------------------------


def zero_padding(x: Tensor, lengths: Tensor) -> Tensor:
    """(B, T, ...) -> the same with every frame ``t >= lengths[b]`` set to exactly zero."""
    mask = lengths_mask(lengths, x.shape[1], x.device)
    mask = mask.view(*mask.shape, *([1] * (x.dim() - 2)))
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


def reverse_within_lengths(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each sequence of (B, T, ...) within its own length; padded frames stay in place.

    Frame t < n_b of row b becomes frame n_b - 1 - t. The map is its own inverse.
    """
    b, t_max = x.shape[:2]
    steps = torch.arange(t_max, device=x.device).expand(b, t_max)
    n = lengths.to(x.device)[:, None]
    idx = torch.where(steps < n, n - 1 - steps, steps)
    return x.gather(1, idx.view(b, t_max, *([1] * (x.dim() - 2))).expand_as(x))


def last_valid(states: Tensor, lengths: Tensor) -> Tensor:
    """(B, T, H) states -> (B, H), the state at each sequence's last valid frame."""
    rows = torch.arange(states.shape[0], device=states.device)
    return states[rows, (lengths - 1).to(states.device)]


def masked_mean(states: Tensor, lengths: Tensor) -> Tensor:
    """(B, T, H) states -> (B, H), the mean over each sequence's valid frames."""
    summed = zero_padding(states, lengths).sum(dim=1)
    return summed / lengths.to(states.device, states.dtype)[:, None]


def _check_sequences(x: object, input_dim: int, who: str) -> Sequences:
    if not isinstance(x, Sequences):
        raise ValueError(f"{who} expects Sequences (B, T, {input_dim}), got {type(x).__name__}")
    if x.data.dim() != 3 or x.data.shape[2] != input_dim:
        raise ValueError(f"{who} expects Sequences of shape (B, T, {input_dim}), got {tuple(x.data.shape)}")
    return x


# --- per-frame sequence encoders ------------------------------------------------------------------


class FrameLSTMEncoder(nn.Module):
    """LSTM over frames: (B, T, D) Sequences -> (B, T, out_dim) states, zero past each length.

    Uni-directional: out_dim = hidden, the state at t summarises frames 1..t. Bi-directional:
    the forward and backward states are concatenated (out_dim = 2 * hidden, forward first), or
    projected by a linear layer to ``project`` dims; the backward state at t summarises frames
    t..n (never padding). Layers stack as in ``nn.LSTM(num_layers=...)``, each layer fed the
    previous layer's (concatenated) states.
    """

    def __init__(
        self,
        input_dim: int,
        hidden: int = 256,
        bidirectional: bool = False,
        num_layers: int = 1,
        project: int | None = None,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"FrameLSTMEncoder: num_layers must be >= 1, got {num_layers}")
        self.input_dim, self.hidden, self.bidirectional = input_dim, hidden, bidirectional
        dirs = 2 if bidirectional else 1
        sizes = [input_dim] + [dirs * hidden] * (num_layers - 1)
        self.forward_lstms = nn.ModuleList(nn.LSTM(d, hidden, batch_first=True) for d in sizes)
        self.backward_lstms = nn.ModuleList(
            nn.LSTM(d, hidden, batch_first=True) for d in (sizes if bidirectional else [])
        )
        self.proj = nn.Linear(dirs * hidden, project) if project is not None else None
        self.out_dim = project if project is not None else dirs * hidden

    def forward(self, x: Sequences) -> Tensor:
        x = _check_sequences(x, self.input_dim, "FrameLSTMEncoder")
        h, lengths = x.data, x.lengths
        for i, fwd in enumerate(self.forward_lstms):
            out, _ = fwd(h)
            if self.bidirectional:
                rev, _ = self.backward_lstms[i](reverse_within_lengths(h, lengths))
                out = torch.cat([out, reverse_within_lengths(rev, lengths)], dim=-1)
            h = zero_padding(out, lengths)
        if self.proj is not None:
            h = zero_padding(self.proj(h), lengths)
        return h


class SequenceSummary(nn.Module):
    """A static head: per-frame states of a :class:`FrameLSTMEncoder` -> (B, out_dim) per sequence.

    Modes: ``"last"``, the state at the last valid frame (for a bi-directional encoder the
    backward half there has seen only that frame); ``"mean"``, the mean over valid frames;
    ``"ends"`` (bi-directional, unprojected encoders only), the forward state at the last valid
    frame and the backward state at the first, i.e. both directions' final states, as DSAE's
    q(f | x_1:T) reads them.
    """

    def __init__(self, encoder: FrameLSTMEncoder, mode: SummaryMode = "last") -> None:
        super().__init__()
        if mode not in ("last", "mean", "ends"):
            raise ValueError(f"SequenceSummary: mode must be 'last', 'mean' or 'ends', got {mode!r}")
        if mode == "ends" and (not encoder.bidirectional or encoder.proj is not None):
            raise ValueError("SequenceSummary: mode 'ends' needs a bi-directional encoder without projection")
        self.encoder, self.mode, self.out_dim = encoder, mode, encoder.out_dim

    def forward(self, x: Sequences) -> Tensor:
        states = self.encoder(x)
        if self.mode == "last":
            return last_valid(states, x.lengths)
        if self.mode == "mean":
            return masked_mean(states, x.lengths)
        h = self.encoder.hidden
        return torch.cat([last_valid(states[..., :h], x.lengths), states[:, 0, h:]], dim=-1)


class MeanBiLSTMEncoder(nn.Module):
    """A stronger speech reader than the paper's (PVAE ``sequence_encoder="bilstm"``; not in its
    Appendix B): (B, T, D) Sequences -> (B, hidden), a ReLU layer of hidden // 2 units per frame,
    then a ``layers``-layer bi-directional :class:`FrameLSTMEncoder` of hidden // 2 units per
    direction, averaged over valid frames (:class:`SequenceSummary` "mean"). Padding changes
    nothing, as for every encoder here."""

    def __init__(self, input_dim: int, hidden: int = 512, layers: int = 2) -> None:
        super().__init__()
        if hidden < 2 or hidden % 2:
            raise ValueError(f"MeanBiLSTMEncoder: hidden must be even and >= 2, got {hidden}")
        half = hidden // 2
        self.input_dim, self.out_dim = input_dim, hidden
        self.frame = nn.Sequential(nn.Linear(input_dim, half), nn.ReLU())
        self.summary = SequenceSummary(FrameLSTMEncoder(half, half, bidirectional=True, num_layers=layers),
                                       mode="mean")

    def forward(self, x: Sequences) -> Tensor:
        x = _check_sequences(x, self.input_dim, "MeanBiLSTMEncoder")
        return self.summary(Sequences(self.frame(x.data), x.lengths))


class MelConvBiLSTMEncoder(nn.Module):
    """:class:`MeanBiLSTMEncoder` with a convolutional front end along the Mel axis (PVAE
    ``sequence_encoder="conv_bilstm"``; not the paper's): each (D,) frame is read by two 1-D
    convolutions over its bands (``channels`` filters of 5 then 3 bands, ReLU, each followed by
    max-pooling of 2 bands), so a formant pattern moved by a band or two (a different vocal tract)
    gives nearly the same features; those (channels * (D // 4),) features per frame then go through
    MeanBiLSTMEncoder's ReLU layer and bi-directional LSTMs. Frames never mix before the LSTM, so
    padding changes nothing. (B, T, D) Sequences -> (B, hidden); D >= 4."""

    def __init__(self, input_dim: int, hidden: int = 512, channels: int = 16, layers: int = 2) -> None:
        super().__init__()
        if input_dim < 4:
            raise ValueError(f"MelConvBiLSTMEncoder: needs >= 4 Mel bands, got {input_dim}")
        self.input_dim, self.out_dim = input_dim, hidden
        self.conv = nn.Sequential(
            nn.Conv1d(1, channels, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(channels, channels, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten())
        self.reader = MeanBiLSTMEncoder(channels * (input_dim // 4), hidden, layers)

    def forward(self, x: Sequences) -> Tensor:
        x = _check_sequences(x, self.input_dim, "MelConvBiLSTMEncoder")
        b, t, d = x.data.shape
        bands = self.conv(x.data.reshape(b * t, 1, d)).reshape(b, t, -1)
        return self.reader(Sequences(bands, x.lengths))


# --- per-frame Gaussian heads ---------------------------------------------------------------------


class FrameGaussianHead(nn.Module):
    """(B, T, H) states -> diagonal Gaussian over a dynamic latent: batch shape (B, T), event (D,).

    With ``lengths`` the parameters past each length are those of N(0, I) (finite, no gradient
    to the network); log-probabilities and KL terms there must still be masked by the caller.
    """

    def __init__(self, in_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.linear = nn.Linear(in_dim, 2 * latent_dim)

    def forward(self, h: Tensor, lengths: Tensor | None = None) -> Independent:
        if h.dim() != 3:
            raise ValueError(f"FrameGaussianHead expects (B, T, H) states, got {tuple(h.shape)}")
        params = self.linear(h)
        if lengths is not None:
            params = zero_padding(params, lengths)
        mean, logvar = params.chunk(2, dim=-1)
        return diag_gaussian(mean, logvar)


# --- frame-wise application of any network --------------------------------------------------------


class FramewiseEncoder(nn.Module):
    """Apply a per-frame network to every valid frame: (B, T, *frame) Sequences -> (B, T, out_dim).

    The valid frames are folded into one (N, *frame) batch (N = sum of lengths), so padded frames
    are never computed (batch-norm statistics, too, see only real frames); outputs past each
    length are zero. ``net`` maps (N, *frame) -> (N, out_dim) and exposes ``out_dim``.
    """

    def __init__(self, net: nn.Module, frame_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.net, self.frame_shape = net, frame_shape
        self.out_dim: int = net.out_dim  # type: ignore[assignment]

    def forward(self, x: Sequences) -> Tensor:
        if not isinstance(x, Sequences):
            raise ValueError(f"FramewiseEncoder expects Sequences, got {type(x).__name__}")
        if self.frame_shape is not None and x.frame_shape != tuple(self.frame_shape):
            raise ValueError(
                f"FramewiseEncoder expects frames of shape {tuple(self.frame_shape)}, got {x.frame_shape}"
            )
        mask = x.mask()
        feats = self.net(x.data[mask])
        out = feats.new_zeros(x.data.shape[0], x.data.shape[1], feats.shape[-1])
        return out.index_put((mask,), feats)


def frame_inputs(
    dynamic: Sequence[Tensor] | Tensor,
    static: Sequence[Tensor] | Tensor,
    lengths: Tensor,
    dynamic_dims: Sequence[int],
    static_dims: Sequence[int],
) -> Tensor:
    """Concatenate per-frame latents and static latents repeated over time: (B, T, sum of dims).

    ``dynamic``: (B, T, Dz_i) tensors (T >= max length; T = max length when there are none);
    ``static``: (B, Ds_j) tensors; ``lengths``: (B,). Order: static first, then dynamic.
    """
    dyn = [dynamic] if isinstance(dynamic, Tensor) else list(dynamic)
    sta = [static] if isinstance(static, Tensor) else list(static)
    if len(dyn) != len(dynamic_dims) or len(sta) != len(static_dims):
        raise ValueError(
            f"decoder expects {len(dynamic_dims)} dynamic and {len(static_dims)} static latents, "
            f"got {len(dyn)} and {len(sta)}"
        )
    if lengths.dim() != 1 or lengths.numel() == 0:
        raise ValueError(f"lengths must be a non-empty (B,) tensor, got shape {tuple(lengths.shape)}")
    b = lengths.shape[0]
    t_max = int(dyn[0].shape[1]) if dyn and dyn[0].dim() == 3 else int(lengths.max())
    for i, (z, d) in enumerate(zip(dyn, dynamic_dims, strict=True)):
        if tuple(z.shape) != (b, t_max, d):
            raise ValueError(f"dynamic latent {i}: expected shape ({b}, {t_max}, {d}), got {tuple(z.shape)}")
    if int(lengths.max()) > t_max:
        raise ValueError(f"lengths: longest sequence has {int(lengths.max())} frames, latents only {t_max}")
    for j, (s, d) in enumerate(zip(sta, static_dims, strict=True)):
        if tuple(s.shape) != (b, d):
            raise ValueError(f"static latent {j}: expected shape ({b}, {d}), got {tuple(s.shape)}")
    parts = [s.unsqueeze(1).expand(-1, t_max, -1) for s in sta] + dyn
    if not parts:
        raise ValueError("decoder needs at least one latent")
    return torch.cat(parts, dim=-1)


class FramewiseDecoder(nn.Module):
    """Decode each valid frame from [static..., dynamic_t]: -> (B, T, *out_shape), zero past lengths.

    ``net`` maps (N, sum of latent dims) -> (N, *out_shape); it runs on valid frames only.
    """

    def __init__(
        self,
        net: nn.Module,
        out_shape: tuple[int, ...],
        dynamic_dims: Sequence[int] = (),
        static_dims: Sequence[int] = (),
    ) -> None:
        super().__init__()
        self.net, self.out_shape = net, tuple(out_shape)
        self.dynamic_dims, self.static_dims = tuple(dynamic_dims), tuple(static_dims)
        self.in_dim = sum(self.dynamic_dims) + sum(self.static_dims)

    def forward(
        self, dynamic: Sequence[Tensor] | Tensor, static: Sequence[Tensor] | Tensor, lengths: Tensor
    ) -> Tensor:
        z = frame_inputs(dynamic, static, lengths, self.dynamic_dims, self.static_dims)
        mask = lengths_mask(lengths, z.shape[1], z.device)
        out = self.net(z[mask])
        full = out.new_zeros(z.shape[0], z.shape[1], *out.shape[1:])
        return full.index_put((mask,), out)


class FrameMLPDecoder(FramewiseDecoder):
    """[static..., z_t] -> (B, T, output_dim) per frame: two ReLU layers + linear (as MLPDecoder)."""

    def __init__(
        self,
        output_dim: int,
        dynamic_dims: Sequence[int] = (),
        static_dims: Sequence[int] = (),
        hidden: int = 256,
    ) -> None:
        in_dim = sum(dynamic_dims) + sum(static_dims)
        net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                            nn.Linear(hidden, output_dim))
        super().__init__(net, (output_dim,), dynamic_dims, static_dims)
        self.output_dim = output_dim


class FrameLSTMDecoder(nn.Module):
    """LSTM fed [static..., z_t] at each step + a linear layer shared over time -> (B, T, output_dim).

    With static latents only it is today's :class:`~dispart.nn.decoders.SequenceDecoder`.
    Frames past each length are computed (the LSTM never looks ahead) and zeroed.
    """

    def __init__(
        self,
        output_dim: int,
        dynamic_dims: Sequence[int] = (),
        static_dims: Sequence[int] = (),
        hidden: int = 256,
    ) -> None:
        super().__init__()
        self.dynamic_dims, self.static_dims = tuple(dynamic_dims), tuple(static_dims)
        self.in_dim = sum(self.dynamic_dims) + sum(self.static_dims)
        if self.in_dim == 0:
            raise ValueError("FrameLSTMDecoder: dynamic_dims and static_dims are both empty")
        self.lstm = nn.LSTM(self.in_dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, output_dim)
        self.output_dim = output_dim

    def forward(
        self, dynamic: Sequence[Tensor] | Tensor, static: Sequence[Tensor] | Tensor, lengths: Tensor
    ) -> Tensor:
        z = frame_inputs(dynamic, static, lengths, self.dynamic_dims, self.static_dims)
        h, _ = self.lstm(z)
        return zero_padding(self.out(h), lengths)
