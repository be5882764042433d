"""PVAE on speakers it never heard: spoken Arabic digits + MNIST, the 5 unseen test speakers (issue 13).

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/pvae_unseen.py
        [--config configs/pvae_arabic.yaml] [--run runs/pvae_unseen] [--threads 1] [--tag NAME]
        [--train-on-val] [key=value ...]

Trains the config (Arabic Speech Commands' ten digit words paired with MNIST by label, the
publishers' speaker-disjoint split: 17 training, 5 validation, 5 test speakers) with the library's
``train``, evaluates it with ``evaluate_run`` (Table 1 purities on the test split, the linear
probes of the digit per latent; evaluation.json in the run folder) and adds:

* the same purities and digit probes on the 5 *validation* speakers (also never trained on; the
  speakers on which to choose settings, so that the test speakers stay untouched);
* a speaker probe *within* the unseen test speakers (the training speakers cannot be the probe's
  classes): a linear probe fitted on the odd rounds of each test speaker, scored on the even ones,
  per speech latent, with its chance level.

``--train-on-val`` adds the validation speakers to the training split (22 speakers; the normaliser
stays the one fitted on the 17), leaving no validation numbers. Extra ``key=value`` overrides apply to
the config (the defaults add ``train.eval_every=10 train.progress_bar=false``: purity on the test
speakers every 10 epochs, recorded as a curve, not used to choose anything).

Writes benchmarks/results/pvae_unseen.json (a run with the same ``--tag`` is replaced): purities and
probes as fractions in [0, 1], the exact command, the wall time of training and of evaluation.
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

from dispart.batches.pipeline import ExperimentData, load_experiment_data  # noqa: E402
from dispart.batches.sets import ModalitySet  # noqa: E402
from dispart.config import load_config  # noqa: E402
from dispart.data.corpus import SPEECH_COMMANDS_NAME  # noqa: E402
from dispart.evaluation.clustering import chance_accuracy, linear_probe_accuracy  # noqa: E402
from dispart.evaluation.evaluate import evaluate_model, evaluate_run  # noqa: E402
from dispart.evaluation.latents import modality_latents  # noqa: E402
from dispart.runs import load_run  # noqa: E402
from dispart.training.run import train  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "pvae_unseen.json"
WHAT = ("PVAE on spoken Arabic digits (Arabic Speech Commands, the ten digit words, labelled 0-9) "
        "paired with MNIST by label; publishers' speaker-disjoint split; k-means purity (k = 10) "
        "of latents inferred from one modality on the test split (speech: the 5 unseen test "
        "speakers; image: MNIST test); linear probes fitted on the training split")
DEFAULTS = ["train.eval_every=10", "train.progress_bar=false"]
TARGET = 0.95  # issue 13: z^s purity on the unseen test speakers


def purities(result: dict[str, Any]) -> dict[str, float]:
    """"<column>/<symbol>" -> k-means purity, from an evaluation result's rows."""
    return {f"{r['modality']}/{r['latent']}": round(float(r["purity"]), 4) for r in result["rows"]}


