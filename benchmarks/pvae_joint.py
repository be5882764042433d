"""PVAE on English and Arabic spoken digits together (issue 13): FSDD + Arabic Speech Commands + MNIST.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/pvae_joint.py --data-dir ../shared/data
        [--config configs/pvae_joint.yaml] [--held-out SPEAKER] [--run runs/pvae_joint] [--tag NAME]
        [--threads 1] [key=value ...]

Trains the config with ``data.audio`` = FSDD (``--data-dir``'s ``fsdd/recordings``) and
``data.audio_extra`` = ``arabic_speech_commands`` (its publishers' split: 17 training speakers, 5
validation, 5 test), both paired with MNIST by label, then scores the speech latents of the test
split **by corpus**:

* ``fsdd``: FSDD's test utterances (``official``: takes 0-4 of the five training speakers;
  ``--held-out S``: every utterance of FSDD speaker S, who is then never heard in training);
* ``arabic``: the 5 unseen Arabic test speakers;
* ``both``: the two together in one k-means (k = 10): a z^s that puts an English and an Arabic
  word of the same digit in one cluster keeps its purity here; one that splits the languages
  has to merge digits;
* ``cross_language_probe``: a logistic regression of the digit fitted on the training utterances of
  one language and scored on the test utterances of the other (per speech latent).

The single-language counterparts are ``benchmarks/pvae_unseen.py`` (Arabic alone) and
``benchmarks/pvae_loso.py`` (FSDD alone, one speaker held out). Writes
benchmarks/results/pvae_joint.json (a run with the same ``--tag`` is replaced): purities and
accuracies as fractions in [0, 1], the exact command and the wall times.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tagged_runs import add_tagged_arguments, recorded_command, write_tagged_run  # noqa: E402

from dispart.batches.pipeline import load_experiment_data  # noqa: E402
from dispart.batches.sets import ModalitySet  # noqa: E402
from dispart.config import load_config  # noqa: E402
from dispart.data.locate import find_data  # noqa: E402
from dispart.evaluation.clustering import chance_accuracy, linear_probe_accuracy  # noqa: E402
from dispart.evaluation.evaluate import evaluate_model  # noqa: E402
from dispart.evaluation.latents import modality_latents  # noqa: E402
from dispart.runs import load_run  # noqa: E402
from dispart.training.run import train  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "pvae_joint.json"
WHAT = ("PVAE trained on FSDD (English) and Arabic Speech Commands digit words together, paired "
        "with MNIST by label; speech latents scored on the test split of each corpus and of both "
        "together (k-means purity, k = 10; digit probes fitted on the same corpus's training "
        "utterances; cross-language probes fitted on one language, scored on the other)")
DEFAULTS = ["train.progress_bar=false"]


def corpus_mask(s: ModalitySet, root: Path) -> np.ndarray:
    """True for the examples of ``s`` read from under ``root``."""
    assert s.paths is not None
    root = root.resolve()
    return np.array([Path(p).resolve().is_relative_to(root) for p in s.paths])


def speech_purity(result: dict[str, Any]) -> dict[str, float]:
    """Speech latent symbol -> k-means purity, from an evaluation result's rows."""
    return {r["latent"]: round(float(r["purity"]), 4) for r in result["rows"] if r["modality"] == "speech"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True, help="folder with fsdd/recordings, arabic_speech_commands "
                                                      "and mnist/mnist.npz")
    ap.add_argument("--config", default=str(ROOT / "configs" / "pvae_joint.yaml"))
    ap.add_argument("--held-out", default="", help="an FSDD speaker to hold out (default: FSDD's official "
                                                   "split)")
    ap.add_argument("--run", default=str(ROOT / "runs" / "pvae_joint"), help="run folder (overwritten)")
    add_tagged_arguments(ap, RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    command = recorded_command("pvae_joint.py", sys.argv[1:], args.threads)
    data_dir = Path(args.data_dir)
    arabic_root = data_dir / "arabic_speech_commands"
    base = [f"{k}={v}" for k, v in find_data(data_dir).items()] + [f"data.audio_extra={arabic_root}"]
    if args.held_out:
        base.append(f"data.split=speaker:{args.held_out}")
    load_before = os.getloadavg()[0]
    t_start = time.perf_counter()
    cfg = load_config(args.config, [*base, *DEFAULTS, *args.overrides])
    data = load_experiment_data(cfg.data, progress=False)
    train_set, test = data.split("audio", "train"), data.split("audio", "test")
    fsdd_root = Path(cfg.data.audio)
    in_test, in_train = corpus_mask(test, arabic_root), corpus_mask(train_set, arabic_root)
    parts_test, parts_train = {"fsdd": ~in_test, "arabic": in_test}, {"fsdd": ~in_train, "arabic": in_train}
    speakers = {k: {"train": sorted({str(s) for s in np.asarray(train_set.speakers)[m]}),
                    "test": sorted({str(s) for s in np.asarray(test.speakers)[parts_test[k]]})}
                for k, m in parts_train.items()}
    print(f"data: {len(train_set)} training utterances ({int(parts_train['fsdd'].sum())} FSDD from "
          f"{fsdd_root}, {int(parts_train['arabic'].sum())} Arabic); test {int(parts_test['fsdd'].sum())} "
          f"FSDD of {speakers['fsdd']['test']}, {int(parts_test['arabic'].sum())} Arabic of "
          f"{speakers['arabic']['test']}", flush=True)

    t0 = time.perf_counter()
    summary = train(cfg, args.run, data=data, overwrite=True)
    t_train = time.perf_counter() - t0
    print(f"trained {summary['epochs']} epochs, {summary['global_step']} steps in {t_train / 60:.1f} min",
          flush=True)

    t0 = time.perf_counter()
    run = load_run(args.run)
    scores: dict[str, Any] = {}
    for name, mask in [*parts_test.items(), ("both", np.ones(len(test), dtype=bool))]:
        sub = test.select(mask)
        keep_train = parts_train[name] if name in parts_train else np.ones(len(train_set), dtype=bool)
        r = evaluate_model(run.model, run.display_name, {"audio": sub}, cfg.eval,
                           train_sets={"audio": train_set.select(keep_train)}, curves=False)
        scores[name] = {"n_test": len(sub), "purity": speech_purity(r),
                        "digit_probe": {k: round(float(v), 4)
                                        for k, v in (r.get("label_probe_accuracy") or {}).items()}}
    z_train = modality_latents(run.model, "audio", train_set.examples)
    z_test = modality_latents(run.model, "audio", test.examples)
    y_train, y_test = np.asarray(train_set.labels), np.asarray(test.labels)
    cross: dict[str, Any] = {}
    for src, dst in (("fsdd", "arabic"), ("arabic", "fsdd")):
        fit, score = parts_train[src], parts_test[dst]
        cross[f"{src}_to_{dst}"] = {
            run.model.latents[k].symbol: round(float(linear_probe_accuracy(
                z_train[k][fit], y_train[fit], z_test[k][score], y_test[score], seed=cfg.eval.seed)), 4)
            for k in z_train}
        cross[f"{src}_to_{dst}"]["chance"] = round(chance_accuracy(list(y_test[score])), 4)
    t_eval = time.perf_counter() - t0

    entry = {
        "tag": args.tag, "command": command, "config": str(Path(args.config)), "overrides": args.overrides,
        "fsdd_split": f"speaker:{args.held_out}" if args.held_out else "official",
        "speakers": speakers, "n_train_utterances": {k: int(m.sum()) for k, m in parts_train.items()},
        "epochs": int(summary["epochs"]), "steps": int(summary["global_step"]),
        "speech_zs_purity": {k: v["purity"]["z^s"] for k, v in scores.items()},
        "by_corpus": scores, "cross_language_probe": cross,
        "wall_seconds": {"train": round(t_train, 1), "evaluate": round(t_eval, 1),
                         "total": round(time.perf_counter() - t_start, 1)},
        "run": str(args.run), "threads": args.threads,
        "load_average": {"before": load_before, "after": os.getloadavg()[0], "cores": os.cpu_count()},
    }
    out = Path(args.out)
    write_tagged_run(out, entry, what=WHAT,
                     units="purities and accuracies are fractions in [0, 1]")
    for k, v in scores.items():
        print(f"{k}: speech purity {v['purity']} digit probe {v['digit_probe']} (n {v['n_test']})")
    print(f"cross-language digit probes: {cross}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
