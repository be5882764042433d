"""MVAE Fig. 3 protocol on MNIST + label: digit accuracy predicted from images vs the number of
paired training examples, for MVAE, JMVAE and PVAE (plus logistic regression on the pixels of
the paired examples, a supervised baseline of the MVAE paper).

    python benchmarks/weak_supervision.py --data-dir ../shared/data --steps 4000

Every model sees the same number of optimiser steps at every supervision level. MVAE and PVAE
train on the paired examples plus the rest of the training set split into image-only and
label-only halves with the pairing shuffled away (MVAE section 5.1); JMVAE trains on the paired
examples only (its objective needs complete examples; MVAE paper, section 5.1). Accuracy: the
label decoded from the latents inferred from the test image alone (dispart.evaluation.subsets).
Finished runs are reused. Overrides ``a.b=value`` apply to every run, ``MODEL:a.b=value`` to that
model's runs only (e.g. ``mvae:model.activation=swish``). Writes RUNS/weak_supervision.json and .md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's dispart, installed or not

from dispart.batches.pipeline import load_experiment_data  # noqa: E402
from dispart.config import load_config  # noqa: E402
from dispart.data.locate import find_data  # noqa: E402
from dispart.evaluation.evaluate import evaluate_run  # noqa: E402
from dispart.files import atomic_write, atomic_write_json  # noqa: E402
from dispart.training.run import train_to_end  # noqa: E402

CONFIGS = Path(__file__).parents[1] / "configs"
MODELS = {"mvae": ["data.unpaired=split"], "pvae": ["data.unpaired=split"],
          "jmvae": ["data.unpaired=drop"]}


def image_to_label_accuracy(run: Path) -> float:
    result = evaluate_run(run, progress=False, curves=False)
    row = next(r for r in result["subsets"]["subsets"] if r["given"] == ["image"])
    return float(row["coherence"]["label"])


def logreg_accuracy(cfg_overrides: list[str], n_paired: int, seed: int = 0) -> float:
    cfg = load_config(CONFIGS / "mnist_label_mvae.yaml", cfg_overrides)
    data = load_experiment_data(cfg.data, progress=False, speech=False)
    train, test = data.split("image", "train"), data.split("image", "test")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(train), n_paired, replace=False)
    x = np.asarray(train.examples).reshape(len(train), -1)
    y = np.asarray(train.labels)
    if len(set(y[idx])) < 2:
        return float(np.mean(np.asarray(test.labels) == y[idx][0]))
    clf = LogisticRegression(max_iter=300).fit(x[idx], y[idx])
    xt = np.asarray(test.examples).reshape(len(test), -1)
    return float(clf.score(xt, np.asarray(test.labels)))


def split_overrides(overrides: list[str], models: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """("a.b=v" for every model, {model: ["a.b=v", ...]} from "model:a.b=v"), in the given order.
    A prefix naming a model not in ``models`` is an error (a typo would silently change nothing)."""
    shared: list[str] = []
    per_model: dict[str, list[str]] = {m: [] for m in models}
    for item in overrides:
        head, sep, rest = item.partition(":")
        if sep and "=" not in head:
            if head not in per_model:
                raise SystemExit(f"override {item!r}: {head!r} is not one of --models {models}")
            per_model[head].append(rest)
        else:
            shared.append(item)
    return shared, per_model


def mvae_beats_jmvae(results: list[dict], levels: list[int]) -> dict[str, bool]:
    """Per paired-examples level: is MVAE's accuracy above JMVAE's (the paper's claim for the
    middle of the range)?"""
    acc = {(r["model"], r["paired"]): r["accuracy"] for r in results}
    return {str(n): acc[("mvae", n)] > acc[("jmvae", n)] for n in levels}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(Path(__file__).parents[2] / "shared" / "data"))
    ap.add_argument("--paired", type=int, nargs="*", default=[100, 1000, 10000, 60000],
                    help="numbers of paired training examples")
    ap.add_argument("--steps", type=int, default=4000, help="optimiser steps per run")
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--runs", default="runs/weak_supervision")
    ap.add_argument("--results", default=None, help="also write benchmarks/results/RESULTS.json")
    ap.add_argument("overrides", nargs="*",
                    help="a.b=value overrides for every run; MODEL:a.b=value for one model's runs")
    args = ap.parse_args()
    shared, per_model = split_overrides(args.overrides, args.models)
    out = Path(args.runs)
    out.mkdir(parents=True, exist_ok=True)
    base = [f"data.images={find_data(Path(args.data_dir))['data.images']}",
            f"train.max_steps={args.steps}", "train.epochs=100000", "train.progress_bar=false",
            "train.checkpoint_every_steps=1000"]
    results: list[dict] = []
    for n_paired in args.paired:
        for model in args.models:
            run = out / f"{model}-{n_paired}"
            overrides = base + MODELS[model] + [f"data.paired_fraction={n_paired / 60000!r}"]
            seconds = None
            if not (run / "model.safetensors").is_file():
                t0 = time.perf_counter()
                cfg = load_config(CONFIGS / f"mnist_label_{model}.yaml",
                                  overrides + shared + per_model[model])
                train_to_end(cfg, run)
                seconds = time.perf_counter() - t0
            acc = image_to_label_accuracy(run)
            results.append({"model": model, "paired": n_paired, "accuracy": acc,
                            "train_seconds": seconds})
            print(f"{model:6s} paired={n_paired:6d} accuracy={100 * acc:.1f}%", flush=True)
        acc = logreg_accuracy(base[:1], n_paired)
        results.append({"model": "logreg", "paired": n_paired, "accuracy": acc})
        print(f"logreg paired={n_paired:6d} accuracy={100 * acc:.1f}%", flush=True)
    names = [*args.models, "logreg"]
    lines = ["| paired examples | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for n_paired in args.paired:
        cells = [next((f"{100 * r['accuracy']:.1f}" for r in results
                       if r["model"] == m and r["paired"] == n_paired), "") for m in names]
        lines.append(f"| {n_paired} | " + " | ".join(cells) + " |")
    atomic_write(out / "weak_supervision.md", "\n".join(lines) + "\n")
    record = {"command": "python benchmarks/weak_supervision.py " + shlex.join(sys.argv[1:]),
              "what": "image -> label accuracy on the MNIST test set vs paired training examples "
                      "(MVAE Fig. 3 protocol); fractions in [0, 1]",
              "steps": args.steps, "overrides": args.overrides, "runs": str(out), "results": results}
    if {"mvae", "jmvae"} <= set(args.models) and len(args.paired) > 2:
        record["mvae_beats_jmvae_in_the_middle"] = mvae_beats_jmvae(results, sorted(args.paired)[1:-1])
    atomic_write_json(out / "weak_supervision.json", record)
    if args.results:
        atomic_write_json(Path(__file__).parent / "results" / f"{args.results}.json", record)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
