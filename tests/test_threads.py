"""train.threads=auto: the faster thread count is chosen, and the timing probe leaves no trace."""

import json
from pathlib import Path

import pytest
import torch

from dispart.cli import main
from dispart.training.threads import available_cpus, faster

FAST = ["model.hidden=32", "train.batch_size=64", "train.progress_bar=false",
        "train.log_every_n_steps=1", "train.max_steps=4"]


def test_more_threads_only_when_clearly_faster():
    assert faster([1.0, 1.0, 1.0], [0.5, 0.6, 0.55], many=2) == 2
    assert faster([1.0, 1.0, 1.0], [0.95, 0.95, 0.95], many=2) == 1  # within the 10 % margin
    assert faster([1.0, 1.0, 1.0], [1.5, 1.4, 1.6], many=4) == 1
    assert faster([1.0, 9.0, 1.0], [0.8, 0.8, 0.8], many=2) == 2  # medians, not means
    assert faster([1.0], [0.1], many=1) == 1


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def losses(run: Path) -> list[str]:
    lines = (run / "logs" / "metrics.csv").read_text().splitlines()
    col = lines[0].split(",").index("train/loss")
    return [r.split(",")[col] for r in lines[1:] if r.split(",")[col]]


def test_auto_threads_choose_a_count_and_leave_training_as_with_that_count(tmp_path, capsys,
                                                                           restore_threads):
    """The probe runs forward and backward passes on the first batch; the run that follows logs
    the same losses, digit for digit, as a run told that thread count from the start."""
    auto = tmp_path / "auto"
    assert main(["train", "tests/sample.yaml", "--out", str(auto), "train.threads=auto",
                 f"data.cache_dir={tmp_path / 'cache'}", *FAST]) == 0
    chosen = json.loads((auto / "train_summary.json").read_text())["threads"]
    assert chosen in {1, available_cpus()}
    if available_cpus() > 1:
        assert f"train.threads=auto: {chosen} " in capsys.readouterr().out
    fixed = tmp_path / "fixed"
    assert main(["train", "tests/sample.yaml", "--out", str(fixed), f"train.threads={chosen}",
                 f"data.cache_dir={tmp_path / 'cache'}", *FAST]) == 0
    assert len(losses(auto)) == 4
    assert losses(auto) == losses(fixed)


@pytest.mark.parametrize("value", ["fast", "-1", "1.5"])
def test_bad_thread_counts_are_config_errors(tmp_path, capsys, value):
    assert main(["train", "tests/sample.yaml", "--out", str(tmp_path / "r"),
                 f"train.threads={value}"]) == 2
    assert "train.threads" in capsys.readouterr().err
