"""Bouncing-ball data (DSAE section 4.3), the LSTM-f / LSTM-c baselines and the missing-frame error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import dispart.data.ball as ball
from dispart.batches.ball import BALL_MODALITY, ball_corpus, load_ball_corpus
from dispart.batches.batch import Sequences
from dispart.batches.loaders import LOADERS
from dispart.data.ball import (
    POLYGON,
    BallConfig,
    edge_normals,
    ensure_ball_dataset,
    inside,
    make_ball_dataset,
    read_ball_dataset,
    reflect,
    render,
    simulate,
)
from dispart.data.config import DataConfig
from dispart.errors import DataError
from dispart.evaluation.prediction import blank_predictor, last_frame_predictor, prediction_error
from dispart.models.predictors import DeterministicDynamicsVAE, LSTMc, LSTMf

SQUARE = np.array([(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)])
SMALL = BallConfig(n=60, n_test=20, seed=3)


@pytest.fixture(scope="module")
def small() -> ball.BallData:
    return make_ball_dataset(SMALL)


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    yield


# ----------------------------------------------------------------------------- physics

def test_reflection_off_a_slanted_edge_by_hand():
    n = np.array([1.0, 1.0]) / math.sqrt(2.0)
    np.testing.assert_allclose(reflect(np.array([1.0, 0.0]), n), [0.0, -1.0], atol=1e-12)
    np.testing.assert_allclose(reflect(np.array([3.0, -2.0]), np.array([0.0, 1.0])), [3.0, 2.0])


def test_bounce_mid_frame_matches_hand_computed_path():
    # radius 1 in a 10x10 box: the centre may reach x = 9. From (8, 5) at (2, 1) per frame it touches
    # x = 9 at t = 0.5 (y = 5.5), turns to (-2, 1) and spends the other half frame going to (8, 6).
    pos, vel = simulate(np.array([[8.0, 5.0]]), np.array([[2.0, 1.0]]), 3, SQUARE, 1.0)
    np.testing.assert_allclose(pos[0], [[8.0, 5.0], [8.0, 6.0], [6.0, 7.0]], atol=1e-12)
    np.testing.assert_allclose(vel[0], [[2.0, 1.0], [-2.0, 1.0], [-2.0, 1.0]], atol=1e-12)


def test_corner_hit_reflects_off_both_walls():
    pos, vel = simulate(np.array([[8.0, 8.0]]), np.array([[2.0, 2.0]]), 2, SQUARE, 1.0)
    np.testing.assert_allclose(pos[0, 1], [8.0, 8.0], atol=1e-12)
    np.testing.assert_allclose(vel[0, 1], [-2.0, -2.0], atol=1e-12)


def test_ball_stays_inside_and_keeps_its_speed(small):
    normals, offsets = edge_normals(np.asarray(POLYGON), SMALL.radius)
    assert inside(small.positions, normals, offsets, tol=1e-9).all()
    speed = np.linalg.norm(small.velocities, axis=-1)
    np.testing.assert_allclose(speed, speed[:, :1].repeat(SMALL.T, axis=1), rtol=1e-12)
    assert speed.min() >= SMALL.speed[0] and speed.max() <= SMALL.speed[1]
    # the walls do act: most sequences bounce at least once in 30 frames
    turned = (np.abs(np.diff(small.velocities, axis=1)).sum(axis=(1, 2)) > 1e-9).mean()
    assert turned > 0.5
    # between bounces the motion is straight: x_{t+1} = x_t + v_t wherever v did not change
    same = np.all(np.isclose(small.velocities[:, 1:], small.velocities[:, :-1]), axis=-1)
    step = small.positions[:, 1:] - small.positions[:, :-1]
    np.testing.assert_allclose(step[same], small.velocities[:, :-1][same], atol=1e-9)


def test_polygon_checks():
    with pytest.raises(ValueError, match="convex"):
        edge_normals(np.array([(0, 0), (10, 0), (5, 2), (10, 10), (0, 10)], dtype=float))
    with pytest.raises(ValueError, match="no room"):
        edge_normals(SQUARE, 6.0)
    with pytest.raises(ValueError, match="outside"):
        simulate(np.array([[9.5, 5.0]]), np.array([[1.0, 0.0]]), 2, SQUARE, 1.0)


# ----------------------------------------------------------------------------- rendering

def test_render_disk_by_hand():
    img = render(np.array([16.0, 16.0]), 32, 3.0)
    # pixel centres at offsets +-0.5, +-1.5, +-2.5 from (16, 16) within 3: 2 * (6 + 6 + 4) = 32 pixels
    assert img.shape == (32, 32) and img.dtype == np.uint8 and img.sum() == 32
    assert img[13, 14] == 1 and img[13, 13] == 0  # (14.5, 13.5): 8.5 <= 9; (13.5, 13.5): 12.5 > 9
    assert img[16, 18] == 1 and img[16, 19] == 0  # x = 18.5: 2.5 away; x = 19.5: 3.5 away
    shifted = render(np.array([10.0, 20.0]), 32, 3.0)  # x = 10 (column), y = 20 (row)
    np.testing.assert_array_equal(shifted, np.roll(np.roll(img, -6, axis=1), 4, axis=0))


def test_ball_pixels_sit_at_the_simulated_centre(small):
    on = small.frames.astype(bool)
    rows, cols = np.arange(32) + 0.5, np.arange(32) + 0.5
    count = on.sum(axis=(2, 3))
    cy = (on * rows[:, None]).sum(axis=(2, 3)) / count
    cx = (on * cols[None, :]).sum(axis=(2, 3)) / count
    err = np.hypot(cx - small.positions[..., 0], cy - small.positions[..., 1])
    assert err.max() < 0.35, err.max()
    assert count.min() >= 24 and count.max() <= 32  # about pi r^2 = 28 pixels


# ----------------------------------------------------------------------------- dataset and cache

def test_counts_splits_and_seeding(small):
    assert small.frames.shape == (60, 30, 32, 32) and set(np.unique(small.frames)) == {0, 1}
    assert small.split("train") == slice(0, 40) and small.split("test") == slice(40, 60)
    again = make_ball_dataset(SMALL)
    np.testing.assert_array_equal(again.frames, small.frames)
    np.testing.assert_array_equal(again.positions, small.positions)
    other = make_ball_dataset(BallConfig(n=60, n_test=20, seed=4))
    assert not np.array_equal(other.positions, small.positions)
    assert BallConfig().n == 5000 and BallConfig().n_test == 1000 and BallConfig().T == 30


def test_cache_is_reused_atomic_and_repairs_damage(tmp_path, monkeypatch):
    data, path = ensure_ball_dataset(tmp_path, SMALL)
    assert path.name == f"ball-{SMALL.key()}.npz" and [p.name for p in tmp_path.iterdir()] == [path.name]
    monkeypatch.setattr(ball, "make_ball_dataset", lambda cfg: pytest.fail("regenerated a good cache"))
    again, _ = ensure_ball_dataset(tmp_path, SMALL)
    np.testing.assert_array_equal(again.frames, data.frames)
    assert again.config == SMALL
    monkeypatch.undo()

    path.write_bytes(b"not a zip")
    with pytest.raises(DataError, match=str(path)):
        read_ball_dataset(path)
    repaired, _ = ensure_ball_dataset(tmp_path, SMALL)
    np.testing.assert_array_equal(repaired.frames, data.frames)

    # a crash inside the write (disk full after some bytes) leaves no target and no temporary file
    def full_disk(f, **arrays):
        f.write(b"partial")
        raise OSError("No space left on device")
    monkeypatch.setattr(np, "savez_compressed", full_disk)
    with pytest.raises(OSError, match="No space"):
        ensure_ball_dataset(tmp_path / "x", BallConfig(n=10, n_test=2))
    assert list((tmp_path / "x").iterdir()) == []


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="missing"):
        read_ball_dataset(tmp_path / "nope.npz")


# ----------------------------------------------------------------------------- loader

def test_loader_gives_a_frames_modality(small, tmp_path, monkeypatch):
    corpus = ball_corpus(small)
    spec = corpus.specs[BALL_MODALITY]
    assert (spec.kind, spec.shape, spec.likelihood) == ("frames", (1, 32, 32), "bernoulli")
    train, test = corpus.sets[BALL_MODALITY]["train"], corpus.sets[BALL_MODALITY]["test"]
    assert len(train) == 40 and len(test) == 20 and train.ids[0] == "ball0000" and test.ids[0] == "ball0040"
    seqs = Sequences.from_list(list(test.examples[:3]))
    assert seqs.data.shape == (3, 30, 1, 32, 32) and seqs.data.dtype == torch.float32
    np.testing.assert_array_equal(seqs.data[1, :, 0].numpy(), small.frames[41])

    assert LOADERS["ball"] is load_ball_corpus
    monkeypatch.setattr("dispart.batches.ball.BallConfig", lambda: SMALL)  # the full set takes ~3 s
    loaded = load_ball_corpus(DataConfig(cache_dir=str(tmp_path)), progress=False)
    assert len(loaded.sets[BALL_MODALITY]["test"]) == 20
    assert (tmp_path / "ball" / f"ball-{SMALL.key()}.npz").is_file()


# ----------------------------------------------------------------------------- baselines

TINY = dict(z_dim=8, f_dim=4, hidden=32, frame_hidden=32, channels=(8, 16))


@pytest.mark.parametrize("cls", [LSTMf, LSTMc])
def test_baseline_shapes_and_causal_encoder(cls, small):
    torch.manual_seed(0)
    m = cls(**TINY)
    x = torch.from_numpy(small.frames[:5]).float()[:, :, None]
    q_z, q_f = m.encode(x)
    assert q_z.mean.shape == (5, 8) and q_f.mean.shape == (5, 4)
    assert m.decode_logits(q_z.mean, q_f.mean, 30).shape == (5, 30, 1, 32, 32)
    pred = m.predict(x[:, :20], 10)
    assert pred.shape == (5, 10, 1, 32, 32) and 0 <= float(pred.min()) and float(pred.max()) <= 1
    # q reads only the observed prefix: frames past lengths change nothing
    lengths = torch.tensor([20, 20, 5, 30, 1])
    y = x.clone()
    y[0, 20:] = 1 - y[0, 20:]
    y[2, 5:] = 1 - y[2, 5:]
    y[4, 1:] = 0
    torch.testing.assert_close(m.encode(x, lengths)[0].mean, m.encode(y, lengths)[0].mean)
    with pytest.raises(ValueError, match="frames must be"):
        m.encode(x[:, :, 0])
    with pytest.raises(ValueError, match="lengths"):
        m.encode(x, torch.tensor([0, 1, 1, 1, 1]))


def test_dynamics_differ_as_the_paper_says():
    torch.manual_seed(0)
    f, c = LSTMf(**TINY), LSTMc(**TINY)
    z = torch.randn(2, 8)
    # LSTM-f: z only sets the initial state, the input is zero; LSTM-c: z is the input at every step
    assert f.transition.input_size == 1 and c.transition.input_size == 8
    h0, _ = f.init_state(z).chunk(2, -1)
    assert f.states(z, 4).shape == (2, 4, 32) and h0.shape == (2, 32)
    # LSTM-c with h_0 = c_0 = 0: one step from input z is a hand-run LSTM cell from the zero state
    lstm = c.transition
    i, _, g, o = (z @ lstm.weight_ih_l0.T + lstm.bias_ih_l0 + lstm.bias_hh_l0).chunk(4, -1)
    h1 = torch.sigmoid(o) * torch.tanh(torch.sigmoid(i) * torch.tanh(g))
    torch.testing.assert_close(c.states(z, 1)[:, 0], h1)
    # LSTM-f: (h_0, c_0) = W z + b and a zero input: gates = W_hh h_0 + biases
    lstm = f.transition
    h0, c0 = f.init_state(z).chunk(2, -1)
    i, fg, g, o = (h0 @ lstm.weight_hh_l0.T + lstm.bias_ih_l0 + lstm.bias_hh_l0).chunk(4, -1)
    c1 = torch.sigmoid(fg) * c0 + torch.sigmoid(i) * torch.tanh(g)
    torch.testing.assert_close(f.states(z, 1)[:, 0], torch.sigmoid(o) * torch.tanh(c1))
    with pytest.raises(ValueError, match="dynamics"):
        DeterministicDynamicsVAE("gru")


@pytest.mark.parametrize("cls", [LSTMf, LSTMc])
def test_one_training_step_lowers_the_loss(cls, small):
    torch.manual_seed(1)
    m = cls(**TINY)
    x = torch.from_numpy(small.frames[:16]).float()[:, :, None]
    observed = torch.randint(1, 31, (16,))
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)

    def loss() -> torch.Tensor:
        torch.manual_seed(7)  # same posterior noise before and after the step
        return m.loss(x, observed)[0]

    before = loss()
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = loss()
    before = before.detach()
    assert math.isfinite(float(before)) and float(after) < float(before)
    # the loss is -ELBO per sequence: at init the reconstruction term is near 30 * 1024 * log 2
    assert 0.5 * 30 * 1024 * math.log(2) < float(before) < 2 * 30 * 1024 * math.log(2)


def test_kl_warmup_weighs_only_the_kl_terms_and_logs_the_true_negative_elbo(small):
    m = LSTMf(**TINY)
    x = torch.from_numpy(small.frames[:4]).float()[:, :, None]

    def run(weight: float):
        torch.manual_seed(3)  # the same posterior draws for every weight
        return m.loss(x, kl_weight=weight)

    full, t1 = run(1.0)
    half, t_half = run(0.5)
    none, _ = run(0.0)
    kl = t1["kl_z"] + t1["kl_f"]
    assert float(kl) > 0.05  # large enough for the weights to tell apart at abs=1e-3
    assert float(full) == pytest.approx(float(t1["rec"] + kl), abs=1e-3)
    assert float(half) == pytest.approx(float(t1["rec"] + 0.5 * kl), abs=1e-3)
    assert float(none) == pytest.approx(float(t1["rec"]), abs=1e-3)
    assert float(t_half["loss"]) == pytest.approx(float(full), abs=1e-3)  # logged: -ELBO


# ----------------------------------------------------------------------------- prediction error

def _moving_dot(n: int = 3, t: int = 6, w: int = 8) -> torch.Tensor:
    """Frame s of every sequence has exactly pixel s on (frame shape (1, 1, w))."""
    x = torch.zeros(n, t, 1, 1, w)
    for s in range(t):
        x[:, s, 0, 0, s] = 1
    return x


def test_prediction_error_against_hand_made_predictors():
    x = _moving_dot()

    def oracle(prefix, k):
        t = prefix.shape[1]
        out = torch.zeros(prefix.shape[0], k, 1, 1, 8)
        for j in range(k):
            out[:, j, 0, 0, t + j] = 0.9
        return out

    def one_off(prefix, k):  # the dot one pixel too far: 2 wrong pixels of 8 in every frame
        t = prefix.shape[1]
        out = torch.zeros(prefix.shape[0], k, 1, 1, 8)
        for j in range(k):
            out[:, j, 0, 0, t + j + 1] = 1
        return out

    assert prediction_error(oracle, x, [1, 3, 5]) == {1: 0.0, 3: 0.0, 5: 0.0}
    assert prediction_error(one_off, x, [1, 2], batch_size=2) == {1: 2 / 8, 2: 2 / 8}
    assert prediction_error(blank_predictor, x, [4]) == {4: 1 / 8}
    assert prediction_error(last_frame_predictor, x.numpy(), [2]) == {2: 2 / 8}
    # the threshold decides: 0.9 counts as on, with threshold 0.95 the oracle predicts nothing
    assert prediction_error(oracle, x, [2], threshold=0.95) == {2: 1 / 8}


def test_prediction_error_bad_input():
    x = _moving_dot()
    with pytest.raises(ValueError, match=r"missing must list k in \[1, 5\]"):
        prediction_error(blank_predictor, x, [6])
    with pytest.raises(ValueError, match="binary"):
        prediction_error(blank_predictor, x * 0.5, [1])
    with pytest.raises(ValueError, match="returned shape"):
        prediction_error(lambda p, k: p, x, [2])
