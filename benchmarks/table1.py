"""Reproduce PVAE Table 1 on FSDD + MNIST: train every row's config, evaluate, combine.

    python benchmarks/table1.py --data-dir ../shared/data --split official --epochs 60
    python benchmarks/table1.py --data-dir ../shared/data --split speaker:george --epochs 60
    python benchmarks/table1.py --data-dir ../shared/data --epochs 30 --results table1_b64 \
        --rows vae_sp vae_im jmvae_kl pvae_no_cm pvae_b64 -- train.batch_size=64 train.bucket_pool=4

Runs one training at a time (skipping runs that already finished), then writes
RUNS/table1.json and RUNS/table1.md with our purities next to the paper's. Extra ``a.b=value``
overrides apply to every run (e.g. data.normalize=utterance data.augment=warp). With ``--results NAME``
the table (purities as fractions, the digit and speaker probes per latent, training seconds and the
command) also goes to benchmarks/results/NAME.json.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's dispart, installed or not

from dispart.config import load_config  # noqa: E402
from dispart.data.locate import find_data  # noqa: E402
from dispart.evaluation.evaluate import evaluate_run  # noqa: E402
from dispart.evaluation.table import PurityRow, rows_to_markdown  # noqa: E402
from dispart.files import atomic_write, atomic_write_json  # noqa: E402
from dispart.training.run import train_to_end  # noqa: E402

CONFIGS = Path(__file__).parents[1] / "configs"
ROWS = ("vae_sp", "vae_im", "jmvae_kl", "pvae_no_cm", "pvae")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(Path(__file__).parents[2] / "shared" / "data"))
    ap.add_argument("--split", default="official")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--runs", default=None, help="output folder (default runs/table1-<split>)")
    ap.add_argument("--rows", nargs="*", default=list(ROWS))
    ap.add_argument("--results", default=None, help="also write benchmarks/results/RESULTS.json")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    out = Path(args.runs or f"runs/table1-{args.split.replace(':', '-')}")
    base = [f"{k}={v}" for k, v in find_data(Path(args.data_dir)).items()]
    base += [f"data.split={args.split}", f"train.epochs={args.epochs}", "train.progress_bar=false"]
    rows, timing, probes = [], {}, {}
    for name in args.rows:
        run = out / name
        if not (run / "model.safetensors").is_file():
            t0 = time.perf_counter()
            train_to_end(load_config(CONFIGS / f"{name}.yaml", base + args.overrides), run)
            timing[name] = time.perf_counter() - t0
        result = evaluate_run(run, progress=False)
        rows += [PurityRow(**r) for r in result["rows"]]
        probes[name] = {k: result.get(k) for k in ("label_probe_accuracy", "label_probe_chance",
                                                   "speaker_probe_accuracy", "speaker_probe_chance")}
    table = rows_to_markdown(rows)
    atomic_write(out / "table1.md", table + "\n")
    atomic_write_json(out / "table1.json", {
        "split": args.split, "epochs": args.epochs, "overrides": args.overrides,
        "rows": [r.__dict__ for r in rows], "train_seconds": timing})
    if args.results:
        atomic_write_json(Path(__file__).parent / "results" / f"{args.results}.json", {
            "what": "Table 1 (k-means purity, k = 10, of latents inferred from one modality, test split)",
            "units": "fractions in [0, 1]; seconds",
            "command": shlex.join(["python", "benchmarks/table1.py", *sys.argv[1:]]),
            "split": args.split, "epochs": args.epochs, "overrides": args.overrides,
            "rows": [r.__dict__ for r in rows], "probes": probes,
            "train_seconds": timing, "runs": str(out)})
    print(table)


if __name__ == "__main__":
    main()
