"""PVAE leave-one-speaker-out on FSDD + MNIST: every speaker held out in turn (issue 13).

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/pvae_loso.py --data-dir ../shared/data
        [--config configs/pvae_robust.yaml] [--runs-dir runs/loso] [--speakers a,b] [--tag NAME]
        [--threads 1] [key=value ...]

The speakers are read from the corpus (never a fixed list). For each one the config is trained
with ``data.split=speaker:NAME`` (that speaker's 500 utterances are the test split; the other
speakers train), evaluated with ``evaluate_run`` (k-means purity, k = 10, of the latents inferred
from one modality on the test split) and recorded at once, so a stopped run keeps its finished
folds. With ``data.audio_extra=DIR`` a second spoken-digit corpus (e.g. the Arabic digits) is
trained on beside every fold; its speakers are never held out, and its own test speakers are
left out of the evaluation, which stays on the held-out speaker of ``data.audio`` alone.
The mean over the folds is written when every speaker of the corpus has a fold.
``--summarise-only`` trains nothing and rewrites the speaker list and the summary from the folds.

Writes benchmarks/results/pvae_loso.json (entries with the same ``--tag`` and speaker are replaced):
purities as fractions in [0, 1], per fold the exact command, the wall times and the load average.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tagged_runs import add_tagged_arguments, machine, recorded_command, results_lock  # noqa: E402

from dispart.batches.loaders import speech_splits  # noqa: E402
from dispart.batches.pipeline import ExperimentData, load_experiment_data  # noqa: E402
from dispart.config import load_config  # noqa: E402
from dispart.data.locate import find_data  # noqa: E402
from dispart.evaluation.evaluate import evaluate_run  # noqa: E402
from dispart.files import atomic_write_json, read_json  # noqa: E402
from dispart.training.run import train  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "pvae_loso.json"
DEFAULTS = ["train.progress_bar=false"]
TARGET = 0.90  # issue 13: mean held-out speech z^s purity over all folds


def corpus_speakers(cfg) -> list[str]:
    """Every speaker of the configured speech corpus (all splits), from the scan of its files: no
    features computed, and the speed-perturbed copies that ``data.speed_perturb`` adds to the
    training data ("NAME@0.9") are not speakers to hold out, nor are those of a second corpus
    (``data.audio_extra``), which only adds training data."""
    own = dataclasses.replace(cfg.data, audio_extra="")
    return sorted({u.speaker for us in speech_splits(own).values() for u in us if u.speaker})


def held_out_data(data: ExperimentData, speaker: str) -> ExperimentData:
    """A fold's loaded data (the same that trained it) with the speech test split cut down to
    ``speaker``: with ``data.audio_extra`` the second corpus's own test speakers are not part of
    the fold; without it the test split is that speaker's already and nothing changes."""
    test = data.split("audio", "test")
    keep = [s == speaker for s in (test.speakers or [])]
    if not any(keep):
        raise SystemExit(f"pvae_loso: no test utterance of {speaker!r} in the fold's data")
    if all(keep):
        return data
    sets = {**data.sets, "audio": {**data.sets["audio"], "test": test.select(keep)}}
    return dataclasses.replace(data, sets=sets)


def purities(result: dict[str, Any]) -> dict[str, float]:
    """"<column>/<symbol>" -> k-means purity, from an evaluation result's rows."""
    return {f"{r['modality']}/{r['latent']}": round(float(r["purity"]), 4) for r in result["rows"]}


