"""Build the small data sample shipped in ``dispart/sample_data`` from the full corpora.

Copies FSDD takes 0, 1 (official test) and 5-10 (train) of every speaker and digit found, and
the first 1200 MNIST training and 400 test images (the sample the tests use, ``data.audio: sample``).
The larger sample of the demo (``sample-large``) adds takes 11-34 in ``fsdd_more/``, listed with
the others in ``fsdd_large.csv``, and the first 10,000 / 1,000 MNIST images in ``mnist_large.npz``::

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
MORE_TAKES = tuple(range(11, 35))
N_TRAIN, N_TEST = 1200, 400
N_TRAIN_LARGE, N_TEST_LARGE = 10_000, 1_000
NAME_RE = re.compile(r"^(\d+)_([^_]+)_(\d+)\.wav$")


def make_fsdd(src: Path, out: Path, takes: tuple[int, ...] = TAKES) -> int:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    files = []
    for p in sorted(src.glob("*.wav")):
        m = NAME_RE.match(p.name)
        if m is None:
            raise SystemExit(f"{p}: unexpected file name")
        if int(m[3]) in takes:
            files.append(p)
    speakers = sorted({NAME_RE.match(p.name)[2] for p in files})
    digits = sorted({NAME_RE.match(p.name)[1] for p in files})
    expected = len(speakers) * len(digits) * len(takes)
    if len(files) != expected:
        raise SystemExit(f"found {len(files)} files, expected {expected} (some takes missing)")
    for p in files:
        shutil.copy2(p, out / p.name)
    return len(files)


def write_manifest(root: Path, folders: tuple[str, ...], out: Path) -> int:
    """label,speaker,take,path rows (paths relative to ``root``) of every wav in ``folders``."""
    rows = ["label,speaker,take,path"]
    for folder in folders:
        for p in sorted((root / folder).glob("*.wav")):
            m = NAME_RE.match(p.name)
            assert m is not None, p
            rows.append(f"{m[1]},{m[2]},{m[3]},{folder}/{p.name}")
    out.write_text("\n".join(rows) + "\n")
    return len(rows) - 1


def make_mnist(src: Path, out: Path, n_train: int = N_TRAIN, n_test: int = N_TEST) -> None:
    with np.load(src, allow_pickle=False) as z:
        arrays = {
            "x_train": z["x_train"][:n_train],
            "y_train": z["y_train"][:n_train],
            "x_test": z["x_test"][:n_test],
            "y_test": z["y_test"][:n_test],
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
    n_more = make_fsdd(fsdd_src, args.out / "fsdd_more", MORE_TAKES)
    n_listed = write_manifest(args.out, ("fsdd", "fsdd_more"), args.out / "fsdd_large.csv")
    make_mnist(mnist_src, args.out / "mnist_large.npz", N_TRAIN_LARGE, N_TEST_LARGE)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {n} + {n_more} wavs ({n_listed} in fsdd_large.csv), {N_TRAIN}+{N_TEST} and "
          f"{N_TRAIN_LARGE}+{N_TEST_LARGE} MNIST images to {args.out} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
