"""Build the small data sample shipped in ``dispart/sample_data`` from the full corpora.

Copies FSDD takes 0, 1 (official test) and 5-10 (train) of every speaker and digit found, and
the first 1200 MNIST training and 400 test images::

    python tools/make_sample.py [--src ../shared/data] [--out dispart/sample_data]
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TAKES = (0, 1, 5, 6, 7, 8, 9, 10)
N_TRAIN, N_TEST = 1200, 400
NAME_RE = re.compile(r"^(\d+)_([^_]+)_(\d+)\.wav$")


def make_fsdd(src: Path, out: Path) -> int:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    files = []
    for p in sorted(src.glob("*.wav")):
        m = NAME_RE.match(p.name)
        if m is None:
            raise SystemExit(f"{p}: unexpected file name")
        if int(m[3]) in TAKES:
            files.append(p)
    speakers = sorted({NAME_RE.match(p.name)[2] for p in files})
    digits = sorted({NAME_RE.match(p.name)[1] for p in files})
    expected = len(speakers) * len(digits) * len(TAKES)
    if len(files) != expected:
        raise SystemExit(f"found {len(files)} files, expected {expected} (some takes missing)")
    for p in files:
        shutil.copy2(p, out / p.name)
    return len(files)


def make_mnist(src: Path, out: Path) -> None:
    with np.load(src, allow_pickle=False) as z:
        arrays = {
            "x_train": z["x_train"][:N_TRAIN],
            "y_train": z["y_train"][:N_TRAIN],
            "x_test": z["x_test"][:N_TEST],
            "y_test": z["y_test"][:N_TEST],
        }
    for k, v in arrays.items():
        if v.dtype != np.uint8:
            raise SystemExit(f"{src}: {k} has dtype {v.dtype}, expected uint8")
    np.savez_compressed(out, **arrays)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=REPO / "dispart" / "sample_data")
    args = ap.parse_args(argv)
    fsdd_src = args.src / "fsdd" / "recordings"
    mnist_src = args.src / "mnist" / "mnist.npz"
    for p in (fsdd_src, mnist_src):
        if not p.exists():
            print(f"missing source {p}", file=sys.stderr)
            return 1
    args.out.mkdir(parents=True, exist_ok=True)
    n = make_fsdd(fsdd_src, args.out / "fsdd")
    make_mnist(mnist_src, args.out / "mnist_sample.npz")
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {n} wavs and {N_TRAIN}+{N_TEST} MNIST images to {args.out} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
