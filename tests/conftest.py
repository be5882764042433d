"""Shared fixtures: the development data beside the repo (skipped when absent), one thread, a tiny
real PVAE run on the embedded sample."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_limits

SHARED = Path(__file__).parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def shared_fsdd() -> Path:
    """Full FSDD recordings from ../shared/data (development data, never needed by users)."""
    path = SHARED / "fsdd" / "recordings"
    if not path.is_dir():
        pytest.skip(f"full FSDD not available at {path} (development data only)")
    return path


@pytest.fixture(scope="module")
def single_thread():
    """One BLAS / torch thread for a module: on a busy shared CPU extra threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_pvae_run(tmp_path_factory) -> Path:
    """A real PVAE run: 2 epochs on the embedded FSDD (5 speakers) + MNIST sample, small networks
    (~10 s). Shared by several modules: tests may add outputs (evaluation.json) but must not
    change its config or weights."""
    from dispart.cli import main

    run = tmp_path_factory.mktemp("tiny_pvae") / "pvae"
    root = Path(__file__).parents[1]
    assert main(["train", str(root / "tests" / "sample.yaml"), "--out", str(run), "train.epochs=2",
                 "model.hidden=32", "train.progress_bar=false"]) == 0
    return run
