"""``dispart report RUN_DIR``: one self-contained HTML page for a trained run."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dispart.errors import ConfigError

__all__ = ["add_report_parser", "cmd_report"]


def cmd_report(args: argparse.Namespace) -> int:
    from dispart.report.html import build_report

    if args.rows < 1:
        raise ConfigError(f"--rows must be >= 1, got {args.rows}")
    t0 = time.perf_counter()
    path = build_report(args.run_dir, args.out, seed=args.seed, rows=args.rows,
                        regenerate=args.regenerate)
    size = Path(path).stat().st_size / 1e6
    print(f"wrote {path} ({size:.1f} MB, {time.perf_counter() - t0:.0f} s)")
    return 0


def add_report_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``report`` to the dispart sub-commands (func(args) -> exit code)."""
    r = subparsers.add_parser(
        "report", help="self-contained HTML report of a run (Table 1, plots, grids, audio)",
        description="Write one HTML page with everything embedded. Computes what the run folder "
                    "lacks, or holds corrupt or from other weights (stale after --resume): "
                    "evaluation.json, generated/ (grids, wavs), quality.json, plots. Refuses a "
                    "run folder whose manifest names files outside it.")
    r.add_argument("run_dir", help="a trained run folder")
    r.add_argument("--out", help="HTML file to write (default RUN_DIR/report.html)")
    r.add_argument("--seed", type=int, default=0, help="seed of source picks, prior draws, t-SNE")
    r.add_argument("--rows", type=int, default=5, help="style rows of generated grids (default 5)")
    r.add_argument("--regenerate", action="store_true",
                   help="recompute evaluation, grids, quality and plots even if present")
    r.set_defaults(func=cmd_report)
    return r
