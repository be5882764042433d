"""benchmarks/speech_judge_check.py: the std-matched reconstructions on a hand-made case."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from speech_judge_check import std_matched  # noqa: E402


def test_std_matched_scales_the_spread_about_the_time_mean() -> None:
    g = np.array([[1.0, 10.0], [3.0, 10.0]])        # time means (2, 10); stds (1, 0): mean std 0.5
    s = np.array([[0.0, 0.0], [4.0, 2.0]])          # stds (2, 1): mean std 1.5 -> scale 3
    (out,) = std_matched([g], [s])
    np.testing.assert_allclose(out, [[-1.0, 10.0], [5.0, 10.0]])
    np.testing.assert_allclose(out.std(0).mean(), s.std(0).mean())
    (flat,) = std_matched([np.ones((3, 2))], [s])   # no spread to scale: unchanged
    np.testing.assert_allclose(flat, np.ones((3, 2)))