def summarise(folds: list[dict[str, Any]], speakers: list[str]) -> dict[str, Any]:
    """Mean held-out speech z^s purity per tag, when that tag has a fold for every speaker."""
    out: dict[str, Any] = {}
    for tag in sorted({f["tag"] for f in folds}):
        mine = {f["held_out"]: f["purity"]["speech/z^s"] for f in folds if f["tag"] == tag}
        done = all(s in mine for s in speakers)
        out[tag] = {"speech_zs": mine, "complete": done,
                    "mean_speech_zs": round(sum(mine.values()) / len(mine), 4) if done else None,
                    "target": TARGET,
                    "target_met": bool(done and sum(mine.values()) / len(mine) >= TARGET)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "pvae_robust.yaml"))
    ap.add_argument("--data-dir", required=True, help="folder with fsdd/recordings and mnist/mnist.npz")
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "loso"), help="one run folder per fold")
    ap.add_argument("--speakers", default="", help="comma-separated subset (default: every speaker)")
    ap.add_argument("--summarise-only", action="store_true",
                    help="train nothing: rewrite the file's speaker list and summary from its folds")
    add_tagged_arguments(ap, RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = [f"{k}={v}" for k, v in find_data(Path(args.data_dir)).items()]
    cfg = load_config(args.config, [*base, *DEFAULTS, *args.overrides])
    speakers = corpus_speakers(cfg)
    chosen = [s for s in args.speakers.split(",") if s] or speakers
    unknown = sorted(set(chosen) - set(speakers))
    if unknown:
        raise SystemExit(f"pvae_loso: speakers {unknown} are not in the corpus ({speakers})")
    print(f"speakers in the corpus: {speakers}; folds to run: {chosen}", flush=True)
    out = Path(args.out)
    if args.summarise_only:  # no training: the speakers and the summary again, from the folds there
        with results_lock(out):
            old = read_json(out)
            summary = summarise(old["folds"], speakers)
            atomic_write_json(out, {**old, "speakers": speakers, "summary": summary})
        print(f"rewrote the speakers and the summary of {out}")
        return 0
    for spk in chosen:
        command = recorded_command("pvae_loso.py", ["--data-dir", args.data_dir, "--config", args.config,
                                                    "--speakers", spk, "--tag", args.tag,
                                                    "--threads", str(args.threads), *args.overrides],
                                   args.threads)
        load_before = os.getloadavg()[0]
        fold_cfg = load_config(args.config, [*base, *DEFAULTS, *args.overrides,
                                             f"data.split=speaker:{spk}"])
        run_dir = Path(args.runs_dir) / f"{args.tag}_{spk}"
        t0 = time.perf_counter()
        # loaded once: it trains the fold and is what the fold is evaluated on
        data = load_experiment_data(fold_cfg.data, progress=False)
        summary = train(fold_cfg, run_dir, overwrite=True, data=data)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = evaluate_run(run_dir, progress=False, data=held_out_data(data, spk))
        t_eval = time.perf_counter() - t0
        fold = {"tag": args.tag, "held_out": spk, "command": command, "config": args.config,
                "overrides": args.overrides, "purity": purities(result),
                "label_probe_accuracy": {k: round(float(v), 4) for k, v in
                                         (result.get("label_probe_accuracy") or {}).items()},
                "epochs": int(summary["epochs"]), "steps": int(summary["global_step"]),
                "wall_seconds": {"train": round(t_train, 1), "evaluate": round(t_eval, 1)},
                "load_average": {"before": load_before, "after": os.getloadavg()[0],
                                 "cores": os.cpu_count()},
                "run": str(run_dir), "threads": args.threads}
        with results_lock(out):  # folds of other jobs may finish at the same moment
            old = read_json(out) if out.is_file() else {}
            folds = [f for f in old.get("folds", [])
                     if (f.get("tag"), f.get("held_out")) != (args.tag, spk)] + [fold]
            atomic_write_json(out, {
                "what": ("PVAE on FSDD + MNIST, leave one speaker out: the held-out speaker's utterances "
                         "are the speech test split; k-means purity (k = 10) of latents inferred from one "
                         "modality; image columns on MNIST test"),
                "units": "purities and accuracies are fractions in [0, 1]",
                "speakers": speakers, "summary": summarise(folds, speakers), "folds": folds,
                "machine": machine(),
            })
        print(f"{spk}: speech z^s {100 * fold['purity']['speech/z^s']:.1f}%, "
              f"image z^s {100 * fold['purity'].get('image/z^s', float('nan')):.1f}% "
              f"({t_train / 60:.1f} min train)", flush=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