def probes(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The probe entries of an evaluation result, rounded."""
    return {k: {lat: round(float(v), 4) for lat, v in (result.get(k) or {}).items()}
            for k in ("label_probe_accuracy", "label_probe_chance")}


def round_of(path: str, i: int) -> int:
    """The take / round number of a speech-commands file (``{speaker}_{tag}_{n}.wav``), else ``i``."""
    m = SPEECH_COMMANDS_NAME.match(Path(path).name)
    return int(m["take"]) if m else i


def speaker_probe_within(model, test: ModalitySet, seed: int = 0) -> dict[str, Any]:
    """Speaker identity from each speech latent among the test speakers only: a linear probe fitted
    on the utterances of odd rounds, scored on those of even rounds (every speaker on both sides)."""
    assert test.speakers is not None and test.paths is not None
    odd = np.array([round_of(p, i) % 2 == 1 for i, p in enumerate(test.paths)])
    spk = np.asarray(test.speakers)
    z = modality_latents(model, "audio", test.examples)
    out: dict[str, Any] = {"fit": "odd rounds", "scored": "even rounds", "n_fit": int(odd.sum()),
                           "n_scored": int((~odd).sum()), "speakers": sorted(set(test.speakers)),
                           "chance": round(chance_accuracy(list(spk[~odd])), 4), "accuracy": {}}
    for name, zz in z.items():
        acc = linear_probe_accuracy(zz[odd], spk[odd], zz[~odd], spk[~odd], seed=seed)
        out["accuracy"][model.latents[name].symbol] = round(float(acc), 4)
    return out


def add_val_to_train(data: ExperimentData) -> list[str]:
    """``--train-on-val``: the validation speakers' utterances join the train split (the normaliser
    stays the one fitted on the training speakers). Returns the speakers added."""
    sets = data.sets["audio"]
    if "val" not in sets:
        raise SystemExit("pvae_unseen: --train-on-val, but the corpus has no validation split")
    tr, va = sets["train"], sets.pop("val")
    assert tr.speakers is not None and va.speakers is not None and tr.paths and va.paths
    sets["train"] = ModalitySet(list(tr.examples) + list(va.examples), tr.labels + va.labels,
                                tr.ids + va.ids, tr.speakers + va.speakers, tr.paths + va.paths)
    return sorted(set(va.speakers))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "pvae_arabic.yaml"))
    ap.add_argument("--run", default=str(ROOT / "runs" / "pvae_unseen"), help="run folder (overwritten)")
    ap.add_argument("--train-on-val", action="store_true",
                    help="train on the validation speakers too (17 + 5 = 22 speakers)")
    add_tagged_arguments(ap, RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    command = recorded_command("pvae_unseen.py", sys.argv[1:], args.threads)
    load_before = os.getloadavg()[0]
    t_start = time.perf_counter()
    cfg = load_config(args.config, [*DEFAULTS, *args.overrides])
    data = load_experiment_data(cfg.data, progress=False)
    added = add_val_to_train(data) if args.train_on_val else []
    train_set, test = data.split("audio", "train"), data.split("audio", "test")
    assert train_set.speakers is not None and test.speakers is not None
    t_data = time.perf_counter() - t_start
    print(f"data: {len(train_set)} training utterances of {len(set(train_set.speakers))} speakers, "
          f"{len(test)} test utterances of {len(set(test.speakers))} unseen speakers ({t_data:.0f} s)",
          flush=True)

    t0 = time.perf_counter()
    summary = train(cfg, args.run, data=data, overwrite=True)
    t_train = time.perf_counter() - t0
    print(f"trained {summary['epochs']} epochs, {summary['global_step']} steps in {t_train / 60:.1f} min",
          flush=True)

    t0 = time.perf_counter()
    result = evaluate_run(args.run, progress=False, data=data)
    run = load_run(args.run)
    splits: dict[str, Any] = {"test": {"speakers": sorted(set(test.speakers)), "purity": purities(result),
                                       **probes(result)}}
    if "val" in data.sets["audio"]:
        val = data.split("audio", "val")
        assert val.speakers is not None
        r_val = evaluate_model(run.model, run.display_name, {"audio": val}, cfg.eval,
                               train_sets={"audio": train_set}, curves=False)
        splits["val"] = {"speakers": sorted(set(val.speakers)), "purity": purities(r_val), **probes(r_val)}
    within = speaker_probe_within(run.model, test, seed=cfg.eval.seed)
    t_eval = time.perf_counter() - t0

    zs = splits["test"]["purity"]["speech/z^s"]
    entry = {
        "tag": args.tag, "command": command, "config": str(Path(args.config)), "overrides": args.overrides,
        "train_on_val": args.train_on_val, "val_speakers_trained_on": added,
        "train_speakers": sorted(set(train_set.speakers)), "n_train_utterances": len(train_set),
        "epochs": int(summary["epochs"]), "steps": int(summary["global_step"]),
        "wall_seconds": {"data": round(t_data, 1), "train": round(t_train, 1), "evaluate": round(t_eval, 1),
                         "total": round(time.perf_counter() - t_start, 1)},
        "speech_z_s_purity_unseen_test": zs, "target": TARGET, "target_met": zs >= TARGET,
        "splits": splits, "speaker_probe_within_test_speakers": within,
        "estimated_num_classes": result.get("estimated_num_classes", {}),
        "purity_during_training_test": summary.get("history", []),
        "run": str(args.run), "threads": args.threads,
        "load_average": {"before": load_before, "after": os.getloadavg()[0], "cores": os.cpu_count()},
    }
    out = Path(args.out)
    write_tagged_run(out, entry, what=WHAT,
                     units="purities, accuracies and chance levels are fractions in [0, 1]")
    print(f"speech z^s purity on the unseen test speakers: {100 * zs:.1f}% (target {100 * TARGET:.0f}%)")
    for split, d in splits.items():
        print(f"  {split}: purity {d['purity']}; digit probe {d['label_probe_accuracy']} "
              f"(chance {d['label_probe_chance']})")
    print(f"  speaker probe within the test speakers: {within['accuracy']} (chance {within['chance']})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
