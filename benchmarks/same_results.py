"""Does a refactor change results? Train the same fixed-seed short PVAE run with the code of an older
commit and with this checkout, then compare the weights tensor by tensor (old state-dict keys
upgraded as `load_run` does) and the Table 1 rows.

    python benchmarks/same_results.py --before d4dbcbe --data-dir ../shared/data --epochs 2

The older commit is checked out into a temporary git worktree and run with ``PYTHONPATH`` pointing at
it. Writes ``benchmarks/results/same_results.json`` (with the commands) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's dispart, installed or not

from dispart.files import atomic_write_json  # noqa: E402
from dispart.models.registry import upgrade_state_dict  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def table1(code: Path, data_dir: str, epochs: int, runs: Path, row: str) -> list[str]:
    """Run benchmarks/table1.py of the checkout at ``code`` for one row; returns the command."""
    cmd = [sys.executable, str(code / "benchmarks" / "table1.py"), "--data-dir", data_dir,
           "--epochs", str(epochs), "--rows", row, "--runs", str(runs)]
    env = {**os.environ, "PYTHONPATH": str(code)}
    subprocess.run(cmd, env=env, check=True, cwd=code, stdout=subprocess.DEVNULL)
    return cmd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="git revision of the code before the change")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--row", default="pvae")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "same_results.json"))
    args = ap.parse_args()
    before_rev = subprocess.run(["git", "rev-parse", args.before], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout.strip()
    after_rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, check=True,
                               capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        worktree = tmp_path / "before"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(worktree), before_rev],
                       cwd=ROOT, check=True)
        try:
            t0 = time.perf_counter()
            cmd_before = table1(worktree, args.data_dir, args.epochs, tmp_path / "runs_before", args.row)
            cmd_after = table1(ROOT, args.data_dir, args.epochs, tmp_path / "runs_after", args.row)
            seconds = time.perf_counter() - t0
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=True)
        runs = {k: tmp_path / f"runs_{k}" / args.row for k in ("before", "after")}
        hparams = json.loads((runs["before"] / "run.json").read_text())["model"]
        w_before = upgrade_state_dict(hparams, load_file(str(runs["before"] / "model.safetensors")))
        w_after = load_file(str(runs["after"] / "model.safetensors"))
        differing = sorted(k for k in w_after if k not in w_before
                           or not torch.equal(w_before[k], w_after[k]))
        tables = {k: json.loads((tmp_path / f"runs_{k}" / "table1.json").read_text())["rows"]
                  for k in runs}
        rows = {k: [(r["model"], r["modality"], r["latent"], r["purity"]) for r in v]
                for k, v in tables.items()}
    result = {
        "before": before_rev, "after": after_rev, "row": args.row, "epochs": args.epochs,
        "weights_identical": not differing and w_before.keys() == w_after.keys(),
        "differing_tensors": differing, "n_tensors": len(w_after),
        "table1_identical": rows["before"] == rows["after"],
        "table1_before": tables["before"], "table1_after": tables["after"],
        "seconds": round(seconds, 1),
        "commands": {"this": " ".join([Path(sys.executable).name, *sys.argv]),
                     "before": " ".join(cmd_before), "after": " ".join(cmd_after)},
    }
    atomic_write_json(args.out, result)
    print(f"weights identical: {result['weights_identical']} ({len(w_after)} tensors); "
          f"Table 1 identical: {result['table1_identical']}")
    for r in tables["after"]:
        print(f"  {r['modality']:>6} {r['latent']:>4} purity {100 * r['purity']:.2f}%")


if __name__ == "__main__":
    main()
