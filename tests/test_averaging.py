"""``train.average_from``: the run's weights are the mean of its epoch-end weights from epoch N on,
training itself is unchanged, a resumed run equals an uninterrupted one, and a checkpoint holding an
average is not resumed as plain weights."""

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file

from dispart.cli import main
from dispart.errors import RunDirError
from dispart.training.averaging import EpochAveraging
from dispart.training.resume import resume_checkpoint

FAST = ["model.hidden=16", "train.batch_size=64", "train.progress_bar=false",
        "train.log_every_n_steps=1"]  # 5 steps an epoch on the sample


def _train(out, cache, *extra):
    assert main(["train", "tests/sample.yaml", "--out", str(out), f"data.cache_dir={cache}",
                 *FAST, *extra]) == 0


def _weights(path):
    """Model weights of a checkpoint's ``state_dict`` (names as in model.safetensors)."""
    return {k.removeprefix("model."): v for k, v in
            torch.load(path, weights_only=True)["state_dict"].items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("averaging")
    cache = root / "cache"
    _train(root / "plain", cache, "train.epochs=3")
    _train(root / "averaged", cache, "train.epochs=3", "train.average_from=2")
    return root, cache


def test_the_run_is_the_mean_of_the_epoch_end_weights_and_training_is_unchanged(runs):
    root, _ = runs
    # the plain run keeps the checkpoints of its last two epochs: the weights after epochs 2 and 3
    w2 = _weights(root / "plain" / "checkpoints" / "epoch001.ckpt")
    w3 = _weights(root / "plain" / "checkpoints" / "epoch002.ckpt")
    averaged = load_file(str(root / "averaged" / "model.safetensors"))
    assert averaged.keys() == w2.keys()
    for k, v in averaged.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, (w2[k] + w3[k]) / 2, rtol=0, atol=1e-6)
    assert any(not torch.equal(averaged[k], w3[k]) for k in averaged)  # not the last weights
    # the weights being trained are the plain run's (averaging does not touch training)
    last = torch.load(root / "averaged" / "checkpoints" / "last.ckpt", weights_only=True)
    current = {k.removeprefix("model."): v for k, v in last["current_model_state"].items()}
    assert all(torch.equal(current[k], w3[k]) for k in w3)
    summary = json.loads((root / "averaged" / "train_summary.json").read_text())
    assert summary["averaged_epochs"] == 2


def test_a_resumed_averaging_run_equals_an_uninterrupted_one(runs, tmp_path):
    root, cache = runs
    run = tmp_path / "resumed"
    _train(run, cache, "train.epochs=2", "train.average_from=2")
    assert main(["train", str(run / "config.yaml"), "--out", str(run), "--resume",
                 "train.epochs=3", f"data.cache_dir={cache}", *FAST]) == 0
    a = load_file(str(run / "model.safetensors"))
    b = load_file(str(root / "averaged" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_an_averaged_checkpoint_is_not_resumed_without_averaging(runs):
    root, _ = runs
    folder = root / "averaged" / "checkpoints"
    expected = {f"model.{k}": v for k, v in load_file(str(root / "averaged" / "model.safetensors")).items()}
    with pytest.raises(RunDirError, match="average_from"):
        resume_checkpoint(folder, expected, quiet=True, averaged=False)
    assert resume_checkpoint(folder, expected, quiet=True, averaged=True).name == "last.ckpt"


def test_stopping_before_the_first_averaged_epoch_keeps_the_trained_weights(runs, tmp_path):
    root, cache = runs
    run = tmp_path / "stopped"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _train(run, cache, "train.epochs=3", "train.max_steps=5", "train.average_from=2")
    assert any("no weights were averaged" in str(w.message) for w in caught)
    stopped = load_file(str(run / "model.safetensors"))
    # the weights trained for 5 steps, not the average's untouched initial copy
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    trained = {k.removeprefix("model."): v for k, v in last["current_model_state"].items()}
    initial = _weights(run / "checkpoints" / "last.ckpt")
    assert all(torch.equal(stopped[k], trained[k]) for k in stopped)
    assert any(not torch.equal(stopped[k], initial[k]) for k in stopped)
    assert json.loads((run / "train_summary.json").read_text())["averaged_epochs"] == 0


def test_average_from_counts_epochs_from_one():
    with pytest.raises(ValueError, match="from 1"):
        EpochAveraging(0)
    avg = EpochAveraging(3)
    assert [avg.should_update(epoch_idx=i) for i in range(4)] == [False, False, True, True]
    assert not avg.should_update(step_idx=100)


def test_mean_floats_averages_floats_and_takes_the_current_integer():
    from dispart.training.averaging import mean_floats
    avg = [torch.tensor([1.0, 4.0]), torch.tensor(3)]
    # after 3 averaged values with mean [1, 4], a fourth [5, 0] gives [2, 3]; the counter is copied
    mean_floats(avg[:1], [torch.tensor([5.0, 0.0])], torch.tensor(3))
    mean_floats(avg[1:], [torch.tensor(7)], torch.tensor(3))
    torch.testing.assert_close(avg[0], torch.tensor([2.0, 3.0]), rtol=0, atol=0)
    assert avg[1].item() == 7 and avg[1].dtype == torch.long
    # floats: bit for bit torch's own update (runs averaged before this function stay reproducible)
    from torch.optim.swa_utils import get_swa_multi_avg_fn
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, generator=g), torch.randn(50, generator=g)
    ours, theirs = [a.clone()], [a.clone()]
    mean_floats(ours, [b], torch.tensor(6))
    get_swa_multi_avg_fn()(theirs, [b], torch.tensor(6))
    assert torch.equal(ours[0], theirs[0]) and not torch.equal(ours[0], a)


def test_a_model_with_an_integer_buffer_is_averaged(runs, tmp_path):
    # model.penalty_start gives PVAE a step counter (a long buffer), which torch's default
    # averaging cannot divide; it must end as the trained model's count, the floats as the mean
    _, cache = runs
    run = tmp_path / "counter"
    _train(run, cache, "train.epochs=2", "train.average_from=1", "model.penalty_start=3")
    averaged = load_file(str(run / "model.safetensors"))
    assert averaged["step"].item() == 10  # 5 steps an epoch, 2 epochs
    # in an averaging run's checkpoints the weights being trained are under current_model_state
    w1, w2 = ({k.removeprefix("model."): v for k, v in torch.load(
        run / "checkpoints" / f"epoch00{i}.ckpt", weights_only=True)["current_model_state"].items()}
        for i in (0, 1))
    for k, v in averaged.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, (w1[k] + w2[k]) / 2, rtol=0, atol=1e-6)
