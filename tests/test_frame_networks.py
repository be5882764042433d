"""Frame-level networks (dispart.nn.frames, dispart.nn.video) and Sequences of any frame shape.

References are computed independently: a numpy LSTM with the module's weights, numpy linear
maps, each sequence run alone and unpadded, each image encoded on its own.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dispart.batches.batch import Sequences, index_batch, lengths_mask
from dispart.data.corpus import scan_corpus
from dispart.data.sample import sample_fsdd_dir
from dispart.features.fbank import FbankConfig, fbank_from_file
from dispart.nn.decoders import ImageDecoder, SequenceDecoder
from dispart.nn.encoders import ImageEncoder
from dispart.nn.frames import (
    FrameGaussianHead,
    FrameLSTMDecoder,
    FrameLSTMEncoder,
    FrameMLPDecoder,
    FramewiseEncoder,
    MeanBiLSTMEncoder,
    MelConvBiLSTMEncoder,
    SequenceSummary,
    last_valid,
    masked_mean,
    reverse_within_lengths,
)
from dispart.nn.video import ConvImageDecoder, VideoDecoder, VideoEncoder

pytestmark = pytest.mark.usefixtures("single_thread")

D, H = 5, 8


def _seqs(lengths: list[int], dim: int = D, seed: int = 0, garbage: float = 0.0, extra: int = 0) -> Sequences:
    """Random sequences; padded frames hold ``garbage`` (not zeros) to show they change nothing."""
    g = torch.Generator().manual_seed(seed)
    x = Sequences.from_list([torch.randn(n, dim, generator=g) for n in lengths])
    data = torch.cat([x.data, torch.zeros(len(lengths), extra, dim)], dim=1)
    mask = lengths_mask(x.lengths, data.shape[1])
    data = torch.where(mask[..., None], data, torch.full_like(data, garbage))
    return Sequences(data, x.lengths)


def _np_lstm(lstm: torch.nn.LSTM, x: np.ndarray) -> np.ndarray:
    """Reference one-layer LSTM in numpy (PyTorch gate order i, f, g, o): (T, D) -> (T, H)."""
    w_ih, w_hh = lstm.weight_ih_l0.detach().double().numpy(), lstm.weight_hh_l0.detach().double().numpy()
    bias = (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().double().numpy()
    hid = w_hh.shape[1]
    h, c, out = np.zeros(hid), np.zeros(hid), []
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    for x_t in x.astype(np.float64):
        gates = w_ih @ x_t + w_hh @ h + bias
        i, f, g, o = np.split(gates, 4)
        c = sig(f) * c + sig(i) * np.tanh(g)
        h = sig(o) * np.tanh(c)
        out.append(h)
    return np.stack(out)


# --- Sequences with any frame shape -------------------------------------------------------------


def test_sequences_hold_video_frames() -> None:
    g = torch.Generator().manual_seed(0)
    clips = [torch.rand(n, 3, 4, 6, generator=g) for n in (3, 1, 2)]
    x = Sequences.from_list(clips)
    assert x.data.shape == (3, 3, 3, 4, 6) and x.frame_shape == (3, 4, 6) and x.max_length == 3
    assert x.mask().tolist() == [[True, True, True], [True, False, False], [True, True, False]]
    assert float(x.data[1, 1:].abs().sum()) == 0.0 and float(x.data[2, 2:].abs().sum()) == 0.0
    for got, want in zip(x.unpad(), clips, strict=True):
        assert torch.equal(got, want)
    sub = x.index(torch.tensor([2, 1]))  # trims padding to the longest kept sequence
    assert sub.data.shape == (2, 2, 3, 4, 6) and sub.lengths.tolist() == [2, 1]
    assert torch.equal(sub.data[0], clips[2])
    assert index_batch({"video": x}, torch.tensor([0]))["video"].data.shape == (1, 3, 3, 4, 6)
    assert x.to("cpu").data.shape == x.data.shape
    # today's (B, T, D) sequences are unchanged
    s = Sequences.from_list([np.ones((2, 4)), np.ones((1, 4))])
    assert s.frame_shape == (4,) and s.mask().sum().item() == 3


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Sequences(torch.zeros(2, 3), torch.tensor([1, 2])), "Sequences.data"),
        (lambda: Sequences(torch.zeros(2, 3, 1), torch.tensor([1])), "Sequences.lengths"),
        (lambda: Sequences(torch.zeros(2, 3, 1), torch.tensor([1.0, 2.0])), "integer"),
        (lambda: Sequences(torch.zeros(2, 3, 1), torch.tensor([4, 2])), "T_max = 3"),
        (lambda: Sequences.from_list([np.zeros((2, 3)), np.zeros((2, 4))]), "same frame shape"),
        (lambda: Sequences.from_list([]), "at least one"),
    ],
)
def test_sequences_bad_input_is_a_clear_error(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_reverse_within_lengths_keeps_padding_in_place() -> None:
    x = torch.arange(8.0).view(2, 4, 1)
    rev = reverse_within_lengths(x, torch.tensor([3, 4]))
    assert rev[..., 0].tolist() == [[2, 1, 0, 3], [7, 6, 5, 4]]
    assert torch.equal(reverse_within_lengths(rev, torch.tensor([3, 4])), x)


# --- per-frame LSTM encoders --------------------------------------------------------------------


@pytest.mark.parametrize("bidirectional", [False, True])
def test_frame_lstm_matches_numpy_lstm(bidirectional: bool) -> None:
    torch.manual_seed(0)
    enc = FrameLSTMEncoder(D, H, bidirectional=bidirectional)
    x = _seqs([4, 2, 3], garbage=7.0, extra=2)
    out = enc(x).detach().numpy()
    assert out.shape == (3, 6, 2 * H if bidirectional else H)
    for b, n in enumerate(x.lengths.tolist()):
        frames = x.data[b, :n].numpy()
        want = _np_lstm(enc.forward_lstms[0], frames)
        if bidirectional:  # backward direction: run on the reversed valid frames, flip back
            back = _np_lstm(enc.backward_lstms[0], frames[::-1])[::-1]
            want = np.concatenate([want, back], axis=1)
        np.testing.assert_allclose(out[b, :n], want, atol=1e-5)
        assert np.all(out[b, n:] == 0.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"bidirectional": True},
        {"bidirectional": True, "num_layers": 2},
        {"bidirectional": True, "project": 3},
    ],
)
def test_frame_lstm_padding_cannot_leak(kwargs: dict) -> None:
    torch.manual_seed(1)
    enc = FrameLSTMEncoder(D, H, **kwargs)
    lengths = [5, 2, 4, 1]
    x = _seqs(lengths, seed=3, garbage=100.0, extra=3)
    data = x.data.clone().requires_grad_(True)
    out = enc(Sequences(data, x.lengths))
    assert out.shape == (4, 8, enc.out_dim)
    for b, n in enumerate(lengths):
        alone = enc(Sequences(x.data[b : b + 1, :n].clone(), torch.tensor([n])))
        torch.testing.assert_close(out[b, :n], alone[0], atol=1e-6, rtol=1e-5)
        assert torch.all(out[b, n:] == 0)
    (out * torch.randn_like(out)).sum().backward()
    mask = x.mask()
    assert torch.all(data.grad[~mask] == 0)  # exactly zero, not just small
    assert torch.all(data.grad[mask].abs().sum(-1) > 0)


def test_bidirectional_state_depends_on_later_frames_not_on_padding() -> None:
    torch.manual_seed(2)
    x = _seqs([5, 3], seed=4, extra=2)
    for bidirectional in (False, True):
        enc = FrameLSTMEncoder(D, H, bidirectional=bidirectional)
        data = x.data.clone().requires_grad_(True)
        enc(Sequences(data, x.lengths))[0, 1].sum().backward()
        later = data.grad[0, 2:5].abs().sum().item()
        assert (later > 0) == bidirectional  # frames after t=1 reach frame 1 only backwards
        assert data.grad[0, 5:].abs().sum().item() == 0.0  # padding never does
        assert data.grad[1].abs().sum().item() == 0.0  # nor other sequences


def test_mean_bilstm_encoder_is_its_parts_and_ignores_padding() -> None:
    """PVAE's "bilstm" reader: a ReLU layer per frame, a 2-layer bi-directional FrameLSTMEncoder of
    hidden // 2 units per direction, the mean over valid frames; each sequence gives what it gives
    alone, padding gets no gradient, every valid frame (later ones too) does."""
    torch.manual_seed(4)
    enc = MeanBiLSTMEncoder(D, H)
    lstm = enc.summary.encoder
    assert enc.out_dim == H and lstm.hidden == H // 2 and lstm.bidirectional and len(lstm.forward_lstms) == 2
    lengths = [5, 2, 4]
    x = _seqs(lengths, seed=5, garbage=50.0, extra=2)
    data = x.data.clone().requires_grad_(True)
    out = enc(Sequences(data, x.lengths))
    assert out.shape == (3, H)
    for b, n in enumerate(lengths):
        frames = x.data[b : b + 1, :n]
        states = enc.summary.encoder(Sequences(torch.relu(enc.frame[0](frames)), torch.tensor([n])))
        torch.testing.assert_close(out[b], states[0].mean(dim=0), atol=1e-6, rtol=1e-5)
    out[0].sum().backward()
    assert data.grad[0, 5:].abs().sum().item() == 0.0 and data.grad[1:].abs().sum().item() == 0.0
    assert torch.all(data.grad[0, :5].abs().sum(-1) > 0)
    with pytest.raises(ValueError, match="even"):
        MeanBiLSTMEncoder(D, 7)
    with pytest.raises(ValueError, match="MeanBiLSTMEncoder expects Sequences"):
        enc(torch.zeros(2, 3, D))


def test_mel_conv_bilstm_encoder_reads_each_frame_across_its_bands_and_ignores_padding() -> None:
    """The "conv_bilstm" reader: each frame's bands through two convolutions with max-pooling over
    bands (12 bands -> channels x 3 features), then MeanBiLSTMEncoder; frames do not mix before
    the LSTM, so padding (holding garbage) changes nothing and gets no gradient."""
    torch.manual_seed(6)
    d, channels = 12, 3
    enc = MelConvBiLSTMEncoder(d, H, channels=channels)
    assert enc.out_dim == H and enc.reader.input_dim == channels * (d // 4)
    lengths = [4, 2]
    x = _seqs(lengths, dim=d, seed=7, garbage=30.0, extra=3)
    data = x.data.clone().requires_grad_(True)
    out = enc(Sequences(data, x.lengths))
    assert out.shape == (2, H)
    for b, n in enumerate(lengths):
        frames = x.data[b, :n]
        bands = enc.conv(frames[:, None, :])  # (n, channels * 3), one frame at a time
        assert bands.shape == (n, channels * 3)
        want = enc.reader(Sequences(bands[None], torch.tensor([n])))
        torch.testing.assert_close(out[b], want[0], atol=1e-6, rtol=1e-5)
    out[1].sum().backward()
    assert data.grad[1, 2:].abs().sum().item() == 0.0 and data.grad[0].abs().sum().item() == 0.0
    assert torch.all(data.grad[1, :2].abs().sum(-1) > 0)
    with pytest.raises(ValueError, match="4 Mel bands"):
        MelConvBiLSTMEncoder(3, H)
    with pytest.raises(ValueError, match="MelConvBiLSTMEncoder expects Sequences"):
        enc(torch.zeros(2, 3, d))


def test_summaries_by_hand() -> None:
    states = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], [[7.0, 8.0], [9.0, 10.0], [0.0, 0.0]]])
    lengths = torch.tensor([3, 2])
    assert last_valid(states, lengths).tolist() == [[5.0, 6.0], [9.0, 10.0]]
    assert masked_mean(states, lengths).tolist() == [[3.0, 4.0], [8.0, 9.0]]
    states[1, 2] = 1e6  # padding ignored by both
    assert masked_mean(states, lengths)[1].tolist() == [8.0, 9.0]


@pytest.mark.parametrize("mode", ["last", "mean", "ends"])
def test_sequence_summary_matches_numpy(mode: str) -> None:
    torch.manual_seed(3)
    enc = FrameLSTMEncoder(D, H, bidirectional=True)
    head = SequenceSummary(enc, mode)  # type: ignore[arg-type]
    x = _seqs([4, 1, 3], seed=5, garbage=-9.0, extra=1)
    got = head(x).detach().numpy()
    assert got.shape == (3, 2 * H)
    for b, n in enumerate(x.lengths.tolist()):
        frames = x.data[b, :n].numpy()
        fwd = _np_lstm(enc.forward_lstms[0], frames)
        bwd = _np_lstm(enc.backward_lstms[0], frames[::-1])[::-1]
        states = np.concatenate([fwd, bwd], axis=1)
        want = {"last": states[-1], "mean": states.mean(0), "ends": np.concatenate([fwd[-1], bwd[0]])}[mode]
        np.testing.assert_allclose(got[b], want, atol=1e-5)


def test_summary_and_encoder_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="bi-directional"):
        SequenceSummary(FrameLSTMEncoder(D, H), "ends")
    with pytest.raises(ValueError, match="mode"):
        SequenceSummary(FrameLSTMEncoder(D, H), "max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(B, T, 5\)"):
        FrameLSTMEncoder(D, H)(_seqs([2], dim=4))
    with pytest.raises(ValueError, match="Sequences"):
        FrameLSTMEncoder(D, H)(torch.zeros(1, 2, D))  # type: ignore[arg-type]


# --- per-frame Gaussian head --------------------------------------------------------------------


def test_frame_gaussian_head_by_hand() -> None:
    torch.manual_seed(4)
    head = FrameGaussianHead(H, 3)
    h = torch.randn(2, 4, H)
    lengths = torch.tensor([4, 2])
    q = head(h, lengths)
    assert q.batch_shape == (2, 4) and q.event_shape == (3,)
    w, bias = head.linear.weight.detach().double().numpy(), head.linear.bias.detach().double().numpy()
    params = h.double().numpy() @ w.T + bias
    mean, std = params[..., :3], np.exp(0.5 * params[..., 3:])
    np.testing.assert_allclose(q.mean[0].detach().numpy(), mean[0], atol=1e-5)
    np.testing.assert_allclose(q.stddev[1, :2].detach().numpy(), std[1, :2], rtol=1e-5)
    assert torch.all(q.mean[1, 2:] == 0) and torch.all(q.stddev[1, 2:] == 1)  # N(0, I) past the length
    z = torch.randn(2, 4, 3)
    want = (-0.5 * ((z.double().numpy() - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)).sum(-1)
    np.testing.assert_allclose(q.log_prob(z)[0].detach().numpy(), want[0], rtol=1e-5)
    assert head(h).batch_shape == (2, 4)
    with pytest.raises(ValueError, match=r"\(B, T, H\)"):
        head(h[0])


# --- decoders fed per-frame and static latents ---------------------------------------------------


def test_lstm_decoder_static_broadcast_equals_repeated_input() -> None:
    torch.manual_seed(5)
    dec = FrameLSTMDecoder(4, dynamic_dims=[3], static_dims=[2], hidden=H)
    ref = FrameLSTMDecoder(4, dynamic_dims=[2, 3], hidden=H)  # the static vector fed as a frame latent
    ref.load_state_dict(dec.state_dict())
    z, f = torch.randn(3, 5, 3), torch.randn(3, 2)
    lengths = torch.tensor([5, 2, 4])
    out = dec(z, [f], lengths)
    assert out.shape == (3, 5, 4)
    torch.testing.assert_close(out, ref([f[:, None].expand(-1, 5, -1), z], [], lengths))
    assert torch.all(out[1, 2:] == 0) and torch.all(out[2, 4:] == 0)


def test_lstm_decoder_with_static_latent_only_is_todays_sequence_decoder() -> None:
    torch.manual_seed(6)
    old = SequenceDecoder(3, 4, hidden=H)
    new = FrameLSTMDecoder(4, static_dims=[3], hidden=H)
    new.load_state_dict(old.state_dict())
    z, lengths = torch.randn(2, 3), torch.tensor([4, 2])
    torch.testing.assert_close(new([], [z], lengths), old(z, lengths))


def test_lstm_decoder_matches_numpy_and_ignores_padded_latents() -> None:
    torch.manual_seed(7)
    dec = FrameLSTMDecoder(2, dynamic_dims=[3], static_dims=[1, 2], hidden=H)
    z = torch.randn(2, 4, 3, requires_grad=True)
    s1, s2 = torch.randn(2, 1), torch.randn(2, 2)
    lengths = torch.tensor([4, 2])
    out = dec([z], [s1, s2], lengths)
    w, bias = dec.out.weight.detach().double().numpy(), dec.out.bias.detach().double().numpy()
    for b, n in enumerate(lengths.tolist()):
        static = [np.repeat(s[b : b + 1].numpy(), n, 0) for s in (s1, s2)]
        inputs = np.concatenate([*static, z[b, :n].detach().numpy()], axis=1)
        want = _np_lstm(dec.lstm, inputs) @ w.T + bias
        np.testing.assert_allclose(out[b, :n].detach().numpy(), want, atol=1e-5)
    (out * torch.randn_like(out)).sum().backward()
    assert torch.all(z.grad[1, 2:] == 0) and torch.all(z.grad[0].abs().sum(-1) > 0)


def test_mlp_decoder_by_hand() -> None:
    torch.manual_seed(8)
    dec = FrameMLPDecoder(4, dynamic_dims=[3], static_dims=[2], hidden=H)
    z, f = torch.randn(2, 3, 3), torch.randn(2, 2)
    lengths = torch.tensor([3, 1])
    out = dec(z, f, lengths).detach().numpy()
    assert out.shape == (2, 3, 4)
    lin = [m for m in dec.net if isinstance(m, torch.nn.Linear)]
    for b, t in [(0, 0), (0, 2), (1, 0)]:
        a = np.concatenate([f[b].numpy(), z[b, t].numpy()]).astype(np.float64)
        for i, layer in enumerate(lin):
            a = layer.weight.detach().double().numpy() @ a + layer.bias.detach().double().numpy()
            a = np.maximum(a, 0) if i < len(lin) - 1 else a
        np.testing.assert_allclose(out[b, t], a, atol=1e-5)
    assert np.all(out[1, 1:] == 0)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (([torch.zeros(2, 3, 4)], [torch.zeros(2, 2)], torch.tensor([3, 1])), "dynamic latent 0"),
        (([torch.zeros(2, 3, 3)], [torch.zeros(3, 2)], torch.tensor([3, 1])), "static latent 0"),
        (([torch.zeros(2, 3, 3)], [], torch.tensor([3, 1])), "1 static"),
        (([torch.zeros(2, 3, 3)], [torch.zeros(2, 2)], torch.tensor([4, 1])), "longest sequence"),
    ],
)
def test_decoders_reject_bad_latents(args: tuple, match: str) -> None:
    for dec in (FrameLSTMDecoder(4, [3], [2], hidden=H), FrameMLPDecoder(4, [3], [2], hidden=H)):
        with pytest.raises(ValueError, match=match):
            dec(*args)


# --- video: frame encoders and decoders -----------------------------------------------------------


def _video(lengths: list[int], shape: tuple[int, int, int], seed: int = 0) -> Sequences:
    g = torch.Generator().manual_seed(seed)
    return Sequences.from_list([torch.rand(n, *shape, generator=g) for n in lengths])


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 16, 16)])
def test_video_encoder_equals_encoding_each_image(shape: tuple[int, int, int]) -> None:
    torch.manual_seed(9)
    enc = VideoEncoder(shape, channels=(4, 8), hidden=H)
    x = _video([3, 1, 2], shape)
    data = x.data.clone()
    data[1, 1:] = 50.0  # garbage padding
    data.requires_grad_(True)
    out = enc(Sequences(data, x.lengths))
    assert out.shape == (3, 3, H)
    image_enc = enc.net
    assert isinstance(image_enc, ImageEncoder)
    for b, n in enumerate(x.lengths.tolist()):
        for t in range(n):
            torch.testing.assert_close(out[b, t], image_enc(x.data[b, t][None])[0])
        assert torch.all(out[b, n:] == 0)
    (out * torch.randn_like(out)).sum().backward()
    assert torch.all(data.grad[~x.mask()] == 0)


def test_video_encoder_feeds_a_frame_lstm() -> None:
    torch.manual_seed(10)
    frames = VideoEncoder((3, 8, 8), channels=(4,), hidden=H)
    lstm = FrameLSTMEncoder(H, H, bidirectional=True)
    x = _video([4, 2], (3, 8, 8))
    states = lstm(Sequences(frames(x), x.lengths))
    alone = lstm(Sequences(frames(x.index(torch.tensor([1]))), torch.tensor([2])))
    torch.testing.assert_close(states[1, :2], alone[0], atol=1e-6, rtol=1e-5)


def test_conv_image_decoder_with_pvae_channels_is_image_decoder() -> None:
    torch.manual_seed(11)
    old = ImageDecoder(4, (1, 28, 28), hidden=H)
    new = ConvImageDecoder(4, (1, 28, 28), channels=(16, 8), hidden=H)
    new.load_state_dict(old.state_dict())
    z = torch.randn(3, 4)
    torch.testing.assert_close(new(z), old(z))
    assert ConvImageDecoder(4, (3, 64, 64), channels=(8, 8, 4, 4), hidden=H)(z).shape == (3, 3, 64, 64)
    with pytest.raises(ValueError, match="divisible"):
        ConvImageDecoder(4, (3, 60, 60), channels=(8, 8, 4))


def test_video_decoder_equals_decoding_each_frame() -> None:
    torch.manual_seed(12)
    dec = VideoDecoder((3, 16, 16), dynamic_dims=[2], static_dims=[3], channels=(8, 4), hidden=H)
    z, f = torch.randn(2, 3, 2, requires_grad=True), torch.randn(2, 3)
    lengths = torch.tensor([3, 1])
    out = dec([z], [f], lengths)
    assert out.shape == (2, 3, 3, 16, 16)
    for b, n in enumerate(lengths.tolist()):
        for t in range(n):
            torch.testing.assert_close(out[b, t], dec.net(torch.cat([f[b], z[b, t]])[None])[0])
        assert torch.all(out[b, n:] == 0)
    out.sum().backward()
    assert torch.all(z.grad[1, 1:] == 0)
    with pytest.raises(ValueError, match="image_shape"):
        VideoDecoder((16, 16), dynamic_dims=[2])
    with pytest.raises(ValueError, match="both empty"):
        VideoDecoder((3, 16, 16))
    with pytest.raises(ValueError, match="frames of shape"):
        VideoEncoder((3, 16, 16), hidden=H)(_video([2], (3, 8, 8)))


def test_framewise_encoder_wraps_any_frame_network() -> None:
    net = torch.nn.Linear(D, 2)
    net.out_dim = 2  # type: ignore[attr-defined]
    enc = FramewiseEncoder(net)
    x = _seqs([3, 1], garbage=4.0)
    out = enc(x)
    w, bias = net.weight.detach().numpy(), net.bias.detach().numpy()
    np.testing.assert_allclose(out[0].detach().numpy(), x.data[0].numpy() @ w.T + bias, atol=1e-6)
    assert torch.all(out[1, 1:] == 0)


# --- real data: FSDD log-Mel features ------------------------------------------------------------


@pytest.fixture(scope="module")
def fsdd_features() -> list[np.ndarray]:
    utts = scan_corpus(sample_fsdd_dir())
    feats = [fbank_from_file(u.path, FbankConfig()) for u in utts[:: max(1, len(utts) // 4)][:4]]
    mean = np.concatenate(feats).mean(0)
    std = np.concatenate(feats).std(0) + 1e-3
    return [(f - mean) / std for f in feats]


def test_fsdd_log_mel_through_frame_networks(fsdd_features: list[np.ndarray]) -> None:
    torch.manual_seed(13)
    lengths = [f.shape[0] for f in fsdd_features]
    assert len(set(lengths)) > 1  # real padding
    x = Sequences.from_list(fsdd_features)
    assert x.frame_shape == (80,)
    enc = FrameLSTMEncoder(80, 16, bidirectional=True)
    states = enc(x)
    assert states.shape == (len(lengths), max(lengths), 32)
    for b in (int(np.argmin(lengths)), int(np.argmax(lengths))):
        n = lengths[b]
        alone = enc(Sequences.from_list([fsdd_features[b]]))[0]
        torch.testing.assert_close(states[b, :n], alone, atol=1e-5, rtol=1e-4)
        want = _np_lstm(enc.backward_lstms[0], fsdd_features[b][::-1])[::-1]
        np.testing.assert_allclose(states[b, :n, 16:].detach().numpy(), want, atol=1e-4)
    f = SequenceSummary(enc, "ends")(x)
    q_z = FrameGaussianHead(32, 4)(states, x.lengths)
    q_f = FrameGaussianHead(32, 6)(f[:, None])
    z = q_z.rsample()
    assert q_z.batch_shape == (len(lengths), max(lengths)) and f.shape == (len(lengths), 32)
    recon = FrameLSTMDecoder(80, [4], [6], hidden=16)(z, q_f.rsample()[:, 0], x.lengths)
    assert recon.shape == x.data.shape and torch.all(recon[~x.mask()] == 0)
