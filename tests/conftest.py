"""Shared fixtures: the development data beside the repo (skipped when absent), one thread."""

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
